//! A pin directory serves one network namespace (interface records name
//! interfaces by index, and indexes repeat across namespaces): `reattach`
//! run from another namespace with its --pin-dir is refused (exit 4) and
//! moves nothing, and `monitor` run there names no interface after
//! whatever has the same index where it runs.

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

#[test]
fn monitor_outside_the_pin_dirs_namespace_names_no_interface_by_index() {
    require_root!();
    let pins = TestPinDir::new("netns_monitor");
    let topo = TwoPods::new("nsmon");
    let program = Program::load(pins.path()).unwrap();
    let maps = Maps::open(pins.path()).unwrap();
    let (a, b) = (Identity::new(1).unwrap(), Identity::new(2).unwrap());
    maps.endpoints
        .upsert_batch(&[(TwoPods::POD_A, a), (TwoPods::POD_B, b)])
        .unwrap();
    topo.node.run_in(|| {
        ebpfcni::bind_netns(pins.path()).unwrap();
        maps.interfaces.set(topo.ifindex_a, &[TwoPods::POD_A]).unwrap();
        maps.interfaces.set(topo.ifindex_b, &[TwoPods::POD_B]).unwrap();
        program.attach(topo.ifindex_a).unwrap();
        program.attach(topo.ifindex_b).unwrap();
    });
    // Another namespace where pod A's host veth's index names something else.
    let elsewhere = Netns::new("nsmon-else");
    let index = topo.ifindex_a.to_string();
    elsewhere.ip(&[
        "link",
        "add",
        "decoy",
        "index",
        &index,
        "type",
        "veth",
        "peer",
        "name",
        "decoy_peer",
        "index",
        "1000",
    ]);

    let monitor = elsewhere
        .command(POLICYCTL)
        .arg("--pin-dir")
        .arg(pins.path())
        .args(["monitor", "--count", "1", "--duration", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start policyctl monitor");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!topo.reaches(TwoPods::POD_A), "no rule: dropped");
    let out = monitor.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("shown by index only") && stderr.contains(pins.as_str()),
        "says why: {stderr}"
    );
    let line = stdout.lines().next().expect("an event");
    assert!(
        line.contains(&format!("ifindex {index}")) && !line.contains("decoy"),
        "named after another namespace's interface: {line}"
    );
}
