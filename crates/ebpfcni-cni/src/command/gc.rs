//! GC: every host veth of this network (known by its alias, whatever its
//! name now) whose attachment is not in `cni.dev/valid-attachments` loses
//! its IPAM allocation (an IPAM DEL for that attachment), its records and
//! the veth. Then the records (interface_map, and beside it in
//! attachment_map the attachment ADD made each for): a record of this
//! network whose host veth is gone (deleted by hand, a DEL that could not
//! run) is removed, and its lease given back when its attachment is not
//! valid. Records of other networks sharing the pin directory are theirs
//! to collect and stay; records of earlier releases (no attachment) go
//! when no host veth of ours has their ifindex. Local delivery records
//! (local_map, in agent mode too) whose host veth is none of ours go.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::config::NetConf;
use crate::env::{Command, Env};
use crate::error::{Error, Result};
use crate::ipam::{CallEnv, Ipam};
use crate::netlink::Netlink;
use crate::veth::{Owner, OwnerExt, HOST_VETH_PREFIX};

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
    super::bind_netns_if_used(conf)?;
    let mut host = Netlink::open().map_err(Error::netlink("open a netlink socket"))?;
    let mut errors = Vec::new();
    // Agent mode: the agent forgets the stale endpoints first (their
    // identities go before their veths and leases); it writes and removes
    // their records itself.
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
    // Read before the links: a record written after this is an ADD's under
    // way, whose veth this GC may not see.
    let local = local_records(conf)?;
    let links = host.links().map_err(Error::netlink("list links"))?;
    // Our host veths by ifindex, with the attachment their alias names
    // (none yet: an ADD between creating the pair and setting it up).
    let mut ours: HashMap<u32, Option<Owner>> = HashMap::new();
    for link in links {
        let owner = link.alias.as_deref().and_then(Owner::from_alias);
        match &owner {
            Some(owner) if owner.owns_host_end(&link) => {}
            None if link.kind.as_deref() == Some("veth") && link.name.starts_with(HOST_VETH_PREFIX) => {}
            _ => continue,
        }
        ours.insert(link.index, owner.clone());
        let Some(owner) = owner else { continue };
        if owner.network != conf.name || is_valid(&valid, &owner) {
            continue;
        }
        log::info!("GC: stale attachment {} ({})", owner.pod(), link.name);
        if let Err(e) = release(ipam.as_ref(), &owner) {
            errors.push(e);
        }
        if let Err(e) = super::forget_addresses(conf, link.index) {
            errors.push(e);
        }
        match host.delete_link(link.index) {
            Ok(_) => drop(ours.remove(&link.index)),
            Err(e) => errors.push(Error::netlink(format!("delete {}", link.name))(e)),
        }
    }
    if let Err(e) = forget_stale_local(conf, &local, &ours) {
        errors.push(e);
    }
    if conf.agent.is_none() {
        let ipam = ipam.as_ref().expect("IPAM is delegated outside agent mode");
        if let Err(e) = forget_stale_records(conf, ipam, &valid, &ours, &mut errors) {
            errors.push(e);
        }
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

fn is_valid(valid: &HashSet<(String, String)>, owner: &Owner) -> bool {
    valid.contains(&(owner.container_id.clone(), owner.ifname.clone()))
}

/// The IPAM DEL of `owner`'s attachment (nothing when the agent leases).
fn release(ipam: Option<&Ipam<'_>>, owner: &Owner) -> Result<()> {
    let Some(ipam) = ipam else { return Ok(()) };
    ipam.del(&CallEnv {
        container_id: Some(owner.container_id.clone()),
        ifname: Some(owner.ifname.clone()),
        netns: Some(String::new()),
    })
}

/// The local delivery records, by address, with their host veths.
fn local_records(conf: &NetConf) -> Result<Vec<(std::net::Ipv4Addr, u32)>> {
    let pin_dir = conf.pin_dir();
    let context = format!("read the local delivery records in {}", pin_dir.display());
    Ok(
        match ebpfcni::LocalDeliveryMap::open(&pin_dir).map_err(Error::bpf(context.clone()))? {
            Some(map) => map
                .list()
                .map_err(Error::bpf(context))?
                .into_iter()
                .map(|(addr, record)| (addr, record.ifindex))
                .collect(),
            None => Vec::new(),
        },
    )
}

/// Removes the local delivery records (read before the links) whose host
/// veth is none of ours that stay: whatever network they were written for,
/// a record of a veth that is gone would deliver its address into nothing.
fn forget_stale_local(
    conf: &NetConf,
    local: &[(std::net::Ipv4Addr, u32)],
    ours: &HashMap<u32, Option<Owner>>,
) -> Result<()> {
    let stale: Vec<_> = local.iter().filter(|(_, i)| !ours.contains_key(i)).collect();
    if stale.is_empty() {
        return Ok(());
    }
    let pin_dir = conf.pin_dir();
    let Some(map) = ebpfcni::LocalDeliveryMap::open(&pin_dir).map_err(Error::bpf(format!(
        "open the local delivery records in {}",
        pin_dir.display()
    )))?
    else {
        return Ok(());
    };
    for (addr, index) in stale {
        // Only when it still names the gone veth: an ADD may have given
        // the address to a new pod since.
        match map.get(*addr) {
            Ok(Some(record)) if record.ifindex == *index => {
                log::info!("GC: removing the local delivery of {addr} (gone ifindex {index})");
                map.remove(*addr)
                    .map_err(Error::bpf(format!("remove the local delivery of {addr}")))?;
            }
            Ok(_) => {}
            Err(e) => return Err(Error::bpf(format!("look up the local delivery of {addr}"))(e)),
        }
    }
    Ok(())
}

/// Removes the records of this network whose host veth is gone (and gives
/// their leases back unless their attachment is valid), and records of
/// earlier releases whose ifindex no host veth of ours has; `ours` are the
/// host veths that stay. Failures of one record are pushed on `errors`.
fn forget_stale_records(
    conf: &NetConf,
    ipam: &Ipam<'_>,
    valid: &HashSet<(String, String)>,
    ours: &HashMap<u32, Option<Owner>>,
    errors: &mut Vec<Error>,
) -> Result<()> {
    let pin_dir = conf.pin_dir();
    let context = format!("read the records in {}", pin_dir.display());
    let records = match ebpfcni::InterfaceMap::open(&pin_dir).map_err(Error::bpf(context.clone()))? {
        Some(map) => map.list().map_err(Error::bpf(context.clone()))?,
        None => Vec::new(),
    };
    let attachments: HashMap<u32, Owner> =
        match ebpfcni::AttachmentMap::open(&pin_dir).map_err(Error::bpf(context.clone()))? {
            Some(map) => map.list().map_err(Error::bpf(context))?.into_iter().collect(),
            None => HashMap::new(),
        };
    let indexes: BTreeSet<u32> = records
        .iter()
        .map(|(i, _)| *i)
        .chain(attachments.keys().copied())
        .collect();
    for index in indexes {
        let live = ours.get(&index);
        match attachments.get(&index) {
            Some(owner) if live == Some(&Some(owner.clone())) => {}
            // Another network's: its own GC collects it.
            Some(owner) if owner.network != conf.name => {}
            Some(owner) => {
                log::info!("GC: the host veth of {} (ifindex {index}) is gone", owner.pod());
                if !is_valid(valid, owner) {
                    // Kept when the lease stays: a later GC tries again.
                    if let Err(e) = release(Some(ipam), owner) {
                        errors.push(e);
                        continue;
                    }
                }
                // When the ifindex names another host veth of ours now, its
                // ADD is under way and writes both records over.
                if live.is_none() {
                    if let Err(e) = super::forget_addresses(conf, index) {
                        errors.push(e);
                    }
                }
            }
            None if live.is_some() => {}
            None => {
                log::info!("GC: removing the record of gone ifindex {index} (no attachment recorded)");
                if let Err(e) = super::forget_addresses(conf, index) {
                    errors.push(e);
                }
            }
        }
    }
    Ok(())
}
