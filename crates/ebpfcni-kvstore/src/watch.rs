//! The watcher: list every key under the prefix, then watch from the
//! list's revision + 1; when the watch is cut (etcd restarted, connection
//! lost) watch again from the last revision seen + 1; when that revision
//! was compacted away, list again. What was already emitted is remembered
//! by key and modification revision, so a relist emits only the
//! difference: no change is lost, none is emitted twice.
//!
//! Events are typed and filtered: a remote endpoint is emitted only while
//! its owner node exists and its address lies in that node's pod CIDR (a
//! node cannot claim another node's addresses); it is withdrawn when its
//! key or its node goes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::identity::{parse_id, parse_labels};
use crate::node::parse_json;
use crate::{EndpointRecord, Labels, NodeRecord, PolicyKey, Store};

/// A change of the cluster's state, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node joined or changed (node IP, pod CIDR).
    NodeUp(NodeRecord),
    /// A node left (its lease ended or it was revoked).
    NodeDown(String),
    /// An endpoint appeared or changed (only accepted ones: see the module
    /// documentation).
    EndpointUpsert(EndpointRecord),
    /// An endpoint is gone (deleted, its node gone, or no longer accepted).
    EndpointDelete(IpAddr),
    IdentityUpsert {
        id: u32,
        labels: Labels,
    },
    IdentityDelete(u32),
    PolicyUpsert {
        key: PolicyKey,
        document: Vec<u8>,
    },
    PolicyDelete(PolicyKey),
    /// The events so far make the state of etcd at `revision` (sent after
    /// the first list and after every relist).
    Synced {
        revision: i64,
    },
}

/// Counters of a watcher.
#[derive(Debug, Default)]
struct Stats {
    lists: AtomicU64,
    watches: AtomicU64,
    rejected: AtomicU64,
}

/// A running watch of the cluster's state; stops when dropped.
pub struct Watcher {
    rx: mpsc::Receiver<Event>,
    task: JoinHandle<()>,
    hold: watch::Sender<bool>,
    stats: Arc<Stats>,
}

impl Watcher {
    /// The next change (None once the watcher stopped).
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// A change if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// How many times it listed everything (1 + relists after compaction).
    pub fn lists(&self) -> u64 {
        self.stats.lists.load(Ordering::Relaxed)
    }

    /// How many watches it opened (1 + rewatches after a cut).
    pub fn watches(&self) -> u64 {
        self.stats.watches.load(Ordering::Relaxed)
    }

    /// How many endpoints it refused because their address lies outside
    /// their owner's pod CIDR.
    pub fn rejected(&self) -> u64 {
        self.stats.rejected.load(Ordering::Relaxed)
    }

    /// Holds (true) or resumes (false) the watch: held, it has no watch
    /// open and falls behind etcd, as a watcher cut off would. For tests
    /// of the catch-up (compaction while behind).
    pub fn hold(&self, held: bool) {
        let _ = self.hold.send(held);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Store {
    /// Starts a watcher of everything under the prefix.
    pub fn watch(&self) -> Watcher {
        let (tx, rx) = mpsc::channel(4096);
        let (hold, held) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run(self.clone(), tx, held, stats.clone()));
        Watcher {
            rx,
            task,
            hold,
            stats,
        }
    }
}

/// What the watcher has emitted, by key.
#[derive(Default)]
struct View {
    /// Every key seen: its modification revision and value.
    raw: HashMap<Vec<u8>, (i64, Vec<u8>)>,
    nodes: HashMap<String, NodeRecord>,
    /// Endpoints as published, accepted or not.
    endpoints: HashMap<IpAddr, EndpointRecord>,
    /// Endpoints emitted (accepted).
    accepted: HashMap<IpAddr, EndpointRecord>,
}

async fn run(store: Store, tx: mpsc::Sender<Event>, mut held: watch::Receiver<bool>, stats: Arc<Stats>) {
    let prefix = format!("{}/", store.prefix);
    let mut view = View::default();
    let mut revision: Option<i64> = None;
    let mut backoff = Duration::from_millis(100);
    let mut client = store.client.watch_client();
    let mut kv = store.client.kv_client();
    loop {
        while *held.borrow_and_update() {
            if held.changed().await.is_err() {
                return;
            }
        }
        let rev = match revision {
            Some(rev) => rev,
            None => {
                // List: everything under the prefix at one revision.
                let resp = match kv
                    .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                    .await
                {
                    Ok(resp) => resp,
                    Err(e) => {
                        log::warn!("etcd list: {e}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                };
                stats.lists.fetch_add(1, Ordering::Relaxed);
                let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
                let listed: HashMap<Vec<u8>, (i64, Vec<u8>)> = resp
                    .kvs()
                    .iter()
                    .map(|kv| (kv.key().to_vec(), (kv.mod_revision(), kv.value().to_vec())))
                    .collect();
                let mut out = Vec::new();
                let gone: Vec<Vec<u8>> = view
                    .raw
                    .keys()
                    .filter(|k| !listed.contains_key(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    view.apply(&prefix, &key, None, &stats, &mut out);
                }
                let mut listed: Vec<_> = listed.into_iter().collect();
                listed.sort();
                for (key, (modrev, value)) in listed {
                    view.apply(&prefix, &key, Some((modrev, &value)), &stats, &mut out);
                }
                out.push(Event::Synced { revision: rev });
                if send(&tx, out).await.is_err() {
                    return;
                }
                revision = Some(rev);
                rev
            }
        };
        // Watch from the next revision.
        let opts = WatchOptions::new().with_prefix().with_start_revision(rev + 1);
        let mut stream = match client.watch(prefix.clone(), Some(opts)).await {
            Ok(w) => w,
            Err(e) => {
                log::warn!("etcd watch: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        stats.watches.fetch_add(1, Ordering::Relaxed);
        loop {
            let msg = tokio::select! {
                msg = stream.message() => msg,
                changed = held.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *held.borrow() {
                        break;
                    }
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    log::warn!("etcd watch ended; watching again from {}", rev + 1);
                    break;
                }
                Err(e) => {
                    log::warn!("etcd watch: {e}; watching again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    break;
                }
            };
            backoff = Duration::from_millis(100);
            if resp.compact_revision() > 0 {
                log::info!(
                    "etcd compacted to {} past our revision {}: listing again",
                    resp.compact_revision(),
                    revision.unwrap_or_default()
                );
                revision = None;
                break;
            }
            if resp.canceled() {
                log::warn!("etcd canceled the watch: {}", resp.cancel_reason());
                break;
            }
            let mut out = Vec::new();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let value = match event.event_type() {
                    EventType::Put => Some((kv.mod_revision(), kv.value())),
                    EventType::Delete => None,
                };
                view.apply(&prefix, kv.key(), value, &stats, &mut out);
                revision = Some(revision.unwrap_or_default().max(kv.mod_revision()));
            }
            if send(&tx, out).await.is_err() {
                return;
            }
        }
    }
}

async fn send(tx: &mpsc::Sender<Event>, events: Vec<Event>) -> Result<(), ()> {
    for event in events {
        tx.send(event).await.map_err(|_| ())?;
    }
    Ok(())
}

impl View {
    /// One key changed (`None`: deleted): remembers it and emits what that
    /// changes, unless it was already seen at that revision.
    fn apply(
        &mut self,
        prefix: &str,
        key: &[u8],
        value: Option<(i64, &[u8])>,
        stats: &Stats,
        out: &mut Vec<Event>,
    ) {
        match value {
            Some((modrev, bytes)) => {
                if self.raw.get(key).is_some_and(|(seen, _)| *seen >= modrev) {
                    return;
                }
                self.raw.insert(key.to_vec(), (modrev, bytes.to_vec()));
            }
            None => {
                if self.raw.remove(key).is_none() {
                    return;
                }
            }
        }
        let text = String::from_utf8_lossy(key);
        let Some(rest) = text.strip_prefix(prefix) else {
            return;
        };
        let bytes = value.map(|(_, b)| b);
        if let Some(name) = rest.strip_prefix("nodes/") {
            let record = bytes.and_then(|b| ok(parse_json::<NodeRecord>(&text, b)));
            match record {
                Some(record) => {
                    self.nodes.insert(name.to_string(), record.clone());
                    out.push(Event::NodeUp(record));
                    self.reevaluate_node(name, stats, out);
                }
                None => {
                    if self.nodes.remove(name).is_some() {
                        self.reevaluate_node(name, stats, out);
                        out.push(Event::NodeDown(name.to_string()));
                    }
                }
            }
        } else if let Some(ip) = rest.strip_prefix("endpoints/") {
            let Ok(ip) = ip.parse::<IpAddr>() else {
                log::warn!("etcd key {text}: not an address");
                return;
            };
            match bytes.and_then(|b| ok(parse_json::<EndpointRecord>(&text, b))) {
                Some(record) if record.ip == ip => {
                    self.endpoints.insert(ip, record);
                }
                _ => {
                    self.endpoints.remove(&ip);
                }
            }
            self.reevaluate(ip, stats, out);
        } else if let Some(id) = rest.strip_prefix("identities/id/") {
            let Some(id) = ok(parse_id(&text, id.as_bytes())) else {
                return;
            };
            match bytes.and_then(|b| ok(parse_labels(&text, b))) {
                Some(labels) => out.push(Event::IdentityUpsert { id, labels }),
                None => out.push(Event::IdentityDelete(id)),
            }
        } else if let Some(path) = rest.strip_prefix("policies/") {
            let Some(key) = ok(PolicyKey::from_path(path)) else {
                return;
            };
            match bytes {
                Some(document) => out.push(Event::PolicyUpsert {
                    key,
                    document: document.to_vec(),
                }),
                None => out.push(Event::PolicyDelete(key)),
            }
        }
    }

    fn reevaluate_node(&mut self, node: &str, stats: &Stats, out: &mut Vec<Event>) {
        let mut ips: Vec<IpAddr> = self
            .endpoints
            .values()
            .chain(self.accepted.values())
            .filter(|e| e.node == node)
            .map(|e| e.ip)
            .collect();
        ips.sort();
        ips.dedup();
        for ip in ips {
            self.reevaluate(ip, stats, out);
        }
    }

    /// Emits the endpoint at `ip` if it is now accepted and was not (or
    /// changed), withdraws it if it no longer is.
    fn reevaluate(&mut self, ip: IpAddr, stats: &Stats, out: &mut Vec<Event>) {
        let want = self.endpoints.get(&ip).filter(|e| {
            let Some(node) = self.nodes.get(&e.node) else {
                return false;
            };
            let inside = IpNet::V4(node.pod_cidr).contains(&e.ip);
            if !inside {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "endpoint {} of node {} lies outside its pod CIDR {}: ignored",
                    e.ip,
                    e.node,
                    node.pod_cidr
                );
            }
            inside
        });
        if want == self.accepted.get(&ip) {
            return;
        }
        match want.cloned() {
            Some(e) => {
                self.accepted.insert(ip, e.clone());
                out.push(Event::EndpointUpsert(e));
            }
            None => {
                self.accepted.remove(&ip);
                out.push(Event::EndpointDelete(ip));
            }
        }
    }
}

/// The value of a parse, logging (and skipping) a key this version cannot
/// read.
fn ok<T>(r: crate::Result<T>) -> Option<T> {
    r.map_err(|e| log::warn!("{e}")).ok()
}
