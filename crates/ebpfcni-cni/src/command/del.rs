//! DEL: releases the address and removes the veth and its record of the
//! pod's addresses (interface_map), but only interfaces that belong to this
//! attachment. Idempotent: a missing netns (or an empty CNI_NETNS) or veth
//! counts as already deleted, as the spec asks; identities and policy are
//! never touched. Every step runs even when an earlier one failed; all
//! failures are reported together.

use std::path::Path;

use crate::config::NetConf;
use crate::env::{Command, Env};
use crate::error::{Error, Result};
use crate::ipam::CallEnv;
use crate::netlink::Netlink;
use crate::veth::{self, host_veth_name, Owner, OwnerExt, Unpaired};
use crate::{agent, netns, timing};

pub fn del(conf: &NetConf, env: &Env, stdin: &[u8]) -> Result<()> {
    let ipam = super::delegated_ipam(conf, env, stdin)?;
    super::bind_netns_if_used(conf)?;
    // Agent mode: the endpoint's identity goes first, before its address
    // can be handed out again (queued when the agent is unreachable).
    let unregistered = match agent::client(conf) {
        Some(client) => timing::step("agent", || agent::unregister(&client, env)),
        None => Ok(()),
    };
    // The IPAM plugin (a child process) runs while this thread deletes.
    std::thread::scope(|s| {
        let releasing = ipam
            .as_ref()
            .map(|ipam| s.spawn(|| timing::step("ipam", || ipam.del(&CallEnv::default()))));
        let mut errors = remove_veth(conf, env);
        match releasing.map(|r| r.join()) {
            None | Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => errors.insert(0, e),
            Some(Err(_)) => errors.insert(0, Error::ipam("the IPAM thread panicked")),
        }
        if let Err(e) = unregistered {
            errors.insert(0, e);
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

/// Deletes the attachment's veth pair; returns what failed. Only
/// interfaces of this attachment go (see [`Owner::owns_host_end`]): a
/// second container's DEL for an ifname another container holds in the
/// same namespace must not take that container's network away.
fn remove_veth(conf: &NetConf, env: &Env) -> Vec<Error> {
    let owner = Owner::new(&conf.name, &env.container_id, &env.ifname);
    let mut host = match Netlink::open() {
        Ok(host) => host,
        Err(e) => return vec![Error::netlink("open a netlink socket")(e)],
    };
    match remove_host_end(conf, &mut host, &owner) {
        // The pod end went with it.
        Ok(Removed::Pair) => Vec::new(),
        Ok(Removed::Nothing) => timing::step("pod end", || {
            remove_pod_end(conf, &mut host, &owner, &env.netns)
                .err()
                .into_iter()
                .collect()
        }),
        Err(e) => {
            let pod_end = remove_pod_end(conf, &mut host, &owner, &env.netns);
            std::iter::once(e).chain(pod_end.err()).collect()
        }
    }
}

/// What [`remove_host_end`] deleted.
enum Removed {
    /// Our veth pair, by its host end.
    Pair,
    /// Nothing: no veth of that name, or not ours.
    Nothing,
}

/// Deletes the host veth named after this attachment when it is ours; the
/// pod end goes with it.
fn remove_host_end(conf: &NetConf, host: &mut Netlink, owner: &Owner) -> Result<Removed> {
    let name = host_veth_name(&owner.container_id, &owner.ifname);
    let found = host
        .link_by_name(&name)
        .map_err(Error::netlink(format!("look up {name}")))?;
    let Some(link) = found else {
        log::info!("{name} already gone");
        return Ok(Removed::Nothing);
    };
    if !owner.owns_host_end(&link) {
        log::warn!(
            "{name} is not this attachment's (alias {:?}): left alone",
            link.alias.unwrap_or_default()
        );
        return Ok(Removed::Nothing);
    }
    timing::step("record", || super::forget_addresses(conf, link.index))?;
    timing::step("delete veth", || host.delete_link(link.index))
        .map_err(Error::netlink(format!("delete {name}")))?;
    log::info!("deleted {name}");
    Ok(Removed::Pair)
}

/// Deletes CNI_IFNAME in the container when it is the pod end of a veth
/// whose host end is ours. Runs only when [`remove_host_end`] deleted
/// nothing: it catches a pair whose host end was renamed (it keeps our
/// alias); whatever else bears the name belongs to someone else and stays.
fn remove_pod_end(conf: &NetConf, host: &mut Netlink, owner: &Owner, netns_path: &str) -> Result<()> {
    if netns_path.is_empty() {
        return Ok(());
    }
    let ifname = &owner.ifname;
    let file = match netns::open(Path::new(netns_path)) {
        Ok(file) => file,
        Err(e) => {
            log::info!("netns {netns_path} not usable ({e}): nothing to clean there");
            return Ok(());
        }
    };
    let mut container =
        netns::socket_in(&file).map_err(Error::netlink(format!("open a netlink socket in {netns_path}")))?;
    match veth::find_pair(&mut container, host, ifname)? {
        Err(Unpaired::Missing(_)) => {}
        Err(Unpaired::Other(why)) => log::warn!("{why}: left alone"),
        Ok((pod, host_end)) if owner.owns_host_end(&host_end) => {
            super::forget_addresses(conf, host_end.index)?;
            container
                .delete_link(pod.index)
                .map_err(Error::netlink(format!("delete {ifname} in {netns_path}")))?;
            log::info!("deleted {ifname} (peer {})", host_end.name);
        }
        Ok((_, host_end)) => log::warn!(
            "{ifname} in the container is the peer of {}, another attachment's: left alone",
            host_end.name
        ),
    }
    Ok(())
}
