//! The agent at scale: 10,000 endpoints in 1,000 label sets registered
//! through its API (a new label set against a known one), its memory, and
//! a kill -9 and restart with all of them (how long until the maps are
//! reconciled and it answers, and how many map writes that took).
//!
//! `cargo bench -p ebpfcni-agent --bench agent [-- ENDPOINTS]` (root).
//! The endpoints' host veths are ifb links in a throwaway node
//! namespace (the agent checks at start that each still exists).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ebpfcni_api::{EndpointRequest, Labels};
use ebpfcni_testutil::{median, quantile, AgentProcess, Netns, TestPinDir};

const LABEL_SETS: usize = 1000;
/// Endpoints of new label sets registered once the n others are there.
const LATE: usize = 100;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("agent bench needs root; skipped");
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let node = Netns::new("bench-agent");
    let pins = TestPinDir::new("bench_agent");
    let dir = tempfile::Builder::new()
        .prefix("ebpfcni-agent-bench-")
        .tempdir()
        .unwrap();

    // n ifb links (no traffic, just names and indexes) stand for the pods' host veths.
    let mut batch = String::new();
    for i in 0..n + LATE {
        batch.push_str(&format!("link add ebcb{i:06} type ifb\n"));
    }
    let mut ip = Command::new("ip")
        .args(["-n", node.name(), "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    ip.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
    assert!(ip.wait().unwrap().success(), "create {n} ifb links");
    let indexes = node.run_in(|| {
        (0..n + LATE)
            .map(|i| nix::net::if_::if_nametoindex(format!("ebcb{i:06}").as_str()).unwrap())
            .collect::<Vec<u32>>()
    });

    let mut agent = AgentProcess::start(
        &node,
        pins.path(),
        dir.path(),
        &["--pod-cidr", "10.20.0.0/16", "--runtime", "none"],
    );
    let client = agent.client();
    let (mut new_set, mut known_set, mut late_set) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    for (i, &host_ifindex) in indexes.iter().enumerate() {
        let request = EndpointRequest {
            container_id: format!("bench{i}"),
            ifname: "eth0".into(),
            network: "bench".into(),
            netns: String::new(),
            host_veth: format!("ebcb{i:06}"),
            host_ifindex,
            ips: Vec::new(),
            labels: Labels::from([(
                "app".to_string(),
                if i < n {
                    format!("app{}", i % LABEL_SETS)
                } else {
                    format!("late{i}")
                },
            )]),
            pod_namespace: None,
            pod_name: Some(format!("pod{i}")),
        };
        let t = Instant::now();
        client.create_endpoint(&request).expect("register");
        let took = t.elapsed().as_secs_f64() * 1e3;
        if i == n {
            println!(
                "{n} endpoints in {LABEL_SETS} label sets registered through the API in {:.2} s",
                start.elapsed().as_secs_f64()
            );
        }
        match i {
            _ if i >= n => late_set.push(took),
            _ if i < LABEL_SETS => new_set.push(took),
            _ => known_set.push(took),
        }
    }
    let show = |label: &str, v: &[f64]| {
        println!(
            "  {label:42} p50 {:.3} ms  p99 {:.3} ms  (request, store commit and map writes; {} requests)",
            median(v),
            quantile(v, 0.99),
            v.len()
        )
    };
    show("a new label set (a new identity)", &new_set);
    show("a known label set (no allocation)", &known_set);
    show(&format!("a new label set with {n} endpoints there"), &late_set);
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let pid = agent.pid().unwrap();
    println!("  agent memory with {n} endpoints: VmRSS {} kB", rss(pid));
    let store = std::fs::metadata(agent.state_dir.join("agent.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("  store on disk: {} kB", store / 1024);

    // kill -9 and restart: time to ready, and what it wrote.
    let mut ready = Vec::new();
    for _ in 0..3 {
        agent.kill9();
        let t = Instant::now();
        agent.restart();
        ready.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let log = agent.log_text();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains(" endpoints, "))
        .unwrap_or("")
        .to_string();
    println!(
        "  kill -9, restart: ready (reconciled, serving) after p50 {:.0} ms of 3 ({:?} ms); its log: {}",
        median(&ready),
        ready.iter().map(|r| *r as u64).collect::<Vec<_>>(),
        last.split("] ").last().unwrap_or(&last)
    );
    println!(
        "  agent memory after the restart: VmRSS {} kB",
        rss(agent.pid().unwrap())
    );
    drop(agent);
    std::thread::sleep(Duration::from_millis(10));
}
