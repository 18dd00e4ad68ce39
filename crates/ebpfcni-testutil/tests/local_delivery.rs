//! Local delivery at from-pod (bpf/lib/deliver.h), on crafted frames
//! through BPF_PROG_TEST_RUN: a packet from-pod passes to an address with a
//! local_map record of a "redirect" network comes back rewritten as routing
//! would have (TTL one less, checksum right, the MACs the receiving pod
//! expects) with TC_ACT_REDIRECT (bpf_redirect_peer); everything else is
//! left as it was, with the verdict it had. (Where the redirect lands, the
//! host veth's peer, is shown with real pods: ebpfcni-cni's
//! tests/local_delivery.rs.)

use std::net::Ipv4Addr;

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{
    CtState, Hook, Identity, LocalDelivery, PolicyRule, Rule, Selector, TestContext, TC_ACT_OK,
    TC_ACT_REDIRECT, TC_ACT_SHOT,
};
use ebpfcni_testutil::datapath::{Datapath, TEST_IFINDEX};
use ebpfcni_testutil::frames::{icmp_echo, ipv4_checksum, ipv4_tcp, ipv4_udp, ACK, ICMP_ECHO, SYN};
use ebpfcni_testutil::require_root;

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 3);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
/// B's host veth, as its record says (BPF_PROG_TEST_RUN does not follow
/// the redirect, so it need not exist).
const B_VETH: u32 = 4242;
const B_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x03];
const B_GATEWAY_MAC: [u8; 6] = [0x02, 0x9a, 0, 0, 0, 0x01];

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

fn b_record(redirect: bool) -> LocalDelivery {
    LocalDelivery {
        ifindex: B_VETH,
        pod_mac: B_MAC,
        host_mac: B_GATEWAY_MAC,
        redirect,
    }
}

/// A (1001) on TEST_IFINDEX may send anything to B (1002); B is on the
/// node, delivered to by redirect; OUTSIDE (1003) is not on the node.
fn fixture(test: &str) -> Datapath {
    let dp = Datapath::new(test);
    dp.maps.endpoints.upsert(POD_A, id(1001)).unwrap();
    dp.maps.endpoints.upsert(POD_B, id(1002)).unwrap();
    dp.maps.endpoints.upsert(OUTSIDE, id(1003)).unwrap();
    dp.maps.interfaces.set(TEST_IFINDEX, &[POD_A]).unwrap();
    dp.maps.policy.allow(PolicyRule::new(id(1001), id(1002))).unwrap();
    dp.maps.policy.allow(PolicyRule::new(id(1001), id(1003))).unwrap();
    dp.maps.local.set(POD_B, &b_record(true)).unwrap();
    dp
}

/// `frame` with a valid IPv4 header checksum and `ttl`.
fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    frame[14 + 8] = ttl;
    frame[14 + 10..14 + 12].fill(0);
    let check = ipv4_checksum(&frame[14..14 + 20]);
    frame[14 + 10..14 + 12].copy_from_slice(&check.to_be_bytes());
    frame
}

fn from_pod(dp: &Datapath, frame: &[u8]) -> (i32, Vec<u8>) {
    let ctx = TestContext {
        ifindex: TEST_IFINDEX,
        ingress_ifindex: 0,
    };
    let (run, out) = dp
        .program
        .test_run_output(Hook::FromPod, frame, Some(&ctx))
        .expect("test run");
    (run.verdict, out)
}

/// What routing does to a packet it forwards into B: TTL one less, the
/// checksum right, B's gateway (its host veth) as source MAC, B's eth0 as
/// destination; nothing else changes.
fn routed_into_b(frame: &[u8]) -> Vec<u8> {
    let mut want = frame.to_vec();
    want[0..6].copy_from_slice(&B_MAC);
    want[6..12].copy_from_slice(&B_GATEWAY_MAC);
    with_ttl(want, frame[14 + 8] - 1)
}

#[test]
fn an_allowed_packet_to_a_pod_of_the_node_is_rewritten_and_redirected() {
    require_root!();
    let dp = fixture("local_rewrite");
    let frames = [
        ("UDP", ipv4_udp(POD_A, POD_B, 40000, 80)),
        ("TCP SYN", ipv4_tcp(POD_A, POD_B, 40000, 8080, SYN)),
        ("ICMP echo", icmp_echo(POD_A, POD_B, ICMP_ECHO, 7)),
    ];
    // Every TTL that is forwarded: the checksum's end-around carry included.
    for (what, frame) in frames {
        for ttl in 2..=255u8 {
            let frame = with_ttl(frame.clone(), ttl);
            let (verdict, out) = from_pod(&dp, &frame);
            assert_eq!(verdict, TC_ACT_REDIRECT, "{what} TTL {ttl}");
            assert_eq!(
                out,
                routed_into_b(&frame),
                "{what} TTL {ttl}: not what routing makes of it"
            );
            assert_eq!(ipv4_checksum(&out[14..34]), 0, "{what} TTL {ttl}: checksum");
        }
    }
    assert_eq!(
        dp.maps.drops.all().unwrap().iter().map(|(_, n)| n).sum::<u64>(),
        0
    );
}

/// What is left to the node's stack, unchanged, with the verdict it had.
#[test]
fn everything_else_takes_the_stack_unchanged() {
    require_root!();
    let dp = fixture("local_else");
    let to_b = with_ttl(ipv4_udp(POD_A, POD_B, 40000, 80), 64);
    let cases = [
        // The stack answers with time exceeded.
        ("TTL 1", with_ttl(to_b.clone(), 1)),
        ("TTL 0", with_ttl(to_b.clone(), 0)),
        (
            "to an address with no record",
            with_ttl(ipv4_udp(POD_A, OUTSIDE, 40000, 80), 64),
        ),
    ];
    for (what, frame) in cases {
        let (verdict, out) = from_pod(&dp, &frame);
        assert_eq!((verdict, out), (TC_ACT_OK, frame), "{what}");
    }
    // A "stack" network's record delivers nothing.
    dp.maps.local.set(POD_B, &b_record(false)).unwrap();
    assert_eq!(from_pod(&dp, &to_b), (TC_ACT_OK, to_b.clone()), "stack");
    // A record naming the sender's own veth: the stack.
    dp.maps
        .local
        .set(
            POD_B,
            &LocalDelivery {
                ifindex: TEST_IFINDEX,
                ..b_record(true)
            },
        )
        .unwrap();
    assert_eq!(from_pod(&dp, &to_b), (TC_ACT_OK, to_b.clone()), "own veth");
    // No record.
    dp.maps.local.remove(POD_B).unwrap();
    assert_eq!(from_pod(&dp, &to_b), (TC_ACT_OK, to_b), "record removed");
}

/// Verdicts first: a packet dropped is dropped (and counted) whatever its
/// destination's record says, and what a pod may not send stays where it was.
#[test]
fn a_dropped_packet_is_never_delivered() {
    require_root!();
    let dp = fixture("local_drop");
    dp.maps
        .policy
        .revoke(PolicyRule::new(id(1001), id(1002)))
        .unwrap();
    let to_b = with_ttl(ipv4_udp(POD_A, POD_B, 40000, 80), 64);
    let before = dp.drops(Reason::EBPFCNI_DROP_NO_POLICY);
    assert_eq!(from_pod(&dp, &to_b), (TC_ACT_SHOT, to_b.clone()), "no rule");
    assert_eq!(dp.drops(Reason::EBPFCNI_DROP_NO_POLICY), before + 1);
    // A spoofed source, to B: dropped by source trust before anything.
    let spoofed = with_ttl(ipv4_udp(OUTSIDE, POD_B, 40000, 80), 64);
    let before = dp.drops(Reason::EBPFCNI_DROP_INVALID_SOURCE);
    assert_eq!(from_pod(&dp, &spoofed).0, TC_ACT_SHOT, "spoofed source");
    assert_eq!(dp.drops(Reason::EBPFCNI_DROP_INVALID_SOURCE), before + 1);
}

/// Stateful tracking is as without local delivery: the opener's SYN opens
/// the connection and is delivered, and B's reply (B's veth is the sender
/// now, A's record the destination) passes as a reply and is delivered too.
#[test]
fn tracked_connections_are_delivered_both_ways() {
    require_root!();
    let dp = fixture("local_stateful");
    dp.maps
        .policy
        .revoke(PolicyRule::new(id(1001), id(1002)))
        .unwrap();
    dp.maps
        .allow(&[Rule {
            pair: PolicyRule::new(id(1001), id(1002)),
            selector: Selector::Ports {
                protocol: ebpfcni::Protocol::TCP,
                first: 8080,
                last: 8080,
            },
            stateful: true,
        }])
        .unwrap();
    let syn = with_ttl(ipv4_tcp(POD_A, POD_B, 40000, 8080, SYN), 64);
    assert_eq!(from_pod(&dp, &syn).0, TC_ACT_REDIRECT, "SYN");
    let conns = dp.maps.conntrack.list().unwrap();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].state, CtState::Syn);
    // B answers from its own veth (now the test's interface).
    dp.maps.interfaces.set(TEST_IFINDEX, &[POD_B]).unwrap();
    dp.maps
        .local
        .set(
            POD_A,
            &LocalDelivery {
                ifindex: 4343,
                ..b_record(true)
            },
        )
        .unwrap();
    let syn_ack = with_ttl(ipv4_tcp(POD_B, POD_A, 8080, 40000, SYN | ACK), 64);
    assert_eq!(from_pod(&dp, &syn_ack).0, TC_ACT_REDIRECT, "SYN-ACK, a reply");
    // B may not open a connection of its own to A under that entry: dropped.
    let before = dp.drops(Reason::EBPFCNI_DROP_NO_FLOW);
    let own = with_ttl(ipv4_tcp(POD_B, POD_A, 8080, 40000, SYN), 64);
    assert_eq!(from_pod(&dp, &own).0, TC_ACT_SHOT, "B's own SYN");
    assert_eq!(dp.drops(Reason::EBPFCNI_DROP_NO_FLOW), before + 1);
}

/// config_map's `local_redirect` is on exactly while a record delivers
/// locally, whatever changes the records (set, replace, remove, remove by
/// interface), and the program delivers only while it is on: networks on
/// the node's stack never pay for the local_map lookup.
#[test]
fn local_redirect_flag_follows_the_records() {
    require_root!();
    let dp = fixture("local_flag");
    let to_b = with_ttl(ipv4_udp(POD_A, POD_B, 40000, 80), 64);
    let flag = || dp.maps.config.local_redirect().unwrap();
    assert!(flag(), "a redirect record turns it on");
    assert_eq!(from_pod(&dp, &to_b).0, TC_ACT_REDIRECT);

    dp.maps.local.set(POD_B, &b_record(false)).unwrap();
    assert!(!flag(), "replaced by a stack record: off");
    assert_eq!(from_pod(&dp, &to_b), (TC_ACT_OK, to_b.clone()));

    dp.maps.local.set(POD_B, &b_record(true)).unwrap();
    dp.maps.local.set(POD_A, &b_record(true)).unwrap();
    dp.maps.local.remove(POD_A).unwrap();
    assert!(flag(), "one redirect record left: on");
    assert_eq!(
        dp.maps.local.remove_interface(b_record(true).ifindex).unwrap(),
        vec![POD_B]
    );
    assert!(!flag(), "no record left: off");
    assert_eq!(from_pod(&dp, &to_b), (TC_ACT_OK, to_b));
}

/// In agent mode a local record carries its pod's identity, a copy of the
/// endpoint entry (`carry_identity`): from-pod takes the destination's
/// identity from it, while some network delivers locally, and does not look
/// it up (precedence step 6). The copy decides even where the entry says
/// otherwise (which the agent never lets last: it copies after each change);
/// to-pod, and from-pod while no network delivers locally, look it up.
#[test]
fn a_record_carrying_the_identity_decides_the_destination_identity() {
    require_root!();
    let dp = fixture("local_carried");
    let to_b = with_ttl(ipv4_udp(POD_A, POD_B, 40000, 80), 64);
    assert_eq!(dp.maps.local.carried_identity(POD_B).unwrap(), None);
    // B becomes 1004 (A may not send to it) and the record carries that.
    dp.maps.endpoints.upsert(POD_B, id(1004)).unwrap();
    assert!(dp.maps.local.carry_identity(POD_B, &dp.maps.endpoints).unwrap());
    assert!(
        !dp.maps.local.carry_identity(POD_B, &dp.maps.endpoints).unwrap(),
        "copied already"
    );
    assert_eq!(dp.maps.local.carried_identity(POD_B).unwrap(), Some(id(1004)));
    assert_eq!(
        dp.maps.local.get(POD_B).unwrap(),
        Some(b_record(true)),
        "plumbing unchanged"
    );
    // The entry says 1002 again, the record still 1004: the record decides.
    dp.maps.endpoints.upsert(POD_B, id(1002)).unwrap();
    let before = dp.drops(Reason::EBPFCNI_DROP_NO_POLICY);
    assert_eq!(from_pod(&dp, &to_b), (TC_ACT_SHOT, to_b.clone()), "carried 1004");
    assert_eq!(dp.drops(Reason::EBPFCNI_DROP_NO_POLICY), before + 1);
    // Copied again: 1002, delivered; then even without an entry at all.
    assert!(dp.maps.local.carry_identity(POD_B, &dp.maps.endpoints).unwrap());
    assert_eq!(from_pod(&dp, &to_b).0, TC_ACT_REDIRECT, "carried 1002");
    dp.maps.endpoints.delete(POD_B).unwrap();
    assert_eq!(from_pod(&dp, &to_b).0, TC_ACT_REDIRECT, "no entry, carried 1002");
    // To-pod judges by the endpoint map alone.
    dp.assert_drop(
        "to B at its to-pod hook, no entry",
        Hook::ToPod,
        &to_b,
        Reason::EBPFCNI_DROP_UNKNOWN_DST,
    );
    // A "stack" record carrying 1002 while no network delivers locally:
    // not looked up at all, so the identity is the endpoint map's (none).
    dp.maps.endpoints.upsert(POD_B, id(1002)).unwrap();
    dp.maps.local.set(POD_B, &b_record(false)).unwrap();
    assert!(dp.maps.local.carry_identity(POD_B, &dp.maps.endpoints).unwrap());
    dp.maps.endpoints.delete(POD_B).unwrap();
    assert!(!dp.maps.config.local_redirect().unwrap());
    dp.assert_drop(
        "stack network, no entry",
        Hook::FromPod,
        &to_b,
        Reason::EBPFCNI_DROP_UNKNOWN_DST,
    );
    // Cleared only by the identity it carries (the endpoint that goes).
    dp.maps.local.set(POD_B, &b_record(true)).unwrap();
    dp.maps.endpoints.upsert(POD_B, id(1002)).unwrap();
    assert!(dp.maps.local.carry_identity(POD_B, &dp.maps.endpoints).unwrap());
    assert!(
        !dp.maps.local.clear_identity(POD_B, id(1004)).unwrap(),
        "not its number"
    );
    assert!(dp.maps.local.clear_identity(POD_B, id(1002)).unwrap());
    assert_eq!(dp.maps.local.carried_identity(POD_B).unwrap(), None);
    dp.maps.endpoints.delete(POD_B).unwrap();
    dp.assert_drop(
        "cleared, no entry",
        Hook::FromPod,
        &to_b,
        Reason::EBPFCNI_DROP_UNKNOWN_DST,
    );
    // Nothing to carry into: no record, nothing written.
    dp.maps.local.remove(POD_B).unwrap();
    assert!(!dp.maps.local.carry_identity(POD_B, &dp.maps.endpoints).unwrap());
    assert_eq!(dp.maps.local.get(POD_B).unwrap(), None);
}
