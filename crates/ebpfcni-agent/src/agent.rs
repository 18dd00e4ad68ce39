//! The agent's core, synchronous and behind one lock: endpoints in, map
//! entries out. Every change is committed to the store first, then applied
//! to the maps as a difference; the maps are never flushed, and entries
//! the agent did not write (an operator's `endpointctl add`) are never
//! overwritten or removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use ebpfcni::{Identity as Id, Maps, Stored};
use ebpfcni_api::{
    Deletion, Endpoint, EndpointRequest, EndpointState, Health, Identity, Labels, ReservedIdentity,
    FIRST_LABEL_IDENTITY, POD_NAMESPACE_LABEL, POD_NAME_LABEL,
};

use crate::cluster::Cluster;
use crate::ipam::Pool;
use crate::labels::{canonical, check_container_labels, LabelFilter};
use crate::policy::{Enforcement, PolicyState};
use crate::store::{Changes, Contents, Store};

/// What the agent was started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: String,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub pod_cidr: Option<Pool>,
    pub filter: LabelFilter,
    /// A runtime tells containers' labels: a new endpoint waits for them
    /// with the reserved `init` identity.
    pub runtime: Option<String>,
    /// `--policy-enforcement`.
    pub enforcement: Enforcement,
}

/// Why a request was refused; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    MapFull(String),
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::BadRequest(_) => "bad-request",
            AgentError::Conflict(_) => "conflict",
            AgentError::NotFound(_) => "not-found",
            AgentError::Exhausted(_) => "exhausted",
            AgentError::MapFull(_) => "map-full",
            AgentError::Internal(_) => "internal",
        }
    }
}

impl From<crate::store::StoreError> for AgentError {
    fn from(e: crate::store::StoreError) -> Self {
        AgentError::Internal(e.to_string())
    }
}

pub(crate) fn map_error(e: ebpfcni::Error) -> AgentError {
    match e {
        e @ ebpfcni::Error::MapFull { .. } => AgentError::MapFull(e.to_string()),
        e => AgentError::Internal(e.to_string()),
    }
}

/// An endpoint's key in the store and the API: `container/ifname`.
pub fn key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// What the agent holds in memory: the store's contents, indexed.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) endpoints: BTreeMap<String, Endpoint>,
    pub(crate) identities: BTreeMap<u32, Labels>,
    by_labels: HashMap<Labels, u32>,
    /// Every address of a live endpoint, and whose it is.
    owners: BTreeMap<Ipv4Addr, String>,
    ipam_next: Option<u32>,
    /// Identities that entries the agent did not write use, as of the
    /// tools' change generation (config_map) they were read at.
    foreign: Option<(u32, BTreeSet<u32>)>,
    /// Policy by labels: the stored policies, the compiler, what the label
    /// maps hold.
    pub(crate) policy: PolicyState,
}

impl State {
    fn from(contents: Contents) -> Self {
        let mut state = State {
            by_labels: contents
                .identities
                .iter()
                .map(|(id, l)| (l.clone(), *id))
                .collect(),
            identities: contents.identities,
            ipam_next: contents.ipam_next,
            ..Default::default()
        };
        state.policy.namespaces = contents.namespaces;
        for (key, endpoint) in contents.endpoints {
            state.insert(key, endpoint);
        }
        state
    }

    fn insert(&mut self, key: String, endpoint: Endpoint) {
        for ip in &endpoint.ips {
            self.owners.insert(*ip, key.clone());
        }
        self.endpoints.insert(key, endpoint);
    }

    fn remove(&mut self, key: &str) -> Option<Endpoint> {
        let endpoint = self.endpoints.remove(key)?;
        for ip in &endpoint.ips {
            if self.owners.get(ip).map(String::as_str) == Some(key) {
                self.owners.remove(ip);
            }
        }
        Some(endpoint)
    }

    fn users(&self, id: u32) -> usize {
        self.endpoints.values().filter(|e| e.identity == id).count()
    }
}

pub struct Agent {
    config: Config,
    pub(crate) store: Store,
    pub(crate) maps: Maps,
    state: Mutex<State>,
    /// The cluster (`--etcd`): identities from etcd, endpoints published.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

/// What a start-up reconciliation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub endpoints: usize,
    pub map_writes: usize,
    pub gone: usize,
}

impl Agent {
    /// The agent over `store` and `maps`, with the store's contents read
    /// (nothing applied yet: see [`Agent::reconcile`]).
    pub fn new(config: Config, store: Store, maps: Maps) -> Result<Self, AgentError> {
        let mut contents = store.read()?;
        let policies = std::mem::take(&mut contents.policies);
        let policy_next = contents.policy_next;
        let agent = Self {
            config,
            store,
            maps,
            state: Mutex::new(State::from(contents)),
            cluster: None,
        };
        {
            let mut state = agent.state();
            agent.load_policy(&mut state, policies, policy_next)?;
        }
        Ok(agent)
    }

    /// The agent as a member of `cluster`: identities come from etcd (the
    /// store stays their cache), endpoints are published there.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Publishes (or, `gone`, withdraws) the endpoint's addresses in the
    /// cluster; not while it waits for its labels (`init`).
    fn publish(&self, endpoint: &Endpoint, gone: bool) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let identity = (!gone && endpoint.identity != ReservedIdentity::INIT).then_some(endpoint.identity);
        for ip in &endpoint.ips {
            cluster.set_endpoint(std::net::IpAddr::V4(*ip), identity);
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn health(&self) -> Health {
        let state = self.state();
        Health {
            node: self.config.node.clone(),
            pod_cidr: self.config.pod_cidr.map(|p| p.cidr.to_string()),
            endpoints: state.endpoints.len(),
            identities: state.identities.len(),
        }
    }

    /// Registers an endpoint (CNI ADD): its address (the agent's lease when
    /// the request brings none), its identity from its labels, both in the
    /// store, then in the maps. Idempotent for the same host veth.
    pub fn create(&self, request: EndpointRequest) -> Result<Endpoint, AgentError> {
        if request.container_id.is_empty() || request.ifname.is_empty() || request.host_ifindex == 0 {
            return Err(AgentError::BadRequest(
                "an endpoint needs container_id, ifname and host_ifindex".into(),
            ));
        }
        check_container_labels(&request.labels).map_err(|e| AgentError::BadRequest(e.to_string()))?;
        let key = key(&request.container_id, &request.ifname);
        let mut state = self.state();
        // The pin directory's lock, as every writer of the maps holds it:
        // an operator's `endpointctl add` of this address waits, then finds
        // it the agent's (or the agent finds the hand entry).
        let _lock = self.maps.lock().map_err(map_error)?;
        if let Some(existing) = state.endpoints.get(&key) {
            let same = existing.host_ifindex == request.host_ifindex
                && existing.host_veth == request.host_veth
                && (request.ips.is_empty() || request.ips == existing.ips);
            if same {
                return Ok(existing.clone());
            }
            // The attachment was set up again (its old veth is gone): the
            // old endpoint goes first, so nothing of it outlives it.
            log::info!("endpoint {key}: registered again with another veth, replacing");
            self.delete_locked(&mut state, &key)?;
        }
        let (mut endpoint, ipam_next) = self.new_endpoint(&state, request)?;
        let mut changes = Changes {
            ipam_next,
            ..Default::default()
        };
        if self.config.runtime.is_some() {
            // The runtime holds the container while its ADD runs: its
            // labels are asked for afterwards, and until they are known the
            // endpoint has `init`, which policy does not allow.
            endpoint.state = EndpointState::WaitingForLabels;
            endpoint.identity = ReservedIdentity::INIT;
        } else {
            match self.identity_for(&mut state, &endpoint.identity_labels, &mut changes) {
                Ok(id) => endpoint.identity = id,
                // A new label set while etcd is down: the endpoint starts
                // with `init` and gets its number when etcd is back
                // (crate::cluster::retry_waiting).
                Err(e) if self.cluster.is_some() => {
                    log::warn!("endpoint {key}: {e}; it has init until etcd answers");
                    endpoint.state = EndpointState::WaitingForLabels;
                    endpoint.identity = ReservedIdentity::INIT;
                }
                Err(e) => return Err(e),
            }
        }
        changes.endpoints.push((key.clone(), endpoint.clone()));
        self.store.commit(&changes)?;
        if let Some(next) = changes.ipam_next {
            state.ipam_next = Some(next);
        }
        state.insert(key.clone(), endpoint.clone());
        // Its identity's policy in force before its address has the
        // identity: ADD returns with policy enforced.
        let written = self
            .enforce_identity(&mut state, &endpoint)
            .and_then(|()| self.write_endpoint(&endpoint));
        if let Err(e) = written {
            log::warn!("endpoint {key}: the maps refused it ({e}); removing it again");
            self.delete_locked(&mut state, &key)?;
            return Err(e);
        }
        self.publish(&endpoint, false);
        log::info!(
            "endpoint {key}: {:?} identity {} ({})",
            endpoint.ips,
            endpoint.identity,
            canonical(&endpoint.identity_labels)
        );
        Ok(endpoint)
    }

    /// The endpoint a request describes (identity not set yet), its
    /// address checked or leased, and the IPAM cursor after a lease.
    fn new_endpoint(
        &self,
        state: &State,
        request: EndpointRequest,
    ) -> Result<(Endpoint, Option<u32>), AgentError> {
        let mut labels = request.labels.clone();
        let namespace = request.pod_namespace.clone().filter(|n| !n.is_empty());
        labels.insert(
            POD_NAMESPACE_LABEL.into(),
            namespace.unwrap_or_else(|| "default".into()),
        );
        if let Some(name) = request.pod_name.clone().filter(|n| !n.is_empty()) {
            labels.insert(POD_NAME_LABEL.into(), name);
        }
        let key = key(&request.container_id, &request.ifname);
        // An address with an entry the agent did not write is an
        // operator's (endpointctl): never given out, never taken over.
        let hand = |ip: Ipv4Addr| -> Result<Option<String>, AgentError> {
            if state.owners.contains_key(&ip) {
                return Ok(None);
            }
            Ok(self.maps.endpoints.get(ip).map_err(map_error)?.map(describe))
        };
        let (ips, leased, prefix_len, gateway, next) = if request.ips.is_empty() {
            let pool = self.config.pod_cidr.ok_or_else(|| {
                AgentError::BadRequest(
                    "the request brings no address and the agent has no --pod-cidr to lease one from \
                     (give the network an \"ipam\" section, or start the agent with --pod-cidr)"
                        .into(),
                )
            })?;
            let mut failed = None;
            // An address a deleted pod had waits until the other nodes
            // forgot it (crate::cluster::REUSE_GRACE).
            let withdrawn = |ip: Ipv4Addr| {
                self.cluster
                    .as_ref()
                    .is_some_and(|c| !c.reusable(std::net::IpAddr::V4(ip)))
            };
            let found = pool.allocate(state.ipam_next, |ip| {
                state.owners.contains_key(&ip)
                    || withdrawn(ip)
                    || hand(ip)
                        .unwrap_or_else(|e| {
                            failed.get_or_insert(e);
                            None
                        })
                        .is_some()
            });
            if let Some(e) = failed {
                return Err(e);
            }
            let (ip, next) = found.ok_or_else(|| {
                let waiting = if self.cluster.is_some() {
                    format!(
                        " (a deleted pod's address waits until etcd has withdrawn it, and {:?} more)",
                        crate::cluster::REUSE_GRACE
                    )
                } else {
                    String::new()
                };
                AgentError::Exhausted(format!(
                    "no free address left in the pod CIDR {}{waiting}",
                    pool.cidr
                ))
            })?;
            (
                vec![ip],
                true,
                Some(pool.cidr.prefix_len()),
                Some(pool.gateway()),
                Some(next),
            )
        } else {
            for ip in &request.ips {
                if let Some(owner) = state.owners.get(ip).filter(|o| **o != key) {
                    return Err(AgentError::Conflict(format!(
                        "{ip} is already endpoint {owner}'s: it cannot be endpoint {key}'s too"
                    )));
                }
                if let Some(id) = hand(*ip)? {
                    return Err(AgentError::Conflict(format!(
                        "{ip} has a hand entry (endpointctl: identity {id}): the agent cannot give it to \
                         endpoint {key}; remove the hand entry first (endpointctl del --ip {ip})"
                    )));
                }
            }
            (request.ips.clone(), false, None, None, None)
        };
        let identity_labels = self.config.filter.identity_labels(&labels);
        let endpoint = Endpoint {
            container_id: request.container_id,
            ifname: request.ifname,
            network: request.network,
            netns: request.netns,
            host_veth: request.host_veth,
            host_ifindex: request.host_ifindex,
            ips,
            prefix_len,
            gateway,
            leased,
            labels,
            identity_labels,
            identity: 0,
            state: EndpointState::Ready,
            runtime: None,
        };
        Ok((endpoint, next))
    }

    /// The number of a label set: the one it has, or a new one from 256 up
    /// that no entry of the maps uses (an operator's hand-typed identities
    /// keep their meaning), recorded in `changes`.
    /// The compiler learns the endpoint's identity (a new label set is
    /// matched against every selector once), and the label maps get what
    /// changed (nothing for a known label set outside every CIDR rule).
    fn enforce_identity(&self, state: &mut State, endpoint: &Endpoint) -> Result<(), AgentError> {
        if endpoint.identity >= FIRST_LABEL_IDENTITY {
            self.policy_identity(state, endpoint.identity, &endpoint.identity_labels);
        }
        self.sync(state).map(drop)
    }

    pub(crate) fn identity_for(
        &self,
        state: &mut State,
        labels: &Labels,
        changes: &mut Changes,
    ) -> Result<u32, AgentError> {
        if let Some(cluster) = &self.cluster {
            return cluster_identity(cluster, state, labels, changes);
        }
        if let Some(id) = state.by_labels.get(labels) {
            return Ok(*id);
        }
        let generation = self.maps.config.generation().map_err(map_error)?;
        if state.foreign.as_ref().is_none_or(|(g, _)| *g != generation) {
            // The tools changed something since the last look (or this is
            // the first): read the maps again.
            state.foreign = Some((generation, self.identities_in_maps(state)?));
        }
        let used = &state.foreign.as_ref().expect("just read").1;
        let id = (FIRST_LABEL_IDENTITY..=u32::MAX)
            .find(|id| !state.identities.contains_key(id) && !used.contains(id))
            .ok_or_else(|| AgentError::Exhausted("no identity number left".into()))?;
        state.identities.insert(id, labels.clone());
        state.by_labels.insert(labels.clone(), id);
        changes.identities.push((id, labels.clone()));
        Ok(id)
    }

    /// Identities that entries the agent did not write use: hand endpoints
    /// and prefixes, and both ends of every rule.
    fn identities_in_maps(&self, state: &State) -> Result<BTreeSet<u32>, AgentError> {
        let mut used = BTreeSet::new();
        for (ip, id) in self.maps.endpoints.list().map_err(map_error)? {
            if !state.owners.contains_key(&ip) {
                used.extend(id.valid().map(Id::get));
            }
        }
        for (_, id) in self.maps.prefixes.list().map_err(map_error)? {
            used.extend(id.valid().map(Id::get));
        }
        for rule in self.maps.rules().map_err(map_error)? {
            match rule {
                Stored::Valid(r) => used.extend([r.pair.src.get(), r.pair.dst.get()]),
                Stored::Invalid { raw, .. } => used.extend([raw.src, raw.dst]),
            }
        }
        Ok(used)
    }

    /// The endpoint's entries: its identity for each address, then the
    /// record of its addresses behind its host veth, carrying the identity.
    fn write_endpoint(&self, endpoint: &Endpoint) -> Result<usize, AgentError> {
        let mut writes = 0;
        let id = Id::new(endpoint.identity).expect("identities are not 0");
        writes += self.uncarry_other_than(endpoint, id)?;
        for ip in &endpoint.ips {
            let current = self.maps.endpoints.get(*ip).map_err(map_error)?;
            if current != Some(Stored::Valid(id)) {
                // `init` is what the agent wrote while the labels were asked for.
                if let Some(other) =
                    current.filter(|c| *c != Stored::Valid(Id::new(ReservedIdentity::INIT).expect("5")))
                {
                    log::warn!(
                        "{ip}: the endpoint map says {}, but it is endpoint {}'s (identity {}): restored",
                        describe(other),
                        key(&endpoint.container_id, &endpoint.ifname),
                        endpoint.identity
                    );
                }
                self.maps.endpoints.upsert(*ip, id).map_err(map_error)?;
                writes += 1;
            }
            // Its local delivery record (the CNI plugin's, if written yet)
            // carries the same number: from-pod then need not look it up.
            if self
                .maps
                .local
                .carry_identity(*ip, &self.maps.endpoints)
                .map_err(map_error)?
            {
                writes += 1;
            }
        }
        // The record carries the identity (from-pod then need not look it
        // up): written after the endpoint entries, so that both say the same
        // from here on.
        let interfaces = &self.maps.interfaces;
        let record = interfaces.get(endpoint.host_ifindex).map_err(map_error)?;
        if record.as_deref() != Some(endpoint.ips.as_slice())
            || interfaces
                .carried_identity(endpoint.host_ifindex)
                .map_err(map_error)?
                != Some(id)
        {
            interfaces
                .set_carrying(endpoint.host_ifindex, &endpoint.ips, Some(id))
                .map_err(map_error)?;
            writes += 1;
        }
        if writes > 0 {
            self.maps.after_identity_change().map_err(map_error)?;
        }
        Ok(writes)
    }

    /// Before the endpoint's entries change (`init` to its number): the
    /// records that carry another number than `id` carry none for a
    /// moment, so that a crash between the entries and the copies leaves
    /// from-pod looking the entries up, never a copy that disagrees.
    fn uncarry_other_than(&self, endpoint: &Endpoint, id: Id) -> Result<usize, AgentError> {
        let mut writes = 0;
        let interfaces = &self.maps.interfaces;
        let carried = interfaces
            .carried_identity(endpoint.host_ifindex)
            .map_err(map_error)?;
        if carried.is_some_and(|c| c != id) {
            if let Some(addrs) = interfaces.get(endpoint.host_ifindex).map_err(map_error)? {
                interfaces
                    .set_carrying(endpoint.host_ifindex, &addrs, None)
                    .map_err(map_error)?;
                writes += 1;
            }
        }
        for ip in &endpoint.ips {
            if let Some(other) = self.maps.local.carried_identity(*ip).map_err(map_error)? {
                if other != id && self.maps.local.clear_identity(*ip, other).map_err(map_error)? {
                    writes += 1;
                }
            }
        }
        Ok(writes)
    }

    /// Removes the endpoint's entries, where they are still what it wrote.
    fn erase_endpoint(&self, endpoint: &Endpoint) -> Result<(), AgentError> {
        let id = Id::new(endpoint.identity).expect("identities are not 0");
        for ip in &endpoint.ips {
            // A local delivery record still there no longer carries it
            // (first: the entry is what from-pod looks up instead).
            self.maps.local.clear_identity(*ip, id).map_err(map_error)?;
            if self.maps.endpoints.get(*ip).map_err(map_error)? == Some(Stored::Valid(id)) {
                self.maps.endpoints.delete(*ip).map_err(map_error)?;
            }
        }
        let record = self
            .maps
            .interfaces
            .get(endpoint.host_ifindex)
            .map_err(map_error)?;
        if record.as_deref() == Some(endpoint.ips.as_slice()) {
            self.maps
                .interfaces
                .remove(endpoint.host_ifindex)
                .map_err(map_error)?;
        }
        self.maps.after_identity_change().map_err(map_error)?;
        Ok(())
    }

    /// The runtime's answer for an endpoint waiting for its labels: its
    /// labels (merged under the CNI request's, which win), or `None` when
    /// the runtime does not know the container (the CNI request's labels
    /// are all it has). The identity follows; the maps get the difference.
    /// Labels with reserved keys are left out (and logged).
    pub fn runtime_labels(
        &self,
        container_id: &str,
        ifname: &str,
        host_ifindex: u32,
        runtime: &str,
        labels: Option<Labels>,
    ) -> Result<Option<Endpoint>, AgentError> {
        let key = key(container_id, ifname);
        let mut state = self.state();
        let Some(stored) = state
            .endpoints
            .get(&key)
            .filter(|e| e.host_ifindex == host_ifindex)
            .cloned()
        else {
            return Ok(None); // gone, or set up again since
        };
        let mut endpoint = stored;
        let _lock = self.maps.lock().map_err(map_error)?;
        if let Some(labels) = &labels {
            for (k, v) in labels {
                if let Err(e) = crate::labels::check_label(k, v).and_then(|()| {
                    crate::labels::check_container_labels(&Labels::from([(k.clone(), v.clone())]))
                }) {
                    log::warn!("endpoint {key}: {runtime} label left out: {e}");
                    continue;
                }
                endpoint.labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            endpoint.runtime = Some(runtime.to_string());
        }
        endpoint.identity_labels = self.config.filter.identity_labels(&endpoint.labels);
        endpoint.state = EndpointState::Ready;
        let mut changes = Changes::default();
        endpoint.identity = self.identity_for(&mut state, &endpoint.identity_labels, &mut changes)?;
        changes.endpoints.push((key.clone(), endpoint.clone()));
        self.store.commit(&changes)?;
        state.insert(key.clone(), endpoint.clone());
        self.enforce_identity(&mut state, &endpoint)?;
        self.write_endpoint(&endpoint)?;
        self.publish(&endpoint, false);
        log::info!(
            "endpoint {key}: labels from {}, identity {} ({})",
            if labels.is_some() {
                runtime
            } else {
                "the CNI request only"
            },
            endpoint.identity,
            canonical(&endpoint.identity_labels)
        );
        Ok(Some(endpoint))
    }

    /// Endpoints whose labels a runtime has not given yet.
    pub fn waiting(&self) -> Vec<Endpoint> {
        self.state()
            .endpoints
            .values()
            .filter(|e| e.state == EndpointState::WaitingForLabels)
            .cloned()
            .collect()
    }

    /// Removes the endpoints of containers that `runtime` reported, now
    /// reports gone: `exists` says which containers it still has.
    pub fn forget_gone(&self, runtime: &str, exists: impl Fn(&str) -> bool) -> Result<usize, AgentError> {
        let mut state = self.state();
        let gone: Vec<String> = state
            .endpoints
            .iter()
            .filter(|(_, e)| e.runtime.as_deref() == Some(runtime) && !exists(&e.container_id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            log::info!("endpoint {key}: {runtime} reports its container gone");
            self.delete_locked(&mut state, key)?;
        }
        Ok(gone.len())
    }

    /// Unregisters an endpoint (CNI DEL, GC, a runtime's "gone"): its map
    /// entries go before its record and its lease, so that its address has
    /// no identity before it can be handed out again.
    pub fn delete(&self, container_id: &str, ifname: &str) -> Result<bool, AgentError> {
        let mut state = self.state();
        self.delete_locked(&mut state, &key(container_id, ifname))
    }

    fn delete_locked(&self, state: &mut State, key: &str) -> Result<bool, AgentError> {
        let Some(endpoint) = state.endpoints.get(key).cloned() else {
            return Ok(false);
        };
        let _lock = self.maps.lock().map_err(map_error)?;
        // Entries first, record (and lease) after: a crash between leaves
        // the record, and the next start removes the endpoint again.
        self.erase_endpoint(&endpoint)?;
        self.store.commit(&Changes {
            removed_endpoints: vec![key.to_string()],
            ..Default::default()
        })?;
        state.remove(key);
        if let Some(cluster) = &self.cluster {
            // Withdrawn from etcd (waiting a little for it) before the
            // address can be handed out again.
            for ip in &endpoint.ips {
                cluster.withdraw(std::net::IpAddr::V4(*ip));
            }
            // Its identity's last endpoint here: this node no longer uses it.
            if endpoint.identity >= FIRST_LABEL_IDENTITY && state.users(endpoint.identity) == 0 {
                cluster.release_identity(&endpoint.identity_labels, endpoint.identity);
            }
        }
        log::info!("endpoint {key}: removed ({:?})", endpoint.ips);
        // CIDR rules that named its address (after its entries are gone).
        if let Err(e) = self.sync(state) {
            log::warn!("endpoint {key}: label policy after its removal: {e}");
        }
        Ok(true)
    }

    pub fn endpoint(&self, container_id: &str, ifname: &str) -> Option<Endpoint> {
        self.state().endpoints.get(&key(container_id, ifname)).cloned()
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.state().endpoints.values().cloned().collect()
    }

    /// Every identity: the reserved ones with a meaning, then the label sets'.
    pub fn identities(&self) -> Vec<Identity> {
        let state = self.state();
        let reserved = ebpfcni_api::RESERVED.iter().map(|r| Identity {
            id: r.id,
            labels: Labels::new(),
            endpoints: state.users(r.id),
            reserved: Some(r.name.to_string()),
        });
        let labelled = state.identities.iter().map(|(id, labels)| Identity {
            id: *id,
            labels: labels.clone(),
            endpoints: state.users(*id),
            reserved: None,
        });
        reserved.chain(labelled).collect()
    }

    /// CNI GC: every endpoint of `network` whose attachment is not valid goes.
    pub fn gc(&self, network: &str, valid: &[Deletion]) -> Result<Vec<Deletion>, AgentError> {
        let mut state = self.state();
        let valid: BTreeSet<String> = valid.iter().map(|d| key(&d.container_id, &d.ifname)).collect();
        let stale: Vec<(String, Deletion)> = state
            .endpoints
            .iter()
            .filter(|(k, e)| e.network == network && !valid.contains(*k))
            .map(|(k, e)| {
                (
                    k.clone(),
                    Deletion {
                        container_id: e.container_id.clone(),
                        ifname: e.ifname.clone(),
                    },
                )
            })
            .collect();
        let mut removed = Vec::new();
        for (key, deletion) in stale {
            self.delete_locked(&mut state, &key)?;
            removed.push(deletion);
        }
        Ok(removed)
    }

    /// At start: removes endpoints whose host veth is gone (a DEL a crash
    /// interrupted, or containers gone while the agent was down), and
    /// writes the maps' differences from the store (never a flush: entries
    /// that are right are not touched).
    pub fn reconcile(&self, alive: impl Fn(&Endpoint) -> bool) -> Result<Reconciled, AgentError> {
        let mut state = self.state();
        let _lock = self.maps.lock().map_err(map_error)?;
        let mut done = Reconciled::default();
        // Policy first: every endpoint's identity is enforced before its
        // entries are (re)written.
        done.map_writes += self.sync(&mut state)?;
        let keys: Vec<String> = state.endpoints.keys().cloned().collect();
        for key in keys {
            let endpoint = state.endpoints[&key].clone();
            if !alive(&endpoint) {
                log::info!("endpoint {key}: its host veth {} is gone", endpoint.host_veth);
                self.delete_locked(&mut state, &key)?;
                done.gone += 1;
            } else {
                done.map_writes += self.write_endpoint(&endpoint)?;
                self.publish(&endpoint, false);
                done.endpoints += 1;
            }
        }
        Ok(done)
    }
}

/// A label set's number from the cluster, cached in the store; with etcd
/// unreachable, the cached number (a known label set still starts), or an
/// error (a new one waits for etcd).
fn cluster_identity(
    cluster: &Cluster,
    state: &mut State,
    labels: &Labels,
    changes: &mut Changes,
) -> Result<u32, AgentError> {
    match cluster.identity(labels) {
        Ok(id) => {
            if state.identities.get(&id) != Some(labels) {
                if let Some(old) = state.identities.insert(id, labels.clone()) {
                    state.by_labels.remove(&old);
                }
                if let Some(prev) = state.by_labels.insert(labels.clone(), id).filter(|p| *p != id) {
                    state.identities.remove(&prev);
                }
                changes.identities.push((id, labels.clone()));
            }
            Ok(id)
        }
        Err(e) => match state.by_labels.get(labels) {
            Some(id) => {
                log::warn!(
                    "identity of {}: etcd: {e}; using the cached {id}",
                    canonical(labels)
                );
                Ok(*id)
            }
            None => Err(AgentError::Internal(format!(
                "identity of {}: etcd: {e} (a new label set waits for etcd)",
                canonical(labels)
            ))),
        },
    }
}

pub(crate) fn describe(id: ebpfcni::StoredIdentity) -> String {
    match id {
        Stored::Valid(id) => id.get().to_string(),
        Stored::Invalid { raw, .. } => format!("{raw} (invalid)"),
    }
}
