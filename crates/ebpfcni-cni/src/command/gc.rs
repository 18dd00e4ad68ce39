//! GC: every host veth of this network (known by its alias) whose
//! attachment is not in `cni.dev/valid-attachments` loses its IPAM
//! allocation (an IPAM DEL for that attachment) and is deleted.

use std::collections::HashSet;

use crate::config::NetConf;
use crate::env::{Command, Env};
use crate::error::{Error, Result};
use crate::ipam::CallEnv;
use crate::netlink::Netlink;
use crate::veth::{Owner, HOST_VETH_PREFIX};

pub fn gc(conf: &NetConf, env: &Env, stdin: &[u8]) -> Result<()> {
    let ipam = super::ipam(conf, env, stdin)?;
    let valid: HashSet<(String, String)> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| Error::config("GC needs cni.dev/valid-attachments"))?
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let mut host = Netlink::open().map_err(Error::netlink("open a netlink socket"))?;
    let mut errors = Vec::new();
    for link in host.links().map_err(Error::netlink("list links"))? {
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
        if let Err(e) = ipam.del(&call) {
            errors.push(e);
        }
        if let Err(e) = host.delete_link(link.index) {
            errors.push(Error::netlink(format!("delete {}", link.name))(e));
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
