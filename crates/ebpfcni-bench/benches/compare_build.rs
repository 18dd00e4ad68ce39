//! This build's program beside another build's, in the same run: the
//! per-packet cost of a datapath change, measured as the packet_path bench
//! does (BPF_PROG_TEST_RUN, interleaved rounds, medians) but with both
//! programs on the same pinned maps, so that the machine's noise hits both
//! alike.
//!
//! ```sh
//! mkdir -p /tmp/before && git archive main bpf | tar -x -C /tmp/before
//! EBPFCNI_COMPARE_BPF=/tmp/before/bpf cargo bench -p ebpfcni-bench --bench compare_build
//! ```
//!
//! The other build's maps must have this build's layouts (it shares every
//! pin). Rows: allows and drops of the plan's rules and of label policy,
//! events and traces off (their cost is packet_path's), and with audit on.
//! Environment: `EBPFCNI_BENCH_REPEAT` (default 1,000,000),
//! `EBPFCNI_BENCH_ROUNDS` (default 9).

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use ebpfcni::events::EventReader;
use ebpfcni::frames::{ipv4_tcp, ipv4_udp, SYN};
use ebpfcni::{
    EventLevel, Hook, Identity, Isolation, LabelKind, LabelRule, Maps, PinnedMap, PolicyRule, Program,
    Protocol, RateLimit, Selector, TraceLevel, TC_ACT_OK, TC_ACT_SHOT,
};
use ebpfcni_testutil::datapath::TEST_IFINDEX;
use ebpfcni_testutil::{bpf, median, TestPinDir};
use libbpf_rs::{Object, ObjectBuilder};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1); // 1: the plan's
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2); // 2: the plan's
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3); // 3: the plan's, no rule
const WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1); // 300: label policy, isolated both ways
const DB: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2); // 301: label policy, isolated both ways

/// Runs of the row that writes an event each: the ring (1 MiB) holds
/// about 16,000 of this build's records.
const EVENT_REPEAT: u32 = 10_000;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v}")))
}

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// The other build's object, every map on this build's pins.
fn load_other(bpf_dir: &std::path::Path, pins: &std::path::Path) -> Object {
    let source = bpf_dir.join("kernel/ebpfcni.bpf.c");
    let bytes = bpf::compile(&source, &[&bpf_dir.join("include"), &bpf_dir.join("lib")]);
    let mut open = ObjectBuilder::default()
        .open_memory(&bytes)
        .expect("open the other object");
    for mut map in open.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        if PinnedMap::ALL.iter().any(|m| m.name() == name) {
            map.set_pin_path(pins.join(&name)).expect("pin path");
        }
    }
    open.load().expect("load the other object on this build's pins")
}

fn seed(maps: &Maps) {
    maps.endpoints
        .upsert_batch(&[
            (CLIENT, id(1)),
            (SERVER, id(2)),
            (OUTSIDER, id(3)),
            (WEB, id(300)),
            (DB, id(301)),
        ])
        .unwrap();
    maps.policy.allow_all(&[PolicyRule::new(id(1), id(2))]).unwrap();
    maps.interfaces
        .set(TEST_IFINDEX, &[CLIENT, SERVER, OUTSIDER, WEB])
        .unwrap();
    let both = Isolation {
        ingress: true,
        egress: true,
    };
    maps.labels.set_isolation(300, both).unwrap();
    maps.labels.set_isolation(301, both).unwrap();
    let tcp = |first, last| Selector::Ports {
        protocol: Protocol::TCP,
        first,
        last,
    };
    for (subject, peer, kind) in [
        (300, 301, LabelKind::EgressAllow),
        (301, 300, LabelKind::IngressAllow),
    ] {
        maps.labels
            .add(&LabelRule {
                subject,
                peer,
                kind,
                selector: tcp(5432, 5432),
                policy: 1,
            })
            .unwrap();
    }
    maps.after_policy_change().unwrap();
    maps.config.set_trace_level(TraceLevel::Off).unwrap();
    maps.config.set_event_level(EventLevel::Off).unwrap();
}

struct Row {
    name: &'static str,
    hook: Hook,
    frame: Vec<u8>,
    verdict: i32,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("compare_build: measures only under `cargo bench`");
        return;
    }
    let Some(other) = std::env::var_os("EBPFCNI_COMPARE_BPF").map(PathBuf::from) else {
        eprintln!("compare_build: set EBPFCNI_COMPARE_BPF to the other build's bpf/ directory; skipped");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("compare_build: needs root; skipped");
        return;
    }
    let repeat = env_u32("EBPFCNI_BENCH_REPEAT", 1_000_000);
    let rounds = env_u32("EBPFCNI_BENCH_ROUNDS", 9).max(1);
    let pins = TestPinDir::new("bench_compare");
    let program = Program::load(pins.path()).expect("load this build's program");
    let maps = Maps::open(pins.path()).unwrap();
    seed(&maps);
    let old = load_other(&other, pins.path());
    let run_old = |hook: Hook, frame: &[u8]| {
        let prog = old
            .progs()
            .find(|p| p.name() == hook.program_name())
            .expect("the other object's entry point");
        bpf::test_run(prog.as_fd(), frame, repeat)
    };

    let rows = [
        Row {
            name: "allow, pair rule, to-pod",
            hook: Hook::ToPod,
            frame: ipv4_udp(CLIENT, SERVER, 12345, 8080),
            verdict: TC_ACT_OK,
        },
        Row {
            name: "allow, pair rule, from-pod",
            hook: Hook::FromPod,
            frame: ipv4_udp(CLIENT, SERVER, 12345, 8080),
            verdict: TC_ACT_OK,
        },
        Row {
            name: "drop, no-policy, to-pod",
            hook: Hook::ToPod,
            frame: ipv4_udp(CLIENT, OUTSIDER, 12345, 8080),
            verdict: TC_ACT_SHOT,
        },
        Row {
            name: "allow, label policy (both isolated)",
            hook: Hook::ToPod,
            frame: ipv4_tcp(WEB, DB, 40000, 5432, SYN),
            verdict: TC_ACT_OK,
        },
        Row {
            name: "drop, label policy-isolated",
            hook: Hook::ToPod,
            frame: ipv4_tcp(WEB, DB, 40000, 5433, SYN),
            verdict: TC_ACT_SHOT,
        },
    ];
    // The label allow is stateful: ct_map gets its entry on the first run,
    // the rest refresh it (the same for both programs).
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; rows.len()];
    for round in 0..rounds {
        eprintln!("compare_build: round {}/{rounds}", round + 1);
        for (row, s) in rows.iter().zip(&mut samples) {
            let (v, ns) = run_old(row.hook, &row.frame);
            assert_eq!(v, row.verdict, "{}: the other build", row.name);
            s[0].push(f64::from(ns));
            let (v, ns) = bpf::test_run(program.as_fd(row.hook), &row.frame, repeat);
            assert_eq!(v, row.verdict, "{}: this build", row.name);
            s[1].push(f64::from(ns));
            if row.verdict == TC_ACT_SHOT {
                // This build in audit mode: the drop path's audit pass.
                maps.set_audit(true).unwrap();
                let (v, ns) = bpf::test_run(program.as_fd(row.hook), &row.frame, repeat);
                maps.set_audit(false).unwrap();
                assert_eq!(v, TC_ACT_OK, "{}: audit", row.name);
                s[2].push(f64::from(ns));
            }
        }
    }
    // A drop that writes its event (the record grew from 40 to 56 bytes):
    // few runs, the ring emptied before each, so that every run writes.
    let events_repeat = EVENT_REPEAT.min(repeat);
    maps.config.set_event_level(EventLevel::Drops).unwrap();
    maps.config
        .set_rate_limit(RateLimit {
            rate: RateLimit::MAX_RATE,
            burst: u32::MAX,
        })
        .unwrap();
    let mut reader = EventReader::open(&maps, pins.path()).unwrap();
    let drop_frame = ipv4_udp(CLIENT, OUTSIDER, 12345, 8080);
    let mut event_samples = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (which, s) in event_samples.iter_mut().enumerate() {
            while !reader.poll(std::time::Duration::ZERO).unwrap().is_empty() {}
            let (v, ns) = if which == 0 {
                let prog = old
                    .progs()
                    .find(|p| p.name() == Hook::ToPod.program_name())
                    .unwrap();
                bpf::test_run(prog.as_fd(), &drop_frame, events_repeat)
            } else {
                bpf::test_run(program.as_fd(Hook::ToPod), &drop_frame, events_repeat)
            };
            assert_eq!(v, TC_ACT_SHOT);
            s.push(f64::from(ns));
        }
    }
    let lost = maps.counters.all().unwrap().events_lost;
    println!();
    println!("BPF_PROG_TEST_RUN, same maps, median of {rounds} interleaved rounds, {repeat} runs each, ns per packet");
    println!(
        "{:<40} {:>12} {:>12} {:>8} {:>14}",
        "row", "other build", "this build", "delta", "this, audit on"
    );
    for (row, s) in rows.iter().zip(&samples) {
        let (a, b) = (median(&s[0]), median(&s[1]));
        let audit = if s[2].is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1}", median(&s[2]))
        };
        println!("{:<40} {a:>12.1} {b:>12.1} {:>+8.1} {audit:>14}", row.name, b - a);
    }
    let (a, b) = (median(&event_samples[0]), median(&event_samples[1]));
    println!(
        "{:<40} {a:>12.1} {b:>12.1} {:>+8.1} {:>14}",
        format!("drop, event written ({events_repeat} runs)"),
        b - a,
        "-"
    );
    if lost > 0 {
        println!("({lost} events found the ring full: the event row is not all writes)");
    }
}
