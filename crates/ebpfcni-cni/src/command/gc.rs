//! GC: every host veth of this network (known by its alias) whose
//! attachment is not in `cni.dev/valid-attachments` loses its IPAM
//! allocation (an IPAM DEL for that attachment) and is deleted; then the
//! records of pod addresses (interface_map) of interfaces that no longer
//! exist are removed.

use std::collections::HashSet;

use crate::config::NetConf;
use crate::env::{Command, Env};
use crate::error::{Error, Result};
use crate::ipam::CallEnv;
use crate::netlink::Netlink;
use crate::veth::{Owner, HOST_VETH_PREFIX};

pub fn gc(conf: &NetConf, env: &Env, stdin: &[u8]) -> Result<()> {
    let ipam = super::delegated_ipam(conf, env, stdin)?;
    let attachments = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| Error::config("GC needs cni.dev/valid-attachments"))?;
    let valid: HashSet<(String, String)> = attachments
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let mut host = Netlink::open().map_err(Error::netlink("open a netlink socket"))?;
    let mut errors = Vec::new();
    // Agent mode: the agent forgets the stale endpoints first (their
    // identities go before their veths and leases).
    if let Some(client) = crate::agent::client(conf) {
        let valid = attachments
            .iter()
            .map(|a| ebpfcni_api::Deletion {
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            })
            .collect();
        if let Err(e) = crate::agent::gc(&client, conf, valid) {
            errors.push(e);
        }
    }
    let links = host.links().map_err(Error::netlink("list links"))?;
    let mut remaining: HashSet<u32> = links
        .iter()
        .filter(|l| l.name.starts_with(HOST_VETH_PREFIX))
        .map(|l| l.index)
        .collect();
    for link in links {
        if !link.name.starts_with(HOST_VETH_PREFIX) {
            continue;
        }
        // The alias names the attachment; only veths are ADD's.
        let Some(owner) = link.alias.as_deref().and_then(Owner::from_alias) else {
            continue;
        };
        if !owner.owns_host_end(&link) {
            continue;
        }
        if owner.network != conf.name || valid.contains(&(owner.container_id.clone(), owner.ifname.clone())) {
            continue;
        }
        log::info!(
            "GC: stale attachment {} {} ({})",
            owner.container_id,
            owner.ifname,
            link.name
        );
        let call = CallEnv {
            container_id: Some(owner.container_id),
            ifname: Some(owner.ifname),
            netns: Some(String::new()),
        };
        if let Some(Err(e)) = ipam.as_ref().map(|ipam| ipam.del(&call)) {
            errors.push(e);
        }
        if let Err(e) = super::forget_addresses(conf, link.index) {
            errors.push(e);
        }
        match host.delete_link(link.index) {
            Ok(_) => drop(remaining.remove(&link.index)),
            Err(e) => errors.push(Error::netlink(format!("delete {}", link.name))(e)),
        }
    }
    if let Err(e) = forget_stale_records(conf, &remaining) {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown {
            command: Command::Gc.name(),
            errors,
        })
    }
}

/// Removes the records of interfaces that are no longer among `existing`
/// (a DEL that could not run, a host veth deleted by hand). Records of
/// other networks sharing the pin directory belong to existing veths and
/// stay.
fn forget_stale_records(conf: &NetConf, existing: &HashSet<u32>) -> Result<()> {
    if conf.agent.is_some() {
        // Agent mode: the agent writes and removes the records.
        return Ok(());
    }
    let pin_dir = conf.pin_dir();
    let Some(map) = ebpfcni::InterfaceMap::open(&pin_dir).map_err(Error::bpf(format!(
        "open the interface records in {}",
        pin_dir.display()
    )))?
    else {
        return Ok(());
    };
    let records = map.list().map_err(Error::bpf("list the interface records"))?;
    for (ifindex, addrs) in records.into_iter().filter(|(i, _)| !existing.contains(i)) {
        map.remove(ifindex)
            .map_err(Error::bpf(format!("remove the record of ifindex {ifindex}")))?;
        log::info!("GC: removed the record of gone ifindex {ifindex} ({addrs:?})");
    }
    Ok(())
}
