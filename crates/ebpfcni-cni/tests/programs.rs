//! One program for every pod: the first ADD loads and pins this build's
//! program, later ADDs attach the pinned one; after an upgrade (another
//! build's program pinned), pods keep running the program they have, CHECK
//! says so, and `ebpfcni::reattach` (policyctl reattach) moves them.

mod common;

use common::{host_veth, pod_ip, Node, Pod};
use ebpfcni::{Hook, Identity, Maps, PolicyRule, Program, Provenance};
use ebpfcni_testutil::require_root;

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// The program ids on both hooks of the host veth of an ADD result.
fn attached(node: &Node, result: &serde_json::Value) -> (u32, u32) {
    let index = node.ns.ifindex(&host_veth(result));
    let a = node.ns.run_in(|| ebpfcni::attachment(index).unwrap());
    (a.ingress.unwrap(), a.egress.unwrap())
}

fn ids(program: &Program) -> (u32, u32) {
    (program.id(Hook::FromPod), program.id(Hook::ToPod))
}

#[test]
fn pods_share_the_pinned_program_and_move_to_a_new_build_on_reattach() {
    require_root!();
    let node = Node::new("prog");
    let conf = node.config("1.0.0");
    let (pa, pb) = (Pod::new("prog-a"), Pod::new("prog-b"));
    let (ra, rb) = (node.add(&conf, &pa).ok(), node.add(&conf, &pb).ok());
    let maps = Maps::open(node.pins.path()).unwrap();
    let first = Program::pinned(node.pins.path(), &maps)
        .unwrap()
        .expect("pinned by the first ADD");
    assert_eq!(attached(&node, &ra), ids(&first));
    assert_eq!(
        attached(&node, &rb),
        ids(&first),
        "the second ADD attached the pinned program"
    );
    let (a, b) = (pod_ip(&ra), pod_ip(&rb));
    maps.endpoints.upsert(a.parse().unwrap(), id(1)).unwrap();
    maps.endpoints.upsert(b.parse().unwrap(), id(2)).unwrap();
    let pair = PolicyRule::new(id(1), id(2));
    maps.policy.allow_all(&[pair, pair.reverse()]).unwrap();
    assert!(pa.ns.ping(&b, 1));

    // An upgrade: another build pins its program (here: this build's,
    // loaded again, so that the ids differ).
    for (_, _, pin) in ebpfcni::program_pins(node.pins.path()) {
        std::fs::remove_file(pin).unwrap();
    }
    let (upgraded, provenance) = Program::shared(node.pins.path()).unwrap();
    assert_eq!(provenance, Provenance::Loaded);
    assert_ne!(ids(&upgraded), ids(&first));
    assert!(pa.ns.ping(&b, 1), "pods keep working on the program they run");
    let msg = node.check(&conf, &pa, &ra).err(104);
    assert!(
        msg.contains("an older build's") && msg.contains("policyctl reattach"),
        "{msg}"
    );

    // A host veth running an ebpfcni program without an address record
    // (a pod from before source trust) is named and left alone.
    node.ns.ip(&[
        "link", "add", "oldpod0", "type", "veth", "peer", "name", "oldpod1",
    ]);
    let old = Program::load(node.pins.path()).unwrap();
    let old_index = node.ns.ifindex("oldpod0");
    node.ns.run_in(|| old.attach(old_index)).unwrap();

    let report = node
        .ns
        .run_in(|| ebpfcni::reattach(&maps, node.pins.path()))
        .unwrap();
    let mut moved: Vec<String> = report.moved.iter().map(|(name, _)| name.clone()).collect();
    moved.sort();
    let mut expected = vec![host_veth(&ra), host_veth(&rb)];
    expected.sort();
    assert_eq!(moved, expected);
    assert!(!report.loaded, "the upgraded program was pinned already");
    assert_eq!(report.unrecorded, vec![("oldpod0".to_owned(), old_index)]);
    assert_eq!(attached(&node, &ra), ids(&upgraded));
    assert_eq!(attached(&node, &rb), ids(&upgraded));
    node.check(&conf, &pa, &ra).ok();
    assert!(pa.ns.ping(&b, 1));
    let left = node.ns.run_in(|| ebpfcni::attachment(old_index)).unwrap();
    assert_eq!(
        left.ingress,
        Some(old.id(Hook::FromPod)),
        "the unrecorded veth was moved"
    );

    let again = node
        .ns
        .run_in(|| ebpfcni::reattach(&maps, node.pins.path()))
        .unwrap();
    assert!(again.moved.is_empty() && again.current.len() == 2, "{again:?}");
    node.del(&conf, &pa).ok();
    node.del(&conf, &pb).ok();
}
