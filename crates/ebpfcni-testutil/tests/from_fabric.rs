//! Source trust between nodes (precedence step F): on tc ingress of the
//! node's fabric interface, a packet whose source address has an identity
//! must route back out of that interface to the MAC it came from. Through
//! BPF_PROG_TEST_RUN inside a node namespace with real routes and
//! neighbours ([`FabricNode`]), against real pinned maps.

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{Identity, TC_ACT_OK, TC_ACT_SHOT};
use ebpfcni_testutil::datapath::Datapath;
use ebpfcni_testutil::frames::arp;
use ebpfcni_testutil::{require_root, FabricNode as F};

const REMOTE_NODE: u32 = 6;

/// The program, the node, and identities for node 2's pod (4242), node
/// 4's pod (4244), this node's pod (4201), node 2's and this node's IPs.
fn fixture(test: &str) -> (Datapath, F) {
    let dp = Datapath::new(test);
    for (ip, n) in [
        (F::REMOTE_POD, 4242),
        (F::UNRESOLVED_POD, 4244),
        (F::LOCAL_POD, 4201),
        (F::NODE2_IP, REMOTE_NODE),
        (F::NODE_IP, 1),
    ] {
        dp.maps.endpoints.upsert(ip, Identity::new(n).unwrap()).unwrap();
    }
    (dp, F::new(test))
}

fn assert_verdict(dp: &Datapath, node: &F, what: &str, frame: &[u8], verdict: i32, dropped: bool) {
    let before = dp.drops(Reason::EBPFCNI_DROP_NOT_FROM_NODE);
    assert_eq!(node.verdict(&dp.program, frame), verdict, "{what}");
    assert_eq!(
        dp.drops(Reason::EBPFCNI_DROP_NOT_FROM_NODE),
        before + u64::from(dropped),
        "{what}: counted as source-not-from-node?"
    );
}

#[test]
fn a_pod_address_passes_only_from_its_nodes_mac_on_the_fabric() {
    require_root!();
    let (dp, node) = fixture("fabric_src");
    let pass = |what, frame: Vec<u8>| assert_verdict(&dp, &node, what, &frame, TC_ACT_OK, false);
    let drop = |what, frame: Vec<u8>| assert_verdict(&dp, &node, what, &frame, TC_ACT_SHOT, true);

    // Node 2's pod, from node 2 (its neighbour entry is STALE: valid).
    pass(
        "node 2's pod from node 2's MAC",
        F::frame(F::REMOTE_POD, F::LOCAL_POD, F::NODE2_MAC),
    );
    // The same source from another host of the fabric.
    drop(
        "node 2's pod forged from another MAC",
        F::frame(F::REMOTE_POD, F::LOCAL_POD, F::OTHER_MAC),
    );
    // A pod of this node arriving from the fabric, even from node 2.
    drop(
        "this node's pod from the fabric",
        F::frame(F::LOCAL_POD, F::LOCAL_POD, F::NODE2_MAC),
    );
    // Node IPs (remote-node): on-link, the same rule.
    pass(
        "node 2's IP from node 2",
        F::frame(F::NODE2_IP, F::NODE_IP, F::NODE2_MAC),
    );
    drop(
        "node 2's IP forged",
        F::frame(F::NODE2_IP, F::NODE_IP, F::OTHER_MAC),
    );
    // This node's own address is never routed back out.
    drop(
        "this node's IP from the fabric",
        F::frame(F::NODE_IP, F::NODE_IP, F::NODE2_MAC),
    );
    // Fail closed: node 4 has no neighbour entry here.
    drop(
        "node 4's pod, its node unresolved",
        F::frame(F::UNRESOLVED_POD, F::LOCAL_POD, F::NODE2_MAC),
    );
    // No identity: the world passes untouched, from any MAC; so do ARP
    // and a malformed header (the stack's and step 2's).
    pass(
        "an address without an identity",
        F::frame("192.0.2.9".parse().unwrap(), F::LOCAL_POD, F::OTHER_MAC),
    );
    pass("ARP", arp(F::REMOTE_POD, F::NODE_IP));
    let mut malformed = F::frame(F::REMOTE_POD, F::LOCAL_POD, F::OTHER_MAC);
    malformed[14] = 0x44; // ihl 4
    pass("malformed", malformed);
}

#[test]
fn the_check_follows_the_routes_and_neighbours_of_the_node() {
    require_root!();
    let (dp, node) = fixture("fabric_nb");
    let genuine = F::frame(F::REMOTE_POD, F::LOCAL_POD, F::NODE2_MAC);
    assert_eq!(node.verdict(&dp.program, &genuine), TC_ACT_OK);
    // Node 2 moves to another MAC: what its neighbour entry says counts.
    node.node.ip(&[
        "neigh",
        "replace",
        "10.0.0.12",
        "lladdr",
        "02:eb:00:00:00:13",
        "dev",
        "fab0",
    ]);
    assert_eq!(node.verdict(&dp.program, &genuine), TC_ACT_SHOT, "old MAC");
    let moved = F::frame(F::REMOTE_POD, F::LOCAL_POD, F::OTHER_MAC);
    assert_eq!(node.verdict(&dp.program, &moved), TC_ACT_OK, "new MAC");
    // Node 2 gone (its route removed by the agent): its pods fail closed.
    node.node.ip(&["route", "del", "10.20.2.0/24"]);
    assert_eq!(node.verdict(&dp.program, &moved), TC_ACT_SHOT, "no route");
    // The address without an identity is not checked at all.
    dp.maps.endpoints.delete(F::REMOTE_POD).unwrap();
    assert_eq!(node.verdict(&dp.program, &moved), TC_ACT_OK, "no identity");
}

/// Attaching from-fabric twice, with another program already on the
/// interface's tcx ingress: ours comes after it and is replaced in place;
/// the other program stays.
#[test]
fn attaching_the_check_replaces_only_our_own_program() {
    use std::os::fd::{AsFd, AsRawFd};

    use ebpfcni::Hook;
    use ebpfcni_testutil::{bpf, TestPinDir, VethPair};
    use libbpf_rs::libbpf_sys;

    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("foreign.bpf.c");
    std::fs::write(
        &source,
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n\
         char LICENSE[] SEC(\"license\") = \"GPL\";\n\
         SEC(\"tc\") int foreign(struct __sk_buff *ctx) { return -1; }\n",
    )
    .unwrap();
    let object = libbpf_rs::ObjectBuilder::default()
        .open_memory(&bpf::compile(&source, &[dir.path()]))
        .expect("open the foreign program")
        .load()
        .expect("load the foreign program");
    let foreign_fd = object.progs().next().expect("one program").as_fd().as_raw_fd();

    let pins = TestPinDir::new("fabric_attach");
    let pair = VethPair::new("fabatt", "10.0.0.11/24", "10.0.0.12/24");
    let ifindex = pair.host_ifindex();
    let (foreign_id, first, second, all) = pair.host.run_in(|| {
        let opts = libbpf_sys::bpf_prog_attach_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_prog_attach_opts>() as _,
            ..Default::default()
        };
        // SAFETY: opts is sized; the program's fd is open for the call.
        let rc = unsafe {
            libbpf_sys::bpf_prog_attach_opts(foreign_fd, ifindex as i32, libbpf_sys::BPF_TCX_INGRESS, &opts)
        };
        assert_eq!(rc, 0, "attach the foreign program");
        let foreign = ebpfcni::tc::tcx_programs(ifindex, Hook::FromFabric).unwrap();
        assert_eq!(foreign.len(), 1, "the foreign program alone");
        let first = ebpfcni::Program::load(pins.path()).unwrap();
        first.attach_fabric(ifindex).unwrap();
        first.attach_fabric(ifindex).unwrap();
        let second = ebpfcni::Program::load(pins.path()).unwrap();
        second.attach_fabric(ifindex).unwrap();
        let all = ebpfcni::tc::tcx_programs(ifindex, Hook::FromFabric).unwrap();
        let attached = ebpfcni::fabric_attachment(ifindex).unwrap();
        assert_eq!(attached, Some(second.id(Hook::FromFabric)));
        (
            foreign[0],
            first.id(Hook::FromFabric),
            second.id(Hook::FromFabric),
            all,
        )
    });
    assert_ne!(first, second);
    assert_eq!(
        all,
        vec![foreign_id, second],
        "the other program first, then ours, once"
    );
}
