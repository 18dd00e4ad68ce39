//! The embedded BPF object and what it shares through a pin directory: the one
//! table of pinned maps ([`PinnedMap`]), their layouts as compiled into this
//! build ([`MapSpec`]), and loading the object against a pin directory
//! ([`load`]), which reuses the pins that exist (after checking their layout)
//! and creates the ones that are missing.
//!
//! [`crate::program`] (which keeps the loaded program) and [`crate::maps`]
//! (which only needs the pins to exist) both come here; this module imports
//! neither.

use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::OnceLock;

use libbpf_rs::skel::SkelBuilder;
use libbpf_rs::{MapCore, MapHandle, MapType, OpenMapMut};

use crate::bpffs;
use crate::error::{Error, Result};
use crate::skel::{types, EbpfcniSkelBuilder, OpenEbpfcniMaps, OpenEbpfcniSkel};

pub use crate::pinned::PinnedMap;

/// What of a pinned map depends on the compiled object: its capacity, its
/// older layouts, its place in the opened object.
impl PinnedMap {
    /// How many entries the map holds in this build (the capacities are
    /// written once, in bpf/include/ebpfcni.h).
    pub fn capacity(self) -> u32 {
        let specs = specs().expect("the embedded BPF object parses");
        let index = PinnedMap::ALL
            .iter()
            .position(|m| *m == self)
            .expect("listed in ALL");
        specs[index].max_entries
    }

    /// The layouts this map had in older releases, which [`crate::migrate`]
    /// brings to this build's layout with every entry kept. (endpoint_map
    /// and policy_map never changed.)
    pub(crate) fn older_layouts(self) -> &'static [MapSpec] {
        match self {
            // First release: the trace level alone; then 64 bytes (up to
            // local_redirect, before policy_gen).
            PinnedMap::Config => &[
                MapSpec {
                    map_type: MapType::Array,
                    key_size: 4,
                    value_size: 4,
                    max_entries: 1,
                },
                MapSpec {
                    map_type: MapType::Array,
                    key_size: 4,
                    value_size: 64,
                    max_entries: 1,
                },
            ],
            // First release: one slot per drop reason it had (4 + 1).
            PinnedMap::DropCounters => &[MapSpec {
                map_type: MapType::PercpuArray,
                key_size: 4,
                value_size: 8,
                max_entries: 5,
            }],
            // Before the record carried the agent's identity: the four
            // addresses alone.
            PinnedMap::Interfaces => &[MapSpec {
                map_type: MapType::Hash,
                key_size: 4,
                value_size: 16,
                max_entries: types::ebpfcni_capacity::EBPFCNI_INTERFACE_MAP_CAPACITY.0,
            }],
            _ => &[],
        }
    }

    /// This map in an opened (not yet loaded) object.
    pub(crate) fn in_object<'a, 'obj>(self, maps: &'a mut OpenEbpfcniMaps<'obj>) -> &'a mut OpenMapMut<'obj> {
        match self {
            PinnedMap::Endpoints => &mut maps.endpoint_map,
            PinnedMap::Policy => &mut maps.policy_map,
            PinnedMap::Config => &mut maps.config_map,
            PinnedMap::DropCounters => &mut maps.drop_counters,
            PinnedMap::Prefixes => &mut maps.prefix_map,
            PinnedMap::Interfaces => &mut maps.interface_map,
            PinnedMap::PortPolicy => &mut maps.port_policy_map,
            PinnedMap::Conntrack => &mut maps.ct_map,
            PinnedMap::Fragments => &mut maps.frag_map,
            PinnedMap::EventRing => &mut maps.event_ring,
            PinnedMap::NotifyState => &mut maps.notify_state,
            PinnedMap::LabelIsolation => &mut maps.label_isolation_map,
            PinnedMap::LabelRules => &mut maps.label_rule_map,
            PinnedMap::Local => &mut maps.local_map,
            PinnedMap::LabelExact => &mut maps.label_exact_map,
        }
    }
}

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

    /// The layout a map of the opened (not yet loaded) object will be created with.
    pub(crate) fn of_open(map: &OpenMapMut<'_>) -> Self {
        Self {
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
        }
    }

    /// Describes how `self` (a pinned map) differs from `expected`.
    pub(crate) fn mismatch(&self, expected: &Self) -> Option<String> {
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
}

/// Opens the embedded object (parses it; loads nothing into the kernel).
pub(crate) fn open_object(storage: &mut MaybeUninit<libbpf_rs::OpenObject>) -> Result<OpenEbpfcniSkel<'_>> {
    EbpfcniSkelBuilder::default()
        .open(storage)
        .map_err(|e| Error::bpf("open the embedded BPF object", e))
}

/// The layouts of the pinned maps as compiled into this build, in
/// [`PinnedMap::ALL`] order. Read from the embedded object once per
/// process: opening it (BTF and all) costs milliseconds of CPU.
pub(crate) fn specs() -> Result<[MapSpec; PinnedMap::ALL.len()]> {
    static SPECS: OnceLock<[MapSpec; PinnedMap::ALL.len()]> = OnceLock::new();
    if let Some(specs) = SPECS.get() {
        return Ok(*specs);
    }
    let mut storage = MaybeUninit::uninit();
    let mut open = open_object(&mut storage)?;
    let specs = PinnedMap::ALL.map(|map| MapSpec::of_open(map.in_object(&mut open.maps)));
    Ok(*SPECS.get_or_init(|| specs))
}

/// Opens `map`'s pin under `pin_dir` and checks it against `spec`.
/// `Ok(None)` when nothing is pinned there. A pin of an older release's
/// layout is [`Error::OlderLayout`] (loading migrates it); any other
/// incompatible pin is an error and is left as it is: replacing it would
/// lose the operator's entries.
pub(crate) fn open_pinned(map: PinnedMap, pin_dir: &Path, spec: &MapSpec) -> Result<Option<MapHandle>> {
    let path = &map.path(pin_dir);
    let found = match path.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("look at {}", path.display()), e)),
        Ok(meta) if meta.is_dir() => Some("a directory"),
        Ok(meta) if meta.file_type().is_symlink() => Some("a symbolic link"),
        Ok(_) if !bpffs::is_bpffs(path.parent().unwrap_or(path))? => Some("a file outside bpffs"),
        Ok(_) => None,
    };
    if let Some(found) = found {
        return Err(Error::NotAPin {
            path: path.to_owned(),
            found,
        });
    }
    let handle = MapHandle::from_pinned_path(path)
        .map_err(|e| Error::bpf(format!("open pinned map {}", path.display()), e))?;
    let found = MapSpec::of(&handle);
    match found.mismatch(spec) {
        None => Ok(Some(handle)),
        Some(_) if map.older_layouts().contains(&found) => Err(Error::OlderLayout {
            path: path.to_owned(),
        }),
        Some(mismatch) => Err(Error::IncompatibleMap {
            path: path.to_owned(),
            mismatch,
        }),
    }
}

/// The drop reasons' names, indexed by value, as the program keeps them in
/// its .rodata (the one list is in ebpfcni.h). Read from the embedded object.
pub(crate) fn drop_reason_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut storage = MaybeUninit::uninit();
        let open = open_object(&mut storage).expect("the embedded BPF object parses");
        let rodata = open.maps.rodata_data.as_deref().expect("the object has .rodata");
        rodata
            .ebpfcni_drop_reason_names
            .iter()
            .map(|name| {
                let bytes: Vec<u8> = name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
                String::from_utf8(bytes).expect("drop reason names are ASCII")
            })
            .collect()
    })
}

/// The only key of the config map (a one-entry array).
pub(crate) const CONFIG_KEY: [u8; 4] = 0u32.to_ne_bytes();

/// The settings of a freshly created config map: trace and event level
/// "drops"; everything else 0, which the program reads as its default.
pub(crate) fn default_config() -> types::ebpfcni_config {
    types::ebpfcni_config {
        trace_level: types::ebpfcni_trace_level::EBPFCNI_TRACE_DROPS,
        event_level: types::ebpfcni_event_level::EBPFCNI_EVENTS_DROPS,
        policy_gen: 1,
        ..bytemuck::Zeroable::zeroed()
    }
}
