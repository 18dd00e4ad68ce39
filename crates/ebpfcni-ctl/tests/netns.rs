//! A pin directory serves one network namespace (interface records name
//! interfaces by index, and indexes repeat across namespaces): `reattach`
//! run from another namespace with its --pin-dir is refused (exit 4) and
//! moves nothing.

mod common;

use std::net::Ipv4Addr;

use common::{fails, POLICYCTL};
use ebpfcni::{Hook, Identity, Maps, PolicyRule, Program};
use ebpfcni_testutil::{require_root, Netns, TestPinDir, TwoPods};

const EXIT_OTHER_NETNS: i32 = 4;

#[test]
fn reattach_with_another_namespaces_pin_dir_is_refused_and_the_pods_keep_talking() {
    require_root!();
    // Node D: two pods on D's program and pins, allowed to talk.
    let pins_d = TestPinDir::new("netns_reattach_d");
    let topo = TwoPods::new("nsrd");
    let program_d = Program::load(pins_d.path()).unwrap();
    let maps_d = Maps::open(pins_d.path()).unwrap();
    let (a, b) = (Identity::new(1).unwrap(), Identity::new(2).unwrap());
    maps_d
        .endpoints
        .upsert_batch(&[(TwoPods::POD_A, a), (TwoPods::POD_B, b)])
        .unwrap();
    let rule = PolicyRule::new(a, b);
    maps_d.policy.allow_all(&[rule, rule.reverse()]).unwrap();
    topo.node.run_in(|| {
        ebpfcni::bind_netns(pins_d.path()).unwrap();
        maps_d.interfaces.set(topo.ifindex_a, &[TwoPods::POD_A]).unwrap();
        maps_d.interfaces.set(topo.ifindex_b, &[TwoPods::POD_B]).unwrap();
        program_d.attach(topo.ifindex_a).unwrap();
        program_d.attach(topo.ifindex_b).unwrap();
    });
    assert!(topo.reaches(TwoPods::POD_A), "D's pods talk");

    // Node C: its own namespace and pins, whose pods have the same
    // interface indexes as D's (indexes repeat across namespaces).
    let pins_c = TestPinDir::new("netns_reattach_c");
    let node_c = Netns::new("nsrc-node");
    let maps_c = Maps::open_or_create(pins_c.path()).unwrap();
    node_c.run_in(|| ebpfcni::bind_netns(pins_c.path()).unwrap());
    for index in [topo.ifindex_a, topo.ifindex_b] {
        maps_c
            .interfaces
            .set(index, &[Ipv4Addr::new(10, 13, 9, 2)])
            .unwrap();
    }

    let out = topo
        .node
        .command(POLICYCTL)
        .arg("--pin-dir")
        .arg(pins_c.path())
        .arg("reattach")
        .output()
        .expect("run policyctl");
    let msg = fails(out, EXIT_OTHER_NETNS);
    assert!(
        msg.contains(pins_c.as_str()) && msg.contains(node_c.name()) && msg.contains(topo.node.name()),
        "the message names the pin dir and both namespaces: {msg}"
    );
    for index in [topo.ifindex_a, topo.ifindex_b] {
        let attached = topo.node.run_in(|| ebpfcni::attachment(index).unwrap());
        assert_eq!(
            attached.ingress,
            Some(program_d.id(Hook::FromPod)),
            "moved off D's program"
        );
        assert_eq!(attached.egress, Some(program_d.id(Hook::ToPod)));
    }
    assert!(topo.reaches(TwoPods::POD_A), "D's pods keep talking");
}
