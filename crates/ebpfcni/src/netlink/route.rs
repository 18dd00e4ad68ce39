//! IPv4 addresses and routes of the main table.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NlResult};

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub scope: RouteScope,
}

impl Route {
    /// `dst/prefix dev oif scope link`.
    pub fn link(dst: Ipv4Addr, prefix: u8, oif: u32) -> Self {
        Self {
            dst,
            prefix,
            gateway: None,
            oif: Some(oif),
            scope: RouteScope::Link,
        }
    }

    /// `dst/prefix via gw dev oif`.
    pub fn via(dst: Ipv4Addr, prefix: u8, gateway: Ipv4Addr, oif: u32) -> Self {
        Self {
            dst,
            prefix,
            gateway: Some(gateway),
            oif: Some(oif),
            scope: RouteScope::Universe,
        }
    }

    /// `dst/prefix via gw` (the kernel finds the device).
    pub fn via_gateway(dst: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Self {
        Self {
            dst,
            prefix,
            gateway: Some(gateway),
            oif: None,
            scope: RouteScope::Universe,
        }
    }

    /// Whether this route (as the kernel reports it) is `want`: same
    /// destination, gateway and device, and scope link when `want` is.
    pub fn satisfies(&self, want: &Route) -> bool {
        self.dst == want.dst
            && self.prefix == want.prefix
            && self.gateway == want.gateway
            && self.oif == want.oif
            && (want.scope != RouteScope::Link || self.scope == RouteScope::Link)
    }

    /// The route as `ip route` would show it, on device `dev`.
    pub fn describe(&self, dev: &str) -> String {
        match self.gateway {
            Some(gw) => format!("{}/{} via {gw} dev {dev}", self.dst, self.prefix),
            None => format!("{}/{} dev {dev} scope link", self.dst, self.prefix),
        }
    }
}

impl Netlink {
    /// Adds `ip/prefix` to link `index`. With `prefix_route` false the kernel
    /// adds no route for the prefix (IFA_F_NOPREFIXROUTE).
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8, prefix_route: bool) -> NlResult<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        msg.attributes.push(AddressAttribute::Local(ip.into()));
        msg.attributes.push(AddressAttribute::Address(ip.into()));
        if !prefix_route {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        }
        self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// IPv4 addresses (with prefix lengths) of link `index`.
    pub fn addresses(&mut self, index: u32) -> NlResult<Vec<(Ipv4Addr, u8)>> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetAddress(query), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(m) = reply else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local {
                out.push((ip, m.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Adds an IPv4 route to the main table.
    pub fn add_route(&mut self, route: &Route) -> NlResult<()> {
        let msg = route_message(route);
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// Adds an IPv4 route to the main table, or replaces the one to the
    /// same destination (another gateway or device).
    pub fn replace_route(&mut self, route: &Route) -> NlResult<()> {
        let msg = route_message(route);
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_REPLACE)?;
        Ok(())
    }

    /// Deletes an IPv4 route of the main table; false when there was none.
    pub fn delete_route(&mut self, route: &Route) -> NlResult<bool> {
        let msg = route_message(route);
        match self.request(RouteNetlinkMessage::DelRoute(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc_esrch()) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> NlResult<Vec<Route>> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(m) = reply else {
                continue;
            };
            let mut table = u32::from(m.header.table);
            let mut route = Route {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: m.header.destination_prefix_length,
                gateway: None,
                oif: None,
                scope: m.header.scope,
            };
            for attr in &m.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.dst = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                    RouteAttribute::Oif(oif) => route.oif = Some(*oif),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table == u32::from(RouteHeader::RT_TABLE_MAIN) && m.header.kind == RouteType::Unicast {
                out.push(route);
            }
        }
        Ok(out)
    }
}

/// The request for `route` in the main table.
fn route_message(route: &Route) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = route.prefix;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = route.scope;
    msg.header.kind = RouteType::Unicast;
    if route.prefix > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(route.dst)));
    }
    if let Some(gw) = route.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    msg
}

/// ESRCH: the kernel's answer to deleting a route that does not exist.
fn libc_esrch() -> i32 {
    nix::errno::Errno::ESRCH as i32
}
