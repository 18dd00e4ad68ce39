//! local_map: pod IPv4 address -> where the pod lives on this node (its host
//! veth, the MACs it expects, whether its network delivers locally). The
//! program hands a packet it passed at from-pod straight into that pod
//! (bpf/lib/deliver.h). Written by the CNI plugin (ADD records, DEL and GC
//! remove): plumbing, not policy, in agent mode too.
//!
//! In agent mode a record also carries the pod's identity, a copy of its
//! endpoint_map entry ([`LocalDeliveryMap::carry_identity`]): from-pod
//! then takes the destination's identity from the record it looks up for
//! delivery anyway, instead of looking it up in endpoint_map.
//!
//! config_map's `local_redirect` is on exactly while a record delivers
//! locally (every change here keeps it so, under the pin directory's lock):
//! the program skips the lookup otherwise, so that networks on the node's
//! stack (the default) pay nothing for local delivery.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::{insert_error, ConfigMap, EndpointMap};
use crate::bpffs::PinDirLock;
use crate::error::{Error, Result};
use crate::identity::Identity as Id;
use crate::object::PinnedMap;
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::Local;

/// EBPFCNI_LOCAL_REDIRECT (bpf/include/ebpfcni.h).
const REDIRECT: u32 = 0x1;

/// One pod address's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDelivery {
    /// The pod's host veth.
    pub ifindex: u32,
    /// The pod's eth0: the destination MAC of what is delivered.
    pub pod_mac: [u8; 6],
    /// The host veth (the pod's gateway): the source MAC.
    pub host_mac: [u8; 6],
    /// Deliver into the pod ("localDelivery": "redirect"); false: the
    /// node's stack forwards, as without a record.
    pub redirect: bool,
}

impl LocalDelivery {
    fn to_value(self) -> types::ebpfcni_local {
        types::ebpfcni_local {
            ifindex: self.ifindex,
            pod_mac: self.pod_mac,
            host_mac: self.host_mac,
            flags: if self.redirect { REDIRECT } else { 0 },
            ..bytemuck::Zeroable::zeroed()
        }
    }

    fn from_value(v: types::ebpfcni_local) -> Self {
        Self {
            ifindex: v.ifindex,
            pod_mac: v.pod_mac,
            host_mac: v.host_mac,
            redirect: v.flags & REDIRECT != 0,
        }
    }
}

fn key(addr: Ipv4Addr) -> [u8; 4] {
    addr.octets() // network byte order, as on the wire
}

#[derive(Debug)]
pub struct LocalDeliveryMap {
    map: MapHandle,
    /// For its `local_redirect` flag.
    config: ConfigMap,
    pin_dir: PathBuf,
}

impl LocalDeliveryMap {
    pub(super) fn new(map: MapHandle, config: ConfigMap, pin_dir: &Path) -> Self {
        Self {
            map,
            config,
            pin_dir: pin_dir.to_owned(),
        }
    }

    /// Opens this map (and the config it keeps a flag of) alone, `None`
    /// when it is not pinned under `pin_dir` (pins of a release without
    /// it): for the CNI plugin's DEL and GC.
    pub fn open(pin_dir: &Path) -> Result<Option<Self>> {
        let specs = crate::object::specs()?;
        let spec_of = |map: PinnedMap| specs[PinnedMap::ALL.iter().position(|m| *m == map).expect("listed")];
        let Some(map) = crate::object::open_pinned(MAP, pin_dir, &spec_of(MAP))? else {
            return Ok(None);
        };
        let Some(config) =
            crate::object::open_pinned(PinnedMap::Config, pin_dir, &spec_of(PinnedMap::Config))?
        else {
            return Ok(None);
        };
        Ok(Some(Self::new(map, ConfigMap::new(config, pin_dir), pin_dir)))
    }

    /// Turns config_map's `local_redirect` on exactly when some record
    /// delivers locally. Every change here calls it; the loader too, for
    /// pins written before the flag existed.
    pub fn refresh_flag(&self) -> Result<()> {
        let _lock = PinDirLock::acquire(&self.pin_dir)?;
        let any = self.list()?.iter().any(|(_, record)| record.redirect);
        self.config.set_local_redirect(any)
    }

    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Records where the pod of `addr` lives, replacing any earlier record
    /// of that address. The record carries no identity: in agent mode,
    /// [`Self::carry_identity`] after it.
    pub fn set(&self, addr: Ipv4Addr, record: &LocalDelivery) -> Result<()> {
        if addr.is_unspecified() || record.ifindex == 0 {
            return Err(Error::io(
                format!("record local delivery of {addr} to ifindex {}", record.ifindex),
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        let _lock = PinDirLock::acquire(&self.pin_dir)?;
        let replaced = self.get(addr)?;
        self.map
            .update(&key(addr), bytemuck::bytes_of(&record.to_value()), MapFlags::ANY)
            .map_err(|e| insert_error(MAP, self.capacity(), self.list().map_or(0, |l| l.len()) + 1, e))?;
        if record.redirect {
            self.config.set_local_redirect(true)
        } else if replaced.is_some_and(|r| r.redirect) {
            self.refresh_flag()
        } else {
            Ok(())
        }
    }

    /// Makes the record of `addr`, if there is one, carry what endpoint_map
    /// says of `addr` now (an identity, or none: 0). For addresses whose
    /// endpoint entries the agent writes: it calls this after each change of
    /// the entry, and the CNI plugin after writing the record. Each copy
    /// reads the entry under the pin directory's lock, so whichever copy
    /// comes last carries the entry's latest value. Returns whether the
    /// record changed.
    pub fn carry_identity(&self, addr: Ipv4Addr, endpoints: &EndpointMap) -> Result<bool> {
        // Nothing to do (no record, or it carries the entry already) is
        // seen without the lock: an agent restart checks every endpoint.
        if self.uncarried(addr, endpoints)?.is_none() {
            return Ok(false);
        }
        let _lock = PinDirLock::acquire(&self.pin_dir)?;
        let Some((mut value, identity)) = self.uncarried(addr, endpoints)? else {
            return Ok(false);
        };
        value.identity = identity;
        self.write_existing(addr, &value)
    }

    /// Makes the record of `addr` carry no identity if it carries `id`:
    /// for the agent, when the endpoint that had `id` at `addr` goes.
    /// Returns whether the record changed.
    pub fn clear_identity(&self, addr: Ipv4Addr, id: Id) -> Result<bool> {
        let _lock = PinDirLock::acquire(&self.pin_dir)?;
        let Some(mut value) = self.value(addr)? else {
            return Ok(false);
        };
        if value.identity != id.get() {
            return Ok(false);
        }
        value.identity = 0;
        self.write_existing(addr, &value)
    }

    fn write_existing(&self, addr: Ipv4Addr, value: &types::ebpfcni_local) -> Result<bool> {
        match self
            .map
            .update(&key(addr), bytemuck::bytes_of(value), MapFlags::EXIST)
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false), // just removed
            Err(e) => Err(Error::bpf(format!("carry {addr}'s identity in {MAP}"), e)),
        }
    }

    /// The record of `addr` and the identity it should carry, when it has
    /// a record that does not carry that.
    fn uncarried(
        &self,
        addr: Ipv4Addr,
        endpoints: &EndpointMap,
    ) -> Result<Option<(types::ebpfcni_local, u32)>> {
        let Some(value) = self.value(addr)? else {
            return Ok(None);
        };
        let identity = endpoints
            .get(addr)?
            .and_then(|stored| stored.valid())
            .map_or(0, Id::get);
        Ok((value.identity != identity).then_some((value, identity)))
    }

    /// The identity the record of `addr` carries, if it has a record that
    /// carries one.
    pub fn carried_identity(&self, addr: Ipv4Addr) -> Result<Option<Id>> {
        Ok(self.value(addr)?.and_then(|v| Id::new(v.identity)))
    }

    /// The record of `addr`, if any.
    pub fn get(&self, addr: Ipv4Addr) -> Result<Option<LocalDelivery>> {
        Ok(self.value(addr)?.map(LocalDelivery::from_value))
    }

    fn value(&self, addr: Ipv4Addr) -> Result<Option<types::ebpfcni_local>> {
        Ok(self
            .map
            .lookup(&key(addr), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("look up {addr} in {MAP}"), e))?
            .map(|raw| bytemuck::pod_read_unaligned(&raw)))
    }

    /// Removes the record of `addr`. Returns false when there was none.
    pub fn remove(&self, addr: Ipv4Addr) -> Result<bool> {
        let _lock = PinDirLock::acquire(&self.pin_dir)?;
        let removed = self.delete(addr)?;
        if removed.is_some_and(|r| r.redirect) {
            self.refresh_flag()?;
        }
        Ok(removed.is_some())
    }

    fn delete(&self, addr: Ipv4Addr) -> Result<Option<LocalDelivery>> {
        let record = self.get(addr)?;
        match self.map.delete(&key(addr)) {
            Ok(()) => Ok(record),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::bpf(format!("remove {addr} from {MAP}"), e)),
        }
    }

    /// Removes every record that delivers to the host veth `ifindex` (its
    /// pod is going). Returns the addresses removed.
    pub fn remove_interface(&self, ifindex: u32) -> Result<Vec<Ipv4Addr>> {
        self.remove_where(|record| record.ifindex == ifindex)
    }

    /// Removes every record `remove` says to.
    /// Returns the addresses removed.
    pub fn remove_where(&self, mut remove: impl FnMut(&LocalDelivery) -> bool) -> Result<Vec<Ipv4Addr>> {
        let _lock = PinDirLock::acquire(&self.pin_dir)?;
        let mut removed = Vec::new();
        let mut redirecting = false;
        for (addr, record) in self.list()? {
            if remove(&record) {
                if let Some(gone) = self.delete(addr)? {
                    redirecting |= gone.redirect;
                    removed.push(addr);
                }
            }
        }
        if redirecting {
            self.refresh_flag()?;
        }
        Ok(removed)
    }

    /// Every record, sorted by address.
    pub fn list(&self) -> Result<Vec<(Ipv4Addr, LocalDelivery)>> {
        let mut records: Vec<_> = super::dump(&self.map, MAP)?
            .into_iter()
            .map(|(k, v)| {
                let octets: [u8; 4] = k.as_slice().try_into().expect("4-byte key");
                (
                    Ipv4Addr::from(octets),
                    LocalDelivery::from_value(bytemuck::pod_read_unaligned(&v)),
                )
            })
            .collect();
        records.sort_unstable_by_key(|(a, _)| *a);
        Ok(records)
    }
}
