//! Per-packet cost of the program through BPF_PROG_TEST_RUN, beside a no-op tc
//! program and the first release's program run by the same harness (the
//! kernel's own loop and timer), on the same maps.
//!
//! `cargo bench -p ebpfcni-bench --bench packet_path` (root: loads programs,
//! pins maps in private pin directories under /sys/fs/bpf, removed at the end).
//!
//! First table, rules as the plan writes them (stateless; connection
//! tracking off) and port rules. Setups (columns): nearly empty maps (the
//! entries the frames need); full endpoint_map and policy_map (16,384
//! endpoints, 65,536 rules); 1,000 and 16,384 CIDR prefixes.
//!
//! Second table, stateful rules (tracking on): a TCP connection's forward
//! packets and replies, with ct_map nearly empty and with ct_map full
//! (filled by the program itself, from 131,070 SYNs). The frames' entries are written first, so in full
//! maps they sit at the end of their hash bucket's chain (the kernel adds at
//! the head): the worst case, not the average. The machine is shared and
//! noisy, so every measurement is taken ROUNDS times, the rows interleaved
//! within a round, and the median is reported.
//!
//! Environment: `EBPFCNI_BENCH_REPEAT` (default 1,000,000 runs per
//! measurement), `EBPFCNI_BENCH_ROUNDS` (default 9).

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;

use ebpfcni::events::EventReader;
use ebpfcni::{
    parse_prefix, EventLevel, Hook, Identity, Maps, PinnedMap, PolicyRule, Program, Protocol, RateLimit,
    Rule, Selector, TestContext, TraceLevel, TC_ACT_OK, TC_ACT_SHOT,
};
use ebpfcni_bench::fill_maps;
use ebpfcni_testutil::datapath::TEST_IFINDEX;
use ebpfcni_testutil::frames::{arp, ipv4_tcp, ipv4_udp, ACK, SYN};
use ebpfcni_testutil::{bpf, median, TestPinDir};
use ipnet::Ipv4Net;
use libbpf_rs::{MapCore, MapHandle, Object, ObjectBuilder};

/// The deny row traced at level "drops" writes one trace_pipe line per run
/// (bpf_printk; what a line costs is this bench's own figure, in
/// BENCHMARKS.md); 1,000,000 of them would flood the trace buffer every
/// other user of this machine reads. It runs this many times instead.
const TRACED_REPEAT: u32 = 10_000;

/// The deny row that writes an event per run runs this many times: the
/// ring (1 MiB) holds about 21,800 events, and is emptied after each
/// measurement, so every run writes one.
const EVENT_REPEAT: u32 = 20_000;

/// No limit in practice: every event or trace line is written.
const UNLIMITED: RateLimit = RateLimit {
    rate: RateLimit::MAX_RATE,
    burst: u32::MAX,
};
/// One a second, and already spent: every event or trace line is held back.
const EXHAUSTED: RateLimit = RateLimit { rate: 1, burst: 1 };
/// The default.
const DEFAULT_LIMIT: RateLimit = RateLimit {
    rate: 1_000,
    burst: 1_000,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 3);
/// Known to endpoint_map but allowed to talk to nobody.
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 4);
/// Not an endpoint: its identity (7) comes from 10.255.0.0/16.
const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 255, 7, 53);
/// Not one of the addresses recorded for the test interface.
const FORGED: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 99);

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).map_or(default, |v| {
        v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

fn id(n: u32) -> Identity {
    Identity::new(n).expect("non-zero identity")
}

/// Compiles and loads a BPF object of the benches or tests; `pins` gives
/// the pin path of maps to share.
fn load_object(source: &Path, pins: &[(&str, &Path)]) -> Object {
    let dir = source.parent().expect("in a directory");
    let mut open = ObjectBuilder::default()
        .open_memory(&bpf::compile(source, &[dir]))
        .unwrap_or_else(|e| panic!("open {}: {e}", source.display()));
    for mut map in open.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        if let Some((_, dir)) = pins.iter().find(|(n, _)| *n == name) {
            map.set_pin_path(dir.join(&name)).expect("pin path");
        }
    }
    open.load()
        .unwrap_or_else(|e| panic!("load {}: {e}", source.display()))
}

/// Mean ns per run of program `name` of `object`.
fn run_object(object: &Object, name: &str, frame: &[u8], repeat: u32, verdict: i32) -> f64 {
    let prog = object
        .progs()
        .find(|p| p.name() == name)
        .unwrap_or_else(|| panic!("program {name}"));
    let (got, ns) = bpf::test_run(prog.as_fd(), frame, repeat);
    assert_eq!(got, verdict, "{name}: unexpected verdict");
    f64::from(ns)
}

/// This build's program with its maps in a private pin directory, and the
/// first release's program sharing its endpoint_map and policy_map.
struct Setup {
    name: &'static str,
    program: Program,
    maps: Maps,
    release1: Object,
    pins: TestPinDir,
}

impl Setup {
    /// CLIENT (1) may send to SERVER (2) and to the resolver (7, by prefix),
    /// and to OUTSIDER (3) on UDP port 53 only (a port rule); OUTSIDER has
    /// no rule. The test interface holds CLIENT, SERVER and OUTSIDER.
    fn new(name: &'static str, tag: &str) -> Self {
        let pins = TestPinDir::new(tag);
        let program = Program::load(pins.path()).expect("load program");
        let maps = Maps::open(pins.path()).expect("open maps");
        maps.endpoints
            .upsert_batch(&[(CLIENT, id(1)), (SERVER, id(2)), (OUTSIDER, id(3))])
            .expect("seed endpoints");
        maps.policy
            .allow_all(&[PolicyRule::new(id(1), id(2)), PolicyRule::new(id(1), id(7))])
            .expect("seed policy");
        maps.allow(&[port_rule(1, 3, Protocol::UDP, 53, false)])
            .expect("seed port rule");
        maps.prefixes
            .upsert(parse_prefix("10.255.0.0/16").unwrap(), id(7))
            .expect("seed prefix");
        maps.interfaces
            .set(TEST_IFINDEX, &[CLIENT, SERVER, OUTSIDER])
            .expect("record the test interface");
        let release1 = load_object(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../ebpfcni-testutil/tests/release1/ebpfcni.bpf.c"),
            &[("endpoint_map", pins.path()), ("policy_map", pins.path())],
        );
        Self {
            name,
            program,
            maps,
            release1,
            pins,
        }
    }

    /// Entries of a pinned map, counted key by key through its pin:
    /// independent of the library's listing.
    fn count(&self, map: PinnedMap) -> usize {
        let path = map.path(self.pins.path());
        MapHandle::from_pinned_path(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
            .keys()
            .count()
    }

    /// Fills endpoint_map and policy_map to capacity with entries the
    /// frames never hit.
    fn fill(self) -> Self {
        fill_maps(&self.maps).expect("fill the maps");
        for map in [PinnedMap::Endpoints, PinnedMap::Policy] {
            assert_eq!(self.count(map), map.capacity() as usize, "{map} full");
        }
        self
    }

    /// Loads `total` prefixes (the resolver's among them): /24s of 11.0.0.0/8
    /// and up, none holding a frame's address.
    fn with_prefixes(self, total: u32) -> Self {
        let fillers: Vec<(Ipv4Net, Identity)> = (1..total)
            .map(|i| {
                (
                    Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).unwrap(),
                    id(100 + i),
                )
            })
            .collect();
        self.maps.prefixes.upsert_batch(&fillers).expect("load prefixes");
        assert_eq!(self.count(PinnedMap::Prefixes), total as usize);
        self
    }

    /// Turns connection tracking on: CLIENT (1) and SERVER (2) may open
    /// TCP connections to OUTSIDER (3) port 8080, statefully.
    fn with_tracking(self) -> Self {
        self.maps
            .allow(&[
                port_rule(1, 3, Protocol::TCP, 8080, true),
                port_rule(2, 3, Protocol::TCP, 8080, true),
            ])
            .expect("stateful rules");
        assert!(self.maps.config.conntrack().unwrap(), "tracking on");
        self
    }

    /// Fills ct_map through the program: a SYN from every port of CLIENT
    /// (but UNTRACKED_PORT) and of SERVER to OUTSIDER:8080 (131,069
    /// connections; the measured one, from CLIENT_PORT, is among them).
    fn fill_conntrack(self) -> Self {
        let ctx = TestContext {
            ifindex: TEST_IFINDEX,
        };
        for src in [CLIENT, SERVER] {
            for port in (1..=u16::MAX).filter(|p| *p != UNTRACKED_PORT || src != CLIENT) {
                let syn = ipv4_tcp(src, OUTSIDER, port, 8080, SYN);
                let run = self
                    .program
                    .test_run(Hook::ToPod, &syn, Some(&ctx), 1)
                    .expect("test run");
                assert_eq!(run.verdict, TC_ACT_OK, "SYN from {src}:{port}");
            }
        }
        let tracked = self.count(PinnedMap::Conntrack);
        eprintln!("packet_path: ct_map holds {tracked} connections");
        assert!(tracked >= 131_000, "ct_map not full: {tracked}");
        self
    }

    fn run(&self, row: &Row) -> f64 {
        self.maps
            .config
            .set_trace_level(row.trace)
            .expect("set trace level");
        self.maps
            .config
            .set_event_level(row.events)
            .expect("set event level");
        self.maps
            .config
            .set_rate_limit(row.limit)
            .expect("set rate limit");
        let ns = self.measure(row);
        if row.events != EventLevel::Off {
            self.drain_events();
        }
        ns
    }

    /// Empties the event ring, so that the next run finds room.
    fn drain_events(&self) {
        let mut reader = EventReader::open(&self.maps, self.pins.path()).expect("read events");
        while !reader.poll(std::time::Duration::ZERO).expect("poll").is_empty() {}
    }

    fn measure(&self, row: &Row) -> f64 {
        match row.program {
            Runs::Release1 => run_object(&self.release1, "process_tc", &row.frame, row.repeat, row.verdict),
            Runs::Hook(hook) => {
                let ctx = TestContext {
                    ifindex: TEST_IFINDEX,
                };
                let run = self
                    .program
                    .test_run(hook, &row.frame, Some(&ctx), row.repeat)
                    .expect("test run");
                assert_eq!(run.verdict, row.verdict, "{}: unexpected verdict", row.name);
                run.duration.as_nanos() as f64
            }
            Runs::Noop(name) => unreachable!("{name} runs once, not per setup"),
        }
    }
}

/// Which program a row runs.
#[derive(Clone, Copy)]
enum Runs {
    /// A program of benches/noop.bpf.c, the harness's own cost.
    Noop(&'static str),
    /// The first release's program, on the same endpoint_map and policy_map.
    Release1,
    /// This build's entry point for a hook.
    Hook(Hook),
}

struct Row {
    name: &'static str,
    program: Runs,
    frame: Vec<u8>,
    trace: TraceLevel,
    events: EventLevel,
    limit: RateLimit,
    repeat: u32,
    verdict: i32,
}

/// Rows measured on the same setups (columns).
struct Table {
    setups: Vec<Setup>,
    rows: Vec<Row>,
}

/// `SRC -> DST` on one port of `protocol`.
fn port_rule(src: u32, dst: u32, protocol: Protocol, port: u16, stateful: bool) -> Rule {
    Rule {
        pair: PolicyRule::new(id(src), id(dst)),
        selector: Selector::Ports {
            protocol,
            first: port,
            last: port,
        },
        stateful,
    }
}

/// The measured connection's client port.
const CLIENT_PORT: u16 = 40000;
/// A client port with no connection, even in a full ct_map.
const UNTRACKED_PORT: u16 = 40001;

fn row(name: &'static str, program: Runs, frame: &[u8], verdict: i32, repeat: u32) -> Row {
    Row {
        name,
        program,
        frame: frame.to_vec(),
        trace: TraceLevel::Off,
        events: EventLevel::Off,
        limit: DEFAULT_LIMIT,
        repeat,
        verdict,
    }
}

/// The second table's rows: tracking on.
fn tracking_rows(repeat: u32) -> Vec<Row> {
    let to_pod = Runs::Hook(Hook::ToPod);
    vec![
        row(
            "pair allow (stateless), tracking on",
            to_pod,
            &ipv4_udp(CLIENT, SERVER, 12345, 8080),
            TC_ACT_OK,
            repeat,
        ),
        row(
            "tracked forward (TCP ACK)",
            to_pod,
            &ipv4_tcp(CLIENT, OUTSIDER, CLIENT_PORT, 8080, ACK),
            TC_ACT_OK,
            repeat,
        ),
        row(
            "tracked reply (TCP ACK)",
            to_pod,
            &ipv4_tcp(OUTSIDER, CLIENT, 8080, CLIENT_PORT, ACK),
            TC_ACT_OK,
            repeat,
        ),
        row(
            "reply without a flow (drop)",
            to_pod,
            &ipv4_tcp(OUTSIDER, CLIENT, 8080, UNTRACKED_PORT, ACK),
            TC_ACT_SHOT,
            repeat,
        ),
    ]
}

fn rows(repeat: u32) -> Vec<Row> {
    let allow = ipv4_udp(CLIENT, SERVER, 12345, 8080);
    let deny = ipv4_udp(SERVER, OUTSIDER, 8080, 12345);
    let to_pod = Runs::Hook(Hook::ToPod);
    vec![
        row(
            "no-op program (baseline)",
            Runs::Noop("noop"),
            &allow,
            TC_ACT_OK,
            repeat,
        ),
        row(
            "trace-level check alone (off)",
            Runs::Noop("trace_check"),
            &allow,
            TC_ACT_OK,
            repeat,
        ),
        row("allow, first release", Runs::Release1, &allow, TC_ACT_OK, repeat),
        row("allow, to-pod", to_pod, &allow, TC_ACT_OK, repeat),
        row(
            "allow, from-pod (+ source check)",
            Runs::Hook(Hook::FromPod),
            &allow,
            TC_ACT_OK,
            repeat,
        ),
        row(
            "allow to a CIDR-resolved dst",
            to_pod,
            &ipv4_udp(CLIENT, RESOLVER, 12345, 53),
            TC_ACT_OK,
            repeat,
        ),
        row(
            "port-rule allow (UDP 53)",
            to_pod,
            &ipv4_udp(CLIENT, OUTSIDER, 12345, 53),
            TC_ACT_OK,
            repeat,
        ),
        row(
            "port-rule deny (UDP 54)",
            to_pod,
            &ipv4_udp(CLIENT, OUTSIDER, 12345, 54),
            TC_ACT_SHOT,
            repeat,
        ),
        row(
            "forged source, from-pod",
            Runs::Hook(Hook::FromPod),
            &ipv4_udp(FORGED, SERVER, 12345, 8080),
            TC_ACT_SHOT,
            repeat,
        ),
        row("deny (no policy), trace off", to_pod, &deny, TC_ACT_SHOT, repeat),
        Row {
            events: EventLevel::Drops,
            limit: UNLIMITED,
            ..row(
                "deny, event written",
                to_pod,
                &deny,
                TC_ACT_SHOT,
                EVENT_REPEAT.min(repeat),
            )
        },
        Row {
            events: EventLevel::Drops,
            limit: EXHAUSTED,
            ..row(
                "deny, event over the rate limit",
                to_pod,
                &deny,
                TC_ACT_SHOT,
                repeat,
            )
        },
        Row {
            trace: TraceLevel::Drops,
            limit: UNLIMITED,
            ..row(
                "deny, trace line written",
                to_pod,
                &deny,
                TC_ACT_SHOT,
                TRACED_REPEAT.min(repeat),
            )
        },
        Row {
            trace: TraceLevel::Drops,
            limit: EXHAUSTED,
            ..row(
                "deny, trace line over the rate limit",
                to_pod,
                &deny,
                TC_ACT_SHOT,
                repeat,
            )
        },
        Row {
            trace: TraceLevel::Drops,
            events: EventLevel::Drops,
            limit: EXHAUSTED,
            ..row("deny, default levels, flood", to_pod, &deny, TC_ACT_SHOT, repeat)
        },
        row("non-IPv4 (ARP)", to_pod, &arp(CLIENT, SERVER), TC_ACT_OK, repeat),
    ]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, and a test run should not spend seconds measuring.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("packet_path: measures only under `cargo bench`");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("packet_path: needs root (loads BPF programs, pins maps); skipped");
        return;
    }
    let repeat = env_u32("EBPFCNI_BENCH_REPEAT", 1_000_000);
    let rounds = env_u32("EBPFCNI_BENCH_ROUNDS", 9).max(1);

    let noop = load_object(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/noop.bpf.c"),
        &[],
    );
    let tables = [
        Table {
            setups: vec![
                Setup::new("nearly empty", "bench_empty"),
                Setup::new("full maps", "bench_full").fill(),
                Setup::new("1,000 prefixes", "bench_p1k").with_prefixes(1_000),
                Setup::new("16,384 prefixes", "bench_p16k").with_prefixes(PinnedMap::Prefixes.capacity()),
            ],
            rows: rows(repeat),
        },
        Table {
            setups: vec![
                Setup::new("ct nearly empty", "bench_ct").with_tracking(),
                Setup::new("ct_map full", "bench_ct_full")
                    .with_tracking()
                    .fill_conntrack(),
            ],
            rows: tracking_rows(repeat),
        },
    ];

    // samples[table][row][setup]; no-op rows use column 0 only. Interleaved by round.
    let mut samples: Vec<Vec<Vec<Vec<f64>>>> = tables
        .iter()
        .map(|t| vec![vec![Vec::new(); t.setups.len()]; t.rows.len()])
        .collect();
    for round in 0..rounds {
        eprintln!("packet_path: round {}/{rounds}", round + 1);
        for (table, samples) in tables.iter().zip(&mut samples) {
            for (row, out) in table.rows.iter().zip(samples) {
                match row.program {
                    Runs::Noop(name) => {
                        out[0].push(run_object(&noop, name, &row.frame, row.repeat, row.verdict))
                    }
                    _ => {
                        for (setup, slot) in table.setups.iter().zip(out.iter_mut()) {
                            slot.push(setup.run(row));
                        }
                    }
                }
            }
        }
    }
    let medians: Vec<Vec<Vec<Option<f64>>>> = samples
        .iter()
        .map(|table| {
            table
                .iter()
                .map(|per_setup| {
                    per_setup
                        .iter()
                        .map(|s| (!s.is_empty()).then(|| median(s)))
                        .collect()
                })
                .collect()
        })
        .collect();
    println!();
    println!(
        "BPF_PROG_TEST_RUN, median of {rounds} interleaved rounds, {repeat} runs each (trace line written: {}, \
         event written: {}), ns per packet",
        TRACED_REPEAT.min(repeat),
        EVENT_REPEAT.min(repeat)
    );
    print_table(&tables[0], &medians[0]);
    report_plan_rules(&tables[0], &medians[0]);
    report_notifications(&tables[0], &medians[0]);
    print_table(&tables[1], &medians[1]);
    report_tracking(&tables, &medians);
}

/// The value of row `name` in column `setup`.
fn cell(table: &Table, medians: &[Vec<Option<f64>>], name: &str, setup: usize) -> f64 {
    table
        .rows
        .iter()
        .position(|r| r.name == name)
        .and_then(|i| medians[i][setup])
        .unwrap_or_else(|| panic!("row {name}"))
}

fn goal(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn print_table(table: &Table, medians: &[Vec<Option<f64>>]) {
    println!();
    print!("| {:<36} |", "path");
    for s in &table.setups {
        print!(" {:>15} |", s.name);
    }
    println!();
    print!("|{:-<38}|", "");
    for _ in &table.setups {
        print!("{:->17}|", "");
    }
    println!();
    for (row, cells) in table.rows.iter().zip(medians) {
        print!("| {:<36} |", row.name);
        for cell in cells {
            match cell {
                Some(ns) => print!(" {ns:>15.1} |"),
                None => print!(" {:>15} |", "-"),
            }
        }
        println!();
    }
    println!();
}

fn report_notifications(table: &Table, medians: &[Vec<Option<f64>>]) {
    let at = |name: &str| cell(table, medians, name, 0);
    let off = at("deny (no policy), trace off");
    let event = at("deny, event written");
    println!(
        "goal: a drop with its event written within +50 ns of a drop with events off ({off:.1} ns): {:+.1} ns: {}",
        event - off,
        goal(event - off <= 50.0)
    );
    println!(
        "a drop's notifications (nearly empty maps): event written {:+.1} ns, held back by the rate limit {:+.1} ns; \
         trace line written {:+.1} ns, held back {:+.1} ns; both held back (a flood at the default levels) {:+.1} ns",
        event - off,
        at("deny, event over the rate limit") - off,
        at("deny, trace line written") - off,
        at("deny, trace line over the rate limit") - off,
        at("deny, default levels, flood") - off
    );
}

fn report_tracking(tables: &[Table], medians: &[Vec<Vec<Option<f64>>>]) {
    let stateless = cell(&tables[0], &medians[0], "allow, to-pod", 0);
    let (t, m) = (&tables[1], &medians[1]);
    for (i, s) in t.setups.iter().enumerate() {
        let forward = cell(t, m, "tracked forward (TCP ACK)", i);
        let reply = cell(t, m, "tracked reply (TCP ACK)", i);
        println!(
            "goal: tracked packets within +25 ns of a stateless allow ({stateless:.1} ns, tracking off) ({}): forward {:+.1} ns, reply {:+.1} ns: {}",
            s.name,
            forward - stateless,
            reply - stateless,
            goal(forward - stateless <= 25.0 && reply - stateless <= 25.0)
        );
    }
    println!(
        "tracking on costs a stateless allow {:+.1} ns (one ct_map lookup that misses)",
        cell(t, m, "pair allow (stateless), tracking on", 0) - stateless
    );
}

fn report_plan_rules(table: &Table, medians: &[Vec<Option<f64>>]) {
    let at = |name: &str, setup: usize| cell(table, medians, name, setup);
    for (i, s) in table.setups.iter().enumerate() {
        let (before, now) = (at("allow, first release", i), at("allow, to-pod", i));
        let from_pod = at("allow, from-pod (+ source check)", i);
        println!(
            "goal: allow between exact endpoints within +10 ns of the first release's ({}): to-pod {:+.1} ns, from-pod {:+.1} ns: {}",
            s.name,
            now - before,
            from_pod - before,
            goal(now - before <= 10.0 && from_pod - before <= 10.0)
        );
    }
    let worst = table
        .rows
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            matches!(r.program, Runs::Hook(_))
                && r.name != "non-IPv4 (ARP)"
                && r.trace == TraceLevel::Off
                && r.events == EventLevel::Off
        })
        .map(|(i, r)| (r.name, medians[i][1].unwrap() / medians[i][0].unwrap()))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("rows");
    println!(
        "goal: full maps within 15% of nearly empty (rows with lookups, notifications off): worst \"{}\" at {:+.1}%: {}",
        worst.0,
        (worst.1 - 1.0) * 100.0,
        goal(worst.1 <= 1.15)
    );
    println!(
        "CIDR-resolved dst: {:.1} ns with 1 prefix, {:.1} with 1,000, {:.1} with 16,384 (exact allow: {:.1})",
        at("allow to a CIDR-resolved dst", 0),
        at("allow to a CIDR-resolved dst", 2),
        at("allow to a CIDR-resolved dst", 3),
        at("allow, to-pod", 0)
    );
}
