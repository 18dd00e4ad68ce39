//! A node namespace as the from-fabric check (precedence step F) sees it,
//! for test runs of the program there (its fib lookups need the
//! namespace's routes and neighbours):
//!
//! ```text
//!  peer ns: fabp --veth-- node ns: fab0 10.0.0.11/24   (forwarding on)
//!    10.20.2.0/24 via 10.0.0.12   (node 2's pods; 10.0.0.12 is STALE at NODE2_MAC)
//!    10.20.4.0/24 via 10.0.0.14   (node 4's pods; no neighbour entry)
//!    10.20.1.5 dev hpod           (a pod of this node, on its host veth)
//! ```
//!
//! Everything goes with the namespaces on drop.

use std::net::Ipv4Addr;

use ebpfcni::{Hook, Program, TestContext, TestRun};

use crate::frames::{eth, ipv4_header, ETH_P_IP, IPPROTO_UDP};
use crate::netns::Netns;

pub struct FabricNode {
    pub node: Netns,
    _peer: Netns,
    /// fab0's ifindex in the node namespace.
    pub fab0: u32,
}

impl FabricNode {
    pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
    pub const NODE2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
    /// Node 2's MAC, as this node's neighbour entry knows it.
    pub const NODE2_MAC: [u8; 6] = [0x02, 0xeb, 0, 0, 0, 0x12];
    /// Some other host on the fabric.
    pub const OTHER_MAC: [u8; 6] = [0x02, 0xeb, 0, 0, 0, 0x13];
    /// A pod of node 2.
    pub const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 20, 2, 7);
    /// A pod of node 4, whose node has no neighbour entry here.
    pub const UNRESOLVED_POD: Ipv4Addr = Ipv4Addr::new(10, 20, 4, 2);
    /// A pod of this node.
    pub const LOCAL_POD: Ipv4Addr = Ipv4Addr::new(10, 20, 1, 5);

    pub fn new(tag: &str) -> Self {
        let node = Netns::new(&format!("{tag}-n"));
        let peer = Netns::new(&format!("{tag}-p"));
        node.ip(&[
            "link",
            "add",
            "fab0",
            "type",
            "veth",
            "peer",
            "name",
            "fabp",
            "netns",
            peer.name(),
        ]);
        node.ip(&["addr", "add", "10.0.0.11/24", "dev", "fab0"]);
        node.ip(&["link", "set", "fab0", "up"]);
        peer.ip(&["link", "set", "fabp", "up"]);
        let mac = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
        node.ip(&[
            "neigh",
            "replace",
            "10.0.0.12",
            "lladdr",
            &mac(Self::NODE2_MAC),
            "dev",
            "fab0",
            "nud",
            "stale",
        ]);
        node.ip(&["route", "add", "10.20.2.0/24", "via", "10.0.0.12"]);
        node.ip(&["route", "add", "10.20.4.0/24", "via", "10.0.0.14"]);
        node.ip(&["link", "add", "hpod", "type", "veth", "peer", "name", "hpodp"]);
        node.ip(&["link", "set", "hpod", "up"]);
        node.ip(&["link", "set", "hpodp", "up"]);
        node.ip(&["route", "add", "10.20.1.5/32", "dev", "hpod"]);
        // The lookup is the one for a packet to forward: forwarding on,
        // in this namespace only.
        node.enable_forwarding();
        let fab0 = node.ifindex("fab0");
        Self {
            node,
            _peer: peer,
            fab0,
        }
    }

    /// A UDP packet `src` -> `dst` from Ethernet address `smac`.
    pub fn frame(src: Ipv4Addr, dst: Ipv4Addr, smac: [u8; 6]) -> Vec<u8> {
        let mut f = eth(ETH_P_IP);
        f[6..12].copy_from_slice(&smac);
        f.extend(ipv4_header(src, dst, 5, 0, IPPROTO_UDP, 8));
        f
    }

    /// Runs from-fabric on `frame` as received on fab0, `repeat` times.
    pub fn test_run(&self, program: &Program, frame: &[u8], repeat: u32) -> TestRun {
        let ctx = TestContext {
            ifindex: self.fab0,
            ingress_ifindex: self.fab0,
        };
        self.node
            .run_in(|| program.test_run(Hook::FromFabric, frame, Some(&ctx), repeat))
            .expect("test run of from-fabric")
    }

    /// From-fabric's verdict on `frame` as received on fab0.
    pub fn verdict(&self, program: &Program, frame: &[u8]) -> i32 {
        self.test_run(program, frame, 1).verdict
    }
}
