//! Two agents with `--etcd` on node namespaces of a fabric (etcd on the
//! fabric's bridge): how long after a pod's ADD returns on n2 its address
//! has its identity in n1's endpoint map, and after its DEL returns on n2
//! until it has none on n1.
//!
//! `cargo bench -p ebpfcni-agent --bench cluster [-- PODS]` (root; default 100).

use std::time::{Duration, Instant};

use ebpfcni::{Maps, Stored};
use ebpfcni_api::{EndpointRequest, Labels};
use ebpfcni_testutil::{median, quantile, AgentProcess, EtcdProcess, Fabric, TestPinDir, ETCD_BIN};

fn entry(maps: &Maps, ip: std::net::Ipv4Addr) -> Option<u32> {
    match maps.endpoints.get(ip).unwrap() {
        Some(Stored::Valid(id)) => Some(id.get()),
        _ => None,
    }
}

/// Polls (every 100 µs, at most 10 s) until `done`; the time it took.
fn until(t0: Instant, done: impl Fn() -> bool) -> f64 {
    while !done() {
        assert!(t0.elapsed() < Duration::from_secs(10), "not within 10 s");
        std::thread::sleep(Duration::from_micros(100));
    }
    t0.elapsed().as_secs_f64() * 1e3
}

fn main() {
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new(ETCD_BIN).exists() {
        eprintln!("cluster bench needs root and {ETCD_BIN}; skipped");
        return;
    }
    let pods: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let fab = Fabric::new(2);
    let etcd = EtcdProcess::start_in(&fab.fabric.path(), Fabric::fabric_ip());
    let url = etcd.url();
    let ips = [Fabric::node_ip(0).to_string(), Fabric::node_ip(1).to_string()];
    let flags = |i: usize| {
        vec![
            "--runtime",
            "none",
            "--etcd",
            &url,
            "--node-ip",
            &ips[i],
            "--cluster-cidr",
            "10.20.0.0/16",
        ]
    };
    let pins = [
        TestPinDir::new("bench_cluster1"),
        TestPinDir::new("bench_cluster2"),
    ];
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let _a1 = AgentProcess::start(&fab.nodes[0], pins[0].path(), dirs[0].path(), &flags(0));
    let a2 = AgentProcess::start(&fab.nodes[1], pins[1].path(), dirs[1].path(), &flags(1));
    let maps1 = Maps::open_or_create(pins[0].path()).unwrap();
    let client = a2.client();

    let (mut seen_new, mut seen_known, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pods {
        let veth = format!("hb{i}");
        fab.nodes[1].ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            &format!("pb{i}"),
        ]);
        // Half the pods bring a new label set, half a known one.
        let app = if i % 2 == 0 {
            format!("new{i}")
        } else {
            "known".to_string()
        };
        let request = EndpointRequest {
            container_id: format!("pod{i}"),
            ifname: "eth0".into(),
            network: "ebpfcni".into(),
            netns: "/run/netns/none".into(),
            host_veth: veth.clone(),
            host_ifindex: fab.nodes[1].ifindex(&veth),
            ips: Vec::new(),
            labels: Labels::from([("app".to_string(), app)]),
            pod_namespace: None,
            pod_name: None,
        };
        let endpoint = client.create_endpoint(&request).unwrap();
        let t0 = Instant::now();
        let ip = endpoint.ips[0];
        let ms = until(t0, || entry(&maps1, ip) == Some(endpoint.identity));
        if i % 2 == 0 {
            &mut seen_new
        } else {
            &mut seen_known
        }
        .push(ms);
        client.delete_endpoint(&format!("pod{i}"), "eth0").unwrap();
        let t0 = Instant::now();
        gone.push(until(t0, || entry(&maps1, ip).is_none()));
    }
    let show = |name: &str, s: &[f64]| {
        println!(
            "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} pods)",
            median(s),
            quantile(s, 0.99),
            s.iter().cloned().fold(0.0, f64::max),
            s.len()
        )
    };
    println!("## a pod on n2 in n1's endpoint map (agents on one etcd 3.4 over a bridge)");
    show("after ADD returns on n2 (new label set)", &seen_new);
    show("after ADD returns on n2 (known label set)", &seen_known);
    show("after DEL returns on n2, gone from n1", &gone);
}
