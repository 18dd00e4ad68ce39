//! What is measured: the rows (a program, a frame, the levels, the
//! expected verdict) of both tables, and the addresses their frames name.
//! Below `setup.rs`, which seeds the maps for these rows and runs them.

use std::net::Ipv4Addr;

use ebpfcni::{
    EventLevel, Hook, PolicyRule, Protocol, RateLimit, Rule, Selector, TraceLevel, TC_ACT_OK,
    TC_ACT_REDIRECT, TC_ACT_SHOT,
};
use ebpfcni_testutil::frames::{arp, ipv4_tcp, ipv4_udp, ACK, SYN};

use crate::id;

/// The deny row traced at level "drops" writes one trace_pipe line per run
/// (bpf_printk; what a line costs is this bench's own figure, in
/// BENCHMARKS.md); 1,000,000 of them would flood the trace buffer every
/// other user of this machine reads. It runs this many times instead.
pub const TRACED_REPEAT: u32 = 10_000;

/// The deny row that writes an event per run runs this many times: the
/// ring (1 MiB) holds about 21,800 events, and is emptied after each
/// measurement, so every run writes one.
pub const EVENT_REPEAT: u32 = 20_000;

/// No limit in practice: every event or trace line is written.
pub const UNLIMITED: RateLimit = RateLimit {
    rate: RateLimit::MAX_RATE,
    burst: u32::MAX,
};

/// One a second, and already spent: every event or trace line is held back.
pub const EXHAUSTED: RateLimit = RateLimit { rate: 1, burst: 1 };

/// The default.
pub const DEFAULT_LIMIT: RateLimit = RateLimit {
    rate: 1_000,
    burst: 1_000,
};

/// Which program a row runs.
#[derive(Clone, Copy)]
pub enum Runs {
    /// A program of benches/noop.bpf.c, the harness's own cost.
    Noop(&'static str),
    /// The first release's program, on the same endpoint_map and policy_map.
    Release1,
    /// This build's entry point for a hook.
    Hook(Hook),
    /// From-pod, one run per BPF_PROG_TEST_RUN call (repeated runs would
    /// get the frame as the last run left it, its TTL one less each time
    /// it is delivered), the median of [`SINGLE_CALLS`] calls; with
    /// `deliver`, the destination has a local delivery record (redirect);
    /// with `carried`, the sender's interface record carries its identity
    /// (as the agent writes it), which saves the source's lookup, and the
    /// destination's local record (with `deliver`) carries its own, which
    /// saves the destination's.
    FromPodOnce { deliver: bool, carried: bool },
    /// To-pod, one run per call on an empty ct_map (emptied before each
    /// call, outside the measured run), so that every run is a connection's
    /// first packet: what a policy decision costs when it is made; the
    /// median of [`SINGLE_CALLS`] calls.
    NewFlowOnce,
}

/// Calls measured by a [`Runs::FromPodOnce`] row.
pub const SINGLE_CALLS: usize = 20_001;

pub struct Row {
    pub name: &'static str,
    pub program: Runs,
    pub frame: Vec<u8>,
    pub trace: TraceLevel,
    pub events: EventLevel,
    pub limit: RateLimit,
    pub repeat: u32,
    pub verdict: i32,
}

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);

pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 3);

/// Known to endpoint_map but allowed to talk to nobody.
pub const OUTSIDER: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 4);

/// Not an endpoint: its identity (7) comes from 10.255.0.0/16.
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 255, 7, 53);

/// Label policy's pods (the third table): identities the agent would
/// number, under label policy. L_CLIENT (300) is egress-isolated and may
/// send to L_SERVER (301) on TCP 8080; L_SERVER is ingress-isolated and
/// takes TCP 8080 from L_CLIENT; L_OPEN (302) takes TCP 80 from any peer;
/// L_OTHER (303) is selected by no policy (unrestricted).
pub const L_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 2);
pub const L_SERVER: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 3);
pub const L_OPEN: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 4);
pub const L_OTHER: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 5);

/// Not one of the addresses recorded for the test interface.
pub const FORGED: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 99);

/// `SRC -> DST` on one port of `protocol`.
pub fn port_rule(src: u32, dst: u32, protocol: Protocol, port: u16, stateful: bool) -> Rule {
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
pub const CLIENT_PORT: u16 = 40000;

/// A client port with no connection, even in a full ct_map.
pub const UNTRACKED_PORT: u16 = 40001;

pub fn row(name: &'static str, program: Runs, frame: &[u8], verdict: i32, repeat: u32) -> Row {
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
pub fn tracking_rows(repeat: u32) -> Vec<Row> {
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

/// The third table's rows: label policy (what the agent compiles
/// NetworkPolicy to) beside the plan's stateful pair rule, tracking on.
pub fn label_rows(repeat: u32) -> Vec<Row> {
    let to_pod = Runs::Hook(Hook::ToPod);
    vec![
        row(
            "pair stateful allow, new flow",
            Runs::NewFlowOnce,
            &ipv4_tcp(CLIENT, OUTSIDER, CLIENT_PORT, 8080, SYN),
            TC_ACT_OK,
            repeat,
        ),
        row(
            "label allow by peer, new flow",
            Runs::NewFlowOnce,
            &ipv4_tcp(L_CLIENT, L_SERVER, CLIENT_PORT, 8080, SYN),
            TC_ACT_OK,
            repeat,
        ),
        row(
            "label allow by any peer, new flow",
            Runs::NewFlowOnce,
            &ipv4_tcp(L_OTHER, L_OPEN, CLIENT_PORT, 80, SYN),
            TC_ACT_OK,
            repeat,
        ),
        row(
            "label allow, unrestricted pair, new flow",
            Runs::NewFlowOnce,
            &ipv4_tcp(L_OTHER, L_CLIENT, CLIENT_PORT, 80, SYN),
            TC_ACT_OK,
            repeat,
        ),
        row(
            "label isolated drop",
            to_pod,
            &ipv4_tcp(L_OTHER, L_SERVER, CLIENT_PORT, 8080, SYN),
            TC_ACT_SHOT,
            repeat,
        ),
        row(
            "label allow, tracked forward",
            to_pod,
            &ipv4_tcp(L_CLIENT, L_SERVER, CLIENT_PORT, 8080, ACK),
            TC_ACT_OK,
            repeat,
        ),
    ]
}

pub fn rows(repeat: u32) -> Vec<Row> {
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
            "allow, from-pod, one run a call",
            Runs::FromPodOnce {
                deliver: false,
                carried: false,
            },
            &allow,
            TC_ACT_OK,
            repeat,
        ),
        row(
            "allow, from-pod, delivered, one a call",
            Runs::FromPodOnce {
                deliver: true,
                carried: false,
            },
            &allow,
            TC_ACT_REDIRECT,
            repeat,
        ),
        row(
            "allow, from-pod, carried id, one a call",
            Runs::FromPodOnce {
                deliver: false,
                carried: true,
            },
            &allow,
            TC_ACT_OK,
            repeat,
        ),
        row(
            "allow, from-pod, carried ids, delivered",
            Runs::FromPodOnce {
                deliver: true,
                carried: true,
            },
            &allow,
            TC_ACT_REDIRECT,
            repeat,
        ),
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
