//! What can go wrong talking to the cluster store.

use std::net::IpAddr;

/// An error of the cluster store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// etcd did not answer or refused the request (down, unreachable,
    /// timed out). The caller may retry.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A value in etcd that this version cannot read.
    #[error("etcd key {key}: unreadable value: {why}")]
    Corrupt { key: String, why: String },
    /// Bad input from the caller.
    #[error("{0}")]
    Invalid(String),
    /// Another live agent holds the node name.
    #[error(
        "node {name} is held by another agent (lease {lease:x}, {ttl} s left); \
         stop it, or wait for its lease to expire if it is gone"
    )]
    NodeTaken { name: String, lease: i64, ttl: i64 },
    /// The pod CIDR asked for belongs to (or overlaps the one of) another node.
    #[error("pod CIDR {cidr} overlaps {other_cidr} of node {other}")]
    CidrTaken {
        cidr: ipnet::Ipv4Net,
        other: String,
        other_cidr: ipnet::Ipv4Net,
    },
    /// The node already has another pod CIDR in etcd.
    #[error("node {name} has pod CIDR {held} in etcd, not {asked}: release it first")]
    CidrMismatch {
        name: String,
        held: ipnet::Ipv4Net,
        asked: ipnet::Ipv4Net,
    },
    /// No free pod CIDR of that size left in the cluster CIDR.
    #[error("no free /{len} left in cluster CIDR {cluster}")]
    CidrExhausted { cluster: ipnet::Ipv4Net, len: u8 },
    /// No free identity number left.
    #[error("no free identity number left")]
    IdentitiesExhausted,
    /// The address is published by another node.
    #[error("endpoint {ip} is published by node {owner}")]
    EndpointTaken { ip: IpAddr, owner: String },
    /// The node's lease expired and its keys were lost (the session renews
    /// itself; this reports the loss to a caller that raced with it).
    #[error("the node's lease expired")]
    LeaseLost,
    /// A transaction kept losing to concurrent writers.
    #[error("{0}: too much contention, gave up")]
    Contention(&'static str),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the error is etcd being unreachable (worth retrying later)
    /// rather than a refusal.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Etcd(_) | Error::LeaseLost)
    }
}
