//! Typed access to the pinned maps. Binaries never see byte slices: they call
//! [`EndpointMap::upsert`], [`PolicyMap::allow`] and friends.
//!
//! Every map is opened from its pin under a pin directory and checked
//! against the layout compiled into this build before it is used.

mod config;
mod conntrack;
mod counters;
mod drops;
mod endpoints;
mod fragments;
mod identities;
mod interfaces;
mod journal;
mod labels;
mod local;
mod policy;
mod ports;
mod prefixes;
mod rule;
mod rules;

use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::bpffs::PinDirLock;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::loader;
use crate::object::{self, PinnedMap};

pub use config::{ConfigMap, CtTimeouts, EventLevel, RateLimit, TraceLevel};
pub use conntrack::{Connection, ConntrackMap, CtState};
pub use counters::{NotifyCounters, NotifyCounts};
pub use drops::{drop_reason_name, drop_reasons, DropCounters};
pub use endpoints::EndpointMap;
pub use fragments::{Datagram, FragmentMap};
pub use identities::{IdentityAddr, IdentityChange};
pub use interfaces::{InterfaceMap, INTERFACE_ADDRS};
pub use journal::Recovered;
pub use labels::{Isolation, LabelIndex, LabelKind, LabelPolicyMap, LabelRule, ANY_PEER};
pub use local::{LocalDelivery, LocalDeliveryMap};
pub use policy::PolicyMap;
pub use ports::PortPolicyMap;
pub use prefixes::PrefixMap;
pub use rule::{Protocol, RawRule, Rule, Selector, StoredRule};
pub use rules::{PolicyIndex, RuleChange};

/// A map entry as it is stored. `Invalid` is an entry this build never
/// writes (identity 0, an unknown action or level: written by hand or by a
/// broken tool). It is kept raw, so that the tools show it instead of
/// failing on it and can remove or overwrite it; the datapath treats it as
/// absent (the precedence in bpf/include/ebpfcni.h says how).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stored<T, R> {
    Valid(T),
    Invalid { raw: R, problem: &'static str },
}

impl<T, R> Stored<T, R> {
    pub fn valid(self) -> Option<T> {
        match self {
            Stored::Valid(v) => Some(v),
            Stored::Invalid { .. } => None,
        }
    }

    pub fn is_valid(&self) -> bool {
        matches!(self, Stored::Valid(_))
    }
}

/// An identity as endpoint_map and prefix_map store it: 0 is invalid.
pub type StoredIdentity = Stored<Identity, u32>;

pub(super) fn identity_from(bytes: &[u8]) -> StoredIdentity {
    let raw = u32::from_ne_bytes(bytes.try_into().expect("endpoint_map value is 4 bytes"));
    match Identity::new(raw) {
        Some(id) => Stored::Valid(id),
        None => Stored::Invalid {
            raw,
            problem: "identity 0 is not an identity",
        },
    }
}

/// The entry that gives an address its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// The address's own endpoint_map entry.
    Endpoint(StoredIdentity),
    /// The longest prefix_map entry holding it (no valid endpoint entry).
    Prefix(Ipv4Net, StoredIdentity),
}

/// All of the datapath's pinned maps, opened and checked.
#[derive(Debug)]
pub struct Maps {
    pub endpoints: EndpointMap,
    pub policy: PolicyMap,
    pub config: ConfigMap,
    pub drops: DropCounters,
    pub prefixes: PrefixMap,
    pub interfaces: InterfaceMap,
    pub ports: PortPolicyMap,
    pub conntrack: ConntrackMap,
    pub fragments: FragmentMap,
    pub counters: NotifyCounters,
    pub labels: LabelPolicyMap,
    pub local: LocalDeliveryMap,
    event_ring: MapHandle,
    ids: [u32; PinnedMap::ALL.len()],
    pin_dir: PathBuf,
    recovered: Recovered,
}

impl Maps {
    /// Opens the maps pinned under `pin_dir`, creating and pinning those
    /// that are missing (mounting bpffs if needed). Safe to call from many
    /// processes at once: they end with one map of each kind.
    pub fn open_or_create(pin_dir: &Path) -> Result<Self> {
        // A directory that can never hold them is named as such first.
        crate::bpffs::check_pin_dir(pin_dir)?;
        match Self::open(pin_dir) {
            Err(Error::MapsNotPinned { .. } | Error::OlderLayout { .. }) => {
                // Loading the object creates and pins what is missing and
                // migrates older layouts, under the pin directory lock; the
                // program is not kept.
                loader::load(pin_dir, |_| Ok(()))?;
                Self::open(pin_dir)
            }
            other => other,
        }
    }

    /// Opens the maps for a command that only reads, creating nothing:
    /// [`Error::BadPinDir`] for a directory that can never hold them,
    /// [`Error::NothingPinned`] when none is pinned there (so that a
    /// mistyped directory does not look like empty maps), and
    /// [`Error::MapsMissing`] when some are gone (removed by hand). Pins of
    /// an older release are completed as [`Maps::open_or_create`] does
    /// (migrating a changed layout with every entry kept, and adding the
    /// maps that release did not have).
    pub fn open_for_reading(pin_dir: &Path) -> Result<Self> {
        crate::bpffs::check_pin_dir(pin_dir)?;
        if !PinnedMap::ALL.iter().any(|m| m.path(pin_dir).exists()) {
            return Err(Error::NothingPinned {
                pin_dir: pin_dir.to_owned(),
            });
        }
        match Self::open(pin_dir) {
            Err(Error::OlderLayout { .. }) => Self::open_or_create(pin_dir),
            Err(Error::MapsNotPinned { .. }) if crate::migrate::is_upgrade(pin_dir) => {
                Self::open_or_create(pin_dir)
            }
            Err(Error::MapsNotPinned { .. }) => Err(Error::MapsMissing {
                pin_dir: pin_dir.to_owned(),
                missing: PinnedMap::ALL
                    .into_iter()
                    .filter(|m| !m.path(pin_dir).exists())
                    .collect(),
            }),
            other => other,
        }
    }

    /// Opens the maps pinned under `pin_dir` without creating anything.
    /// [`Error::MapsNotPinned`] when any is missing. A change that was
    /// killed part way is undone first ([`Maps::recovered`] says so).
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let specs = object::specs()?;
        let mut handles = Vec::with_capacity(PinnedMap::ALL.len());
        let mut missing = Vec::new();
        for (map, spec) in PinnedMap::ALL.into_iter().zip(&specs) {
            match object::open_pinned(map, pin_dir, spec)? {
                Some(handle) => handles.push(handle),
                None => missing.push(map.path(pin_dir)),
            }
        }
        if !missing.is_empty() {
            return Err(Error::MapsNotPinned { missing });
        }
        let ids = handles.iter().map(map_id).collect::<Result<Vec<u32>>>()?;
        // local_map and the label maps keep flags of config_map: a handle
        // of it each.
        let config_position = PinnedMap::ALL
            .iter()
            .position(|m| *m == PinnedMap::Config)
            .expect("listed");
        let config_of = || -> Result<ConfigMap> {
            let handle = object::open_pinned(PinnedMap::Config, pin_dir, &specs[config_position])?.ok_or(
                Error::MapsNotPinned {
                    missing: vec![PinnedMap::Config.path(pin_dir)],
                },
            )?;
            Ok(ConfigMap::new(handle, pin_dir))
        };
        let mut handles = handles.into_iter();
        let mut next = || handles.next().expect("one handle per pinned map");
        let local;
        Self {
            endpoints: EndpointMap::new(next()),
            policy: PolicyMap::new(next()),
            config: ConfigMap::new(next(), pin_dir),
            drops: DropCounters::new(next()),
            prefixes: PrefixMap::new(next()),
            interfaces: InterfaceMap::new(next()),
            ports: PortPolicyMap::new(next()),
            conntrack: ConntrackMap::new(next()),
            fragments: FragmentMap::new(next()),
            event_ring: next(),
            counters: NotifyCounters::new(next()),
            labels: {
                let isolation = next();
                let rules = next();
                local = next(); // PinnedMap::ALL: local_map, then label_exact_map
                LabelPolicyMap::new(isolation, rules, next(), config_of()?)
            },
            local: LocalDeliveryMap::new(local, config_of()?, pin_dir),
            ids: ids.try_into().expect("one id per pinned map"),
            pin_dir: pin_dir.to_owned(),
            recovered: Recovered::Nothing,
        }
        .recover()
    }

    /// Undoes a change to these maps that was killed part way (see
    /// `journal.rs`), before anything reads or writes them.
    fn recover(mut self) -> Result<Self> {
        self.recovered = journal::recover(&self, Maps::after_policy_change)?;
        Ok(self)
    }

    /// Whether opening the maps undid a change that was killed part way.
    pub fn recovered(&self) -> Recovered {
        self.recovered
    }

    /// Which entry decides the identity of `ip`, as the program finds it:
    /// its endpoint_map entry, else the longest prefix holding it.
    pub fn identity_source(&self, ip: Ipv4Addr) -> Result<Option<IdentitySource>> {
        if let Some(id) = self.endpoints.get(ip)? {
            if id.is_valid() {
                return Ok(Some(IdentitySource::Endpoint(id)));
            }
            // An invalid endpoint entry counts as absent: a prefix decides.
            if let Some((net, prefix_id)) = self.prefixes.longest_match(ip)? {
                return Ok(Some(IdentitySource::Prefix(net, prefix_id)));
            }
            return Ok(Some(IdentitySource::Endpoint(id)));
        }
        Ok(self
            .prefixes
            .longest_match(ip)?
            .map(|(net, id)| IdentitySource::Prefix(net, id)))
    }

    /// The pin directory's lock, which every change of the maps' entries
    /// holds (see [`PinDirLock`]): concurrent changes are made one after
    /// the other, each checked against what the one before left.
    pub fn lock(&self) -> Result<PinDirLock> {
        PinDirLock::acquire(&self.pin_dir)
    }

    /// The directory the maps are pinned in, as it was given.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Kernel ids of the maps, in [`PinnedMap::ALL`] order.
    pub fn ids(&self) -> Result<[u32; PinnedMap::ALL.len()]> {
        Ok(self.ids)
    }

    /// The ring buffer of flow events, for a reader ([`crate::events`]).
    pub fn event_ring(&self) -> &MapHandle {
        &self.event_ring
    }
}

fn map_id(map: &MapHandle) -> Result<u32> {
    Ok(map
        .info()
        .map_err(|e| Error::bpf(format!("read info of {}", map.name().to_string_lossy()), e))?
        .info
        .id)
}

/// Maps a failed insert to [`Error::MapFull`] when the map had no room.
/// `needed` is the number of entries the map would have held.
/// [`Error::MapFull`] when `needed` entries would not fit: checked before
/// anything is written.
fn check_room(map: PinnedMap, capacity: u32, needed: usize) -> Result<()> {
    if needed > capacity as usize {
        return Err(Error::MapFull {
            map,
            capacity,
            needed,
        });
    }
    Ok(())
}

fn insert_error(map: PinnedMap, capacity: u32, needed: usize, e: libbpf_rs::Error) -> Error {
    if e.kind() == libbpf_rs::ErrorKind::TooBig {
        Error::MapFull {
            map,
            capacity,
            needed,
        }
    } else {
        Error::bpf(format!("update {map}"), e)
    }
}

/// How many entries a batch lookup asks the kernel for at once.
const BATCH: usize = 4096;

/// Reads a whole hash map with batched lookups (BPF_MAP_LOOKUP_BATCH).
///
/// Written here rather than using libbpf-rs's `lookup_batch` iterator: that
/// iterator (0.27) takes a short batch for the last one, but the kernel ends
/// hash batches at bucket boundaries, so it stops early on large maps (it
/// listed 8,190 of 16,384 entries). Only ENOENT means the walk is complete.
/// Every entry of an LPM trie, typed (tries have no batch lookup: the keys
/// are walked).
fn lpm_entries<K: bytemuck::Pod, V: bytemuck::Pod>(map: &MapHandle, name: PinnedMap) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for k in map.keys() {
        if let Some(v) = map
            .lookup(&k, MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("read {name}"), e))?
        {
            out.push((bytemuck::pod_read_unaligned(&k), bytemuck::pod_read_unaligned(&v)));
        }
    }
    Ok(out)
}

/// Moves every entry of an expiring table `by` closer to its expiry, as if
/// that much time had passed (for tests of expiry); `expires` names the
/// entry's expiry field.
fn age_entries<V: bytemuck::Pod>(
    map: &MapHandle,
    name: PinnedMap,
    by: std::time::Duration,
    expires: fn(&mut V) -> &mut u64,
) -> Result<()> {
    for (k, mut v) in dump(map, name)? {
        let mut entry: V = bytemuck::pod_read_unaligned(&v);
        let at = expires(&mut entry);
        *at = at.saturating_sub(by.as_nanos() as u64);
        v.copy_from_slice(bytemuck::bytes_of(&entry));
        map.update(&k, &v, MapFlags::EXIST)
            .map_err(|e| Error::bpf(format!("write {name}"), e))?;
    }
    Ok(())
}

fn dump(map: &MapHandle, name: PinnedMap) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let (key_size, value_size) = (map.key_size() as usize, map.value_size() as usize);
    let mut keys = vec![0u8; key_size * BATCH];
    let mut values = vec![0u8; value_size * BATCH];
    // The batch token is opaque (a u32 bucket index for hash maps).
    let mut token = [0u8; 8];
    let mut next_token = [0u8; 8];
    let mut first = true;
    let mut entries = Vec::new();
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    loop {
        let mut count = BATCH as u32;
        let in_batch = if first {
            std::ptr::null_mut()
        } else {
            token.as_mut_ptr().cast()
        };
        // SAFETY: the buffers hold BATCH keys and values and a token larger
        // than the kernel's; count says how many entries fit.
        let rc = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                in_batch,
                next_token.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let done = rc == -(nix::errno::Errno::ENOENT as i32);
        if rc != 0 && !done {
            return Err(Error::bpf(
                format!("read {name}"),
                libbpf_rs::Error::from_raw_os_error(-rc),
            ));
        }
        let count = count as usize;
        entries.extend(
            keys.chunks_exact(key_size)
                .zip(values.chunks_exact(value_size))
                .take(count)
                .map(|(k, v)| (k.to_vec(), v.to_vec())),
        );
        if done {
            return Ok(entries);
        }
        token = next_token;
        first = false;
    }
}

/// Removes every entry of an LPM trie, key by key (tries have no batch
/// operations). Returns how many there were.
fn clear_each(map: &MapHandle, name: PinnedMap) -> Result<usize> {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    for k in &keys {
        match map.delete(k) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::bpf(format!("clear {name}"), e)),
        }
    }
    Ok(keys.len())
}

/// Removes every entry of a hash map. Returns how many there were.
fn clear(map: &MapHandle, name: PinnedMap) -> Result<usize> {
    let entries = dump(map, name)?;
    if entries.is_empty() {
        return Ok(0);
    }
    let keys: Vec<u8> = entries.iter().flat_map(|(k, _)| k.iter().copied()).collect();
    map.delete_batch(&keys, entries.len() as u32, MapFlags::ANY, MapFlags::ANY)
        .map_err(|e| Error::bpf(format!("clear {name}"), e))?;
    Ok(entries.len())
}
