//! Private pin directories, so that tests never share maps.

use std::path::{Path, PathBuf};

use crate::unique_name;

/// A private pin directory under /sys/fs/bpf, with everything pinned in it
/// removed on drop (also when the test panics).
pub struct TestPinDir {
    path: PathBuf,
}

impl TestPinDir {
    /// A new, empty pin directory named after `test`.
    pub fn new(test: &str) -> Self {
        let path = Self::unused(test);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self { path }
    }

    /// A pin directory path that does not exist yet (the code under test is
    /// to create it); removed on drop if it then exists.
    pub fn unused(test: &str) -> PathBuf {
        ebpfcni::bpffs::ensure_mounted().expect("mount bpffs");
        // bpffs refuses '.' in names: unique_name uses none.
        Path::new(ebpfcni::bpffs::BPFFS_ROOT).join(unique_name(&format!("ebpfcni_test_{test}_")))
    }

    /// Takes charge of `path` (removed on drop).
    pub fn adopt(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as UTF-8, for command lines.
    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("UTF-8 pin directory")
    }
}

impl Drop for TestPinDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("warning: could not remove {}: {e}", self.path.display()),
        }
    }
}
