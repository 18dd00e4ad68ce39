//! The network namespace a pin directory serves. Interface indexes are per
//! network namespace (ifindex 5 of one node is not ifindex 5 of another),
//! and interface records (interface_map) and attachments name interfaces by
//! index: a pin directory used from two namespaces would mix them up. So
//! the first command that records an interface or attaches through a pin
//! directory binds it to its own network namespace (netns_binding, pinned
//! beside the maps); from any other namespace those commands are refused
//! with [`Error::OtherNetns`]. Pin directories of earlier releases, which
//! have no binding, are bound at their next such use.
//!
//! A namespace is known by its cookie (SO_NETNS_COOKIE: never reused while
//! the machine runs); its nsfs inode is kept too, for people (`ip netns
//! identify`, `lsns`, `/proc/PID/ns/net` show it).

use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags};
use nix::libc;

use crate::error::{Error, Result};
use crate::local_maps::LocalMap;

/// SO_NETNS_COOKIE (linux/asm-generic/socket.h; Linux 5.14).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The binding's value: cookie, nsfs device and inode (u64 each).
pub(crate) const BINDING_SIZE: usize = 24;
const KEY: [u8; 4] = 0u32.to_ne_bytes();

/// A network namespace: its cookie, and the nsfs device and inode of its
/// file (`/proc/PID/ns/net`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsId {
    pub cookie: u64,
    pub dev: u64,
    pub inode: u64,
}

impl NetnsId {
    /// The calling thread's network namespace.
    pub fn current() -> Result<Self> {
        let path = "/proc/thread-self/ns/net";
        let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("stat {path}"), e))?;
        let socket = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| Error::errno("open a socket to read the network namespace cookie", e))?;
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: the buffer is a u64 and len says so.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // Before Linux 5.14: no cookie (0); the nsfs inode decides.
            if e.raw_os_error() != Some(libc::ENOPROTOOPT) {
                return Err(Error::io(
                    "read the network namespace cookie (SO_NETNS_COOKIE)",
                    e,
                ));
            }
            cookie = 0;
        }
        Ok(Self {
            cookie,
            dev: meta.dev(),
            inode: meta.ino(),
        })
    }

    /// The same namespace: by cookie when both have one (never reused),
    /// else by nsfs device and inode.
    pub fn same_as(&self, other: &NetnsId) -> bool {
        if self.cookie != 0 && other.cookie != 0 {
            self.cookie == other.cookie
        } else {
            (self.dev, self.inode) == (other.dev, other.inode)
        }
    }

    fn to_bytes(self) -> [u8; BINDING_SIZE] {
        let mut bytes = [0u8; BINDING_SIZE];
        for (slot, v) in bytes.chunks_exact_mut(8).zip([self.cookie, self.dev, self.inode]) {
            slot.copy_from_slice(&v.to_ne_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let word = |i: usize| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Self {
            cookie: word(0),
            dev: word(1),
            inode: word(2),
        }
    }

    /// Names people know it by: the /run/netns names (`ip netns`) that
    /// refer to it, or "the initial namespace" when it is init's.
    pub fn names(&self) -> Vec<String> {
        let same =
            |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.inode);
        let mut names: Vec<String> = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| same(&e.path()))
            .map(|e| e.path().display().to_string())
            .collect();
        names.sort();
        if same(Path::new("/proc/1/ns/net")) {
            names.insert(0, "the initial namespace".into());
        }
        names
    }
}

impl fmt::Display for NetnsId {
    /// `net:[INODE]` (as `ls -l /proc/PID/ns/net` shows it), its cookie,
    /// and its names when it has any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}] (cookie {}", self.inode, self.cookie)?;
        for name in self.names() {
            write!(f, ", {name}")?;
        }
        f.write_str(")")
    }
}

/// The network namespace `pin_dir` is bound to, `None` when it is not
/// bound (yet). Changes nothing.
pub fn netns_binding(pin_dir: &Path) -> Result<Option<NetnsId>> {
    let Some(map) = LocalMap::NetnsBinding.open(pin_dir)? else {
        return Ok(None);
    };
    read(&map)
}

fn read(map: &libbpf_rs::MapHandle) -> Result<Option<NetnsId>> {
    Ok(map
        .lookup(&KEY, MapFlags::ANY)
        .map_err(|e| Error::bpf(format!("read {}", LocalMap::NetnsBinding), e))?
        .map(|v| NetnsId::from_bytes(&v)))
}

/// Checks that `pin_dir` serves the calling thread's network namespace,
/// binding it to it when it serves none yet (creating the pin directory
/// and the binding when missing). For every command that records
/// interfaces or attaches programs through `pin_dir`. Returns this
/// namespace; [`Error::OtherNetns`] when `pin_dir` serves another.
pub fn bind_netns(pin_dir: &Path) -> Result<NetnsId> {
    let here = NetnsId::current()?;
    let map = LocalMap::NetnsBinding.open_or_create(pin_dir)?;
    match map.update(&KEY, &here.to_bytes(), MapFlags::NO_EXIST) {
        Ok(()) => return Ok(here),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::bpf(format!("write {}", LocalMap::NetnsBinding), e)),
    }
    match read(&map)? {
        Some(bound) => same(pin_dir, bound, here),
        None => Err(Error::Conflict(format!(
            "{} changed while it was read; try again",
            LocalMap::NetnsBinding.path(pin_dir).display()
        ))),
    }
}

/// Like [`bind_netns`] without binding: `Ok` when `pin_dir` serves the
/// calling thread's network namespace or none yet; changes nothing. For
/// commands that only read records by interface index.
pub fn check_netns(pin_dir: &Path) -> Result<()> {
    match netns_binding(pin_dir)? {
        None => Ok(()),
        Some(bound) => same(pin_dir, bound, NetnsId::current()?).map(drop),
    }
}

fn same(pin_dir: &Path, bound: NetnsId, here: NetnsId) -> Result<NetnsId> {
    if bound.same_as(&here) {
        return Ok(here);
    }
    Err(Error::OtherNetns {
        pin_dir: pin_dir.to_owned(),
        bound: bound.to_string(),
        here: here.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_round_trips_its_bytes() {
        let id = NetnsId {
            cookie: 7,
            dev: 4,
            inode: 4026531840,
        };
        assert_eq!(NetnsId::from_bytes(&id.to_bytes()), id);
    }

    #[test]
    fn namespaces_are_compared_by_cookie_else_by_inode() {
        let id = |cookie, inode| NetnsId {
            cookie,
            dev: 4,
            inode,
        };
        assert!(id(7, 100).same_as(&id(7, 100)));
        // A cookie is never reused; an inode may be, after the namespace goes.
        assert!(!id(7, 100).same_as(&id(8, 100)));
        assert!(id(0, 100).same_as(&id(7, 100)));
        assert!(!id(0, 100).same_as(&id(0, 101)));
    }
}
