//! The one error type of the library. Each variant names what went wrong in
//! words an operator can act on; the binaries map variants to exit codes.

use std::io;
use std::path::PathBuf;

use crate::pinned::PinnedMap;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a BPF or netlink operation for lack of privilege.
    #[error(
        "{context}: operation not permitted (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    )]
    PermissionDenied { context: String },

    /// A pin directory that cannot be one whatever the system's state
    /// (relative, a name too long, '.' in a name on bpffs...).
    #[error("invalid pin directory {}: {reason}", path.display())]
    BadPinDir { path: PathBuf, reason: String },

    /// The bpf filesystem is missing or a path is not on it.
    #[error("bpf filesystem: {0}")]
    Bpffs(String),

    /// A pinned map exists but does not have the layout this build expects.
    /// It is never replaced silently: that would lose the policy.
    #[error(
        "pinned map {path} is incompatible with this build of ebpfcni: {mismatch}; \
         keep the build that created it, or remove the pin (losing its entries) with `rm {path}`"
    )]
    IncompatibleMap { path: PathBuf, mismatch: String },

    /// A map pinned by an older release, in a layout this build migrates
    /// (with every entry kept) when it loads against the pin directory.
    #[error("pinned map {} has an older release's layout; loading (any command that writes, or the CNI plugin) migrates it", path.display())]
    OlderLayout { path: PathBuf },

    /// Something other than a pinned map sits at a map's pin path.
    #[error("{} is {found}, not a pinned map; remove or rename it", path.display())]
    NotAPin { path: PathBuf, found: &'static str },

    /// No map of ours is pinned in the directory: nothing has been written
    /// there (a read-only command does not create maps).
    #[error(
        "no ebpfcni maps are pinned in {}: nothing has been written there yet \
         (check --pin-dir; adding an endpoint or a rule, or the CNI plugin's first pod, creates them)",
        pin_dir.display()
    )]
    NothingPinned { pin_dir: PathBuf },

    /// Some of the maps are gone from a directory where the others are
    /// pinned (removed by hand): a read-only command does not create them.
    #[error(
        "{} missing in {} (the other maps are pinned there; removed by hand?): a read-only command \
         creates nothing; any command that writes (or the CNI plugin's next ADD) pins {} afresh, empty",
        names(missing), pin_dir.display(), if missing.len() == 1 { "it" } else { "them" }
    )]
    MapsMissing {
        pin_dir: PathBuf,
        missing: Vec<PinnedMap>,
    },

    /// Some of the maps are not pinned (and the caller asked not to create them).
    #[error("maps not pinned: {}", missing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    MapsNotPinned { missing: Vec<PathBuf> },

    /// The pin directory serves another network namespace: interface
    /// indexes there name other interfaces (see [`crate::bind_netns`]).
    #[error(
        "pin directory {} serves network namespace {bound}, and this command runs in {here}: \
         interface indexes differ between namespaces, so interfaces are recorded and attached \
         through it only from its own namespace (run the command there, e.g. with \
         `nsenter --net=/run/netns/NAME`, or give this namespace a pin directory of its own; \
         if that namespace is gone for good, `rm {}` binds the directory anew at its next use)",
        pin_dir.display(),
        pin_dir.join("netns_binding").display()
    )]
    OtherNetns {
        pin_dir: PathBuf,
        bound: String,
        here: String,
    },

    /// Someone else holds what this needs (the event ring's one reader).
    #[error("{0}")]
    Busy(String),

    /// The change contradicts what the maps hold; nothing was written.
    #[error("{0}")]
    Conflict(String),

    /// A map has no room for the new entries; nothing was written.
    #[error("{map} is full: capacity {capacity} entries, {needed} needed")]
    MapFull {
        map: PinnedMap,
        capacity: u32,
        needed: usize,
    },

    /// A BPF operation failed.
    #[error("{context}: {source}")]
    Bpf {
        context: String,
        #[source]
        source: libbpf_rs::Error,
    },

    /// A file system or system call failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn names(maps: &[PinnedMap]) -> String {
    let names: Vec<&str> = maps.iter().map(|m| m.name()).collect();
    match names.len() {
        1 => format!("the map {} is", names[0]),
        _ => format!("the maps {} are", names.join(", ")),
    }
}

/// EPERM/EACCES mean "not privileged" only for a caller that is not root;
/// as root they have other causes, and the kernel's words are kept.
fn lacks_privilege(kind: io::ErrorKind) -> bool {
    kind == io::ErrorKind::PermissionDenied && !nix::unistd::geteuid().is_root()
}

impl Error {
    /// Wraps a libbpf error, turning EPERM/EACCES of an unprivileged caller
    /// into [`Error::PermissionDenied`].
    pub(crate) fn bpf(context: impl Into<String>, source: libbpf_rs::Error) -> Self {
        let context = context.into();
        if source.kind() == libbpf_rs::ErrorKind::PermissionDenied
            && lacks_privilege(io::ErrorKind::PermissionDenied)
        {
            return Error::PermissionDenied { context };
        }
        Error::Bpf { context, source }
    }

    /// Wraps an I/O error, turning EPERM/EACCES of an unprivileged caller
    /// into [`Error::PermissionDenied`].
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if lacks_privilege(source.kind()) {
            return Error::PermissionDenied { context };
        }
        Error::Io { context, source }
    }

    pub(crate) fn errno(context: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Self::io(context, io::Error::from(errno))
    }
}
