//! Policy by labels, pure and synchronous: no kernel, no I/O, no async.
//!
//! - [`document`]: YAML streams of `networking.k8s.io/v1` NetworkPolicy (the
//!   k8s-openapi types), `v1` Namespace, `cilium.io/v2` CiliumNetworkPolicy (a
//!   subset, anything else refused naming the field) and `List`, checked as
//!   the API server would, into the [`model`]'s policies; all or nothing.
//! - [`selector`]: label selectors (matchLabels, matchExpressions) and
//!   endpoint selectors (pods and their namespace).
//! - [`model`]: the semantics, exactly as Kubernetes defines them: given
//!   endpoints and policies, [`model::World::allowed`] says whether a
//!   connection may be opened and why. Everything else is checked against it.
//! - [`compile`]: the selector cache and compiler the agent calls: identities
//!   (label sets) in, per-direction map entries out, as deltas; and
//!   [`compile::Datapath`], a pure model of how the datapath judges with them.

pub mod cidr;
pub mod compile;
pub mod document;
pub mod model;
pub mod selector;

use std::collections::BTreeMap;

/// A label set (key -> value), as the agent's `ebpfcni_api::Labels`.
pub type Labels = BTreeMap<String, String>;

/// The label every agent endpoint carries: its namespace (`default` when
/// none), as `ebpfcni_api::POD_NAMESPACE_LABEL` (this crate stays free of the
/// API crate's async client).
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// The label Kubernetes puts on every namespace: its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The namespace of an endpoint without one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Reserved identities (as the agent numbers them; label sets get 256 up).
pub mod reserved {
    pub const HOST: u32 = 1;
    pub const WORLD: u32 = 2;
    pub const INIT: u32 = 5;
    pub const REMOTE_NODE: u32 = 6;
    /// The first identity of a label set.
    pub const FIRST_LABELS: u32 = 256;
}

/// The namespace a label set belongs to.
pub fn namespace_of(labels: &Labels) -> &str {
    labels
        .get(POD_NAMESPACE_LABEL)
        .map(String::as_str)
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// An IP protocol with ports a policy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// `TCP`, `UDP` or `SCTP` (as the Kubernetes API spells them).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A direction of policy: ingress is judged for the receiver, egress for the
/// sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}
