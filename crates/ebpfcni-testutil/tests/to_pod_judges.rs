//! Every packet that reaches a to-pod hook is judged there: there is no
//! note of what from-pod passed (the per-CPU note of earlier releases,
//! bpf/lib/judged.h, is gone). A packet between two pods of the node is
//! judged once because from-pod delivers it straight into the receiving
//! pod (bpf_redirect_peer, past the to-pod hook; tests/local_delivery.rs);
//! on a "stack" network it is judged on both hooks. These are the cases
//! the note could have let through unjudged, each run on one CPU right
//! after from-pod passed the flow, as forwarding would:
//! - a packet another program redirected to the receiver's host veth (ours
//!   never saw it at from-pod) with the tuple from-pod just passed (and
//!   with real pods and a real second program: ebpfcni-cni's
//!   tests/local_delivery.rs, what_another_program_redirects_is_judged_at_to_pod);
//! - a packet whose ICMP type or TCP flags differ from the one passed;
//! - (a second node namespace using the same pin directory, where the
//!   same interface numbers name other interfaces, is refused by the pin
//!   directory's binding: ebpfcni-cni's tests/netns.rs,
//!   a_pin_dir_serves_one_network_namespace_and_refuses_the_others.)

use std::net::Ipv4Addr;

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{Hook, Identity, PolicyRule, Protocol, Rule, Selector, TC_ACT_OK, TC_ACT_SHOT};
use ebpfcni_testutil::datapath::{Datapath, TEST_IFINDEX};
use ebpfcni_testutil::frames::{icmp_echo, ipv4_tcp, ipv4_udp, ACK, ICMP_ECHO, ICMP_ECHOREPLY, SYN};
use ebpfcni_testutil::require_root;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 3);

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// A (1001) and B (1002); the test's interface is `sender`'s host veth.
/// The test thread stays on one CPU, as the note was per CPU.
fn fixture(test: &str, sender: Ipv4Addr) -> Datapath {
    let mut cpu = CpuSet::new();
    cpu.set(0).unwrap();
    sched_setaffinity(Pid::from_raw(0), &cpu).expect("pin the test thread to CPU 0");
    let dp = Datapath::new(test);
    dp.maps.endpoints.upsert(POD_A, id(1001)).unwrap();
    dp.maps.endpoints.upsert(POD_B, id(1002)).unwrap();
    dp.maps.interfaces.set(TEST_IFINDEX, &[sender]).unwrap();
    dp
}

/// Passed at from-pod, then the rule goes: the same packet, received from
/// A's veth at B's to-pod hook (another program redirected it there, or it
/// was forwarded), is judged again and dropped.
#[test]
fn a_packet_passed_at_from_pod_is_judged_again_at_to_pod() {
    require_root!();
    let dp = fixture("judged_again", POD_A);
    let a_to_b = PolicyRule::new(id(1001), id(1002));
    dp.maps.policy.allow(a_to_b).unwrap();
    let packet = ipv4_udp(POD_A, POD_B, 40000, 80);
    assert_eq!(dp.verdict(Hook::FromPod, &packet), TC_ACT_OK);
    dp.maps.policy.revoke(a_to_b).unwrap();
    let before = dp.drops(Reason::EBPFCNI_DROP_NO_POLICY);
    assert_eq!(
        dp.verdict_received_on(Hook::ToPod, &packet, TEST_IFINDEX),
        TC_ACT_SHOT,
        "passed at to-pod unjudged"
    );
    assert_eq!(dp.drops(Reason::EBPFCNI_DROP_NO_POLICY), before + 1);
}

/// A opened a connection to B (stateful rule); B's answer passed at
/// from-pod as a reply. A packet with the same addresses (and ports) but
/// another ICMP type or other TCP flags, received from B's veth at A's
/// to-pod hook, is judged: B may not open anything to A.
#[test]
fn a_packet_whose_icmp_type_or_tcp_flags_differ_is_judged() {
    require_root!();
    let dp = fixture("judged_flags", POD_B);
    let stateful = |selector| Rule {
        pair: PolicyRule::new(id(1001), id(1002)),
        selector,
        stateful: true,
    };
    dp.maps
        .allow(&[
            stateful(Selector::Protocol(Protocol::ICMP)),
            stateful(Selector::Ports {
                protocol: Protocol::TCP,
                first: 8080,
                last: 8080,
            }),
        ])
        .unwrap();
    let cases = [
        (
            "ICMP: an echo request after the echo reply",
            icmp_echo(POD_A, POD_B, ICMP_ECHO, 7),
            icmp_echo(POD_B, POD_A, ICMP_ECHOREPLY, 7),
            icmp_echo(POD_B, POD_A, ICMP_ECHO, 7),
        ),
        (
            "TCP: a bare SYN after the SYN-ACK",
            ipv4_tcp(POD_A, POD_B, 40000, 8080, SYN),
            ipv4_tcp(POD_B, POD_A, 8080, 40000, SYN | ACK),
            ipv4_tcp(POD_B, POD_A, 8080, 40000, SYN),
        ),
    ];
    for (what, opener, reply, other) in cases {
        // A's packet opens the connection (judged at B's to-pod: the
        // source check is A's veth's, not this one's).
        assert_eq!(dp.verdict(Hook::ToPod, &opener), TC_ACT_OK, "{what}: opener");
        assert_eq!(
            dp.verdict(Hook::FromPod, &reply),
            TC_ACT_OK,
            "{what}: reply at from-pod"
        );
        let before = dp.drops(Reason::EBPFCNI_DROP_NO_FLOW);
        assert_eq!(
            dp.verdict_received_on(Hook::ToPod, &other, TEST_IFINDEX),
            TC_ACT_SHOT,
            "{what}: passed at to-pod unjudged"
        );
        assert_eq!(dp.drops(Reason::EBPFCNI_DROP_NO_FLOW), before + 1, "{what}");
    }
}
