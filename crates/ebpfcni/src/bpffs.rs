//! The bpf filesystem: checking and preparing pin directories (mounting
//! bpffs when missing), and the lock that serialises map creation between
//! processes.
//!
//! A pin directory is checked before anything is created ([`check_pin_dir`]),
//! and [`prepare_pin_dir`] removes again what it created when a later step
//! fails, so a refused directory leaves nothing behind.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC};

use crate::error::{Error, Result};

/// Where the kernel's bpf filesystem is conventionally mounted.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Where ebpfcni pins its maps unless told otherwise (shared with iproute2's
/// `tc` object pinning convention).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tc/globals";

/// The longest file name the kernel takes (NAME_MAX).
const NAME_MAX: usize = 255;

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

/// What [`check_pin_dir`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinDirPlan {
    /// bpffs must be mounted at [`BPFFS_ROOT`] first.
    pub mount: bool,
    /// The directories to create, outermost first (empty: it exists).
    pub create: Vec<PathBuf>,
}

/// Checks, without changing anything, that `pin_dir` is or can be made a
/// directory on a bpf filesystem: an absolute path whose names the kernel
/// takes, under an existing directory on bpffs (or under [`BPFFS_ROOT`],
/// where bpffs is mounted when missing). Says what preparing it would do.
pub fn check_pin_dir(pin_dir: &Path) -> Result<PinDirPlan> {
    let bad = |reason: String| Error::BadPinDir {
        path: pin_dir.to_owned(),
        reason,
    };
    if !pin_dir.is_absolute() {
        return Err(bad("not an absolute path".into()));
    }
    for component in pin_dir.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) if name.len() > NAME_MAX => {
                return Err(bad(format!(
                    "the name {} is {} bytes long (at most {NAME_MAX})",
                    shorten(name),
                    name.len()
                )))
            }
            Component::Normal(_) => {}
            _ => return Err(bad("'.' and '..' are not allowed in a pin directory".into())),
        }
    }
    // The nearest ancestor that exists, and what is missing below it.
    let mut create = Vec::new();
    let mut existing = pin_dir;
    while !existing.exists() {
        create.push(existing.to_owned());
        existing = existing.parent().expect("an absolute path ends at /");
    }
    create.reverse();
    if !existing.is_dir() {
        return Err(bad(format!("{} is not a directory", existing.display())));
    }
    if let Some(dotted) = create
        .iter()
        .filter_map(|p| p.file_name())
        .find(|n| n.as_bytes().contains(&b'.'))
    {
        return Err(bad(format!(
            "bpffs refuses names with '.' ({})",
            dotted.to_string_lossy()
        )));
    }
    let under_root = pin_dir.starts_with(BPFFS_ROOT);
    let mount = under_root && !is_bpffs(Path::new(BPFFS_ROOT))?;
    if !mount && !is_bpffs(existing)? {
        return Err(Error::Bpffs(format!(
            "pin directory {} is not on a bpf filesystem ({} is not bpffs; mount one with `mount -t bpf bpf {BPFFS_ROOT}`)",
            pin_dir.display(),
            existing.display()
        )));
    }
    Ok(PinDirPlan { mount, create })
}

/// At most 40 characters of a long name, for messages.
fn shorten(name: &OsStr) -> String {
    let name = name.to_string_lossy();
    match name.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}...", &name[..cut]),
        None => format!("{name:?}"),
    }
}

/// Makes `pin_dir` exist on a bpf filesystem: checks it first
/// ([`check_pin_dir`]), mounts bpffs when needed, then creates the missing
/// directories. When creating fails part way, the directories it made are
/// removed again. The returned guard removes them too, when dropped before
/// [`CreatedDirs::keep`]: a caller whose next step fails leaves nothing.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<CreatedDirs> {
    let plan = check_pin_dir(pin_dir)?;
    if plan.mount {
        ensure_mounted()?;
    }
    let mut made = CreatedDirs(Vec::new());
    for dir in plan.create {
        match fs::create_dir(&dir) {
            Ok(()) => made.0.push(dir),
            // A concurrent preparer made it: fine.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create pin directory {}", dir.display()), e)),
        }
    }
    Ok(made)
}

/// Directories [`prepare_pin_dir`] created, removed (when still empty) on
/// drop unless kept.
#[must_use = "dropping it removes the directories it created"]
pub struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// The directories stay.
    pub fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            // Only empty directories go: a concurrent user may have pinned there.
            let _ = fs::remove_dir(dir);
        }
    }
}

/// An exclusive lock on a pin directory: held while maps are created, so
/// that concurrent creators end with exactly one pinned map of each kind,
/// and around every change of the maps' entries, so that concurrent
/// changes (two overlapping port ranges, a setting of the config) are made
/// one after the other. It locks the directory itself (its inode), however
/// its path is written. Released on drop.
///
/// A thread that already holds the lock of a directory takes it again at
/// no cost (a change that creates maps, or sets a flag of the config, on
/// the way): only the outermost guard releases it.
pub struct PinDirLock {
    _lock: Option<Flock<File>>,
    id: (u64, u64),
}

thread_local! {
    /// The pin directories (device, inode) this thread holds locked.
    static HELD: std::cell::RefCell<Vec<(u64, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl PinDirLock {
    /// Waits for the lock of `pin_dir`, which must exist.
    pub fn acquire(pin_dir: &Path) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let dir = File::open(pin_dir)
            .map_err(|e| Error::io(format!("open pin directory {}", pin_dir.display()), e))?;
        let meta = dir
            .metadata()
            .map_err(|e| Error::io(format!("stat pin directory {}", pin_dir.display()), e))?;
        let id = (meta.dev(), meta.ino());
        if HELD.with_borrow(|held| held.contains(&id)) {
            return Ok(Self { _lock: None, id });
        }
        let lock = Flock::lock(dir, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::errno(format!("lock pin directory {}", pin_dir.display()), e))?;
        HELD.with_borrow_mut(|held| held.push(id));
        Ok(Self {
            _lock: Some(lock),
            id,
        })
    }
}

impl PinDirLock {
    /// Whether this guard is a nested one: the thread held the lock already.
    pub fn is_nested(&self) -> bool {
        self._lock.is_none()
    }
}

impl Drop for PinDirLock {
    fn drop(&mut self) {
        if self._lock.is_some() {
            HELD.with_borrow_mut(|held| held.retain(|h| *h != self.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(path: &str) -> String {
        match check_pin_dir(Path::new(path)) {
            Err(Error::BadPinDir { reason, .. }) => reason,
            other => panic!("{path}: expected BadPinDir, got {other:?}"),
        }
    }

    #[test]
    fn bad_pin_dirs_are_named_before_anything_is_touched() {
        assert!(reason("sys/fs/bpf/x").contains("absolute"));
        assert!(reason("/sys/fs/bpf/../x").contains("'..'"));
        let long = format!("/sys/fs/bpf/{}", "n".repeat(300));
        let why = reason(&long);
        assert!(why.contains("300 bytes") && why.contains("..."), "{why}");
        assert!(why.len() < 120, "the name is not echoed whole: {why}");
        assert!(reason("/sys/fs/bpf/ebpfcni_no_such/a.b").contains("'.'"));
        assert!(reason("/etc/hostname/x").contains("not a directory"));
    }
}
