//! A new pod on n2 reachable from an allowed pod on n1: two nodes
//! (namespaces on a bridge of their own), an agent on each with `--etcd`
//! (etcd on the bridge), pods added through the real plugin; a
//! NetworkPolicy applied on n1 lets app=frontend reach app=backend on TCP
//! 8080. Each round adds a backend pod on n2 (its listener bound before the
//! ADD) and times, from the plugin's ADD returning, until the frontend on
//! n1 gets a TCP connection through (connects of at most 10 ms, retried);
//! then deletes it. At the end, a pod of n1 the policy does not allow is
//! checked to be refused (the figure is under policy).
//!
//! `cargo bench -p ebpfcni-cni --bench cluster [-- ROUNDS]` (root; default 100).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{pod_ip, Node, Pod};
use ebpfcni_testutil::{median, quantile, AgentProcess, EtcdProcess, Fabric, ETCD_BIN};
use serde_json::{json, Value};

const BACKEND_FROM_FRONTEND: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: backend-from-frontend
  namespace: default
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: frontend}}
    ports:
    - {port: 8080, protocol: TCP}
";

fn agent_config(node: &Node, agent: &AgentProcess, app: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": node.network,
        "type": "ebpfcni",
        "pinDir": node.pins.path(),
        "agent": agent.socket,
        "args": { "cni": { "labels": [{ "key": "app", "value": app }] } },
    })
}

fn start_agent(node: &Node, dir: &std::path::Path, url: &str, node_ip: &str) -> AgentProcess {
    let flags = [
        "--runtime",
        "none",
        "--etcd",
        url,
        "--node-ip",
        node_ip,
        "--cluster-cidr",
        "10.20.0.0/16",
    ];
    AgentProcess::start(&node.ns, node.pins.path(), dir, &flags)
}

fn connects(from: &Pod, to: SocketAddr, timeout: Duration) -> bool {
    from.ns
        .run_in(|| TcpStream::connect_timeout(&to, timeout))
        .is_ok()
}

fn main() {
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new(ETCD_BIN).exists() {
        eprintln!("cluster bench needs root and {ETCD_BIN}; skipped");
        return;
    }
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let fabric = Fabric::new(0);
    let (n1, n2) = (Node::new("bcr1"), Node::new("bcr2"));
    fabric.attach(&n1.ns, 0);
    fabric.attach(&n2.ns, 1);
    let etcd = EtcdProcess::start_in(&fabric.fabric.path(), Fabric::fabric_ip());
    let url = etcd.url();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a1 = start_agent(&n1, d1.path(), &url, "10.0.0.11");
    let a2 = start_agent(&n2, d2.path(), &url, "10.0.0.12");
    let (frontend, other) = (Pod::new("bcrfe"), Pod::new("bcrot"));
    let (conf_fe, conf_other, conf_be) = (
        agent_config(&n1, &a1, "frontend"),
        agent_config(&n1, &a1, "other"),
        agent_config(&n2, &a2, "backend"),
    );
    n1.add(&conf_fe, &frontend).ok();
    n1.add(&conf_other, &other).ok();
    a1.client().apply_policies(BACKEND_FROM_FRONTEND).unwrap();

    let (mut reach, mut retried) = (Vec::new(), Vec::new());
    let mut last = None;
    for i in 0..rounds {
        let backend = Pod::new(&format!("bcrbe{i}"));
        // Listening on every address of the pod before it has one.
        let listener = backend
            .ns
            .run_in(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080)))
            .expect("listen in the backend pod");
        let result = n2.add(&conf_be, &backend).ok();
        let t0 = Instant::now();
        let to = SocketAddr::from((pod_ip(&result).parse::<Ipv4Addr>().unwrap(), 8080));
        let mut tries = 0;
        while !connects(&frontend, to, Duration::from_millis(10)) {
            tries += 1;
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{to} not reached within 10 s"
            );
        }
        reach.push(t0.elapsed().as_secs_f64() * 1e3);
        if tries > 0 {
            retried.push((i, tries));
        }
        if i + 1 == rounds {
            // What dropped the first connects, before the refused one.
            for (name, node) in [("n1", &n1), ("n2", &n2)] {
                let maps = ebpfcni::Maps::open(node.pins.path()).unwrap();
                let drops: Vec<_> = maps
                    .drops
                    .all()
                    .unwrap()
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .collect();
                println!("{name}'s drop counters over the rounds: {drops:?}");
            }
            // The policy holds: a pod it does not allow is refused.
            assert!(
                !connects(&other, to, Duration::from_millis(600)),
                "other -> backend connected: no policy in force"
            );
            last = Some((backend, listener));
        } else {
            drop(listener);
            n2.del(&conf_be, &backend).ok();
        }
    }
    if let Some((backend, _listener)) = last {
        n2.del(&conf_be, &backend).ok();
    }
    n1.del(&conf_fe, &frontend).ok();
    n1.del(&conf_other, &other).ok();
    println!("## a new pod on n2 reachable from an allowed pod on n1 (TCP connect, under a NetworkPolicy)");
    println!(
        "after ADD returns on n2: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} pods)",
        median(&reach),
        quantile(&reach, 0.99),
        reach.iter().cloned().fold(0.0, f64::max),
        reach.len()
    );
    println!("rounds whose first connect failed (round, failed connects): {retried:?}");
    drop((a1, a2, etcd));
}
