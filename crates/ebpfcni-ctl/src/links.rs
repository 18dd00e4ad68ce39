//! The node's interfaces by index, for naming the host veth and the pod
//! behind it in events: one rtnetlink link dump with the library's client
//! (in the namespace the command runs in, which is where the CNI plugin
//! made the host veths).

use std::collections::HashMap;
use std::io;

use ebpfcni::netlink::{Netlink, NlError};

/// An interface's name, and the pod the CNI plugin made it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// "CONTAINER_ID/IFNAME" from the alias ebpfcni gives a host veth
    /// (`ebpfcni/NETWORK/CONTAINER_ID/IFNAME`).
    pub pod: Option<String>,
}

/// The pod named by an ebpfcni host veth's alias (the CNI plugin's
/// format, kept in the library).
pub fn pod_of_alias(alias: &str) -> Option<String> {
    ebpfcni::PodAttachment::from_alias(alias).map(|a| a.pod())
}

/// Every interface of the calling thread's namespace, by index.
pub fn dump() -> io::Result<HashMap<u32, Interface>> {
    let links = Netlink::open()
        .and_then(|mut netlink| netlink.links())
        .map_err(|e| match e {
            NlError::Io(e) => e,
            e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        })?;
    Ok(links
        .into_iter()
        .map(|link| {
            let pod = link.alias.as_deref().and_then(pod_of_alias);
            (link.index, Interface { name: link.name, pod })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_comes_from_ebpfcni_aliases_only() {
        assert_eq!(
            pod_of_alias("ebpfcni/net/ctr1/eth0").as_deref(),
            Some("ctr1/eth0")
        );
        assert_eq!(pod_of_alias("uplink"), None);
        assert_eq!(pod_of_alias("ebpfcni/only-network"), None);
    }
}
