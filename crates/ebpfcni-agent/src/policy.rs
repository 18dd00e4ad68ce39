//! Policy by labels in the agent: NetworkPolicy, CiliumNetworkPolicy,
//! Namespace objects and selector rules, kept in the store, compiled by
//! `ebpfcni_policy::compile::Compiler` (fed with every identity the agent
//! allocates), and written into the datapath's label policy maps
//! (label_isolation_map, label_rule_map) as differences.
//!
//! - Every policy has a number (from 1, stored with it, never reused); each
//!   label rule carries the number of a policy that causes it (the lowest
//!   when several do; 0 for the node's own allowance).
//! - The maps get only differences from what they hold (read at start):
//!   rules added or changed first, then identities unisolated, then
//!   isolated, then rules removed, so that no change opens a window.
//! - Every identity under the agent's policy is in label_isolation_map
//!   (MANAGED): the label sets', the reserved host (1), world (2) and
//!   remote-node (6), and the CIDR identities. An isolated identity always
//!   has a rule allowing the node (identity 1) that way, as Kubernetes
//!   allows a pod's node.
//! - CIDR peers: every prefix a policy names (an ipBlock's `cidr` minus its
//!   `except`s, a Cilium CIDR) gets an identity of its own (labels
//!   `reserved:cidr=PREFIX`, allocated like a label set's, kept) and a
//!   prefix_map entry, so that addresses outside the pods resolve to it. A
//!   rule for a prefix is written for every CIDR identity of a prefix inside
//!   it, and (NetworkPolicy ipBlock) for the identity of every pod with an
//!   address in it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ebpfcni::{Identity as Id, Isolation, LabelKind, LabelRule, Selector, Stored, ANY_PEER};
use ebpfcni_api::{EndpointState, Labels, PolicyChanges, PolicySummary, SelectorRule};
use ebpfcni_kvstore::PolicyKey as ClusterKey;
use ebpfcni_policy::cidr::Ipv4Net;
use ebpfcni_policy::compile::{Compiler, Entry, IdentityInfo, PeerKey};
use ebpfcni_policy::document::{self, ParseOptions};
use ebpfcni_policy::model::{Entity, Peer, Policy, PolicyKey, PolicyKind, PortSpec, Ports, Rule};
use ebpfcni_policy::selector::{EndpointSelector, LabelSelector, Namespaces};
use ebpfcni_policy::{reserved, Direction, Protocol};
use serde::Deserialize;
use serde_json::Value;

use crate::agent::{map_error, Agent, AgentError, State};
use crate::store::{Changes, StoredPolicy};

/// The label key of a CIDR identity (`reserved:cidr` = the prefix).
pub const CIDR_LABEL: &str = "reserved:cidr";

/// Cilium's `policy-enforcement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enforcement {
    /// Kubernetes: an endpoint selected by no policy is unrestricted.
    #[default]
    Default,
    /// Every endpoint is isolated both ways: only what a rule allows passes.
    Always,
    /// No policy is enforced: every endpoint is unrestricted (policies are
    /// kept, and enforced once the agent runs with another mode).
    Never,
}

impl FromStr for Enforcement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(Enforcement::Default),
            "always" => Ok(Enforcement::Always),
            "never" => Ok(Enforcement::Never),
            other => Err(format!("{other:?}: default, always or never")),
        }
    }
}

/// What the agent holds of policy (in its one lock).
#[derive(Default)]
pub struct PolicyState {
    pub enforcement: Enforcement,
    compiler: Option<Compiler>,
    /// The stored policies, by their store key.
    pub(crate) policies: BTreeMap<String, StoredPolicy>,
    /// The compiler's keys of each stored policy (a selector rule is two
    /// with `always`: its ingress and its egress half).
    keys: BTreeMap<String, Vec<PolicyKey>>,
    /// Compiler key -> policy number.
    numbers: HashMap<PolicyKey, u32>,
    pub(crate) namespaces: BTreeMap<String, Labels>,
    pub(crate) next_number: u32,
    /// The agent's CIDR identities.
    pub(crate) cidrs: BTreeMap<Ipv4Net, u32>,
    /// Label-set identities the compiler knows.
    identities: BTreeSet<u32>,
    /// What the label maps hold (rules keyed with policy 0 -> its policy).
    written_rules: Option<HashMap<LabelRule, u32>>,
    written_isolation: BTreeMap<u32, Isolation>,
    /// Prefix entries found right.
    prefixes_ok: BTreeSet<Ipv4Net>,
    /// `--etcd`: the policies etcd's first list had (until it ends: then
    /// what the store kept that etcd no longer has goes), and whether it
    /// ended.
    cluster_seen: BTreeSet<ClusterKey>,
    cluster_synced: bool,
    /// Map writes of every policy edit so far (with `--etcd`: what the
    /// watcher applied), counted under the lock with the edit.
    edit_writes: usize,
}

/// The part of an etcd key a cluster-scoped object (Namespace,
/// SelectorRule) has for its namespace.
const CLUSTER_SCOPE: &str = "_";

/// A policy's (or Namespace's) key in etcd.
fn etcd_key(kind: &str, namespace: &str, name: &str) -> Result<ClusterKey, AgentError> {
    let namespace = if namespace.is_empty() {
        CLUSTER_SCOPE
    } else {
        namespace
    };
    ClusterKey::new(kind, namespace, name).map_err(|e| AgentError::BadRequest(e.to_string()))
}

/// A Namespace object with `labels`, as etcd keeps it.
fn namespace_document(name: &str, labels: &Labels) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": labels },
    }))
    .expect("serializes")
}

fn compiler(ps: &mut PolicyState) -> &mut Compiler {
    let always = ps.enforcement == Enforcement::Always;
    ps.compiler.get_or_insert_with(|| Compiler::new(always))
}

fn parse_options() -> ParseOptions {
    // The runtimes do not tell containers' ports yet: named ports are
    // refused, naming the field.
    ParseOptions::default()
}

/// The model policies a stored one stands for.
fn models(stored: &StoredPolicy, enforcement: Enforcement) -> Result<Vec<Policy>, String> {
    if stored.kind == PolicyKind::SelectorRule.to_string() {
        let rule: SelectorRule = serde_json::from_str(&stored.source).map_err(|e| e.to_string())?;
        return selector_rule_policies(&rule, &stored.name, enforcement);
    }
    let docs = document::parse(&stored.source, &parse_options()).map_err(|e| e.to_string())?;
    Ok(docs.policies)
}

fn all_namespaces(labels: &Labels) -> EndpointSelector {
    EndpointSelector {
        pods: LabelSelector {
            labels: labels.clone(),
            requirements: Default::default(),
        },
        namespaces: Namespaces::Matching(LabelSelector::all()),
    }
}

/// A selector rule as policies: the destination's ingress from the source
/// (isolating it, as a NetworkPolicy's ingress rule does), and with
/// `always` (every egress isolated) the source's egress to the destination.
pub fn selector_rule_policies(
    rule: &SelectorRule,
    name: &str,
    enforcement: Enforcement,
) -> Result<Vec<Policy>, String> {
    let protocol = match rule.protocol.as_deref() {
        None => None,
        Some(p) => Some(
            Protocol::parse(&p.to_ascii_uppercase())
                .ok_or_else(|| format!("protocol {p:?}: TCP, UDP or SCTP"))?,
        ),
    };
    let ports = match (rule.port, rule.end_port) {
        (None, None) => match protocol {
            None => Vec::new(),
            Some(_) => vec![PortSpec {
                protocol,
                ports: Ports::All,
            }],
        },
        (Some(p), end) => {
            let last = end.unwrap_or(p);
            if p == 0 || last < p {
                return Err(format!(
                    "ports {p}-{last}: from 1 to 65535, the last not below the first"
                ));
            }
            vec![PortSpec {
                protocol: Some(protocol.unwrap_or(Protocol::Tcp)),
                ports: Ports::Range(p, last),
            }]
        }
        (None, Some(_)) => return Err("end_port without port".into()),
    };
    for (k, v) in rule.src.iter().chain(&rule.dst) {
        ebpfcni_policy::selector::check_key(k)?;
        ebpfcni_policy::selector::check_value(v)?;
    }
    let key = |suffix: &str| PolicyKey {
        kind: PolicyKind::SelectorRule,
        namespace: String::new(),
        name: format!("{name}{suffix}"),
    };
    let ingress = Policy {
        key: key(""),
        subject: all_namespaces(&rule.dst),
        ingress: Some(vec![Rule {
            peers: vec![Peer::Endpoints(all_namespaces(&rule.src))],
            ports: ports.clone(),
        }]),
        egress: None,
        ingress_deny: Vec::new(),
        egress_deny: Vec::new(),
    };
    let mut out = vec![ingress];
    if enforcement == Enforcement::Always {
        out.push(Policy {
            key: key("/egress"),
            subject: all_namespaces(&rule.src),
            ingress: None,
            egress: Some(vec![Rule {
                peers: vec![Peer::Endpoints(all_namespaces(&rule.dst))],
                ports,
            }]),
            ingress_deny: Vec::new(),
            egress_deny: Vec::new(),
        });
    }
    Ok(out)
}

/// A selector rule's name: made from its content, so that allowing it
/// again is the same rule.
pub fn selector_rule_name(rule: &SelectorRule) -> String {
    let text = serde_json::to_string(rule).expect("rules serialise");
    format!("rule-{:016x}", ebpfcni::fnv1a(text.as_bytes()))
}

/// One object of a YAML stream: its kind, namespace (None for a
/// Namespace), name, and JSON.
struct Object {
    kind: String,
    namespace: Option<String>,
    name: String,
    json: String,
}

/// The objects of a stream that `document::parse` accepted, in order.
fn objects(text: &str) -> Result<Vec<Object>, AgentError> {
    let mut out = Vec::new();
    let mut push = |v: Value| -> Result<(), AgentError> {
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let meta = v.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let namespace = (kind != "Namespace").then(|| {
            meta.and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or(ebpfcni_policy::DEFAULT_NAMESPACE)
                .to_string()
        });
        let json = serde_json::to_string(&v).map_err(|e| AgentError::BadRequest(e.to_string()))?;
        out.push(Object {
            kind,
            namespace,
            name,
            json,
        });
        Ok(())
    };
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| AgentError::BadRequest(e.to_string()))?;
        if v.is_null() {
            continue;
        }
        if v.get("kind").and_then(Value::as_str) == Some("List") {
            for item in v
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                push(item)?;
            }
        } else {
            push(v)?;
        }
    }
    Ok(out)
}

/// What an edit of policy changes: per stored key, the old and new record;
/// per namespace, the old and new labels.
#[derive(Default)]
struct Edit {
    policies: BTreeMap<String, (Option<StoredPolicy>, Option<StoredPolicy>)>,
    namespaces: BTreeMap<String, (Option<Labels>, Option<Labels>)>,
    reply: PolicyChanges,
}

impl Edit {
    fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.namespaces.is_empty()
    }

    fn inverse(&self) -> Edit {
        Edit {
            policies: self
                .policies
                .iter()
                .map(|(k, (old, new))| (k.clone(), (new.clone(), old.clone())))
                .collect(),
            namespaces: self
                .namespaces
                .iter()
                .map(|(k, (old, new))| (k.clone(), (new.clone(), old.clone())))
                .collect(),
            reply: PolicyChanges::default(),
        }
    }
}

fn describe(p: &StoredPolicy) -> String {
    if p.namespace.is_empty() {
        format!("{} {}", p.kind, p.name)
    } else {
        format!("{} {}/{}", p.kind, p.namespace, p.name)
    }
}

fn kind_name(kind: &str) -> Option<&'static str> {
    match kind.to_ascii_lowercase().as_str() {
        "networkpolicy" | "networkpolicies" | "netpol" => Some("NetworkPolicy"),
        "ciliumnetworkpolicy" | "ciliumnetworkpolicies" | "cnp" => Some("CiliumNetworkPolicy"),
        "selectorrule" | "selectorrules" => Some("SelectorRule"),
        "namespace" | "namespaces" | "ns" => Some("Namespace"),
        _ => None,
    }
}

impl Agent {
    /// Feeds the compiler the identities, namespaces and policies of the
    /// store (at start).
    pub(crate) fn load_policy(
        &self,
        state: &mut State,
        stored: Vec<StoredPolicy>,
        next: Option<u32>,
    ) -> Result<(), AgentError> {
        state.policy.enforcement = self.config().enforcement;
        let namespaces = std::mem::take(&mut state.policy.namespaces);
        for (name, labels) in &namespaces {
            compiler(&mut state.policy).set_namespace(name, labels.clone());
        }
        state.policy.namespaces = namespaces;
        let identities: Vec<(u32, Labels)> = state.identities.iter().map(|(i, l)| (*i, l.clone())).collect();
        for (id, labels) in identities {
            self.policy_identity(state, id, &labels);
        }
        let mut max = 0;
        for p in stored {
            max = max.max(p.number);
            let models = models(&p, state.policy.enforcement).map_err(|e| {
                AgentError::Internal(format!(
                    "the store's policy {} does not parse any more: {e}",
                    describe(&p)
                ))
            })?;
            self.install(state, &p, models);
        }
        state.policy.next_number = next.unwrap_or(1).max(max + 1);
        Ok(())
    }

    /// A label set's (or a CIDR's) identity, for the compiler.
    pub(crate) fn policy_identity(&self, state: &mut State, id: u32, labels: &Labels) {
        if let Some(net) = labels.get(CIDR_LABEL) {
            if let Ok(net) = net.parse::<Ipv4Net>() {
                state.policy.cidrs.insert(net, id);
            }
            return;
        }
        if state.policy.identities.insert(id) {
            compiler(&mut state.policy).add_identity(
                id,
                IdentityInfo {
                    labels: labels.clone(),
                    named_ports: Default::default(),
                },
            );
        }
    }

    /// An event of the cluster's watcher (`--etcd`), after the remote
    /// endpoints and routes took it: the cluster's identities (every
    /// node's, from etcd: id -> label set) are fed to the compiler as the
    /// node's own are, so that a rule names a pod of another node as its
    /// peer, and its identity is under label policy (MANAGED). Then the
    /// maps get the difference (adds before removes), under the one lock.
    pub fn cluster_event(&self, event: &ebpfcni_kvstore::Event) {
        use ebpfcni_kvstore::Event;
        match event {
            Event::PolicyUpsert { key, document } => return self.policy_from_cluster(key, Some(document)),
            Event::PolicyDelete(key) => return self.policy_from_cluster(key, None),
            Event::Synced { .. } => return self.policies_synced(),
            _ => {}
        }
        let mut state = self.state();
        match event {
            // CIDR identities are each node's own (their prefixes are what
            // its policies name): another node's are not written here.
            Event::IdentityUpsert { id, labels }
                if *id >= reserved::FIRST_LABELS && !labels.contains_key(CIDR_LABEL) =>
            {
                if state.policy.identities.contains(id) {
                    return;
                }
                self.policy_identity(&mut state, *id, labels);
            }
            Event::IdentityDelete(id) => {
                // The node's own stay (cached: its pods may still use them).
                if state.identities.contains_key(id) || !state.policy.identities.remove(id) {
                    return;
                }
                compiler(&mut state.policy).remove_identity(*id);
            }
            _ => return,
        }
        if let Err(e) = self.sync(&mut state) {
            log::warn!("label policy for the cluster's identities: {e}");
        }
    }

    /// A policy document put in (deleted from) etcd: applied to this node
    /// as `policyctl apply` (`delete`) without `--etcd` is.
    fn policy_from_cluster(&self, key: &ClusterKey, document: Option<&Vec<u8>>) {
        let mut state = self.state();
        if !state.policy.cluster_synced {
            state.policy.cluster_seen.insert(key.clone());
        }
        drop(state);
        let done = match document {
            Some(d) if key.kind == "SelectorRule" => serde_json::from_slice::<SelectorRule>(d)
                .map_err(|e| AgentError::BadRequest(e.to_string()))
                .and_then(|rule| self.selector_rule_local(&rule, true)),
            Some(d) => std::str::from_utf8(d)
                .map_err(|e| AgentError::BadRequest(e.to_string()))
                .and_then(|text| self.apply_local(text)),
            None => self.delete_local(&ebpfcni_api::PolicyDeletion {
                kind: Some(key.kind.clone()),
                namespace: (key.namespace != CLUSTER_SCOPE).then(|| key.namespace.clone()),
                name: Some(key.name.clone()),
                ..Default::default()
            }),
        };
        match done {
            Ok(r) if r.created.is_empty() && r.changed.is_empty() && r.deleted.is_empty() => {}
            Ok(r) => log::info!(
                "policy {} from the cluster: {} map writes",
                key.path(),
                r.map_writes
            ),
            Err(e) => log::warn!("policy {} from the cluster: not applied here: {e}", key.path()),
        }
    }

    /// etcd's first list ended: what the store kept that etcd no longer
    /// has (deleted while this node was away) goes.
    fn policies_synced(&self) {
        let mut state = self.state();
        if state.policy.cluster_synced {
            return;
        }
        state.policy.cluster_synced = true;
        let seen = std::mem::take(&mut state.policy.cluster_seen);
        let mut gone: Vec<ebpfcni_api::PolicyDeletion> = Vec::new();
        let local = state
            .policy
            .policies
            .values()
            .map(|p| (p.kind.clone(), p.namespace.clone(), p.name.clone()))
            .chain(
                state
                    .policy
                    .namespaces
                    .keys()
                    .map(|n| ("Namespace".to_string(), String::new(), n.clone())),
            );
        for (kind, namespace, name) in local {
            if etcd_key(&kind, &namespace, &name).is_ok_and(|k| !seen.contains(&k)) {
                gone.push(ebpfcni_api::PolicyDeletion {
                    kind: Some(kind),
                    namespace: (!namespace.is_empty()).then_some(namespace),
                    name: Some(name),
                    ..Default::default()
                });
            }
        }
        drop(state);
        for deletion in gone {
            if let Err(e) = self.delete_local(&deletion) {
                log::warn!("policy {deletion:?}, gone from the cluster: not removed here: {e}");
            } else {
                log::info!("policy {deletion:?}: gone from the cluster while away, removed");
            }
        }
    }

    /// Carries out `edit` through etcd: its documents put and deleted in
    /// one transaction (after they parse), then waits until this node's
    /// watcher has applied them (enforced here, as without `--etcd`).
    fn through_etcd(
        &self,
        cluster: &crate::cluster::Cluster,
        edit: Edit,
    ) -> Result<PolicyChanges, AgentError> {
        let enforcement = self.state().policy.enforcement;
        let (mut put, mut delete) = (Vec::new(), Vec::new());
        for (old, new) in edit.policies.values() {
            match (old, new) {
                (_, Some(p)) => {
                    models_of(p, enforcement)?;
                    put.push((
                        etcd_key(&p.kind, &p.namespace, &p.name)?,
                        p.source.clone().into_bytes(),
                    ));
                }
                (Some(p), None) => delete.push(etcd_key(&p.kind, &p.namespace, &p.name)?),
                (None, None) => {}
            }
        }
        for (name, (_, new)) in &edit.namespaces {
            let key = etcd_key("Namespace", "", name)?;
            match new {
                Some(labels) => put.push((key, namespace_document(name, labels))),
                None => delete.push(key),
            }
        }
        let mut reply = edit.reply.clone();
        reply.created.sort();
        reply.changed.sort();
        reply.unchanged.sort();
        if put.is_empty() && delete.is_empty() {
            return Ok(reply);
        }
        let writes_before = self.state().policy.edit_writes;
        cluster
            .change_policies(put, delete)
            .map_err(|e| AgentError::Internal(format!("writing the policies to etcd: {e}")))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            {
                let state = self.state();
                let ps = &state.policy;
                let policies = edit.policies.iter().all(|(k, (_, new))| {
                    ps.policies.get(k).map(|p| &p.source) == new.as_ref().map(|p| &p.source)
                });
                let namespaces = edit
                    .namespaces
                    .iter()
                    .all(|(n, (_, new))| ps.namespaces.get(n) == new.as_ref());
                if policies && namespaces {
                    // This node's writes meanwhile (another change
                    // applied at the same moment counts too).
                    reply.map_writes = ps.edit_writes - writes_before;
                    return Ok(reply);
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(AgentError::Internal(
                    "written to etcd, but not enforced on this node within 10 s (see the agent's log)".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Puts a stored policy's models in the compiler (replacing its old
    /// ones).
    fn install(&self, state: &mut State, p: &StoredPolicy, models: Vec<Policy>) {
        let ps = &mut state.policy;
        let key = p.key();
        let old = ps.keys.remove(&key).unwrap_or_default();
        let new: Vec<PolicyKey> = models.iter().map(|m| m.key.clone()).collect();
        for m in models {
            ps.numbers.insert(m.key.clone(), p.number);
            compiler(ps).upsert_policy(m);
        }
        for k in old.iter().filter(|k| !new.contains(k)) {
            compiler(ps).remove_policy(k);
            ps.numbers.remove(k);
        }
        ps.keys.insert(key.clone(), new);
        ps.policies.insert(key, p.clone());
    }

    fn uninstall(&self, state: &mut State, key: &str) {
        let ps = &mut state.policy;
        for k in ps.keys.remove(key).unwrap_or_default() {
            compiler(ps).remove_policy(&k);
            ps.numbers.remove(&k);
        }
        ps.policies.remove(key);
    }

    /// `POST /v1/policies`: every document of `text`, or none. With
    /// `--etcd`, written to etcd (every node applies it from its watcher),
    /// returning once this node enforces it.
    pub fn apply_policies(&self, text: &str) -> Result<PolicyChanges, AgentError> {
        let Some(cluster) = self.cluster.clone() else {
            return self.apply_local(text);
        };
        let docs =
            document::parse(text, &parse_options()).map_err(|e| AgentError::BadRequest(e.to_string()))?;
        let objects = objects(text)?;
        let (edit, _) = plan_apply(&self.state(), &docs, objects);
        self.through_etcd(&cluster, edit)
    }

    /// `apply_policies` on this node alone (the embedded store's way, and
    /// what the watcher delivers).
    fn apply_local(&self, text: &str) -> Result<PolicyChanges, AgentError> {
        let docs =
            document::parse(text, &parse_options()).map_err(|e| AgentError::BadRequest(e.to_string()))?;
        let objects = objects(text)?;
        let mut state = self.state();
        let _lock = self.maps.lock().map_err(map_error)?;
        let (edit, next) = plan_apply(&state, &docs, objects);
        let mut reply = self.edit(&mut state, edit, next)?;
        reply.created.sort();
        reply.changed.sort();
        reply.unchanged.sort();
        Ok(reply)
    }

    /// `DELETE /v1/policies` (through etcd with `--etcd`, as `apply_policies`).
    pub fn delete_policies(
        &self,
        deletion: &ebpfcni_api::PolicyDeletion,
    ) -> Result<PolicyChanges, AgentError> {
        let Some(cluster) = self.cluster.clone() else {
            return self.delete_local(deletion);
        };
        let edit = plan_delete(&self.state(), deletion)?;
        self.through_etcd(&cluster, edit)
    }

    fn delete_local(&self, deletion: &ebpfcni_api::PolicyDeletion) -> Result<PolicyChanges, AgentError> {
        let mut state = self.state();
        let _lock = self.maps.lock().map_err(map_error)?;
        let edit = plan_delete(&state, deletion)?;
        let next = state.policy.next_number;
        self.edit(&mut state, edit, next)
    }

    /// `POST /v1/selector-rules` (`allow: true`) and `DELETE` (`false`).
    pub fn selector_rule(&self, rule: &SelectorRule, allow: bool) -> Result<PolicyChanges, AgentError> {
        let name = selector_rule_name(rule);
        selector_rule_policies(rule, &name, Enforcement::Default)
            .map_err(|e| AgentError::BadRequest(format!("selector rule: {e}")))?;
        if rule.dst.is_empty() && rule.src.is_empty() {
            return Err(AgentError::BadRequest(
                "selector rule: --src and --dst select nothing in particular (give labels)".into(),
            ));
        }
        let Some(cluster) = self.cluster.clone() else {
            return self.selector_rule_local(rule, allow);
        };
        let (edit, _) = plan_rule(&self.state(), rule, allow);
        self.through_etcd(&cluster, edit)
    }

    fn selector_rule_local(&self, rule: &SelectorRule, allow: bool) -> Result<PolicyChanges, AgentError> {
        let mut state = self.state();
        let _lock = self.maps.lock().map_err(map_error)?;
        let (edit, next) = plan_rule(&state, rule, allow);
        self.edit(&mut state, edit, next)
    }

    /// Carries out an edit: CIDR identities for the prefixes it names, the
    /// store, the compiler, the maps. When the maps refuse (full), the edit
    /// is undone (store and maps) and the error returned.
    fn edit(&self, state: &mut State, edit: Edit, next: u32) -> Result<PolicyChanges, AgentError> {
        let mut reply = edit.reply.clone();
        if edit.is_empty() {
            return Ok(reply);
        }
        let enforcement = state.policy.enforcement;
        // Everything parsed first: nothing changes when a document is bad.
        let mut models: BTreeMap<String, Vec<Policy>> = BTreeMap::new();
        for (key, (_, new)) in &edit.policies {
            if let Some(p) = new {
                let m = models_of(p, enforcement)?;
                models.insert(key.clone(), m);
            }
        }
        // Prefixes that need a CIDR identity: refused when a hand entry
        // has that very prefix.
        let mut nets = BTreeSet::new();
        for m in models.values().flatten() {
            for rule in [&m.ingress, &m.egress]
                .into_iter()
                .flatten()
                .flatten()
                .chain(&m.ingress_deny)
                .chain(&m.egress_deny)
            {
                for peer in &rule.peers {
                    if let Peer::Cidr { cidr, except, .. } = peer {
                        nets.extend(cidr.without(except));
                    }
                }
            }
        }
        let mut changes = Changes::default();
        for net in nets {
            if state.policy.cidrs.contains_key(&net) {
                continue;
            }
            if let Some(hand) = self.maps.prefixes.get(to_ipnet(net)).map_err(map_error)? {
                return Err(AgentError::Conflict(format!(
                    "{net} has a hand prefix entry (endpointctl: identity {}): the agent cannot give it a \
                     CIDR identity; remove the hand entry first (endpointctl del --cidr {net})",
                    crate::agent::describe(hand)
                )));
            }
            let labels = Labels::from([(CIDR_LABEL.to_string(), net.to_string())]);
            let id = self.identity_for(state, &labels, &mut changes)?;
            state.policy.cidrs.insert(net, id);
        }
        self.commit_edit(state, &edit, changes, next)?;
        for (key, (_, new)) in &edit.policies {
            match new {
                Some(p) => self.install(state, p, models.remove(key).unwrap_or_default()),
                None => self.uninstall(state, key),
            }
        }
        self.install_namespaces(state, &edit);
        match self.sync(state) {
            Ok(writes) => {
                reply.map_writes = writes;
                state.policy.edit_writes += writes;
                Ok(reply)
            }
            Err(e) => {
                log::warn!("policy change refused by the maps ({e}); undoing it");
                let undo = edit.inverse();
                let next = state.policy.next_number;
                self.commit_edit(state, &undo, Changes::default(), next)?;
                for (key, (_, old)) in &undo.policies {
                    match old {
                        Some(p) => {
                            let m = models_of(p, enforcement)?;
                            self.install(state, p, m)
                        }
                        None => self.uninstall(state, key),
                    }
                }
                self.install_namespaces(state, &undo);
                self.sync(state)?;
                Err(e)
            }
        }
    }

    fn commit_edit(
        &self,
        state: &mut State,
        edit: &Edit,
        mut changes: Changes,
        next: u32,
    ) -> Result<(), AgentError> {
        for (key, (_, new)) in &edit.policies {
            match new {
                Some(p) => changes.policies.push(p.clone()),
                None => changes.removed_policies.push(key.clone()),
            }
        }
        for (name, (_, new)) in &edit.namespaces {
            match new {
                Some(l) => changes.namespaces.push((name.clone(), l.clone())),
                None => changes.removed_namespaces.push(name.clone()),
            }
        }
        changes.policy_next = Some(next);
        self.store.commit(&changes)?;
        state.policy.next_number = next;
        Ok(())
    }

    fn install_namespaces(&self, state: &mut State, edit: &Edit) {
        for (name, (_, new)) in &edit.namespaces {
            let labels = new.clone().unwrap_or_default();
            compiler(&mut state.policy).set_namespace(name, labels);
            match new {
                Some(l) => state.policy.namespaces.insert(name.clone(), l.clone()),
                None => state.policy.namespaces.remove(name),
            };
        }
    }

    /// `GET /v1/policies`.
    pub fn policies(&self) -> Vec<PolicySummary> {
        let mut state = self.state();
        let enforcement = state.policy.enforcement;
        let stored: Vec<StoredPolicy> = state.policy.policies.values().cloned().collect();
        let mut out = Vec::new();
        for p in stored {
            let keys = state.policy.keys.get(&p.key()).cloned().unwrap_or_default();
            let mut selected: Vec<u32> = keys
                .first()
                .and_then(|k| compiler(&mut state.policy).selected(k))
                .unwrap_or_default();
            selected.sort_unstable();
            let rules = models(&p, enforcement)
                .map(|ms| ms.iter().flat_map(rule_lines).collect())
                .unwrap_or_default();
            out.push(PolicySummary {
                number: p.number,
                kind: p.kind.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                selected,
                rules,
            });
        }
        out.sort_by_key(|p| p.number);
        out
    }

    /// Writes the difference between what label policy should hold and
    /// what the maps hold, in the order that opens no window. Returns the
    /// number of writes.
    pub(crate) fn sync(&self, state: &mut State) -> Result<usize, AgentError> {
        let _lock = self.maps.lock().map_err(map_error)?;
        if state.policy.written_rules.is_none() {
            let rules = self.maps.labels.rules().map_err(map_error)?;
            state.policy.written_rules = Some(
                rules
                    .into_iter()
                    .map(|r| (LabelRule { policy: 0, ..r }, r.policy))
                    .collect(),
            );
            state.policy.written_isolation = self.maps.labels.isolations().map_err(map_error)?;
        }
        let (rules, isolation) = desired(state);
        let mut writes = 0;
        // Whether anything may allow less than before, or resolve an
        // address differently: then tracked connections are swept and the
        // fragments' records forgotten (Maps::after_policy_change). Pure
        // additions (a new identity, new rules) need only the flags on.
        let mut shrinks = false;
        let mut adds_deny = false;
        // The CIDR identities' prefixes, before any rule names them.
        let cidrs: Vec<(Ipv4Net, u32)> = state.policy.cidrs.iter().map(|(n, i)| (*n, *i)).collect();
        for (net, id) in cidrs {
            if state.policy.prefixes_ok.contains(&net) {
                continue;
            }
            let want = Id::new(id).expect("identities are not 0");
            match self.maps.prefixes.get(to_ipnet(net)).map_err(map_error)? {
                Some(Stored::Valid(x)) if x == want => {}
                None => {
                    self.maps
                        .prefixes
                        .upsert(to_ipnet(net), want)
                        .map_err(map_error)?;
                    writes += 1;
                    shrinks = true;
                }
                Some(other) => {
                    log::warn!(
                        "{net}: a hand prefix entry (identity {}) stands where the CIDR identity {id} belongs: \
                         left alone",
                        crate::agent::describe(other)
                    );
                }
            }
            state.policy.prefixes_ok.insert(net);
        }
        let ps = &mut state.policy;
        let written = ps.written_rules.as_mut().expect("read above");
        // 1. rules added or changed.
        let mut add: Vec<(LabelRule, u32)> = rules
            .iter()
            .filter(|(k, n)| written.get(k) != Some(n))
            .map(|(k, n)| (*k, *n))
            .collect();
        add.sort_unstable();
        for (k, n) in add {
            adds_deny |= k.kind.is_deny();
            shrinks |= written.contains_key(&k);
            self.maps
                .labels
                .add(&LabelRule { policy: n, ..k })
                .map_err(map_error)?;
            written.insert(k, n);
            writes += 1;
        }
        // 2. identities unisolated (or new without isolation), 3. isolated.
        let mut later = Vec::new();
        for (id, want) in &isolation {
            match ps.written_isolation.get(id) {
                Some(old) if old == want => {}
                Some(old) if (want.ingress && !old.ingress) || (want.egress && !old.egress) => {
                    shrinks = true;
                    later.push((*id, *want))
                }
                None if want.ingress || want.egress => later.push((*id, *want)),
                _ => {
                    self.maps.labels.set_isolation(*id, *want).map_err(map_error)?;
                    ps.written_isolation.insert(*id, *want);
                    writes += 1;
                }
            }
        }
        for (id, want) in later {
            self.maps.labels.set_isolation(id, want).map_err(map_error)?;
            ps.written_isolation.insert(id, want);
            writes += 1;
        }
        // 4. rules removed.
        let mut gone: Vec<LabelRule> = written
            .keys()
            .filter(|k| !rules.contains_key(k))
            .copied()
            .collect();
        gone.sort_unstable();
        for k in gone {
            shrinks = true;
            self.maps.labels.remove(&k).map_err(map_error)?;
            written.remove(&k);
            writes += 1;
        }
        // 5. identities no longer under label policy.
        let gone: Vec<u32> = ps
            .written_isolation
            .keys()
            .filter(|id| !isolation.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            shrinks = true;
            self.maps.labels.remove_isolation(id).map_err(map_error)?;
            ps.written_isolation.remove(&id);
            writes += 1;
        }
        if writes > 0 {
            // (A rule's shape flag is on from its add: LabelPolicyMap::add.)
            let flags_on = self.maps.config.label_policy().map_err(map_error)?
                && (!adds_deny || self.maps.config.label_deny().map_err(map_error)?);
            if shrinks || !flags_on {
                self.maps.after_policy_change().map_err(map_error)?;
            }
            log::info!("label policy: {writes} map writes");
        }
        Ok(writes)
    }
}

/// What applying `objects` changes on top of `state` (and the next policy
/// number).
fn plan_apply(state: &State, docs: &document::Documents, objects: Vec<Object>) -> (Edit, u32) {
    let mut edit = Edit::default();
    let mut next = state.policy.next_number.max(1);
    for o in objects {
        if o.kind == "Namespace" {
            let labels = docs.namespaces.get(&o.name).cloned().unwrap_or_default();
            let what = format!("Namespace {}", o.name);
            match state.policy.namespaces.get(&o.name) {
                Some(old) if *old == labels => edit.reply.unchanged.push(what),
                old => {
                    if old.is_some() {
                        edit.reply.changed.push(what)
                    } else {
                        edit.reply.created.push(what)
                    }
                    edit.namespaces
                        .insert(o.name.clone(), (old.cloned(), Some(labels)));
                }
            }
            continue;
        }
        let mut p = StoredPolicy {
            number: 0,
            kind: o.kind,
            namespace: o.namespace.unwrap_or_default(),
            name: o.name,
            source: o.json,
        };
        let key = p.key();
        match state.policy.policies.get(&key) {
            Some(old) if old.source == p.source => edit.reply.unchanged.push(describe(&p)),
            Some(old) => {
                p.number = old.number;
                edit.reply.changed.push(describe(&p));
                edit.policies.insert(key, (Some(old.clone()), Some(p)));
            }
            None => {
                p.number = next;
                next += 1;
                edit.reply.created.push(describe(&p));
                edit.policies.insert(key, (None, Some(p)));
            }
        }
    }
    (edit, next)
}

/// What deleting `deletion` changes on top of `state`.
fn plan_delete(state: &State, deletion: &ebpfcni_api::PolicyDeletion) -> Result<Edit, AgentError> {
    let mut edit = Edit::default();

    let mut wanted: Vec<(String, String, String)> = Vec::new(); // kind, namespace, name
    if deletion.all {
        for p in state.policy.policies.values() {
            wanted.push((p.kind.clone(), p.namespace.clone(), p.name.clone()));
        }
        for name in state.policy.namespaces.keys() {
            wanted.push(("Namespace".into(), String::new(), name.clone()));
        }
    } else if let Some(text) = &deletion.yaml {
        document::parse(text, &parse_options()).map_err(|e| AgentError::BadRequest(e.to_string()))?;
        for o in objects(text)? {
            wanted.push((o.kind, o.namespace.unwrap_or_default(), o.name));
        }
    } else {
        let (Some(kind), Some(name)) = (&deletion.kind, &deletion.name) else {
            return Err(AgentError::BadRequest(
                "name the policies to delete: yaml, kind and name, or all".into(),
            ));
        };
        let kind = kind_name(kind).ok_or_else(|| {
            AgentError::BadRequest(format!(
                "unknown kind {kind:?} (networkpolicy, ciliumnetworkpolicy, selectorrule or namespace)"
            ))
        })?;
        let namespace = match kind {
            "Namespace" | "SelectorRule" => String::new(),
            _ => deletion
                .namespace
                .clone()
                .unwrap_or_else(|| ebpfcni_policy::DEFAULT_NAMESPACE.into()),
        };
        wanted.push((kind.to_string(), namespace, name.clone()));
    }
    for (kind, namespace, name) in wanted {
        if kind == "Namespace" {
            match state.policy.namespaces.get(&name) {
                Some(old) => {
                    edit.reply.deleted.push(format!("Namespace {name}"));
                    edit.namespaces.insert(name, (Some(old.clone()), None));
                }
                None => edit.reply.not_found.push(format!("Namespace {name}")),
            }
            continue;
        }
        let probe = StoredPolicy {
            number: 0,
            kind,
            namespace,
            name,
            source: String::new(),
        };
        match state.policy.policies.get(&probe.key()) {
            Some(old) => {
                edit.reply.deleted.push(describe(old));
                edit.policies.insert(probe.key(), (Some(old.clone()), None));
            }
            None => edit.reply.not_found.push(describe(&probe)),
        }
    }
    Ok(edit)
}

/// What allowing (`allow`) or removing a selector rule changes on top of
/// `state` (and the next policy number).
fn plan_rule(state: &State, rule: &SelectorRule, allow: bool) -> (Edit, u32) {
    let name = selector_rule_name(rule);
    let mut p = StoredPolicy {
        number: 0,
        kind: PolicyKind::SelectorRule.to_string(),
        namespace: String::new(),
        name,
        source: serde_json::to_string(rule).expect("rules serialise"),
    };
    let key = p.key();
    let old = state.policy.policies.get(&key).cloned();
    let mut edit = Edit::default();
    let mut next = state.policy.next_number.max(1);
    match (allow, old) {
        (true, Some(_)) => edit.reply.unchanged.push(describe(&p)),
        (true, None) => {
            p.number = next;
            next += 1;
            edit.reply.created.push(describe(&p));
            edit.policies.insert(key, (None, Some(p)));
        }
        (false, Some(old)) => {
            edit.reply.deleted.push(describe(&old));
            edit.policies.insert(key, (Some(old), None));
        }
        (false, None) => edit.reply.not_found.push(describe(&p)),
    }
    (edit, next)
}

fn models_of(p: &StoredPolicy, enforcement: Enforcement) -> Result<Vec<Policy>, AgentError> {
    models(p, enforcement).map_err(|e| AgentError::BadRequest(format!("{}: {e}", describe(p))))
}

fn to_ipnet(net: Ipv4Net) -> ipnet::Ipv4Net {
    ipnet::Ipv4Net::new(net.addr(), net.len()).expect("a valid prefix")
}

/// What label policy should hold: rules (policy 0 in the key) with their
/// policy's number, and each identity's isolation.
fn desired(state: &mut State) -> (HashMap<LabelRule, u32>, BTreeMap<u32, Isolation>) {
    let pods: Vec<(Ipv4Addr, u32)> = state
        .endpoints
        .values()
        .filter(|e| e.state == EndpointState::Ready && e.identity >= reserved::FIRST_LABELS)
        .flat_map(|e| e.ips.iter().map(move |ip| (*ip, e.identity)))
        .collect();
    let ps = &mut state.policy;
    let mut isolation: BTreeMap<u32, Isolation> = BTreeMap::new();
    for id in [reserved::HOST, reserved::WORLD, reserved::REMOTE_NODE]
        .into_iter()
        .chain(ps.identities.iter().copied())
        .chain(ps.cidrs.values().copied())
    {
        isolation.insert(id, Isolation::default());
    }
    let mut rules: HashMap<LabelRule, u32> = HashMap::new();
    if ps.enforcement == Enforcement::Never {
        return (rules, isolation);
    }
    let always = ps.enforcement == Enforcement::Always;
    let identities = ps.identities.clone();
    let cidrs = ps.cidrs.clone();
    let numbers = ps.numbers.clone();
    let c = compiler(ps);
    for (id, d) in c.isolations() {
        if let Some(i) = isolation.get_mut(id) {
            match d {
                Direction::Ingress => i.ingress = true,
                Direction::Egress => i.egress = true,
            }
        }
    }
    if always {
        for id in &identities {
            isolation.insert(
                *id,
                Isolation {
                    ingress: true,
                    egress: true,
                },
            );
        }
    }
    let mut put = |rule: LabelRule, number: u32| {
        let n = rules.entry(rule).or_insert(number);
        *n = (*n).min(number);
    };
    // The node may always talk with its pods (Kubernetes), both ways.
    for (id, i) in &isolation {
        for (on, kind) in [
            (i.ingress, LabelKind::IngressAllow),
            (i.egress, LabelKind::EgressAllow),
        ] {
            if on && *id >= reserved::FIRST_LABELS {
                put(
                    LabelRule {
                        subject: *id,
                        peer: reserved::HOST,
                        kind,
                        selector: Selector::Any,
                        policy: 0,
                    },
                    0,
                );
            }
        }
    }
    for (key, e) in c.entries_by_policy() {
        let number = numbers.get(key).copied().unwrap_or(0);
        for peer in expand(e.peer, &cidrs, &pods) {
            for selector in selectors(e) {
                put(
                    LabelRule {
                        subject: e.subject,
                        peer,
                        kind: kind(e),
                        selector,
                        policy: 0,
                    },
                    number,
                );
            }
        }
    }
    (rules, isolation)
}

fn kind(e: &Entry) -> LabelKind {
    match (e.direction, e.deny) {
        (Direction::Ingress, false) => LabelKind::IngressAllow,
        (Direction::Egress, false) => LabelKind::EgressAllow,
        (Direction::Ingress, true) => LabelKind::IngressDeny,
        (Direction::Egress, true) => LabelKind::EgressDeny,
    }
}

/// The peers of the map an entry's peer stands for.
fn expand(peer: PeerKey, cidrs: &BTreeMap<Ipv4Net, u32>, pods: &[(Ipv4Addr, u32)]) -> BTreeSet<u32> {
    let inside = |net: Ipv4Net| {
        cidrs
            .iter()
            .filter(move |(n, _)| net.covers(n))
            .map(|(_, id)| *id)
    };
    match peer {
        PeerKey::Any => BTreeSet::from([ANY_PEER]),
        // Cilium's world: CIDR identities are outside the cluster too.
        PeerKey::Identity(reserved::WORLD) => std::iter::once(reserved::WORLD)
            .chain(cidrs.values().copied())
            .collect(),
        PeerKey::Identity(id) => BTreeSet::from([id]),
        PeerKey::WorldCidr(net) => inside(net).collect(),
        PeerKey::Cidr(net) => inside(net)
            .chain(pods.iter().filter(|(ip, _)| net.contains(*ip)).map(|(_, id)| *id))
            .collect(),
    }
}

/// The map selectors of an entry's protocol and ports.
fn selectors(e: &Entry) -> Vec<Selector> {
    let all = e.first == 0 && e.last == u16::MAX;
    let proto = |p: Protocol| ebpfcni::Protocol(p.number());
    match e.protocol {
        None if all => vec![Selector::Any],
        Some(p) if all => vec![Selector::Protocol(proto(p))],
        Some(p) => vec![Selector::Ports {
            protocol: proto(p),
            first: e.first,
            last: e.last,
        }],
        // Cilium's ANY with ports: each protocol with ports.
        None => [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .map(|p| Selector::Ports {
                protocol: proto(p),
                first: e.first,
                last: e.last,
            })
            .collect(),
    }
}

/// A policy's rules, one line each, for people.
fn rule_lines(p: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let dirs = [
        (Direction::Ingress, "from", p.ingress.as_deref(), false),
        (Direction::Egress, "to", p.egress.as_deref(), false),
        (Direction::Ingress, "from", Some(p.ingress_deny.as_slice()), true),
        (Direction::Egress, "to", Some(p.egress_deny.as_slice()), true),
    ];
    for (dir, word, rules, deny) in dirs {
        let Some(rules) = rules else { continue };
        if rules.is_empty() && !deny {
            out.push(format!("{dir}: isolated, nothing allowed"));
        }
        for r in rules {
            let mut line = format!("{dir} {} {word} ", if deny { "deny" } else { "allow" });
            if r.peers.is_empty() {
                line.push_str("anyone");
            } else {
                let peers: Vec<String> = r.peers.iter().map(peer_text).collect();
                line.push_str(&peers.join(" or "));
            }
            if !r.ports.is_empty() {
                let ports: Vec<String> = r.ports.iter().map(port_text).collect();
                let _ = write!(line, " on {}", ports.join(", "));
            }
            out.push(line);
        }
    }
    out
}

fn peer_text(p: &Peer) -> String {
    match p {
        Peer::Endpoints(sel) => {
            let ns = match &sel.namespaces {
                Namespaces::Named(n) => format!("namespace {n}"),
                Namespaces::Matching(s) if s.is_empty() => "any namespace".into(),
                Namespaces::Matching(s) => format!("namespaces {s}"),
            };
            format!("pods {} in {ns}", sel.pods)
        }
        Peer::Cidr { cidr, except, .. } if except.is_empty() => format!("cidr {cidr}"),
        Peer::Cidr { cidr, except, .. } => format!(
            "cidr {cidr} except {}",
            except.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(",")
        ),
        Peer::Entity(Entity::World) => "entity world".into(),
        Peer::Entity(Entity::Host) => "entity host".into(),
        Peer::Entity(Entity::Cluster) => "entity cluster".into(),
        Peer::Entity(Entity::All) => "entity all".into(),
        Peer::Nothing => "nobody".into(),
    }
}

fn port_text(s: &PortSpec) -> String {
    let proto = s.protocol.map_or("any".to_string(), |p| p.to_string());
    match &s.ports {
        Ports::All => proto,
        Ports::Range(a, b) if a == b => format!("{a}/{proto}"),
        Ports::Range(a, b) => format!("{a}-{b}/{proto}"),
        Ports::Named(n) => format!("{n}/{proto}"),
    }
}
