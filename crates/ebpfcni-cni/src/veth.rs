//! The pod's veth pair: its host end's name and alias, creating the pair,
//! and finding both ends through the kernel.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::netlink::{Link, Netlink};
use crate::netns;

/// Prefix of host veth names: "ebc" + 12 hex digits.
pub const HOST_VETH_PREFIX: &str = "ebc";

/// The host veth's name for an attachment: stable, at most 15 characters.
/// FNV-1a (64 bits, truncated to 48) of "container id/ifname".
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let hash = ebpfcni::fnv1a(format!("{container_id}/{ifname}").as_bytes());
    format!("{HOST_VETH_PREFIX}{:012x}", hash & 0xffff_ffff_ffff)
}

/// Which attachment a host veth belongs to, as its alias records it
/// ("ebpfcni/<network>/<container id>/<ifname>": the format is the
/// library's, which `policyctl monitor` reads too). DEL and GC read it back.
pub use ebpfcni::PodAttachment as Owner;
use ebpfcni::{ALIAS_MAX, ALIAS_PREFIX};

/// What the plugin asks of an [`Owner`] besides its alias.
pub trait OwnerExt {
    /// Refuses an attachment whose alias the kernel would not keep (ERANGE),
    /// before ADD leases an address or creates the veth. Network names and
    /// container ids have no length limit of their own.
    fn check_alias_fits(&self) -> Result<()>;

    /// Whether `link`, in the plugin's namespace, is this attachment's host
    /// veth: a veth whose alias records this owner, or, without an alias, a
    /// veth with the name [`host_veth_name`] derives from this attachment
    /// (an ADD stopped between creating the pair and setting the alias). A
    /// veth of that name with another alias belongs to someone else: a
    /// name-hash collision, or an interface we did not make.
    fn owns_host_end(&self, link: &Link) -> bool;
}

impl OwnerExt for Owner {
    fn check_alias_fits(&self) -> Result<()> {
        let len = self.alias().len();
        if len <= ALIAS_MAX {
            return Ok(());
        }
        Err(Error::InvalidEnv(format!(
            "CNI_CONTAINERID too long: the container id is {} bytes and the network name {} bytes, \
             making the host veth's alias \"{ALIAS_PREFIX}<network>/<container id>/<ifname>\" {len} bytes, \
             over the kernel's {ALIAS_MAX}-byte limit",
            self.container_id.len(),
            self.network.len()
        )))
    }

    fn owns_host_end(&self, link: &Link) -> bool {
        if link.kind.as_deref() != Some("veth") {
            return false;
        }
        match link.alias.as_deref().filter(|a| !a.is_empty()) {
            Some(alias) => Self::from_alias(alias).as_ref() == Some(self),
            None => link.name == host_veth_name(&self.container_id, &self.ifname),
        }
    }
}

/// Creates the pair: `host_name` in our namespace, `ifname` in `netns`.
/// Returns the host end's ifindex.
pub fn create(
    host: &mut Netlink,
    host_name: &str,
    ifname: &str,
    netns: &File,
    mtu: Option<u32>,
) -> Result<u32> {
    host.create_veth(host_name, ifname, netns.as_raw_fd(), mtu)
        .map_err(Error::netlink(format!("create veth {host_name} <-> {ifname}")))
}

/// Why the container's interface is not the pod end of a veth into the
/// plugin's namespace.
#[derive(Debug, thiserror::Error)]
pub enum Unpaired {
    #[error("interface {0} not found in the container")]
    Missing(String),
    /// It exists but is something else; the message says what.
    #[error("{0}")]
    Other(String),
}

/// Finds the host end of the container's `ifname` as the kernel knows it:
/// the container end's IFLA_LINK, checked to lie in our namespace through
/// IFLA_LINK_NETNSID. Returns (pod end, host end), or why there is no such
/// pair; the outer error is netlink failing.
pub fn find_pair(
    container: &mut Netlink,
    host: &mut Netlink,
    ifname: &str,
) -> Result<Result<(Link, Link), Unpaired>> {
    let Some(pod) = container
        .link_by_name(ifname)
        .map_err(Error::netlink(format!("look up {ifname} in the container")))?
    else {
        return Ok(Err(Unpaired::Missing(ifname.to_string())));
    };
    let other = |why: String| Ok(Err(Unpaired::Other(why)));
    if pod.kind.as_deref() != Some("veth") {
        return other(format!("{ifname} in the container is not a veth"));
    }
    let Some(peer) = pod.peer_index else {
        return other(format!("{ifname} in the container has no peer"));
    };
    let here = netns::current().map_err(|e| Error::Netlink {
        context: "open the plugin's netns".into(),
        source: e.into(),
    })?;
    let here_id = container
        .nsid_of(here.as_raw_fd())
        .map_err(Error::netlink("read the id of the plugin's netns"))?;
    if here_id.is_none() || pod.link_netnsid != here_id {
        return other(format!(
            "the peer of {ifname} is not in the plugin's network namespace"
        ));
    }
    match host
        .link_by_index(peer)
        .map_err(Error::netlink(format!("look up ifindex {peer}")))?
    {
        Some(host_end) => Ok(Ok((pod, host_end))),
        None => other(format!("the peer of {ifname} (ifindex {peer}) is gone")),
    }
}

/// Like [`find_pair`], for callers that need the pair: its absence is an
/// error. Returns (pod end, host end).
pub fn resolve_pair(container: &mut Netlink, host: &mut Netlink, ifname: &str) -> Result<(Link, Link)> {
    find_pair(container, host, ifname)?.map_err(|why| Error::Plumbing(why.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("4f2c9d0e1a", "eth0");
        assert_eq!(a, host_veth_name("4f2c9d0e1a", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with(HOST_VETH_PREFIX) && a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_veth_name("4f2c9d0e1a", "eth1"));
        assert_ne!(a, host_veth_name("4f2c9d0e1b", "eth0"));
        // The separator keeps "ab"+"c" apart from "a"+"bc".
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
    }

    #[test]
    fn a_host_veth_is_ours_by_alias_or_by_name_without_alias() {
        let owner = Owner::new("net", "ctr", "eth0");
        let veth = |name: &str, alias: Option<&str>| Link {
            name: name.into(),
            kind: Some("veth".into()),
            alias: alias.map(str::to_string),
            ..Default::default()
        };
        let name = host_veth_name("ctr", "eth0");
        assert!(owner.owns_host_end(&veth(&name, Some(&owner.alias()))));
        assert!(owner.owns_host_end(&veth(&name, None)));
        assert!(owner.owns_host_end(&veth(&name, Some(""))));
        assert!(owner.owns_host_end(&veth("renamed", Some(&owner.alias()))));
        assert!(!owner.owns_host_end(&veth("renamed", None)));
        let collision = Owner::new("net", "other", "eth0").alias();
        assert!(!owner.owns_host_end(&veth(&name, Some(&collision))));
        assert!(!owner.owns_host_end(&veth(&name, Some("ebpfcni/net2/ctr/eth0"))));
        assert!(!owner.owns_host_end(&veth(&name, Some("someone else's"))));
        let dummy = Link {
            kind: Some("dummy".into()),
            ..veth(&name, None)
        };
        assert!(!owner.owns_host_end(&dummy));
    }

    #[test]
    fn aliases_longer_than_the_kernel_keeps_are_refused() {
        let network = "net";
        // "ebpfcni/" + "net" + "/" + id + "/" + "eth0" = 17 + id.
        let fits = Owner::new(network, &"c".repeat(255 - 17), "eth0");
        assert_eq!(fits.alias().len(), 255);
        assert!(fits.check_alias_fits().is_ok());
        let over = Owner::new(network, &"c".repeat(256 - 17), "eth0");
        let msg = over.check_alias_fits().unwrap_err().to_string();
        assert!(
            msg.contains("container id is 239 bytes")
                && msg.contains("network name 3 bytes")
                && msg.contains("256 bytes")
                && msg.contains("255-byte limit"),
            "{msg}"
        );
    }
}
