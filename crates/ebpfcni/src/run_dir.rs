//! The node's small runtime files, in /run/ebpfcni (gone at reboot): locks
//! and caches, named after a short stable hash of what they are for.

/// Where ebpfcni's processes keep their locks and caches.
pub const RUN_DIR: &str = "/run/ebpfcni";

/// Where the CNI plugin remembers which spec versions the IPAM plugin
/// `binary` speaks: a file named after the binary's path, size and mtime,
/// so that an upgraded plugin is asked again. `None` when the binary
/// cannot be looked at.
pub fn ipam_versions_file(binary: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(binary).ok()?;
    let key = format!(
        "{}|{}|{}.{}",
        binary.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let hash = fnv1a(key.as_bytes());
    Some(std::path::Path::new(RUN_DIR).join(format!("ipam-versions-{hash:016x}")))
}

/// FNV-1a, 64 bits: a short name that stays the same for the same bytes
/// (from one process to the next, one release to the next). Not a
/// defence against anyone choosing the bytes.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    /// The published FNV-1a test vectors: names made before stay the same.
    #[test]
    fn matches_the_reference_vectors() {
        assert_eq!(super::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
