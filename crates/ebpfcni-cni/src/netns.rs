//! Network namespaces named by path (CNI_NETNS): opening them, and opening a
//! netlink socket inside one without moving the calling thread.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use nix::libc;
use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use crate::netlink::{Netlink, NlError};

/// NS_GET_NSTYPE, `_IO(0xb7, 0x3)` in linux/nsfs.h: the CLONE_NEW* flag of
/// the namespace a file refers to.
const NS_GET_NSTYPE: libc::Ioctl = (0xb7 << 8) | 0x3;

/// Opens `path` and checks that it is a network namespace: an nsfs file
/// (not any file) of a network namespace (not a mount or uts one).
pub fn open(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    let stat = fstatfs(&file).map_err(io::Error::from)?;
    if stat.filesystem_type() != NSFS_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a network namespace file",
        ));
    }
    match kind(&file)? {
        libc::CLONE_NEWNET => Ok(file),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is a {} namespace", kind_name(other)),
        )),
    }
}

/// The CLONE_NEW* flag of the namespace `file` (an nsfs file) refers to.
fn kind(file: &File) -> io::Result<libc::c_int> {
    // SAFETY: NS_GET_NSTYPE takes no argument; it only reads the open fd.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(kind)
}

/// The name `lsns` gives a namespace kind, for messages.
fn kind_name(kind: libc::c_int) -> String {
    match kind {
        libc::CLONE_NEWNS => "mount".into(),
        libc::CLONE_NEWUTS => "uts".into(),
        libc::CLONE_NEWIPC => "ipc".into(),
        libc::CLONE_NEWUSER => "user".into(),
        libc::CLONE_NEWPID => "pid".into(),
        libc::CLONE_NEWCGROUP => "cgroup".into(),
        libc::CLONE_NEWTIME => "time".into(),
        other => format!("{other:#x}"),
    }
}

/// The calling thread's own network namespace.
pub fn current() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

/// Runs `f` on a short-lived thread that has entered `netns`; the calling
/// thread stays where it is.
pub fn run_in<T: Send>(netns: &File, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    })
}

/// Opens a netlink socket inside `netns`. The socket stays bound to that
/// namespace, so the caller can use it from any thread.
pub fn socket_in(netns: &File) -> Result<Netlink, NlError> {
    let mut opened = None;
    run_in(netns, || {
        opened = Some(Netlink::open());
        Ok(())
    })?;
    opened.expect("set by the thread")
}
