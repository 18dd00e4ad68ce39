//! The node's small runtime files, in /run/ebpfcni (gone at reboot): locks
//! and caches, named after a short stable hash of what they are for.

/// Where ebpfcni's processes keep their locks and caches.
pub const RUN_DIR: &str = "/run/ebpfcni";

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
