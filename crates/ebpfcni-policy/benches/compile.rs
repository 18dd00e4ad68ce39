//! The compiler at scale (no root, no kernel): 1,000 policies, 10,000
//! endpoints in 1,000 label sets. Prints the full compile time, a new label
//! set's incremental cost, a known label set's (zero changes), a policy
//! edit's, and the memory the compiled state holds (a counting allocator).
//!
//! Run: `cargo bench -p ebpfcni-policy --bench compile`

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use ebpfcni_policy::compile::{Compiler, IdentityInfo};
use ebpfcni_policy::document::{parse, ParseOptions};
use ebpfcni_policy::model::NamedPorts;
use ebpfcni_policy::{Labels, POD_NAMESPACE_LABEL};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const NAMESPACES: usize = 10;
const APPS: usize = 100; // per namespace: 1,000 label sets
const ENDPOINTS_PER_SET: usize = 10; // 10,000 endpoints

fn label_set(ns: usize, app: usize) -> Labels {
    [
        ("app".to_string(), format!("app{app}")),
        (POD_NAMESPACE_LABEL.to_string(), format!("ns{ns}")),
    ]
    .into_iter()
    .collect()
}

/// Policy i: in namespace i / 100, for app i % 100: ingress from the next two
/// apps on 8080, from app+3 of namespaces labelled env=prod on 80-90;
/// egress to the next app on 5432 and to 10.0.0.0/8 (except 10.1.0.0/16) on 443.
fn policies_yaml() -> String {
    let mut s = String::new();
    for i in 0..NAMESPACES * APPS {
        let (ns, k) = (i / APPS, i % APPS);
        let (a1, a2, a3) = ((k + 1) % APPS, (k + 2) % APPS, (k + 3) % APPS);
        write!(
            s,
            "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p{i}, namespace: ns{ns}}}
spec:
  podSelector: {{matchLabels: {{app: app{k}}}}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {{matchExpressions: [{{key: app, operator: In, values: [app{a1}, app{a2}]}}]}}
    ports: [{{port: 8080}}]
  - from:
    - namespaceSelector: {{matchLabels: {{env: prod}}}}
      podSelector: {{matchLabels: {{app: app{a3}}}}}
    ports: [{{port: 80, endPort: 90}}]
  egress:
  - to: [{{podSelector: {{matchLabels: {{app: app{a1}}}}}}}]
    ports: [{{port: 5432}}]
  - to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}}}]
    ports: [{{port: 443}}]
"
        )
        .unwrap();
    }
    s
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let yaml = policies_yaml();
    let t = Instant::now();
    let docs = parse(&yaml, &ParseOptions::default()).expect("policies parse");
    println!(
        "parse {} policies ({} KiB of YAML): {}",
        docs.policies.len(),
        yaml.len() / 1024,
        ms(t.elapsed())
    );

    let base = LIVE.load(Ordering::Relaxed);
    let mut c = Compiler::new(false);
    for ns in (0..NAMESPACES).step_by(2) {
        let labels: Labels = [("env".to_string(), "prod".to_string())].into_iter().collect();
        c.set_namespace(&format!("ns{ns}"), labels);
    }
    // 10,000 endpoints in 1,000 label sets: the agent hands the compiler a
    // label set once; the other 9 endpoints of a set are known label sets.
    let mut id = 256;
    let t = Instant::now();
    let mut known_changes = 0;
    for ns in 0..NAMESPACES {
        for app in 0..APPS {
            for n in 0..ENDPOINTS_PER_SET {
                let info = IdentityInfo {
                    labels: label_set(ns, app),
                    named_ports: NamedPorts::new(),
                };
                let ch = c.add_identity(id, info);
                if n > 0 {
                    known_changes += ch.added.len() + ch.removed.len();
                }
            }
            id += 1;
        }
    }
    println!("1,000 label sets (10,000 endpoints) before any policy: {}; changes from known label sets: {known_changes}", ms(t.elapsed()));

    let t = Instant::now();
    let mut added = 0;
    for p in docs.policies.iter().cloned() {
        added += c.upsert_policy(p).added.len();
    }
    let full = t.elapsed();
    let live = LIVE.load(Ordering::Relaxed) - base;
    println!(
        "full compile, 1,000 policies x 1,000 label sets: {} ({} entries, {} selectors)",
        ms(full),
        c.entry_count(),
        c.selector_count()
    );
    assert_eq!(added, c.entry_count());
    println!(
        "memory of the compiled state: {:.1} MiB ({:.0} bytes per entry, all included)",
        live as f64 / (1 << 20) as f64,
        live as f64 / c.entry_count() as f64
    );

    // A new label set that policies select (subject of 10, peer of 40).
    let mut samples = Vec::new();
    for n in 0..20 {
        let mut labels = label_set(n % NAMESPACES, 7);
        labels.insert("version".into(), format!("v{n}"));
        let t = Instant::now();
        let ch = c.add_identity(
            id,
            IdentityInfo {
                labels,
                named_ports: NamedPorts::new(),
            },
        );
        samples.push((t.elapsed(), ch.added.len() + ch.isolated.len()));
        id += 1;
    }
    samples.sort();
    println!(
        "a new label set, selected: median {} (max {}), {} entries and isolation flags",
        ms(samples[10].0),
        ms(samples[19].0),
        samples[10].1
    );
    let mut samples = Vec::new();
    for n in 0..20 {
        let labels: Labels = [
            ("app".to_string(), format!("other{n}")),
            (POD_NAMESPACE_LABEL.to_string(), "elsewhere".to_string()),
        ]
        .into_iter()
        .collect();
        let t = Instant::now();
        let ch = c.add_identity(
            id,
            IdentityInfo {
                labels,
                named_ports: NamedPorts::new(),
            },
        );
        assert!(ch.is_empty());
        samples.push(t.elapsed());
        id += 1;
    }
    samples.sort();
    println!(
        "a new label set, selected by nothing: median {} (0 entries)",
        ms(samples[10])
    );
    let t = Instant::now();
    let ch = c.add_identity(
        256,
        IdentityInfo {
            labels: label_set(0, 0),
            named_ports: NamedPorts::new(),
        },
    );
    println!(
        "a known label set: {} ({} changes)",
        ms(t.elapsed()),
        ch.added.len() + ch.removed.len()
    );

    // A policy edit: the port of one rule.
    let mut p = docs.policies[123].clone();
    p.ingress.as_mut().unwrap()[0].ports[0].ports = ebpfcni_policy::model::Ports::Range(8081, 8081);
    let t = Instant::now();
    let ch = c.upsert_policy(p);
    println!(
        "one policy edited: {} (+{} -{} entries)",
        ms(t.elapsed()),
        ch.added.len(),
        ch.removed.len()
    );
}
