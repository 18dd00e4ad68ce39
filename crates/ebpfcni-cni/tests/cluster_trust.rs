//! Source trust between nodes (issue 23, precedence step F): in cluster
//! mode the agent attaches from-fabric to the interface holding its node
//! IP, so that a packet bearing a pod's address arrives only from the node
//! that holds the pod. Two nodes on a bridge (Fabric), etcd in the fabric
//! namespace, an agent on each, pods added through the plugin; frames
//! sent with AF_PACKET sockets: from n2 itself (genuine), from the fabric
//! namespace (another host on the fabric: forged).

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use common::{cli, cluster_agent_config, identity_of, pod_ip, start_cluster_agent, wait_until, Node, Pod};
use ebpfcni::netlink::Netlink;
use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{Hook, Maps};
use ebpfcni_testutil::frames::{send_raw_frame, udp_datagram};
use ebpfcni_testutil::{
    require_root, tools_present, workspace_bin, AgentProcess, EtcdProcess, Fabric, Netns, ETCD_BIN,
};
use serde_json::Value;

const PORT: u16 = 7123;

fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let mac = ns.run_in(|| {
        Netlink::open()
            .unwrap()
            .link_by_name(ifname)
            .unwrap()
            .unwrap()
            .mac
    });
    mac.try_into().expect("an Ethernet address")
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
fn a_pod_address_from_the_fabric_counts_only_from_its_node() {
    require_root!();
    if !tools_present(
        "a_pod_address_from_the_fabric_counts_only_from_its_node",
        &[ETCD_BIN],
    ) {
        return;
    }
    let fabric = Fabric::new(0);
    let (n1, n2) = (Node::new("ctn1"), Node::new("ctn2"));
    fabric.attach(&n1.ns, 0);
    fabric.attach(&n2.ns, 1);
    let etcd = EtcdProcess::start_in(&fabric.fabric.path(), Fabric::fabric_ip());
    let url = etcd.url();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a1 = start_cluster_agent(&n1, d1.path(), &url, "10.0.0.11", &[]);
    let a2 = start_cluster_agent(&n2, d2.path(), &url, "10.0.0.12", &[]);

    // The check runs on the interface holding each node's IP, ours.
    let fab1 = n1.ns.ifindex("fab0");
    let attached = || {
        n1.ns.run_in(|| {
            let ours = ebpfcni::fabric_attachment(fab1).unwrap();
            let all = ebpfcni::tc::tcx_programs(fab1, Hook::FromFabric).unwrap();
            (ours, all)
        })
    };
    let (first, all) = attached();
    let first =
        first.unwrap_or_else(|| panic!("from-fabric attached to n1's fab0: {all:?}\n{}", a1.log_text()));
    assert_eq!(all, vec![first], "one program on fab0's ingress");
    assert!(a1.log_text().contains("attached to fab0"), "{}", a1.log_text());

    // Pods of the same labels (one identity, unrestricted: no policy):
    // web and web2 on n1, db on n2.
    let (web, web2, db) = (Pod::new("ctweb"), Pod::new("ctweb2"), Pod::new("ctdb"));
    let (conf1, conf2) = (
        cluster_agent_config(&n1, &a1, "app"),
        cluster_agent_config(&n2, &a2, "app"),
    );
    let ip = |r: Value| -> Ipv4Addr { pod_ip(&r).parse().unwrap() };
    let web_ip = ip(n1.add(&conf1, &web).ok());
    let web2_ip = ip(n1.add(&conf1, &web2).ok());
    let db_ip = ip(n2.add(&conf2, &db).ok());
    let (maps1, maps2) = (
        Maps::open(n1.pins.path()).unwrap(),
        Maps::open(n2.pins.path()).unwrap(),
    );
    wait_until("each node knows the other's pods", || {
        identity_of(&maps1, &db_ip.to_string()).is_some()
            && identity_of(&maps2, &web_ip.to_string()).is_some()
    });

    let (mac1, mac2, fab_mac) = (
        mac_of(&n1.ns, "fab0"),
        mac_of(&n2.ns, "fab0"),
        mac_of(&fabric.fabric, "br0"),
    );
    // n1 keeps n2's node IP resolved (a managed entry, which the
    // neighbour GC leaves), so the check finds n2's MAC however long n2
    // only sends.
    let mac2_text = mac2.map(|b| format!("{b:02x}")).join(":");
    wait_until("n1 has a managed, resolved entry for n2's node IP", || {
        let shown = n1.ns.ip_text(&["neigh", "show", "10.0.0.12", "dev", "fab0"]);
        shown.contains("managed") && shown.contains(&mac2_text)
    });

    // A genuine first packet: no neighbour entry on either node (the
    // managed one deleted too), so n2 resolves n1, which leaves n2's
    // entry on n1, and then sends.
    n1.ns.ip(&["neigh", "del", "10.0.0.12", "dev", "fab0"]);
    n1.ns.ip(&["neigh", "flush", "dev", "fab0"]);
    n2.ns.ip(&["neigh", "del", "10.0.0.11", "dev", "fab0"]);
    n2.ns.ip(&["neigh", "flush", "dev", "fab0"]);
    assert!(
        !n1.ns
            .ip_text(&["neigh", "show", "dev", "fab0"])
            .contains("10.0.0.12 "),
        "n1 still has an entry for n2"
    );
    assert!(
        db.ns.ping(&web_ip.to_string(), 1),
        "db (n2) -> web (n1): the first ping after both neighbour tables were flushed"
    );

    let dropped = || maps1.drops.get(Reason::EBPFCNI_DROP_NOT_FROM_NODE).unwrap();

    // From n2 itself, db's address reaches web.
    let genuine = udp_datagram(mac1, mac2, db_ip, web_ip, 40000, PORT, b"genuine");
    let got = arrives(&web, web_ip, || {
        n2.ns
            .run_in(|| send_raw_frame("fab0", &genuine))
            .expect("send from n2")
    });
    assert!(got, "db's datagram sent from n2 did not arrive");

    // The same datagram from the fabric's own namespace (another host on
    // the fabric, its own MAC): dropped on n1's fab0, counted, and shown
    // by the monitor.
    let monitor = n1
        .ns
        .command(workspace_bin("ebpfcni-ctl", "policyctl"))
        .arg("--pin-dir")
        .arg(n1.pins.path())
        .arg("--agent")
        .arg(&a1.socket)
        .args(["monitor", "--reason", "source-not-from-node", "--count", "1"])
        .args(["--duration", "10", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start policyctl monitor");
    // Give it the time to open the ring.
    std::thread::sleep(Duration::from_millis(700));
    let before = dropped();
    let forged = udp_datagram(mac1, fab_mac, db_ip, web_ip, 40000, PORT, b"forged");
    let got = arrives(&web, web_ip, || {
        fabric
            .fabric
            .run_in(|| send_raw_frame("br0", &forged))
            .expect("send from the fabric")
    });
    assert!(
        !got,
        "web received db's address forged by another host of the fabric"
    );
    assert_eq!(dropped(), before + 1, "counted as source-not-from-node");
    let shown = monitor.wait_with_output().unwrap();
    let event: Value = serde_json::from_slice(&shown.stdout).unwrap_or_else(|e| {
        panic!(
            "monitor output ({e}): {}{}",
            String::from_utf8_lossy(&shown.stdout),
            String::from_utf8_lossy(&shown.stderr)
        )
    });
    assert_eq!(event["reason"], "source-not-from-node", "{event}");
    assert_eq!(event["hook"], "from-fabric", "{event}");
    assert_eq!(event["src_ip"], db_ip.to_string(), "{event}");

    // A pod of n1's own address from outside (even from n2): dropped.
    let local = udp_datagram(mac1, mac2, web_ip, web2_ip, 40000, PORT, b"local");
    let got = arrives(&web2, web2_ip, || {
        n2.ns
            .run_in(|| send_raw_frame("fab0", &local))
            .expect("send from n2")
    });
    assert!(!got, "web2 received web's address from the fabric");
    assert_eq!(dropped(), before + 2, "counted as source-not-from-node");

    // The reason, by name, where users look.
    let (code, out, err) = cli(&n1, &a1.socket, "policyctl", &["stats"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("source-not-from-node") && l.contains('2')),
        "policyctl stats: {out}"
    );

    // A restarted agent keeps its one attachment (the same pinned program).
    a1.kill9();
    a1.restart();
    assert_eq!(attached(), (Some(first), vec![first]), "after a restart");
    assert!(db.ns.ping(&web_ip.to_string(), 1), "db -> web after n1's restart");

    n1.del(&conf1, &web).ok();
    n1.del(&conf1, &web2).ok();
    n2.del(&conf2, &db).ok();
}

#[test]
fn the_agent_refuses_a_node_ip_no_interface_holds() {
    require_root!();
    if !tools_present("the_agent_refuses_a_node_ip_no_interface_holds", &[ETCD_BIN]) {
        return;
    }
    let fabric = Fabric::new(0);
    let n1 = Node::new("ctnoip");
    fabric.attach(&n1.ns, 0);
    let etcd = EtcdProcess::start_in(&fabric.fabric.path(), Fabric::fabric_ip());
    let url = etcd.url();
    let dir = tempfile::tempdir().unwrap();
    let out = AgentProcess::run_unchecked(
        &n1.ns,
        n1.pins.path(),
        dir.path(),
        &[
            "--runtime",
            "none",
            "--etcd",
            &url,
            "--node-ip",
            "10.0.0.99",
            "--cluster-cidr",
            "10.20.0.0/16",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--node-ip 10.0.0.99: no interface"), "{err}");
}
