//! DEL: releases the address and removes the veth. Idempotent: a missing
//! netns (or an empty CNI_NETNS) or veth counts as already deleted, as the
//! spec asks; the maps are never touched. Every step runs even when an
//! earlier one failed; all failures are reported together.

use std::path::Path;

use crate::config::NetConf;
use crate::env::{Command, Env};
use crate::error::{Error, Result};
use crate::ipam::CallEnv;
use crate::netlink::Netlink;
use crate::netns;
use crate::veth::host_veth_name;

pub fn del(conf: &NetConf, env: &Env, stdin: &[u8]) -> Result<()> {
    let ipam = super::ipam(conf, env, stdin)?;
    // The IPAM plugin (a child process) runs while this thread deletes.
    std::thread::scope(|s| {
        let releasing = s.spawn(|| ipam.del(&CallEnv::default()));
        let mut errors = remove_veth(env);
        match releasing.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.insert(0, e),
            Err(_) => errors.insert(0, Error::ipam("the IPAM thread panicked")),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown {
                command: Command::Del.name(),
                errors,
            })
        }
    })
}

/// Deletes the attachment's veth; returns what failed.
fn remove_veth(env: &Env) -> Vec<Error> {
    let mut errors = Vec::new();
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    match Netlink::open() {
        Err(e) => errors.push(Error::netlink("open a netlink socket")(e)),
        Ok(mut host) => match host.link_by_name(&host_name) {
            Ok(Some(link)) => match host.delete_link(link.index) {
                Ok(_) => log::info!("deleted {host_name}"),
                Err(e) => errors.push(Error::netlink(format!("delete {host_name}"))(e)),
            },
            Ok(None) => log::info!("{host_name} already gone"),
            Err(e) => errors.push(Error::netlink(format!("look up {host_name}"))(e)),
        },
    }
    // The pod end goes with the host end; this only catches a pair whose
    // host end was renamed or moved.
    if !env.netns.is_empty() {
        match netns::open(Path::new(&env.netns)) {
            Err(e) => log::info!("netns {} not usable ({e}): nothing to clean there", env.netns),
            Ok(file) => {
                let cleaned =
                    netns::socket_in(&file).and_then(|mut c| match c.link_by_name(&env.ifname)? {
                        Some(link) if link.kind.as_deref() == Some("veth") => {
                            c.delete_link(link.index).map(drop)
                        }
                        _ => Ok(()),
                    });
                if let Err(e) = cleaned {
                    errors.push(Error::netlink(format!("delete {} in {}", env.ifname, env.netns))(
                        e,
                    ));
                }
            }
        }
    }
    errors
}
