//! Source trust between nodes (issue 23): in cluster mode the agent
//! attaches the program's from-fabric entry point to tc ingress of the
//! interface that holds its `--node-ip` (precedence step F in
//! `bpf/include/ebpfcni.h`, `bpf/lib/fabric.h`): a packet whose source
//! address has an identity (another node's pod, a node IP, a pod of this
//! node) must route back out of that interface to the MAC it came from,
//! so that a host on the fabric cannot borrow a pod's identity by forging
//! its address.
//!
//! The other nodes' node IPs get managed neighbour entries on that
//! interface ([`Neighbours`]), so that the check always finds their MAC.
//!
//! Attached at every start, replacing the agent's own earlier attachment
//! (the program pinned for this build, tcx, atomically) and nobody else's
//! program; left attached when the agent stops, as the pods' hooks are.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ebpfcni::netlink::Netlink;
use ebpfcni::Program;
use ebpfcni_kvstore::Event;

/// Why the check could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// `--node-ip` is not an address of any interface here (a bad flag).
    #[error("{0}")]
    NoInterface(String),
    /// Netlink, loading or attaching the program failed.
    #[error("{0}")]
    Attach(String),
}

/// The interface of the calling thread's namespace that holds `node_ip`:
/// (ifindex, name).
pub fn fabric_interface(node_ip: IpAddr) -> Result<(u32, String), FabricError> {
    let IpAddr::V4(ip) = node_ip else {
        return Err(FabricError::NoInterface(format!(
            "--node-ip {node_ip}: only IPv4 node addresses are supported"
        )));
    };
    let mut netlink = Netlink::open().map_err(|e| FabricError::Attach(format!("netlink: {e}")))?;
    let links = netlink
        .links()
        .map_err(|e| FabricError::Attach(format!("list the interfaces: {e}")))?;
    for link in links {
        let addresses = netlink
            .addresses(link.index)
            .map_err(|e| FabricError::Attach(format!("addresses of {}: {e}", link.name)))?;
        if addresses.iter().any(|(a, _)| *a == ip) {
            return Ok((link.index, link.name));
        }
    }
    Err(FabricError::NoInterface(format!(
        "--node-ip {ip}: no interface of this network namespace holds it (the other nodes \
         route this node's pods through it; add it first)"
    )))
}

/// Attaches from-fabric (this build's program pinned in `pin_dir`) to
/// the interface holding `node_ip`. Returns: its name and ifindex.
pub fn attach(pin_dir: &Path, node_ip: IpAddr) -> Result<(String, u32), FabricError> {
    let (ifindex, name) = fabric_interface(node_ip)?;
    let (program, _) = Program::shared(pin_dir)
        .map_err(|e| FabricError::Attach(format!("load the program in {}: {e}", pin_dir.display())))?;
    program
        .attach_fabric(ifindex)
        .map_err(|e| FabricError::Attach(format!("attach the source check to {name}: {e}")))?;
    Ok((name, ifindex))
}

/// The other nodes' node IPs as managed neighbour entries on the fabric
/// interface, from the cluster's node events: the check's lookup finds a
/// node's MAC however long that node has only sent to this one (never
/// answered: the neighbour GC would drop such an idle entry, above
/// `gc_thresh1` entries, and the check fails closed without one); the
/// kernel resolves a managed entry at once and keeps it resolved.
pub struct Neighbours {
    ifindex: u32,
    node: String,
    nodes: HashMap<String, Ipv4Addr>,
    netlink: Option<Netlink>,
}

impl Neighbours {
    /// For the fabric interface `ifindex` of node `node` (whose own
    /// events are skipped); the netlink socket is opened in the calling
    /// thread's namespace, the agent's.
    pub fn new(ifindex: u32, node: &str) -> Self {
        let netlink = Netlink::open()
            .map_err(|e| log::warn!("netlink for the nodes' neighbour entries: {e}"))
            .ok();
        Self {
            ifindex,
            node: node.to_string(),
            nodes: HashMap::new(),
            netlink,
        }
    }

    /// A node up: its node IP's entry made managed; gone: removed.
    pub fn apply(&mut self, event: &Event) {
        let Some(netlink) = self.netlink.as_mut() else {
            return;
        };
        let (gone, up) = match event {
            Event::NodeUp(n) if n.name != self.node => match n.node_ip {
                IpAddr::V4(ip) => (
                    self.nodes.insert(n.name.clone(), ip).filter(|old| *old != ip),
                    Some(ip),
                ),
                IpAddr::V6(_) => (None, None),
            },
            Event::NodeDown(name) => (self.nodes.remove(name), None),
            _ => (None, None),
        };
        if let Some(ip) = gone {
            if let Err(e) = netlink.delete_neighbour(ip, self.ifindex) {
                log::warn!("remove the neighbour entry of {ip}: {e}");
            }
        }
        if let Some(ip) = up {
            if let Err(e) = netlink.replace_managed_neighbour(ip, self.ifindex) {
                log::warn!("keep the neighbour entry of node IP {ip} resolved: {e}");
            }
        }
    }
}
