//! Source trust (precedence step 3): on the hook that sees what a pod sends,
//! a packet whose source is not one of the addresses recorded for its host
//! veth is dropped before any identity is looked up, so a pod cannot borrow
//! another pod's identity; an interface without a record drops all IPv4.
//! What a pod receives is not checked. Through BPF_PROG_TEST_RUN on lo
//! (TEST_IFINDEX), with real pinned maps.

use std::net::Ipv4Addr;

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{Hook, Identity, PolicyRule};
use ebpfcni_testutil::datapath::{Datapath, TEST_IFINDEX};
use ebpfcni_testutil::frames::{arp, ipv4};
use ebpfcni_testutil::require_root;

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 3);
const POD_C: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 4);
const NODE: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 1);

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// A (1), B (2) and C (3); B may send to C, A may send to nobody. The
/// test interface is pod A's host veth.
fn three_pods(test: &str) -> Datapath {
    let dp = Datapath::new(test);
    for (ip, n) in [(POD_A, 1), (POD_B, 2), (POD_C, 3), (NODE, 9)] {
        dp.maps.endpoints.upsert(ip, id(n)).unwrap();
    }
    dp.maps
        .policy
        .allow_all(&[PolicyRule::new(id(2), id(3)), PolicyRule::new(id(9), id(1))])
        .unwrap();
    dp.maps.interfaces.set(TEST_IFINDEX, &[POD_A]).unwrap();
    dp
}

#[test]
fn a_forged_source_is_dropped_before_its_identity_counts() {
    require_root!();
    let dp = three_pods("trust_forged");
    // A sends with B's address to C: B -> C is allowed, but this is A.
    dp.assert_drop(
        "A forging B's address",
        Hook::FromPod,
        &ipv4(POD_B, POD_C),
        Reason::EBPFCNI_DROP_INVALID_SOURCE,
    );
    dp.assert_drop(
        "A forging an unknown address",
        Hook::FromPod,
        &ipv4(Ipv4Addr::new(10, 99, 0, 1), POD_C),
        Reason::EBPFCNI_DROP_INVALID_SOURCE,
    );
    dp.assert_drop(
        "A sending from 0.0.0.0",
        Hook::FromPod,
        &ipv4(Ipv4Addr::UNSPECIFIED, POD_C),
        Reason::EBPFCNI_DROP_INVALID_SOURCE,
    );
}

#[test]
fn the_pods_own_source_passes_the_check_and_policy_decides() {
    require_root!();
    let dp = three_pods("trust_own");
    // A's own address passes the check; A has no rule to C: no-policy,
    // not invalid-source.
    dp.assert_drop(
        "A to C from its own address",
        Hook::FromPod,
        &ipv4(POD_A, POD_C),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    dp.maps.policy.allow(PolicyRule::new(id(1), id(3))).unwrap();
    dp.assert_pass("A to C, allowed", Hook::FromPod, &ipv4(POD_A, POD_C));
    // Several addresses behind one interface: each is the pod's.
    dp.maps.interfaces.set(TEST_IFINDEX, &[POD_B, POD_A]).unwrap();
    dp.assert_pass("second recorded address", Hook::FromPod, &ipv4(POD_A, POD_C));
}

#[test]
fn an_interface_without_a_record_drops_all_ipv4_from_its_pod() {
    require_root!();
    let dp = three_pods("trust_unbound");
    assert!(dp.maps.interfaces.remove(TEST_IFINDEX).unwrap());
    dp.assert_drop(
        "no record",
        Hook::FromPod,
        &ipv4(POD_B, POD_C),
        Reason::EBPFCNI_DROP_UNKNOWN_INTERFACE,
    );
    // Not IPv4: untouched, as always.
    dp.assert_pass("ARP without a record", Hook::FromPod, &arp(POD_A, NODE));
}

#[test]
fn what_a_pod_receives_is_not_checked() {
    require_root!();
    let dp = three_pods("trust_to_pod");
    assert!(dp.maps.interfaces.remove(TEST_IFINDEX).unwrap());
    // The node (any source) sends to A: judged by identities and policy
    // only, with no record for the interface.
    dp.assert_pass("node to A", Hook::ToPod, &ipv4(NODE, POD_A));
    dp.assert_pass("B to C at C's to-pod hook", Hook::ToPod, &ipv4(POD_B, POD_C));
    dp.assert_drop(
        "unknown source to A",
        Hook::ToPod,
        &ipv4(Ipv4Addr::new(10, 99, 0, 1), POD_A),
        Reason::EBPFCNI_DROP_UNKNOWN_SRC,
    );
}

#[test]
fn records_hold_at_most_four_addresses_and_never_0_0_0_0() {
    require_root!();
    let dp = three_pods("trust_record");
    let five: Vec<Ipv4Addr> = (1..=5).map(|i| Ipv4Addr::new(10, 13, 0, i)).collect();
    assert!(dp.maps.interfaces.set(7, &five).is_err());
    assert!(dp.maps.interfaces.set(7, &[Ipv4Addr::UNSPECIFIED]).is_err());
    assert!(dp.maps.interfaces.set(7, &[]).is_err());
    assert_eq!(dp.maps.interfaces.get(7).unwrap(), None);
    dp.maps.interfaces.set(7, &five[..4]).unwrap();
    assert_eq!(dp.maps.interfaces.get(7).unwrap(), Some(five[..4].to_vec()));
    assert_eq!(
        dp.maps.interfaces.list().unwrap(),
        vec![(TEST_IFINDEX, vec![POD_A]), (7, five[..4].to_vec())]
    );
}

/// A record carrying the pod's identity (the agent writes it so): from-pod
/// takes the source's identity from it and does not look the address up.
/// Proved by a record that carries an identity the endpoint map does not
/// hold for the address: policy decides by the carried one. What the pod
/// receives still takes the endpoint map's.
#[test]
fn a_record_carrying_the_identity_decides_the_source_identity() {
    require_root!();
    let dp = three_pods("trust_carried");
    // Without a carried identity: A is 1, which may send to nobody.
    dp.assert_drop(
        "A to C, looked up",
        Hook::FromPod,
        &ipv4(POD_A, POD_C),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    // Carrying 2 (which may send to C): the record's number counts.
    dp.maps
        .interfaces
        .set_carrying(TEST_IFINDEX, &[POD_A], Some(id(2)))
        .unwrap();
    assert_eq!(
        dp.maps.interfaces.carried_identity(TEST_IFINDEX).unwrap(),
        Some(id(2))
    );
    assert_eq!(dp.maps.interfaces.get(TEST_IFINDEX).unwrap(), Some(vec![POD_A]));
    dp.assert_pass("A to C, carried", Hook::FromPod, &ipv4(POD_A, POD_C));
    // With no endpoint entry at all, the carried identity is enough.
    dp.maps.endpoints.delete(POD_A).unwrap();
    dp.assert_pass("A to C, no endpoint entry", Hook::FromPod, &ipv4(POD_A, POD_C));
    // The check still comes first: a forged source gets nothing from it.
    dp.assert_drop(
        "A forging B's address",
        Hook::FromPod,
        &ipv4(POD_B, POD_C),
        Reason::EBPFCNI_DROP_INVALID_SOURCE,
    );
    // To-pod is judged by the endpoint map alone.
    dp.assert_drop(
        "to A at its to-pod hook, A unknown",
        Hook::ToPod,
        &ipv4(NODE, POD_A),
        Reason::EBPFCNI_DROP_UNKNOWN_DST,
    );
    // Carrying none again: looked up (and A now has no identity).
    dp.maps.interfaces.set(TEST_IFINDEX, &[POD_A]).unwrap();
    assert_eq!(dp.maps.interfaces.carried_identity(TEST_IFINDEX).unwrap(), None);
    dp.assert_drop(
        "A to C, no identity",
        Hook::FromPod,
        &ipv4(POD_A, POD_C),
        Reason::EBPFCNI_DROP_UNKNOWN_SRC,
    );
}
