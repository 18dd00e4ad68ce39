//! The compiler against the semantics: on a world with NetworkPolicies and
//! CiliumNetworkPolicies (deny rules, entities, CIDRs with excepts, named
//! ports, port ranges, namespace labels), pods sharing label sets, addresses
//! outside the cluster and the node, the entries built only from deltas and
//! judged by the pure datapath give the model's verdict on every
//! (from, to, protocol, port); through changes of policies, namespaces and
//! identities, and whatever the order. Plus: what costs no entries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ebpfcni_policy::compile::{Changes, Compiler, Datapath, Entry, IdentityInfo};
use ebpfcni_policy::document::{parse, ParseOptions};
use ebpfcni_policy::model::{Endpoint, NamedPorts, Policy, PolicyKey, World};
use ebpfcni_policy::{reserved, Labels, Protocol, POD_NAMESPACE_LABEL};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 255, 1);
const OUTSIDE: [Ipv4Addr; 4] = [
    Ipv4Addr::new(203, 0, 113, 5),
    Ipv4Addr::new(198, 51, 100, 7),
    Ipv4Addr::new(198, 51, 100, 200),
    Ipv4Addr::new(10, 9, 0, 1),
];
const PORTS: [u16; 9] = [53, 80, 85, 443, 5432, 6379, 8080, 9999, 22];

const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}
    ports: [{port: 8080}]
  - from:
    - namespaceSelector: {matchLabels: {env: dev}}
      podSelector: {matchExpressions: [{key: app, operator: In, values: [api, web]}]}
    - ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.128/25]}
    ports: [{port: 80, endPort: 90}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{port: http}]
  egress:
  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: cache}}}]
  - to: [{ipBlock: {cidr: 10.9.0.0/16}}]
    ports: [{port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-egress, namespace: dev}
spec:
  podSelector: {}
  policyTypes: [Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: dev}
spec:
  podSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}
  egress:
  - ports: [{port: dns, protocol: UDP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-blue, namespace: ops}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: blue}}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: lockdown, namespace: ops}
spec:
  endpointSelector: {matchLabels: {app: cache}}
  ingress:
  - fromEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": prod}}]
  - fromEntities: [host]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: web, "k8s:io.kubernetes.pod.namespace": prod}}]
    toPorts: [{ports: [{port: "6379", protocol: TCP}]}]
  egress:
  - toEntities: [world]
    toPorts: [{ports: [{port: "443"}]}]
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.9.0.0/16]}]
  egressDeny:
  - toCIDR: [203.0.113.0/24]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: front, namespace: prod}
spec:
  endpointSelector: {matchLabels: {tier: front}}
  egress:
  - toEntities: [cluster]
  ingress:
  - fromEntities: [all]
    toPorts: [{ports: [{port: "80", endPort: 85, protocol: ANY}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db-default-deny, namespace: dev}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - {}
"#;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ports_of(labels: &Labels) -> NamedPorts {
    let mut np = NamedPorts::new();
    match labels.get("app").map(String::as_str) {
        Some("db") => {
            np.insert("http".into(), (Protocol::Tcp, 5432));
        }
        Some("api") | Some("web") => {
            np.insert("http".into(), (Protocol::Tcp, 8080));
            np.insert("dns".into(), (Protocol::Udp, 53));
        }
        _ => {}
    }
    np
}

/// 24 pods in 3 namespaces, in 12 label sets (pods i and i + 12 share one).
fn pods() -> Vec<Endpoint> {
    let apps = ["web", "api", "db", "cache"];
    (0..24)
        .map(|i| {
            let ns = ["prod", "dev", "ops"][i % 3];
            let mut l = labels(&[("app", apps[(i % 12) / 3]), (POD_NAMESPACE_LABEL, ns)]);
            if i % 12 == 4 || i % 12 == 0 {
                l.insert("tier".into(), "front".into());
            }
            Endpoint {
                name: format!("{ns}/pod{i}"),
                named_ports: ports_of(&l),
                labels: l,
                ip: Ipv4Addr::new(10, 1, (i / 200) as u8, (i % 200) as u8 + 1),
            }
        })
        .collect()
}

struct Harness {
    world: World,
    compiler: Compiler,
    datapath: Datapath,
    ids: BTreeMap<Labels, u32>,
}

impl Harness {
    fn new(always: bool) -> Self {
        let mut world = World {
            host: Some(HOST),
            always_enforce: always,
            ..World::default()
        };
        world.namespaces.insert("dev".into(), labels(&[("env", "dev")]));
        Harness {
            world,
            compiler: Compiler::new(always),
            datapath: Datapath::new(always),
            ids: BTreeMap::new(),
        }
    }

    fn apply(&mut self, c: Changes) {
        self.datapath.apply(&c);
    }

    fn namespaces(&mut self) {
        for (n, l) in self.world.namespaces.clone() {
            let c = self.compiler.set_namespace(&n, l);
            self.apply(c);
        }
    }

    fn add_pod(&mut self, e: Endpoint) -> Changes {
        let next = reserved::FIRST_LABELS + self.ids.len() as u32;
        let id = *self.ids.entry(e.labels.clone()).or_insert(next);
        let c = self.compiler.add_identity(
            id,
            IdentityInfo {
                labels: e.labels.clone(),
                named_ports: e.named_ports.clone(),
            },
        );
        self.datapath.apply(&c);
        self.world.endpoints.push(e);
        c
    }

    fn policies(&mut self, ps: Vec<Policy>) {
        for p in ps {
            self.world.policies.push(p.clone());
            let c = self.compiler.upsert_policy(p);
            self.apply(c);
        }
    }

    fn id_of(&self, ip: Ipv4Addr) -> u32 {
        match self.world.endpoint(ip) {
            Some(e) => self.ids[&e.labels],
            None if ip == HOST => reserved::HOST,
            None => reserved::WORLD,
        }
    }

    /// Model and compiled entries agree on every (from, to, protocol, port);
    /// returns how many connections are allowed.
    fn check(&self) -> usize {
        let mut addrs: Vec<Ipv4Addr> = self.world.endpoints.iter().map(|e| e.ip).collect();
        addrs.extend(OUTSIDE);
        addrs.push(HOST);
        let mut allowed = 0;
        for &from in &addrs {
            for &to in &addrs {
                if from == to {
                    continue;
                }
                for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                    for port in PORTS {
                        let model = self.world.allowed(from, to, protocol, port);
                        let dp = self.datapath.allowed(
                            (self.id_of(from), from),
                            (self.id_of(to), to),
                            protocol,
                            port,
                        );
                        assert_eq!(
                            model.allowed(),
                            dp,
                            "{from} -> {to} {protocol}/{port}: model {model:?}, datapath {dp}"
                        );
                        allowed += usize::from(dp);
                    }
                }
            }
        }
        assert_eq!(self.datapath.entry_count(), self.compiler.entry_count());
        allowed
    }

    fn entries(&self) -> BTreeSet<Entry> {
        self.compiler.entries().copied().collect()
    }
}

fn policies() -> Vec<Policy> {
    parse(
        POLICIES,
        &ParseOptions {
            named_ports_known: true,
        },
    )
    .unwrap()
    .policies
}

#[test]
fn compiled_entries_give_the_models_verdicts_through_every_change() {
    let mut h = Harness::new(false);
    h.namespaces();
    for e in pods() {
        h.add_pod(e);
    }
    h.policies(policies());
    let allowed = h.check();
    // The world is neither all open nor all closed.
    let total = (24 + 5) * (24 + 4) * 3 * PORTS.len();
    assert!(
        allowed > total / 10 && allowed < total * 9 / 10,
        "{allowed} of {total}"
    );

    // Namespace labels change: `team: blue` opens ops' api to ops and dev.
    for ns in ["ops", "dev"] {
        let mut l = h.world.namespaces.get(ns).cloned().unwrap_or_default();
        l.insert("team".into(), "blue".into());
        h.world.namespaces.insert(ns.into(), l.clone());
        let c = h.compiler.set_namespace(ns, l);
        assert!(!c.is_empty());
        h.apply(c);
    }
    let more = h.check();
    assert!(more > allowed, "{more} <= {allowed}");

    // A policy goes; one is edited.
    let key = h.world.policies[1].key.clone();
    h.world.policies.retain(|p| p.key != key);
    let c = h.compiler.remove_policy(&key).unwrap();
    h.apply(c);
    h.check();
    let mut edited = h.world.policies[0].clone();
    edited.ingress.as_mut().unwrap().remove(0);
    h.world.policies[0] = edited.clone();
    let c = h.compiler.upsert_policy(edited);
    assert!(!c.removed.is_empty());
    h.apply(c);
    h.check();

    // A pod with a new label set, then its identity goes.
    let mut l = labels(&[("app", "api"), ("tier", "front"), (POD_NAMESPACE_LABEL, "prod")]);
    let e = Endpoint {
        name: "prod/new".into(),
        named_ports: ports_of(&l),
        labels: l.clone(),
        ip: Ipv4Addr::new(10, 1, 0, 250),
    };
    let c = h.add_pod(e);
    assert!(!c.added.is_empty());
    h.check();
    let id = h.ids[&l];
    h.world.endpoints.retain(|e| e.labels != l);
    let c = h.compiler.remove_identity(id);
    assert!(c.added.is_empty() && !c.removed.is_empty());
    h.apply(c);
    h.check();
    l.clear();
}

#[test]
fn the_order_of_identities_policies_and_namespaces_does_not_matter() {
    let mut first = Harness::new(false);
    first.namespaces();
    for e in pods() {
        first.add_pod(e);
    }
    first.policies(policies());
    let mut second = Harness::new(false);
    second.policies(policies());
    for e in pods().into_iter().rev() {
        second.add_pod(e);
    }
    second.namespaces();
    // The same label sets got the same numbers? Not necessarily: compare by labels.
    let by_labels = |h: &Harness| -> BTreeSet<String> {
        let names: BTreeMap<u32, String> = h.ids.iter().map(|(l, id)| (*id, format!("{l:?}"))).collect();
        let name = |id: u32| names.get(&id).cloned().unwrap_or(format!("reserved {id}"));
        h.entries()
            .iter()
            .map(|e| {
                let peer = match e.peer {
                    ebpfcni_policy::compile::PeerKey::Identity(i) => name(i),
                    other => format!("{other:?}"),
                };
                format!(
                    "{:?} {} {peer} {:?} {}-{} {}",
                    e.direction,
                    name(e.subject),
                    e.protocol,
                    e.first,
                    e.last,
                    e.deny
                )
            })
            .collect()
    };
    assert_eq!(by_labels(&first), by_labels(&second));
    second.check();
}

#[test]
fn a_known_label_set_and_a_repeated_policy_change_nothing() {
    let mut h = Harness::new(false);
    h.namespaces();
    for e in pods().into_iter().take(12) {
        assert!(!h.add_pod(e).is_empty() || h.compiler.entry_count() == 0);
    }
    h.policies(policies());
    // Pods 12..24 have the label sets of pods 0..12: no change at all.
    for e in pods().into_iter().skip(12) {
        assert_eq!(h.add_pod(e), Changes::default());
    }
    h.check();
    for p in policies() {
        assert_eq!(h.compiler.upsert_policy(p), Changes::default());
    }
}

#[test]
fn a_policy_change_touches_only_that_policys_entries() {
    let mut h = Harness::new(false);
    h.namespaces();
    for e in pods() {
        h.add_pod(e);
    }
    h.policies(policies());
    let before = h.entries();
    let ps = policies();
    let key: &PolicyKey = &ps[0].key;
    let mut edited = ps[0].clone();
    edited.ingress.as_mut().unwrap()[0].ports[0].ports = ebpfcni_policy::model::Ports::Range(8081, 8081);
    let c = h.compiler.upsert_policy(edited);
    // The policy's subjects: prod's web label sets.
    let webs: Vec<u32> = h
        .ids
        .iter()
        .filter(|(l, _)| l["app"] == "web" && l[POD_NAMESPACE_LABEL] == "prod")
        .map(|(_, id)| *id)
        .collect();
    assert!(!webs.is_empty());
    for e in c.added.iter().chain(&c.removed) {
        assert!(webs.contains(&e.subject), "{e:?} is not {key}'s");
        assert!(e.first == 8080 || e.first == 8081, "{e:?}");
    }
    assert_eq!((c.added.len(), c.removed.len()), (c.removed.len(), c.added.len()));
    assert!(!c.added.is_empty());
    h.apply(c);
    assert_eq!(h.entries().len(), before.len());
}

#[test]
fn identities_selected_by_no_policy_cost_zero_entries() {
    let mut h = Harness::new(false);
    h.namespaces();
    for e in pods() {
        h.add_pod(e);
    }
    // The NetworkPolicies (the Cilium `cluster` entity selects every
    // identity by definition, so it is left out here).
    let nps: Vec<Policy> = policies()
        .into_iter()
        .filter(|p| p.key.kind == ebpfcni_policy::model::PolicyKind::NetworkPolicy)
        .collect();
    h.policies(nps);
    let entries = h.compiler.entry_count();
    let isolated = h.datapath.isolation_count();
    assert!(entries > 0);
    for i in 0..5000u32 {
        let l = labels(&[("app", &format!("batch-{i}")), (POD_NAMESPACE_LABEL, "batch")]);
        let c = h.compiler.add_identity(
            10_000 + i,
            IdentityInfo {
                labels: l,
                named_ports: NamedPorts::new(),
            },
        );
        assert_eq!(c, Changes::default(), "identity {i}");
    }
    assert_eq!(h.compiler.entry_count(), entries);
    assert_eq!(h.datapath.isolation_count(), isolated);
}

#[test]
fn always_enforce_denies_what_no_policy_allows() {
    let mut h = Harness::new(true);
    h.namespaces();
    for e in pods() {
        h.add_pod(e);
    }
    h.policies(policies());
    let allowed = h.check();
    let mut open = Harness::new(false);
    open.namespaces();
    for e in pods() {
        open.add_pod(e);
    }
    open.policies(policies());
    assert!(allowed < open.check());
    // No policy: pods reach nothing, and nothing reaches them.
    let mut empty = Harness::new(true);
    for e in pods() {
        empty.add_pod(e);
    }
    let a = empty.world.endpoints[0].ip;
    let b = empty.world.endpoints[1].ip;
    assert!(!empty.world.allowed(a, b, Protocol::Tcp, 80).allowed());
    empty.check();
    assert_eq!(empty.compiler.entry_count(), 0);
}

#[test]
fn deny_rules_win_and_explain_names_them() {
    let mut h = Harness::new(false);
    h.namespaces();
    for e in pods() {
        h.add_pod(e);
    }
    h.policies(policies());
    h.check();
    // prod web (pod 0) to ops cache (pod 11): lockdown allows from prod, denies web on 6379.
    let web = h.world.endpoints[0].ip;
    let cache = h.world.endpoints[11].ip;
    let v = h.world.allowed(web, cache, Protocol::Tcp, 6379);
    match &v.ingress {
        ebpfcni_policy::model::Side::Denied(rules) => {
            assert_eq!(rules[0].policy.name, "lockdown");
            assert!(rules[0].deny);
        }
        other => panic!("{other:?}"),
    }
    // Cilium's CIDR rules match addresses outside the cluster only: ops
    // cache may reach 10.0.0.0/8 but not the pods in it (10.1.0.0/24).
    let outside = Ipv4Addr::new(10, 200, 0, 1);
    assert!(h.world.allowed(cache, outside, Protocol::Tcp, 22).allowed());
    assert!(!h.world.allowed(cache, web, Protocol::Tcp, 22).allowed());
    assert!(!h.world.allowed(cache, OUTSIDE[3], Protocol::Tcp, 22).allowed());
    let v = h.world.allowed(web, cache, Protocol::Tcp, 6380);
    assert!(
        matches!(&v.ingress, ebpfcni_policy::model::Side::Allowed(r) if r[0].policy.name == "lockdown"),
        "{v:?}"
    );
}

#[test]
fn an_isolation_verdict_names_the_isolating_policies() {
    let mut h = Harness::new(false);
    h.namespaces();
    for e in pods() {
        h.add_pod(e);
    }
    h.policies(policies());
    // dev web (pod 1) to prod db (pod 6) on TCP 5432: dev isolates web's
    // egress (default-deny-egress, allow-dns), prod's db policy its ingress.
    let (web, db) = (h.world.endpoints[1].ip, h.world.endpoints[6].ip);
    let v = h.world.allowed(web, db, Protocol::Tcp, 5432);
    let names = |s: &ebpfcni_policy::model::Side| match s {
        ebpfcni_policy::model::Side::Isolated(ps) => ps.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(names(&v.egress), ["default-deny-egress", "allow-dns"]);
    assert_eq!(names(&v.ingress), ["db"]);
    assert!(!v.allowed());
}

/// Every connection allowed both before and after a change stays allowed at
/// each step of applying it (adds, unisolate, isolate, removes).
#[test]
fn applying_changes_in_order_never_drops_what_is_allowed_before_and_after() {
    let mut h = Harness::new(false);
    h.namespaces();
    for e in pods() {
        h.add_pod(e);
    }
    let all = policies();
    // Start with every other policy, then edit, add and remove policies.
    h.policies(all.iter().step_by(2).cloned().collect());
    type Step = Box<dyn Fn(&mut Compiler) -> Changes>;
    let mut steps: Vec<Step> = Vec::new();
    for p in all.iter().skip(1).step_by(2) {
        let p = p.clone();
        steps.push(Box::new(move |c: &mut Compiler| c.upsert_policy(p.clone())));
    }
    let mut widened = all[0].clone();
    widened.ingress.as_mut().unwrap()[0].ports[0].ports = ebpfcni_policy::model::Ports::Range(8000, 8100);
    steps.push(Box::new(move |c: &mut Compiler| c.upsert_policy(widened.clone())));
    let mut narrowed = all[0].clone();
    narrowed.ingress.as_mut().unwrap().remove(1);
    steps.push(Box::new(move |c: &mut Compiler| {
        c.upsert_policy(narrowed.clone())
    }));
    for p in all.iter().take(4) {
        let key = p.key.clone();
        steps.push(Box::new(move |c: &mut Compiler| c.remove_policy(&key).unwrap()));
    }
    let verdicts = |d: &Datapath, h: &Harness| -> Vec<bool> {
        let addrs: Vec<Ipv4Addr> = h
            .world
            .endpoints
            .iter()
            .map(|e| e.ip)
            .chain(OUTSIDE)
            .chain([HOST])
            .collect();
        let mut out = Vec::new();
        for &f in &addrs {
            for &t in &addrs {
                for port in [53, 85, 5432, 6379, 8080] {
                    for proto in [Protocol::Tcp, Protocol::Udp] {
                        out.push(d.allowed((h.id_of(f), f), (h.id_of(t), t), proto, port));
                    }
                }
            }
        }
        out
    };
    for step in steps {
        let before = verdicts(&h.datapath, &h);
        let c = step(&mut h.compiler);
        let mut after_dp = h.datapath.clone();
        after_dp.apply(&c);
        let after = verdicts(&after_dp, &h);
        let phases = [
            Changes {
                added: c.added.clone(),
                ..Changes::default()
            },
            Changes {
                unisolated: c.unisolated.clone(),
                ..Changes::default()
            },
            Changes {
                isolated: c.isolated.clone(),
                ..Changes::default()
            },
            Changes {
                removed: c.removed.clone(),
                ..Changes::default()
            },
        ];
        for (n, phase) in phases.iter().enumerate() {
            h.datapath.apply(phase);
            let now = verdicts(&h.datapath, &h);
            for i in 0..now.len() {
                assert!(
                    !(before[i] && after[i]) || now[i],
                    "phase {n} drops connection #{i}"
                );
            }
        }
        assert_eq!(verdicts(&h.datapath, &h), after);
    }
}

/// Kubernetes: traffic to and from the node where a pod runs is always
/// allowed, isolated or not; only a Cilium deny rule stops it.
#[test]
fn the_node_always_reaches_its_pods_unless_a_deny_rule_says_otherwise() {
    let mut h = Harness::new(false);
    h.namespaces();
    for e in pods() {
        h.add_pod(e);
    }
    h.policies(
        parse(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: prod}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: no-node, namespace: ops}\nspec:\n  endpointSelector: {}\n  ingressDeny:\n  - fromEntities: [host]\n",
            &ParseOptions::default(),
        )
        .unwrap()
        .policies,
    );
    h.check();
    let prod = h.world.endpoints[0].ip;
    let ops = h.world.endpoints[2].ip;
    let v = h.world.allowed(HOST, prod, Protocol::Tcp, 80);
    assert_eq!(v.ingress, ebpfcni_policy::model::Side::Node);
    assert!(h.world.allowed(prod, HOST, Protocol::Udp, 53).allowed());
    assert!(!h
        .world
        .allowed(prod, h.world.endpoints[3].ip, Protocol::Tcp, 80)
        .allowed());
    let v = h.world.allowed(HOST, ops, Protocol::Tcp, 80);
    assert!(
        matches!(v.ingress, ebpfcni_policy::model::Side::Denied(_)),
        "{v:?}"
    );
    assert!(h.world.allowed(ops, HOST, Protocol::Tcp, 80).allowed());
}
