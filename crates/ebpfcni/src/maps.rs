//! Typed access to the pinned maps. Binaries never see byte slices: they call
//! `EndpointMap::upsert`, `PolicyMap::allow` and friends.
//!
//! Every map is opened from its pin under a pin directory and checked
//! against the layout compiled into this build before it is used.

use std::collections::HashSet;
use std::fmt;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use crate::error::{Error, Result};
use crate::identity::{Identity, PolicyRule};
use crate::program::{self, Program};
use crate::skel::types;

// The key layout is guarded in C by _Static_assert; guard the Rust side too.
const _: () = assert!(size_of::<types::policy_key>() == 8);
const _: () = assert!(size_of::<types::ebpfcni_policy_action>() == 1);
const _: () = assert!(size_of::<types::ebpfcni_config>() == 4);

/// Plain old data shared with the BPF program.
///
/// # Safety
/// Implementors are `#[repr(C)]`, have no padding, and every bit pattern of
/// their size is a valid value.
unsafe trait Pod: Copy {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: per the trait contract, all size_of::<Self>() bytes are initialised.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>()) }
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), size_of::<Self>(), "value size");
        // SAFETY: length checked; any bit pattern is valid per the contract.
        unsafe { bytes.as_ptr().cast::<Self>().read_unaligned() }
    }
}
// SAFETY: two u32 fields, size asserted above.
unsafe impl Pod for types::policy_key {}
// SAFETY: one u32 newtype field.
unsafe impl Pod for types::ebpfcni_config {}

/// File names of the pins under a pin directory; also the maps' names.
pub const ENDPOINT_MAP: &str = "endpoint_map";
pub const POLICY_MAP: &str = "policy_map";
pub const CONFIG_MAP: &str = "config_map";
pub const DROP_COUNTERS: &str = "drop_counters";
/// Every map the program shares through the pin directory.
pub const PINNED_MAPS: [&str; 4] = [ENDPOINT_MAP, POLICY_MAP, CONFIG_MAP, DROP_COUNTERS];

/// The layout of a map: what must agree between a pin and this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapSpec {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl MapSpec {
    pub(crate) fn of(map: &impl MapCore) -> Self {
        Self {
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
        }
    }

    /// The layout a map of the (not yet loaded) object will be created with.
    pub(crate) fn of_open(map: &libbpf_rs::OpenMap<'_>) -> Self {
        Self {
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
        }
    }

    /// Describes how `self` (a pinned map) differs from `expected`.
    fn mismatch(&self, expected: &Self) -> Option<String> {
        let mut diffs = Vec::new();
        if self.map_type != expected.map_type {
            diffs.push(format!(
                "type is {:?}, expected {:?}",
                self.map_type, expected.map_type
            ));
        }
        for (what, found, want) in [
            ("key size", self.key_size, expected.key_size),
            ("value size", self.value_size, expected.value_size),
            ("capacity", self.max_entries, expected.max_entries),
        ] {
            if found != want {
                diffs.push(format!("{what} is {found}, expected {want}"));
            }
        }
        (!diffs.is_empty()).then(|| diffs.join(", "))
    }

    /// Errors unless the pin at `path` has this layout.
    pub(crate) fn check_pinned(&self, path: &Path, pinned: &MapHandle) -> Result<()> {
        match MapSpec::of(pinned).mismatch(self) {
            None => Ok(()),
            Some(mismatch) => Err(Error::IncompatibleMap {
                path: path.to_owned(),
                mismatch,
            }),
        }
    }
}

/// Opens the pin at `path` and checks it against `spec`. `Ok(None)` when
/// nothing is pinned there.
pub(crate) fn open_pinned(path: &Path, spec: &MapSpec) -> Result<Option<MapHandle>> {
    if !path.exists() {
        return Ok(None);
    }
    let map = MapHandle::from_pinned_path(path)
        .map_err(|e| Error::bpf(format!("open pinned map {}", path.display()), e))?;
    spec.check_pinned(path, &map)?;
    Ok(Some(map))
}

/// All of the datapath's pinned maps, opened and checked.
#[derive(Debug)]
pub struct Maps {
    pub endpoints: EndpointMap,
    pub policy: PolicyMap,
    pub config: ConfigMap,
    pub drops: DropCounters,
}

impl Maps {
    /// Opens the maps pinned under `pin_dir`, creating and pinning those
    /// that are missing (mounting bpffs if needed). Safe to call from many
    /// processes at once: they end with one map of each kind.
    pub fn open_or_create(pin_dir: &Path) -> Result<Self> {
        match Self::open(pin_dir) {
            Err(Error::MapsNotPinned { .. }) => {
                // Loading the program creates and pins what is missing,
                // under the pin directory lock.
                drop(Program::load(pin_dir)?);
                Self::open(pin_dir)
            }
            other => other,
        }
    }

    /// Opens the maps pinned under `pin_dir` without creating anything.
    /// [`Error::MapsNotPinned`] when any is missing.
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let specs = program::map_specs()?;
        let mut handles = Vec::with_capacity(PINNED_MAPS.len());
        let mut missing = Vec::new();
        for (name, spec) in PINNED_MAPS.iter().zip(&specs) {
            let path = pin_dir.join(name);
            match open_pinned(&path, spec)? {
                Some(map) => handles.push(map),
                None => missing.push(path),
            }
        }
        if !missing.is_empty() {
            return Err(Error::MapsNotPinned { missing });
        }
        let mut handles = handles.into_iter();
        let mut next = || handles.next().expect("one handle per pinned map");
        Ok(Self {
            endpoints: EndpointMap { map: next() },
            policy: PolicyMap { map: next() },
            config: ConfigMap { map: next() },
            drops: DropCounters { map: next() },
        })
    }

    /// Kernel ids of the maps, in [`PINNED_MAPS`] order.
    pub fn ids(&self) -> Result<[u32; 4]> {
        Ok([
            map_id(&self.endpoints.map)?,
            map_id(&self.policy.map)?,
            map_id(&self.config.map)?,
            map_id(&self.drops.map)?,
        ])
    }

    /// Paths of the pins under `pin_dir`.
    pub fn pin_paths(pin_dir: &Path) -> Vec<PathBuf> {
        PINNED_MAPS.iter().map(|name| pin_dir.join(name)).collect()
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
fn insert_error(map: &'static str, capacity: u32, needed: usize, e: libbpf_rs::Error) -> Error {
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
/// hash batches at bucket boundaries, so it stops early on large maps. Only
/// ENOENT means the walk is complete.
fn dump(map: &MapHandle, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
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
        let done = rc == -libc_enoent();
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

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

/// endpoint_map: IPv4 address (host byte order) -> identity.
#[derive(Debug)]
pub struct EndpointMap {
    map: MapHandle,
}

fn endpoint_key(ip: Ipv4Addr) -> [u8; 4] {
    u32::from(ip).to_ne_bytes()
}

fn identity_from(bytes: &[u8]) -> Result<Identity> {
    let raw = u32::from_ne_bytes(bytes.try_into().expect("endpoint_map value is 4 bytes"));
    Identity::new(raw).ok_or_else(|| Error::CorruptEntry {
        map: ENDPOINT_MAP,
        detail: "identity 0".into(),
    })
}

impl EndpointMap {
    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Sets the identity of `ip`. Returns the identity it replaced.
    pub fn upsert(&self, ip: Ipv4Addr, id: Identity) -> Result<Option<Identity>> {
        let previous = self.get(ip)?;
        self.map
            .update(&endpoint_key(ip), &id.get().to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| insert_error(ENDPOINT_MAP, self.capacity(), 1, e))?;
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
        if needed > self.capacity() as usize {
            return Err(Error::MapFull {
                map: ENDPOINT_MAP,
                capacity: self.capacity(),
                needed,
            });
        }
        let keys: Vec<u8> = entries.iter().flat_map(|(ip, _)| endpoint_key(*ip)).collect();
        let values: Vec<u8> = entries
            .iter()
            .flat_map(|(_, id)| id.get().to_ne_bytes())
            .collect();
        self.map
            .update_batch(&keys, &values, entries.len() as u32, MapFlags::ANY, MapFlags::ANY)
            .map_err(|e| insert_error(ENDPOINT_MAP, self.capacity(), needed, e))
    }

    /// Removes `ip`. Returns the identity it had, `None` when it was absent.
    pub fn delete(&self, ip: Ipv4Addr) -> Result<Option<Identity>> {
        match self.map.lookup_and_delete(&endpoint_key(ip)) {
            Ok(previous) => previous.as_deref().map(identity_from).transpose(),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::bpf(format!("delete {ip} from {ENDPOINT_MAP}"), e)),
        }
    }

    pub fn get(&self, ip: Ipv4Addr) -> Result<Option<Identity>> {
        self.map
            .lookup(&endpoint_key(ip), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("look up {ip} in {ENDPOINT_MAP}"), e))?
            .as_deref()
            .map(identity_from)
            .transpose()
    }

    /// Every endpoint, sorted by address.
    pub fn list(&self) -> Result<Vec<(Ipv4Addr, Identity)>> {
        let mut entries = dump(&self.map, ENDPOINT_MAP)?
            .into_iter()
            .map(|(k, v)| {
                let ip = Ipv4Addr::from(u32::from_ne_bytes(k.as_slice().try_into().expect("4-byte key")));
                Ok((ip, identity_from(&v)?))
            })
            .collect::<Result<Vec<_>>>()?;
        entries.sort_unstable();
        Ok(entries)
    }

    /// Removes every endpoint. Returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        clear(&self.map, ENDPOINT_MAP)
    }
}

fn clear(map: &MapHandle, name: &str) -> Result<usize> {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    if keys.is_empty() {
        return Ok(0);
    }
    let flat: Vec<u8> = keys.concat();
    map.delete_batch(&flat, keys.len() as u32, MapFlags::ANY, MapFlags::ANY)
        .map_err(|e| Error::bpf(format!("clear {name}"), e))?;
    Ok(keys.len())
}

/// policy_map: (source identity, destination identity) -> allow.
#[derive(Debug)]
pub struct PolicyMap {
    map: MapHandle,
}

fn policy_key(rule: PolicyRule) -> types::policy_key {
    types::policy_key {
        src_id: rule.src.get(),
        dst_id: rule.dst.get(),
    }
}

const ALLOW: [u8; 1] = [types::ebpfcni_policy_action::EBPFCNI_POLICY_ALLOW.0];

impl PolicyMap {
    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Allows `rule`. Returns false when it was already allowed.
    pub fn allow(&self, rule: PolicyRule) -> Result<bool> {
        Ok(self.allow_all(&[rule])? == 1)
    }

    /// Allows every rule, or none of them when the map lacks room (or the
    /// kernel refuses part of the batch: what was added is taken back).
    /// Returns how many were not already allowed.
    pub fn allow_all(&self, rules: &[PolicyRule]) -> Result<usize> {
        let mut new: Vec<PolicyRule> = Vec::with_capacity(rules.len());
        let mut seen = HashSet::with_capacity(rules.len());
        for &rule in rules {
            if seen.insert(rule) && !self.contains(rule)? {
                new.push(rule);
            }
        }
        if new.is_empty() {
            return Ok(0);
        }
        let needed = self.len()? + new.len();
        if needed > self.capacity() as usize {
            return Err(Error::MapFull {
                map: POLICY_MAP,
                capacity: self.capacity(),
                needed,
            });
        }
        let keys: Vec<u8> = new
            .iter()
            .flat_map(|r| policy_key(*r).as_bytes().to_vec())
            .collect();
        let values: Vec<u8> = ALLOW.repeat(new.len());
        if let Err(e) = self
            .map
            .update_batch(&keys, &values, new.len() as u32, MapFlags::ANY, MapFlags::ANY)
        {
            // A concurrent writer filled the map: take back our part.
            let _ = self
                .map
                .delete_batch(&keys, new.len() as u32, MapFlags::ANY, MapFlags::ANY);
            return Err(insert_error(POLICY_MAP, self.capacity(), needed, e));
        }
        Ok(new.len())
    }

    /// Removes `rule`. Returns false when it was not there.
    pub fn revoke(&self, rule: PolicyRule) -> Result<bool> {
        match self.map.delete(policy_key(rule).as_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::bpf(format!("remove {rule} from {POLICY_MAP}"), e)),
        }
    }

    pub fn contains(&self, rule: PolicyRule) -> Result<bool> {
        let value = self
            .map
            .lookup(policy_key(rule).as_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("look up {rule} in {POLICY_MAP}"), e))?;
        Ok(value.as_deref() == Some(&ALLOW[..]))
    }

    /// Number of rules (counted by walking the map).
    pub fn len(&self) -> Result<usize> {
        Ok(dump(&self.map, POLICY_MAP)?.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.map.keys().next().is_none())
    }

    /// Every allow rule, sorted by (source, destination).
    pub fn list(&self) -> Result<Vec<PolicyRule>> {
        let mut rules = dump(&self.map, POLICY_MAP)?
            .into_iter()
            .filter(|(_, v)| v.as_slice() == ALLOW)
            .map(|(k, _)| {
                let key = types::policy_key::from_bytes(&k);
                match (Identity::new(key.src_id), Identity::new(key.dst_id)) {
                    (Some(src), Some(dst)) => Ok(PolicyRule::new(src, dst)),
                    _ => Err(Error::CorruptEntry {
                        map: POLICY_MAP,
                        detail: format!("identity 0 in rule {} -> {}", key.src_id, key.dst_id),
                    }),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        rules.sort_unstable();
        Ok(rules)
    }

    /// Removes every rule. Returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        clear(&self.map, POLICY_MAP)
    }
}

/// How much the program writes to the trace pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceLevel {
    /// Nothing.
    Off,
    /// One line per dropped packet (the default).
    Drops,
    /// One line per IPv4 packet; about 0.4 us each, for debugging only.
    All,
}

impl TraceLevel {
    pub const ALL_LEVELS: [TraceLevel; 3] = [TraceLevel::Off, TraceLevel::Drops, TraceLevel::All];

    fn raw(self) -> types::ebpfcni_trace_level {
        match self {
            TraceLevel::Off => types::ebpfcni_trace_level::EBPFCNI_TRACE_OFF,
            TraceLevel::Drops => types::ebpfcni_trace_level::EBPFCNI_TRACE_DROPS,
            TraceLevel::All => types::ebpfcni_trace_level::EBPFCNI_TRACE_ALL,
        }
    }

    fn from_raw(raw: types::ebpfcni_trace_level) -> Option<Self> {
        Self::ALL_LEVELS.into_iter().find(|l| l.raw() == raw)
    }

    pub fn name(self) -> &'static str {
        match self {
            TraceLevel::Off => "off",
            TraceLevel::Drops => "drops",
            TraceLevel::All => "all",
        }
    }
}

impl fmt::Display for TraceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TraceLevel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL_LEVELS
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| format!("invalid trace level {s:?}: expected off, drops or all"))
    }
}

/// config_map: the run-time settings the program reads on every packet.
#[derive(Debug)]
pub struct ConfigMap {
    map: MapHandle,
}

const CONFIG_KEY: [u8; 4] = 0u32.to_ne_bytes();

impl ConfigMap {
    pub(crate) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    pub fn trace_level(&self) -> Result<TraceLevel> {
        let value = self
            .map
            .lookup(&CONFIG_KEY, MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("read {CONFIG_MAP}"), e))?
            .expect("an array map always has key 0");
        let config = types::ebpfcni_config::from_bytes(&value);
        TraceLevel::from_raw(config.trace_level).ok_or_else(|| Error::CorruptEntry {
            map: CONFIG_MAP,
            detail: format!("trace level {}", config.trace_level.0),
        })
    }

    /// Takes effect on the next packet; no reload.
    pub fn set_trace_level(&self, level: TraceLevel) -> Result<()> {
        let config = types::ebpfcni_config {
            trace_level: level.raw(),
        };
        self.map
            .update(&CONFIG_KEY, config.as_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("write {CONFIG_MAP}"), e))
    }
}

/// Names of the drop reasons, as the program prints them in traces.
/// `None` for values that are not a drop reason.
pub fn drop_reason_name(reason: types::ebpfcni_drop_reason) -> Option<&'static str> {
    use types::ebpfcni_drop_reason as R;
    Some(match reason {
        R::EBPFCNI_DROP_MALFORMED => "malformed",
        R::EBPFCNI_DROP_UNKNOWN_SRC => "unknown-source",
        R::EBPFCNI_DROP_UNKNOWN_DST => "unknown-destination",
        R::EBPFCNI_DROP_NO_POLICY => "no-policy",
        _ => return None,
    })
}

/// drop_counters: packets dropped per reason, summed over CPUs.
#[derive(Debug)]
pub struct DropCounters {
    map: MapHandle,
}

impl DropCounters {
    /// Packets dropped for `reason` since the map was created.
    pub fn get(&self, reason: types::ebpfcni_drop_reason) -> Result<u64> {
        let per_cpu = self
            .map
            .lookup_percpu(&reason.0.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("read {DROP_COUNTERS}"), e))?
            .unwrap_or_default();
        Ok(per_cpu
            .iter()
            .map(|v| u64::from_ne_bytes(v[..8].try_into().expect("8-byte counter")))
            .sum())
    }

    /// (reason name, packets) for every reason.
    pub fn all(&self) -> Result<Vec<(&'static str, u64)>> {
        (1..types::ebpfcni_drop_reason::EBPFCNI_DROP_REASON_MAX.0)
            .map(types::ebpfcni_drop_reason)
            .map(|r| Ok((drop_reason_name(r).unwrap_or("unnamed"), self.get(r)?)))
            .collect()
    }
}
