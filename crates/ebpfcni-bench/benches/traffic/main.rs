//! Pod-to-pod traffic through a node namespace, side by side with no filter,
//! ebpfcni (the plan's stateless rules, and stateful port rules), and
//! nftables (set lookup, linear chains, and conntrack), plus the kernel
//! memory of ebpfcni's maps. Run through `bench/run.sh` (which also runs the
//! per-packet and control-plane benches), or
//! `cargo bench -p ebpfcni-bench --bench traffic -- --rounds 5`; needs root.
//!
//! Everything happens between namespaces this process creates, and is
//! removed when it ends, on error, panic or Ctrl-C alike.

mod denied;
mod filters;
mod inplace;
mod memory;
mod runstats;
mod traffic;

use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use ebpfcni_testutil::{median, Ratio, TwoPods};
use filters::{Ebpfcni, Nft};
use traffic::{AcceptServer, EchoServer, Iperf3Server};

const POD_B: std::net::Ipv4Addr = TwoPods::POD_B;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser, Debug)]
#[command(about = "Pod-to-pod throughput and request/response rate: no filter vs ebpfcni vs nftables")]
struct Args {
    /// Seconds of each iperf3 run (plus one warm-up second) and of each
    /// request/response run
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Rounds; each round measures every scenario once, interleaved, and the
    /// median over rounds is reported
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Request and response size in bytes
    #[arg(long, default_value_t = 64)]
    message_size: usize,
    /// Only these scenarios (comma-separated keys; "plain" is always run; "flood" for the flood of drops)
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Errors once SIGINT or SIGTERM arrived, so that main returns normally and
/// every guard (namespaces, pins, servers) is dropped.
fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    Ok(())
}

enum Filter<'a> {
    None,
    Ebpfcni(&'a Ebpfcni),
    Nft(&'a Nft),
}

struct Scenario<'a> {
    key: &'static str,
    label: &'static str,
    filter: Filter<'a>,
    throughput: Vec<f64>,
    transactions: Vec<f64>,
    /// Median round trip of the request/response run, ns.
    round_trip: Vec<f64>,
    connections: Vec<f64>,
}

impl<'a> Scenario<'a> {
    fn new(key: &'static str, label: &'static str, filter: Filter<'a>) -> Self {
        Self {
            key,
            label,
            filter,
            throughput: Vec::new(),
            transactions: Vec::new(),
            round_trip: Vec::new(),
            connections: Vec::new(),
        }
    }

    fn install(&self, topo: &TwoPods) -> Result<()> {
        match self.filter {
            Filter::None => Ok(()),
            Filter::Ebpfcni(e) => e.install(topo),
            Filter::Nft(n) => n.install(topo),
        }
    }

    fn remove(&self, topo: &TwoPods) -> Result<()> {
        match self.filter {
            Filter::None => Ok(()),
            Filter::Ebpfcni(_) => Ebpfcni::remove(topo),
            Filter::Nft(_) => {
                Nft::remove(topo);
                Ok(())
            }
        }
    }

    /// Installs the filter, checks it is in the path, measures, removes it.
    fn measure(&mut self, topo: &TwoPods, args: &Args) -> Result<()> {
        self.install(topo)?;
        // (TCP bit/s, (transactions/s, median round trip ns), connections/s, TcpExt counters)
        type Measured = (f64, (f64, f64), f64, (u64, u64));
        let outcome = (|| -> Result<Measured> {
            let filtering = !matches!(self.filter, Filter::None);
            if enforced(topo) != filtering {
                return Err(format!(
                    "{}: expected the stranger address to be {} (is the filter in the path?)",
                    self.key,
                    if filtering { "dropped" } else { "routed" }
                )
                .into());
            }
            check_interrupted()?;
            let bps = traffic::throughput(&topo.pod_a, POD_B, args.seconds)?;
            check_interrupted()?;
            let tps = traffic::transactions(&topo.pod_a, POD_B, args.message_size, args.seconds)?;
            check_interrupted()?;
            let counters = || -> Result<(u64, u64)> {
                Ok((
                    traffic::tcp_ext(&topo.pod_b, "ListenOverflows")?,
                    traffic::tcp_ext(&topo.pod_a, "TCPSynRetrans")?,
                ))
            };
            let before = counters()?;
            let cps = traffic::connections(&topo.pod_a, POD_B, args.seconds)?;
            let after = counters()?;
            Ok((bps, tps, cps, (after.0 - before.0, after.1 - before.1)))
        })();
        let removed = self.remove(topo);
        let (bps, (tps, rtt), cps, (overflows, syn_retrans)) = outcome?;
        removed?;
        eprintln!(
            "  {:<18} {:>7.2} Gbit/s {:>9.0} transactions/s (p50 {:.1} us) {:>8.0} connections/s \
             ({overflows} accept queue overflows, {syn_retrans} SYN retransmissions)",
            self.key,
            bps / 1e9,
            tps,
            rtt / 1e3,
            cps
        );
        self.throughput.push(bps);
        self.transactions.push(tps);
        self.round_trip.push(rtt);
        self.connections.push(cps);
        Ok(())
    }
}

/// Whether the allowed pair talks and pod A's second address, which no
/// filter allows, does not: a filter that drops it is in the path.
fn enforced(topo: &TwoPods) -> bool {
    topo.reaches(TwoPods::POD_A) && !topo.reaches(TwoPods::POD_A2)
}

/// The root namespace's net.ipv4.ip_forward, read from this process (which
/// stays in the root namespace).
fn root_ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

fn main() {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("ebpfcni-bench: needs root (network namespaces, BPF, nftables)");
        std::process::exit(2);
    }
    let handler = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &handler) }.expect("install signal handler");
    }

    // libbpf's warnings, minus what the library treats as success.
    ebpfcni::set_libbpf_log(Some(|msg| eprintln!("libbpf: {msg}")));

    let forward_before = root_ip_forward();
    let result = run(&args);
    let forward_after = root_ip_forward();
    if forward_after != forward_before {
        eprintln!(
            "ebpfcni-bench: BUG: root net.ipv4.ip_forward changed from {forward_before} to {forward_after}"
        );
        std::process::exit(3);
    }
    if let Err(e) = result {
        eprintln!("ebpfcni-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    let wanted = |key: &str| key == "plain" || args.only.is_empty() || args.only.iter().any(|k| k == key);

    eprintln!("setting up: node and pod namespaces, ebpfcni maps, nftables rulesets");
    let topo = TwoPods::new("bench");
    if !topo.reaches(TwoPods::POD_A) {
        return Err("pod A cannot reach pod B through the node".into());
    }
    let ebpf_one = Ebpfcni::new("bench_one", false)?;
    let ebpf_full = Ebpfcni::new("bench_full", true)?;
    let ebpf_full_stack = Ebpfcni::new("bench_full_stack", true)?.through_the_stack();
    let nft_set_one = Nft::set(2);
    let nft_set_full = Nft::set(ebpf_full.entries.1 as u32);
    let nft_linear_1k = Nft::linear(1_000);
    let nft_linear_10k = Nft::linear(10_000);
    let ebpf_stateful = Ebpfcni::stateful("bench_stateful")?;
    let nft_conntrack = Nft::conntrack();
    let mut scenarios: Vec<Scenario> = [
        Scenario::new("plain", "a. plain routing, no filter", Filter::None),
        Scenario::new("ebpfcni-1", "b. ebpfcni, 1 rule", Filter::Ebpfcni(&ebpf_one)),
        Scenario::new(
            "ebpfcni-full",
            "b. ebpfcni, full maps",
            Filter::Ebpfcni(&ebpf_full),
        ),
        Scenario::new(
            "ebpfcni-full-stack",
            "b. ebpfcni, full maps, stack",
            Filter::Ebpfcni(&ebpf_full_stack),
        ),
        Scenario::new("nft-set-1", "c. nftables set, 1 rule", Filter::Nft(&nft_set_one)),
        Scenario::new(
            "nft-set-full",
            "c. nftables set, 65,536 pairs",
            Filter::Nft(&nft_set_full),
        ),
        Scenario::new(
            "ebpfcni-stateful",
            "e. ebpfcni, stateful port rules",
            Filter::Ebpfcni(&ebpf_stateful),
        ),
        Scenario::new(
            "nft-ct",
            "f. nftables conntrack + set",
            Filter::Nft(&nft_conntrack),
        ),
        Scenario::new(
            "nft-linear-1000",
            "d. nftables chain, 1,000 rules",
            Filter::Nft(&nft_linear_1k),
        ),
        Scenario::new(
            "nft-linear-10000",
            "d. nftables chain, 10,000 rules",
            Filter::Nft(&nft_linear_10k),
        ),
    ]
    .into_iter()
    .filter(|s| wanted(s.key))
    .collect();

    let _iperf3 = Iperf3Server::start(&topo.pod_b, POD_B)?;
    let _echo = EchoServer::start(&topo.pod_b, POD_B, args.message_size)?;
    let _accept = AcceptServer::start(&topo.pod_b, POD_B)?;

    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        // Start each round at a different scenario, so that slow drift of
        // the machine's load does not always favour the same one.
        let n = scenarios.len();
        for i in 0..n {
            check_interrupted()?;
            scenarios[(i + round as usize - 1) % n].measure(&topo, args)?;
        }
    }

    print_traffic(&scenarios, args);
    if wanted("flood") {
        denied::run(&topo, args)?;
    }
    if wanted("inplace") {
        inplace::run(&topo, args, &ebpf_one, &ebpf_full, &ebpf_full_stack)?;
    }
    print_memory(&ebpf_full)?;
    Ok(())
}

fn print_traffic(scenarios: &[Scenario], args: &Args) {
    let base = &scenarios[0];
    println!();
    println!(
        "Pod A -> pod B through a node namespace; {} interleaved rounds; iperf3 TCP {} s (after 1 s \
         warm-up); request/response: one TCP connection, {}-byte messages, {} s; new connections: \
         connect, read the server's byte, reset; one at a time, {} s",
        args.rounds, args.seconds, args.message_size, args.seconds, args.seconds
    );
    println!();
    println!(
        "| {:<33} | {:>10} | {:>13} | {:>14} | {:>13} | {:>11} | {:>13} | {:>13} | {:>13} |",
        "scenario",
        "TCP Gbit/s",
        "vs a",
        "transactions/s",
        "vs a",
        "RTT p50 us",
        "a / it",
        "connections/s",
        "vs a"
    );
    println!(
        "|{:-<35}|{:->12}|{:->15}|{:->16}|{:->15}|{:->13}|{:->15}|{:->15}|{:->15}|",
        "", "", "", "", "", "", "", "", ""
    );
    for s in scenarios {
        println!(
            "| {:<33} | {:>10.2} | {:>13} | {:>14.0} | {:>13} | {:>11.2} | {:>13} | {:>13.0} | {:>13} |",
            s.label,
            median(&s.throughput) / 1e9,
            Ratio::of(&s.throughput, &base.throughput).show(),
            median(&s.transactions),
            Ratio::of(&s.transactions, &base.transactions).show(),
            median(&s.round_trip) / 1e3,
            Ratio::of(&base.round_trip, &s.round_trip).show(),
            median(&s.connections),
            Ratio::of(&s.connections, &base.connections).show(),
        );
    }
    println!();
    println!("Absolute figures: medians over the rounds. Ratios: median of the per-round ratios to a,");
    println!("± half their range (the run-to-run noise of this machine). RTT: each request/response");
    println!("round trip timed, the median of a round; \"a / it\" above 1 is a lower latency than a's.");
    println!();

    let get = |key: &str| scenarios.iter().find(|s| s.key == key);
    if let (Some(e), Some(n)) = (get("ebpfcni-stateful"), get("nft-ct")) {
        let bps = Ratio::of(&e.throughput, &n.throughput);
        let tps = Ratio::of(&e.transactions, &n.transactions);
        let cps = Ratio::of(&e.connections, &n.connections);
        println!(
            "goal: ebpfcni-stateful at or ahead of nft-ct: throughput x{}: {}; transactions x{}: {}; \
             connections x{}: {}",
            bps.show(),
            bps.at_least(1.0),
            tps.show(),
            tps.at_least(1.0),
            cps.show(),
            cps.at_least(1.0)
        );
    }
    for b in ["ebpfcni-full", "ebpfcni-full-stack"]
        .iter()
        .filter_map(|k| get(k))
    {
        let bps = Ratio::of(&b.throughput, &base.throughput);
        let tps = Ratio::of(&b.transactions, &base.transactions);
        let rtt = Ratio::of(&base.round_trip, &b.round_trip);
        println!(
            "goal (local delivery): {} at or ahead of plain routing: TCP stream x{}: {}; request/response \
             (1 / latency) x{}: {}; median round trip lower (a / it) x{}: {}",
            b.key,
            bps.show(),
            bps.at_least(1.0),
            tps.show(),
            tps.at_least(1.0),
            rtt.show(),
            rtt.at_least(1.0)
        );
    }
    for b in ["ebpfcni-1", "ebpfcni-full"].iter().filter_map(|k| get(k)) {
        let bps = Ratio::of(&b.throughput, &base.throughput);
        let tps = Ratio::of(&b.transactions, &base.transactions);
        println!(
            "goal: {} within 5% of plain routing: throughput {}: {}; transactions {}: {}",
            b.key,
            bps.show(),
            bps.at_least(0.95),
            tps.show(),
            tps.at_least(0.95)
        );
        for other in scenarios
            .iter()
            .filter(|s| s.key.starts_with("nft-") && s.key != "nft-ct")
        {
            let bps = Ratio::of(&b.throughput, &other.throughput);
            let tps = Ratio::of(&b.transactions, &other.transactions);
            println!(
                "goal: {} ahead of {}: throughput x{}: {}; transactions x{}: {}",
                b.key,
                other.key,
                bps.show(),
                bps.at_least(1.0),
                tps.show(),
                tps.at_least(1.0)
            );
        }
    }
}

fn print_memory(full: &Ebpfcni) -> Result<()> {
    let maps = memory::pinned_maps(full.pins.path())?;
    let (endpoints, rules) = full.entries;
    println!();
    println!(
        "Kernel memory of ebpfcni's maps (memlock from fdinfo) with {endpoints} endpoints and {rules} \
         rules. Hash maps, ct_map (an LRU hash, {} connections) included, are preallocated: the same \
         empty as full. The LPM tries (prefix_map, port_policy_map) grow with their entries (none \
         here); event_ring is its buffer.",
        ebpfcni::PinnedMap::Conntrack.capacity()
    );
    println!();
    println!("| {:<16} | {:>12} |", "map", "bytes");
    println!("|{:-<18}|{:->14}|", "", "");
    for (name, bytes) in &maps {
        println!("| {name:<16} | {bytes:>12} |");
    }
    let total: u64 = maps.iter().map(|(_, b)| b).sum();
    println!("| {:<16} | {:>12} |", "total", total);
    Ok(())
}
