//! Fourth table: from-fabric, the source check on a node's fabric
//! interface (precedence step F), run inside a node namespace with real
//! routes and neighbours ([`FabricNode`]: its bpf_fib_lookup needs them),
//! beside the no-op program: another node's pod from its node's MAC (one
//! endpoint_map lookup and the fib lookup; passes), the same address from
//! another MAC (the same, then the drop, counted; events and traces off,
//! their cost is the first table's), an address without an identity (one
//! endpoint_map lookup; passes).

use ebpfcni::{EventLevel, Identity, Maps, Program, TraceLevel, TC_ACT_OK, TC_ACT_SHOT};
use ebpfcni_testutil::{median, FabricNode as F, TestPinDir};
use libbpf_rs::Object;

use crate::setup::run_object;

struct Row {
    name: &'static str,
    frame: Vec<u8>,
    verdict: i32,
}

pub fn measure(noop: &Object, repeat: u32, rounds: u32) {
    let pins = TestPinDir::new("bench_fabric");
    let program = Program::load(pins.path()).expect("load program");
    let maps = Maps::open(pins.path()).expect("open maps");
    maps.config.set_trace_level(TraceLevel::Off).expect("trace off");
    maps.config.set_event_level(EventLevel::Off).expect("events off");
    maps.endpoints
        .upsert(F::REMOTE_POD, Identity::new(4242).unwrap())
        .expect("seed");
    maps.endpoints
        .upsert(F::LOCAL_POD, Identity::new(4201).unwrap())
        .expect("seed");
    let node = F::new("bench_fabric");
    let rows = [
        Row {
            name: "other node's pod, from its node (pass)",
            frame: F::frame(F::REMOTE_POD, F::LOCAL_POD, F::NODE2_MAC),
            verdict: TC_ACT_OK,
        },
        Row {
            name: "other node's pod, forged (drop)",
            frame: F::frame(F::REMOTE_POD, F::LOCAL_POD, F::OTHER_MAC),
            verdict: TC_ACT_SHOT,
        },
        Row {
            name: "no identity (pass)",
            frame: F::frame("192.0.2.9".parse().unwrap(), F::LOCAL_POD, F::OTHER_MAC),
            verdict: TC_ACT_OK,
        },
    ];
    let mut noop_ns = Vec::new();
    let mut samples = vec![Vec::new(); rows.len()];
    for _ in 0..rounds {
        noop_ns.push(
            node.node
                .run_in(|| run_object(noop, "noop", &rows[0].frame, repeat, TC_ACT_OK)),
        );
        for (row, out) in rows.iter().zip(&mut samples) {
            let run = node.test_run(&program, &row.frame, repeat);
            assert_eq!(run.verdict, row.verdict, "{}: unexpected verdict", row.name);
            out.push(run.duration.as_nanos() as f64);
        }
    }
    println!();
    println!("from-fabric in a node namespace (routes, neighbours), ns per packet:");
    println!("  {:<42} {:>6.1}", "no-op program (harness)", median(&noop_ns));
    for (row, s) in rows.iter().zip(&samples) {
        println!("  {:<42} {:>6.1}", row.name, median(s));
    }
}
