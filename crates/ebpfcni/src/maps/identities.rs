//! Identities given to addresses, whichever map holds them: one address
//! (endpoint_map) or a CIDR prefix (prefix_map). Bulk changes span both
//! maps, all or nothing.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::journal::Journal;
use super::{endpoints, prefixes, Maps, StoredIdentity};
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

/// What a change of identities did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdentityChange {
    /// Addresses and prefixes that had no entry before.
    pub new: usize,
    /// Tracked connections ended because an address's identity changed.
    pub ended: usize,
}

impl Maps {
    /// Records the entries of `addrs` in `journal` before they change.
    fn record(journal: &mut Journal, addrs: &[IdentityAddr]) -> Result<()> {
        let ips = addrs.iter().filter_map(|a| match a {
            IdentityAddr::Ip(ip) => Some(endpoints::key(*ip).to_vec()),
            IdentityAddr::Cidr(_) => None,
        });
        journal.record(PinnedMap::Endpoints, ips)?;
        let nets = addrs.iter().filter_map(|a| match a {
            IdentityAddr::Cidr(net) => Some(prefixes::key_bytes(*net)),
            IdentityAddr::Ip(_) => None,
        });
        journal.record(PinnedMap::Prefixes, nets)
    }

    /// Sets every identity of `entries`, in endpoint_map and prefix_map,
    /// and ends the tracked connections of addresses whose identity
    /// changed: all of it, or none when either map lacks room. Killed part
    /// way, the change is undone by the next opener of the maps
    /// (`journal.rs`).
    pub fn set_identities(&self, entries: &[(IdentityAddr, Identity)]) -> Result<IdentityChange> {
        let mut journal = Journal::begin(self, Maps::after_policy_change)?;
        let mut ips = Vec::new();
        let mut nets = Vec::new();
        for &(addr, id) in entries {
            match addr {
                IdentityAddr::Ip(ip) => ips.push((ip, id)),
                IdentityAddr::Cidr(net) => nets.push((net, id)),
            }
        }
        let known_ips: HashSet<Ipv4Addr> = self.endpoints.list()?.into_iter().map(|(ip, _)| ip).collect();
        let present_nets: HashSet<Ipv4Net> = self.prefixes.list()?.into_iter().map(|(n, _)| n).collect();
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
        let addrs: Vec<IdentityAddr> = entries.iter().map(|(a, _)| *a).collect();
        Self::record(&mut journal, &addrs)?;
        // On an error the journal, dropped, puts back what was written.
        self.endpoints.upsert_batch(&ips)?;
        self.prefixes.upsert_batch(&nets)?;
        let ended = self.after_identity_change()?;
        journal.commit()?;
        Ok(IdentityChange {
            new: new_ips.len() + new_nets.len(),
            ended,
        })
    }

    /// Sets the identity of one address or prefix and ends the tracked
    /// connections it had under another. Returns the identity it replaced.
    pub fn set_identity(&self, addr: IdentityAddr, id: Identity) -> Result<(Option<StoredIdentity>, usize)> {
        let mut journal = Journal::begin(self, Maps::after_policy_change)?;
        Self::record(&mut journal, &[addr])?;
        let previous = match addr {
            IdentityAddr::Ip(ip) => self.endpoints.upsert(ip, id),
            IdentityAddr::Cidr(net) => self.prefixes.upsert(net, id),
        }?;
        let ended = self.after_identity_change()?;
        journal.commit()?;
        Ok((previous, ended))
    }

    /// Removes one address or prefix and ends its tracked connections.
    /// Returns the identity it had.
    pub fn remove_identity(&self, addr: IdentityAddr) -> Result<(Option<StoredIdentity>, usize)> {
        let mut journal = Journal::begin(self, Maps::after_policy_change)?;
        Self::record(&mut journal, &[addr])?;
        let removed = match addr {
            IdentityAddr::Ip(ip) => self.endpoints.delete(ip),
            IdentityAddr::Cidr(net) => self.prefixes.delete(net),
        }?;
        let ended = self.after_identity_change()?;
        journal.commit()?;
        Ok((removed, ended))
    }

    /// Removes every address and prefix and ends the tracked connections.
    /// Returns how many endpoints and prefixes there were, and how many
    /// connections ended.
    pub fn flush_identities(&self) -> Result<(usize, usize, usize)> {
        let mut journal = Journal::begin(self, Maps::after_policy_change)?;
        journal.record_all(PinnedMap::Endpoints)?;
        journal.record_all(PinnedMap::Prefixes)?;
        let endpoints = self.endpoints.clear()?;
        let prefixes = self.prefixes.clear()?;
        let ended = self.after_identity_change()?;
        journal.commit()?;
        Ok((endpoints, prefixes, ended))
    }
}
