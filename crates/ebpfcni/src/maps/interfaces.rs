//! interface_map: host veth ifindex -> the pod addresses behind it. The
//! program drops what a pod sends from any other address (source trust).
//! Written by the CNI plugin (ADD records, DEL and GC remove): plumbing, not
//! policy. The node agent writes the records of its pods itself, carrying
//! the pod's identity, which from-pod then takes from the record instead of
//! looking it up ([`InterfaceMap::set_carrying`]).

use std::net::Ipv4Addr;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::insert_error;
use crate::error::{Error, Result};
use crate::identity::Identity as Id;
use crate::object::PinnedMap;
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::Interfaces;

/// How many addresses one interface's record holds.
pub const INTERFACE_ADDRS: usize = 4;
const _: () = assert!(
    std::mem::size_of::<types::ebpfcni_interface>() == INTERFACE_ADDRS * 4 + 4,
    "EBPFCNI_INTERFACE_ADDRS"
);

#[derive(Debug)]
pub struct InterfaceMap {
    pub(super) map: MapHandle,
}

fn record(addrs: &[Ipv4Addr], identity: Option<Id>) -> types::ebpfcni_interface {
    let mut record: types::ebpfcni_interface = bytemuck::Zeroable::zeroed();
    for (slot, addr) in record.addrs.iter_mut().zip(addrs) {
        *slot = u32::from_ne_bytes(addr.octets()); // network byte order
    }
    record.identity = identity.map_or(0, Id::get);
    record
}

fn addrs_from(value: &[u8]) -> Vec<Ipv4Addr> {
    let record: types::ebpfcni_interface = bytemuck::pod_read_unaligned(value);
    record
        .addrs
        .iter()
        .filter(|a| **a != 0)
        .map(|a| Ipv4Addr::from(a.to_ne_bytes()))
        .collect()
}

impl InterfaceMap {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    /// Opens this map alone, `None` when it is not pinned under `pin_dir`
    /// (nothing recorded yet, or pins of a release without it): for the
    /// CNI plugin's DEL and GC, which remove records and must work
    /// whatever else is or is not pinned.
    pub fn open(pin_dir: &Path) -> Result<Option<Self>> {
        let spec = crate::object::specs()?[PinnedMap::ALL.iter().position(|m| *m == MAP).expect("listed")];
        Ok(crate::object::open_pinned(MAP, pin_dir, &spec)?.map(Self::new))
    }

    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Records that `addrs` (at most [`INTERFACE_ADDRS`], none 0.0.0.0) are
    /// the pod addresses behind the host veth `ifindex`, replacing any
    /// earlier record of that ifindex. The record carries no identity: the
    /// program looks the source's up.
    pub fn set(&self, ifindex: u32, addrs: &[Ipv4Addr]) -> Result<()> {
        self.set_carrying(ifindex, addrs, None)
    }

    /// As [`Self::set`], the record carrying `identity`, which from-pod then
    /// uses as the identity of every address of the record, without looking
    /// it up. Only for a writer that also writes those addresses'
    /// endpoint_map entries and keeps the two equal (the agent).
    pub fn set_carrying(&self, ifindex: u32, addrs: &[Ipv4Addr], identity: Option<Id>) -> Result<()> {
        if addrs.is_empty() || addrs.len() > INTERFACE_ADDRS || addrs.iter().any(|a| a.is_unspecified()) {
            return Err(Error::io(
                format!(
                    "record {addrs:?} for ifindex {ifindex}: 1 to {INTERFACE_ADDRS} addresses, none 0.0.0.0"
                ),
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        self.map
            .update(
                &ifindex.to_ne_bytes(),
                bytemuck::bytes_of(&record(addrs, identity)),
                MapFlags::ANY,
            )
            .map_err(|e| insert_error(MAP, self.capacity(), self.list().map_or(0, |l| l.len()) + 1, e))
    }

    /// The addresses recorded for `ifindex`, if any.
    pub fn get(&self, ifindex: u32) -> Result<Option<Vec<Ipv4Addr>>> {
        Ok(self
            .map
            .lookup(&ifindex.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("look up ifindex {ifindex} in {MAP}"), e))?
            .as_deref()
            .map(addrs_from))
    }

    /// The identity the record of `ifindex` carries: `None` without a record
    /// or when it carries none.
    pub fn carried_identity(&self, ifindex: u32) -> Result<Option<Id>> {
        Ok(self
            .map
            .lookup(&ifindex.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("look up ifindex {ifindex} in {MAP}"), e))?
            .and_then(|v| Id::new(bytemuck::pod_read_unaligned::<types::ebpfcni_interface>(&v).identity)))
    }

    /// Removes the record of `ifindex`. Returns false when there was none.
    pub fn remove(&self, ifindex: u32) -> Result<bool> {
        match self.map.delete(&ifindex.to_ne_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::bpf(format!("remove ifindex {ifindex} from {MAP}"), e)),
        }
    }

    /// Every record, sorted by ifindex.
    pub fn list(&self) -> Result<Vec<(u32, Vec<Ipv4Addr>)>> {
        let mut records: Vec<_> = super::dump(&self.map, MAP)?
            .into_iter()
            .map(|(k, v)| {
                let ifindex = u32::from_ne_bytes(k.as_slice().try_into().expect("4-byte key"));
                (ifindex, addrs_from(&v))
            })
            .collect();
        records.sort_unstable();
        Ok(records)
    }
}
