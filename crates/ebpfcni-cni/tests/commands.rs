//! The commands that act on no single attachment: VERSION, STATUS, GC.

mod common;

use common::{host_veth, pod_ip, run_plugin, Node, Pod, CNI_PATH};
use ebpfcni_testutil::require_root;
use serde_json::{json, Value};

#[test]
fn version_lists_supported_versions() {
    for (asked, answered) in [
        ("1.0.0", "1.0.0"),
        ("1.1.0", "1.1.0"),
        ("0.4.0", "0.4.0"),
        ("7.0.0", "1.1.0"),
    ] {
        let stdin = json!({ "cniVersion": asked }).to_string();
        let reply = run_plugin(None, &[("CNI_COMMAND", "VERSION")], stdin.as_bytes()).ok();
        assert_eq!(reply["cniVersion"], answered);
        assert_eq!(reply["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    }
}

#[test]
fn status_ready_and_not_ready() {
    require_root!();
    let node = Node::new("status");
    let conf = node.config("1.1.0");
    let env = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", CNI_PATH)];
    assert_eq!(node.exec(&env, conf.to_string().as_bytes()).ok(), Value::Null);
    // A probe changes nothing: no maps pinned, no directory made.
    let pinned: Vec<_> = std::fs::read_dir(node.pins.path()).unwrap().collect();
    assert!(pinned.is_empty(), "STATUS pinned {pinned:?}");
    let mut fresh = conf.clone();
    let absent = node.pins.path().join("not_yet");
    fresh["pinDir"] = json!(absent);
    assert_eq!(node.exec(&env, fresh.to_string().as_bytes()).ok(), Value::Null);
    assert!(!absent.exists(), "STATUS created {}", absent.display());

    let mut no_ipam = conf.clone();
    no_ipam["ipam"]["type"] = json!("no-such-ipam");
    let msg = node.exec(&env, no_ipam.to_string().as_bytes()).err(50);
    assert!(msg.contains("no-such-ipam"), "{msg}");

    let mut no_bpffs = conf.clone();
    no_bpffs["pinDir"] = json!(node.data_dir.join("pins"));
    let msg = node.exec(&env, no_bpffs.to_string().as_bytes()).err(50);
    assert!(msg.contains("bpf"), "{msg}");
}

#[test]
fn gc_removes_stale_attachments() {
    require_root!();
    let node = Node::new("gc");
    let conf = node.config("1.1.0");
    let (keep, stale) = (Pod::new("gc-keep"), Pod::new("gc-stale"));
    let kept = node.add(&conf, &keep).ok();
    let gone = node.add(&conf, &stale).ok();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": keep.id, "ifname": "eth0" }]);
    node.exec(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH)],
        gc.to_string().as_bytes(),
    )
    .ok();

    let links = node.links();
    assert!(
        !links.contains(&host_veth(&gone)),
        "stale veth survived GC: {links:?}"
    );
    assert!(!node.allocated(&pod_ip(&gone)), "stale address not released");
    assert!(links.contains(&host_veth(&kept)), "valid veth removed: {links:?}");
    assert!(node.allocated(&pod_ip(&kept)), "valid address released");
    node.check(&conf, &keep, &kept).ok();
    node.del(&conf, &keep).ok();
}
