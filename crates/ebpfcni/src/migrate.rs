//! Pins of an older release's layout ([`PinnedMap::older_layouts`]) brought to
//! this build's layout with every entry kept. The pinned maps are the
//! operator's state: a changed layout is migrated, never dropped or replaced.
//!
//! In two steps, both under the pin directory's lock (see
//! [`crate::loader::load`]):
//! 1. [`set_aside`] renames each older-layout pin to `<name>_old`, so that
//!    loading the object creates the map afresh in the new layout (with
//!    its BTF, so `bpftool map dump` keeps its field names);
//! 2. [`finish`] copies every entry of the set-aside map into the new one
//!    (values zero-extended over the new map's fresh value, so settings the
//!    old layout lacked keep their defaults; a hash map's entries are
//!    zero-extended) and removes the old pin.
//!
//! A migration interrupted between the two steps is finished by the next
//! load: a `<name>_old` pin left behind is copied then. Programs already
//! attached keep the old map until they are re-attached (CNI ADD).

use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use crate::error::{Error, Result};
use crate::object::{MapSpec, PinnedMap};

/// Where an older-layout pin waits to be copied.
fn set_aside_path(map: PinnedMap, pin_dir: &Path) -> PathBuf {
    // bpffs refuses '.' in names.
    pin_dir.join(format!("{}_old", map.name()))
}

/// Whether the maps pinned under `pin_dir` are an older release's set that
/// loading completes: a pin of an older layout, or one set aside by an
/// interrupted migration.
pub(crate) fn is_upgrade(pin_dir: &Path) -> bool {
    PinnedMap::ALL.into_iter().any(|map| {
        set_aside_path(map, pin_dir).exists()
            || (!map.older_layouts().is_empty()
                && MapHandle::from_pinned_path(map.path(pin_dir))
                    .is_ok_and(|pinned| map.older_layouts().contains(&MapSpec::of(&pinned))))
    })
}

/// Renames every pin of an older layout out of the way; returns the maps
/// whose entries are waiting in a set-aside pin (this call's, and any left
/// by an interrupted migration).
pub(crate) fn set_aside(pin_dir: &Path) -> Result<Vec<PinnedMap>> {
    let mut waiting = Vec::new();
    for map in PinnedMap::ALL {
        let (path, aside) = (map.path(pin_dir), set_aside_path(map, pin_dir));
        if aside.exists() {
            waiting.push(map);
            continue;
        }
        if map.older_layouts().is_empty() || !path.exists() {
            continue;
        }
        let pinned = MapHandle::from_pinned_path(&path)
            .map_err(|e| Error::bpf(format!("open pinned map {}", path.display()), e))?;
        if map.older_layouts().contains(&MapSpec::of(&pinned)) {
            std::fs::rename(&path, &aside)
                .map_err(|e| Error::io(format!("set {} aside for its migration", path.display()), e))?;
            waiting.push(map);
        }
    }
    Ok(waiting)
}

/// Copies the set-aside entries of `maps` into the maps now pinned in their
/// place, then removes the set-aside pins.
pub(crate) fn finish(pin_dir: &Path, maps: &[PinnedMap]) -> Result<()> {
    for &map in maps {
        let aside = set_aside_path(map, pin_dir);
        let old = MapHandle::from_pinned_path(&aside)
            .map_err(|e| Error::bpf(format!("open pinned map {}", aside.display()), e))?;
        let new = MapHandle::from_pinned_path(map.path(pin_dir))
            .map_err(|e| Error::bpf(format!("open pinned map {}", map.path(pin_dir).display()), e))?;
        let copied = match old.map_type() {
            MapType::Hash => copy_hash(&old, &new),
            _ => copy_array(&old, &new),
        };
        copied.map_err(|e| match e {
            Error::Bpf { context, source } => Error::Bpf {
                context: format!("migrate {map}: {context}"),
                source,
            },
            other => other,
        })?;
        std::fs::remove_file(&aside).map_err(|e| Error::io(format!("remove {}", aside.display()), e))?;
    }
    Ok(())
}

/// Copies every slot of array `old` into the same slot of array `new`; each
/// value is laid over the new slot's current value (its defaults).
fn copy_array(old: &MapHandle, new: &MapHandle) -> Result<()> {
    let per_cpu = old.map_type() == MapType::PercpuArray;
    for index in 0..old.max_entries().min(new.max_entries()) {
        let key = index.to_ne_bytes();
        let read = |m: &MapHandle| -> Result<Vec<Vec<u8>>> {
            let values = if per_cpu {
                m.lookup_percpu(&key, MapFlags::ANY)
            } else {
                m.lookup(&key, MapFlags::ANY).map(|v| v.map(|v| vec![v]))
            };
            values
                .map_err(|e| Error::bpf(format!("read slot {index}"), e))
                .map(Option::unwrap_or_default)
        };
        let (from, mut into) = (read(old)?, read(new)?);
        for (into, from) in into.iter_mut().zip(&from) {
            let n = from.len().min(into.len());
            into[..n].copy_from_slice(&from[..n]);
        }
        let written = if per_cpu {
            new.update_percpu(&key, &into, MapFlags::ANY)
        } else {
            new.update(&key, &into[0], MapFlags::ANY)
        };
        written.map_err(|e| Error::bpf(format!("write slot {index}"), e))?;
    }
    Ok(())
}

/// Copies every entry of hash map `old` into `new`, each value zero-extended
/// to the new value size (a field the old layout lacked is 0: its "none").
fn copy_hash(old: &MapHandle, new: &MapHandle) -> Result<()> {
    let size = new.value_size() as usize;
    for key in old.keys() {
        let Some(value) = old
            .lookup(&key, MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("read key {key:02x?}"), e))?
        else {
            continue; // removed while we walked
        };
        let mut into = vec![0u8; size];
        let n = value.len().min(size);
        into[..n].copy_from_slice(&value[..n]);
        new.update(&key, &into, MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("write key {key:02x?}"), e))?;
    }
    Ok(())
}
