//! Interface records name interfaces by index, and indexes repeat across
//! network namespaces: a pin directory serves the namespace of its first
//! pod, and from any other the plugin refuses (code 107) with nothing
//! changed. GC knows each record's attachment (network, container, ifname)
//! from what ADD recorded, not from interface names: it collects its own
//! network's records only, keeps a renamed veth's, and gives back the
//! lease of a veth deleted by hand.

mod common;

use common::{host_veth, pod_ip, run_plugin, Node, Outcome, Pod, CNI_PATH};
use ebpfcni::{AttachmentMap, InterfaceMap, PodAttachment};
use ebpfcni_testutil::{require_root, unique_name, Netns};
use serde_json::{json, Value};

/// The code for a pin directory of another network namespace.
const OTHER_NETNS: u64 = 107;

/// GC of `conf`'s network with these pods valid, run in `ns`.
fn gc(ns: &Netns, conf: &Value, valid: &[&Pod]) -> Outcome {
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|p| json!({ "containerID": p.id, "ifname": "eth0" }))
        .collect();
    run_plugin(
        Some(ns),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH)],
        gc.to_string().as_bytes(),
    )
}

/// The ifindexes with an interface record in `node`'s pin directory.
fn recorded(node: &Node) -> Vec<u32> {
    InterfaceMap::open(node.pins.path())
        .unwrap()
        .expect("pinned")
        .list()
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

/// A second network on `node`: its own name, subnet and leases, the same
/// pin directory.
fn second_network(node: &Node, version: &str) -> (Value, String) {
    let name = unique_name("netb");
    let mut conf = node.config(version);
    conf["name"] = json!(name);
    conf["ipam"]["ranges"] = json!([[{ "subnet": "10.13.2.0/24" }]]);
    (conf, name)
}

#[test]
fn a_pin_dir_serves_one_network_namespace_and_refuses_the_others() {
    require_root!();
    let node = Node::new("bindc");
    let conf = node.config("1.1.0");
    let pod = Pod::new("bindc-pod");
    let result = node.add(&conf, &pod).ok();
    let ifindex = node.ns.ifindex(&host_veth(&result));
    assert_eq!(recorded(&node), vec![ifindex]);

    // Node D: another namespace, pointed (by mistake) at node C's pins,
    // with a network of its own.
    let other = Netns::new("bindd-node");
    let (conf_b, _) = second_network(&node, "1.1.0");
    let msg = gc(&other, &conf_b, &[]).err(OTHER_NETNS);
    let pin_dir = node.pins.as_str();
    assert!(
        msg.contains(pin_dir) && msg.contains(node.ns.name()) && msg.contains(other.name()),
        "the message names the pin dir and both namespaces: {msg}"
    );
    assert_eq!(
        recorded(&node),
        vec![ifindex],
        "GC from node D removed node C's record"
    );
    node.check(&conf, &pod, &result).ok();

    // ADD and DEL from node D change nothing either.
    let pod_d = Pod::new("bindd-pod");
    let add = |command: &str| {
        run_plugin(
            Some(&other),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &pod_d.id),
                ("CNI_NETNS", &pod_d.ns.path_string()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", CNI_PATH),
            ],
            conf_b.to_string().as_bytes(),
        )
    };
    add("ADD").err(OTHER_NETNS);
    assert_eq!(
        other.links(),
        vec!["lo".to_string()],
        "ADD from node D made a veth"
    );
    assert!(pod_d.ns.links().iter().all(|l| l != "eth0"));
    add("DEL").err(OTHER_NETNS);
    assert_eq!(recorded(&node), vec![ifindex]);
    node.check(&conf, &pod, &result).ok();
    node.del(&conf, &pod).ok();
}

#[test]
fn gc_of_another_network_removes_only_its_own_records_and_releases_gone_leases() {
    require_root!();
    let node = Node::new("gcnets");
    let conf_a = node.config("1.1.0");
    let (conf_b, net_b) = second_network(&node, "1.1.0");
    let (pod_a, pod_b) = (Pod::new("gcnets-a"), Pod::new("gcnets-b"));
    let (ra, rb) = (node.add(&conf_a, &pod_a).ok(), node.add(&conf_b, &pod_b).ok());
    let (ia, ib) = (node.ns.ifindex(&host_veth(&ra)), node.ns.ifindex(&host_veth(&rb)));
    let attachments = AttachmentMap::open(node.pins.path()).unwrap().expect("pinned");
    assert_eq!(
        attachments.get(ia).unwrap(),
        Some(PodAttachment::new(&node.network, &pod_a.id, "eth0"))
    );
    let ip_a = pod_ip(&ra);
    // Network A's host veth deleted by hand: its record and lease stay
    // until A's GC (or A's DEL).
    node.ns.ip(&["link", "del", &host_veth(&ra)]);

    // Network B's GC with none of B's pods valid: B's pod goes, A's record
    // (though its veth is gone) and lease are A's GC's to collect.
    gc(&node.ns, &conf_b, &[]).ok();
    assert_eq!(recorded(&node), vec![ia], "B's GC took A's record or left B's");
    assert!(!node.links().contains(&host_veth(&rb)));
    let b_leases = node.data_dir.join(&net_b);
    assert!(!b_leases.join(pod_ip(&rb)).exists(), "B's lease kept");
    assert!(node.allocated(&ip_a), "B's GC released A's lease");
    assert_eq!(attachments.get(ib).unwrap(), None);

    // A's GC: the record of the veth deleted by hand goes, and so does its
    // host-local lease.
    gc(&node.ns, &conf_a, &[]).ok();
    assert!(recorded(&node).is_empty());
    assert!(attachments.list().unwrap().is_empty());
    assert!(
        !node.allocated(&ip_a),
        "GC kept the lease of a veth deleted by hand"
    );
    node.del(&conf_a, &pod_a).ok();
}

#[test]
fn gc_keeps_the_record_of_a_renamed_host_veth() {
    require_root!();
    let node = Node::new("gcrename");
    let conf = node.config("1.1.0");
    let (p1, p2) = (Pod::new("gcrename-1"), Pod::new("gcrename-2"));
    let (r1, r2) = (node.add(&conf, &p1).ok(), node.add(&conf, &p2).ok());
    let (host1, host2) = (host_veth(&r1), host_veth(&r2));
    let (i1, i2) = (node.ns.ifindex(&host1), node.ns.ifindex(&host2));
    for args in [
        vec!["link", "set", "dev", &host1, "down"],
        vec!["link", "set", "dev", &host1, "name", "renamed0"],
        vec!["link", "set", "dev", "renamed0", "up"],
    ] {
        node.ns.ip(&args);
    }
    gc(&node.ns, &conf, &[&p1, &p2]).ok();
    assert_eq!(recorded(&node), vec![i1.min(i2), i1.max(i2)]);
    assert!(node.allocated(&pod_ip(&r1)) && node.allocated(&pod_ip(&r2)));
    // Not valid any more: the renamed veth is collected like any other.
    gc(&node.ns, &conf, &[&p2]).ok();
    assert_eq!(recorded(&node), vec![i2]);
    assert!(!node.links().contains(&"renamed0".to_string()));
    assert!(!node.allocated(&pod_ip(&r1)));
    node.del(&conf, &p2).ok();
}

/// A pin directory of an earlier release has no binding: the first use
/// binds it to the namespace it runs in, and the others are refused.
#[test]
fn a_pin_dir_without_a_binding_is_bound_at_its_next_use() {
    require_root!();
    let node = Node::new("legacybind");
    let conf = node.config("1.1.0");
    let pod = Pod::new("legacybind-pod");
    let result = node.add(&conf, &pod).ok();
    std::fs::remove_file(node.pins.path().join("netns_binding")).unwrap();
    assert_eq!(ebpfcni::netns_binding(node.pins.path()).unwrap(), None);

    gc(&node.ns, &conf, &[&pod]).ok();
    let bound = ebpfcni::netns_binding(node.pins.path())
        .unwrap()
        .expect("bound by GC");
    let here = node.ns.run_in(|| ebpfcni::NetnsId::current().unwrap());
    assert!(bound.same_as(&here), "{bound} is not the node's {here}");
    let other = Netns::new("legacybind-other");
    gc(&other, &conf, &[&pod]).err(OTHER_NETNS);
    node.check(&conf, &pod, &result).ok();
    node.del(&conf, &pod).ok();
}
