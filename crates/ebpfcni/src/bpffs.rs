//! The bpf filesystem: mounting it when missing, preparing pin directories,
//! and the lock that serialises map creation between processes.

use std::fs::{self, File};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC};

use crate::error::{Error, Result};

/// Where the kernel's bpf filesystem is conventionally mounted.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Where ebpfcni pins its maps unless told otherwise (shared with iproute2's
/// `tc` object pinning convention).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tc/globals";

/// True when `path` lies on a bpf filesystem.
pub fn is_bpffs(path: &Path) -> Result<bool> {
    let stat = statfs(path).map_err(|e| Error::errno(format!("statfs {}", path.display()), e))?;
    Ok(stat.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts a bpf filesystem at [`BPFFS_ROOT`] unless one is already there, as
/// Cilium's agent does. Concurrent callers mount it once: they serialise on a
/// lock of the mount point and look again after taking it.
pub fn ensure_mounted() -> Result<()> {
    let root = Path::new(BPFFS_ROOT);
    if is_bpffs(root)? {
        return Ok(());
    }
    let dir = File::open(root).map_err(|e| Error::io(format!("open {BPFFS_ROOT}"), e))?;
    let _lock = Flock::lock(dir, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::errno(format!("lock {BPFFS_ROOT}"), e))?;
    if is_bpffs(root)? {
        return Ok(());
    }
    mount(
        Some("bpf"),
        root,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|e| Error::errno(format!("mount bpffs at {BPFFS_ROOT}"), e))
}

/// Makes `pin_dir` exist on a bpf filesystem, mounting bpffs first when the
/// directory is under [`BPFFS_ROOT`] and nothing is mounted there.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<()> {
    if pin_dir.starts_with(BPFFS_ROOT) {
        ensure_mounted()?;
    }
    fs::create_dir_all(pin_dir)
        .map_err(|e| Error::io(format!("create pin directory {}", pin_dir.display()), e))?;
    if !is_bpffs(pin_dir)? {
        return Err(Error::Bpffs(format!(
            "pin directory {} is not on a bpf filesystem (mount one with `mount -t bpf bpf {}`)",
            pin_dir.display(),
            BPFFS_ROOT
        )));
    }
    Ok(())
}

/// An exclusive lock on a pin directory, held while maps are created so that
/// concurrent creators end with exactly one pinned map of each kind.
/// Released on drop.
pub(crate) struct PinDirLock {
    _lock: Flock<File>,
}

impl PinDirLock {
    pub(crate) fn acquire(pin_dir: &Path) -> Result<Self> {
        let dir = File::open(pin_dir)
            .map_err(|e| Error::io(format!("open pin directory {}", pin_dir.display()), e))?;
        let lock = Flock::lock(dir, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::errno(format!("lock pin directory {}", pin_dir.display()), e))?;
        Ok(Self { _lock: lock })
    }
}
