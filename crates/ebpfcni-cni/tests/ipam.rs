//! Delegation to an IPAM plugin that does not speak our config's version:
//! the plugin is asked for its versions once, and what it said is
//! remembered, so that later ADDs run it once instead of three times.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{pod_ip, Node, Pod, CNI_PATH};
use ebpfcni_testutil::require_root;
use serde_json::json;

/// A plugin that speaks 0.4.0 and 1.0.0 only, and logs each call's
/// CNI_COMMAND (and the config's version) to `log`.
const FAKE: &str = r#"#!/bin/sh
config=$(cat)
version=$(printf '%s' "$config" | sed -n 's/.*"cniVersion":"\([^"]*\)".*/\1/p')
echo "$CNI_COMMAND $version" >> "$(dirname "$0")/calls.log"
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
ADD)
  if [ "$version" != 1.0.0 ] && [ "$version" != 0.4.0 ]; then
    echo "{\"cniVersion\":\"1.0.0\",\"code\":1,\"msg\":\"incompatible CNI versions\"}"
    exit 1
  fi
  n=$(wc -l < "$(dirname "$0")/calls.log")
  echo "{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.13.60.$((n + 1))/24\",\"gateway\":\"10.13.60.1\"}]}" ;;
*) ;;
esac
"#;

/// Where the plugin keeps what a binary said (the plugin's own function).
fn cache_file(binary: &Path) -> std::path::PathBuf {
    ebpfcni::ipam_versions_file(binary).expect("the binary exists")
}

#[test]
fn the_ipam_plugins_versions_are_asked_once_and_remembered() {
    require_root!();
    let node = Node::new("ipamver");
    let dir = node.data_dir.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("fake-ipam");
    std::fs::write(&binary, FAKE).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = cache_file(&binary);
    let cni_path = format!("{}:{CNI_PATH}", dir.display());
    let mut conf = node.config("1.1.0");
    conf["ipam"] = json!({ "type": "fake-ipam" });

    let add = |pod: &Pod| {
        node.exec(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", &pod.id),
                ("CNI_NETNS", &pod.ns.path_string()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &cni_path),
            ],
            conf.to_string().as_bytes(),
        )
        .ok()
    };
    let (a, b) = (Pod::new("ipamver-a"), Pod::new("ipamver-b"));
    let first = add(&a);
    let second = add(&b);
    let calls = std::fs::read_to_string(dir.join("calls.log")).unwrap();
    let _ = std::fs::remove_file(&cache);
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        ["ADD 1.1.0", "VERSION 0.4.0", "ADD 1.0.0", "ADD 1.0.0"],
        "the second ADD should go straight to 1.0.0"
    );
    assert_eq!(
        first["cniVersion"], "1.1.0",
        "the result is in the config's version"
    );
    assert_ne!(pod_ip(&first), pod_ip(&second));
}
