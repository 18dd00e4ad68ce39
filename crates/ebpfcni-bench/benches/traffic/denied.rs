//! A flood of denied small packets: what the notifications (trace lines
//! and flow events, each rate limited) cost when a pod sends what policy
//! drops, as fast as it can.

use ebpfcni_testutil::{median, TwoPods};

use crate::filters::Ebpfcni;
use crate::{check_interrupted, Args, Ratio, Result};
use crate::{traffic, POD_B};

/// A flood of denied 64-byte UDP from pod A: the whole machine's CPU time
/// per packet with the default trace and event levels (each rate limited)
/// vs everything off. Nothing reads the events: the ring fills, which the
/// datapath counts and moves on.
pub fn run(topo: &TwoPods, args: &Args) -> Result<()> {
    use ebpfcni::{EventLevel, TraceLevel};
    let ebpf = Ebpfcni::deny_all("bench_flood")?;
    ebpf.install(topo)?;
    let levels = [
        (
            "default levels (trace drops, events drops)",
            TraceLevel::Drops,
            EventLevel::Drops,
        ),
        ("trace and events off", TraceLevel::Off, EventLevel::Off),
    ];
    let mut ns_per_packet = vec![Vec::new(); levels.len()];
    let mut rates = vec![Vec::new(); levels.len()];
    let outcome = (|| -> Result<()> {
        for round in 1..=args.rounds {
            eprintln!("flood round {round}/{}", args.rounds);
            for (i, (name, trace, events)) in levels.iter().enumerate() {
                check_interrupted()?;
                ebpf.set_levels(*trace, *events)?;
                let f = traffic::flood(&topo.pod_a, POD_B, args.seconds)?;
                let ns = f.busy.as_nanos() as f64 / f.packets as f64;
                let pps = f.packets as f64 / f.elapsed.as_secs_f64();
                eprintln!("  {name:<44} {pps:>10.0} packets/s {ns:>8.0} ns of CPU per packet");
                ns_per_packet[i].push(ns);
                rates[i].push(pps);
            }
        }
        Ok(())
    })();
    let removed = Ebpfcni::remove(topo);
    outcome?;
    removed?;
    println!();
    println!(
        "A flood of denied 64-byte UDP from pod A (one sending thread, {} s, {} rounds): CPU time of the whole \
         machine per packet",
        args.seconds, args.rounds
    );
    println!();
    println!(
        "| {:<44} | {:>10} | {:>13} | {:>13} |",
        "levels", "packets/s", "CPU ns/packet", "vs off"
    );
    println!("|{:-<46}|{:->12}|{:->15}|{:->15}|", "", "", "", "");
    for (i, (name, _, _)) in levels.iter().enumerate() {
        println!(
            "| {:<44} | {:>10.0} | {:>13.0} | {:>13} |",
            name,
            median(&rates[i]),
            median(&ns_per_packet[i]),
            Ratio::of(&ns_per_packet[i], &ns_per_packet[1]).show()
        );
    }
    let ratio = Ratio::of(&ns_per_packet[0], &ns_per_packet[1]);
    let verdict = match (ratio.median <= 1.10, ratio.median - ratio.noise <= 1.10) {
        (true, _) => "met",
        (false, true) => "not shown (within noise)",
        (false, false) => "NOT met",
    };
    println!();
    println!(
        "goal: CPU per packet at the default levels within 10% of everything off: x{}: {verdict}",
        ratio.show()
    );
    Ok(())
}
