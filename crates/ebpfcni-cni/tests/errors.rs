//! Malformed input: every error path answers with a CNI error JSON on
//! stdout, the right code, a non-zero exit, and leaves nothing behind.

mod common;

use common::{for_each_version, Node, Pod, CNI_PATH};
use ebpfcni_testutil::require_root;
use serde_json::json;

/// Runs ADD with `conf` (raw stdin) and the standard environment minus `drop`.
fn add_raw(node: &Node, pod: &Pod, stdin: &[u8], drop: &[&str]) -> common::Outcome {
    let netns = pod.ns.path_string();
    let env: Vec<(&str, &str)> = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", pod.id.as_str()),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", CNI_PATH),
    ]
    .into_iter()
    .filter(|(k, _)| !drop.contains(k))
    .collect();
    node.exec(&env, stdin)
}

fn assert_nothing_left(node: &Node, pod: &Pod, what: &str) {
    assert!(
        node.allocations().is_empty(),
        "{what}: allocation kept: {:?}",
        node.allocations()
    );
    assert!(
        !node.links().iter().any(|l| l.starts_with("ebc")),
        "{what}: veth kept"
    );
    let pod_links = String::from_utf8_lossy(&pod.ns.ip(&["-o", "link"]).stdout).into_owned();
    assert!(!pod_links.contains("eth0"), "{what}: eth0 in the pod");
}

fn malformed_config_is_rejected_with_the_right_code(version: &str) {
    require_root!();
    let node = Node::new("badconf");
    let pod = Pod::new("badconf-pod");
    let good = node.config(version);

    let msg = add_raw(&node, &pod, b"{ not json", &[]).err(6);
    assert!(msg.contains("decode"), "{msg}");
    add_raw(&node, &pod, b"[1, 2]", &[]).err(6);

    for field in ["type", "name", "cniVersion"] {
        let mut conf = good.clone();
        conf.as_object_mut().unwrap().remove(field);
        let msg = add_raw(&node, &pod, conf.to_string().as_bytes(), &[]).err(7);
        assert!(msg.contains(field), "[{version}] missing {field}: {msg}");
    }
    let mut conf = good.clone();
    conf["type"] = json!("ptp");
    add_raw(&node, &pod, conf.to_string().as_bytes(), &[]).err(7);
    let mut conf = good.clone();
    conf["name"] = json!("bad name!");
    add_raw(&node, &pod, conf.to_string().as_bytes(), &[]).err(7);
    let mut conf = good.clone();
    conf["mtu"] = json!("big");
    add_raw(&node, &pod, conf.to_string().as_bytes(), &[]).err(7);
    let mut conf = good.clone();
    conf["attach"] = json!("xdp");
    let msg = add_raw(&node, &pod, conf.to_string().as_bytes(), &[]).err(7);
    assert!(
        msg.contains("attach") && msg.contains("xdp") && msg.contains("tcx"),
        "{msg}"
    );
    let mut conf = good.clone();
    conf.as_object_mut().unwrap().remove("ipam");
    add_raw(&node, &pod, conf.to_string().as_bytes(), &[]).err(7);

    let mut conf = good.clone();
    conf["cniVersion"] = json!("9.9.9");
    let out = add_raw(&node, &pod, conf.to_string().as_bytes(), &[]);
    assert_eq!(
        out.json()["cniVersion"],
        "1.1.0",
        "errors answer in a version we speak"
    );
    let msg = out.err(1);
    assert!(msg.contains("9.9.9"), "{msg}");

    let mut conf = good.clone();
    conf["ipam"]["type"] = json!("no-such-ipam");
    let msg = add_raw(&node, &pod, conf.to_string().as_bytes(), &[]).err(7);
    assert!(msg.contains("no-such-ipam"), "{msg}");

    assert_nothing_left(&node, &pod, version);
}
for_each_version!(malformed_config_is_rejected_with_the_right_code);

fn bad_environment_is_rejected_with_code_4(version: &str) {
    require_root!();
    let node = Node::new("badenv");
    let pod = Pod::new("badenv-pod");
    let conf = node.config(version).to_string();
    for var in common::REQUIRED_CNI_ENV {
        let out = add_raw(&node, &pod, conf.as_bytes(), &[var]);
        assert_eq!(
            out.json()["cniVersion"],
            version,
            "errors answer in the config's version"
        );
        let msg = out.err(4);
        assert!(msg.contains(var), "[{version}] without {var}: {msg}");
    }
    let netns = pod.ns.path_string();
    let with = |k: &'static str, v: &'static str| {
        let mut env = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", pod.id.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", CNI_PATH),
        ];
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
        node.exec(&env, conf.as_bytes())
    };
    let msg = with("CNI_NETNS", "/run/netns/ebpfcni-no-such-netns").err(4);
    assert!(msg.contains("ebpfcni-no-such-netns"), "{msg}");
    with("CNI_NETNS", "/etc/hostname").err(4);
    with("CNI_IFNAME", "much-too-long-ifname").err(4);
    with("CNI_IFNAME", "a/b").err(4);
    with("CNI_CONTAINERID", "bad id").err(4);
    with("CNI_COMMAND", "FROB").err(4);
    with("CNI_ARGS", "novalue").err(4);
    assert_nothing_left(&node, &pod, version);
}
for_each_version!(bad_environment_is_rejected_with_code_4);

#[test]
fn podman_style_cni_args_are_accepted() {
    require_root!();
    let node = Node::new("args");
    let pod = Pod::new("args-pod");
    let conf = node.config("1.0.0");
    let netns = pod.ns.path_string();
    let env = |command| {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", pod.id.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", CNI_PATH),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default",
            ),
        ]
    };
    node.exec(&env("ADD"), conf.to_string().as_bytes()).ok();
    node.exec(&env("DEL"), conf.to_string().as_bytes()).ok();
}

#[test]
fn diagnostics_go_to_the_log_file_not_stdout() {
    require_root!();
    let node = Node::new("log");
    let pod = Pod::new("log-pod");
    let mut conf = node.config("1.0.0");
    let log = node.data_dir.join("plugin.log");
    conf["logFile"] = json!(log);
    let out = node.add(&conf, &pod);
    assert!(out.stderr.is_empty(), "stderr: {}", out.stderr);
    let result = out.ok();
    assert!(result["interfaces"].is_array());
    let text = std::fs::read_to_string(&log).expect("log file written");
    assert!(text.contains("ADD") && text.contains(&pod.id), "{text}");
    node.del(&conf, &pod).ok();
}

/// A pinDir that cannot hold the maps is a config error found before IPAM
/// runs or any interface or directory is made (not a BPF error after).
#[test]
fn an_unusable_pin_dir_is_refused_before_anything_is_touched() {
    require_root!();
    let node = Node::new("pindir");
    let pod = Pod::new("pindir-pod");
    let off_bpffs = node.data_dir.join("pins");
    for pin_dir in [off_bpffs.display().to_string(), "relative_pins".to_string()] {
        let mut conf = node.config("1.1.0");
        conf["pinDir"] = json!(pin_dir);
        let msg = node.add(&conf, &pod).err(7);
        assert!(msg.contains("pinDir") && msg.contains(&pin_dir), "{msg}");
        let prev = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{ "name": "eth0", "sandbox": pod.ns.path_string() }],
            "ips": [{ "address": "10.13.1.2/24", "gateway": "10.13.1.1", "interface": 0 }],
        });
        let msg = node.check(&conf, &pod, &prev).err(7);
        assert!(msg.contains("pinDir"), "CHECK: {msg}");
    }
    assert!(!off_bpffs.exists(), "{} created", off_bpffs.display());
    // host-local makes its network directory on first use.
    assert!(!node.data_dir.join(&node.network).exists(), "the IPAM plugin ran");
    assert_nothing_left(&node, &pod, "unusable pinDir");
}

/// A prevResult that cannot be read is invalid input (7), not an IPAM
/// failure.
#[test]
fn a_garbage_address_in_prev_result_is_invalid_config() {
    require_root!();
    let node = Node::new("prevgarbage");
    let pod = Pod::new("prevgarbage-pod");
    let conf = node.config("1.1.0");
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            { "name": "ebc000000000000" },
            { "name": "eth0", "sandbox": pod.ns.path_string() },
        ],
        "ips": [{ "address": "garbage", "interface": 1 }],
    });
    let msg = node.check(&conf, &pod, &prev).err(7);
    assert!(
        msg.starts_with("invalid network config: prevResult") && msg.contains("\"garbage\""),
        "{msg}"
    );
}

/// Static IPAM can hand out anything; addresses a pod or its gateway cannot
/// have are refused (102) and the ADD leaves nothing behind.
#[test]
fn unusable_ipam_addresses_are_refused() {
    require_root!();
    let node = Node::new("badaddr");
    let pod = Pod::new("badaddr-pod");
    for (address, gateway, names, why) in [
        ("127.0.0.5/8", Some("127.0.0.1"), "127.0.0.5", "loopback"),
        ("10.13.0.0/24", None, "10.13.0.0", "network address"),
        ("10.13.4.255/24", None, "10.13.4.255", "broadcast address"),
        ("0.0.0.0/32", None, "0.0.0.0", "unspecified"),
        ("224.0.0.5/32", None, "224.0.0.5", "multicast"),
        ("10.13.4.10/24", Some("224.0.0.1"), "224.0.0.1", "multicast"),
        (
            "10.13.4.10/24",
            Some("255.255.255.255"),
            "255.255.255.255",
            "broadcast",
        ),
        ("10.13.4.10/24", Some("127.0.0.1"), "127.0.0.1", "loopback"),
    ] {
        let conf = node.static_config("1.1.0", address, gateway);
        let msg = node.add(&conf, &pod).err(102);
        assert!(
            msg.contains(names) && msg.contains(why),
            "{address} via {gateway:?}: {msg}"
        );
        assert_nothing_left(&node, &pod, address);
    }
}

/// The host veth's alias records the attachment and the kernel takes 255
/// bytes of it: an id that makes it longer is refused before IPAM or any
/// interface (not with ERANGE half way), and DEL with it still succeeds.
#[test]
fn a_container_id_too_long_for_the_alias_is_refused_up_front() {
    require_root!();
    let node = Node::new("longid");
    let pod = Pod::new("longid-pod");
    let conf = node.config("1.1.0");
    let netns = pod.ns.path_string();
    // The alias is "ebpfcni/<network>/<container id>/eth0".
    let room = 255 - "ebpfcni/".len() - node.network.len() - "/".len() - "/eth0".len();
    let at_limit = format!("{}{}", pod.id, "x".repeat(room - pod.id.len()));
    let over = format!("{at_limit}x");

    let msg = node.call("ADD", &conf, &over, &netns, "eth0").err(4);
    for part in [
        format!("container id is {} bytes", over.len()),
        format!("network name {} bytes", node.network.len()),
        "255".to_string(),
    ] {
        assert!(msg.contains(&part), "no {part:?} in {msg}");
    }
    assert!(!node.data_dir.join(&node.network).exists(), "the IPAM plugin ran");
    assert_nothing_left(&node, &pod, "too long");
    node.call("DEL", &conf, &over, &netns, "eth0").ok();

    // One byte less fits.
    let result = node.call("ADD", &conf, &at_limit, &netns, "eth0").ok();
    let mut check = conf.clone();
    check["prevResult"] = result;
    node.call("CHECK", &check, &at_limit, &netns, "eth0").ok();
    node.call("DEL", &conf, &at_limit, &netns, "eth0").ok();
    assert_nothing_left(&node, &pod, "at the limit");
}

/// CNI_NETNS naming a namespace of another kind is a bad environment (4),
/// like any other path that is not a network namespace.
#[test]
fn a_namespace_of_another_kind_is_invalid_environment() {
    require_root!();
    let node = Node::new("nstype");
    let pod = Pod::new("nstype-pod");
    let conf = node.config("1.1.0");
    let mut check = conf.clone();
    check["prevResult"] = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{ "name": "eth0", "sandbox": "/proc/self/ns/mnt" }],
        "ips": [{ "address": "10.13.1.2/24", "interface": 0 }],
    });
    for (path, kind) in [("/proc/self/ns/mnt", "mount"), ("/proc/self/ns/uts", "uts")] {
        let msg = node.call("ADD", &conf, &pod.id, path, "eth0").err(4);
        assert!(
            msg.contains(path) && msg.contains(&format!("it is a {kind} namespace")),
            "{msg}"
        );
        node.call("CHECK", &check, &pod.id, path, "eth0").err(4);
        node.call("DEL", &conf, &pod.id, path, "eth0").ok();
    }
    assert_nothing_left(&node, &pod, "namespace of another kind");
}

/// An MTU under IPv6's minimum (1280) would make the kernel drop IPv6 from
/// the veth by itself and bring it back when the MTU is raised: refused
/// as invalid config with the reason, before anything is touched.
#[test]
fn an_mtu_below_ipv6s_minimum_is_refused_up_front() {
    require_root!();
    let node = Node::new("lowmtu");
    let pod = Pod::new("lowmtu-pod");
    let mut conf = node.config("1.1.0");
    conf["mtu"] = json!(1000);
    let msg = add_raw(&node, &pod, conf.to_string().as_bytes(), &[]).err(7);
    assert!(msg.contains("mtu 1000") && msg.contains("IPv6"), "{msg}");
    assert_nothing_left(&node, &pod, "mtu 1000");
    conf["mtu"] = json!(1280);
    let result = node.add(&conf, &pod).ok();
    node.check(&conf, &pod, &result).ok();
    node.del(&conf, &pod).ok();
}
