//! The agent's state on disk: an embedded ACID store (redb) under
//! `--state-dir`. Every change is one transaction, committed before the
//! maps are written, so that after a crash at any point the store says
//! what the maps must hold and the next start applies the difference.
//!
//! Tables (values are JSON of the API's types):
//! - `meta`: `schema` (this layout's version), `node`, `ipam_next`;
//! - `identities`: number -> label set;
//! - `endpoints`: `container/ifname` -> [`Endpoint`];
//! - `policies`: `Kind/namespace/name` -> [`StoredPolicy`] (its number and
//!   its document), `namespaces`: name -> the Namespace object's labels;
//!   `meta` `policy_next`: the next policy number.
//!
//! An endpoint's record goes in before its map entries (create) and after
//! them (delete): at every moment the store holds at least what the maps
//! do, so a start after a crash knows every entry it may have to remove.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ebpfcni_api::{Endpoint, Labels};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const IDENTITIES: TableDefinition<u32, &str> = TableDefinition::new("identities");
const ENDPOINTS: TableDefinition<&str, &str> = TableDefinition::new("endpoints");
const POLICIES: TableDefinition<&str, &str> = TableDefinition::new("policies");
const NAMESPACES: TableDefinition<&str, &str> = TableDefinition::new("namespaces");

/// The layout this build reads and writes. A store of another layout is
/// refused, never rewritten.
pub const SCHEMA: &str = "1";

/// The file under the state directory.
pub const FILE: &str = "agent.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the agent's store {path} cannot be opened: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("the agent's store {path} has layout {found}, this build reads layout {SCHEMA}: refused, nothing written (use the build that wrote it, or move the file away to start empty)")]
    Incompatible { path: PathBuf, found: String },
    #[error("the agent's store {path} belongs to node {found:?}, not {node:?}: refused, nothing written")]
    OtherNode {
        path: PathBuf,
        found: String,
        node: String,
    },
    #[error("the agent's store {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: redb::Error,
    },
    #[error("the agent's store {path} holds an unreadable {what}: {why}")]
    Corrupt {
        path: PathBuf,
        what: String,
        why: String,
    },
}

/// A policy as the store keeps it: its number (what the datapath's label
/// rules carry) and its document (the JSON of one NetworkPolicy or
/// CiliumNetworkPolicy object, or of an `ebpfcni_api::SelectorRule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub number: u32,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub source: String,
}

impl StoredPolicy {
    /// Its key in the store.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Everything the store holds, read at start.
#[derive(Debug, Default)]
pub struct Contents {
    pub identities: BTreeMap<u32, Labels>,
    pub endpoints: BTreeMap<String, Endpoint>,
    pub ipam_next: Option<u32>,
    pub policies: Vec<StoredPolicy>,
    pub namespaces: BTreeMap<String, Labels>,
    pub policy_next: Option<u32>,
}

/// One transaction's worth of changes.
#[derive(Debug, Default)]
pub struct Changes {
    pub identities: Vec<(u32, Labels)>,
    pub endpoints: Vec<(String, Endpoint)>,
    pub removed_endpoints: Vec<String>,
    pub ipam_next: Option<u32>,
    pub policies: Vec<StoredPolicy>,
    /// Keys ([`StoredPolicy::key`]) of policies removed.
    pub removed_policies: Vec<String>,
    pub namespaces: Vec<(String, Labels)>,
    pub removed_namespaces: Vec<String>,
    pub policy_next: Option<u32>,
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store of `node` under `state_dir`. A store of
    /// another layout or node, or one redb cannot read, is refused.
    pub fn open(state_dir: &Path, node: &str) -> Result<Self, StoreError> {
        let path = state_dir.join(FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = Self { db, path };
        store.check_or_stamp(node)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io<E: Into<redb::Error>>(&self, what: &str) -> impl FnOnce(E) -> StoreError + '_ {
        let what = what.to_string();
        move |e| StoreError::Io {
            path: self.path.clone(),
            what,
            source: e.into(),
        }
    }

    /// A new store gets this layout and node; an existing one must have them.
    fn check_or_stamp(&self, node: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(self.io("begin a transaction"))?;
        {
            let mut meta = txn.open_table(META).map_err(self.io("open meta"))?;
            let schema = meta
                .get("schema")
                .map_err(self.io("read meta"))?
                .map(|v| v.value().to_string());
            let owner = meta
                .get("node")
                .map_err(self.io("read meta"))?
                .map(|v| v.value().to_string());
            match schema {
                None => {
                    meta.insert("schema", SCHEMA).map_err(self.io("write meta"))?;
                    meta.insert("node", node).map_err(self.io("write meta"))?;
                }
                Some(found) if found != SCHEMA => {
                    return Err(StoreError::Incompatible {
                        path: self.path.clone(),
                        found,
                    })
                }
                Some(_) => {
                    if let Some(found) = owner.filter(|o| o != node) {
                        return Err(StoreError::OtherNode {
                            path: self.path.clone(),
                            found,
                            node: node.to_string(),
                        });
                    }
                }
            }
            txn.open_table(IDENTITIES).map_err(self.io("open identities"))?;
            txn.open_table(ENDPOINTS).map_err(self.io("open endpoints"))?;
            txn.open_table(POLICIES).map_err(self.io("open policies"))?;
            txn.open_table(NAMESPACES).map_err(self.io("open namespaces"))?;
        }
        txn.commit().map_err(self.io("commit"))
    }

    /// Everything, for the start.
    pub fn read(&self) -> Result<Contents, StoreError> {
        let txn = self.db.begin_read().map_err(self.io("begin a read"))?;
        let mut contents = Contents::default();
        let identities = txn.open_table(IDENTITIES).map_err(self.io("open identities"))?;
        for entry in identities.iter().map_err(self.io("read identities"))? {
            let (id, labels) = entry.map_err(self.io("read identities"))?;
            let labels: Labels = serde_json::from_str(labels.value()).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("identity {}", id.value()),
                why: e.to_string(),
            })?;
            contents.identities.insert(id.value(), labels);
        }
        let endpoints = txn.open_table(ENDPOINTS).map_err(self.io("open endpoints"))?;
        for entry in endpoints.iter().map_err(self.io("read endpoints"))? {
            let (key, value) = entry.map_err(self.io("read endpoints"))?;
            let endpoint: Endpoint =
                serde_json::from_str(value.value()).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    what: format!("endpoint {}", key.value()),
                    why: e.to_string(),
                })?;
            contents.endpoints.insert(key.value().to_string(), endpoint);
        }
        let policies = txn.open_table(POLICIES).map_err(self.io("open policies"))?;
        for entry in policies.iter().map_err(self.io("read policies"))? {
            let (key, value) = entry.map_err(self.io("read policies"))?;
            let policy: StoredPolicy = serde_json::from_str(value.value())
                .map_err(|e| StoredError::corrupt(self, key.value(), e))?;
            contents.policies.push(policy);
        }
        let namespaces = txn.open_table(NAMESPACES).map_err(self.io("open namespaces"))?;
        for entry in namespaces.iter().map_err(self.io("read namespaces"))? {
            let (key, value) = entry.map_err(self.io("read namespaces"))?;
            let labels: Labels = serde_json::from_str(value.value())
                .map_err(|e| StoredError::corrupt(self, key.value(), e))?;
            contents.namespaces.insert(key.value().to_string(), labels);
        }
        let meta = txn.open_table(META).map_err(self.io("open meta"))?;
        contents.ipam_next = meta
            .get("ipam_next")
            .map_err(self.io("read meta"))?
            .and_then(|v| v.value().parse().ok());
        contents.policy_next = meta
            .get("policy_next")
            .map_err(self.io("read meta"))?
            .and_then(|v| v.value().parse().ok());
        Ok(contents)
    }

    /// Commits `changes` as one transaction: all of them, or none.
    pub fn commit(&self, changes: &Changes) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(self.io("begin a transaction"))?;
        {
            let mut identities = txn.open_table(IDENTITIES).map_err(self.io("open identities"))?;
            for (id, labels) in &changes.identities {
                let json = serde_json::to_string(labels).expect("labels serialise");
                identities
                    .insert(*id, json.as_str())
                    .map_err(self.io("write an identity"))?;
            }
            let mut endpoints = txn.open_table(ENDPOINTS).map_err(self.io("open endpoints"))?;
            for (key, endpoint) in &changes.endpoints {
                let json = serde_json::to_string(endpoint).expect("endpoints serialise");
                endpoints
                    .insert(key.as_str(), json.as_str())
                    .map_err(self.io("write an endpoint"))?;
            }
            for key in &changes.removed_endpoints {
                endpoints
                    .remove(key.as_str())
                    .map_err(self.io("remove an endpoint"))?;
            }
            let mut policies = txn.open_table(POLICIES).map_err(self.io("open policies"))?;
            for policy in &changes.policies {
                let json = serde_json::to_string(policy).expect("policies serialise");
                policies
                    .insert(policy.key().as_str(), json.as_str())
                    .map_err(self.io("write a policy"))?;
            }
            for key in &changes.removed_policies {
                policies
                    .remove(key.as_str())
                    .map_err(self.io("remove a policy"))?;
            }
            let mut namespaces = txn.open_table(NAMESPACES).map_err(self.io("open namespaces"))?;
            for (name, labels) in &changes.namespaces {
                let json = serde_json::to_string(labels).expect("labels serialise");
                namespaces
                    .insert(name.as_str(), json.as_str())
                    .map_err(self.io("write a namespace"))?;
            }
            for name in &changes.removed_namespaces {
                namespaces
                    .remove(name.as_str())
                    .map_err(self.io("remove a namespace"))?;
            }
            let mut meta = txn.open_table(META).map_err(self.io("open meta"))?;
            if let Some(next) = changes.ipam_next {
                meta.insert("ipam_next", next.to_string().as_str())
                    .map_err(self.io("write meta"))?;
            }
            if let Some(next) = changes.policy_next {
                meta.insert("policy_next", next.to_string().as_str())
                    .map_err(self.io("write meta"))?;
            }
        }
        txn.commit().map_err(self.io("commit"))
    }
}

/// A record the store holds that does not parse.
struct StoredError;

impl StoredError {
    fn corrupt(store: &Store, what: &str, e: serde_json::Error) -> StoreError {
        StoreError::Corrupt {
            path: store.path.clone(),
            what: what.to_string(),
            why: e.to_string(),
        }
    }
}
