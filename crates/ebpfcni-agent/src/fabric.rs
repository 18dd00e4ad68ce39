//! Source trust between nodes (issue 23): in cluster mode the agent
//! attaches the program's from-fabric entry point to tc ingress of the
//! interface that holds its `--node-ip` (precedence step F in
//! `bpf/include/ebpfcni.h`, `bpf/lib/fabric.h`): a packet whose source
//! address has an identity (another node's pod, a node IP, a pod of this
//! node) must route back out of that interface to the MAC it came from,
//! so that a host on the fabric cannot borrow a pod's identity by forging
//! its address.
//!
//! Attached at every start, replacing the agent's own earlier attachment
//! (the program pinned for this build, tcx, atomically) and nobody else's
//! program; left attached when the agent stops, as the pods' hooks are.

use std::net::IpAddr;
use std::path::Path;

use ebpfcni::netlink::Netlink;
use ebpfcni::Program;

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
