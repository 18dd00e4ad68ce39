//! Audit mode, explain's test runs and the label decision of flow events,
//! in the real program through BPF_PROG_TEST_RUN against real pinned maps:
//! audit lets exactly the policy drops pass (counted in their audit slots,
//! reported as audit events) and keeps the others; an explaining run gives
//! the verdict the program gives a real packet but writes no state (no
//! connection, no fragment record, no counter, no event); events and
//! explained verdicts name the label policy that decided.

use std::net::Ipv4Addr;
use std::time::Duration;

use ebpfcni::events::{EventReader, LabelDecision, PassKind, Verdict};
use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{
    EventLevel, Hook, Identity, Isolation, LabelKind, LabelRule, PolicyRule, Protocol, Rule, Selector,
    TC_ACT_OK, TC_ACT_SHOT,
};
use ebpfcni_testutil::datapath::{Datapath, TEST_IFINDEX};
use ebpfcni_testutil::frames::{
    eth, icmp_echo, ipv4_header, ipv4_tcp, ipv4_udp, later_fragment, udp_first_fragment, ETH_P_IP, SYN,
};
use ebpfcni_testutil::require_root;

// frontend 300, backend 301 (isolated for ingress), other 302 (selected by
// no policy), hand 1001 (the plan's).
use ebpfcni_testutil::datapath::label_pods::{self, BACKEND, FRONTEND, HAND, OTHER};
const HAND2: Ipv4Addr = Ipv4Addr::new(10, 13, 9, 6); // 1002, the plan's
const TCP: Protocol = Protocol(6);

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// backend (301) takes TCP 8080 from frontend (policy 7); frontend and
/// other are under label policy, unrestricted; HAND and HAND2 are the
/// plan's, with no rule; HAND's from-pod record for TEST_IFINDEX.
fn fixture(test: &str) -> Datapath {
    let dp = Datapath::new(test);
    label_pods::seed(&dp, 7);
    dp.maps.endpoints.upsert(HAND2, id(1002)).unwrap();
    dp.maps.interfaces.set(TEST_IFINDEX, &[HAND]).unwrap();
    dp
}

fn audited(dp: &Datapath, reason: Reason) -> u64 {
    dp.maps.drops.audited(reason).unwrap()
}

#[test]
fn audit_lets_policy_drops_pass_counted_and_keeps_every_other_drop() {
    require_root!();
    let dp = fixture("audit_datapath");
    let isolated = ipv4_tcp(OTHER, BACKEND, 40000, 8080, SYN);
    let no_policy = ipv4_udp(HAND, HAND2, 1000, 53);
    // Enforcing: both dropped.
    dp.assert_drop("isolated", Hook::ToPod, &isolated, Reason::EBPFCNI_DROP_ISOLATED);
    dp.assert_drop("no rule", Hook::ToPod, &no_policy, Reason::EBPFCNI_DROP_NO_POLICY);

    let generation = dp.maps.config.generation().unwrap();
    assert!(dp.maps.set_audit(true).unwrap(), "audit was off");
    assert!(dp.maps.config.audit().unwrap());
    assert_eq!(
        dp.maps.config.generation().unwrap(),
        generation.wrapping_add(1),
        "audit on is a change the agent must see"
    );
    assert!(!dp.maps.set_audit(true).unwrap(), "already on");

    // Policy drops pass, counted in their audit slot, not as drops.
    let mut reader = EventReader::open(&dp.maps, dp.pins.path()).unwrap();
    reader.poll(Duration::from_millis(100)).unwrap(); // the two drops above
    for (what, hook, frame, reason) in [
        ("isolated", Hook::ToPod, &isolated, Reason::EBPFCNI_DROP_ISOLATED),
        (
            "no rule, to-pod",
            Hook::ToPod,
            &no_policy,
            Reason::EBPFCNI_DROP_NO_POLICY,
        ),
        (
            "no rule, from-pod",
            Hook::FromPod,
            &no_policy,
            Reason::EBPFCNI_DROP_NO_POLICY,
        ),
    ] {
        let (dropped, audits) = (dp.drops(reason), audited(&dp, reason));
        assert_eq!(dp.verdict(hook, frame), TC_ACT_OK, "{what}: audit mode drops it");
        assert_eq!(dp.drops(reason), dropped, "{what}: counted as a drop");
        assert_eq!(audited(&dp, reason), audits + 1, "{what}: not counted as audited");
    }
    let events = reader.poll(Duration::from_millis(200)).unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events
        .iter()
        .all(|e| e.verdict == Verdict::Audit && e.pass_kind == Some(PassKind::Audit)));
    assert_eq!(events[0].reason, Some("policy-isolated"));
    assert_eq!(
        events[0].label,
        Some(LabelDecision {
            ingress_isolated: true,
            ..Default::default()
        }),
        "the event names the receiver's isolation"
    );
    assert_eq!(events[1].reason, Some("no-policy"));

    // Denied by a deny rule: policy too.
    dp.maps
        .labels
        .add(&LabelRule {
            subject: 301,
            peer: 300,
            kind: LabelKind::IngressDeny,
            selector: Selector::Any,
            policy: 9,
        })
        .unwrap();
    dp.maps.after_policy_change().unwrap();
    let denied = audited(&dp, Reason::EBPFCNI_DROP_POLICY_DENIED);
    assert_eq!(
        dp.verdict(Hook::ToPod, &ipv4_tcp(FRONTEND, BACKEND, 1, 8080, SYN)),
        TC_ACT_OK
    );
    assert_eq!(audited(&dp, Reason::EBPFCNI_DROP_POLICY_DENIED), denied + 1);

    // Not policy: malformed, source trust, unknown addresses stay drops.
    let mut ihl4 = eth(ETH_P_IP);
    ihl4.extend(ipv4_header(HAND, HAND2, 4, 0, 1, 8));
    dp.assert_drop("malformed", Hook::ToPod, &ihl4, Reason::EBPFCNI_DROP_MALFORMED);
    dp.assert_drop(
        "forged source",
        Hook::FromPod,
        &ipv4_udp(HAND2, HAND, 1, 2),
        Reason::EBPFCNI_DROP_INVALID_SOURCE,
    );
    dp.assert_drop(
        "unknown destination",
        Hook::ToPod,
        &ipv4_udp(HAND, Ipv4Addr::new(192, 0, 2, 1), 1, 2),
        Reason::EBPFCNI_DROP_UNKNOWN_DST,
    );
    drop(reader);

    // Off: enforced again.
    assert!(dp.maps.set_audit(false).unwrap());
    dp.assert_drop(
        "no rule, audit off",
        Hook::ToPod,
        &no_policy,
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
}

/// Every piece of state a packet can leave: (tracked connections,
/// fragments' records, drop counters, notification counters).
fn state(dp: &Datapath) -> (usize, usize, Vec<(&'static str, u64)>, ebpfcni::NotifyCounts) {
    (
        dp.maps.conntrack.len().unwrap(),
        dp.maps.fragments.len().unwrap(),
        [dp.maps.drops.all().unwrap(), dp.maps.drops.all_audited().unwrap()].concat(),
        dp.maps.counters.all().unwrap(),
    )
}

#[test]
fn explain_gives_the_programs_verdict_and_writes_no_state() {
    require_root!();
    let dp = fixture("explain_datapath");
    dp.maps.config.set_event_level(EventLevel::All).unwrap();
    dp.maps
        .allow(&[Rule {
            pair: PolicyRule::new(id(1001), id(1002)),
            selector: Selector::Ports {
                protocol: Protocol(17),
                first: 53,
                last: 53,
            },
            stateful: true,
        }])
        .unwrap();
    let mut reader = EventReader::open(&dp.maps, dp.pins.path()).unwrap();
    let before = state(&dp);

    // A stateful rule's first packet: a new flow, not tracked by explain.
    let dns = ipv4_udp(HAND, HAND2, 40000, 53);
    let x = dp
        .program
        .explain(Hook::FromPod, &dns, TEST_IFINDEX)
        .unwrap()
        .expect("explained");
    assert_eq!((x.tc_verdict, x.verdict), (TC_ACT_OK, Verdict::Pass));
    assert_eq!(x.pass_kind, Some(PassKind::NewFlow));
    assert_eq!((x.src_id, x.dst_id), (1001, 1002));
    assert_eq!(x.label, None, "a port rule of the plan, not label policy");
    // Dropped: the reason, nothing counted.
    let x = dp
        .program
        .explain(Hook::ToPod, &ipv4_udp(HAND, HAND2, 40000, 54), TEST_IFINDEX)
        .unwrap()
        .unwrap();
    assert_eq!(
        (x.tc_verdict, x.verdict, x.reason),
        (TC_ACT_SHOT, Verdict::Drop, Some("no-policy"))
    );
    let x = dp
        .program
        .explain(Hook::FromPod, &ipv4_udp(HAND2, HAND, 1, 2), TEST_IFINDEX)
        .unwrap()
        .unwrap();
    assert_eq!(x.reason, Some("invalid-source"));
    // A first fragment a port rule passes: not recorded.
    let x = dp
        .program
        .explain(
            Hook::ToPod,
            &udp_first_fragment(HAND, HAND2, 40001, 53, 77),
            TEST_IFINDEX,
        )
        .unwrap()
        .unwrap();
    assert_eq!(x.verdict, Verdict::Pass);
    // Label policy: the rule's policy, or whose isolation.
    let x = dp
        .program
        .explain(
            Hook::ToPod,
            &ipv4_tcp(FRONTEND, BACKEND, 40002, 8080, SYN),
            TEST_IFINDEX,
        )
        .unwrap()
        .unwrap();
    assert_eq!(x.verdict, Verdict::Pass);
    assert_eq!(
        x.label,
        Some(LabelDecision {
            ingress_policy: Some(7),
            ..Default::default()
        })
    );
    let x = dp
        .program
        .explain(
            Hook::ToPod,
            &ipv4_tcp(FRONTEND, BACKEND, 40003, 8081, SYN),
            TEST_IFINDEX,
        )
        .unwrap()
        .unwrap();
    assert_eq!(x.reason, Some("policy-isolated"));
    assert!(x.label.unwrap().ingress_isolated && !x.label.unwrap().egress_isolated);
    // Not IPv4: the program says nothing.
    let arp = ebpfcni_testutil::frames::arp(HAND, HAND2);
    assert_eq!(dp.program.explain(Hook::ToPod, &arp, TEST_IFINDEX).unwrap(), None);

    assert_eq!(state(&dp), before, "an explained packet left state behind");
    assert!(
        reader.poll(Duration::from_millis(200)).unwrap().is_empty(),
        "an explained packet wrote an event"
    );

    // The same packets, real: they do leave state (the test can fail).
    assert_eq!(dp.verdict(Hook::FromPod, &dns), TC_ACT_OK);
    dp.verdict(Hook::ToPod, &udp_first_fragment(HAND, HAND2, 40001, 53, 77));
    let after = state(&dp);
    // Two connections (the datagram and the fragmented one), one record.
    assert_eq!((after.0, after.1), (before.0 + 2, before.1 + 1));
    assert_eq!(reader.poll(Duration::from_millis(200)).unwrap().len(), 2);
    // A later fragment explained: passes by the record, still writes nothing.
    let later = later_fragment(HAND, HAND2, 17, 77, 8, false);
    let x = dp
        .program
        .explain(Hook::ToPod, &later, TEST_IFINDEX)
        .unwrap()
        .unwrap();
    assert_eq!(x.verdict, Verdict::Pass);
    // A reply of the tracked connection: passes, and its entry is untouched.
    let connections = dp.maps.conntrack.list().unwrap();
    let x = dp
        .program
        .explain(Hook::ToPod, &ipv4_udp(HAND2, HAND, 53, 40000), TEST_IFINDEX)
        .unwrap()
        .unwrap();
    assert_eq!(x.pass_kind, Some(PassKind::Reply));
    // Untouched: the same entries, none refreshed (a real reply would have
    // set its lifetime afresh; the clock moves on between the two reads).
    let now = dp.maps.conntrack.list().unwrap();
    let without_expiry = |c: &[ebpfcni::Connection]| {
        c.iter()
            .map(|c| ebpfcni::Connection {
                expires_in: Duration::ZERO,
                ..c.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(without_expiry(&now), without_expiry(&connections));
    for (a, b) in now.iter().zip(&connections) {
        assert!(a.expires_in <= b.expires_in, "refreshed: {a:?} after {b:?}");
    }
    assert_eq!(state(&dp), after);
    assert!(reader.poll(Duration::from_millis(200)).unwrap().is_empty());
}

#[test]
fn flow_events_name_the_label_policy_that_decided() {
    require_root!();
    let dp = fixture("events_policy");
    dp.maps.config.set_event_level(EventLevel::All).unwrap();
    // Other isolated for egress, with a rule of policy 11 to backend.
    dp.maps
        .labels
        .set_isolation(
            302,
            Isolation {
                ingress: false,
                egress: true,
            },
        )
        .unwrap();
    dp.maps
        .labels
        .add(&LabelRule {
            subject: 302,
            peer: 301,
            kind: LabelKind::EgressAllow,
            selector: Selector::Protocol(TCP),
            policy: 11,
        })
        .unwrap();
    dp.maps
        .labels
        .add(&LabelRule {
            subject: 301,
            peer: 302,
            kind: LabelKind::IngressAllow,
            selector: Selector::Any,
            policy: 12,
        })
        .unwrap();
    dp.maps.after_policy_change().unwrap();
    let mut reader = EventReader::open(&dp.maps, dp.pins.path()).unwrap();
    assert_eq!(
        dp.verdict(Hook::ToPod, &ipv4_tcp(OTHER, BACKEND, 1, 22, SYN)),
        TC_ACT_OK
    );
    assert_eq!(
        dp.verdict(Hook::ToPod, &icmp_echo(OTHER, BACKEND, 8, 1)),
        TC_ACT_SHOT
    );
    assert_eq!(
        dp.verdict(Hook::ToPod, &icmp_echo(OTHER, FRONTEND, 8, 1)),
        TC_ACT_SHOT
    );
    assert_eq!(
        dp.verdict(Hook::ToPod, &icmp_echo(FRONTEND, OTHER, 8, 1)),
        TC_ACT_OK
    );
    let events = reader.poll(Duration::from_millis(200)).unwrap();
    let labels: Vec<Option<LabelDecision>> = events.iter().map(|e| e.label).collect();
    assert_eq!(
        labels,
        [
            Some(LabelDecision {
                egress_policy: Some(11),
                ingress_policy: Some(12),
                ..Default::default()
            }),
            Some(LabelDecision {
                egress_isolated: true,
                ..Default::default()
            }),
            Some(LabelDecision {
                egress_isolated: true,
                ..Default::default()
            }),
            // Both unrestricted: label policy judged it, no rule needed.
            Some(LabelDecision::default()),
        ],
        "{events:?}"
    );
    assert_eq!(events[0].label.unwrap().policies(), [11, 12]);
}
