//! The cluster store against a real etcd (Debian's 3.4, started here on
//! loopback): identity allocation latency, etcd requests per change (from
//! etcd's own gRPC counters), a change's way from one agent to another's
//! watcher, and N agents publishing E endpoints until every agent's
//! watcher has them all.
//!
//! `cargo bench -p ebpfcni-kvstore --bench etcd [-- AGENTS ENDPOINTS]`
//! (default 20 agents, 10,000 endpoints).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use ebpfcni_kvstore::{Event, Labels, NodeSpec, Session, Store, DEFAULT_PREFIX};
use ebpfcni_testutil::{median, quantile, EtcdProcess, ETCD_BIN};

fn labels(i: usize) -> Labels {
    Labels::from([("app".to_string(), format!("bench{i}"))])
}

fn spec(i: usize) -> NodeSpec {
    NodeSpec {
        name: format!("node{i}"),
        node_ip: IpAddr::V4(Ipv4Addr::new(10, 255, 0, i as u8 + 1)),
        pod_cidr: None,
        cluster_cidr: Some(("10.0.0.0/12".parse().unwrap(), 22)),
        ttl: 60,
    }
}

/// etcd's count of handled gRPC requests, by method (its /metrics).
fn requests(etcd: &EtcdProcess) -> BTreeMap<String, f64> {
    let addr = etcd.url().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(addr).expect("etcd metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{"))
    {
        let method = line
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(method.to_string()).or_default() += value;
    }
    out
}

/// Requests between two readings, as "N Method + ..." per `per` operations.
fn per_op(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, per: usize) -> String {
    let mut parts = Vec::new();
    let mut total = 0.0;
    for (method, n) in after {
        let d = n - before.get(method).copied().unwrap_or(0.0);
        if d > 0.0 && method != "LeaseKeepAlive" && method != "Watch" {
            parts.push(format!("{:.2} {method}", d / per as f64));
            total += d;
        }
    }
    format!("{:.2} ({})", total / per as f64, parts.join(" + "))
}

fn ms(samples: &mut [f64]) -> String {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "p50 {:.2} ms, p99 {:.2} ms",
        median(samples),
        quantile(samples, 0.99)
    )
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let agents = args.first().copied().unwrap_or(20);
    let endpoints = args.get(1).copied().unwrap_or(10_000);
    if !std::path::Path::new(ETCD_BIN).exists() {
        eprintln!("{ETCD_BIN} missing: apt-get install etcd-server");
        std::process::exit(1);
    }
    let etcd = EtcdProcess::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = [etcd.url()];
        let a = Store::connect(&url, DEFAULT_PREFIX).await.unwrap();
        let b = Store::connect(&url, DEFAULT_PREFIX).await.unwrap();
        let n1 = Session::start(&a, &spec(0), None).await.unwrap();
        let n2 = Session::start(&b, &spec(1), None).await.unwrap();
        let c1 = n1.record().await.pod_cidr;

        println!("## etcd 3.4 on loopback, {agents} agents, {endpoints} endpoints");
        // Identity allocation.
        let before = requests(&etcd);
        let mut new = Vec::new();
        for i in 0..200 {
            let t = Instant::now();
            n1.identity(&labels(i)).await.unwrap();
            new.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let after = requests(&etcd);
        println!("identity, new label set: {} ; etcd requests each: {}", ms(&mut new), per_op(&before, &after, 200));
        let before = requests(&etcd);
        let mut known = Vec::new();
        for i in 0..200 {
            let t = Instant::now();
            n2.identity(&labels(i)).await.unwrap();
            known.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let after = requests(&etcd);
        println!(
            "identity, set another node allocated: {} ; etcd requests each: {}",
            ms(&mut known),
            per_op(&before, &after, 200)
        );

        // An endpoint change, and its way to another agent's watcher.
        let mut watcher = b.watch();
        loop {
            if let Some(Event::Synced { .. }) = watcher.next().await {
                break;
            }
        }
        let host = |n: u32| IpAddr::V4(Ipv4Addr::from(u32::from(c1.network()) + 2 + n));
        let before = requests(&etcd);
        let (mut put, mut seen) = (Vec::new(), Vec::new());
        for n in 0..200 {
            let t = Instant::now();
            n1.publish_endpoint(host(n), 256).await.unwrap();
            put.push(t.elapsed().as_secs_f64() * 1e3);
            loop {
                if let Some(Event::EndpointUpsert(e)) = watcher.next().await {
                    if e.ip == host(n) {
                        break;
                    }
                }
            }
            seen.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let after = requests(&etcd);
        println!("endpoint publish (new address): {} ; etcd requests each: {}", ms(&mut put), per_op(&before, &after, 200));
        println!("  ... seen by another agent's watcher: {}", ms(&mut seen));
        let before = requests(&etcd);
        let mut update = Vec::new();
        for n in 0..200 {
            let t = Instant::now();
            n1.publish_endpoint(host(n), 257).await.unwrap();
            update.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let after = requests(&etcd);
        println!(
            "endpoint update (identity change): {} ; etcd requests each: {}",
            ms(&mut update),
            per_op(&before, &after, 200)
        );
        let before = requests(&etcd);
        let mut removal = Vec::new();
        for n in 0..200 {
            let t = Instant::now();
            n1.remove_endpoint(host(n)).await.unwrap();
            removal.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let after = requests(&etcd);
        println!(
            "endpoint removal: {} ; etcd requests each: {}",
            ms(&mut removal),
            per_op(&before, &after, 200)
        );
        drop(watcher);

        // N agents, E endpoints, every watcher converging.
        let rss0 = rss_kib();
        let mut stores = Vec::new();
        let mut sessions = Vec::new();
        let mut watchers = Vec::new();
        for i in 0..agents {
            let s = Store::connect(&url, DEFAULT_PREFIX).await.unwrap();
            sessions.push(Arc::new(Session::start(&s, &spec(i + 10), None).await.unwrap()));
            let mut w = s.watch();
            loop {
                if let Some(Event::Synced { .. }) = w.next().await {
                    break;
                }
            }
            watchers.push(w);
            stores.push(s);
        }
        let before = requests(&etcd);
        let t0 = Instant::now();
        let per_agent = endpoints / agents;
        let mut tasks = Vec::new();
        for (i, session) in sessions.iter().enumerate() {
            let session = session.clone();
            tasks.push(tokio::spawn(async move {
                let cidr = session.record().await.pod_cidr;
                let id = session.identity(&labels(i % 50)).await.unwrap();
                for n in 0..per_agent as u32 {
                    let ip = IpAddr::V4(Ipv4Addr::from(u32::from(cidr.network()) + 2 + n));
                    session.publish_endpoint(ip, id).await.unwrap();
                }
            }));
        }
        let total = per_agent * agents;
        let mut converge = Vec::new();
        for mut w in watchers {
            converge.push(tokio::spawn(async move {
                let mut have = 0;
                while have < total {
                    match w.next().await {
                        Some(Event::EndpointUpsert(_)) => have += 1,
                        Some(_) => {}
                        None => panic!("watcher stopped"),
                    }
                }
                (t0.elapsed(), w)
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let published = t0.elapsed();
        let mut times = Vec::new();
        let mut kept = Vec::new();
        for c in converge {
            let (t, w) = c.await.unwrap();
            times.push(t.as_secs_f64());
            kept.push(w);
        }
        let after = requests(&etcd);
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let rss1 = rss_kib();
        println!(
            "{total} endpoints from {agents} agents: all published in {:.2} s, every agent converged in {:.2} s (first {:.2} s); etcd requests per endpoint: {}",
            published.as_secs_f64(),
            times.last().unwrap(),
            times[0],
            per_op(&before, &after, total)
        );
        println!(
            "memory: {:.1} MiB for {agents} agents' connections, sessions and watchers holding {total} endpoints each ({:.1} MiB per agent)",
            (rss1.saturating_sub(rss0)) as f64 / 1024.0,
            (rss1.saturating_sub(rss0)) as f64 / 1024.0 / agents as f64
        );
        drop(kept);
        drop(stores);
    });
}
