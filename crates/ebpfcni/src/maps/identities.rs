//! Identities given to addresses, whichever map holds them: one address
//! (endpoint_map) or a CIDR prefix (prefix_map). Bulk changes span both
//! maps, all or nothing.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{Maps, Stored};
use crate::error::Result;
use crate::identity::Identity;
use crate::object::PinnedMap;

/// What an identity is given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentityAddr {
    /// One address: an endpoint (endpoint_map).
    Ip(Ipv4Addr),
    /// Every address of a prefix that is not an endpoint (prefix_map).
    Cidr(Ipv4Net),
}

impl fmt::Display for IdentityAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityAddr::Ip(ip) => ip.fmt(f),
            IdentityAddr::Cidr(net) => net.fmt(f),
        }
    }
}

impl Maps {
    /// Sets every identity of `entries`, in endpoint_map and prefix_map:
    /// all of them, or none when either map lacks room (what was written to
    /// one map is undone when the other refuses). Returns how many were new.
    pub fn set_identities(&self, entries: &[(IdentityAddr, Identity)]) -> Result<usize> {
        let mut ips = Vec::new();
        let mut nets = Vec::new();
        for &(addr, id) in entries {
            match addr {
                IdentityAddr::Ip(ip) => ips.push((ip, id)),
                IdentityAddr::Cidr(net) => nets.push((net, id)),
            }
        }
        let present_ips: Vec<_> = self.endpoints.list()?;
        let present_nets: HashSet<Ipv4Net> = self.prefixes.list()?.into_iter().map(|(n, _)| n).collect();
        let known_ips: HashSet<Ipv4Addr> = present_ips.iter().map(|(ip, _)| *ip).collect();
        let new_ips: HashSet<Ipv4Addr> = ips
            .iter()
            .map(|(ip, _)| *ip)
            .filter(|ip| !known_ips.contains(ip))
            .collect();
        let new_nets: HashSet<Ipv4Net> = nets
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !present_nets.contains(n))
            .collect();
        for (map, capacity, needed) in [
            (
                PinnedMap::Endpoints,
                self.endpoints.capacity(),
                known_ips.len() + new_ips.len(),
            ),
            (
                PinnedMap::Prefixes,
                self.prefixes.capacity(),
                present_nets.len() + new_nets.len(),
            ),
        ] {
            super::check_room(map, capacity, needed)?;
        }
        self.endpoints.upsert_batch(&ips)?;
        if let Err(e) = self.prefixes.upsert_batch(&nets) {
            self.restore_endpoints(&ips, &present_ips);
            return Err(e);
        }
        Ok(new_ips.len() + new_nets.len())
    }

    /// Puts the endpoints of `written` back as `before` had them (best
    /// effort: this undoes a half-applied change that already failed).
    fn restore_endpoints(
        &self,
        written: &[(Ipv4Addr, Identity)],
        before: &[(Ipv4Addr, Stored<Identity, u32>)],
    ) {
        for (ip, _) in written {
            match before.iter().find(|(b, _)| b == ip) {
                Some((_, Stored::Valid(id))) => drop(self.endpoints.write_raw(*ip, id.get())),
                Some((_, Stored::Invalid { raw, .. })) => drop(self.endpoints.write_raw(*ip, *raw)),
                None => drop(self.endpoints.delete(*ip)),
            }
        }
    }
}
