//! Several "nodes" on one machine: node namespaces joined by a bridge in a
//! fabric namespace of their own (where a test's etcd can listen), with
//! the node addresses 10.0.0.11, .12, ... and the fabric's 10.0.0.1.
//! Nothing in the root namespace; everything deleted on drop.

use std::net::Ipv4Addr;

use crate::netns::Netns;

/// A fabric namespace with a bridge and node namespaces on it.
pub struct Fabric {
    pub fabric: Netns,
    pub nodes: Vec<Netns>,
}

impl Fabric {
    /// `n` nodes (at most 9) on a bridge.
    pub fn new(n: usize) -> Self {
        assert!(n <= 9, "at most 9 nodes");
        let fabric = Netns::new("fab");
        fabric.ip(&["link", "add", "br0", "type", "bridge"]);
        fabric.ip(&["addr", "add", "10.0.0.1/24", "dev", "br0"]);
        fabric.ip(&["link", "set", "br0", "up"]);
        let mut this = Self {
            fabric,
            nodes: Vec::new(),
        };
        for i in 0..n {
            let node = Netns::new(&format!("node{}", i + 1));
            this.attach(&node, i);
            this.nodes.push(node);
        }
        this
    }

    /// Joins `node` (a namespace the caller owns) to the bridge as node
    /// `i`: `fab0` with [`Fabric::node_ip`]`(i)`/24.
    pub fn attach(&self, node: &Netns, i: usize) {
        let port = format!("vn{}", i + 1);
        node.ip(&[
            "link",
            "add",
            "fab0",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.fabric.name(),
        ]);
        self.fabric.ip(&["link", "set", &port, "master", "br0", "up"]);
        node.ip(&["addr", "add", &format!("{}/24", Self::node_ip(i)), "dev", "fab0"]);
        node.ip(&["link", "set", "fab0", "up"]);
    }

    /// The fabric's own address (the bridge's): where etcd listens.
    pub fn fabric_ip() -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, 1)
    }

    /// Node `i`'s address (0-based): 10.0.0.11 for the first.
    pub fn node_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, 11 + i as u8)
    }
}
