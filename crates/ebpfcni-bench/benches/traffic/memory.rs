//! Kernel memory held by the pinned maps, as the kernel accounts it
//! (`memlock:` in /proc/self/fdinfo of a map fd; what `bpftool map show`
//! prints). Hash maps are preallocated, so this does not depend on how full
//! they are.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use libbpf_rs::MapHandle;

use crate::Result;

/// (map name, bytes) for each pinned map under `pin_dir`.
pub fn pinned_maps(pin_dir: &Path) -> Result<Vec<(&'static str, u64)>> {
    ebpfcni::PinnedMap::ALL
        .iter()
        .map(|map| {
            let path = map.path(pin_dir);
            let handle =
                MapHandle::from_pinned_path(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
            let fdinfo = format!("/proc/self/fdinfo/{}", handle.as_fd().as_raw_fd());
            let text = std::fs::read_to_string(&fdinfo).map_err(|e| format!("read {fdinfo}: {e}"))?;
            let bytes = text
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no memlock in {fdinfo}"))?;
            Ok((map.name(), bytes))
        })
        .collect()
}
