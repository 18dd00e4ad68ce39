//! Policy documents: a YAML stream (many documents, `kind: List` with
//! items) of NetworkPolicy (`networking.k8s.io/v1`, the k8s-openapi types),
//! Namespace (`v1`) and the CiliumNetworkPolicy (`cilium.io/v2`) subset,
//! checked as the API server checks them, into the [`crate::model`].
//!
//! All or nothing: one bad document refuses the whole text, with the
//! document (its place, kind, namespace and name) and the field named.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;

use crate::cidr::Ipv4Net;
use crate::model::{Entity, Peer, Policy, PolicyKey, PolicyKind, PortSpec, Ports, Rule};
use crate::selector::{
    check_key, check_value, requirement, EndpointSelector, LabelSelector, Namespaces, SelectorError,
};
use crate::{Labels, Protocol, DEFAULT_NAMESPACE, POD_NAMESPACE_LABEL};

/// What parsing needs to know about the world.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    /// Whether containers' named ports are known (from the runtime): named
    /// ports in policies are refused when they are not.
    pub named_ports_known: bool,
}

/// What a text holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Documents {
    pub policies: Vec<Policy>,
    /// Namespaces' own labels.
    pub namespaces: BTreeMap<String, Labels>,
}

/// A refused document: which one, which field, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// The document's place in the stream, from 1.
    pub document: usize,
    /// The item's place in a `List`, from 0.
    pub item: Option<usize>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Where in the document (`spec.ingress[0].from[1].ipBlock.cidr`), empty
    /// for the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(i) = self.item {
            write!(f, " item {i}")?;
        }
        match (&self.kind, &self.namespace, &self.name) {
            (Some(k), Some(ns), Some(n)) => write!(f, " ({k} {ns}/{n})")?,
            (Some(k), None, Some(n)) => write!(f, " ({k} {n})")?,
            (Some(k), _, None) => write!(f, " ({k})")?,
            _ => {}
        }
        if !self.field.is_empty() {
            write!(f, ", field {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for DocumentError {}

/// An error inside one document, before its place is added.
struct Bad {
    field: String,
    message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> Bad {
    Bad {
        field: field.into(),
        message: message.into(),
    }
}

impl From<SelectorError> for Bad {
    fn from(e: SelectorError) -> Self {
        bad(e.field, e.why)
    }
}

/// Where a document sits, and what it says it is.
#[derive(Clone, Default)]
struct Place {
    document: usize,
    item: Option<usize>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl Place {
    fn error(&self, b: Bad) -> Box<DocumentError> {
        Box::new(DocumentError {
            document: self.document,
            item: self.item,
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            field: b.field,
            message: b.message,
        })
    }
}

/// Parses a YAML stream: all of it, or an error naming the first bad
/// document and field.
pub fn parse(text: &str, opts: &ParseOptions) -> Result<Documents, Box<DocumentError>> {
    let mut out = Documents::default();
    let mut seen: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let place = Place {
            document: i + 1,
            ..Place::default()
        };
        let value = Value::deserialize(doc)
            .map_err(|e| place.error(bad("", format!("not a YAML document of objects: {e}"))))?;
        if value.is_null() {
            continue; // an empty document (`---` alone)
        }
        match value.get("kind").and_then(Value::as_str) {
            Some("List") => {
                check_api_version(&value, "v1").map_err(|b| place.error(b))?;
                let items = match value.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        let p = Place {
                            kind: Some("List".into()),
                            ..place.clone()
                        };
                        return Err(p.error(bad("items", "must be a list of objects")));
                    }
                };
                for (j, item) in items.into_iter().enumerate() {
                    let p = Place {
                        item: Some(j),
                        ..place.clone()
                    };
                    one(item, p, opts, &mut out, &mut seen)?;
                }
            }
            _ => one(value, place, opts, &mut out, &mut seen)?,
        }
    }
    Ok(out)
}

fn check_api_version(v: &Value, want: &str) -> Result<(), Bad> {
    match v.get("apiVersion").and_then(Value::as_str) {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(bad(
            "apiVersion",
            format!("{got:?} is not the API version of this kind (want {want:?})"),
        )),
        None => Err(bad("apiVersion", format!("missing (want {want:?})"))),
    }
}

fn one(
    value: Value,
    mut place: Place,
    opts: &ParseOptions,
    out: &mut Documents,
    seen: &mut BTreeMap<(String, String, String), String>,
) -> Result<(), Box<DocumentError>> {
    let kind = value.get("kind").and_then(Value::as_str).map(str::to_string);
    place.kind = kind.clone();
    let meta = value.get("metadata");
    place.name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let namespaced = kind.as_deref() != Some("Namespace");
    if namespaced {
        place.namespace = Some(
            meta.and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_NAMESPACE)
                .to_string(),
        );
    }
    let Some(kind) = kind else {
        return Err(place.error(bad("kind", "missing")));
    };
    let here = |b: Bad| place.error(b);
    match kind.as_str() {
        "NetworkPolicy" => {
            check_api_version(&value, "networking.k8s.io/v1").map_err(here)?;
            let np: NetworkPolicy = typed(&value).map_err(here)?;
            let policy = network_policy(&np, opts).map_err(here)?;
            duplicate(seen, &place, &kind)?;
            out.policies.push(policy);
        }
        "CiliumNetworkPolicy" => {
            check_api_version(&value, "cilium.io/v2").map_err(here)?;
            let cnp: Cnp = typed(&value).map_err(here)?;
            let policy = cilium_policy(&cnp, place.namespace.as_deref().unwrap_or_default()).map_err(here)?;
            duplicate(seen, &place, &kind)?;
            out.policies.push(policy);
        }
        "Namespace" => {
            check_api_version(&value, "v1").map_err(here)?;
            let ns: Namespace = typed(&value).map_err(here)?;
            let name = object_name(&ns.metadata).map_err(here)?;
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            for (k, v) in &labels {
                check_key(k).map_err(|why| here(bad("metadata.labels", why)))?;
                check_value(v).map_err(|why| here(bad(format!("metadata.labels.{k}"), why)))?;
            }
            duplicate(seen, &place, &kind)?;
            out.namespaces.insert(name, labels);
        }
        other => {
            return Err(here(bad(
                "kind",
                format!("unknown kind {other:?} (NetworkPolicy, CiliumNetworkPolicy, Namespace or List)"),
            )))
        }
    }
    Ok(())
}

fn duplicate(
    seen: &mut BTreeMap<(String, String, String), String>,
    place: &Place,
    kind: &str,
) -> Result<(), Box<DocumentError>> {
    let key = (
        kind.to_string(),
        place.namespace.clone().unwrap_or_default(),
        place.name.clone().unwrap_or_default(),
    );
    let at = match place.item {
        Some(i) => format!("document {} item {i}", place.document),
        None => format!("document {}", place.document),
    };
    if let Some(first) = seen.get(&key) {
        return Err(place.error(bad(
            "metadata.name",
            format!("duplicate: {first} has the same kind, namespace and name"),
        )));
    }
    seen.insert(key, at);
    Ok(())
}

/// Deserializes into the API type, naming the field that does not fit, and
/// refuses fields the type does not know (k8s-openapi skips them silently).
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Result<T, Bad> {
    let t: T = serde_path_to_error::deserialize(value.clone())
        .map_err(|e| bad(e.path().to_string(), e.inner().to_string()))?;
    let back = serde_json::to_value(&t).map_err(|e| bad("", e.to_string()))?;
    if let Some(field) = unknown_field(value, &back, "") {
        return Err(bad(field, "unknown field (not part of this kind)"));
    }
    Ok(t)
}

fn unknown_field(input: &Value, known: &Value, at: &str) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => i.iter().find_map(|(key, v)| match k.get(key) {
            Some(kv) => unknown_field(v, kv, &join(key)),
            // A null says nothing; nor does the empty `status: {}` that
            // `kubectl get -o yaml` prints. Any other unknown key is refused.
            None if v.is_null() || (at.is_empty() && key == "status" && is_empty(v)) => None,
            None => Some(join(key)),
        }),
        (Value::Object(i), _) => i.iter().find(|(_, v)| !v.is_null()).map(|(key, _)| join(key)),
        (Value::Array(i), Value::Array(k)) => i
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(n, (iv, kv))| unknown_field(iv, kv, &format!("{at}[{n}]"))),
        _ => None,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn object_name(meta: &ObjectMeta) -> Result<String, Bad> {
    match meta.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(bad("metadata.name", "missing")),
    }
}

fn selector(sel: &K8sSelector, field: &str) -> Result<LabelSelector, Bad> {
    Ok(LabelSelector::from_k8s(sel, field)?)
}

fn network_policy(np: &NetworkPolicy, opts: &ParseOptions) -> Result<Policy, Bad> {
    let name = object_name(&np.metadata)?;
    let ns = np
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let spec = np.spec.as_ref().ok_or_else(|| bad("spec", "missing"))?;
    let pods = match &spec.pod_selector {
        Some(s) => selector(s, "spec.podSelector")?,
        None => LabelSelector::all(),
    };
    let ingress_rules = spec.ingress.as_deref().unwrap_or_default();
    let egress_rules = spec.egress.as_deref().unwrap_or_default();
    let (mut isolates_in, mut isolates_out) = (false, false);
    match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        // Kubernetes' defaults (also for an empty list): Ingress always,
        // Egress when there are egress rules.
        None => {
            isolates_in = true;
            isolates_out = !egress_rules.is_empty();
        }
        Some(types) => {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => isolates_in = true,
                    "Egress" => isolates_out = true,
                    other => {
                        return Err(bad(
                            format!("spec.policyTypes[{i}]"),
                            format!("{other:?} is not a policy type (Ingress or Egress)"),
                        ))
                    }
                }
            }
        }
    }
    let mut ingress = Vec::new();
    for (i, r) in ingress_rules.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        ingress.push(Rule {
            peers: np_peers(r.from.as_deref(), &ns, &format!("{at}.from"))?,
            ports: np_ports(r.ports.as_deref(), &format!("{at}.ports"), opts)?,
        });
    }
    let mut egress = Vec::new();
    for (i, r) in egress_rules.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        egress.push(Rule {
            peers: np_peers(r.to.as_deref(), &ns, &format!("{at}.to"))?,
            ports: np_ports(r.ports.as_deref(), &format!("{at}.ports"), opts)?,
        });
    }
    Ok(Policy {
        key: PolicyKey {
            kind: PolicyKind::NetworkPolicy,
            namespace: ns.clone(),
            name,
        },
        subject: EndpointSelector {
            pods,
            namespaces: Namespaces::Named(ns),
        },
        ingress: isolates_in.then_some(ingress),
        egress: isolates_out.then_some(egress),
        ingress_deny: Vec::new(),
        egress_deny: Vec::new(),
    })
}

fn np_peers(peers: Option<&[NetworkPolicyPeer]>, ns: &str, at: &str) -> Result<Vec<Peer>, Bad> {
    let mut out = Vec::new();
    for (i, p) in peers.unwrap_or_default().iter().enumerate() {
        let at = format!("{at}[{i}]");
        let has_selector = p.pod_selector.is_some() || p.namespace_selector.is_some();
        if let Some(block) = &p.ip_block {
            if has_selector {
                return Err(bad(
                    at,
                    "ipBlock may not be given with podSelector or namespaceSelector",
                ));
            }
            out.push(ip_block(
                &block.cidr,
                block.except.as_deref().unwrap_or_default(),
                true,
                &format!("{at}.ipBlock"),
            )?);
            continue;
        }
        let pods = match &p.pod_selector {
            Some(s) => selector(s, &format!("{at}.podSelector"))?,
            None => LabelSelector::all(),
        };
        let namespaces = match &p.namespace_selector {
            Some(s) => Namespaces::Matching(selector(s, &format!("{at}.namespaceSelector"))?),
            // Only a podSelector: pods of the policy's own namespace.
            None if p.pod_selector.is_some() => Namespaces::Named(ns.to_string()),
            None => return Err(bad(at, "a peer needs podSelector, namespaceSelector or ipBlock")),
        };
        out.push(Peer::Endpoints(EndpointSelector { pods, namespaces }));
    }
    Ok(out)
}

fn ip_block(cidr: &str, except: &[String], pods: bool, at: &str) -> Result<Peer, Bad> {
    let net: Ipv4Net = cidr
        .parse()
        .map_err(|e: crate::cidr::CidrError| bad(format!("{at}.cidr"), e.to_string()))?;
    let mut ex = Vec::new();
    for (i, e) in except.iter().enumerate() {
        let field = format!("{at}.except[{i}]");
        let x: Ipv4Net = e
            .parse()
            .map_err(|err: crate::cidr::CidrError| bad(field.clone(), err.to_string()))?;
        // Kubernetes: each except must be a strict subset of cidr.
        if !net.covers(&x) || x == net {
            return Err(bad(field, format!("{x} is not strictly inside {net}")));
        }
        ex.push(x);
    }
    Ok(Peer::Cidr {
        cidr: net,
        except: ex,
        pods,
    })
}

fn port_number(n: i64, field: &str) -> Result<u16, Bad> {
    if (1..=65535).contains(&n) {
        Ok(n as u16)
    } else {
        Err(bad(field, format!("port {n} is out of range (1 to 65535)")))
    }
}

fn np_ports(
    ports: Option<&[NetworkPolicyPort]>,
    at: &str,
    opts: &ParseOptions,
) -> Result<Vec<PortSpec>, Bad> {
    let mut out = Vec::new();
    for (i, p) in ports.unwrap_or_default().iter().enumerate() {
        let at = format!("{at}[{i}]");
        let protocol = match p.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(s) => Protocol::parse(s)
                .ok_or_else(|| bad(format!("{at}.protocol"), format!("{s:?} is not TCP, UDP or SCTP")))?,
        };
        let ports = match (&p.port, p.end_port) {
            (None, None) => Ports::All,
            (None, Some(_)) => return Err(bad(format!("{at}.endPort"), "endPort needs a numeric port")),
            (Some(IntOrString::Int(n)), end) => {
                let first = port_number((*n).into(), &format!("{at}.port"))?;
                let last = match end {
                    None => first,
                    Some(e) => {
                        let last = port_number(e.into(), &format!("{at}.endPort"))?;
                        if last < first {
                            return Err(bad(
                                format!("{at}.endPort"),
                                format!("endPort {last} is below port {first}"),
                            ));
                        }
                        last
                    }
                };
                Ports::Range(first, last)
            }
            (Some(IntOrString::String(name)), end) => {
                if end.is_some() {
                    return Err(bad(
                        format!("{at}.endPort"),
                        "endPort needs a numeric port, not a named one",
                    ));
                }
                if let Ok(n) = name.parse::<i64>() {
                    return Err(bad(
                        format!("{at}.port"),
                        format!("{n:?}: a number must not be quoted (or it is a name)"),
                    ));
                }
                check_port_name(name).map_err(|why| bad(format!("{at}.port"), why))?;
                if !opts.named_ports_known {
                    return Err(bad(
                        format!("{at}.port"),
                        format!("named port {name:?}: no container ports are known here, so names cannot be resolved; use a number"),
                    ));
                }
                Ports::Named(name.clone())
            }
        };
        out.push(PortSpec {
            protocol: Some(protocol),
            ports,
        });
    }
    Ok(out)
}

/// An IANA service name, as Kubernetes checks container port names.
fn check_port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && name.bytes().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a port name (1 to 15 of [a-z0-9-], a letter, no '--')"
        ))
    }
}

// ---- CiliumNetworkPolicy: the subset, every other field refused ----

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Cnp {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: Option<CnpSpec>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CnpSpec {
    endpoint_selector: CnpSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ingress: Option<Vec<CnpIngress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    egress: Option<Vec<CnpEgress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ingress_deny: Option<Vec<CnpIngress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    egress_deny: Option<Vec<CnpEgress>>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CnpSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    match_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    match_expressions: Option<Vec<CnpRequirement>>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CnpRequirement {
    key: String,
    operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CnpCidrSet {
    cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    except: Option<Vec<String>>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CnpIngress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_endpoints: Option<Vec<CnpSelector>>,
    #[serde(default, rename = "fromCIDR", skip_serializing_if = "Option::is_none")]
    from_cidr: Option<Vec<String>>,
    #[serde(default, rename = "fromCIDRSet", skip_serializing_if = "Option::is_none")]
    from_cidr_set: Option<Vec<CnpCidrSet>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_entities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_ports: Option<Vec<CnpPortRule>>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CnpEgress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_endpoints: Option<Vec<CnpSelector>>,
    #[serde(default, rename = "toCIDR", skip_serializing_if = "Option::is_none")]
    to_cidr: Option<Vec<String>>,
    #[serde(default, rename = "toCIDRSet", skip_serializing_if = "Option::is_none")]
    to_cidr_set: Option<Vec<CnpCidrSet>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_entities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_ports: Option<Vec<CnpPortRule>>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CnpPortRule {
    ports: Vec<CnpPort>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CnpPort {
    port: StrOrInt,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_port: Option<i64>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
enum StrOrInt {
    Int(i64),
    Str(String),
}

/// A Cilium label key: `k8s:` and `any:` sources are the plain key here;
/// other sources (`reserved:`, `cidr:`...) are outside the subset.
fn cilium_key(key: &str, at: &str) -> Result<String, Bad> {
    let plain = key
        .strip_prefix("k8s:")
        .or_else(|| key.strip_prefix("any:"))
        .unwrap_or(key);
    if plain.contains(':') {
        return Err(bad(
            at,
            format!("label key {key:?}: only k8s: and any: label sources are supported"),
        ));
    }
    Ok(plain.to_string())
}

/// A Cilium endpoint selector in a policy of namespace `ns`: limited to that
/// namespace unless it names `io.kubernetes.pod.namespace` (as Cilium does).
fn cilium_selector(sel: &CnpSelector, ns: &str, at: &str) -> Result<EndpointSelector, Bad> {
    let mut pods = LabelSelector::default();
    for (k, v) in sel.match_labels.iter().flatten() {
        let key = cilium_key(k, &format!("{at}.matchLabels"))?;
        check_key(&key).map_err(|why| bad(format!("{at}.matchLabels"), why))?;
        check_value(v).map_err(|why| bad(format!("{at}.matchLabels.{k}"), why))?;
        pods.labels.insert(key, v.clone());
    }
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let field = format!("{at}.matchExpressions[{i}]");
        let key = cilium_key(&e.key, &format!("{field}.key"))?;
        pods.requirements
            .insert(requirement(&key, &e.operator, e.values.as_deref(), &field)?);
    }
    let namespaces = if pods.names(POD_NAMESPACE_LABEL) {
        Namespaces::Matching(LabelSelector::all())
    } else {
        Namespaces::Named(ns.to_string())
    };
    Ok(EndpointSelector { pods, namespaces })
}

fn entity(s: &str, at: &str) -> Result<Entity, Bad> {
    match s {
        "world" => Ok(Entity::World),
        "host" => Ok(Entity::Host),
        "cluster" => Ok(Entity::Cluster),
        "all" => Ok(Entity::All),
        other => Err(bad(
            at,
            format!("entity {other:?} is outside the subset (world, host, cluster, all)"),
        )),
    }
}

fn cilium_ports(rules: Option<&[CnpPortRule]>, at: &str) -> Result<Vec<PortSpec>, Bad> {
    let mut out = Vec::new();
    for (i, r) in rules.unwrap_or_default().iter().enumerate() {
        for (j, p) in r.ports.iter().enumerate() {
            let at = format!("{at}[{i}].ports[{j}]");
            let protocol = match p.protocol.as_deref() {
                None | Some("ANY") => None,
                Some(s) => Some(Protocol::parse(s).ok_or_else(|| {
                    bad(
                        format!("{at}.protocol"),
                        format!("{s:?} is not TCP, UDP, SCTP or ANY"),
                    )
                })?),
            };
            let n = match &p.port {
                StrOrInt::Int(n) => *n,
                StrOrInt::Str(s) => s.parse::<i64>().map_err(|_| {
                    bad(
                        format!("{at}.port"),
                        format!(
                            "{s:?}: named ports are outside the CiliumNetworkPolicy subset; use a number"
                        ),
                    )
                })?,
            };
            // Cilium: port 0 is every port.
            let ports = if n == 0 && p.end_port.is_none() {
                Ports::All
            } else {
                let first = port_number(n, &format!("{at}.port"))?;
                let last = match p.end_port {
                    None => first,
                    Some(e) => {
                        let last = port_number(e, &format!("{at}.endPort"))?;
                        if last < first {
                            return Err(bad(
                                format!("{at}.endPort"),
                                format!("endPort {last} is below port {first}"),
                            ));
                        }
                        last
                    }
                };
                Ports::Range(first, last)
            };
            out.push(PortSpec { protocol, ports });
        }
    }
    Ok(out)
}

struct CnpPeers<'a> {
    endpoints: Option<&'a [CnpSelector]>,
    cidr: Option<&'a [String]>,
    cidr_set: Option<&'a [CnpCidrSet]>,
    entities: Option<&'a [String]>,
    names: [&'static str; 4],
}

fn cilium_rule(p: CnpPeers<'_>, ports: Option<&[CnpPortRule]>, ns: &str, at: &str) -> Result<Rule, Bad> {
    let mut peers = Vec::new();
    for (i, s) in p.endpoints.unwrap_or_default().iter().enumerate() {
        peers.push(Peer::Endpoints(cilium_selector(
            s,
            ns,
            &format!("{at}.{}[{i}]", p.names[0]),
        )?));
    }
    for (i, c) in p.cidr.unwrap_or_default().iter().enumerate() {
        peers.push(ip_block(c, &[], false, &format!("{at}.{}[{i}]", p.names[1]))?);
    }
    for (i, c) in p.cidr_set.unwrap_or_default().iter().enumerate() {
        peers.push(ip_block(
            &c.cidr,
            c.except.as_deref().unwrap_or_default(),
            false,
            &format!("{at}.{}[{i}]", p.names[2]),
        )?);
    }
    for (i, e) in p.entities.unwrap_or_default().iter().enumerate() {
        peers.push(Peer::Entity(entity(e, &format!("{at}.{}[{i}]", p.names[3]))?));
    }
    let ports = cilium_ports(ports, &format!("{at}.toPorts"))?;
    // Cilium: a rule without peers allows every peer on its ports (an
    // L4-only rule), but a rule without peers and ports (`{}`, the
    // default-deny idiom) or with empty peer lists allows nobody.
    let named_none =
        p.endpoints.is_some() || p.cidr.is_some() || p.cidr_set.is_some() || p.entities.is_some();
    if peers.is_empty() && (named_none || ports.is_empty()) {
        peers.push(Peer::Nothing);
    }
    Ok(Rule { peers, ports })
}

const FROM: [&str; 4] = ["fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities"];
const TO: [&str; 4] = ["toEndpoints", "toCIDR", "toCIDRSet", "toEntities"];

fn cilium_ingress(rules: &[CnpIngress], ns: &str, at: &str) -> Result<Vec<Rule>, Bad> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            cilium_rule(
                CnpPeers {
                    endpoints: r.from_endpoints.as_deref(),
                    cidr: r.from_cidr.as_deref(),
                    cidr_set: r.from_cidr_set.as_deref(),
                    entities: r.from_entities.as_deref(),
                    names: FROM,
                },
                r.to_ports.as_deref(),
                ns,
                &format!("{at}[{i}]"),
            )
        })
        .collect()
}

fn cilium_egress(rules: &[CnpEgress], ns: &str, at: &str) -> Result<Vec<Rule>, Bad> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            cilium_rule(
                CnpPeers {
                    endpoints: r.to_endpoints.as_deref(),
                    cidr: r.to_cidr.as_deref(),
                    cidr_set: r.to_cidr_set.as_deref(),
                    entities: r.to_entities.as_deref(),
                    names: TO,
                },
                r.to_ports.as_deref(),
                ns,
                &format!("{at}[{i}]"),
            )
        })
        .collect()
}

fn cilium_policy(cnp: &Cnp, ns: &str) -> Result<Policy, Bad> {
    let name = object_name(&cnp.metadata)?;
    let spec = cnp
        .spec
        .as_ref()
        .ok_or_else(|| bad("spec", "missing (specs is outside the subset)"))?;
    let subject = cilium_selector(&spec.endpoint_selector, ns, "spec.endpointSelector")?;
    let ingress_deny = cilium_ingress(
        spec.ingress_deny.as_deref().unwrap_or_default(),
        ns,
        "spec.ingressDeny",
    )?;
    let egress_deny = cilium_egress(
        spec.egress_deny.as_deref().unwrap_or_default(),
        ns,
        "spec.egressDeny",
    )?;
    // Cilium: a direction is enforced (default deny) when the policy has
    // rules for it, allow or deny; an omitted or empty list does not apply.
    let ingress_rules = cilium_ingress(spec.ingress.as_deref().unwrap_or_default(), ns, "spec.ingress")?;
    let egress_rules = cilium_egress(spec.egress.as_deref().unwrap_or_default(), ns, "spec.egress")?;
    let ingress = (!ingress_rules.is_empty() || !ingress_deny.is_empty()).then_some(ingress_rules);
    let egress = (!egress_rules.is_empty() || !egress_deny.is_empty()).then_some(egress_rules);
    Ok(Policy {
        key: PolicyKey {
            kind: PolicyKind::CiliumNetworkPolicy,
            namespace: ns.to_string(),
            name,
        },
        subject,
        ingress,
        egress,
        ingress_deny,
        egress_deny,
    })
}
