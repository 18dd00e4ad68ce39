//! Two pods on one node, all in namespaces this process creates: pod A and
//! pod B each have an `eth0` whose peer (`veth_a`, `veth_b`) lives in a
//! "node" namespace that routes between them. The root namespace is never
//! touched; everything is deleted when [`Topology`] drops (also on panic).
//!
//! ```text
//!  pod A 10.13.1.2 (+10.13.1.3) --veth_a-- node 10.13.1.1 | 10.13.2.1 --veth_b-- pod B 10.13.2.2
//! ```

use std::net::Ipv4Addr;

use ebpfcni_testutil::Netns;

pub const POD_A: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 2);
pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 13, 2, 2);
/// A second address of pod A that no filter allows: a packet from it must be
/// dropped while a filter is installed, which shows the filter is in the path.
pub const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 3);

pub const NODE_IF_A: &str = "veth_a";
pub const NODE_IF_B: &str = "veth_b";

pub struct Topology {
    pub node: Netns,
    pub pod_a: Netns,
    pub pod_b: Netns,
    pub ifindex_a: u32,
    pub ifindex_b: u32,
}

impl Topology {
    pub fn new() -> Self {
        let node = Netns::new("bench-node");
        let pod_a = Netns::new("bench-a");
        let pod_b = Netns::new("bench-b");
        for (node_if, pod, gateway, addrs) in [
            (
                NODE_IF_A,
                &pod_a,
                "10.13.1.1",
                &["10.13.1.2/24", "10.13.1.3/24"][..],
            ),
            (NODE_IF_B, &pod_b, "10.13.2.1", &["10.13.2.2/24"][..]),
        ] {
            node.ip(&[
                "link",
                "add",
                node_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod.name(),
            ]);
            node.ip(&["addr", "add", &format!("{gateway}/24"), "dev", node_if]);
            node.ip(&["link", "set", node_if, "up"]);
            for addr in addrs {
                pod.ip(&["addr", "add", addr, "dev", "eth0"]);
            }
            pod.ip(&["link", "set", "eth0", "up"]);
            pod.ip(&["route", "add", "default", "via", gateway]);
        }
        // Forwarding inside the node namespace only: /proc/sys/net belongs to
        // the namespace of the process that opens it.
        let status = node
            .command("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"])
            .status()
            .expect("run sysctl");
        assert!(status.success(), "enable forwarding in the node namespace");
        let ifindex_a = node.ifindex(NODE_IF_A);
        let ifindex_b = node.ifindex(NODE_IF_B);
        let topo = Self {
            node,
            pod_a,
            pod_b,
            ifindex_a,
            ifindex_b,
        };
        assert!(topo.reaches(POD_A), "pod A cannot reach pod B through the node");
        topo
    }

    /// Whether a ping from pod A's address `src` gets an answer from pod B.
    pub fn reaches(&self, src: Ipv4Addr) -> bool {
        self.pod_a
            .command("ping")
            .args([
                "-c",
                "1",
                "-W",
                "1",
                "-q",
                "-I",
                &src.to_string(),
                &POD_B.to_string(),
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Whether the allowed pair talks and the stranger does not.
    pub fn enforced(&self) -> bool {
        self.reaches(POD_A) && !self.reaches(STRANGER)
    }
}

/// The root namespace's net.ipv4.ip_forward, read from this process (which
/// stays in the root namespace).
pub fn root_ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}
