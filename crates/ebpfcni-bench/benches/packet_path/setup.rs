//! Where it is measured: the program and its maps in a private pin
//! directory, seeded with the frames' entries (the columns of the tables),
//! how one row is run on one setup, and the tables (rows on setups).

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;

use ebpfcni::events::EventReader;
use ebpfcni::{
    parse_prefix, EventLevel, Hook, Identity, Isolation, LabelKind, LabelRule, LocalDelivery, Maps,
    PinnedMap, PolicyRule, Program, Protocol, Selector, TestContext, ANY_PEER, TC_ACT_OK,
};
use ebpfcni_bench::fill_maps;
use ebpfcni_testutil::datapath::TEST_IFINDEX;
use ebpfcni_testutil::frames::{ipv4_tcp, SYN};
use ebpfcni_testutil::{bpf, TestPinDir};
use ipnet::Ipv4Net;
use libbpf_rs::{MapCore, MapHandle, Object, ObjectBuilder};

use crate::id;
use crate::rows::{
    port_rule, Row, Runs, CLIENT, L_CLIENT, L_OPEN, L_OTHER, L_SERVER, OUTSIDER, SERVER, SINGLE_CALLS,
    UNTRACKED_PORT,
};

/// Compiles and loads a BPF object of the benches or tests; `pins` gives
/// the pin path of maps to share.
pub fn load_object(source: &Path, pins: &[(&str, &Path)]) -> Object {
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
pub fn run_object(object: &Object, name: &str, frame: &[u8], repeat: u32, verdict: i32) -> f64 {
    let prog = object
        .progs()
        .find(|p| p.name() == name)
        .unwrap_or_else(|| panic!("program {name}"));
    let (got, ns) = bpf::test_run(prog.as_fd(), frame, repeat);
    assert_eq!(got, verdict, "{name}: unexpected verdict");
    f64::from(ns)
}

/// Rows measured on the same setups (columns).
pub struct Table {
    pub setups: Vec<Setup>,
    pub rows: Vec<Row>,
}

/// This build's program with its maps in a private pin directory, and the
/// first release's program sharing its endpoint_map and policy_map.
pub struct Setup {
    pub name: &'static str,
    pub program: Program,
    pub maps: Maps,
    pub release1: Object,
    pub pins: TestPinDir,
}

impl Setup {
    /// CLIENT (1) may send to SERVER (2) and to the resolver (7, by prefix),
    /// and to OUTSIDER (3) on UDP port 53 only (a port rule); OUTSIDER has
    /// no rule. The test interface holds CLIENT, SERVER and OUTSIDER.
    pub fn new(name: &'static str, tag: &str) -> Self {
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
    pub fn count(&self, map: PinnedMap) -> usize {
        let path = map.path(self.pins.path());
        MapHandle::from_pinned_path(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
            .keys()
            .count()
    }

    /// Fills endpoint_map and policy_map to capacity with entries the
    /// frames never hit.
    pub fn fill(self) -> Self {
        fill_maps(&self.maps).expect("fill the maps");
        for map in [PinnedMap::Endpoints, PinnedMap::Policy] {
            assert_eq!(self.count(map), map.capacity() as usize, "{map} full");
        }
        self
    }

    /// Loads `total` prefixes (the resolver's among them): /24s of 11.0.0.0/8
    /// and up, none holding a frame's address.
    pub fn with_prefixes(self, total: u32) -> Self {
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
    pub fn with_tracking(self) -> Self {
        self.maps
            .allow(&[
                port_rule(1, 3, Protocol::TCP, 8080, true),
                port_rule(2, 3, Protocol::TCP, 8080, true),
            ])
            .expect("stateful rules");
        assert!(self.maps.config.conntrack().unwrap(), "tracking on");
        self
    }

    /// Label policy as the agent compiles a NetworkPolicy (see
    /// [`crate::rows::label_rows`]), plus `fillers` more identities each
    /// ingress-isolated with one rule from a peer the frames never carry
    /// (a node with many policies). Tracking goes on with it: what label
    /// policy allows is stateful.
    pub fn with_labels(self, fillers: u32) -> Self {
        let tcp = ebpfcni::Protocol::TCP;
        let rule = |subject, peer, kind, port| LabelRule {
            subject,
            peer,
            kind,
            selector: Selector::Ports {
                protocol: tcp,
                first: port,
                last: port,
            },
            policy: 1,
        };
        self.maps
            .endpoints
            .upsert_batch(&[
                (L_CLIENT, id(300)),
                (L_SERVER, id(301)),
                (L_OPEN, id(302)),
                (L_OTHER, id(303)),
            ])
            .expect("seed label endpoints");
        let labels = &self.maps.labels;
        let isolated = |ingress, egress| Isolation { ingress, egress };
        for (n, isolation) in [
            (300, isolated(false, true)),
            (301, isolated(true, false)),
            (302, isolated(true, false)),
            (303, isolated(false, false)),
        ] {
            labels.set_isolation(n, isolation).expect("isolation");
        }
        for r in [
            rule(300, 301, LabelKind::EgressAllow, 8080),
            rule(301, 300, LabelKind::IngressAllow, 8080),
            rule(302, ANY_PEER, LabelKind::IngressAllow, 80),
        ] {
            labels.add(&r).expect("label rule");
        }
        for i in 0..fillers {
            labels
                .set_isolation(1_000 + i, isolated(true, false))
                .expect("filler isolation");
            labels
                .add(&rule(1_000 + i, 100_000 + i, LabelKind::IngressAllow, 80))
                .expect("filler rule");
        }
        self.with_tracking()
    }

    /// Fills ct_map through the program: a SYN from every port of CLIENT
    /// (but UNTRACKED_PORT) and of SERVER to OUTSIDER:8080 (131,069
    /// connections; the measured one, from CLIENT_PORT, is among them).
    pub fn fill_conntrack(self) -> Self {
        let ctx = TestContext {
            ifindex: TEST_IFINDEX,
            ..Default::default()
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
        // An LRU hash evicts a little before it is full when the writer
        // moves between CPUs (per-CPU free lists): nearly full is full.
        assert!(tracked >= 128_000, "ct_map not full: {tracked}");
        self
    }

    pub fn run(&self, row: &Row) -> f64 {
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
    pub fn drain_events(&self) {
        let mut reader = EventReader::open(&self.maps, self.pins.path()).expect("read events");
        while !reader.poll(std::time::Duration::ZERO).expect("poll").is_empty() {}
    }

    pub fn measure(&self, row: &Row) -> f64 {
        match row.program {
            Runs::Release1 => run_object(&self.release1, "process_tc", &row.frame, row.repeat, row.verdict),
            Runs::Hook(hook) => {
                let ctx = TestContext {
                    ifindex: TEST_IFINDEX,
                    ..Default::default()
                };
                let run = self
                    .program
                    .test_run(hook, &row.frame, Some(&ctx), row.repeat)
                    .expect("test run");
                assert_eq!(run.verdict, row.verdict, "{}: unexpected verdict", row.name);
                run.duration.as_nanos() as f64
            }
            Runs::FromPodOnce { deliver, carried } => {
                let record = LocalDelivery {
                    ifindex: 4242, // never followed by BPF_PROG_TEST_RUN
                    pod_mac: [2, 0, 0, 0, 0, 3],
                    host_mac: [2, 0, 0, 0, 0, 1],
                    redirect: true,
                };
                if deliver {
                    self.maps.local.set(SERVER, &record).expect("record SERVER");
                }
                let senders = [CLIENT, SERVER, OUTSIDER];
                if carried {
                    self.maps
                        .interfaces
                        .set_carrying(TEST_IFINDEX, &senders, Some(id(1)))
                        .expect("carry CLIENT's identity");
                    if deliver {
                        // As in agent mode: SERVER's record carries its identity too.
                        self.maps
                            .local
                            .carry_identity(SERVER, &self.maps.endpoints)
                            .expect("carry SERVER's identity");
                    }
                }
                let ctx = TestContext {
                    ifindex: TEST_IFINDEX,
                    ..Default::default()
                };
                let mut ns: Vec<f64> = (0..SINGLE_CALLS)
                    .map(|_| {
                        let run = self
                            .program
                            .test_run(Hook::FromPod, &row.frame, Some(&ctx), 1)
                            .expect("test run");
                        assert_eq!(run.verdict, row.verdict, "{}: unexpected verdict", row.name);
                        run.duration.as_nanos() as f64
                    })
                    .collect();
                if deliver {
                    self.maps.local.remove(SERVER).expect("forget SERVER");
                }
                if carried {
                    self.maps
                        .interfaces
                        .set(TEST_IFINDEX, &senders)
                        .expect("record the test interface");
                }
                ns.sort_by(f64::total_cmp);
                ns[ns.len() / 2]
            }
            Runs::NewFlowOnce => {
                let mut ns: Vec<f64> = (0..SINGLE_CALLS)
                    .map(|_| {
                        self.maps.conntrack.clear().expect("empty ct_map");
                        let run = self
                            .program
                            .test_run(Hook::ToPod, &row.frame, None, 1)
                            .expect("test run");
                        assert_eq!(run.verdict, row.verdict, "{}: unexpected verdict", row.name);
                        run.duration.as_nanos() as f64
                    })
                    .collect();
                ns.sort_by(f64::total_cmp);
                ns[ns.len() / 2]
            }
            Runs::Noop(name) => unreachable!("{name} runs once, not per setup"),
        }
    }
}
