//! CHECK: the attachment is still what ADD set up (prevResult): the veth
//! pair, its state, addresses and routes on both sides, and our program on
//! both hooks of the host end, using the pinned maps. It never reads or
//! writes map entries (identities and policy are the operator's). The IPAM
//! plugin's own CHECK runs last, so that our findings name what is off.

use ebpfcni::{Hook, Maps, Program};

use crate::addressing::{pod_routes, Allocation};
use crate::config::NetConf;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::ipam::CallEnv;
use crate::netlink::{Link, Netlink, Route};
use crate::result::IpamResult;
use crate::veth::{self, host_veth_name};
use crate::{agent, netns};

pub fn check(conf: &NetConf, env: &Env, stdin: &[u8]) -> Result<()> {
    super::check_pin_dir(conf)?;
    super::check_netns(conf)?;
    let ipam = super::delegated_ipam(conf, env, stdin)?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::config("CHECK needs prevResult"))?;
    let netns_file = super::open_netns(&env.netns)?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);

    let pod_index = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            Error::CheckFailed(format!(
                "prevResult has no interface {} with a sandbox",
                env.ifname
            ))
        })?;
    let lease = Allocation::from_ips(&prev.ips, Some(pod_index)).map_err(Error::BadPrevResult)?;

    let mut host = Netlink::open().map_err(Error::netlink("open a netlink socket"))?;
    let mut container = netns::socket_in(&netns_file)
        .map_err(Error::netlink(format!("open a netlink socket in {}", env.netns)))?;
    let (pod, host_end) = veth::resolve_pair(&mut container, &mut host, &env.ifname)
        .map_err(|e| Error::CheckFailed(e.to_string()))?;
    if host_end.name != host_name {
        return Err(Error::CheckFailed(format!(
            "the peer of {} is {}, expected {host_name}",
            env.ifname, host_end.name
        )));
    }
    check_links(conf, env, prev, pod_index, &pod, &host_end)?;
    check_pod_side(env, prev, &mut container, &pod, &lease)?;
    check_host_side(&mut host, &host_end, &lease)?;
    check_record(conf, &host_end, &lease)?;
    check_program(conf, &host_end)?;
    if let Some(client) = agent::client(conf) {
        agent::check(&client, env, &host_end)?;
    }
    ipam.map_or(Ok(()), |ipam| ipam.check(&CallEnv::default()))
}

/// Both ends up, with the MAC of prevResult and the configured MTU.
fn check_links(
    conf: &NetConf,
    env: &Env,
    prev: &IpamResult,
    pod_index: usize,
    pod: &Link,
    host_end: &Link,
) -> Result<()> {
    let expected_mac = &prev.interfaces[pod_index].mac;
    if !expected_mac.is_empty() && !expected_mac.eq_ignore_ascii_case(&pod.mac_string()) {
        return Err(Error::CheckFailed(format!(
            "{} has mac {}, prevResult says {expected_mac}",
            env.ifname,
            pod.mac_string()
        )));
    }
    for (name, link) in [(&env.ifname, pod), (&host_end.name, host_end)] {
        if !link.up {
            return Err(Error::CheckFailed(format!("{name} is down")));
        }
        if let Some(mtu) = conf.mtu.filter(|m| *m != link.mtu) {
            return Err(Error::CheckFailed(format!(
                "{name} has mtu {}, the config says {mtu}",
                link.mtu
            )));
        }
    }
    Ok(())
}

/// The pod's address, its on-link route to the gateway and the routes via it.
fn check_pod_side(
    env: &Env,
    prev: &IpamResult,
    container: &mut Netlink,
    pod: &Link,
    lease: &Allocation,
) -> Result<()> {
    let addrs = container
        .addresses(pod.index)
        .map_err(Error::netlink("list the pod's addresses"))?;
    if !addrs.contains(&(lease.ip(), lease.net.prefix_len())) {
        return Err(Error::CheckFailed(format!(
            "address {} missing on {}",
            lease.net, env.ifname
        )));
    }
    let present = container
        .routes()
        .map_err(Error::netlink("list the pod's routes"))?;
    // The routes ADD made are those it reported in the result (prevResult
    // here) via our gateway; a chain's other plugins may report more.
    let ours = pod_routes(&prev.routes, lease.gateway)
        .into_iter()
        .filter(|r| r.gateway == lease.gateway);
    let want = std::iter::once(Route::link(lease.gateway, 32, pod.index))
        .chain(ours.map(|r| Route::via(r.dst.addr(), r.dst.prefix_len(), r.gateway, pod.index)));
    for route in want {
        if !present.iter().any(|r| r.satisfies(&route)) {
            return Err(Error::CheckFailed(format!(
                "route {} missing in the container",
                route.describe(&env.ifname)
            )));
        }
    }
    Ok(())
}

/// The gateway address on the host end and the host's /32 route to the pod.
fn check_host_side(host: &mut Netlink, host_end: &Link, lease: &Allocation) -> Result<()> {
    let name = &host_end.name;
    let addrs = host
        .addresses(host_end.index)
        .map_err(Error::netlink("list the host veth's addresses"))?;
    if !addrs.contains(&(lease.gateway, 32)) {
        return Err(Error::CheckFailed(format!(
            "gateway address {}/32 missing on {name}",
            lease.gateway
        )));
    }
    let route = Route::link(lease.ip(), 32, host_end.index);
    let routes = host.routes().map_err(Error::netlink("list the host's routes"))?;
    if !routes.iter().any(|r| r.satisfies(&route)) {
        return Err(Error::CheckFailed(format!(
            "host route {} missing",
            route.describe(name)
        )));
    }
    Ok(())
}

/// The record of the pod's addresses behind the host end (source trust):
/// without it, or without the pod's address in it, what the pod sends is
/// dropped.
fn check_record(conf: &NetConf, host_end: &Link, lease: &Allocation) -> Result<()> {
    let (pin_dir, name, index) = (conf.pin_dir(), &host_end.name, host_end.index);
    let record = ebpfcni::InterfaceMap::open(&pin_dir)
        .and_then(|map| map.map(|m| m.get(index)).transpose())
        .map_err(Error::bpf(format!("read the record of {name}")))?
        .flatten();
    match record {
        None => Err(Error::CheckFailed(format!(
            "no record of the pod's addresses for {name} (ifindex {index}) in {}: everything the pod sends is dropped",
            pin_dir.display()
        ))),
        Some(addrs) if !addrs.contains(&lease.ip()) => Err(Error::CheckFailed(format!(
            "the record for {name} (ifindex {index}) holds {addrs:?}, not the pod's {}",
            lease.ip()
        ))),
        Some(_) => Ok(()),
    }
}

/// Our program on both hooks of the host end, using the pinned maps.
fn check_program(conf: &NetConf, host_end: &Link) -> Result<()> {
    let (pin_dir, name) = (conf.pin_dir(), &host_end.name);
    let maps = Maps::open(&pin_dir).map_err(Error::bpf(format!("open the maps in {}", pin_dir.display())))?;
    let attached =
        ebpfcni::attachment(host_end.index).map_err(Error::bpf(format!("query the tc hooks of {name}")))?;
    let current = Program::pinned(&pin_dir, &maps).map_err(Error::bpf("open this build's pinned program"))?;
    for (hook, id) in [(Hook::FromPod, attached.ingress), (Hook::ToPod, attached.egress)] {
        let (tc, want) = (hook.tc_name(), hook.program_name());
        let id = id.ok_or_else(|| Error::CheckFailed(format!("no ebpfcni program on tc {tc} of {name}")))?;
        let info = ebpfcni::program_info(id).map_err(Error::bpf(format!("read program {id}")))?;
        if info.name != want {
            return Err(Error::CheckFailed(format!(
                "tc {tc} of {name} runs program {:?} (id {id}), not {want}",
                info.name
            )));
        }
        let foreign = info
            .foreign_maps(&maps)
            .map_err(Error::bpf(format!("read the maps of program {id}")))?;
        if let Some((map, other)) = foreign.first() {
            return Err(Error::CheckFailed(format!(
                "the program on tc {tc} of {name} (id {id}) uses a {map} (id {other}) other than the one pinned in {}",
                pin_dir.display()
            )));
        }
        // After an upgrade, pods attached before it run the older build's
        // program until they are attached again.
        let reattach = "re-attach every pod with `policyctl reattach` in this namespace";
        match &current {
            Some(program) if program.id(hook) == id => {}
            Some(program) => {
                return Err(Error::CheckFailed(format!(
                    "tc {tc} of {name} runs program id {id}, not this build's (id {}, build {}): an older \
                     build's; {reattach}",
                    program.id(hook),
                    ebpfcni::PROGRAM_BUILD_ID
                )))
            }
            None => {
                return Err(Error::CheckFailed(format!(
                "tc {tc} of {name} runs program id {id}, but this build's program (build {}) is not pinned \
                     in {}: the pod runs an older build's; {reattach}",
                ebpfcni::PROGRAM_BUILD_ID,
                pin_dir.display()
            )))
            }
        }
    }
    Ok(())
}
