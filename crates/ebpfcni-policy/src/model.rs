//! The policy model, and its semantics exactly as Kubernetes defines them
//! (plus Cilium's deny rules and entities).
//!
//! - A pod is isolated for ingress (egress) only when some policy selecting
//!   it isolates that direction (a NetworkPolicy's `policyTypes`, defaulting
//!   to Ingress always and Egress when it has egress rules; a Cilium policy's
//!   `ingress`/`ingressDeny` sections). Isolated = default deny that way.
//! - Rules add up: a connection is allowed in a direction when the endpoint
//!   is not isolated that way, or when any rule of any policy selecting it
//!   allows the peer and the port. Cilium deny rules win over every allow.
//! - A connection needs the sender's egress AND the receiver's ingress.
//! - An ipBlock matches any address in it, pods' addresses too (as the
//!   Kubernetes e2e suite expects), without its `except` prefixes.
//! - Traffic between a pod and the node (`World::host`) is always allowed,
//!   as Kubernetes defines it (and Cilium's `allow-localhost`); only a Cilium
//!   deny rule stops it.
//! - Replies of an allowed connection pass (policy is stateful): `allowed`
//!   judges the connection's first packet.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use crate::cidr::Ipv4Net;
use crate::selector::{namespace_labels, EndpointSelector};
use crate::{namespace_of, Direction, Labels, Protocol};

/// The kinds of policy documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    NetworkPolicy,
    CiliumNetworkPolicy,
    /// A rule written on the command line (`policyctl allow --src app=x
    /// --dst app=y`): the agent's, cluster-wide.
    SelectorRule,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            PolicyKind::SelectorRule => "SelectorRule",
        })
    }
}

/// A policy's name: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Cilium's entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    /// Addresses outside the cluster: not a pod's, not the node's.
    World,
    /// The node itself.
    Host,
    /// Every pod and the node.
    Cluster,
    /// Everything.
    All,
}

/// Whom a rule allows (or denies) to talk to the selected endpoints.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Endpoints(EndpointSelector),
    /// An ipBlock (`pods`: it matches pods' and the node's addresses too, as
    /// the Kubernetes e2e suite expects), or a Cilium CIDR (`pods: false`:
    /// Cilium's CIDR rules match only addresses outside the cluster):
    /// `cidr` without the `except` prefixes.
    Cidr {
        cidr: Ipv4Net,
        except: Vec<Ipv4Net>,
        pods: bool,
    },
    Entity(Entity),
    /// Nobody: a Cilium rule without peers or ports (`ingress: [{}]`, its
    /// default-deny idiom) or with empty peer lists.
    Nothing,
}

/// Which ports a rule opens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ports {
    /// All ports of the protocol.
    All,
    /// `first..=last`.
    Range(u16, u16),
    /// A container port by name, resolved against the destination pod.
    Named(String),
}

/// One entry of a rule's ports. `protocol: None` is any protocol (Cilium's
/// `ANY`); a NetworkPolicy port without a protocol is TCP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub protocol: Option<Protocol>,
    pub ports: Ports,
}

impl PortSpec {
    /// Whether the port matches a connection to `port`/`protocol` whose
    /// destination pod (if it is one) declares `named` ports.
    pub fn matches(&self, protocol: Protocol, port: u16, named: Option<&NamedPorts>) -> bool {
        if self.protocol.is_some_and(|p| p != protocol) {
            return false;
        }
        match &self.ports {
            Ports::All => true,
            Ports::Range(a, b) => (*a..=*b).contains(&port),
            Ports::Named(name) => named
                .and_then(|n| n.get(name))
                .is_some_and(|(p, n)| *p == protocol && *n == port),
        }
    }
}

/// A rule: traffic with any of `peers` (none = everyone) on any of `ports`
/// (none = every protocol and port).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PortSpec>,
}

/// A policy in the model: which endpoints it selects, and per direction
/// whether it isolates them (`Some`) with which allow rules, and deny rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub key: PolicyKey,
    pub subject: EndpointSelector,
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
    pub ingress_deny: Vec<Rule>,
    pub egress_deny: Vec<Rule>,
}

impl Policy {
    pub fn allows(&self, dir: Direction) -> Option<&Vec<Rule>> {
        match dir {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }

    pub fn denies(&self, dir: Direction) -> &[Rule] {
        match dir {
            Direction::Ingress => &self.ingress_deny,
            Direction::Egress => &self.egress_deny,
        }
    }
}

/// A container's named ports: name -> (protocol, port).
pub type NamedPorts = BTreeMap<String, (Protocol, u16)>;

/// An endpoint: a pod (or container) with labels and an address. Its
/// namespace is its `io.kubernetes.pod.namespace` label (`default` when
/// none), as the agent gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub labels: Labels,
    pub ip: Ipv4Addr,
    pub named_ports: NamedPorts,
}

impl Endpoint {
    pub fn namespace(&self) -> &str {
        namespace_of(&self.labels)
    }
}

/// A rule, by its place: policy, direction, deny or allow, index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    pub policy: PolicyKey,
    pub direction: Direction,
    pub deny: bool,
    pub index: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.deny { "deny" } else { "" };
        write!(f, "{} {}{what}[{}]", self.policy, self.direction, self.index)
    }
}

/// The verdict of one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// That side is not a pod (world, the host): nothing to judge there.
    NotAPod,
    /// No policy isolates the endpoint this way: allowed.
    NotIsolated,
    /// The peer is the node the pod runs on: always allowed (Kubernetes:
    /// traffic to and from the node where a pod runs is always allowed);
    /// only a Cilium deny rule stops it.
    Node,
    /// Allowed by these rules.
    Allowed(Vec<RuleRef>),
    /// Isolated by these policies, and no rule of theirs allows it.
    Isolated(Vec<PolicyKey>),
    /// Denied by these deny rules (they win over allows).
    Denied(Vec<RuleRef>),
}

impl Side {
    pub fn allows(&self) -> bool {
        matches!(
            self,
            Side::NotAPod | Side::NotIsolated | Side::Node | Side::Allowed(_)
        )
    }
}

/// A connection's verdict: the sender's egress and the receiver's ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub egress: Side,
    pub ingress: Side,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }
}

/// Endpoints, namespaces and policies: what the semantics judge.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Namespaces' own labels (from Namespace objects).
    pub namespaces: BTreeMap<String, Labels>,
    pub endpoints: Vec<Endpoint>,
    /// The node's address (Cilium's `host` entity).
    pub host: Option<Ipv4Addr>,
    pub policies: Vec<Policy>,
    /// Cilium's `policy-enforcement=always`: every pod is isolated both
    /// ways, selected by a policy or not.
    pub always_enforce: bool,
}

/// What an address is.
enum Addr<'a> {
    Pod(&'a Endpoint),
    Host,
    World,
}

impl World {
    /// A namespace's labels as selectors see them.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        namespace_labels(name, self.namespaces.get(name))
    }

    pub fn endpoint(&self, ip: Ipv4Addr) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.ip == ip)
    }

    fn addr(&self, ip: Ipv4Addr) -> Addr<'_> {
        match self.endpoint(ip) {
            Some(e) => Addr::Pod(e),
            None if Some(ip) == self.host => Addr::Host,
            None => Addr::World,
        }
    }

    fn selects(&self, sel: &EndpointSelector, e: &Endpoint) -> bool {
        if sel.uses_namespace_labels() {
            sel.matches(&e.labels, &self.namespace_labels(e.namespace()))
        } else {
            sel.matches(&e.labels, &Labels::new())
        }
    }

    fn peer_matches(&self, peer: &Peer, ip: Ipv4Addr) -> bool {
        match (peer, self.addr(ip)) {
            (Peer::Endpoints(sel), Addr::Pod(e)) => self.selects(sel, e),
            (Peer::Endpoints(_), _) => false,
            (Peer::Cidr { cidr, except, pods }, a) => {
                (*pods || matches!(a, Addr::World))
                    && cidr.contains(ip)
                    && !except.iter().any(|x| x.contains(ip))
            }
            (Peer::Nothing, _) => false,
            (Peer::Entity(Entity::All), _) => true,
            (Peer::Entity(Entity::World), a) => matches!(a, Addr::World),
            (Peer::Entity(Entity::Host), a) => matches!(a, Addr::Host),
            (Peer::Entity(Entity::Cluster), a) => !matches!(a, Addr::World),
        }
    }

    fn rule_matches(
        &self,
        rule: &Rule,
        peer: Ipv4Addr,
        protocol: Protocol,
        port: u16,
        dst: Option<&Endpoint>,
    ) -> bool {
        let peer_ok = rule.peers.is_empty() || rule.peers.iter().any(|p| self.peer_matches(p, peer));
        let port_ok = rule.ports.is_empty()
            || rule
                .ports
                .iter()
                .any(|p| p.matches(protocol, port, dst.map(|d| &d.named_ports)));
        peer_ok && port_ok
    }

    /// One direction's verdict for endpoint `me` talking with `peer`.
    fn side(
        &self,
        me: &Endpoint,
        dir: Direction,
        peer: Ipv4Addr,
        protocol: Protocol,
        port: u16,
        dst: Option<&Endpoint>,
    ) -> Side {
        let mut isolating = Vec::new();
        let mut allowed = Vec::new();
        let mut denied = Vec::new();
        for p in self.policies.iter().filter(|p| self.selects(&p.subject, me)) {
            for (index, rule) in p.denies(dir).iter().enumerate() {
                if self.rule_matches(rule, peer, protocol, port, dst) {
                    denied.push(RuleRef {
                        policy: p.key.clone(),
                        direction: dir,
                        deny: true,
                        index,
                    });
                }
            }
            // Deny rules isolate too (Cilium enforces an endpoint's
            // direction once any rule for it names that direction).
            let Some(rules) = p.allows(dir) else {
                if !p.denies(dir).is_empty() {
                    isolating.push(p.key.clone());
                }
                continue;
            };
            isolating.push(p.key.clone());
            for (index, rule) in rules.iter().enumerate() {
                if self.rule_matches(rule, peer, protocol, port, dst) {
                    allowed.push(RuleRef {
                        policy: p.key.clone(),
                        direction: dir,
                        deny: false,
                        index,
                    });
                }
            }
        }
        if !denied.is_empty() {
            Side::Denied(denied)
        } else if Some(peer) == self.host {
            Side::Node
        } else if !allowed.is_empty() {
            Side::Allowed(allowed)
        } else if !isolating.is_empty() || self.always_enforce {
            Side::Isolated(isolating)
        } else {
            Side::NotIsolated
        }
    }

    /// Whether a connection from `from` to `to` (its first packet, to
    /// `protocol`/`port`) is allowed, and why.
    pub fn allowed(&self, from: Ipv4Addr, to: Ipv4Addr, protocol: Protocol, port: u16) -> Verdict {
        let dst = self.endpoint(to);
        let egress = match self.endpoint(from) {
            Some(src) => self.side(src, Direction::Egress, to, protocol, port, dst),
            None => Side::NotAPod,
        };
        let ingress = match dst {
            Some(d) => self.side(d, Direction::Ingress, from, protocol, port, dst),
            None => Side::NotAPod,
        };
        Verdict { egress, ingress }
    }
}
