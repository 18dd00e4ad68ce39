//! Fragmented datagrams through BPF_PROG_TEST_RUN (precedence step 4a of
//! ebpfcni.h): the first fragment carries the ports, so only it can match a
//! port rule or a tracked connection; when it passes by one, the later
//! fragments of its datagram (source, destination, protocol, IP ID) pass
//! as it did, and no other later fragment does.

use std::net::Ipv4Addr;
use std::time::Duration;

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::types::ebpfcni_pass_kind as PassKind;
use ebpfcni::{Hook, Identity, PolicyRule, Protocol, Rule, Selector};
use ebpfcni_testutil::datapath::{Datapath, TEST_IFINDEX};
use ebpfcni_testutil::frames::{
    ipv4_tcp, ipv4_udp, later_fragment, udp_first_fragment, ACK, IPPROTO_TCP, IPPROTO_UDP,
};
use ebpfcni_testutil::require_root;

const FRONTEND: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 13, 2, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 13, 3, 2);
const FRONTEND_ID: u32 = 1001;
const BACKEND_ID: u32 = 1002;
const CLIENT_PORT: u16 = 40000;

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

fn dns(stateful: bool) -> Rule {
    Rule {
        pair: PolicyRule::new(id(FRONTEND_ID), id(BACKEND_ID)),
        selector: Selector::Ports {
            protocol: Protocol::UDP,
            first: 53,
            last: 53,
        },
        stateful,
    }
}

/// Three pods with identities (OTHER's is allowed nothing), `rules`, and
/// the source records that let the from-pod hook judge what they send.
fn pods_with(test: &str, rules: &[Rule]) -> Datapath {
    let dp = Datapath::new(test);
    dp.maps
        .endpoints
        .upsert_batch(&[
            (FRONTEND, id(FRONTEND_ID)),
            (BACKEND, id(BACKEND_ID)),
            (OTHER, id(1003)),
        ])
        .unwrap();
    dp.maps
        .interfaces
        .set(TEST_IFINDEX, &[FRONTEND, BACKEND, OTHER])
        .unwrap();
    dp.maps.allow(rules).unwrap();
    dp
}

/// The two later fragments of a 3-fragment UDP datagram.
fn rest_of(src: Ipv4Addr, dst: Ipv4Addr, ip_id: u16) -> [Vec<u8>; 2] {
    [
        later_fragment(src, dst, IPPROTO_UDP, ip_id, 185, true),
        later_fragment(src, dst, IPPROTO_UDP, ip_id, 370, false),
    ]
}

#[test]
fn a_port_rule_allowed_datagrams_later_fragments_pass_and_no_others() {
    require_root!();
    let dp = pods_with("frag_port_rule", &[dns(false)]);
    for (hook, ip_id) in [(Hook::ToPod, 7u16), (Hook::FromPod, 8)] {
        dp.assert_pass(
            "first fragment to port 53",
            hook,
            &udp_first_fragment(FRONTEND, BACKEND, CLIENT_PORT, 53, ip_id),
        );
        for (n, later) in rest_of(FRONTEND, BACKEND, ip_id).iter().enumerate() {
            dp.assert_pass(&format!("later fragment {n} of its datagram"), hook, later);
        }
        let unrelated = [
            (
                "another datagram's (no first fragment seen)",
                later_fragment(FRONTEND, BACKEND, IPPROTO_UDP, ip_id + 100, 185, true),
            ),
            (
                "of another protocol",
                later_fragment(FRONTEND, BACKEND, IPPROTO_TCP, ip_id, 185, true),
            ),
            (
                "from another source",
                later_fragment(OTHER, BACKEND, IPPROTO_UDP, ip_id, 185, true),
            ),
            (
                "to another destination",
                later_fragment(FRONTEND, OTHER, IPPROTO_UDP, ip_id, 185, true),
            ),
            (
                "the reverse direction",
                later_fragment(BACKEND, FRONTEND, IPPROTO_UDP, ip_id, 185, true),
            ),
        ];
        for (what, frame) in &unrelated {
            dp.assert_drop(
                &format!("a later fragment {what}"),
                hook,
                frame,
                Reason::EBPFCNI_DROP_NO_POLICY,
            );
        }
        // A denied first fragment records nothing.
        let denied = ip_id + 200;
        dp.assert_drop(
            "first fragment to port 54",
            hook,
            &udp_first_fragment(FRONTEND, BACKEND, CLIENT_PORT, 54, denied),
            Reason::EBPFCNI_DROP_NO_POLICY,
        );
        for later in rest_of(FRONTEND, BACKEND, denied) {
            dp.assert_drop(
                "a later fragment of the denied datagram",
                hook,
                &later,
                Reason::EBPFCNI_DROP_NO_POLICY,
            );
        }
    }
    let records = dp.maps.fragments.list().unwrap();
    assert_eq!(
        records
            .iter()
            .map(|d| (d.protocol, d.src, d.dst, d.ip_id, d.src_id, d.dst_id, d.pass_kind))
            .collect::<Vec<_>>(),
        [7, 8].map(|ip_id| (
            IPPROTO_UDP,
            FRONTEND,
            BACKEND,
            ip_id,
            FRONTEND_ID,
            BACKEND_ID,
            PassKind::EBPFCNI_PASS_POLICY.0
        )),
    );
    assert!(
        records
            .iter()
            .all(|d| d.expires_in > Duration::from_secs(8) && d.expires_in <= Duration::from_secs(10)),
        "{records:#?}"
    );

    // A record lives 10 seconds.
    dp.maps.fragments.age(Duration::from_secs(10)).unwrap();
    dp.assert_drop(
        "a later fragment after its record expired",
        Hook::ToPod,
        &rest_of(FRONTEND, BACKEND, 7)[0],
        Reason::EBPFCNI_DROP_NO_POLICY,
    );

    // Revoking the rule forgets the records given under it.
    dp.assert_pass(
        "first fragment",
        Hook::ToPod,
        &udp_first_fragment(FRONTEND, BACKEND, CLIENT_PORT, 53, 9),
    );
    dp.maps
        .deny(FRONTEND_ID, BACKEND_ID, dns(false).selector)
        .unwrap();
    assert!(dp.maps.fragments.list().unwrap().is_empty());
    dp.assert_drop(
        "a later fragment after its rule was revoked",
        Hook::ToPod,
        &rest_of(FRONTEND, BACKEND, 9)[0],
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
}

#[test]
fn a_stateful_udp_replys_later_fragments_pass() {
    require_root!();
    let dp = pods_with("frag_reply", &[dns(true)]);
    let hook = Hook::ToPod;
    dp.assert_pass("the query", hook, &ipv4_udp(FRONTEND, BACKEND, CLIENT_PORT, 53));
    dp.assert_pass(
        "the answer's first fragment, a reply",
        hook,
        &udp_first_fragment(BACKEND, FRONTEND, 53, CLIENT_PORT, 21),
    );
    for later in rest_of(BACKEND, FRONTEND, 21) {
        dp.assert_pass("a later fragment of the answer", hook, &later);
    }
    let records = dp.maps.fragments.list().unwrap();
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(
        (records[0].src_id, records[0].dst_id, records[0].pass_kind),
        (BACKEND_ID, FRONTEND_ID, PassKind::EBPFCNI_PASS_REPLY.0)
    );
    // Backend cannot send fragments of a datagram that is not a reply.
    for later in rest_of(BACKEND, FRONTEND, 22) {
        dp.assert_drop(
            "a later fragment of no reply",
            hook,
            &later,
            Reason::EBPFCNI_DROP_NO_POLICY,
        );
    }
    // Nor can it start one that is not: a first fragment to another port.
    dp.assert_drop(
        "a first fragment that is not a reply",
        hook,
        &udp_first_fragment(BACKEND, FRONTEND, 53, CLIENT_PORT + 1, 23),
        Reason::EBPFCNI_DROP_NO_FLOW,
    );
    for later in rest_of(BACKEND, FRONTEND, 23) {
        dp.assert_drop("its later fragment", hook, &later, Reason::EBPFCNI_DROP_NO_POLICY);
    }
}

#[test]
fn a_pair_rule_matches_later_fragments_by_itself_and_records_nothing() {
    require_root!();
    let dp = pods_with(
        "frag_pair",
        &[Rule::pair(
            PolicyRule::new(id(FRONTEND_ID), id(BACKEND_ID)),
            false,
        )],
    );
    dp.assert_pass(
        "first fragment",
        Hook::ToPod,
        &udp_first_fragment(FRONTEND, BACKEND, CLIENT_PORT, 53, 5),
    );
    dp.assert_pass(
        "a later fragment, first seen or not",
        Hook::ToPod,
        &later_fragment(FRONTEND, BACKEND, IPPROTO_UDP, 6, 185, true),
    );
    dp.assert_pass(
        "an unfragmented packet",
        Hook::ToPod,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 80, ACK),
    );
    assert!(dp.maps.fragments.list().unwrap().is_empty());
}
