//! ADD, DEL, CHECK, VERSION, STATUS and GC.
//!
//! The layer-3 layout is the reference ptp plugin's: a veth pair per pod,
//! the pod's address without a prefix route, a scope-link route to the
//! gateway and a default route via it; the host end holds the gateway
//! address (/32) and the host a /32 route to the pod. Pods on one node
//! reach each other through the host, where the program runs on both
//! hooks of every host veth.

use std::collections::HashSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use ebpfcni::{Maps, Program, PROGRAM_NAME};
use netlink_packet_route::route::RouteScope;
use serde_json::{json, Value};

use crate::config::{Env, NetConf};
use crate::diag;
use crate::error::{
    fail, CniError, CniResult, ATTACH, BPF, CHECK, INVALID_CONFIG, INVALID_ENV, IPAM, NETLINK, NOT_AVAILABLE,
    SYSCTL, TEARDOWN, TRY_AGAIN_LATER,
};
use crate::ipam::{CallEnv, Ipam};
use crate::netlink::{Link, Netlink, NlError, Route};
use crate::netns;
use crate::result::{network, parse_cidr, Interface, IpConfig, IpamResult, RouteEntry};
use crate::{LATEST, SUPPORTED_VERSIONS};

/// Prefix of host veth names: "ebc" + 12 hex digits.
pub const HOST_VETH_PREFIX: &str = "ebc";

/// Prefix of the alias ADD sets on each host veth:
/// "ebpfcni/<network>/<container id>/<ifname>". GC reads it back to know
/// which attachment a veth belongs to.
const ALIAS_PREFIX: &str = "ebpfcni/";

/// The gateway when IPAM names none: a link-local address every host veth
/// holds (as Calico does), so any pod address works.
const FALLBACK_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The host veth's name for an attachment: stable, at most 15 characters.
/// FNV-1a (64 bits, truncated to 48) of "container id/ifname".
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{HOST_VETH_PREFIX}{:012x}", hash & 0xffff_ffff_ffff)
}

fn alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_PREFIX}{network}/{container_id}/{ifname}")
}

/// A netlink failure: "try again later" when the kernel says busy, else ours.
fn nl(what: impl Into<String>) -> impl FnOnce(NlError) -> CniError {
    let what = what.into();
    move |e| {
        let code = match e.errno() {
            Some(nix::libc::EAGAIN | nix::libc::EBUSY) => TRY_AGAIN_LATER,
            _ => NETLINK,
        };
        CniError::new(code, format!("failed to {what}: {e}"))
    }
}

fn ipam<'a>(conf: &'a NetConf, env: &'a Env, stdin: &'a [u8]) -> CniResult<Ipam<'a>> {
    Ok(Ipam {
        plugin: &conf.ipam()?.plugin_type,
        cni_path: &env.path,
        stdin,
    })
}

fn open_netns(path: &str) -> CniResult<File> {
    netns::open(Path::new(path)).map_err(|e| {
        CniError::new(
            INVALID_ENV,
            format!("CNI_NETNS {path} is not a usable network namespace: {e}"),
        )
    })
}

/// The pod's IPv4 allocation out of an IPAM (or previous) result.
#[derive(Debug)]
struct Allocation {
    /// The address as IPAM wrote it ("10.13.1.2/24").
    cidr: String,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
}

fn allocation(ips: &[IpConfig], interface: Option<usize>) -> CniResult<Allocation> {
    let ip = ips
        .iter()
        .filter(|c| interface.is_none() || c.interface == interface)
        .find_map(|c| parse_cidr(&c.address).map(|(ip, prefix)| (c, ip, prefix)));
    let Some((config, ip, prefix)) = ip else {
        return Err(CniError::new(IPAM, "no IPv4 address in the IPAM result"));
    };
    let gateway = match &config.gateway {
        None => FALLBACK_GATEWAY,
        Some(gw) => gw
            .parse()
            .map_err(|_| CniError::new(IPAM, format!("IPAM gateway {gw:?} is not an IPv4 address")))?,
    };
    if gateway == ip {
        return Err(CniError::new(
            IPAM,
            format!("IPAM gave the gateway {gateway} as the pod's address"),
        ));
    }
    Ok(Allocation {
        cidr: config.address.clone(),
        ip,
        prefix,
        gateway,
    })
}

/// The routes the pod gets (besides the scope-link one to the gateway):
/// the IPAM routes via the gateway, plus a default route when IPAM has none.
fn pod_routes(ipam_routes: &[RouteEntry], gateway: Ipv4Addr) -> Vec<(Ipv4Addr, u8, Ipv4Addr, RouteEntry)> {
    let mut routes: Vec<_> = ipam_routes
        .iter()
        .filter_map(|r| {
            let (dst, len) = parse_cidr(&r.dst)?;
            let gw = r.gw.as_deref().and_then(|g| g.parse().ok()).unwrap_or(gateway);
            let entry = RouteEntry {
                gw: Some(gw.to_string()),
                ..r.clone()
            };
            Some((network(dst, len), len, gw, entry))
        })
        .collect();
    if !routes.iter().any(|(_, len, _, _)| *len == 0) {
        let entry = RouteEntry {
            dst: "0.0.0.0/0".into(),
            gw: Some(gateway.to_string()),
            ..Default::default()
        };
        routes.push((Ipv4Addr::UNSPECIFIED, 0, gateway, entry));
    }
    routes
}

/// Finds the host end of the pod's veth as the kernel knows it: the
/// container end's IFLA_LINK, checked to lie in our namespace through
/// IFLA_LINK_NETNSID.
fn resolve_pair(container: &mut Netlink, host: &mut Netlink, ifname: &str) -> CniResult<(Link, Link)> {
    let pod = container
        .link_by_name(ifname)
        .map_err(nl(format!("look up {ifname} in the container")))?
        .ok_or_else(|| CniError::new(NETLINK, format!("interface {ifname} not found in the container")))?;
    if pod.kind.as_deref() != Some("veth") {
        return Err(CniError::new(
            NETLINK,
            format!("{ifname} in the container is not a veth"),
        ));
    }
    let peer = pod
        .peer_index
        .ok_or_else(|| CniError::new(NETLINK, format!("{ifname} in the container has no peer")))?;
    let here = netns::current().map_err(fail(NETLINK, "open the plugin's netns"))?;
    let here_id = container
        .nsid_of(here.as_raw_fd())
        .map_err(nl("read the id of the plugin's netns"))?;
    if here_id.is_none() || pod.link_netnsid != here_id {
        return Err(CniError::new(
            NETLINK,
            format!("the peer of {ifname} is not in the plugin's network namespace"),
        ));
    }
    let host_end = host
        .link_by_index(peer)
        .map_err(nl(format!("look up ifindex {peer}")))?
        .ok_or_else(|| CniError::new(NETLINK, format!("the peer of {ifname} (ifindex {peer}) is gone")))?;
    Ok((pod, host_end))
}

/// Turns IPv4 forwarding on in the plugin's namespace (/proc/sys/net
/// follows the namespace of the thread that opens it).
fn enable_forwarding() -> CniResult<()> {
    let current = std::fs::read_to_string(IP_FORWARD).map_err(fail(SYSCTL, format!("read {IP_FORWARD}")))?;
    if current.trim() != "1" {
        std::fs::write(IP_FORWARD, "1").map_err(fail(SYSCTL, format!("write {IP_FORWARD}")))?;
    }
    Ok(())
}

pub fn add(conf: &NetConf, env: &Env, stdin: &[u8]) -> CniResult<IpamResult> {
    let ipam = ipam(conf, env, stdin)?;
    let netns_file = open_netns(&env.netns)?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let mut host = Netlink::open().map_err(nl("open a netlink socket"))?;
    let mut container =
        netns::socket_in(&netns_file).map_err(nl(format!("open a netlink socket in {}", env.netns)))?;
    // Both checks come before IPAM: a duplicate ADD must not lead to a
    // rollback that releases the first ADD's address.
    if host
        .link_by_name(&host_name)
        .map_err(nl("look up the host veth"))?
        .is_some()
    {
        return Err(CniError::new(
            NETLINK,
            format!(
                "host veth {host_name} already exists: container {} {} is already attached",
                env.container_id, env.ifname
            ),
        ));
    }
    if container
        .link_by_name(&env.ifname)
        .map_err(nl("look up the pod interface"))?
        .is_some()
    {
        return Err(CniError::new(
            NETLINK,
            format!("{} already exists in the container", env.ifname),
        ));
    }

    // The two slow steps are independent of the veth: the IPAM plugin (a
    // child process) and loading the program (the verifier) run beside this
    // thread, which creates the pair meanwhile.
    let pin_dir = conf.pin_dir();
    std::thread::scope(|s| {
        let loader = s.spawn(|| Program::load(&pin_dir));
        let leasing = s.spawn(|| ipam.add(&CallEnv::default()));
        let mut veth_created = false;
        let pair = plumb(
            conf,
            env,
            &netns_file,
            &mut host,
            &mut container,
            &mut veth_created,
        );
        let leased = leasing
            .join()
            .unwrap_or_else(|_| Err(CniError::new(IPAM, "IPAM thread panicked")));
        let outcome = match (pair, &leased) {
            (Ok((pod, host_end)), Ok(leased)) => {
                diag!("IPAM {} gave {:?}", ipam.plugin, leased.ips);
                let load = || {
                    loader.join().unwrap_or_else(|_| {
                        Err(ebpfcni::Error::Io {
                            context: "load the program".into(),
                            source: std::io::Error::other("the loader thread panicked"),
                        })
                    })
                };
                setup(conf, env, &mut host, &mut container, leased, pod, host_end, load)
            }
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e.clone()),
        };
        outcome.inspect_err(|e| {
            diag!("ADD failed, rolling back: {e}");
            if veth_created {
                let undo = host
                    .link_by_name(&host_name)
                    .and_then(|l| l.map_or(Ok(false), |l| host.delete_link(l.index)));
                if let Err(undo) = undo {
                    diag!("rollback: failed to delete {host_name}: {undo}");
                }
            }
            if leased.is_ok() {
                if let Err(undo) = ipam.del(&CallEnv::default()) {
                    diag!("rollback: failed to release the IPAM allocation: {undo}");
                }
            }
        })
    })
}

/// Creates the veth pair and finds both ends through the kernel.
fn plumb(
    conf: &NetConf,
    env: &Env,
    netns_file: &File,
    host: &mut Netlink,
    container: &mut Netlink,
    veth_created: &mut bool,
) -> CniResult<(Link, Link)> {
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    host.create_veth(&host_name, &env.ifname, netns_file.as_raw_fd(), conf.mtu)
        .map_err(nl(format!("create veth {host_name} <-> {}", env.ifname)))?;
    *veth_created = true;
    let (pod, host_end) = resolve_pair(container, host, &env.ifname)?;
    if host_end.name != host_name {
        return Err(CniError::new(
            NETLINK,
            format!(
                "the peer of {} is {}, expected {host_name}",
                env.ifname, host_end.name
            ),
        ));
    }
    Ok((pod, host_end))
}

/// Addresses, routes, forwarding and the program, then the result.
#[allow(clippy::too_many_arguments)]
fn setup(
    conf: &NetConf,
    env: &Env,
    host: &mut Netlink,
    container: &mut Netlink,
    leased: &IpamResult,
    pod: Link,
    host_end: Link,
    load: impl FnOnce() -> ebpfcni::Result<Program>,
) -> CniResult<IpamResult> {
    let lease = allocation(&leased.ips, None)?;
    let host_name = host_end.name.clone();

    // Pod side: address without a prefix route, gateway on-link, routes via it.
    container
        .set_up(pod.index, None)
        .map_err(nl(format!("set {} up", env.ifname)))?;
    container
        .add_address(pod.index, lease.ip, lease.prefix, false)
        .map_err(nl(format!("add {} to {}", lease.cidr, env.ifname)))?;
    container
        .add_route(&Route::link(lease.gateway, 32, pod.index))
        .map_err(nl(format!("add route {}/32 dev {}", lease.gateway, env.ifname)))?;
    let routes = pod_routes(&leased.routes, lease.gateway);
    for (dst, len, gw, _) in &routes {
        container
            .add_route(&Route::via(*dst, *len, *gw, pod.index))
            .map_err(nl(format!("add route {dst}/{len} via {gw} in the container")))?;
    }

    // Host side: the gateway address, a /32 route to the pod, forwarding.
    host.set_up(
        host_end.index,
        Some(&alias(&conf.name, &env.container_id, &env.ifname)),
    )
    .map_err(nl(format!("set {host_name} up")))?;
    host.add_address(host_end.index, lease.gateway, 32, true)
        .map_err(nl(format!("add {}/32 to {host_name}", lease.gateway)))?;
    host.add_route(&Route::link(lease.ip, 32, host_end.index))
        .map_err(nl(format!("add route {}/32 dev {host_name}", lease.ip)))?;
    enable_forwarding()?;

    // The program on both hooks of the host end.
    let pin_dir = conf.pin_dir();
    let program = load().map_err(fail(
        BPF,
        format!("load the program (maps in {})", pin_dir.display()),
    ))?;
    program
        .attach(host_end.index)
        .map_err(fail(ATTACH, format!("attach the program to {host_name}")))?;
    diag!(
        "{} {} -> host {host_name} (ifindex {}), program {}",
        env.ifname,
        lease.cidr,
        host_end.index,
        program.id()
    );

    // The result, appended to a chained prevResult when there is one.
    let mut result = conf.prev_result.clone().unwrap_or_default();
    result.cni_version = conf.cni_version.clone();
    let first = result.interfaces.len();
    result.interfaces.push(Interface {
        name: host_name,
        mac: host_end.mac_string(),
        ..Default::default()
    });
    result.interfaces.push(Interface {
        name: env.ifname.clone(),
        mac: pod.mac_string(),
        sandbox: env.netns.clone(),
        ..Default::default()
    });
    result.ips.push(IpConfig {
        version: (conf.cni_version == "0.4.0").then(|| "4".to_string()),
        address: lease.cidr.clone(),
        gateway: Some(lease.gateway.to_string()),
        interface: Some(first + 1),
    });
    result
        .routes
        .extend(routes.into_iter().map(|(_, _, _, entry)| entry));
    result.dns = match &conf.dns {
        Some(dns) if !dns.is_empty() => dns.clone(),
        _ if !leased.dns.is_empty() => leased.dns.clone(),
        _ => result.dns,
    };
    Ok(result)
}

/// DEL: releases the address and removes the veth. Idempotent: a missing
/// netns (or an empty CNI_NETNS) or veth counts as already deleted, as the
/// spec asks; the maps are never touched. Every step runs even when an
/// earlier one failed; all failures are reported together.
pub fn del(conf: &NetConf, env: &Env, stdin: &[u8]) -> CniResult<()> {
    let ipam = ipam(conf, env, stdin)?;
    // The IPAM plugin (a child process) runs while this thread deletes.
    std::thread::scope(|s| {
        let releasing = s.spawn(|| ipam.del(&CallEnv::default()));
        let mut errors = remove_veth(env);
        match releasing.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.insert(0, e.msg),
            Err(_) => errors.insert(0, "IPAM thread panicked".into()),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                TEARDOWN,
                format!("DEL failed: {}", errors.join("; ")),
            ))
        }
    })
}

/// Deletes the attachment's veth; returns what failed.
fn remove_veth(env: &Env) -> Vec<String> {
    let mut errors = Vec::new();
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    match Netlink::open() {
        Err(e) => errors.push(format!("failed to open a netlink socket: {e}")),
        Ok(mut host) => match host.link_by_name(&host_name) {
            Ok(Some(link)) => match host.delete_link(link.index) {
                Ok(_) => diag!("deleted {host_name}"),
                Err(e) => errors.push(format!("failed to delete {host_name}: {e}")),
            },
            Ok(None) => diag!("{host_name} already gone"),
            Err(e) => errors.push(format!("failed to look up {host_name}: {e}")),
        },
    }
    // The pod end goes with the host end; this only catches a pair whose
    // host end was renamed or moved.
    if !env.netns.is_empty() {
        match netns::open(Path::new(&env.netns)) {
            Err(e) => diag!("netns {} not usable ({e}): nothing to clean there", env.netns),
            Ok(file) => {
                let cleaned =
                    netns::socket_in(&file).and_then(|mut c| match c.link_by_name(&env.ifname)? {
                        Some(link) if link.kind.as_deref() == Some("veth") => {
                            c.delete_link(link.index).map(drop)
                        }
                        _ => Ok(()),
                    });
                if let Err(e) = cleaned {
                    errors.push(format!("failed to delete {} in {}: {e}", env.ifname, env.netns));
                }
            }
        }
    }
    errors
}

pub fn check(conf: &NetConf, env: &Env, stdin: &[u8]) -> CniResult<()> {
    let ipam = ipam(conf, env, stdin)?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(INVALID_CONFIG, "invalid network config: CHECK needs prevResult"))?;
    let netns_file = open_netns(&env.netns)?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let missing = |what: String| CniError::new(CHECK, what);

    let pod_index = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            missing(format!(
                "prevResult has no interface {} with a sandbox",
                env.ifname
            ))
        })?;
    let lease = allocation(&prev.ips, Some(pod_index))?;

    let mut host = Netlink::open().map_err(nl("open a netlink socket"))?;
    let mut container =
        netns::socket_in(&netns_file).map_err(nl(format!("open a netlink socket in {}", env.netns)))?;
    let (pod, host_end) = resolve_pair(&mut container, &mut host, &env.ifname).map_err(|e| missing(e.msg))?;
    if host_end.name != host_name {
        return Err(missing(format!(
            "the peer of {} is {}, expected {host_name}",
            env.ifname, host_end.name
        )));
    }
    let expected_mac = &prev.interfaces[pod_index].mac;
    if !expected_mac.is_empty() && !expected_mac.eq_ignore_ascii_case(&pod.mac_string()) {
        return Err(missing(format!(
            "{} has mac {}, prevResult says {expected_mac}",
            env.ifname,
            pod.mac_string()
        )));
    }
    for (name, link) in [(&env.ifname, &pod), (&host_name, &host_end)] {
        if !link.up {
            return Err(missing(format!("{name} is down")));
        }
        if let Some(mtu) = conf.mtu.filter(|m| *m != link.mtu) {
            return Err(missing(format!(
                "{name} has mtu {}, the config says {mtu}",
                link.mtu
            )));
        }
    }

    let pod_addrs = container
        .addresses(pod.index)
        .map_err(nl("list the pod's addresses"))?;
    if !pod_addrs.contains(&(lease.ip, lease.prefix)) {
        return Err(missing(format!(
            "address {} missing on {}",
            lease.cidr, env.ifname
        )));
    }
    let pod_routes_now = container.routes().map_err(nl("list the pod's routes"))?;
    let want = std::iter::once(Route::link(lease.gateway, 32, pod.index)).chain(
        pod_routes(&[], lease.gateway)
            .into_iter()
            .map(|(dst, len, gw, _)| Route::via(dst, len, gw, pod.index)),
    );
    for route in want {
        if !pod_routes_now.iter().any(|r| same_route(r, &route)) {
            return Err(missing(format!(
                "route {} missing in the container",
                describe(&route, &env.ifname)
            )));
        }
    }
    let host_addrs = host
        .addresses(host_end.index)
        .map_err(nl("list the host veth's addresses"))?;
    if !host_addrs.contains(&(lease.gateway, 32)) {
        return Err(missing(format!(
            "gateway address {}/32 missing on {host_name}",
            lease.gateway
        )));
    }
    let host_route = Route::link(lease.ip, 32, host_end.index);
    if !host
        .routes()
        .map_err(nl("list the host's routes"))?
        .iter()
        .any(|r| same_route(r, &host_route))
    {
        return Err(missing(format!(
            "host route {} missing",
            describe(&host_route, &host_name)
        )));
    }

    let pin_dir = conf.pin_dir();
    let maps = Maps::open(&pin_dir).map_err(fail(BPF, format!("open the maps in {}", pin_dir.display())))?;
    let map_ids = maps.ids().map_err(fail(BPF, "read the ids of the pinned maps"))?;
    let attached = ebpfcni::attachment(host_end.index)
        .map_err(fail(BPF, format!("query the filters of {host_name}")))?;
    for (hook, id) in [("ingress", attached.ingress), ("egress", attached.egress)] {
        let id = id.ok_or_else(|| missing(format!("no ebpfcni filter on tc {hook} of {host_name}")))?;
        let info = ebpfcni::program_info(id).map_err(fail(BPF, format!("read program {id}")))?;
        if info.name != PROGRAM_NAME {
            return Err(missing(format!(
                "tc {hook} of {host_name} runs program {:?} (id {id}), not {PROGRAM_NAME}",
                info.name
            )));
        }
        if let Some(absent) = map_ids.iter().find(|m| !info.map_ids.contains(m)) {
            return Err(missing(format!(
                "the program on tc {hook} of {host_name} (id {id}) does not use map {absent} pinned in {}",
                pin_dir.display()
            )));
        }
    }
    // Last: our own findings name the interface or hook that is off.
    ipam.check(&CallEnv::default())
}

fn same_route(have: &Route, want: &Route) -> bool {
    have.dst == want.dst
        && have.prefix == want.prefix
        && have.gateway == want.gateway
        && have.oif == want.oif
        && (want.scope != RouteScope::Link || have.scope == RouteScope::Link)
}

fn describe(route: &Route, dev: &str) -> String {
    match route.gateway {
        Some(gw) => format!("{}/{} via {gw} dev {dev}", route.dst, route.prefix),
        None => format!("{}/{} dev {dev} scope link", route.dst, route.prefix),
    }
}

/// VERSION: the versions we speak, answered in the requested one.
pub fn version(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST.to_string());
    json!({ "cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS })
}

/// STATUS: ready when bpffs is usable, the program loads against the
/// pinned maps, and the IPAM plugin is on CNI_PATH.
pub fn status(conf: &NetConf, env: &Env) -> CniResult<()> {
    let ipam = ipam(conf, env, &[])?;
    let pin_dir = conf.pin_dir();
    let not_ready = |what: String| CniError::new(NOT_AVAILABLE, what);
    ebpfcni::bpffs::prepare_pin_dir(&pin_dir)
        .map_err(|e| not_ready(format!("bpffs not usable at {}: {e}", pin_dir.display())))?;
    Program::load(&pin_dir).map_err(|e| not_ready(format!("the program does not load: {e}")))?;
    if ipam.find().is_none() {
        return Err(not_ready(format!(
            "IPAM plugin {:?} not found on CNI_PATH {}",
            ipam.plugin, env.path
        )));
    }
    Ok(())
}

/// GC: every host veth of this network (known by its alias) whose
/// attachment is not in `cni.dev/valid-attachments` loses its IPAM
/// allocation (an IPAM DEL for that attachment) and is deleted.
pub fn gc(conf: &NetConf, env: &Env, stdin: &[u8]) -> CniResult<()> {
    let ipam = ipam(conf, env, stdin)?;
    let valid: HashSet<(String, String)> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| {
            CniError::new(
                INVALID_CONFIG,
                "invalid network config: GC needs cni.dev/valid-attachments",
            )
        })?
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let mut host = Netlink::open().map_err(nl("open a netlink socket"))?;
    let ours = format!("{ALIAS_PREFIX}{}/", conf.name);
    let mut errors = Vec::new();
    for link in host.links().map_err(nl("list links"))? {
        if !link.name.starts_with(HOST_VETH_PREFIX) {
            continue;
        }
        let Some((container_id, ifname)) = link
            .alias
            .as_deref()
            .and_then(|a| a.strip_prefix(&ours))
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        if valid.contains(&(container_id.to_string(), ifname.to_string())) {
            continue;
        }
        diag!("GC: stale attachment {container_id} {ifname} ({})", link.name);
        let call = CallEnv {
            container_id: Some(container_id.to_string()),
            ifname: Some(ifname.to_string()),
            netns: Some(String::new()),
        };
        if let Err(e) = ipam.del(&call) {
            errors.push(e.msg);
        }
        if let Err(e) = host.delete_link(link.index) {
            errors.push(format!("failed to delete {}: {e}", link.name));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            TEARDOWN,
            format!("GC failed: {}", errors.join("; ")),
        ))
    }
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
    fn pod_routes_add_a_default_route_unless_ipam_has_one() {
        let gw = Ipv4Addr::new(10, 13, 1, 1);
        let routes = pod_routes(&[], gw);
        assert_eq!(routes.len(), 1);
        assert_eq!(
            (routes[0].0, routes[0].1, routes[0].2),
            (Ipv4Addr::UNSPECIFIED, 0, gw)
        );

        let ipam = [RouteEntry {
            dst: "10.99.0.7/16".into(),
            ..Default::default()
        }];
        let routes = pod_routes(&ipam, gw);
        assert_eq!(routes.len(), 2);
        assert_eq!((routes[0].0, routes[0].1), (Ipv4Addr::new(10, 99, 0, 0), 16));
        assert_eq!(routes[0].3.gw.as_deref(), Some("10.13.1.1"));

        let ipam = [RouteEntry {
            dst: "0.0.0.0/0".into(),
            gw: Some("10.13.1.254".into()),
            ..Default::default()
        }];
        let routes = pod_routes(&ipam, gw);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].2, Ipv4Addr::new(10, 13, 1, 254));
    }

    #[test]
    fn allocation_takes_the_ipam_gateway_or_the_link_local_one() {
        let ip = |address: &str, gateway: Option<&str>| IpConfig {
            address: address.into(),
            gateway: gateway.map(str::to_string),
            ..Default::default()
        };
        let lease = allocation(&[ip("10.13.1.5/24", Some("10.13.1.1"))], None).unwrap();
        assert_eq!(
            (lease.ip, lease.prefix, lease.gateway),
            ("10.13.1.5".parse().unwrap(), 24, "10.13.1.1".parse().unwrap())
        );
        let lease = allocation(&[ip("fd00::5/64", None), ip("10.13.1.5/32", None)], None).unwrap();
        assert_eq!(lease.gateway, FALLBACK_GATEWAY);
        assert_eq!(
            allocation(&[ip("10.13.1.1/24", Some("10.13.1.1"))], None)
                .unwrap_err()
                .code,
            IPAM
        );
        assert_eq!(allocation(&[], None).unwrap_err().code, IPAM);
    }
}
