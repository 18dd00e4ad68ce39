//! prefix_map: IPv4 prefix -> identity (CIDR identities), an LPM trie the
//! program consults only for addresses that are not endpoints; the longest
//! prefix holding an address wins.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::{identity_from, insert_error, StoredIdentity};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::object::PinnedMap;
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::Prefixes;

#[derive(Debug)]
pub struct PrefixMap {
    pub(super) map: MapHandle,
}

fn key(net: Ipv4Net) -> types::ebpfcni_prefix_key {
    types::ebpfcni_prefix_key {
        prefixlen: u32::from(net.prefix_len()),
        // Network byte order, as on the wire: the trie matches from the first byte.
        addr: u32::from_ne_bytes(net.network().octets()),
    }
}

/// The bytes of `net`'s key.
pub(super) fn key_bytes(net: Ipv4Net) -> Vec<u8> {
    bytemuck::bytes_of(&key(net)).to_vec()
}

fn net_from(key: &[u8]) -> Ipv4Net {
    let key: types::ebpfcni_prefix_key = bytemuck::pod_read_unaligned(key);
    let addr = Ipv4Addr::from(key.addr.to_ne_bytes());
    Ipv4Net::new(addr, key.prefixlen.min(32) as u8).expect("length at most 32")
}

impl PrefixMap {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Sets the identity of `net` (host bits must be clear). Returns the
    /// identity it replaced.
    pub fn upsert(&self, net: Ipv4Net, id: Identity) -> Result<Option<StoredIdentity>> {
        let previous = self.get(net)?;
        self.map
            .update(
                bytemuck::bytes_of(&key(net)),
                &id.get().to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(|e| insert_error(MAP, self.capacity(), self.len().unwrap_or(0) + 1, e))?;
        Ok(previous)
    }

    /// Sets many identities at once: all of them, or none when the trie
    /// lacks room (or the kernel refuses one: what was written is undone).
    pub fn upsert_batch(&self, entries: &[(Ipv4Net, Identity)]) -> Result<()> {
        let present: HashMap<Ipv4Net, Vec<u8>> = self.raw_entries()?.into_iter().collect();
        let new: HashSet<Ipv4Net> = entries
            .iter()
            .map(|(net, _)| *net)
            .filter(|net| !present.contains_key(net))
            .collect();
        let needed = present.len() + new.len();
        super::check_room(MAP, self.capacity(), needed)?;
        // LPM tries have no batch update: one by one, undone on failure.
        for (done, &(net, id)) in entries.iter().enumerate() {
            if let Err(e) = self.map.update(
                bytemuck::bytes_of(&key(net)),
                &id.get().to_ne_bytes(),
                MapFlags::ANY,
            ) {
                for &(net, _) in &entries[..done] {
                    let k = key(net);
                    let _ = match present.get(&net) {
                        Some(old) => self.map.update(bytemuck::bytes_of(&k), old, MapFlags::ANY),
                        None => self.map.delete(bytemuck::bytes_of(&k)),
                    };
                }
                return Err(insert_error(MAP, self.capacity(), needed, e));
            }
        }
        Ok(())
    }

    /// Removes `net`. Returns the identity it had, `None` when it was absent.
    pub fn delete(&self, net: Ipv4Net) -> Result<Option<StoredIdentity>> {
        let previous = self.get(net)?;
        match self.map.delete(bytemuck::bytes_of(&key(net))) {
            Ok(()) => Ok(previous),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::bpf(format!("delete {net} from {MAP}"), e)),
        }
    }

    /// The identity of exactly `net`, if it is in the trie.
    pub fn get(&self, net: Ipv4Net) -> Result<Option<StoredIdentity>> {
        // A lookup in an LPM trie returns the longest match: keep it only
        // when it is `net` itself.
        Ok(self
            .list()?
            .into_iter()
            .find_map(|(n, id)| (n == net).then_some(id)))
    }

    /// The longest prefix holding `ip`, and its identity.
    pub fn longest_match(&self, ip: Ipv4Addr) -> Result<Option<(Ipv4Net, StoredIdentity)>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len()))
    }

    fn raw_entries(&self) -> Result<Vec<(Ipv4Net, Vec<u8>)>> {
        // LPM tries have no batch lookup: walk the keys.
        let mut entries = Vec::new();
        for k in self.map.keys() {
            if let Some(value) = self
                .map
                .lookup(&k, MapFlags::ANY)
                .map_err(|e| Error::bpf(format!("read {MAP}"), e))?
            {
                entries.push((net_from(&k), value));
            }
        }
        Ok(entries)
    }

    /// Every prefix, invalid ones included, sorted by address then length.
    pub fn list(&self) -> Result<Vec<(Ipv4Net, StoredIdentity)>> {
        let mut entries: Vec<_> = self
            .raw_entries()?
            .into_iter()
            .map(|(net, value)| (net, identity_from(&value)))
            .collect();
        entries.sort_unstable_by_key(|(net, _)| (net.network(), net.prefix_len()));
        Ok(entries)
    }

    /// Number of prefixes (counted by walking the trie).
    pub fn len(&self) -> Result<usize> {
        Ok(self.map.keys().count())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.map.keys().next().is_none())
    }

    /// Removes every prefix. Returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        super::clear_each(&self.map, MAP)
    }
}
