//! Source trust and CIDR identities with real pods made by the plugin: a
//! pod cannot borrow another's identity by forging its source address, the
//! record of a pod's addresses lives as long as its attachment, nothing
//! goes around the IPv4 checks over IPv6, and a pod reaches an address that
//! is known only by a CIDR identity when policy allows it.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::time::Duration;

use common::{host_veth, pod_ip, Node, Pod};
use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{parse_prefix, Identity, InterfaceMap, Maps, PolicyRule};
use ebpfcni_testutil::frames::{icmpv6_echo, parse_mac, send_raw_frame, udp_datagram};
use ebpfcni_testutil::require_root;
use serde_json::Value;

const PORT: u16 = 7099;

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

fn mac(result: &Value, index: usize) -> [u8; 6] {
    parse_mac(result["interfaces"][index]["mac"].as_str().expect("mac"))
}

/// Whether a datagram arrives at `to`:PORT (in `pod`) while `send` runs.
fn arrives(pod: &Pod, to: Ipv4Addr, send: impl FnOnce() + Send) -> bool {
    std::thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = s.spawn(move || {
            pod.ns.run_in(|| {
                let socket = UdpSocket::bind((to, PORT)).expect("bind");
                socket
                    .set_read_timeout(Some(Duration::from_millis(1500)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut buf = [0u8; 64];
                socket.recv_from(&mut buf).is_ok()
            })
        });
        ready_rx.recv().unwrap();
        send();
        receiver.join().unwrap()
    })
}

#[test]
fn a_pod_cannot_borrow_another_pods_identity() {
    require_root!();
    let node = Node::new("forge");
    let conf = node.config("1.1.0");
    let (a, b, c) = (Pod::new("forge-a"), Pod::new("forge-b"), Pod::new("forge-c"));
    let (ra, rb, rc) = (
        node.add(&conf, &a).ok(),
        node.add(&conf, &b).ok(),
        node.add(&conf, &c).ok(),
    );
    let (ip_a, ip_b, ip_c): (Ipv4Addr, Ipv4Addr, Ipv4Addr) = (
        pod_ip(&ra).parse().unwrap(),
        pod_ip(&rb).parse().unwrap(),
        pod_ip(&rc).parse().unwrap(),
    );
    let maps = Maps::open(node.pins.path()).unwrap();
    for (ip, n) in [(ip_a, 1), (ip_b, 2), (ip_c, 3)] {
        maps.endpoints.upsert(ip, id(n)).unwrap();
    }
    // B may send to C; A may not.
    maps.policy.allow(PolicyRule::new(id(2), id(3))).unwrap();

    // A, with NET_RAW, sends a well-formed datagram bearing B's address.
    let forged = udp_datagram(mac(&ra, 0), mac(&ra, 1), ip_b, ip_c, 40000, PORT, b"forged");
    let before = maps.drops.get(Reason::EBPFCNI_DROP_INVALID_SOURCE).unwrap();
    let got = arrives(&c, ip_c, || {
        a.ns.run_in(|| send_raw_frame("eth0", &forged))
            .expect("send the forged frame")
    });
    assert!(!got, "C received A's datagram forged with B's address");
    assert_eq!(
        maps.drops.get(Reason::EBPFCNI_DROP_INVALID_SOURCE).unwrap(),
        before + 1,
        "counted as invalid-source"
    );

    // B's own datagram, the same but for the sender, arrives.
    let genuine = udp_datagram(mac(&rb, 0), mac(&rb, 1), ip_b, ip_c, 40000, PORT, b"genuine");
    let got = arrives(&c, ip_c, || {
        b.ns.run_in(|| send_raw_frame("eth0", &genuine))
            .expect("send B's frame")
    });
    assert!(got, "B's own datagram did not arrive");
    for pod in [&a, &b, &c] {
        node.del(&conf, pod).ok();
    }
}

#[test]
fn the_record_of_a_pods_addresses_lives_as_long_as_its_attachment() {
    require_root!();
    let node = Node::new("record");
    let conf = node.config("1.0.0");
    let pod = Pod::new("record-pod");
    let result = node.add(&conf, &pod).ok();
    let host = host_veth(&result);
    let ifindex = node.ns.ifindex(&host);
    let records = || InterfaceMap::open(node.pins.path()).unwrap().expect("pinned");
    let ip: Ipv4Addr = pod_ip(&result).parse().unwrap();
    assert_eq!(records().get(ifindex).unwrap(), Some(vec![ip]));
    node.check(&conf, &pod, &result).ok();

    // Without the record CHECK says so: the pod could send nothing.
    assert!(records().remove(ifindex).unwrap());
    let msg = node.check(&conf, &pod, &result).err(104);
    assert!(msg.contains("no record of the pod's addresses"), "{msg}");
    records().set(ifindex, &[ip]).unwrap();
    node.check(&conf, &pod, &result).ok();

    node.del(&conf, &pod).ok();
    assert_eq!(records().get(ifindex).unwrap(), None, "DEL left the record");
    assert!(records().list().unwrap().is_empty());
}

#[test]
fn gc_removes_the_records_of_interfaces_that_are_gone() {
    require_root!();
    let node = Node::new("recordgc");
    let conf = node.config("1.1.0");
    let pod = Pod::new("recordgc-pod");
    let result = node.add(&conf, &pod).ok();
    let records = || InterfaceMap::open(node.pins.path()).unwrap().expect("pinned");
    // A record of an interface that no longer exists (its DEL never ran).
    records().set(999_999, &[Ipv4Addr::new(10, 13, 1, 99)]).unwrap();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = serde_json::json!([{ "containerID": pod.id, "ifname": "eth0" }]);
    node.exec(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", common::CNI_PATH)],
        gc.to_string().as_bytes(),
    )
    .ok();
    let left: Vec<u32> = records().list().unwrap().into_iter().map(|(i, _)| i).collect();
    assert_eq!(left, vec![node.ns.ifindex(&host_veth(&result))]);
    node.del(&conf, &pod).ok();
}

/// Nothing goes around the IPv4 checks: neither end of a pod's veth has
/// IPv6 (not even link-local), and IPv6 sent anyway (raw) reaches nothing.
#[test]
fn nothing_goes_around_the_ipv4_checks_over_ipv6() {
    require_root!();
    let node = Node::new("ipv6");
    let conf = node.config("1.1.0");
    let pod = Pod::new("ipv6-pod");
    let result = node.add(&conf, &pod).ok();
    let host = host_veth(&result);
    assert_eq!(pod.ns.ip_text(&["-6", "addr", "show", "dev", "eth0"]).trim(), "");
    assert_eq!(
        node.output("ip", &["-6", "addr", "show", "dev", &host]).trim(),
        ""
    );

    let echoes = || {
        node.output("cat", &["/proc/net/snmp6"])
            .lines()
            .find_map(|l| l.strip_prefix("Icmp6InEchos"))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let before = echoes();
    // An echo to all nodes of the link, from the pod's would-be link-local
    // address: an IPv6-enabled host end answers it whatever the policy.
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let src: Ipv6Addr = "fe80::1".parse().unwrap();
    let frame = icmpv6_echo([0x33, 0x33, 0, 0, 0, 1], mac(&result, 1), src, all_nodes);
    // For two seconds: an IPv6-enabled interface that just came up takes
    // a moment (addrconf) before it answers.
    for _ in 0..10 {
        pod.ns.run_in(|| send_raw_frame("eth0", &frame)).expect("send");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(echoes(), before, "the node took IPv6 from the pod");
    }
    node.del(&conf, &pod).ok();
}

#[test]
fn a_pod_reaches_an_address_known_only_by_a_cidr_identity() {
    require_root!();
    let node = Node::new("cidr");
    let conf = node.config("1.1.0");
    let pod = Pod::new("cidr-pod");
    let result = node.add(&conf, &pod).ok();
    // A "resolver" on the node, outside every pod's address.
    node.ns.ip(&["addr", "add", "10.255.0.53/32", "dev", "lo"]);
    let maps = Maps::open(node.pins.path()).unwrap();
    maps.endpoints
        .upsert(pod_ip(&result).parse().unwrap(), id(1))
        .unwrap();
    let rule = PolicyRule::new(id(1), id(2));
    maps.policy.allow_all(&[rule, rule.reverse()]).unwrap();
    assert!(!pod.ns.ping("10.255.0.53", 1), "no identity for the resolver yet");
    maps.prefixes
        .upsert(parse_prefix("10.255.0.0/16").unwrap(), id(2))
        .unwrap();
    assert!(pod.ns.ping("10.255.0.53", 2), "the resolver by its prefix");
    maps.policy.revoke(rule).unwrap();
    assert!(!pod.ns.ping("10.255.0.53", 1), "and only while policy allows it");
    node.del(&conf, &pod).ok();
}
