//! Local delivery with real pods made by the plugin: a packet between two
//! pods of the node goes from the sender's from-pod hook straight into the
//! receiving pod (bpf_redirect_peer), past the node's forwarding, with
//! every verdict as before; "localDelivery": "stack" keeps the node's
//! forwarding; records live as long as their pods; and what reaches a
//! to-pod hook is judged there, whatever put it there.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use common::{host_veth, pod_ip, Node, Pod};
use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{Identity, LocalDelivery, LocalDeliveryMap, Maps, PolicyRule, Protocol, Rule, Selector};
use ebpfcni_testutil::frames::parse_mac;
use ebpfcni_testutil::require_root;
use libbpf_rs::libbpf_sys;
use serde_json::Value;

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// Two pods of one node, A (1001) and B (1002), made with `conf`, and no rule.
struct Pods {
    node: Node,
    conf: Value,
    a: Pod,
    b: Pod,
    ra: Value,
    rb: Value,
    ip_a: Ipv4Addr,
    ip_b: Ipv4Addr,
    maps: Maps,
}

impl Pods {
    fn new(tag: &str, local_delivery: Option<&str>) -> Self {
        let node = Node::new(tag);
        let mut conf = node.config("1.1.0");
        if let Some(mode) = local_delivery {
            conf["localDelivery"] = mode.into();
        }
        let (a, b) = (Pod::new(&format!("{tag}-a")), Pod::new(&format!("{tag}-b")));
        let ra = node.add(&conf, &a).ok();
        let rb = node.add(&conf, &b).ok();
        let (ip_a, ip_b) = (pod_ip(&ra).parse().unwrap(), pod_ip(&rb).parse().unwrap());
        let maps = Maps::open(node.pins.path()).unwrap();
        maps.endpoints
            .upsert_batch(&[(ip_a, id(1001)), (ip_b, id(1002))])
            .unwrap();
        Self {
            node,
            conf,
            a,
            b,
            ra,
            rb,
            ip_a,
            ip_b,
            maps,
        }
    }

    /// The node's forwarding on or off (in the node's namespace only).
    fn forwarding(&self, on: bool) {
        let value = format!("net.ipv4.ip_forward={}", u8::from(on));
        let status = self
            .node
            .ns
            .command("sysctl")
            .args(["-qw", &value])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn both_ways(&self) {
        self.maps
            .policy
            .allow(PolicyRule::new(id(1001), id(1002)))
            .unwrap();
        self.maps
            .policy
            .allow(PolicyRule::new(id(1002), id(1001)))
            .unwrap();
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for pod in [&self.a, &self.b] {
            let _ = self.node.del(&self.conf, pod);
        }
    }
}

fn mac(result: &Value, index: usize) -> [u8; 6] {
    parse_mac(result["interfaces"][index]["mac"].as_str().expect("mac"))
}

/// Whether `ping -t TTL` from `from` to `to` gets an answer; its output.
fn ping(from: &Pod, to: Ipv4Addr, ttl: u8) -> (bool, String) {
    let out = from
        .ns
        .command("ping")
        .args(["-c", "1", "-W", "1", "-t", &ttl.to_string()])
        .arg(to.to_string())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A TCP exchange from `from` to `to`:`port` (a listener in `server`):
/// the bytes echoed, or the error.
fn tcp_echo(from: &Pod, server: &Pod, to: Ipv4Addr, port: u16) -> std::io::Result<Vec<u8>> {
    let listener = server
        .ns
        .run_in(|| TcpListener::bind((to, port)))
        .expect("listen");
    listener.set_nonblocking(true).unwrap();
    std::thread::scope(|s| {
        let echo = s.spawn(move || {
            // Gives up when nothing connects within the client's timeout.
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
                        let mut buf = [0u8; 5];
                        if conn.read_exact(&mut buf).is_ok() {
                            let _ = conn.write_all(&buf);
                        }
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let got = from.ns.run_in(|| {
            let mut conn =
                TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_millis(1500))?;
            conn.set_read_timeout(Some(Duration::from_millis(1500)))?;
            conn.write_all(b"hello")?;
            let mut buf = vec![0u8; 5];
            conn.read_exact(&mut buf)?;
            Ok(buf)
        });
        let _ = echo.join();
        got
    })
}

/// ADD records where each pod lives: its host veth, its eth0's MAC and the
/// host veth's, redirect as the network says (the default, as here); with forwarding off on the node, the
/// pods still talk (ping, TCP): their packets never go through the node's
/// forwarding. A TTL that runs out gets its time exceeded from the node;
/// a denied packet is dropped and counted; DEL removes the record.
#[test]
fn pods_of_a_node_talk_by_local_delivery() {
    require_root!();
    let pods = Pods::new("ldeliver", None);
    let local = LocalDeliveryMap::open(pods.node.pins.path())
        .unwrap()
        .expect("pinned");
    for (ip, result) in [(pods.ip_a, &pods.ra), (pods.ip_b, &pods.rb)] {
        let record = local.get(ip).unwrap().expect("a local record");
        assert_eq!(
            record,
            LocalDelivery {
                ifindex: pods.node.ns.ifindex(&host_veth(result)),
                pod_mac: mac(result, 1),
                host_mac: mac(result, 0),
                redirect: true,
            },
            "{ip}"
        );
    }
    pods.both_ways();
    pods.forwarding(false);
    assert!(
        ping(&pods.a, pods.ip_b, 64).0,
        "A -> B with the node's forwarding off"
    );
    assert!(
        ping(&pods.b, pods.ip_a, 64).0,
        "B -> A with the node's forwarding off"
    );
    assert_eq!(tcp_echo(&pods.a, &pods.b, pods.ip_b, 8080).unwrap(), b"hello");

    // The TTL seen in B is one less than A sent, as routing would make it.
    let (ok, out) = ping(&pods.a, pods.ip_b, 64);
    assert!(ok && out.contains("ttl=63"), "{out}");

    // TTL 1: left to the node, which answers with time exceeded (from
    // the pods' gateway, which policy lets talk to A).
    pods.forwarding(true);
    let gateway: Ipv4Addr = pods.ra["ips"][0]["gateway"].as_str().unwrap().parse().unwrap();
    pods.maps.endpoints.upsert(gateway, id(1003)).unwrap();
    pods.maps
        .policy
        .allow(PolicyRule::new(id(1003), id(1001)))
        .unwrap();
    let (ok, out) = ping(&pods.a, pods.ip_b, 1);
    assert!(!ok && out.contains("Time to live exceeded"), "{out}");

    // Denied: dropped at A's from-pod hook and counted, not delivered.
    pods.maps
        .policy
        .revoke(PolicyRule::new(id(1001), id(1002)))
        .unwrap();
    let before = pods.maps.drops.get(Reason::EBPFCNI_DROP_NO_POLICY).unwrap();
    assert!(!ping(&pods.a, pods.ip_b, 64).0, "a denied ping passed");
    assert_eq!(
        pods.maps.drops.get(Reason::EBPFCNI_DROP_NO_POLICY).unwrap(),
        before + 1
    );

    let index_b = local.get(pods.ip_b).unwrap().unwrap().ifindex;
    pods.node.del(&pods.conf, &pods.b).ok();
    assert_eq!(local.get(pods.ip_b).unwrap(), None, "DEL left B's record");
    assert!(local.list().unwrap().iter().all(|(_, r)| r.ifindex != index_b));
}

/// Stateful rules as before: A opens TCP 8080 on B, the answers pass as
/// replies (delivered into A), B cannot open anything to A.
#[test]
fn stateful_replies_are_delivered() {
    require_root!();
    let pods = Pods::new("ldstate", Some("redirect"));
    pods.maps
        .allow(&[Rule {
            pair: PolicyRule::new(id(1001), id(1002)),
            selector: Selector::Ports {
                protocol: Protocol::TCP,
                first: 8080,
                last: 8080,
            },
            stateful: true,
        }])
        .unwrap();
    pods.forwarding(false);
    assert_eq!(tcp_echo(&pods.a, &pods.b, pods.ip_b, 8080).unwrap(), b"hello");
    let before = pods.maps.drops.all().unwrap();
    assert!(
        tcp_echo(&pods.b, &pods.a, pods.ip_a, 8080).is_err(),
        "B opened a connection to A"
    );
    assert_ne!(pods.maps.drops.all().unwrap(), before, "B's SYN was not counted");
    assert!(
        tcp_echo(&pods.a, &pods.b, pods.ip_b, 8081).is_err(),
        "no rule for 8081"
    );
}

/// "localDelivery": "stack": the record says so, and the pods' packets go
/// through the node's forwarding (off: they do not arrive; on: they do).
#[test]
fn a_stack_network_keeps_the_nodes_forwarding() {
    require_root!();
    let pods = Pods::new("ldstack", Some("stack"));
    let local = LocalDeliveryMap::open(pods.node.pins.path())
        .unwrap()
        .expect("pinned");
    assert!(!local.get(pods.ip_b).unwrap().expect("a record").redirect);
    pods.both_ways();
    pods.forwarding(false);
    assert!(
        !ping(&pods.a, pods.ip_b, 64).0,
        "delivered past the node's forwarding"
    );
    pods.forwarding(true);
    assert!(ping(&pods.a, pods.ip_b, 64).0);
    assert_eq!(tcp_echo(&pods.a, &pods.b, pods.ip_b, 8080).unwrap(), b"hello");
    // Both hooks judge on a stack network: to-pod drops what B may not get.
    pods.maps
        .policy
        .revoke(PolicyRule::new(id(1001), id(1002)))
        .unwrap();
    let before = pods.maps.drops.get(Reason::EBPFCNI_DROP_NO_POLICY).unwrap();
    assert!(!ping(&pods.a, pods.ip_b, 64).0);
    assert_eq!(
        pods.maps.drops.get(Reason::EBPFCNI_DROP_NO_POLICY).unwrap(),
        before + 1
    );
}

/// GC removes the local record of a host veth that is gone (deleted by
/// hand: its DEL never ran), which would otherwise deliver into nothing.
#[test]
fn gc_removes_local_records_of_veths_that_are_gone() {
    require_root!();
    let pods = Pods::new("ldgc", Some("redirect"));
    let local = LocalDeliveryMap::open(pods.node.pins.path())
        .unwrap()
        .expect("pinned");
    pods.node.ns.ip(&["link", "del", &host_veth(&pods.rb)]);
    assert!(local.get(pods.ip_b).unwrap().is_some());
    let mut gc = pods.conf.clone();
    gc["cni.dev/valid-attachments"] = serde_json::json!([
        { "containerID": pods.a.id, "ifname": "eth0" },
        { "containerID": pods.b.id, "ifname": "eth0" },
    ]);
    pods.node
        .exec(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", common::CNI_PATH)],
            gc.to_string().as_bytes(),
        )
        .ok();
    assert_eq!(
        local.get(pods.ip_b).unwrap(),
        None,
        "GC left the gone veth's record"
    );
    assert!(
        local.get(pods.ip_a).unwrap().is_some(),
        "GC removed a live pod's record"
    );
}

/// Another program ahead of ours on A's host veth (tcx, before our clsact
/// filter) redirects A's UDP to B's host veth: our from-pod hook never sees
/// it, and B's to-pod hook judges it (dropped without a rule, counted),
/// even right after the same flow passed from-pod.
#[test]
fn what_another_program_redirects_is_judged_at_to_pod() {
    require_root!();
    let pods = Pods::new("ldredir", Some("redirect"));
    pods.both_ways();
    // The flow passes from-pod first (and is delivered).
    let send = |pods: &Pods| {
        pods.a.ns.run_in(|| {
            let socket = UdpSocket::bind((pods.ip_a, 40000)).unwrap();
            socket.send_to(b"x", (pods.ip_b, 9)).unwrap();
        })
    };
    send(&pods);
    let b_veth = pods.node.ns.ifindex(&host_veth(&pods.rb));
    let a_veth = pods.node.ns.ifindex(&host_veth(&pods.ra));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("redirect_target.h"),
        format!("#define TARGET_IFINDEX {b_veth}\n"),
    )
    .unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpf/redirector.bpf.c");
    let bytes = ebpfcni_testutil::bpf::compile(&source, &[dir.path()]);
    let open = libbpf_rs::ObjectBuilder::default()
        .open_memory(&bytes)
        .expect("open redirector");
    let object = open.load().expect("load redirector");
    let program = object.progs().next().expect("the redirector");
    let fd = program.as_fd().as_raw_fd();
    pods.node.ns.run_in(|| {
        let opts = libbpf_sys::bpf_prog_attach_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_prog_attach_opts>() as _,
            ..Default::default()
        };
        // SAFETY: opts is sized; the program's fd is open for the call.
        let rc = unsafe {
            libbpf_sys::bpf_prog_attach_opts(fd, a_veth as i32, libbpf_sys::BPF_TCX_INGRESS, &opts)
        };
        assert_eq!(
            rc,
            0,
            "attach the redirector: {}",
            std::io::Error::from_raw_os_error(-rc)
        );
    });
    pods.maps
        .policy
        .revoke(PolicyRule::new(id(1001), id(1002)))
        .unwrap();
    let before = pods.maps.drops.get(Reason::EBPFCNI_DROP_NO_POLICY).unwrap();
    for _ in 0..5 {
        send(&pods);
    }
    assert_eq!(
        pods.maps.drops.get(Reason::EBPFCNI_DROP_NO_POLICY).unwrap(),
        before + 5,
        "B's to-pod hook did not judge what the redirector sent"
    );
    drop(object);
}

/// An ADD that fails after it recorded where its pod lives (here: static
/// IPAM hands it pod A's address, and the /32 route to it exists) takes the
/// record back: no record is left naming its veth, which is gone.
#[test]
fn a_failed_add_leaves_no_record_of_its_veth() {
    require_root!();
    let pods = Pods::new("ldroll", Some("redirect"));
    let c = Pod::new("ldroll-c");
    let gateway = pods.ra["ips"][0]["gateway"].as_str().unwrap().to_string();
    let conf = pods
        .node
        .static_config("1.1.0", &format!("{}/24", pods.ip_a), Some(&gateway));
    let outcome = pods.node.add(&conf, &c);
    assert!(!outcome.success, "ADD with A's address succeeded: {outcome:#?}");
    let live: Vec<u32> = [&pods.ra, &pods.rb]
        .iter()
        .map(|r| pods.node.ns.ifindex(&host_veth(r)))
        .collect();
    let local = LocalDeliveryMap::open(pods.node.pins.path())
        .unwrap()
        .expect("pinned");
    for (addr, record) in local.list().unwrap() {
        assert!(
            live.contains(&record.ifindex),
            "{addr} left delivered to ifindex {}, not a live host veth",
            record.ifindex
        );
    }
    assert!(local.get(pods.ip_b).unwrap().is_some(), "B's record went");
}
