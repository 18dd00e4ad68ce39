//! Nodes, their pod CIDRs and leases, and what a node publishes under its
//! lease (identity users, endpoints): a [`Session`].

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::{check_segment, Error, Labels, Result, Store, REQUEST_TIMEOUT};

/// How often a transaction retries when it loses to concurrent writers.
const TRIES: usize = 64;

/// A node as the cluster sees it (`P/nodes/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// Where the other nodes route this node's pod CIDR.
    pub node_ip: IpAddr,
    pub pod_cidr: Ipv4Net,
    /// The token of the process that holds the name.
    pub owner: String,
}

/// A pod's address as the cluster sees it (`P/endpoints/<ip>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub ip: IpAddr,
    pub identity: u32,
    pub node: String,
}

/// What an agent keeps (in its local state) to resume its node after a
/// restart within its lease: the lease and the token in the node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub lease: i64,
    pub token: String,
}

/// What a node asks for when it joins.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub node_ip: IpAddr,
    /// The pod CIDR the node must have (`--pod-cidr`), if any.
    pub pod_cidr: Option<Ipv4Net>,
    /// Where pod CIDRs come from otherwise (`--cluster-cidr`), and their
    /// prefix length.
    pub cluster_cidr: Option<(Ipv4Net, u8)>,
    /// The lease's time to live in seconds: how long the node's keys
    /// outlive the agent.
    pub ttl: i64,
}

impl Store {
    fn node_key(&self, name: &str) -> String {
        self.key(&format!("nodes/{name}"))
    }

    fn endpoint_key(&self, ip: IpAddr) -> String {
        self.key(&format!("endpoints/{ip}"))
    }

    fn node_cidr_key(&self, name: &str) -> String {
        self.key(&format!("nodecidrs/{name}"))
    }

    fn pod_cidr_key(&self, cidr: Ipv4Net) -> String {
        self.key(&format!("podcidrs/{}_{}", cidr.network(), cidr.prefix_len()))
    }

    /// The node's pod CIDR: the one etcd already has for it, else `asked`
    /// (when no other node's overlaps it), else the first free
    /// `/len` of `cluster`. Allocated in a transaction that checks no pod
    /// CIDR changed since the free one was picked, so two nodes never get
    /// overlapping ones.
    pub async fn pod_cidr(
        &self,
        node: &str,
        asked: Option<Ipv4Net>,
        cluster: Option<(Ipv4Net, u8)>,
    ) -> Result<Ipv4Net> {
        check_segment("node name", node)?;
        if let Some((net, len)) = cluster {
            if len < net.prefix_len() || len > 30 {
                return Err(Error::Invalid(format!(
                    "pod CIDR size /{len} does not fit cluster CIDR {net} (between /{} and /30)",
                    net.prefix_len()
                )));
            }
        }
        if asked.is_none() && cluster.is_none() {
            return Err(Error::Invalid("a node needs --pod-cidr or --cluster-cidr".into()));
        }
        let nkey = self.node_cidr_key(node);
        let prefix = self.key("podcidrs/");
        let mut kv = self.client.kv_client();
        for _ in 0..TRIES {
            let resp = kv.get(nkey.clone(), None).await?;
            if let Some(held) = resp.kvs().first() {
                let held = parse_cidr(&nkey, held.value())?;
                if let Some(asked) = asked.filter(|a| *a != held) {
                    return Err(Error::CidrMismatch {
                        name: node.into(),
                        held,
                        asked,
                    });
                }
                if let Some((net, _)) = cluster.filter(|(net, _)| !net.contains(&held)) {
                    return Err(Error::Invalid(format!(
                        "node {node} has pod CIDR {held} in etcd, outside cluster CIDR {net}: release it first"
                    )));
                }
                return Ok(held);
            }
            let resp = kv
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await?;
            let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            let mut taken = Vec::new();
            for held in resp.kvs() {
                let key = String::from_utf8_lossy(held.key()).into_owned();
                let cidr = parse_cidr(&key, key[prefix.len()..].replace('_', "/").as_bytes())?;
                taken.push((cidr, String::from_utf8_lossy(held.value()).into_owned()));
            }
            let overlap = |c: &Ipv4Net| {
                taken
                    .iter()
                    .find(|(t, _)| t.contains(&c.network()) || c.contains(&t.network()))
                    .cloned()
            };
            let cidr = match (asked, cluster) {
                (Some(asked), _) => {
                    if let Some((other_cidr, other)) = overlap(&asked) {
                        return Err(Error::CidrTaken {
                            cidr: asked,
                            other,
                            other_cidr,
                        });
                    }
                    asked
                }
                (None, Some((net, len))) => net
                    .subnets(len)
                    .map_err(|e| Error::Invalid(format!("cluster CIDR {net} /{len}: {e}")))?
                    .find(|c| overlap(c).is_none())
                    .ok_or(Error::CidrExhausted { cluster: net, len })?,
                (None, None) => unreachable!("checked above"),
            };
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(prefix.clone(), CompareOp::Less, revision + 1).with_prefix(),
                    Compare::create_revision(nkey.clone(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(self.pod_cidr_key(cidr), node, None),
                    TxnOp::put(nkey.clone(), cidr.to_string(), None),
                ]);
            if kv.txn(txn).await?.succeeded() {
                return Ok(cidr);
            }
        }
        Err(Error::Contention("pod CIDR allocation"))
    }

    /// Gives a node's pod CIDR back (a node removed for good).
    pub async fn release_pod_cidr(&self, node: &str) -> Result<Option<Ipv4Net>> {
        check_segment("node name", node)?;
        let nkey = self.node_cidr_key(node);
        let resp = self.client.kv_client().get(nkey.clone(), None).await?;
        let Some(held) = resp.kvs().first() else {
            return Ok(None);
        };
        let cidr = parse_cidr(&nkey, held.value())?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                nkey.clone(),
                CompareOp::Equal,
                held.mod_revision(),
            )])
            .and_then([
                TxnOp::delete(nkey, None),
                TxnOp::delete(self.pod_cidr_key(cidr), None),
            ]);
        self.client.kv_client().txn(txn).await?;
        Ok(Some(cidr))
    }

    /// The nodes alive now.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.list_json("nodes/").await
    }

    /// The endpoints published now.
    pub async fn endpoints(&self) -> Result<Vec<EndpointRecord>> {
        self.list_json("endpoints/").await
    }

    async fn list_json<T: for<'de> Deserialize<'de>>(&self, rest: &str) -> Result<Vec<T>> {
        let resp = self
            .client
            .kv_client()
            .get(self.key(rest), Some(GetOptions::new().with_prefix()))
            .await?;
        resp.kvs()
            .iter()
            .map(|kv| parse_json(&String::from_utf8_lossy(kv.key()), kv.value()))
            .collect()
    }

    /// Claims `P/nodes/<name>` under `lease` with `token`: created when
    /// absent, taken over when it holds our own claim, refused otherwise.
    async fn claim_node(&self, record: &NodeRecord, lease: i64) -> Result<()> {
        let key = self.node_key(&record.name);
        let value = serde_json::to_string(record).expect("node record serializes");
        let mut kv = self.client.kv_client();
        for _ in 0..TRIES {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = kv.txn(txn).await?;
            if resp.succeeded() {
                return Ok(());
            }
            let Some(held) = first_kv(&resp) else {
                continue; // deleted meanwhile
            };
            let held_record: NodeRecord = parse_json(&key, held.value())?;
            if held_record.owner != record.owner || held.lease() != lease {
                let ttl = if held.lease() == 0 {
                    -1
                } else {
                    self.client
                        .lease_client()
                        .time_to_live(held.lease(), None)
                        .await
                        .map(|r| r.ttl())
                        .unwrap_or(-1)
                };
                return Err(Error::NodeTaken {
                    name: record.name.clone(),
                    lease: held.lease(),
                    ttl,
                });
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    held.mod_revision(),
                )])
                .and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            if kv.txn(txn).await?.succeeded() {
                return Ok(());
            }
        }
        Err(Error::Contention("node claim"))
    }

    /// Puts `record` at its address under `lease`, unless another node
    /// holds that address. One transaction when the address is free or
    /// already this node's under the same lease (a new endpoint, or its
    /// identity changing): absent, put; else held under `lease` (which
    /// only this node's keys are), put; else read it and decide.
    async fn put_endpoint(&self, record: &EndpointRecord, lease: i64) -> Result<()> {
        let key = self.endpoint_key(record.ip);
        let value = serde_json::to_string(record).expect("endpoint record serializes");
        let put = || {
            TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
        };
        let mut kv = self.client.kv_client();
        for _ in 0..TRIES {
            let ours = Txn::new()
                .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
                .and_then([put()])
                .or_else([TxnOp::get(key.clone(), None)]);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([put()])
                .or_else([TxnOp::txn(ours)]);
            let resp = kv.txn(txn).await?;
            if resp.succeeded() || nested_succeeded(&resp) {
                return Ok(());
            }
            let Some(held) = first_kv(&resp) else {
                continue;
            };
            let held_record: EndpointRecord = parse_json(&key, held.value())?;
            if held_record.node != record.node {
                return Err(Error::EndpointTaken {
                    ip: record.ip,
                    owner: held_record.node,
                });
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    held.mod_revision(),
                )])
                .and_then([put()]);
            if kv.txn(txn).await?.succeeded() {
                return Ok(());
            }
        }
        Err(Error::Contention("endpoint publication"))
    }

    /// Deletes the endpoint at `ip` if `node` holds it. One transaction
    /// when it is held under `lease` (only this node's keys are) or absent.
    async fn delete_endpoint(&self, ip: IpAddr, node: &str, lease: i64) -> Result<()> {
        let key = self.endpoint_key(ip);
        let mut kv = self.client.kv_client();
        for _ in 0..TRIES {
            let txn = Txn::new()
                .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
                .and_then([TxnOp::delete(key.clone(), None)])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = kv.txn(txn).await?;
            if resp.succeeded() {
                return Ok(());
            }
            let Some(held) = first_kv(&resp) else {
                return Ok(());
            };
            let held_record: EndpointRecord = parse_json(&key, held.value())?;
            if held_record.node != node {
                return Ok(());
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    held.mod_revision(),
                )])
                .and_then([TxnOp::delete(key.clone(), None)]);
            if kv.txn(txn).await?.succeeded() {
                return Ok(());
            }
        }
        Err(Error::Contention("endpoint removal"))
    }
}

/// A node in the cluster: its key, pod CIDR and lease, kept alive by a
/// task; what it publishes under the lease (identity users, endpoints) is
/// remembered and published again if the lease is ever lost (etcd lost
/// it, or the node was cut off longer than the lease).
pub struct Session {
    inner: Arc<Inner>,
    keeper: JoinHandle<()>,
}

struct Inner {
    store: Store,
    ttl: i64,
    state: Mutex<State>,
    renewals: AtomicU64,
}

struct State {
    lease: i64,
    record: NodeRecord,
    identities: BTreeMap<u32, Labels>,
    endpoints: BTreeMap<IpAddr, u32>,
}

impl Session {
    /// Joins the cluster as `spec.name`: gets the pod CIDR, the lease (the
    /// one of `resume` when it is still alive) and the node key. Fails
    /// with [`Error::NodeTaken`] when another live agent holds the name.
    pub async fn start(store: &Store, spec: &NodeSpec, resume: Option<&Claim>) -> Result<Self> {
        check_segment("node name", &spec.name)?;
        if spec.ttl < 1 {
            return Err(Error::Invalid(format!("lease TTL {} s must be >= 1", spec.ttl)));
        }
        let pod_cidr = store
            .pod_cidr(&spec.name, spec.pod_cidr, spec.cluster_cidr)
            .await?;
        let mut lease = store.client.lease_client();
        let alive = match resume {
            Some(claim) => lease.time_to_live(claim.lease, None).await.map(|r| r.ttl() > 0)?,
            None => false,
        };
        let (lease_id, token) = match resume {
            Some(claim) if alive => (claim.lease, claim.token.clone()),
            _ => (lease.grant(spec.ttl, None).await?.id(), random_token()),
        };
        let record = NodeRecord {
            name: spec.name.clone(),
            node_ip: spec.node_ip,
            pod_cidr,
            owner: token,
        };
        if let Err(e) = store.claim_node(&record, lease_id).await {
            if !alive {
                let _ = lease.revoke(lease_id).await;
            }
            return Err(e);
        }
        let inner = Arc::new(Inner {
            store: store.clone(),
            ttl: spec.ttl,
            state: Mutex::new(State {
                lease: lease_id,
                record,
                identities: BTreeMap::new(),
                endpoints: BTreeMap::new(),
            }),
            renewals: AtomicU64::new(0),
        });
        let keeper = tokio::spawn(keep_alive(inner.clone()));
        Ok(Self { inner, keeper })
    }

    /// The node as published (name, node IP, pod CIDR, token).
    pub async fn record(&self) -> NodeRecord {
        self.inner.state.lock().await.record.clone()
    }

    /// What to keep to resume this node after a restart within the lease.
    pub async fn claim(&self) -> Claim {
        let state = self.inner.state.lock().await;
        Claim {
            lease: state.lease,
            token: state.record.owner.clone(),
        }
    }

    /// How many times the lease was lost and everything published again.
    pub fn renewals(&self) -> u64 {
        self.inner.renewals.load(Ordering::Relaxed)
    }

    /// The cluster's number of `labels`, allocated if new; this node is
    /// recorded as a user until [`release_identity`](Self::release_identity)
    /// or its lease ends.
    pub async fn identity(&self, labels: &Labels) -> Result<u32> {
        let mut state = self.inner.state.lock().await;
        let id = self
            .inner
            .store
            .acquire_identity(labels, &state.record.name, state.lease)
            .await?;
        state.identities.insert(id, labels.clone());
        Ok(id)
    }

    /// This node no longer uses `id`.
    pub async fn release_identity(&self, id: u32) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        self.inner
            .store
            .drop_identity_user(id, &state.record.name)
            .await?;
        state.identities.remove(&id);
        Ok(())
    }

    /// Publishes a local pod's address with its identity.
    pub async fn publish_endpoint(&self, ip: IpAddr, identity: u32) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let record = EndpointRecord {
            ip,
            identity,
            node: state.record.name.clone(),
        };
        self.inner.store.put_endpoint(&record, state.lease).await?;
        state.endpoints.insert(ip, identity);
        Ok(())
    }

    /// Withdraws a local pod's address (returns once etcd has deleted it).
    pub async fn remove_endpoint(&self, ip: IpAddr) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        self.inner
            .store
            .delete_endpoint(ip, &state.record.name, state.lease)
            .await?;
        state.endpoints.remove(&ip);
        Ok(())
    }

    /// Leaves the cluster for good: revokes the lease, so the node key,
    /// its endpoints and identity users go at once. (Dropping a session
    /// only stops renewing the lease: the keys stay until it expires, so
    /// an agent restarted within it changes nothing.)
    pub async fn leave(self) -> Result<()> {
        self.keeper.abort();
        let lease = self.inner.state.lock().await.lease;
        self.inner.store.client.lease_client().revoke(lease).await?;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Renews the lease every third of its TTL; when etcd says it is gone,
/// takes a new one and publishes everything again.
async fn keep_alive(inner: Arc<Inner>) {
    let period = Duration::from_millis((inner.ttl as u64 * 1000 / 3).max(300));
    let mut lease_client = inner.store.client.lease_client();
    loop {
        let lease = inner.state.lock().await.lease;
        let Ok((mut keeper, mut stream)) = lease_client.keep_alive(lease).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        loop {
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
                Ok(Ok(Some(_))) => {
                    log::warn!("etcd lease {lease:x} expired: taking a new one");
                    while let Err(e) = renew(&inner).await {
                        log::warn!("renewing the node's lease: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    break;
                }
                _ => break,
            }
            tokio::time::sleep(period).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A new lease, and everything this node published put again under it.
async fn renew(inner: &Inner) -> Result<()> {
    let mut state = inner.state.lock().await;
    let store = &inner.store;
    let lease = store.client.lease_client().grant(inner.ttl, None).await?.id();
    store.claim_node(&state.record, lease).await?;
    let name = state.record.name.clone();
    let identities = std::mem::take(&mut state.identities);
    for (old, labels) in identities {
        let id = store.acquire_identity(&labels, &name, lease).await?;
        if id != old {
            log::error!("identity {old} was freed while the lease was lost; {labels:?} is now {id}");
        }
        state.identities.insert(id, labels);
    }
    for (&ip, &identity) in &state.endpoints {
        let record = EndpointRecord {
            ip,
            identity,
            node: name.clone(),
        };
        store.put_endpoint(&record, lease).await?;
    }
    state.lease = lease;
    inner.renewals.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The first key read in a transaction's answer (in a nested one too).
fn first_kv(resp: &etcd_client::TxnResponse) -> Option<etcd_client::KeyValue> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        TxnOpResponse::Txn(nested) => first_kv(&nested),
        _ => None,
    })
}

/// Whether a transaction's nested one took its `then` branch.
fn nested_succeeded(resp: &etcd_client::TxnResponse) -> bool {
    resp.op_responses()
        .into_iter()
        .any(|op| matches!(op, TxnOpResponse::Txn(nested) if nested.succeeded()))
}

pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: key.to_string(),
        why: e.to_string(),
    })
}

fn parse_cidr(key: &str, bytes: &[u8]) -> Result<Ipv4Net> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Corrupt {
            key: key.to_string(),
            why: format!("{:?} is not a CIDR", String::from_utf8_lossy(bytes)),
        })
}

/// 128 random bits in hex: the token that tells this process's claim of a
/// node name from another's.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
