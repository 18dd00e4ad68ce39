//! A packet between two pods of the node is judged once: the to-pod hook
//! passes what the sender's from-pod hook has just passed, unchanged, and
//! judges everything else (bpf/lib/judged.h). Each case runs the two hooks
//! one after the other on one CPU, as forwarding does, and takes the rule
//! away in between: a packet that to-pod still passes was not judged there.

use std::net::Ipv4Addr;

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{Hook, Identity, PolicyRule, TC_ACT_OK, TC_ACT_SHOT};
use ebpfcni_testutil::datapath::{Datapath, TEST_IFINDEX};
use ebpfcni_testutil::frames::ipv4_udp;
use ebpfcni_testutil::require_root;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 3);
const POD_C: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 4);

/// A (1001) may send to B (1002) and C (1003); A's host veth is
/// TEST_IFINDEX. The test thread stays on one CPU: the note is per CPU.
fn fixture(test: &str) -> (Datapath, PolicyRule) {
    let mut cpu = CpuSet::new();
    cpu.set(0).unwrap();
    sched_setaffinity(Pid::from_raw(0), &cpu).expect("pin the test thread to CPU 0");
    let dp = Datapath::new(test);
    let id = |n| Identity::new(n).unwrap();
    dp.maps.endpoints.upsert(POD_A, id(1001)).unwrap();
    dp.maps.endpoints.upsert(POD_B, id(1002)).unwrap();
    dp.maps.endpoints.upsert(POD_C, id(1003)).unwrap();
    dp.maps.interfaces.set(TEST_IFINDEX, &[POD_A]).unwrap();
    let a_to_b = PolicyRule::new(id(1001), id(1002));
    dp.maps.policy.allow(a_to_b).unwrap();
    dp.maps.policy.allow(PolicyRule::new(id(1001), id(1003))).unwrap();
    (dp, a_to_b)
}

/// Passed at from-pod, then the rule goes: received from A's veth, the
/// same packet passes at to-pod without a second judgement.
#[test]
fn a_packet_passed_at_from_pod_is_not_judged_again_at_to_pod() {
    require_root!();
    let (dp, a_to_b) = fixture("judged_once");
    let packet = ipv4_udp(POD_A, POD_B, 40000, 80);
    assert_eq!(dp.verdict(Hook::FromPod, &packet), TC_ACT_OK);
    dp.maps.policy.revoke(a_to_b).unwrap();
    let before = dp.drops(Reason::EBPFCNI_DROP_NO_POLICY);
    assert_eq!(
        dp.verdict_received_on(Hook::ToPod, &packet, TEST_IFINDEX),
        TC_ACT_OK,
        "judged again at to-pod"
    );
    assert_eq!(dp.drops(Reason::EBPFCNI_DROP_NO_POLICY), before);
}

/// What to-pod judges: anything that is not the packet from-pod just
/// passed, unchanged, from its interface.
#[test]
fn everything_else_is_judged_at_to_pod() {
    require_root!();
    let (dp, a_to_b) = fixture("judged_else");
    let packet = ipv4_udp(POD_A, POD_B, 40000, 80);
    let cases: [(&str, Vec<u8>, u32); 5] = [
        ("sent by the node itself", packet.clone(), 0),
        ("received on another interface", packet.clone(), TEST_IFINDEX + 1),
        (
            "another destination port (a DNAT)",
            ipv4_udp(POD_A, POD_B, 40000, 81),
            TEST_IFINDEX,
        ),
        (
            "another source port (an SNAT)",
            ipv4_udp(POD_A, POD_B, 40001, 80),
            TEST_IFINDEX,
        ),
        (
            "another destination",
            ipv4_udp(POD_A, POD_C, 40000, 80),
            TEST_IFINDEX,
        ),
    ];
    for (what, frame, received_on) in cases {
        dp.maps.policy.allow(a_to_b).unwrap();
        assert_eq!(dp.verdict(Hook::FromPod, &packet), TC_ACT_OK, "{what}");
        dp.maps.policy.revoke(a_to_b).unwrap();
        dp.maps
            .policy
            .revoke(PolicyRule::new(
                Identity::new(1001).unwrap(),
                Identity::new(1003).unwrap(),
            ))
            .unwrap();
        let before = dp.drops(Reason::EBPFCNI_DROP_NO_POLICY);
        assert_eq!(
            dp.verdict_received_on(Hook::ToPod, &frame, received_on),
            TC_ACT_SHOT,
            "{what}: not judged at to-pod"
        );
        assert_eq!(dp.drops(Reason::EBPFCNI_DROP_NO_POLICY), before + 1, "{what}");
    }
}

/// A packet from-pod dropped leaves nothing to-pod would pass.
#[test]
fn a_packet_dropped_at_from_pod_is_judged_at_to_pod() {
    require_root!();
    let (dp, a_to_b) = fixture("judged_drop");
    let packet = ipv4_udp(POD_A, POD_B, 40000, 80);
    assert_eq!(dp.verdict(Hook::FromPod, &packet), TC_ACT_OK);
    dp.maps.policy.revoke(a_to_b).unwrap();
    dp.assert_drop(
        "the same packet, now",
        Hook::FromPod,
        &packet,
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    assert_eq!(
        dp.verdict_received_on(Hook::ToPod, &packet, TEST_IFINDEX),
        TC_ACT_SHOT,
        "a from-pod drop passed at to-pod"
    );
}
