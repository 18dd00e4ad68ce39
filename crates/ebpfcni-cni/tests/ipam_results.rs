//! What the IPAM plugin answers is checked before the pod gets it: a
//! gateway that is a pod's address is refused (102, naming it), and a
//! plugin that succeeds with output we cannot decode gets its DEL, so that
//! no lease leaks.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{pod_ip, Node, Pod, CNI_PATH};
use ebpfcni_testutil::require_root;
use serde_json::json;

#[test]
fn a_gateway_that_is_a_pods_address_is_refused() {
    require_root!();
    let node = Node::new("gwpod");
    let conf = node.config("1.1.0");
    let first = Pod::new("gwpod-first");
    let result = node.add(&conf, &first).ok();
    let taken = pod_ip(&result);
    let links = node.links();

    let second = Pod::new("gwpod-second");
    let conf2 = node.static_config("1.1.0", "10.13.1.200/24", Some(&taken));
    let msg = node.add(&conf2, &second).err(102);
    assert!(
        msg.contains(&taken) && msg.contains(&first.id),
        "names the address and whose it is: {msg}"
    );
    assert_eq!(node.links(), links, "the refused ADD left an interface");
    let local = node.output("ip", &["-4", "-o", "addr", "show"]);
    assert!(
        !local.contains(&format!("{taken}/32")),
        "{taken} became the node's: {local}"
    );
    node.check(&conf, &first, &result).ok();

    // The pod's own address as its gateway.
    let conf3 = node.static_config("1.1.0", "10.13.1.201/24", Some("10.13.1.201"));
    let msg = node.add(&conf3, &second).err(102);
    assert!(msg.contains("10.13.1.201"), "{msg}");
    assert_eq!(node.links(), links);
    node.del(&conf, &first).ok();
}

/// Exits 0 on every command; ADD prints something that is not a result.
/// Each call's CNI_COMMAND goes to calls.log beside it.
const UNDECODABLE: &str = r#"#!/bin/sh
cat > /dev/null
echo "$CNI_COMMAND $CNI_CONTAINERID" >> "$(dirname "$0")/calls.log"
[ "$CNI_COMMAND" = ADD ] && echo 'lease granted, have a nice day'
exit 0
"#;

#[test]
fn ipam_that_succeeds_with_undecodable_output_gets_its_del() {
    require_root!();
    let node = Node::new("ipamjunk");
    let dir = node.data_dir.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("junk-ipam");
    std::fs::write(&binary, UNDECODABLE).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut conf = node.config("1.1.0");
    conf["ipam"] = json!({ "type": "junk-ipam" });
    let cni_path = format!("{}:{CNI_PATH}", dir.display());
    let pod = Pod::new("ipamjunk-pod");
    let msg = node
        .exec(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", &pod.id),
                ("CNI_NETNS", &pod.ns.path_string()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &cni_path),
            ],
            conf.to_string().as_bytes(),
        )
        .err(102);
    assert!(msg.contains("decode"), "{msg}");
    let calls = std::fs::read_to_string(dir.join("calls.log")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [format!("ADD {}", pod.id), format!("DEL {}", pod.id)],
        "the lease the plugin holds is given back"
    );
    assert!(!node.links().iter().any(|l| l.starts_with("ebc")), "veth kept");
}
