//! What ebpfcni's agents share through etcd (v3 API; only KV, Txn, Lease
//! and Watch are used, so Debian's etcd 3.4 is enough).
//!
//! # Key layout
//!
//! Everything lives under one prefix, [`DEFAULT_PREFIX`] = `/ebpfcni/v1`
//! (`P` below). Numbers in keys are zero-padded to 10 digits so that keys
//! sort as numbers do.
//!
//! | key | value | lease |
//! |-----|-------|-------|
//! | `P/identities/id/<id>` | the label set (JSON object, sorted keys) | none |
//! | `P/identities/labels/<label set JSON>` | the id (decimal) | none |
//! | `P/identities/users/<id>/<node>` | empty | the node's |
//! | `P/nodes/<node>` | [`NodeRecord`] (JSON) | the node's |
//! | `P/nodecidrs/<node>` | the node's pod CIDR | none |
//! | `P/podcidrs/<a.b.c.d_len>` | the node holding that CIDR | none |
//! | `P/endpoints/<address>` | [`EndpointRecord`] (JSON) | the owner's |
//! | `P/policies/<kind>/<namespace>/<name>` | the document, as given | none |
//!
//! # Rules
//!
//! - **Identities**: one number per label set across the cluster. A new
//!   set gets its number in one transaction that creates both keys and the
//!   node's user key only if neither the set nor the number exists yet: two
//!   nodes allocating the same new set at once get the same number (the
//!   loser reads the winner's), two new sets never share one. A node using
//!   an existing number adds its user key in a transaction that checks the
//!   set still has that number. [`Store::gc_identities`] frees a number only
//!   in a transaction that checks no user key exists under it, so it cannot
//!   free a number in use; user keys die with their node's lease.
//! - **Nodes**: `P/nodes/<name>` lives under the node's lease and names the
//!   process that holds it (a random token). A second agent with the same
//!   name finds the key held by another token on a live lease and refuses
//!   ([`Error::NodeTaken`]); an agent restarted within its lease resumes it
//!   with the [`Claim`] it kept. Pod CIDRs are not under a lease: a node
//!   keeps its CIDR across restarts and lease expiry until it is released
//!   ([`Store::release_pod_cidr`]). A CIDR is allocated in a transaction
//!   that checks no CIDR changed since the free one was picked.
//! - **Endpoints**: under the owner's lease, so a dead node's endpoints
//!   leave with it. The [`watch`] accepts a remote endpoint only while its
//!   owner node exists and the address lies in that node's pod CIDR.
//! - **Policies**: documents by kind, namespace and name; the store does
//!   not read them.
//! - **Watch**: list, then watch from the list's revision + 1; after a
//!   compaction, list again and emit only the difference from what was
//!   already emitted: no event lost or applied twice.

mod error;
mod identity;
mod node;
mod policy;
pub mod watch;

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

pub use ebpfcni_api::{Labels, FIRST_LABEL_IDENTITY};
pub use error::{Error, Result};
pub use etcd_client;
pub use node::{Claim, EndpointRecord, NodeRecord, NodeSpec, Session};
pub use policy::PolicyKey;
pub use watch::{Event, Watcher};

/// The prefix of every key the agents write.
pub const DEFAULT_PREFIX: &str = "/ebpfcni/v1";

/// How long one request to etcd may take before it fails (and the caller
/// retries or reports etcd unreachable).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to etcd and the prefix of the keys. Cheap to clone (the
/// clones share the connection).
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
}

impl Store {
    /// Connects to etcd at `endpoints` (e.g. `http://10.0.0.1:2379`). The
    /// connection is made lazily and remade after etcd restarts.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::Invalid("no etcd endpoint given".into()));
        }
        for e in endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::Invalid(format!(
                    "etcd endpoint {e:?} is not a URL (http://HOST:PORT)"
                )));
            }
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Self {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    /// The etcd client (for tests and tools: compaction, raw reads).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The prefix of this store's keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P/<rest>`.
    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }
}

/// Names that become one key segment: not empty, no '/', printable.
fn check_segment(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 253 || s.contains('/') || s.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what} {s:?} must be 1-253 printable characters without '/'"
        )));
    }
    Ok(())
}

/// A number in a key: zero-padded so that keys sort as numbers.
fn padded(id: u32) -> String {
    format!("{id:010}")
}
