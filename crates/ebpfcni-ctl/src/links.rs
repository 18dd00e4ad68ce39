//! The node's interfaces by index, for naming the host veth and the pod
//! behind it in events: one rtnetlink link dump (in the namespace the
//! command runs in, which is where the CNI plugin made the host veths).

use std::collections::HashMap;
use std::io;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

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
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    request.finalize();
    let mut out = vec![0u8; request.buffer_len()];
    request.serialize(&mut out);
    socket.send(&out, 0)?;

    let mut links = HashMap::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let n = socket.recv(&mut buf, 0)?;
        let mut offset = 0;
        while offset < n {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = reply.header.length as usize;
            if len == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "zero-length netlink message",
                ));
            }
            offset += (len + 3) & !3;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(links),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(io::Error::from_raw_os_error(-e.code.map_or(0, |c| c.get())))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    let index = m.header.index;
                    let mut link = Interface {
                        name: String::new(),
                        pod: None,
                    };
                    for attr in m.attributes {
                        match attr {
                            LinkAttribute::IfName(name) => link.name = name,
                            LinkAttribute::IfAlias(alias) => link.pod = pod_of_alias(&alias),
                            _ => {}
                        }
                    }
                    links.insert(index, link);
                }
                _ => {}
            }
        }
    }
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
