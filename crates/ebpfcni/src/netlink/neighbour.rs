//! Neighbour entries of IPv4 next hops: managed ones, which the kernel
//! resolves at once and keeps resolved (NTF_EXT_MANAGED, kernel 5.16+;
//! the garbage collector leaves them), as Cilium keeps its nodes'.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourHeader, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NlResult};

fn neighbour_message(ip: Ipv4Addr, ifindex: u32, managed: bool) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header = NeighbourHeader {
        family: AddressFamily::Inet,
        ifindex,
        state: NeighbourState::None,
        flags: NeighbourFlags::empty(),
        kind: RouteType::Unspec,
    };
    msg.attributes.push(NeighbourAttribute::Destination(ip.into()));
    if managed {
        msg.attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    }
    msg
}

impl Netlink {
    /// Makes the neighbour entry of `ip` on `ifindex` a managed one
    /// (created, or an existing entry turned managed, keeping what it
    /// knows), which the kernel resolves and keeps resolved.
    pub fn replace_managed_neighbour(&mut self, ip: Ipv4Addr, ifindex: u32) -> NlResult<()> {
        let msg = neighbour_message(ip, ifindex, true);
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// Deletes the neighbour entry of `ip` on `ifindex`; false when there
    /// was none.
    pub fn delete_neighbour(&mut self, ip: Ipv4Addr, ifindex: u32) -> NlResult<bool> {
        let msg = neighbour_message(ip, ifindex, false);
        match self.request(RouteNetlinkMessage::DelNeighbour(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(nix::errno::Errno::ENOENT as i32) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
