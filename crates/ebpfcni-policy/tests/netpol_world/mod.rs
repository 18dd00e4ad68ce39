//! The Kubernetes network policy e2e suite's model (its model.go): three
//! namespaces x, y, z (labelled `ns: <name>`, plus
//! `kubernetes.io/metadata.name`), three pods a, b, c in each (labelled
//! `pod: <name>`), serving ports 80 and 81 over TCP, UDP and SCTP with named
//! ports `serve-<port>-<protocol>`; and its reachability tables.
//!
//! Every case checks the whole 9x9 matrix (loopback ignored, as upstream)
//! twice: against the semantic model (`World::allowed`) and against the
//! compiled entries judged by the pure datapath (`Datapath::allowed`) built
//! only from the compiler's deltas.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ebpfcni_policy::compile::{Compiler, Datapath, IdentityInfo};
use ebpfcni_policy::document::{parse, ParseOptions};
use ebpfcni_policy::model::{Endpoint, NamedPorts, PolicyKey, PolicyKind, World};
use ebpfcni_policy::{Labels, Protocol, POD_NAMESPACE_LABEL};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 255, 1);

pub fn pod_ip(ns: usize, pod: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, ns as u8, pod as u8 + 1)
}

fn named_ports() -> NamedPorts {
    let mut np = NamedPorts::new();
    for port in [80u16, 81] {
        for (p, s) in [
            (Protocol::Tcp, "tcp"),
            (Protocol::Udp, "udp"),
            (Protocol::Sctp, "sctp"),
        ] {
            np.insert(format!("serve-{port}-{s}"), (p, port));
        }
    }
    np
}

pub struct Cluster {
    pub world: World,
    pub compiler: Compiler,
    pub datapath: Datapath,
    /// Each endpoint's identity (by index in world.endpoints).
    pub ids: Vec<u32>,
    next_id: u32,
}

impl Cluster {
    pub fn new() -> Self {
        Self::with_enforcement(false)
    }

    pub fn with_enforcement(always: bool) -> Self {
        let mut c = Cluster {
            world: World {
                host: Some(HOST),
                always_enforce: always,
                ..World::default()
            },
            compiler: Compiler::new(always),
            datapath: Datapath::new(always),
            ids: Vec::new(),
            next_id: 256,
        };
        for ns in NAMESPACES {
            let mut labels = Labels::new();
            labels.insert("ns".into(), ns.into());
            c.world.namespaces.insert(ns.into(), labels.clone());
            let ch = c.compiler.set_namespace(ns, labels);
            c.datapath.apply(&ch);
        }
        for (n, ns) in NAMESPACES.iter().enumerate() {
            for (p, pod) in PODS.iter().enumerate() {
                let mut labels = Labels::new();
                labels.insert("pod".into(), pod.to_string());
                labels.insert(POD_NAMESPACE_LABEL.into(), ns.to_string());
                c.world.endpoints.push(Endpoint {
                    name: format!("{ns}/{pod}"),
                    labels: labels.clone(),
                    ip: pod_ip(n, p),
                    named_ports: named_ports(),
                });
                let id = c.next_id;
                c.next_id += 1;
                c.ids.push(id);
                let ch = c.compiler.add_identity(
                    id,
                    IdentityInfo {
                        labels,
                        named_ports: named_ports(),
                    },
                );
                c.datapath.apply(&ch);
            }
        }
        c
    }

    /// Applies a YAML text (as `policyctl apply -f` would): policies are
    /// created or replaced, namespaces' labels set.
    pub fn apply(&mut self, yaml: &str) {
        let docs = parse(
            yaml,
            &ParseOptions {
                named_ports_known: true,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for (name, labels) in docs.namespaces {
            self.world.namespaces.insert(name.clone(), labels.clone());
            let ch = self.compiler.set_namespace(&name, labels);
            self.datapath.apply(&ch);
        }
        for p in docs.policies {
            self.world.policies.retain(|q| q.key != p.key);
            self.world.policies.push(p.clone());
            let ch = self.compiler.upsert_policy(p);
            self.datapath.apply(&ch);
        }
    }

    pub fn delete_policy(&mut self, ns: &str, name: &str) {
        let key = PolicyKey {
            kind: PolicyKind::NetworkPolicy,
            namespace: ns.into(),
            name: name.into(),
        };
        self.world.policies.retain(|q| q.key != key);
        let ch = self.compiler.remove_policy(&key).expect("policy exists");
        self.datapath.apply(&ch);
    }

    pub fn delete_all_policies(&mut self) {
        let keys: Vec<PolicyKey> = self.world.policies.iter().map(|p| p.key.clone()).collect();
        for k in keys {
            let ch = self.compiler.remove_policy(&k).expect("policy exists");
            self.datapath.apply(&ch);
        }
        self.world.policies.clear();
    }

    fn index(&self, pod: &str) -> usize {
        self.world
            .endpoints
            .iter()
            .position(|e| e.name == pod)
            .unwrap_or_else(|| panic!("no pod {pod}"))
    }

    /// Adds labels to a pod: it gets the identity of its new label set.
    pub fn add_pod_labels(&mut self, pod: &str, extra: &[(&str, &str)]) {
        let i = self.index(pod);
        for (k, v) in extra {
            self.world.endpoints[i]
                .labels
                .insert(k.to_string(), v.to_string());
        }
        let old = self.ids[i];
        let ch = self.compiler.remove_identity(old);
        self.datapath.apply(&ch);
        let id = self.next_id;
        self.next_id += 1;
        self.ids[i] = id;
        let ch = self.compiler.add_identity(
            id,
            IdentityInfo {
                labels: self.world.endpoints[i].labels.clone(),
                named_ports: named_ports(),
            },
        );
        self.datapath.apply(&ch);
    }

    pub fn pod_ip(&self, pod: &str) -> Ipv4Addr {
        self.world.endpoints[self.index(pod)].ip
    }

    /// Checks the whole matrix against the model and the compiled entries.
    pub fn validate(&self, reach: &Reachability, protocol: Protocol, port: u16) {
        let mut wrong = Vec::new();
        let n = self.world.endpoints.len();
        for f in 0..n {
            for t in 0..n {
                if f == t {
                    continue; // loopback is ignored upstream
                }
                let (from, to) = (&self.world.endpoints[f], &self.world.endpoints[t]);
                let want = reach.get(&from.name, &to.name);
                let verdict = self.world.allowed(from.ip, to.ip, protocol, port);
                if verdict.allowed() != want {
                    wrong.push(format!(
                        "model: {} -> {} {protocol}/{port}: want {want}, got {verdict:?}",
                        from.name, to.name
                    ));
                }
                let dp = self
                    .datapath
                    .allowed((self.ids[f], from.ip), (self.ids[t], to.ip), protocol, port);
                if dp != want {
                    wrong.push(format!(
                        "compiled: {} -> {} {protocol}/{port}: want {want}, got {dp}",
                        from.name, to.name
                    ));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{}\n{}",
            wrong.join("\n"),
            reach.table(&self.world)
        );
        // The datapath built from deltas holds exactly the compiler's entries.
        assert_eq!(self.datapath.entry_count(), self.compiler.entry_count());
    }
}

/// A reachability table: (from, to) -> connected, all true unless set.
pub struct Reachability {
    m: BTreeMap<(String, String), bool>,
    default: bool,
}

/// A pattern of pods: a namespace, a pod name, both or neither.
#[derive(Clone, Copy, Default)]
pub struct P<'a> {
    pub ns: Option<&'a str>,
    pub pod: Option<&'a str>,
}

pub fn any() -> P<'static> {
    P::default()
}

pub fn ns(ns: &str) -> P<'_> {
    P {
        ns: Some(ns),
        pod: None,
    }
}

pub fn pod<'a>(ns: &'a str, pod: &'a str) -> P<'a> {
    P {
        ns: Some(ns),
        pod: Some(pod),
    }
}

impl P<'_> {
    fn matches(&self, name: &str) -> bool {
        let (n, p) = name.split_once('/').expect("ns/pod");
        self.ns.is_none_or(|x| x == n) && self.pod.is_none_or(|x| x == p)
    }
}

fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|n| PODS.iter().map(move |p| format!("{n}/{p}")))
        .collect()
}

impl Reachability {
    pub fn new(default: bool) -> Self {
        Self {
            m: BTreeMap::new(),
            default,
        }
    }

    pub fn expect_peer(&mut self, from: P<'_>, to: P<'_>, connected: bool) -> &mut Self {
        for f in all_pods() {
            for t in all_pods() {
                if from.matches(&f) && to.matches(&t) {
                    self.m.insert((f.clone(), t.clone()), connected);
                }
            }
        }
        self
    }

    pub fn expect(&mut self, from: &str, to: &str, connected: bool) -> &mut Self {
        self.m.insert((from.into(), to.into()), connected);
        self
    }

    pub fn expect_all_ingress(&mut self, to: &str, connected: bool) -> &mut Self {
        let (n, p) = to.split_once('/').unwrap();
        self.expect_peer(any(), pod(n, p), connected)
    }

    pub fn expect_all_egress(&mut self, from: &str, connected: bool) -> &mut Self {
        let (n, p) = from.split_once('/').unwrap();
        self.expect_peer(pod(n, p), any(), connected)
    }

    pub fn get(&self, from: &str, to: &str) -> bool {
        *self
            .m
            .get(&(from.to_string(), to.to_string()))
            .unwrap_or(&self.default)
    }

    fn table(&self, world: &World) -> String {
        let names: Vec<&str> = world.endpoints.iter().map(|e| e.name.as_str()).collect();
        let mut s = format!("expected:\n{:5}", "");
        for t in &names {
            s += &format!("{t:5}");
        }
        for f in &names {
            s += &format!("\n{f:5}");
            for t in &names {
                s += if self.get(f, t) { ".    " } else { "X    " };
            }
        }
        s
    }
}

/// A NetworkPolicy document.
pub fn np(ns: &str, name: &str, spec: &str) -> String {
    let spec = spec
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}\n"
    )
}
