//! A result nobody can read is no result: ADD whose stdout cannot be
//! written (here /dev/full) is rolled back (veth, record and lease) and
//! exits non-zero (108), saying so on stderr.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{Node, Pod, CNI_PATH, REQUIRED_CNI_ENV};
use ebpfcni::InterfaceMap;
use ebpfcni_testutil::{require_root, text};

#[test]
fn add_whose_result_cannot_be_written_is_rolled_back() {
    require_root!();
    let node = Node::new("devfull");
    let conf = node.config("1.1.0");
    let pod = Pod::new("devfull-pod");
    let mut cmd = node.ns.command(env!("CARGO_BIN_EXE_ebpfcni"));
    for var in REQUIRED_CNI_ENV.iter().chain(&["CNI_ARGS"]) {
        cmd.env_remove(var);
    }
    cmd.envs([
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", pod.id.as_str()),
        ("CNI_NETNS", &pod.ns.path_string()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", CNI_PATH),
    ]);
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the plugin");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(conf.to_string().as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(108), "stderr: {stderr}");
    assert!(
        stderr.contains("failed to write the result on stdout") && stderr.contains("rolled back"),
        "{stderr}"
    );
    assert!(!node.links().iter().any(|l| l.starts_with("ebc")), "veth kept");
    assert!(
        !pod.ns.links().iter().any(|l| l == "eth0"),
        "eth0 kept in the pod"
    );
    assert!(
        node.allocations().is_empty(),
        "lease kept: {:?}",
        node.allocations()
    );
    let records = InterfaceMap::open(node.pins.path()).unwrap().expect("pinned");
    assert!(records.list().unwrap().is_empty(), "record kept");
}
