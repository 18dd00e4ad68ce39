//! The program's own cost per run on real traffic, from the kernel's BPF
//! run-time statistics (run_time_ns / run_cnt of each entry point), and the
//! whole machine's CPU time per packet, with and without the filter. Unlike
//! a throughput ratio, neither depends much on how busy the machine is.
//!
//! Statistics are switched on with BPF_ENABLE_STATS (runstats.rs).

use std::os::fd::{AsRawFd, BorrowedFd};

use ebpfcni::AttachMode;

use ebpfcni_testutil::{median, TwoPods};

use crate::filters::{Ebpfcni, Records, TcxLinks};
use crate::runstats::{Snapshot, StatsEnabled};
use crate::{check_interrupted, Args, Ratio, Result};
use crate::{traffic, POD_B};

/// A tc program that does nothing, attached where ebpfcni's would be: the
/// cost of the tc hooks themselves (tcx; or clsact and the classifier), the
/// floor under any tc program.
pub struct NoopFilter {
    object: libbpf_rs::Object,
}

impl NoopFilter {
    pub fn load() -> Result<Self> {
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/noop.bpf.c");
        let bytes = ebpfcni_testutil::bpf::compile(&source, &[source.parent().unwrap()]);
        let object = libbpf_rs::ObjectBuilder::default().open_memory(&bytes)?.load()?;
        Ok(Self { object })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        let prog = self
            .object
            .progs()
            .find(|p| p.name() == "noop")
            .expect("noop program");
        // SAFETY: the fd lives as long as the object, which outlives the borrow.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(prog.as_fd().as_raw_fd()) }
    }
}

/// Attaches `from_pod` to tc ingress and `to_pod` to tc egress of both host
/// veths as clsact filters at ebpfcni's handle and priority (so that
/// `Ebpfcni::remove` takes them off again).
fn attach_as_clsact_filters(topo: &TwoPods, from_pod: BorrowedFd<'_>, to_pod: BorrowedFd<'_>) -> Result<()> {
    topo.node.run_in(|| -> Result<()> {
        for ifindex in [topo.ifindex_a, topo.ifindex_b] {
            for (fd, point) in [(from_pod, libbpf_rs::TC_INGRESS), (to_pod, libbpf_rs::TC_EGRESS)] {
                let mut builder = libbpf_rs::TcHookBuilder::new(fd);
                builder
                    .ifindex(ifindex as i32)
                    .replace(true)
                    .handle(ebpfcni::TC_HANDLE)
                    .priority(ebpfcni::TC_PRIORITY);
                builder.hook(libbpf_rs::TC_INGRESS).create()?;
                builder.hook(point).attach()?;
            }
        }
        Ok(())
    })
}

/// One row of the table: what sits on the host veths.
struct Setup<'a> {
    name: &'static str,
    /// None: no program (`noop` says whether a no-op one is attached).
    filter: Option<&'a Ebpfcni>,
    noop: bool,
    attach: AttachMode,
    records: Records,
}

/// The program's cost in place: BPF run-time statistics per entry point
/// during an allowed 64-byte UDP flood and during iperf3 TCP, and the whole
/// machine's CPU per packet of the flood, for no filter, nearly empty maps
/// and full maps, attached with clsact filters and with tcx links.
pub fn run(topo: &TwoPods, args: &Args, empty: &Ebpfcni, full: &Ebpfcni, full_stack: &Ebpfcni) -> Result<()> {
    let noop = NoopFilter::load()?;
    let sink = traffic::UdpSink::start(&topo.pod_b, POD_B)?;
    let setup = |name, filter, noop, attach| Setup {
        name,
        filter,
        noop,
        attach,
        records: Records::Plugin,
    };
    let setups = [
        setup("no filter", None, false, AttachMode::Clsact),
        setup("no-op program, clsact", None, true, AttachMode::Clsact),
        setup("no-op program, tcx", None, true, AttachMode::Tcx),
        setup(
            "ebpfcni, nearly empty maps",
            Some(empty),
            false,
            AttachMode::Clsact,
        ),
        setup("ebpfcni, full maps", Some(full), false, AttachMode::Clsact),
        setup("ebpfcni tcx, nearly empty", Some(empty), false, AttachMode::Tcx),
        setup("ebpfcni tcx, full maps", Some(full), false, AttachMode::Tcx),
        setup(
            "ebpfcni, full maps, stack",
            Some(full_stack),
            false,
            AttachMode::Clsact,
        ),
        Setup {
            records: Records::Agent,
            ..setup("ebpfcni tcx, full, agent", Some(full), false, AttachMode::Tcx)
        },
        Setup {
            records: Records::Agent,
            ..setup("ebpfcni, full maps, agent", Some(full), false, AttachMode::Clsact)
        },
    ];
    // [setup] -> samples
    let n = setups.len();
    let mut cpu = vec![Vec::new(); n];
    let mut pps = vec![Vec::new(); n];
    let mut udp_run = vec![[Vec::new(), Vec::new()]; n];
    let mut tcp_run = vec![[Vec::new(), Vec::new()]; n];
    for round in 1..=args.rounds {
        eprintln!("in place round {round}/{}", args.rounds);
        for (i, s) in setups.iter().enumerate() {
            check_interrupted()?;
            let name = s.name;
            let filter = s.filter;
            let mut links = None;
            match (s.filter, s.noop, s.attach) {
                (Some(e), _, mode) => e.install_with(topo, mode, s.records)?,
                (None, true, AttachMode::Clsact) => attach_as_clsact_filters(topo, noop.fd(), noop.fd())?,
                (None, true, AttachMode::Tcx) => links = Some(TcxLinks::attach(topo, noop.fd(), noop.fd())?),
                (None, false, _) => {}
            }
            let outcome = (|| -> Result<()> {
                // CPU per packet with statistics off (they cost time of
                // their own), then the program's time per run with them on.
                let read_before = sink.received();
                let f = traffic::flood(&topo.pod_a, POD_B, args.seconds)?;
                let read = (sink.received() - read_before) as f64 / f.packets as f64;
                let _stats = StatsEnabled::on()?;
                let before = filter.map(|e| Snapshot::take(e.program())).transpose()?;
                traffic::flood(&topo.pod_a, POD_B, args.seconds)?;
                let udp = match (filter, before) {
                    (Some(e), Some(before)) => Some(Snapshot::take(e.program())?.since(&before)),
                    _ => None,
                };
                let before = filter.map(|e| Snapshot::take(e.program())).transpose()?;
                traffic::throughput(&topo.pod_a, POD_B, args.seconds)?;
                let tcp = match (filter, before) {
                    (Some(e), Some(before)) => Some(Snapshot::take(e.program())?.since(&before)),
                    _ => None,
                };
                let ns = f.busy.as_nanos() as f64 / f.packets as f64;
                let rate = f.packets as f64 / f.elapsed.as_secs_f64();
                eprintln!(
                    "  {name:<28} UDP {rate:>9.0} packets/s ({:.0}% read) {ns:>6.0} ns CPU/packet; program ns/run: UDP {:?}, TCP {:?}",
                    read * 100.0,
                    udp.map(|r| [r[0].0.round(), r[1].0.round()]),
                    tcp.map(|r| [r[0].0.round(), r[1].0.round()])
                );
                cpu[i].push(ns);
                pps[i].push(rate);
                for hook in 0..2 {
                    if let Some(r) = udp {
                        udp_run[i][hook].push(r[hook].0);
                    }
                    if let Some(r) = tcp {
                        tcp_run[i][hook].push(r[hook].0);
                    }
                }
                Ok(())
            })();
            drop(links);
            // Every setup starts from bare veths: no qdisc, no filter, no link.
            Ebpfcni::remove_clsact(topo)?;
            outcome?;
        }
    }
    let med = |v: &Vec<f64>| if v.is_empty() { f64::NAN } else { median(v) };
    // A run time, or "-" for a setup without ebpfcni's program.
    let ns = |v: &Vec<f64>| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1}", median(v))
        }
    };
    println!();
    println!(
        "In place: BPF run-time statistics (BPF_ENABLE_STATS) per entry point, mean ns per run, during a 64-byte UDP \
         flood from pod A to pod B (allowed) and during iperf3 TCP; and the whole machine's CPU time per UDP packet (measured with the statistics \
         off). {} rounds of {} s, medians.",
        args.rounds, args.seconds
    );
    println!();
    println!(
        "| {:<28} | {:>10} | {:>13} | {:>13} | {:>16} | {:>14} | {:>15} |",
        "setup",
        "UDP pkt/s",
        "CPU ns/packet",
        "vs no filter",
        "UDP from-pod ns",
        "UDP to-pod ns",
        "TCP from-pod ns"
    );
    println!(
        "|{:-<30}|{:->12}|{:->15}|{:->15}|{:->18}|{:->16}|{:->17}|",
        "", "", "", "", "", "", ""
    );
    for (i, Setup { name, .. }) in setups.iter().enumerate() {
        println!(
            "| {:<28} | {:>10.0} | {:>13.0} | {:>13} | {:>16} | {:>14} | {:>15} |",
            name,
            med(&pps[i]),
            med(&cpu[i]),
            Ratio::of(&cpu[i], &cpu[0]).show(),
            ns(&udp_run[i][0]),
            ns(&udp_run[i][1]),
            ns(&tcp_run[i][0]),
        );
    }
    println!();
    for (empty, full, attach) in [(3, 4, "clsact filters"), (5, 6, "tcx")] {
        let both_hooks = |i: usize| med(&udp_run[i][0]) + med(&udp_run[i][1]);
        let (empty_ns, full_ns) = (both_hooks(empty), both_hooks(full));
        println!(
            "goal: in-place cost with full maps within 15% of nearly empty ({attach}): {:.1} vs {:.1} ns per packet (both hooks): {:+.1}%: {}",
            full_ns,
            empty_ns,
            (full_ns / empty_ns - 1.0) * 100.0,
            if full_ns <= empty_ns * 1.15 { "met" } else { "NOT met" }
        );
    }
    for (i, attach) in [(1, "clsact filters"), (2, "tcx")] {
        println!(
            "the tc hooks alone, as {attach} (a no-op program on both hooks of both host veths), cost x{} CPU per small packet",
            Ratio::of(&cpu[i], &cpu[0]).show()
        );
    }
    for i in [4, 6, 7, 8, 9] {
        let cpu_ratio = Ratio::of(&cpu[i], &cpu[0]);
        let pps_ratio = Ratio::of(&pps[i], &pps[0]);
        println!(
            "goal (local delivery): {}: 64-byte UDP packets/s x{} of no filter (goal >= 1.10), CPU per small packet x{} (goal < 1)",
            setups[i].name,
            pps_ratio.show(),
            cpu_ratio.show()
        );
    }
    for i in [3, 4, 5, 6] {
        let r = Ratio::of(&cpu[i], &cpu[0]);
        println!(
            "goal: {} within 5% of no filter, CPU per small packet: x{}: {}",
            setups[i].name,
            r.show(),
            if r.median <= 1.05 {
                "met"
            } else if r.median - r.noise <= 1.05 {
                "not shown (within noise)"
            } else {
                "NOT met"
            }
        );
    }
    Ok(())
}
