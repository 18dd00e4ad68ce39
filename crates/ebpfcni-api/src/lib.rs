//! The node agent's API: one definition of every request and reply, and a
//! small blocking client over the agent's unix socket.
//!
//! The agent (`ebpfcni-agent`) serves HTTP/1.1 + JSON on a unix socket
//! (root only, mode 0600). The CNI plugin registers endpoints through it in
//! agent mode; `endpointctl` and `policyctl` read labels from it.
//!
//! | method | path | body | reply |
//! | --- | --- | --- | --- |
//! | GET | `/v1/healthz` | | [`Health`] (200 once ready) |
//! | POST | `/v1/endpoints` | [`EndpointRequest`] | [`Endpoint`] |
//! | GET | `/v1/endpoints` | | `[Endpoint]` |
//! | GET | `/v1/endpoints/{container}/{ifname}` | | [`Endpoint`] (404 when unknown) |
//! | DELETE | `/v1/endpoints/{container}/{ifname}` | | [`Deleted`] (idempotent) |
//! | POST | `/v1/gc` | [`GcRequest`] | [`GcReply`] |
//! | GET | `/v1/identities` | | `[Identity]` |
//! | GET | `/v1/policies` | | `[PolicySummary]` |
//! | POST | `/v1/policies` | YAML text (NetworkPolicy, CiliumNetworkPolicy, Namespace, List) | [`PolicyChanges`] (after the maps are written; all or nothing) |
//! | DELETE | `/v1/policies` | [`PolicyDeletion`] | [`PolicyChanges`] |
//! | POST | `/v1/selector-rules` | [`SelectorRule`] | [`PolicyChanges`] (idempotent) |
//! | DELETE | `/v1/selector-rules` | [`SelectorRule`] | [`PolicyChanges`] |
//!
//! Errors come as [`ApiError`] with a 4xx or 5xx status.

mod client;
mod identity;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use client::{send, Client, ClientError};
/// The HTTP types [`send`] takes and returns.
pub use hyper;
pub use identity::{ReservedIdentity, FIRST_LABEL_IDENTITY, RESERVED};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ebpfcni/agent.sock";

/// The directory beside the socket where the CNI plugin queues deletions
/// while the agent cannot be reached (one JSON [`Deletion`] per file); the
/// agent carries them out when it starts, before it hands out any address.
pub fn delete_queue_dir(socket: &std::path::Path) -> std::path::PathBuf {
    socket
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .join("delete-queue")
}

/// Labels: key -> value, sorted by key (a label set has one order).
pub type Labels = BTreeMap<String, String>;

/// Label keys that name a pod's namespace and name (Cilium's and the
/// kubelet's keys). The namespace is part of a pod's identity; the name is
/// kept on the endpoint but left out of its identity by the default filter.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";

/// Registers a container's interface (CNI ADD in agent mode).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRequest {
    pub container_id: String,
    pub ifname: String,
    /// The CNI network's name.
    pub network: String,
    /// CNI_NETNS.
    pub netns: String,
    /// The host end of the pod's veth, by name and index in the node's
    /// namespace (the agent records the pod's addresses behind it).
    pub host_veth: String,
    pub host_ifindex: u32,
    /// Addresses an IPAM plugin gave; empty: the agent's own IPAM gives one.
    #[serde(default)]
    pub ips: Vec<Ipv4Addr>,
    /// The container's labels from the CNI request (`args.cni.labels`).
    #[serde(default)]
    pub labels: Labels,
    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from CNI_ARGS: the
    /// namespace (`default` when absent) is part of the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
}

/// What an endpoint is while the agent knows it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointState {
    /// Its identity is derived from all its labels and enforced.
    Ready,
    /// Its labels are not known yet (the runtime has not told): it has the
    /// reserved `init` identity, which policy does not allow.
    WaitingForLabels,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub container_id: String,
    pub ifname: String,
    pub network: String,
    pub netns: String,
    pub host_veth: String,
    pub host_ifindex: u32,
    pub ips: Vec<Ipv4Addr>,
    /// The prefix length of the pod's address and its gateway, when the
    /// agent's IPAM gave the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Whether the address is the agent's lease (released at delete).
    pub leased: bool,
    /// Every label the endpoint has.
    pub labels: Labels,
    /// The identity's labels (the filter applied to `labels`).
    pub identity_labels: Labels,
    pub identity: u32,
    pub state: EndpointState,
    /// The runtime that told the agent the container's labels (`podman`),
    /// when one did; the agent removes the endpoint when that runtime
    /// reports the container gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// A label set's number on this node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub id: u32,
    pub labels: Labels,
    /// Endpoints of the agent that have it now.
    pub endpoints: usize,
    /// Reserved numbers (below 256) have a name instead of labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<String>,
}

impl Identity {
    /// Its labels as people read them: `k=v,k=v`, or `reserved:NAME`.
    pub fn label_text(&self) -> String {
        match &self.reserved {
            Some(name) => format!("reserved:{name}"),
            None => self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deleted {
    /// False when the agent did not know the endpoint (DEL is idempotent).
    pub existed: bool,
}

/// A deletion the CNI plugin queued while the agent was unreachable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deletion {
    pub container_id: String,
    pub ifname: String,
}

/// CNI GC: every endpoint of `network` not in `valid` goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcRequest {
    pub network: String,
    pub valid: Vec<Deletion>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcReply {
    pub removed: Vec<Deletion>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    pub endpoints: usize,
    pub identities: usize,
}

/// A policy the agent enforces (`GET /v1/policies`). `number` is the
/// agent's number of the policy: the datapath's label rules carry it
/// (`ebpfcni::maps::LabelRule::policy`), so that a verdict or a flow event
/// can name the policy that decided it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicySummary {
    pub number: u32,
    /// `NetworkPolicy`, `CiliumNetworkPolicy`, or `SelectorRule` (a rule
    /// written on the command line).
    pub kind: String,
    /// Empty for cluster-wide ones.
    pub namespace: String,
    pub name: String,
    /// The identities it selects now.
    pub selected: Vec<u32>,
    /// Its rules, one line each, for people.
    pub rules: Vec<String>,
}

/// What a policy request did, each policy named `Kind namespace/name`
/// (`Namespace name` for namespaces), sorted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyChanges {
    #[serde(default)]
    pub created: Vec<String>,
    #[serde(default)]
    pub changed: Vec<String>,
    #[serde(default)]
    pub unchanged: Vec<String>,
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Asked to delete, but the agent had none by that name.
    #[serde(default)]
    pub not_found: Vec<String>,
    /// Label rule entries written and removed, identities whose isolation
    /// changed (the datapath's differences).
    #[serde(default)]
    pub map_writes: usize,
}

/// What `DELETE /v1/policies` removes: the documents of `yaml` (their
/// kind, namespace and name), or one policy by `kind`, `namespace` (default
/// `default`) and `name`, or `all`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyDeletion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub all: bool,
}

/// A rule from the command line (`policyctl allow --src app=x --dst app=y
/// --port 8080`): endpoints with every label of `dst` (any namespace
/// unless `io.kubernetes.pod.namespace` is among them) may receive from
/// those with every label of `src`, on `protocol` (`TCP`, `UDP`, `SCTP`;
/// none: every protocol) and `port..=end_port` (none: every port). Its name
/// is made from its content, so allowing it twice changes nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SelectorRule {
    pub src: Labels,
    pub dst: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

/// The body of every error reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// A stable word for programs: `bad-request`, `conflict`,
    /// `not-found`, `exhausted`, `map-full`, `internal`.
    pub kind: String,
    /// What went wrong, for people.
    pub error: String,
}
