//! Many nodes: what the agent does locally with the cluster's state
//! (issue 23). [`Remote`] applies the events of the cluster store's watcher
//! ([`ebpfcni_kvstore::Watcher`]) to this node:
//!
//! - another node up: a route to its pod CIDR via its node IP (native
//!   routing, no tunnel; as Cilium's auto-direct-node-routes), and its node
//!   IP in the endpoint map with the reserved `remote-node` identity;
//!   gone: both removed;
//! - another node's endpoint (accepted by the watcher: inside its owner's
//!   pod CIDR): its address in the endpoint map with its identity, for
//!   exactly as long as its key exists;
//! - after the first full list ([`Event::Synced`]): remote entries and
//!   routes left from before a restart that the cluster no longer has are
//!   removed. Nothing is flushed; entries of this node's own pod CIDR are
//!   never touched (they are the agent's).
//!
//! Routes go through the netlink socket given (opened in the node's
//! network namespace), never a shell.
//!
//! [`Cluster`] is the agent's membership (`--etcd`): its node key and
//! lease, its pod CIDR, identities from etcd, its endpoints published.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ebpfcni::netlink::{Netlink, Route};
use ebpfcni::{Identity as Id, Maps, Stored};
use ebpfcni_api::Labels;
use ebpfcni_kvstore::{Claim, Error, Event, NodeRecord, NodeSpec, Session, Store, DEFAULT_PREFIX};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The reserved identity of the other nodes' addresses.
pub const REMOTE_NODE: u32 = 6;

/// This node's view of the other nodes, as applied to its maps and routes.
pub struct Remote {
    node: String,
    own_cidr: Ipv4Net,
    cluster_cidr: Option<Ipv4Net>,
    netlink: Netlink,
    /// Other nodes, as routed.
    nodes: BTreeMap<String, NodeRecord>,
    /// Other nodes' endpoints, as written.
    endpoints: BTreeMap<Ipv4Addr, u32>,
    synced: bool,
}

/// What applying events did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub map_writes: usize,
    pub route_changes: usize,
}

impl Remote {
    /// The view of node `node` (whose pod CIDR is `own_cidr`); stale
    /// entries are looked for inside `cluster_cidr` only.
    pub fn new(node: &str, own_cidr: Ipv4Net, cluster_cidr: Option<Ipv4Net>, netlink: Netlink) -> Self {
        Self {
            node: node.to_string(),
            own_cidr,
            cluster_cidr,
            netlink,
            nodes: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            synced: false,
        }
    }

    /// The other nodes' endpoints as applied.
    pub fn endpoints(&self) -> &BTreeMap<Ipv4Addr, u32> {
        &self.endpoints
    }

    /// Applies one event to `maps` and the routes.
    pub fn apply(&mut self, maps: &Maps, event: &Event) -> Result<Applied, String> {
        let _lock = maps.lock().map_err(|e| e.to_string())?;
        let mut done = Applied::default();
        match event {
            Event::NodeUp(n) if n.name != self.node => self.node_up(maps, n, &mut done)?,
            Event::NodeDown(name) => {
                if let Some(old) = self.nodes.remove(name) {
                    self.unroute(maps, &old, &mut done)?;
                }
            }
            Event::EndpointUpsert(e) if e.node != self.node => {
                let IpAddr::V4(ip) = e.ip else {
                    return Ok(done);
                };
                if self.own_cidr.contains(&ip) {
                    log::warn!("node {} publishes {ip} of this node's pod CIDR: ignored", e.node);
                    return Ok(done);
                }
                let Some(id) = Id::new(e.identity) else {
                    return Ok(done);
                };
                if maps.endpoints.get(ip).map_err(|e| e.to_string())? != Some(Stored::Valid(id)) {
                    maps.endpoints.upsert(ip, id).map_err(|e| e.to_string())?;
                    done.map_writes += 1;
                }
                self.endpoints.insert(ip, e.identity);
            }
            Event::EndpointDelete(IpAddr::V4(ip)) => {
                if let Some(id) = self.endpoints.remove(ip) {
                    done.map_writes += delete_if(maps, *ip, id)?;
                }
            }
            Event::Synced { .. } if !self.synced => {
                self.synced = true;
                self.sweep(maps, &mut done)?;
            }
            _ => {}
        }
        if done.map_writes > 0 {
            maps.after_identity_change().map_err(|e| e.to_string())?;
        }
        Ok(done)
    }

    fn node_up(&mut self, maps: &Maps, n: &NodeRecord, done: &mut Applied) -> Result<(), String> {
        let IpAddr::V4(node_ip) = n.node_ip else {
            return Ok(());
        };
        if let Some(old) = self.nodes.get(&n.name).cloned() {
            if old.pod_cidr != n.pod_cidr || old.node_ip != n.node_ip {
                self.unroute(maps, &old, done)?;
            }
        }
        let route = route_to(n.pod_cidr, node_ip);
        self.netlink
            .replace_route(&route)
            .map_err(|e| format!("route {} via {node_ip}: {e}", n.pod_cidr))?;
        done.route_changes += 1;
        let remote = Id::new(REMOTE_NODE).expect("6");
        if maps.endpoints.get(node_ip).map_err(|e| e.to_string())? != Some(Stored::Valid(remote)) {
            maps.endpoints
                .upsert(node_ip, remote)
                .map_err(|e| e.to_string())?;
            done.map_writes += 1;
        }
        log::info!("node {} up: {} via {node_ip}", n.name, n.pod_cidr);
        self.nodes.insert(n.name.clone(), n.clone());
        Ok(())
    }

    fn unroute(&mut self, maps: &Maps, n: &NodeRecord, done: &mut Applied) -> Result<(), String> {
        let IpAddr::V4(node_ip) = n.node_ip else {
            return Ok(());
        };
        if self
            .netlink
            .delete_route(&route_to(n.pod_cidr, node_ip))
            .map_err(|e| format!("delete route {}: {e}", n.pod_cidr))?
        {
            done.route_changes += 1;
        }
        done.map_writes += delete_if(maps, node_ip, REMOTE_NODE)?;
        log::info!("node {} down: route to {} removed", n.name, n.pod_cidr);
        Ok(())
    }

    /// After the first full list: entries of the cluster CIDR outside this
    /// node's pod CIDR, and routes into the cluster CIDR via a gateway,
    /// that the cluster does not have (left from before a restart).
    fn sweep(&mut self, maps: &Maps, done: &mut Applied) -> Result<(), String> {
        let Some(cluster) = self.cluster_cidr else {
            return Ok(());
        };
        for (ip, _) in maps.endpoints.list().map_err(|e| e.to_string())? {
            if cluster.contains(&ip) && !self.own_cidr.contains(&ip) && !self.endpoints.contains_key(&ip) {
                maps.endpoints.delete(ip).map_err(|e| e.to_string())?;
                done.map_writes += 1;
            }
        }
        let wanted: Vec<Route> = self
            .nodes
            .values()
            .filter_map(|n| match n.node_ip {
                IpAddr::V4(ip) => Some(route_to(n.pod_cidr, ip)),
                IpAddr::V6(_) => None,
            })
            .collect();
        for route in self.netlink.routes().map_err(|e| e.to_string())? {
            let Ok(dst) = Ipv4Net::new(route.dst, route.prefix) else {
                continue;
            };
            if route.gateway.is_some()
                && route.prefix > 0
                && cluster.contains(&dst)
                && !wanted
                    .iter()
                    .any(|w| w.dst == route.dst && w.prefix == route.prefix)
            {
                self.netlink.delete_route(&route).map_err(|e| e.to_string())?;
                done.route_changes += 1;
            }
        }
        Ok(())
    }
}

/// `cidr via node_ip` in the main table.
fn route_to(cidr: Ipv4Net, node_ip: Ipv4Addr) -> Route {
    Route::via_gateway(cidr.network(), cidr.prefix_len(), node_ip)
}

/// Deletes `ip`'s entry if it still holds `id`.
fn delete_if(maps: &Maps, ip: Ipv4Addr, id: u32) -> Result<usize, String> {
    let Some(id) = Id::new(id) else {
        return Ok(0);
    };
    if maps.endpoints.get(ip).map_err(|e| e.to_string())? == Some(Stored::Valid(id)) {
        maps.endpoints.delete(ip).map_err(|e| e.to_string())?;
        return Ok(1);
    }
    Ok(0)
}

/// What `--etcd` and its companion flags say.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub etcd: Vec<String>,
    pub node: String,
    pub node_ip: IpAddr,
    /// `--pod-cidr`: the node's CIDR must be this one.
    pub pod_cidr: Option<Ipv4Net>,
    /// `--cluster-cidr` and `--node-cidr-size`: where it comes from otherwise.
    pub cluster_cidr: Option<Ipv4Net>,
    pub node_cidr_len: u8,
    /// The node's lease, seconds.
    pub ttl: i64,
    /// How often the agent frees the identities no node uses
    /// (`--identity-gc-seconds`).
    pub gc_interval: Duration,
    /// Where the claim and pod CIDR are cached (`cluster.json`), so that a
    /// restart resumes the lease, and starts with etcd down.
    pub state_dir: PathBuf,
}

/// Why the agent cannot join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Another live agent holds the node name.
    #[error("{0}")]
    Taken(String),
    /// etcd is unreachable and there is no cached pod CIDR to start with.
    #[error("{0}")]
    Unreachable(String),
    /// Refused (CIDR taken or mismatched, bad flags).
    #[error("{0}")]
    Refused(String),
}

/// What the agent caches about its membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    node: String,
    pod_cidr: Ipv4Net,
    claim: Option<Claim>,
}

/// This node's membership of the cluster, with a runtime of its own (the
/// agent's core is synchronous: it calls in from blocking threads).
pub struct Cluster {
    /// Always Some; taken on drop (shut down in the background: the last
    /// reference may go inside the agent's own runtime).
    rt: Option<tokio::runtime::Runtime>,
    store: Store,
    session: Arc<OnceLock<Session>>,
    pod_cidr: Ipv4Net,
    config: ClusterConfig,
    /// The endpoints this node should have published, and a wake-up for
    /// the task that publishes them.
    desired: Arc<Mutex<BTreeMap<IpAddr, u32>>>,
    changed: Arc<Notify>,
    /// Label sets this node has its user key of, in this session.
    acquired: Mutex<HashMap<Labels, u32>>,
    /// Addresses withdrawn, and when etcd deleted their keys (None: not
    /// yet): not handed out again before [`REUSE_GRACE`] after that.
    withdrawn: Withdrawn,
}

/// The withdrawn addresses, and the file that keeps them across a crash
/// or a restart (`withdrawn.json` in the state directory): an agent
/// killed right after a DEL, and started again while etcd is down, must
/// not hand out an address whose key the other nodes still hold. Loaded
/// as "not confirmed yet": the publishing task confirms each once etcd
/// has no key of it from this node.
#[derive(Clone)]
struct Withdrawn {
    addrs: Arc<Mutex<HashMap<IpAddr, Option<Instant>>>>,
    path: Arc<PathBuf>,
}

impl Withdrawn {
    fn load(path: PathBuf) -> Self {
        let addrs: Vec<IpAddr> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if !addrs.is_empty() {
            log::info!(
                "{} address(es) of deleted pods wait for etcd before they are handed out again: {addrs:?}",
                addrs.len()
            );
        }
        Self {
            addrs: Arc::new(Mutex::new(addrs.into_iter().map(|ip| (ip, None)).collect())),
            path: Arc::new(path),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Option<Instant>>> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the addresses still waiting (write and rename: the file is
    /// the old list or the new one).
    fn save(&self, addrs: &HashMap<IpAddr, Option<Instant>>) {
        let list: Vec<&IpAddr> = addrs.keys().collect();
        let tmp = self.path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, serde_json::to_vec(&list).expect("serializes"))
            .and_then(|()| std::fs::rename(&tmp, &*self.path));
        if let Err(e) = written {
            log::warn!("keep the withdrawn addresses in {}: {e}", self.path.display());
        }
    }
}

/// How long a withdrawn address waits, after etcd deleted its key, before
/// this node hands it out again: the other nodes' watchers remove its
/// entry meanwhile (within milliseconds), so that it has no identity on
/// them before a new pod has it.
pub const REUSE_GRACE: Duration = Duration::from_secs(3);

/// Notes that etcd deleted `ip`'s key now, if it waits for that.
fn confirm_withdrawn(withdrawn: &Withdrawn, ip: IpAddr) {
    let mut w = withdrawn.lock();
    if let Some(when @ None) = w.get_mut(&ip) {
        *when = Some(Instant::now());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// How long one identity request to etcd may keep a CNI ADD waiting.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(3);

impl Cluster {
    /// Joins: the node's lease and key (resuming the cached claim when its
    /// lease is alive), its pod CIDR. With etcd unreachable, starts from
    /// the cached pod CIDR and keeps trying in the background.
    pub fn join(config: ClusterConfig) -> Result<Self, JoinError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ebpfcni-etcd")
            .enable_all()
            .build()
            .map_err(|e| JoinError::Refused(format!("start the etcd runtime: {e}")))?;
        let cache_path = config.state_dir.join("cluster.json");
        let cached: Option<Cached> = std::fs::read(&cache_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &Cached| c.node == config.node);
        let store = rt
            .block_on(Store::connect(&config.etcd, DEFAULT_PREFIX))
            .map_err(|e| JoinError::Refused(format!("--etcd: {e}")))?;
        let spec = NodeSpec {
            name: config.node.clone(),
            node_ip: config.node_ip,
            pod_cidr: config.pod_cidr,
            cluster_cidr: config.cluster_cidr.map(|c| (c, config.node_cidr_len)),
            ttl: config.ttl,
        };
        let claim = cached.as_ref().and_then(|c| c.claim.clone());
        let session = Arc::new(OnceLock::new());
        let started = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                Session::start(&store, &spec, claim.as_ref()),
            )
            .await
        });
        let pod_cidr = match started {
            Ok(Ok(s)) => {
                let cidr = rt.block_on(s.record()).pod_cidr;
                let claim = rt.block_on(s.claim());
                save(&cache_path, &config.node, cidr, Some(claim));
                let _ = session.set(s);
                log::info!(
                    "joined the cluster at {:?} as {} (pod CIDR {cidr})",
                    config.etcd,
                    config.node
                );
                cidr
            }
            Ok(Err(e @ Error::NodeTaken { .. })) => return Err(JoinError::Taken(e.to_string())),
            Ok(Err(e)) if !e.is_unavailable() => return Err(JoinError::Refused(e.to_string())),
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 5 s".into(),
                };
                let Some(cached) = cached else {
                    return Err(JoinError::Unreachable(format!(
                        "etcd at {:?} unreachable ({why}) and no cached pod CIDR in {}",
                        config.etcd,
                        cache_path.display()
                    )));
                };
                log::warn!(
                    "etcd unreachable ({why}): starting with the cached pod CIDR {}; joining in the background",
                    cached.pod_cidr
                );
                rt.spawn(join_later(
                    store.clone(),
                    spec,
                    claim,
                    session.clone(),
                    cache_path,
                ));
                cached.pod_cidr
            }
        };
        let desired = Arc::new(Mutex::new(BTreeMap::new()));
        let changed = Arc::new(Notify::new());
        let withdrawn = Withdrawn::load(config.state_dir.join("withdrawn.json"));
        rt.spawn(publish(
            store.clone(),
            config.node.clone(),
            session.clone(),
            desired.clone(),
            changed.clone(),
            withdrawn.clone(),
        ));
        Ok(Self {
            rt: Some(rt),
            acquired: Mutex::new(HashMap::new()),
            withdrawn,
            store,
            session,
            pod_cidr,
            config,
            desired,
            changed,
        })
    }

    /// The node's pod CIDR (from etcd, or the cache while etcd is down).
    pub fn pod_cidr(&self) -> Ipv4Net {
        self.pod_cidr
    }

    /// The cluster's number of a label set (allocated if new). Fails when
    /// etcd cannot be asked (the caller falls back to its cache).
    pub fn identity(&self, labels: &Labels) -> Result<u32, String> {
        if let Some(id) = self
            .acquired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(labels)
        {
            return Ok(*id);
        }
        let Some(session) = self.session.get() else {
            return Err("not joined to etcd yet".into());
        };
        let id = self
            .rt()
            .block_on(async { tokio::time::timeout(IDENTITY_TIMEOUT, session.identity(labels)).await })
            .map_err(|_| format!("etcd did not answer within {IDENTITY_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        self.acquired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels.clone(), id);
        Ok(id)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the runtime lives until drop")
    }

    /// Policy documents put and deleted in etcd, in one transaction (every
    /// agent, this one included, applies them from its watcher).
    pub fn change_policies(
        &self,
        put: Vec<(ebpfcni_kvstore::PolicyKey, Vec<u8>)>,
        delete: Vec<ebpfcni_kvstore::PolicyKey>,
    ) -> Result<(), String> {
        self.rt()
            .block_on(async {
                tokio::time::timeout(IDENTITY_TIMEOUT, self.store.change_policies(&put, &delete)).await
            })
            .map_err(|_| format!("etcd did not answer within {IDENTITY_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())
    }

    /// This node's endpoint at `ip` has `identity` (None: it is gone). It
    /// is published (withdrawn) by a task that retries while etcd is down.
    pub fn set_endpoint(&self, ip: IpAddr, identity: Option<u32>) {
        {
            let mut desired = self.desired.lock().unwrap_or_else(|p| p.into_inner());
            match identity {
                Some(id) => desired.insert(ip, id),
                None => desired.remove(&ip),
            };
        }
        self.changed.notify_one();
    }

    /// This node's endpoint at `ip` is gone: withdrawn from etcd now
    /// (waiting at most 2 s; after that, and while etcd is down, the
    /// publishing task keeps trying). The address is not handed out again
    /// before etcd has deleted its key and [`REUSE_GRACE`] has passed
    /// ([`Cluster::reusable`]).
    pub fn withdraw(&self, ip: IpAddr) {
        {
            let mut w = self.withdrawn.lock();
            w.insert(ip, None);
            self.withdrawn.save(&w);
        }
        self.set_endpoint(ip, None);
        let Some(session) = self.session.get() else {
            return;
        };
        let done = self.rt().block_on(async {
            tokio::time::timeout(Duration::from_secs(2), session.remove_endpoint(ip)).await
        });
        if matches!(done, Ok(Ok(()))) {
            confirm_withdrawn(&self.withdrawn, ip);
        } else {
            log::warn!("endpoint {ip}: not withdrawn from etcd yet; retrying in the background");
        }
    }

    /// Whether this node may hand out `ip` again: not withdrawn, or etcd
    /// deleted its key at least [`REUSE_GRACE`] ago.
    pub fn reusable(&self, ip: IpAddr) -> bool {
        let mut w = self.withdrawn.lock();
        match w.get(&ip) {
            None => true,
            Some(Some(when)) if when.elapsed() >= REUSE_GRACE => {
                w.remove(&ip);
                self.withdrawn.save(&w);
                true
            }
            Some(_) => false,
        }
    }

    /// This node no longer uses `id` (its last endpoint went): its user
    /// key goes, so that the GC can free the number once no node uses it.
    /// With etcd down it stays (until etcd answers a later release, or the
    /// lease ends).
    pub fn release_identity(&self, labels: &Labels, id: u32) {
        let Some(session) = self.session.get() else {
            return;
        };
        let done = self.rt().block_on(async {
            tokio::time::timeout(Duration::from_secs(2), session.release_identity(id)).await
        });
        if matches!(done, Ok(Ok(()))) {
            self.acquired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(labels);
        } else {
            log::warn!("identity {id}: this node's use not released in etcd (etcd down?)");
        }
    }

    /// Applies the other nodes to the maps in `pin_dir` and to the routes
    /// of the calling thread's network namespace, from now on; frees
    /// identities nobody uses every `gc_interval` (a minute by default).
    /// `then` sees every event after it is applied (the agent's policy
    /// learns the cluster's identities).
    pub fn start_remote(
        &self,
        pin_dir: &Path,
        mut then: impl FnMut(&Event) + Send + 'static,
    ) -> Result<(), String> {
        let maps = Maps::open_or_create(pin_dir).map_err(|e| format!("open the maps: {e}"))?;
        let netlink = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
        let mut remote = Remote::new(
            &self.config.node,
            self.pod_cidr,
            self.config.cluster_cidr,
            netlink,
        );
        let _runtime = self.rt().enter();
        let mut watcher = self.store.watch();
        // Applied on a thread of its own: applying waits for the pin
        // directory's lock, which the agent may hold while it waits for
        // etcd on this runtime.
        let (tx, rx) = std::sync::mpsc::channel::<Event>();
        self.rt().spawn(async move {
            while let Some(event) = watcher.next().await {
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        std::thread::Builder::new()
            .name("ebpfcni-remote".into())
            .spawn(move || {
                for event in rx {
                    if let Err(e) = remote.apply(&maps, &event) {
                        log::warn!("applying {event:?}: {e}");
                    }
                    then(&event);
                }
            })
            .map_err(|e| format!("start the remote applier: {e}"))?;
        let store = self.store.clone();
        let every = self.config.gc_interval;
        self.rt().spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.gc_identities().await {
                    Ok(freed) if !freed.is_empty() => {
                        log::info!("identities freed (no node uses them): {freed:?}")
                    }
                    Ok(_) => {}
                    Err(e) => log::debug!("identity GC: {e}"),
                }
            }
        });
        Ok(())
    }
}

fn save(path: &Path, node: &str, pod_cidr: Ipv4Net, claim: Option<Claim>) {
    let cached = Cached {
        node: node.to_string(),
        pod_cidr,
        claim,
    };
    let tmp = path.with_extension("json.tmp");
    let written = std::fs::write(&tmp, serde_json::to_vec(&cached).expect("serializes"))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        log::warn!("cache {}: {e}", path.display());
    }
}

/// Joins once etcd answers (started while it was down).
async fn join_later(
    store: Store,
    spec: NodeSpec,
    claim: Option<Claim>,
    session: Arc<OnceLock<Session>>,
    cache_path: PathBuf,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match Session::start(&store, &spec, claim.as_ref()).await {
            Ok(s) => {
                let cidr = s.record().await.pod_cidr;
                save(&cache_path, &spec.name, cidr, Some(s.claim().await));
                log::info!("joined the cluster as {} (pod CIDR {cidr})", spec.name);
                let _ = session.set(s);
                return;
            }
            Err(e) if e.is_unavailable() => continue,
            Err(e) => {
                log::error!("joining the cluster: {e}; trying again in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

/// Publishes the desired endpoints: the difference from what is
/// published, again and again until etcd has taken it. What etcd holds of
/// this node at first (a previous run's, resumed with its lease) counts as
/// published, so endpoints gone meanwhile are withdrawn.
async fn publish(
    store: Store,
    node: String,
    session: Arc<OnceLock<Session>>,
    desired: Arc<Mutex<BTreeMap<IpAddr, u32>>>,
    changed: Arc<Notify>,
    withdrawn: Withdrawn,
) {
    let mut published: Option<BTreeMap<IpAddr, u32>> = None;
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(2), changed.notified()).await;
        let Some(session) = session.get() else {
            continue;
        };
        let published = match &mut published {
            Some(p) => p,
            None => match store.endpoints().await {
                Ok(all) => published.insert(
                    all.into_iter()
                        .filter(|e| e.node == node)
                        .map(|e| (e.ip, e.identity))
                        .collect(),
                ),
                Err(e) => {
                    log::warn!("reading this node's endpoints in etcd: {e}");
                    continue;
                }
            },
        };
        let want = desired.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let gone: Vec<IpAddr> = published
            .keys()
            .filter(|ip| !want.contains_key(ip))
            .copied()
            .collect();
        for ip in gone {
            match session.remove_endpoint(ip).await {
                Ok(()) => {
                    published.remove(&ip);
                }
                Err(e) => log::warn!("withdrawing endpoint {ip}: {e}"),
            }
        }
        // Withdrawn addresses etcd has no key of from this node (never
        // published, or removed above): deleted as far as etcd goes.
        let pending: Vec<IpAddr> = withdrawn
            .lock()
            .iter()
            .filter(|(ip, when)| when.is_none() && !published.contains_key(ip))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in pending {
            confirm_withdrawn(&withdrawn, ip);
        }
        for (ip, id) in want {
            if published.get(&ip) == Some(&id) {
                continue;
            }
            match session.publish_endpoint(ip, id).await {
                Ok(()) => {
                    published.insert(ip, id);
                }
                Err(e) => log::warn!("publishing endpoint {ip}: {e}"),
            }
        }
    }
}

/// Gives endpoints that wait with `init` (a new label set while etcd was
/// down) their identity once etcd answers: every second, on a thread of
/// its own. Only without a runtime: with one, an endpoint waits for the
/// runtime's labels, and the runtime's resolution asks again.
pub fn retry_waiting(agent: Arc<crate::agent::Agent>) {
    let spawned = std::thread::Builder::new()
        .name("ebpfcni-identity-retry".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            for e in agent.waiting() {
                match agent.runtime_labels(&e.container_id, &e.ifname, e.host_ifindex, "etcd", None) {
                    Ok(_) => {}
                    Err(err) => log::debug!("endpoint {}/{}: still waiting: {err}", e.container_id, e.ifname),
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("start the identity retry: {e}");
    }
}
