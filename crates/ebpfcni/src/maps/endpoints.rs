//! endpoint_map: IPv4 address (host byte order) -> security identity.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::{dump, identity_from, insert_error, StoredIdentity};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::object::PinnedMap;

const MAP: PinnedMap = PinnedMap::Endpoints;

#[derive(Debug)]
pub struct EndpointMap {
    pub(super) map: MapHandle,
}

pub(super) fn key(ip: Ipv4Addr) -> [u8; 4] {
    u32::from(ip).to_ne_bytes()
}

impl EndpointMap {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Sets the identity of `ip`. Returns the identity it replaced (which may
    /// be an invalid one: it is overwritten).
    pub fn upsert(&self, ip: Ipv4Addr, id: Identity) -> Result<Option<StoredIdentity>> {
        let previous = self.get(ip)?;
        self.map
            .update(&key(ip), &id.get().to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| {
                // Only a new address can overflow the map: it needed one more.
                let needed = dump(&self.map, MAP).map_or(self.capacity() as usize, |d| d.len()) + 1;
                insert_error(MAP, self.capacity(), needed, e)
            })?;
        Ok(previous)
    }

    /// Sets many identities at once: all of them, or none when the map lacks
    /// room for the new addresses.
    pub fn upsert_batch(&self, entries: &[(Ipv4Addr, Identity)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let present: HashSet<Ipv4Addr> = self.list()?.into_iter().map(|(ip, _)| ip).collect();
        let new: HashSet<Ipv4Addr> = entries
            .iter()
            .map(|(ip, _)| *ip)
            .filter(|ip| !present.contains(ip))
            .collect();
        let needed = present.len() + new.len();
        super::check_room(MAP, self.capacity(), needed)?;
        let keys: Vec<u8> = entries.iter().flat_map(|(ip, _)| key(*ip)).collect();
        let values: Vec<u8> = entries
            .iter()
            .flat_map(|(_, id)| id.get().to_ne_bytes())
            .collect();
        self.map
            .update_batch(&keys, &values, entries.len() as u32, MapFlags::ANY, MapFlags::ANY)
            .map_err(|e| insert_error(MAP, self.capacity(), needed, e))
    }

    /// Removes `ip`. Returns the identity it had (valid or not), `None` when
    /// it was absent.
    pub fn delete(&self, ip: Ipv4Addr) -> Result<Option<StoredIdentity>> {
        match self.map.lookup_and_delete(&key(ip)) {
            Ok(previous) => Ok(previous.as_deref().map(identity_from)),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::bpf(format!("delete {ip} from {MAP}"), e)),
        }
    }

    pub fn get(&self, ip: Ipv4Addr) -> Result<Option<StoredIdentity>> {
        Ok(self
            .map
            .lookup(&key(ip), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("look up {ip} in {MAP}"), e))?
            .as_deref()
            .map(identity_from))
    }

    /// Every endpoint, invalid ones included, sorted by address.
    pub fn list(&self) -> Result<Vec<(Ipv4Addr, StoredIdentity)>> {
        let mut entries: Vec<_> = dump(&self.map, MAP)?
            .into_iter()
            .map(|(k, v)| {
                let ip = Ipv4Addr::from(u32::from_ne_bytes(k.as_slice().try_into().expect("4-byte key")));
                (ip, identity_from(&v))
            })
            .collect();
        entries.sort_unstable();
        Ok(entries)
    }

    /// Removes every endpoint. Returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        super::clear(&self.map, MAP)
    }
}
