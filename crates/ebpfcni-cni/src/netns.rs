//! Network namespaces named by path (CNI_NETNS): opening them, and opening a
//! netlink socket inside one without moving the calling thread.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use crate::netlink::{Netlink, NlError};

/// Opens `path` and checks that it is a network namespace (an nsfs file).
pub fn open(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    let stat = fstatfs(&file).map_err(io::Error::from)?;
    if stat.filesystem_type() != NSFS_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a network namespace file",
        ));
    }
    Ok(file)
}

/// The calling thread's own network namespace.
pub fn current() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

/// Opens a netlink socket inside `netns`. A short-lived thread enters the
/// namespace and creates the socket; the socket stays bound to that
/// namespace, so the caller can use it from any thread.
pub fn socket_in(netns: &File) -> Result<Netlink, NlError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Netlink::open()
        })
        .join()
        .unwrap_or_else(|_| Err(NlError::Io(io::Error::other("netns thread panicked"))))
    })
}
