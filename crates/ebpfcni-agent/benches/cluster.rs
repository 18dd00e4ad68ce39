//! Two agents (a third for the policy) with `--etcd` on node namespaces of a fabric (etcd on the
//! fabric's bridge): how long after a pod's ADD returns on n2 its address
//! has its identity in n1's endpoint map, and after its DEL returns on n2
//! until it has none on n1. Then a policy applied on one node, enforced on
//! all: 100 successive changes of a NetworkPolicy (its port) applied
//! through n1's API, each timed from n1's POST returning until the pinned
//! label maps of n2 and n3 (a third agent) hold the new rule and no longer
//! the old one.
//!
//! `cargo bench -p ebpfcni-agent --bench cluster [-- PODS]` (root; default 100).

use std::time::{Duration, Instant};

use ebpfcni::{LabelKind, Maps, Protocol, Selector, Stored};
use ebpfcni_api::{EndpointRequest, Labels};
use ebpfcni_testutil::{median, quantile, AgentProcess, EtcdProcess, Fabric, Netns, TestPinDir, ETCD_BIN};

/// Policy changes timed.
const CHANGES: u16 = 100;

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

/// A pod named `id` with `app=APP` on `node` (a host veth of its own, its
/// peer left in the node: the agent only needs the host side).
fn pod(node: &Netns, id: &str, app: &str) -> EndpointRequest {
    let veth = format!("h{id}");
    node.ip(&[
        "link",
        "add",
        &veth,
        "type",
        "veth",
        "peer",
        "name",
        &format!("p{id}"),
    ]);
    EndpointRequest {
        container_id: id.to_string(),
        ifname: "eth0".into(),
        network: "ebpfcni".into(),
        netns: "/run/netns/none".into(),
        host_ifindex: node.ifindex(&veth),
        host_veth: veth,
        ips: Vec::new(),
        labels: Labels::from([("app".to_string(), app.to_string())]),
        pod_namespace: None,
        pod_name: None,
    }
}

fn backend_from_frontend(port: u16) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: backend-from-frontend
  namespace: default
spec:
  podSelector: {{matchLabels: {{app: backend}}}}
  ingress:
  - from:
    - podSelector: {{matchLabels: {{app: frontend}}}}
    ports:
    - {{port: {port}, protocol: TCP}}
"
    )
}

/// Whether `maps` hold backend's ingress rule from frontend for TCP `port`.
fn has_port(maps: &Maps, backend: u32, frontend: u32, port: u16) -> bool {
    maps.labels.rules().unwrap().iter().any(|r| {
        r.subject == backend
            && r.peer == frontend
            && r.kind == LabelKind::IngressAllow
            && r.selector
                == Selector::Ports {
                    protocol: Protocol::TCP,
                    first: port,
                    last: port,
                }
    })
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
    let fab = Fabric::new(3);
    let etcd = EtcdProcess::start_in(&fab.fabric.path(), Fabric::fabric_ip());
    let url = etcd.url();
    let ips = [0, 1, 2].map(|i| Fabric::node_ip(i).to_string());
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
        TestPinDir::new("bench_cluster3"),
    ];
    let dirs = [0, 1, 2].map(|_| tempfile::tempdir().unwrap());
    let a1 = AgentProcess::start(&fab.nodes[0], pins[0].path(), dirs[0].path(), &flags(0));
    let a2 = AgentProcess::start(&fab.nodes[1], pins[1].path(), dirs[1].path(), &flags(1));
    let maps1 = Maps::open_or_create(pins[0].path()).unwrap();
    let maps2 = Maps::open_or_create(pins[1].path()).unwrap();
    // A third node, for the policy: it has no pod of the two.
    let _a3 = AgentProcess::start(&fab.nodes[2], pins[2].path(), dirs[2].path(), &flags(2));
    let maps3 = Maps::open_or_create(pins[2].path()).unwrap();
    let client = a2.client();

    let (mut seen_new, mut seen_known, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pods {
        // Half the pods bring a new label set, half a known one.
        let app = if i % 2 == 0 {
            format!("new{i}")
        } else {
            "known".to_string()
        };
        let request = pod(&fab.nodes[1], &format!("pod{i}"), &app);
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
    let show = |name: &str, s: &[f64], unit: &str| {
        println!(
            "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} {unit})",
            median(s),
            quantile(s, 0.99),
            s.iter().cloned().fold(0.0, f64::max),
            s.len()
        )
    };
    println!("## a pod on n2 in n1's endpoint map (agents on one etcd 3.4 over a bridge)");
    show("after ADD returns on n2 (new label set)", &seen_new, "pods");
    show("after ADD returns on n2 (known label set)", &seen_known, "pods");
    show("after DEL returns on n2, gone from n1", &gone, "pods");

    // A frontend on n1, a backend on n2; the policy applied on n1 only.
    let fe = a1
        .client()
        .create_endpoint(&pod(&fab.nodes[0], "fe", "frontend"))
        .unwrap();
    let be = client
        .create_endpoint(&pod(&fab.nodes[1], "be", "backend"))
        .unwrap();
    let t0 = Instant::now();
    until(t0, || {
        [&maps2, &maps3].iter().all(|maps| {
            let i = maps.labels.isolations().unwrap();
            entry(maps, fe.ips[0]) == Some(fe.identity)
                && i.contains_key(&fe.identity)
                && i.contains_key(&be.identity)
        })
    });
    let (mut posts, mut enforced, mut end_to_end) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=CHANGES {
        let port = 9000 + i;
        let holds = |maps: &Maps| {
            has_port(maps, be.identity, fe.identity, port)
                && (i == 0 || !has_port(maps, be.identity, fe.identity, port - 1))
        };
        assert!(!has_port(&maps2, be.identity, fe.identity, port));
        assert!(!has_port(&maps3, be.identity, fe.identity, port));
        let sent = Instant::now();
        a1.client().apply_policies(&backend_from_frontend(port)).unwrap();
        let t0 = Instant::now();
        let ms = until(t0, || holds(&maps2) && holds(&maps3));
        // The first applies a new policy; the others change it.
        if i > 0 {
            posts.push((t0 - sent).as_secs_f64() * 1e3);
            enforced.push(ms);
            end_to_end.push(sent.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!("## a policy applied on n1, enforced on n2 and n3 (their pinned label maps)");
    show(
        "n1's POST /v1/policies (returns once n1 enforces it)",
        &posts,
        "changes",
    );
    show(
        "after n1's POST returns, until n2's and n3's maps hold the new port (old one gone)",
        &enforced,
        "changes",
    );
    show(
        "from n1's POST sent until n2's and n3's maps hold it",
        &end_to_end,
        "changes",
    );
}
