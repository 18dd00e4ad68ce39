//! The selector cache and compiler: identities (label sets) and policies
//! in, per-direction map entries out, as deltas ([`Changes`]).
//!
//! - Each distinct endpoint selector is compiled once and holds the set of
//!   identities it selects ([`Compiler::add_identity`] matches a new
//!   identity against every selector once, and yields only the entries it
//!   causes; a known identity yields nothing).
//! - A policy change recomputes that policy only, and yields the difference.
//! - Output, per direction (the sender's egress is judged where it sends,
//!   the receiver's ingress where it receives):
//!   - isolation flags: identity X is ingress- (egress-) isolated;
//!   - allow entries: (subject identity, peer identity | CIDR | any,
//!     protocol, port range); deny entries likewise (Cilium deny rules).
//!
//!   An identity that no policy selects, and no rule names as a peer,
//!   yields zero entries: entries grow with rules x the identities they
//!   select, never with identities squared.
//! - [`Datapath`] is a pure model of how a datapath judges with the entries
//!   (checked against [`crate::model::World::allowed`] in the tests).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::cidr::Ipv4Net;
use crate::model::{Entity, NamedPorts, Peer, Policy, PolicyKey, PortSpec, Ports, Rule};
use crate::selector::{namespace_labels, EndpointSelector};
use crate::{namespace_of, reserved, Direction, Labels, Protocol};

/// Who is on the other side of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKey {
    /// Every address.
    Any,
    /// Addresses with this identity.
    Identity(u32),
    /// Addresses in this prefix (pods' too, as the Kubernetes e2e suite
    /// expects of an ipBlock).
    Cidr(Ipv4Net),
    /// Addresses in this prefix that are outside the cluster (world: not a
    /// pod's, not a node's), as Cilium's CIDR rules match.
    WorldCidr(Ipv4Net),
}

/// One map entry. For `Egress`, `subject` is the sender and `peer` the
/// destination; for `Ingress`, `subject` is the receiver and `peer` the
/// source. `protocol: None` is every protocol; ports are destination ports
/// `first..=last` (0..=65535 for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub direction: Direction,
    pub subject: u32,
    pub peer: PeerKey,
    pub protocol: Option<Protocol>,
    pub first: u16,
    pub last: u16,
    pub deny: bool,
}

impl Entry {
    fn matches(&self, peer_id: u32, peer_ip: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        let peer_ok = match self.peer {
            PeerKey::Any => true,
            PeerKey::Identity(id) => id == peer_id,
            PeerKey::Cidr(net) => net.contains(peer_ip),
            PeerKey::WorldCidr(net) => peer_id == reserved::WORLD && net.contains(peer_ip),
        };
        peer_ok && self.protocol.is_none_or(|p| p == protocol) && (self.first..=self.last).contains(&port)
    }
}

/// What changed, in the order a datapath applies it so that no change opens
/// a window: 1. `added` entries, 2. `unisolated`, 3. `isolated`, 4. `removed`
/// entries. (A policy edit writes its new allows before it isolates, and
/// removes old allows only after.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Entry>,
    pub unisolated: Vec<(u32, Direction)>,
    pub isolated: Vec<(u32, Direction)>,
    pub removed: Vec<Entry>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.isolated.is_empty()
            && self.unisolated.is_empty()
    }

    fn merge(&mut self, other: Changes) {
        self.added.extend(other.added);
        self.unisolated.extend(other.unisolated);
        self.isolated.extend(other.isolated);
        self.removed.extend(other.removed);
    }
}

/// What the compiler knows of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityInfo {
    pub labels: Labels,
    /// Its containers' named ports (empty when the runtime does not say).
    pub named_ports: NamedPorts,
}

struct CachedSelector {
    selector: EndpointSelector,
    users: usize,
    selected: HashSet<u32>,
}

type SelId = usize;

enum CPeer {
    Any,
    Selector(SelId),
    /// Prefixes; `true`: pods' addresses too.
    Cidrs(Vec<Ipv4Net>, bool),
    Reserved(u32),
    /// Every pod identity, the host and remote nodes.
    Cluster,
}

struct CRule {
    direction: Direction,
    deny: bool,
    peers: Vec<CPeer>,
    ports: Vec<PortSpec>,
}

struct CPolicy {
    policy: Policy,
    subject: SelId,
    selectors: Vec<SelId>,
    rules: Vec<CRule>,
    /// The entries this policy causes (each counted once per policy).
    entries: HashSet<Entry>,
    isolates: HashSet<(u32, Direction)>,
}

/// The selector cache and compiler.
pub struct Compiler {
    always_enforce: bool,
    namespaces: BTreeMap<String, Labels>,
    identities: HashMap<u32, IdentityInfo>,
    selectors: Vec<Option<CachedSelector>>,
    selector_ids: HashMap<EndpointSelector, SelId>,
    policies: BTreeMap<PolicyKey, CPolicy>,
    /// Entry -> how many policies cause it.
    entries: HashMap<Entry, u32>,
    /// (identity, direction) -> how many policies isolate it.
    isolation: HashMap<(u32, Direction), u32>,
}

impl Compiler {
    /// `always_enforce`: Cilium's `policy-enforcement=always` (the datapath
    /// then treats every identity as isolated both ways: a global flag, no
    /// per-identity entries).
    pub fn new(always_enforce: bool) -> Self {
        Self {
            always_enforce,
            namespaces: BTreeMap::new(),
            identities: HashMap::new(),
            selectors: Vec::new(),
            selector_ids: HashMap::new(),
            policies: BTreeMap::new(),
            entries: HashMap::new(),
            isolation: HashMap::new(),
        }
    }

    pub fn always_enforce(&self) -> bool {
        self.always_enforce
    }

    /// Every entry now in force.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.keys()
    }

    /// Every entry now in force, with each policy that causes it (an entry
    /// two policies cause comes twice).
    pub fn entries_by_policy(&self) -> impl Iterator<Item = (&PolicyKey, &Entry)> {
        self.policies
            .iter()
            .flat_map(|(k, p)| p.entries.iter().map(move |e| (k, e)))
    }

    /// Every (identity, direction) some policy isolates now.
    pub fn isolations(&self) -> impl Iterator<Item = &(u32, Direction)> {
        self.isolation.keys()
    }

    /// The identities a policy selects now (sorted); `None` when there is
    /// no such policy.
    pub fn selected(&self, key: &PolicyKey) -> Option<Vec<u32>> {
        let p = self.policies.get(key)?;
        let mut ids: Vec<u32> = self.sel(p.subject).selected.iter().copied().collect();
        ids.sort_unstable();
        Some(ids)
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn selector_count(&self) -> usize {
        self.selectors.iter().flatten().count()
    }

    /// The policies that cause `entry`.
    pub fn reasons(&self, entry: &Entry) -> Vec<&PolicyKey> {
        self.policies
            .iter()
            .filter(|(_, p)| p.entries.contains(entry))
            .map(|(k, _)| k)
            .collect()
    }

    fn ns_labels(&self, ns: &str) -> Labels {
        namespace_labels(ns, self.namespaces.get(ns))
    }

    fn matches(&self, sel: &EndpointSelector, info: &IdentityInfo) -> bool {
        if sel.uses_namespace_labels() {
            sel.matches(&info.labels, &self.ns_labels(namespace_of(&info.labels)))
        } else {
            sel.matches(&info.labels, &Labels::new())
        }
    }

    fn sel(&self, id: SelId) -> &CachedSelector {
        self.selectors[id].as_ref().expect("live selector")
    }

    /// Interns a selector: compiled and matched against every identity once.
    fn intern(&mut self, selector: &EndpointSelector) -> SelId {
        if let Some(&id) = self.selector_ids.get(selector) {
            self.selectors[id].as_mut().expect("live selector").users += 1;
            return id;
        }
        let selected = self
            .identities
            .iter()
            .filter(|(_, info)| self.matches(selector, info))
            .map(|(id, _)| *id)
            .collect();
        let cached = CachedSelector {
            selector: selector.clone(),
            users: 1,
            selected,
        };
        let id = match self.selectors.iter().position(Option::is_none) {
            Some(free) => {
                self.selectors[free] = Some(cached);
                free
            }
            None => {
                self.selectors.push(Some(cached));
                self.selectors.len() - 1
            }
        };
        self.selector_ids.insert(selector.clone(), id);
        id
    }

    fn release(&mut self, id: SelId) {
        let slot = self.selectors[id].as_mut().expect("live selector");
        slot.users -= 1;
        if slot.users == 0 {
            let gone = self.selectors[id].take().expect("live selector");
            self.selector_ids.remove(&gone.selector);
        }
    }

    /// An identity appeared (or its named ports changed). Returns the entries
    /// it causes; a known identity with the same labels and ports: nothing.
    pub fn add_identity(&mut self, id: u32, info: IdentityInfo) -> Changes {
        if self.identities.get(&id) == Some(&info) {
            return Changes::default();
        }
        let mut changes = Changes::default();
        if self.identities.contains_key(&id) {
            changes.merge(self.remove_identity(id));
        }
        // Each selector matched once.
        let ns_labels = self.ns_labels(namespace_of(&info.labels));
        for slot in self.selectors.iter_mut().flatten() {
            if slot.selector.matches(&info.labels, &ns_labels) {
                slot.selected.insert(id);
            }
        }
        self.identities.insert(id, info);
        // Matched once against each policy's selectors (no copies of the
        // policies it does not touch).
        let mut touched = Vec::new();
        for (key, p) in &self.policies {
            let mut new: Vec<Entry> = Vec::new();
            let is_subject = self.sel(p.subject).selected.contains(&id);
            if is_subject {
                self.policy_entries(p, Some(id), None, &mut new);
            }
            if self.names_as_peer(p, id) {
                self.policy_entries(p, None, Some(id), &mut new);
            }
            let iso: Vec<(u32, Direction)> = [Direction::Ingress, Direction::Egress]
                .into_iter()
                .filter(|d| is_subject && isolates(&p.policy, *d))
                .map(|d| (id, d))
                .collect();
            if !new.is_empty() || !iso.is_empty() {
                touched.push((key.clone(), new, iso));
            }
        }
        let mut added = Vec::new();
        let mut isolated = Vec::new();
        for (key, new, iso) in touched {
            let p = self.policies.get_mut(&key).expect("policy");
            for e in new {
                if p.entries.insert(e) {
                    added.push(e);
                }
            }
            for i in iso {
                if p.isolates.insert(i) {
                    isolated.push(i);
                }
            }
        }
        for e in added {
            let n = self.entries.entry(e).or_insert(0);
            *n += 1;
            if *n == 1 {
                changes.added.push(e);
            }
        }
        for i in isolated {
            let n = self.isolation.entry(i).or_insert(0);
            *n += 1;
            if *n == 1 {
                changes.isolated.push(i);
            }
        }
        changes
    }

    /// Whether a rule of `p` could name identity `id` as a peer.
    fn names_as_peer(&self, p: &CPolicy, id: u32) -> bool {
        let info = &self.identities[&id];
        p.rules.iter().any(|r| {
            let named_any = r.direction == Direction::Egress
                && r.ports
                    .iter()
                    .any(|s| matches!(&s.ports, Ports::Named(n) if info.named_ports.contains_key(n)));
            (r.peers.is_empty() && named_any)
                || r.peers.iter().any(|peer| match peer {
                    CPeer::Selector(s) => self.sel(*s).selected.contains(&id),
                    CPeer::Cluster => true,
                    CPeer::Any => named_any,
                    _ => false,
                })
        })
    }

    /// An identity is gone: every entry naming it goes.
    pub fn remove_identity(&mut self, id: u32) -> Changes {
        let mut changes = Changes::default();
        if self.identities.remove(&id).is_none() {
            return changes;
        }
        for slot in self.selectors.iter_mut().flatten() {
            slot.selected.remove(&id);
        }
        let mut removed = Vec::new();
        let mut unisolated = Vec::new();
        for p in self.policies.values_mut() {
            p.entries.retain(|e| {
                let names = e.subject == id || e.peer == PeerKey::Identity(id);
                if names {
                    removed.push(*e);
                }
                !names
            });
            p.isolates.retain(|i| {
                if i.0 == id {
                    unisolated.push(*i);
                }
                i.0 != id
            });
        }
        for e in removed {
            if let Some(n) = self.entries.get_mut(&e) {
                *n -= 1;
                if *n == 0 {
                    self.entries.remove(&e);
                    changes.removed.push(e);
                }
            }
        }
        for i in unisolated {
            if let Some(n) = self.isolation.get_mut(&i) {
                *n -= 1;
                if *n == 0 {
                    self.isolation.remove(&i);
                    changes.unisolated.push(i);
                }
            }
        }
        changes
    }

    /// A namespace's own labels changed: selectors on namespace labels are
    /// matched again, and the policies using them recomputed.
    pub fn set_namespace(&mut self, name: &str, labels: Labels) -> Changes {
        if self.namespaces.get(name) == Some(&labels) {
            return Changes::default();
        }
        self.namespaces.insert(name.to_string(), labels);
        let mut changed = HashSet::new();
        for id in 0..self.selectors.len() {
            let Some(slot) = &self.selectors[id] else { continue };
            if !slot.selector.uses_namespace_labels() {
                continue;
            }
            let selected: HashSet<u32> = self
                .identities
                .iter()
                .filter(|(_, info)| self.matches(&slot.selector, info))
                .map(|(i, _)| *i)
                .collect();
            if selected != slot.selected {
                self.selectors[id].as_mut().expect("live").selected = selected;
                changed.insert(id);
            }
        }
        let touched: Vec<PolicyKey> = self
            .policies
            .iter()
            .filter(|(_, p)| p.selectors.iter().any(|s| changed.contains(s)))
            .map(|(k, _)| k.clone())
            .collect();
        let mut changes = Changes::default();
        for key in touched {
            let policy = self.policies[&key].policy.clone();
            changes.merge(self.upsert_policy(policy));
        }
        changes
    }

    /// Adds or replaces a policy: only what it touches is recomputed.
    pub fn upsert_policy(&mut self, policy: Policy) -> Changes {
        let mut selectors = Vec::new();
        let subject = self.intern(&policy.subject);
        selectors.push(subject);
        let mut rules = Vec::new();
        for d in [Direction::Ingress, Direction::Egress] {
            let allows = policy.allows(d).map(Vec::as_slice).unwrap_or_default();
            for (deny, list) in [(false, allows), (true, policy.denies(d))] {
                for r in list {
                    rules.push(self.compile_rule(r, d, deny, &mut selectors));
                }
            }
        }
        let mut compiled = CPolicy {
            policy,
            subject,
            selectors,
            rules,
            entries: HashSet::new(),
            isolates: HashSet::new(),
        };
        let mut list = Vec::new();
        self.policy_entries(&compiled, None, None, &mut list);
        compiled.entries = list.into_iter().collect();
        for &id in &self.sel(subject).selected {
            for d in [Direction::Ingress, Direction::Egress] {
                if isolates(&compiled.policy, d) {
                    compiled.isolates.insert((id, d));
                }
            }
        }
        let key = compiled.policy.key.clone();
        let old = self.policies.insert(key.clone(), compiled);
        let (old_entries, old_isolates) = match old {
            Some(o) => {
                for s in o.selectors {
                    self.release(s);
                }
                (o.entries, o.isolates)
            }
            None => (HashSet::new(), HashSet::new()),
        };
        self.account(&key, old_entries, old_isolates)
    }

    /// Removes a policy; `None` when there is none by that key.
    pub fn remove_policy(&mut self, key: &PolicyKey) -> Option<Changes> {
        let old = self.policies.remove(key)?;
        for s in &old.selectors {
            self.release(*s);
        }
        let mut changes = Changes::default();
        for e in old.entries {
            self.entry_down(e, &mut changes);
        }
        for i in old.isolates {
            self.isolation_down(i, &mut changes);
        }
        Some(changes)
    }

    fn entry_down(&mut self, e: Entry, changes: &mut Changes) {
        if let Some(n) = self.entries.get_mut(&e) {
            *n -= 1;
            if *n == 0 {
                self.entries.remove(&e);
                changes.removed.push(e);
            }
        }
    }

    fn isolation_down(&mut self, i: (u32, Direction), changes: &mut Changes) {
        if let Some(n) = self.isolation.get_mut(&i) {
            *n -= 1;
            if *n == 0 {
                self.isolation.remove(&i);
                changes.unisolated.push(i);
            }
        }
    }

    /// The difference between a policy's old and new contributions.
    fn account(
        &mut self,
        key: &PolicyKey,
        old_entries: HashSet<Entry>,
        old_isolates: HashSet<(u32, Direction)>,
    ) -> Changes {
        let mut changes = Changes::default();
        let p = &self.policies[key];
        let up: Vec<Entry> = p.entries.difference(&old_entries).copied().collect();
        let down: Vec<Entry> = old_entries.difference(&p.entries).copied().collect();
        let iso_up: Vec<(u32, Direction)> = p.isolates.difference(&old_isolates).copied().collect();
        let iso_down: Vec<(u32, Direction)> = old_isolates.difference(&p.isolates).copied().collect();
        for e in up {
            let n = self.entries.entry(e).or_insert(0);
            *n += 1;
            if *n == 1 {
                changes.added.push(e);
            }
        }
        for i in iso_up {
            let n = self.isolation.entry(i).or_insert(0);
            *n += 1;
            if *n == 1 {
                changes.isolated.push(i);
            }
        }
        for e in down {
            self.entry_down(e, &mut changes);
        }
        for i in iso_down {
            self.isolation_down(i, &mut changes);
        }
        changes
    }

    fn compile_rule(
        &mut self,
        rule: &Rule,
        direction: Direction,
        deny: bool,
        selectors: &mut Vec<SelId>,
    ) -> CRule {
        let mut peers = Vec::new();
        for peer in &rule.peers {
            peers.push(match peer {
                Peer::Endpoints(sel) => {
                    let id = self.intern(sel);
                    selectors.push(id);
                    CPeer::Selector(id)
                }
                Peer::Cidr { cidr, except, pods } => CPeer::Cidrs(cidr.without(except), *pods),
                Peer::Nothing => CPeer::Cidrs(Vec::new(), true),
                Peer::Entity(Entity::All) => CPeer::Any,
                Peer::Entity(Entity::World) => CPeer::Reserved(reserved::WORLD),
                Peer::Entity(Entity::Host) => CPeer::Reserved(reserved::HOST),
                Peer::Entity(Entity::Cluster) => CPeer::Cluster,
            });
        }
        CRule {
            direction,
            deny,
            peers,
            ports: rule.ports.clone(),
        }
    }

    /// A policy's entries: for every subject (or only `only_subject`), and
    /// every peer (or only the identity `only_peer`).
    fn policy_entries(
        &self,
        p: &CPolicy,
        only_subject: Option<u32>,
        only_peer: Option<u32>,
        out: &mut Vec<Entry>,
    ) {
        let subjects: Vec<u32> = match only_subject {
            Some(s) => vec![s],
            None => self.sel(p.subject).selected.iter().copied().collect(),
        };
        for rule in &p.rules {
            let any = [CPeer::Any];
            let peers: &[CPeer] = if rule.peers.is_empty() { &any } else { &rule.peers };
            // The peers' keys, each with the identity whose named ports
            // resolve an egress rule's names.
            let mut keys: Vec<(PeerKey, Option<u32>)> = Vec::new();
            for peer in peers {
                match peer {
                    CPeer::Any => {
                        if only_peer.is_none() {
                            keys.push((PeerKey::Any, None));
                        }
                        // A named port on egress to anyone: resolved per
                        // destination identity that declares it.
                        let names: Vec<&String> = rule
                            .ports
                            .iter()
                            .filter_map(|s| match &s.ports {
                                Ports::Named(n) => Some(n),
                                _ => None,
                            })
                            .collect();
                        if rule.direction == Direction::Egress && !names.is_empty() {
                            for (id, info) in &self.identities {
                                if only_peer.is_none_or(|o| o == *id)
                                    && names.iter().any(|n| info.named_ports.contains_key(*n))
                                {
                                    keys.push((PeerKey::Identity(*id), Some(*id)));
                                }
                            }
                        }
                    }
                    CPeer::Selector(s) => {
                        let selected = &self.sel(*s).selected;
                        match only_peer {
                            Some(o) if selected.contains(&o) => keys.push((PeerKey::Identity(o), Some(o))),
                            Some(_) => {}
                            None => {
                                keys.extend(selected.iter().map(|id| (PeerKey::Identity(*id), Some(*id))))
                            }
                        }
                    }
                    CPeer::Cidrs(nets, pods) => {
                        if only_peer.is_none() {
                            let key = |n: Ipv4Net| match pods {
                                true => PeerKey::Cidr(n),
                                false => PeerKey::WorldCidr(n),
                            };
                            keys.extend(nets.iter().map(|n| (key(*n), None)));
                        }
                    }
                    CPeer::Reserved(id) => {
                        if only_peer.is_none() {
                            keys.push((PeerKey::Identity(*id), None));
                        }
                    }
                    CPeer::Cluster => match only_peer {
                        Some(o) => keys.push((PeerKey::Identity(o), Some(o))),
                        None => {
                            keys.extend(
                                self.identities
                                    .keys()
                                    .map(|id| (PeerKey::Identity(*id), Some(*id))),
                            );
                            keys.push((PeerKey::Identity(reserved::HOST), None));
                            keys.push((PeerKey::Identity(reserved::REMOTE_NODE), None));
                        }
                    },
                }
            }
            for &subject in &subjects {
                for &(peer, peer_id) in &keys {
                    let dst = match rule.direction {
                        Direction::Ingress => Some(subject),
                        Direction::Egress => peer_id,
                    };
                    let dst_ports = dst.and_then(|d| self.identities.get(&d)).map(|i| &i.named_ports);
                    let mut push = |protocol, first, last| {
                        out.push(Entry {
                            direction: rule.direction,
                            subject,
                            peer,
                            protocol,
                            first,
                            last,
                            deny: rule.deny,
                        })
                    };
                    if rule.ports.is_empty() {
                        push(None, 0, u16::MAX);
                    }
                    for spec in &rule.ports {
                        match &spec.ports {
                            Ports::All => push(spec.protocol, 0, u16::MAX),
                            Ports::Range(a, b) => push(spec.protocol, *a, *b),
                            Ports::Named(name) => {
                                // Resolved against the destination: an
                                // identity that does not declare it, or a
                                // CIDR / any peer, gets no entry.
                                if matches!(peer, PeerKey::Identity(_))
                                    || rule.direction == Direction::Ingress
                                {
                                    if let Some((proto, n)) = dst_ports.and_then(|np| np.get(name)) {
                                        if spec.protocol.is_none_or(|p| p == *proto) {
                                            push(Some(*proto), *n, *n);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether a policy isolates its subjects in a direction.
fn isolates(p: &Policy, d: Direction) -> bool {
    p.allows(d).is_some() || !p.denies(d).is_empty()
}
/// A pure model of the datapath: the state that applying [`Changes`] in
/// order builds, and how one packet's connection is judged with it.
///
/// Judging a connection from S to D (identities from the addresses: an
/// endpoint's identity, the host's 1, anything else world 2):
/// 1. S's egress, when S is a pod (identity >= 256): a deny entry of S that
///    matches D denies; else D being the node (identity 1) allows; else,
///    when S is egress-isolated (or enforcement is always on), an allow
///    entry of S must match D.
/// 2. D's ingress, the same with the directions swapped.
///
/// An entry matches the peer when its key is any, the peer's identity, or a
/// prefix holding the peer's address; and the protocol (any, or the same)
/// and the destination port in its range.
#[derive(Debug, Clone, Default)]
pub struct Datapath {
    pub always_enforce: bool,
    isolated: HashSet<(u32, Direction)>,
    entries: HashMap<(u32, Direction), HashSet<Entry>>,
}

impl Datapath {
    pub fn new(always_enforce: bool) -> Self {
        Self {
            always_enforce,
            ..Self::default()
        }
    }

    /// Applies changes in their order (adds, unisolate, isolate, removes).
    /// Panics on an add of a present entry or a remove of an absent one:
    /// deltas must be exact.
    pub fn apply(&mut self, c: &Changes) {
        for e in &c.added {
            let fresh = self
                .entries
                .entry((e.subject, e.direction))
                .or_default()
                .insert(*e);
            assert!(fresh, "added twice: {e:?}");
        }
        for i in &c.unisolated {
            assert!(self.isolated.remove(i), "unisolated but not isolated: {i:?}");
        }
        for i in &c.isolated {
            assert!(self.isolated.insert(*i), "isolated twice: {i:?}");
        }
        for e in &c.removed {
            let gone = self
                .entries
                .get_mut(&(e.subject, e.direction))
                .is_some_and(|s| s.remove(e));
            assert!(gone, "removed but absent: {e:?}");
        }
    }

    pub fn entry_count(&self) -> usize {
        self.entries.values().map(HashSet::len).sum()
    }

    pub fn isolation_count(&self) -> usize {
        self.isolated.len()
    }

    fn side(
        &self,
        me: u32,
        dir: Direction,
        peer_id: u32,
        peer_ip: Ipv4Addr,
        protocol: Protocol,
        port: u16,
    ) -> bool {
        if me < reserved::FIRST_LABELS {
            return true;
        }
        let mine = self.entries.get(&(me, dir));
        let any = |deny: bool| {
            mine.is_some_and(|s| {
                s.iter()
                    .any(|e| e.deny == deny && e.matches(peer_id, peer_ip, protocol, port))
            })
        };
        if any(true) {
            return false;
        }
        // Traffic with the node is always allowed (only denies stop it).
        if peer_id == reserved::HOST {
            return true;
        }
        if !self.always_enforce && !self.isolated.contains(&(me, dir)) {
            return true;
        }
        any(false)
    }

    /// Whether the first packet of a connection passes both sides.
    pub fn allowed(
        &self,
        (src_id, src_ip): (u32, Ipv4Addr),
        (dst_id, dst_ip): (u32, Ipv4Addr),
        protocol: Protocol,
        port: u16,
    ) -> bool {
        self.side(src_id, Direction::Egress, dst_id, dst_ip, protocol, port)
            && self.side(dst_id, Direction::Ingress, src_id, src_ip, protocol, port)
    }
}
