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
        assert!((1..=9).contains(&n), "1 to 9 nodes");
        let fabric = Netns::new("fab");
        fabric.ip(&["link", "add", "br0", "type", "bridge"]);
        fabric.ip(&["addr", "add", "10.0.0.1/24", "dev", "br0"]);
        fabric.ip(&["link", "set", "br0", "up"]);
        let mut nodes = Vec::new();
        for i in 1..=n {
            let node = Netns::new(&format!("node{i}"));
            let port = format!("vn{i}");
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
                fabric.name(),
            ]);
            fabric.ip(&["link", "set", &port, "master", "br0", "up"]);
            node.ip(&[
                "addr",
                "add",
                &format!("{}/24", Self::node_ip(i - 1)),
                "dev",
                "fab0",
            ]);
            node.ip(&["link", "set", "fab0", "up"]);
            nodes.push(node);
        }
        Self { fabric, nodes }
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
