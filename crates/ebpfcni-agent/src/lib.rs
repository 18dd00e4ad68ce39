//! The ebpfcni node agent: gives every container an identity from its
//! labels for exactly its lifetime, leases its address from the node's pod
//! CIDR, and keeps the pinned maps as its store says, applying only
//! differences.
//!
//! - [`labels`]: label sets and the filter that makes identities;
//! - [`store`]: the embedded ACID store (redb) under `--state-dir`;
//! - [`ipam`]: the pod CIDR's addresses;
//! - [`agent`]: the core (endpoints in, map entries out), one lock;
//! - [`policy`]: policy by labels: stored, compiled, written as differences;
//! - [`server`]: the HTTP/1.1 + JSON API on the unix socket;
//! - [`queue`]: deletions the CNI plugin queued while the agent was down;
//! - [`runtime`]: podman and containerd, asked for labels and for the
//!   containers they have;
//! - [`cluster`]: the other nodes (from etcd) applied to this node's maps
//!   and routes;
//! - [`fabric`]: the source check on the node's fabric interface (cluster
//!   mode): a pod's address arrives only from the node that holds it.

pub mod agent;
pub mod cluster;
pub mod fabric;
pub mod ipam;
pub mod labels;
pub mod policy;
pub mod queue;
pub mod runtime;
pub mod server;
pub mod store;
