//! One module per CNI command. Each takes the parsed config and environment
//! and returns what to print on success; errors are typed ([`crate::error`]).

mod add;
mod check;
mod del;
mod gc;
mod status;
mod version;

use std::fs::File;
use std::path::Path;

pub use add::add;
pub use check::check;
pub use del::del;
pub use gc::gc;
pub use status::status;
pub use version::version;

use crate::config::NetConf;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::ipam::Ipam;
use crate::netns;

/// The IPAM plugin the config names, found on CNI_PATH.
fn ipam<'a>(conf: &'a NetConf, env: &'a Env, stdin: &'a [u8]) -> Result<Ipam<'a>> {
    Ok(Ipam {
        plugin: &conf.ipam()?.plugin_type,
        cni_path: &env.path,
        stdin,
    })
}

/// The IPAM plugin when addresses are delegated to one: always outside
/// agent mode, and in agent mode when the config has an "ipam" section
/// (without one, the agent leases).
fn delegated_ipam<'a>(conf: &'a NetConf, env: &'a Env, stdin: &'a [u8]) -> Result<Option<Ipam<'a>>> {
    match (&conf.agent, &conf.ipam) {
        (Some(_), None) => Ok(None),
        _ => ipam(conf, env, stdin).map(Some),
    }
}

/// Refuses a `pinDir` that cannot hold the maps, before anything is
/// touched: found later, it would fail ADD only after IPAM and the veth.
fn check_pin_dir(conf: &NetConf) -> Result<()> {
    ebpfcni::bpffs::check_pin_dir(&conf.pin_dir())
        .map(drop)
        .map_err(|source| Error::PinDir { source })
}

/// Binds `pinDir` to the plugin's network namespace, or refuses
/// ([`Error::OtherNetns`], code 107) when it serves another: interface
/// indexes there name other interfaces. For ADD, before anything is
/// touched.
fn bind_netns(conf: &NetConf) -> Result<()> {
    let pin_dir = conf.pin_dir();
    ebpfcni::bind_netns(&pin_dir)
        .map(drop)
        .map_err(Error::bpf(format!(
            "bind {} to this network namespace",
            pin_dir.display()
        )))
}

/// For DEL and GC, before anything is touched: like [`bind_netns`] when
/// `pinDir` holds interface records; nothing to protect (and nothing
/// created) when it holds none.
fn bind_netns_if_used(conf: &NetConf) -> Result<()> {
    if ebpfcni::PinnedMap::Interfaces.path(&conf.pin_dir()).exists() {
        bind_netns(conf)
    } else {
        Ok(())
    }
}

/// For CHECK, which only reads: refuses when `pinDir` serves another
/// network namespace; changes nothing.
fn check_netns(conf: &NetConf) -> Result<()> {
    let pin_dir = conf.pin_dir();
    ebpfcni::check_netns(&pin_dir).map_err(Error::bpf(format!(
        "read the network namespace {} serves",
        pin_dir.display()
    )))
}

/// Removes the record of the pod's addresses behind the host veth
/// `ifindex` and the record of its attachment (before the veth goes,
/// while its ifindex still names it). Nothing pinned, or no record:
/// nothing to do.
pub(super) fn forget_addresses(conf: &NetConf, ifindex: u32) -> Result<()> {
    forget_local(conf, ifindex)?;
    if conf.agent.is_some() {
        // Agent mode: the agent wrote the record and removes it.
        return Ok(());
    }
    let pin_dir = conf.pin_dir();
    let map = ebpfcni::InterfaceMap::open(&pin_dir).map_err(Error::bpf(format!(
        "open the interface records in {}",
        pin_dir.display()
    )))?;
    if let Some(map) = map {
        if map
            .remove(ifindex)
            .map_err(Error::bpf(format!("remove the record of ifindex {ifindex}")))?
        {
            log::info!("removed the record of ifindex {ifindex}");
        }
    }
    let attachments = ebpfcni::AttachmentMap::open(&pin_dir).map_err(Error::bpf(format!(
        "open the attachment records in {}",
        pin_dir.display()
    )))?;
    if let Some(attachments) = attachments {
        attachments
            .remove(ifindex)
            .map_err(Error::bpf(format!("remove the attachment of ifindex {ifindex}")))?;
    }
    Ok(())
}

/// Removes the local delivery records of the pod behind the host veth
/// `ifindex` (plumbing: in agent mode too), before the veth goes: a record
/// left behind would deliver its address into a veth that is gone.
/// Nothing pinned, or no record: nothing to do.
pub(super) fn forget_local(conf: &NetConf, ifindex: u32) -> Result<()> {
    let pin_dir = conf.pin_dir();
    let map = ebpfcni::LocalDeliveryMap::open(&pin_dir).map_err(Error::bpf(format!(
        "open the local delivery records in {}",
        pin_dir.display()
    )))?;
    if let Some(map) = map {
        let removed = map.remove_interface(ifindex).map_err(Error::bpf(format!(
            "remove the local delivery records of ifindex {ifindex}"
        )))?;
        if !removed.is_empty() {
            log::info!("removed the local delivery of {removed:?} (ifindex {ifindex})");
        }
    }
    Ok(())
}

/// Opens CNI_NETNS, which must be a network namespace.
fn open_netns(path: &str) -> Result<File> {
    netns::open(Path::new(path))
        .map_err(|e| Error::InvalidEnv(format!("CNI_NETNS {path} is not a usable network namespace: {e}")))
}
