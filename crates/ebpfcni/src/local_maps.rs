//! Maps only userspace reads, pinned beside the program's: which network
//! namespace a pin directory serves ([`crate::netns`]) and which attachment
//! each interface record belongs to ([`crate::AttachmentMap`]). The program
//! never sees them, so they are not in the BPF object: they are created
//! here on first use (and by the loader, with the others). Pin directories
//! of earlier releases lack them until then; nothing else changes.

use std::path::{Path, PathBuf};

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapHandle, MapType};

use crate::bpffs::{self, PinDirLock};
use crate::error::{Error, Result};
use crate::object::{MapSpec, PinnedMap};

/// A map pinned beside the program's that only userspace uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalMap {
    /// The one network namespace the pin directory serves.
    NetnsBinding,
    /// Host veth ifindex -> the CNI attachment (network, container id,
    /// interface) whose pod addresses interface_map records.
    Attachments,
}

impl LocalMap {
    pub const ALL: [LocalMap; 2] = [LocalMap::NetnsBinding, LocalMap::Attachments];

    /// The pin's file name under a pin directory, also the map's name in
    /// the kernel.
    pub const fn name(self) -> &'static str {
        match self {
            LocalMap::NetnsBinding => "netns_binding",
            LocalMap::Attachments => "attachment_map",
        }
    }

    /// Where this map is pinned under `pin_dir`.
    pub fn path(self, pin_dir: &Path) -> PathBuf {
        pin_dir.join(self.name())
    }

    fn spec(self) -> MapSpec {
        match self {
            // One entry, written once (BPF_NOEXIST): a hash, since an
            // array's only slot always exists.
            LocalMap::NetnsBinding => MapSpec {
                map_type: MapType::Hash,
                key_size: 4,
                value_size: crate::netns::BINDING_SIZE as u32,
                max_entries: 1,
            },
            // One entry per interface record.
            LocalMap::Attachments => MapSpec {
                map_type: MapType::Hash,
                key_size: 4,
                value_size: crate::attachments::ATTACHMENT_SIZE as u32,
                max_entries: PinnedMap::Interfaces.capacity(),
            },
        }
    }

    /// Opens the pin, `None` when there is none; a pin of another layout
    /// (or not a map) is refused and left as it is.
    pub(crate) fn open(self, pin_dir: &Path) -> Result<Option<MapHandle>> {
        let path = self.path(pin_dir);
        match path.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("look at {}", path.display()), e)),
            Ok(meta) if !meta.is_file() => {
                return Err(Error::NotAPin {
                    path,
                    found: if meta.is_dir() {
                        "a directory"
                    } else {
                        "not a regular pin"
                    },
                })
            }
            Ok(_) => {}
        }
        let handle = MapHandle::from_pinned_path(&path)
            .map_err(|e| Error::bpf(format!("open pinned map {}", path.display()), e))?;
        match MapSpec::of(&handle).mismatch(&self.spec()) {
            None => Ok(Some(handle)),
            Some(mismatch) => Err(Error::IncompatibleMap { path, mismatch }),
        }
    }

    /// Opens the pin, creating (and pinning) the map first when there is
    /// none. Concurrent callers end with one map: they serialise on the pin
    /// directory's lock.
    pub(crate) fn open_or_create(self, pin_dir: &Path) -> Result<MapHandle> {
        if let Some(handle) = self.open(pin_dir)? {
            return Ok(handle);
        }
        let created = bpffs::prepare_pin_dir(pin_dir)?;
        let _lock = PinDirLock::acquire(pin_dir)?;
        let handle = self.create_locked(pin_dir)?;
        created.keep();
        Ok(handle)
    }

    /// Creates and pins the map unless it is pinned; the caller holds the
    /// pin directory's lock.
    pub(crate) fn create_locked(self, pin_dir: &Path) -> Result<MapHandle> {
        if let Some(handle) = self.open(pin_dir)? {
            return Ok(handle);
        }
        let spec = self.spec();
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let mut handle = MapHandle::create(
            spec.map_type,
            Some(self.name()),
            spec.key_size,
            spec.value_size,
            spec.max_entries,
            &opts,
        )
        .map_err(|e| Error::bpf(format!("create {}", self.name()), e))?;
        let path = self.path(pin_dir);
        handle
            .pin(&path)
            .map_err(|e| Error::bpf(format!("pin {}", path.display()), e))?;
        Ok(handle)
    }
}

impl std::fmt::Display for LocalMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
