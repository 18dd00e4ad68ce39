//! ADD: a veth pair into the pod, its addresses and routes (see
//! [`crate::addressing`]), and the program on both hooks of the host end.
//! Everything acquired is given back when a later step fails.

use std::fs::File;
use std::net::Ipv4Addr;

use ebpfcni::{AttachmentMap, Hook, LocalDelivery, Maps, Program};

use crate::addressing::{pod_routes, Allocation, PodRoute};
use crate::claim::Claim;
use crate::config::NetConf;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::ipam::{CallEnv, Ipam};
use crate::netlink::{Link, Netlink, Route};
use crate::result::{Interface, IpConfig, IpamResult};
use crate::veth::{self, host_veth_name, Owner, OwnerExt};
use crate::{agent, netns, sysctl, timing};

pub fn add(conf: &NetConf, env: &Env, stdin: &[u8]) -> Result<IpamResult> {
    let prepare = std::time::Instant::now();
    // What would otherwise fail half way is refused before anything is touched.
    super::check_pin_dir(conf)?;
    Owner::new(&conf.name, &env.container_id, &env.ifname).check_alias_fits()?;
    // Agent mode: an agent that does not answer fails the ADD before
    // anything exists; without an "ipam" section the agent leases.
    let agent = agent::client(conf);
    if let Some(client) = &agent {
        timing::step("agent", || agent::ensure_reachable(client))?;
    }
    let ipam = super::delegated_ipam(conf, env, stdin)?;
    timing::step("netns binding", || super::bind_netns(conf))?;
    let netns_file = super::open_netns(&env.netns)?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let mut host = Netlink::open().map_err(Error::netlink("open a netlink socket"))?;
    let claim = timing::step("claim", || Claim::take(&host_name))?;
    // The IPAM plugin keys its leases by the attachment (container id and
    // interface), which also names the host veth: while that veth exists,
    // the attachment is set up, and this ADD must neither take its lease
    // again nor, failing later, release it.
    if host
        .link_by_name(&host_name)
        .map_err(Error::netlink(format!("look up {host_name}")))?
        .is_some()
    {
        return Err(Error::Plumbing(format!(
            "{host_name}, the host veth of container {} interface {}, already exists: \
             the attachment is set up (DEL it first)",
            env.container_id, env.ifname
        )));
    }
    timing::record("prepare", prepare.elapsed());

    // The lease (the IPAM plugin's exec, the slowest step) is taken from
    // here on, beside all the rest; the program comes from a thread of its
    // own (this build's pinned program, or on the first ADD, loaded: the
    // verifier is the slowest step of all). The claim is held until the
    // veth exists: a racing ADD of this attachment waits, then finds it.
    let pin_dir = conf.pin_dir();
    std::thread::scope(|s| {
        let leasing = ipam
            .as_ref()
            .map(|ipam| s.spawn(|| timing::step("ipam", || ipam.add(&CallEnv::default()))));
        let loader = s.spawn(|| {
            let start = std::time::Instant::now();
            Program::shared(&pin_dir).map(|(program, provenance)| {
                log::info!(
                    "program: {provenance:?} (build {}) in {:.2} ms, beside the rest",
                    ebpfcni::PROGRAM_BUILD_ID,
                    start.elapsed().as_secs_f64() * 1e3
                );
                program
            })
        });
        let mut setup = Setup {
            conf,
            env,
            host_name,
            host,
            container: None,
            created: None,
            recorded: false,
            delivering: false,
            agent: agent.as_ref(),
        };
        let host_side = setup.make_pair(&netns_file, claim).and_then(|ends| {
            let program = timing::step("program wait", || {
                joined(loader, || ebpfcni::Error::Io {
                    context: "load the program".into(),
                    source: std::io::Error::other("the loader thread panicked"),
                })
            })
            .map_err(Error::bpf(format!(
                "load the program (maps in {})",
                pin_dir.display()
            )))?;
            let maps = timing::step("maps", || Maps::open(&pin_dir))
                .map_err(Error::bpf(format!("open the maps in {}", pin_dir.display())))?;
            setup.attach(&ends.1, &program)?;
            timing::step("up", || setup.set_up(&ends))?;
            Ok((ends, program, maps))
        });
        let lease = match leasing {
            Some(thread) => joined(thread, || {
                Error::ipam("the thread running the IPAM plugin panicked")
            })
            .map(Some),
            None => Ok(None),
        };
        // The plugin succeeded (it holds a lease) even when its result
        // cannot be decoded: that lease is given back too.
        let leased = matches!(lease, Ok(Some(_)));
        let lease = lease.and_then(|decoded| decoded.transpose());
        let outcome = host_side.and_then(|prepared| {
            let lease = lease?;
            if let (Some(ipam), Some(lease)) = (&ipam, &lease) {
                log::info!("IPAM {} gave {:?}", ipam.plugin, lease.ips);
            }
            setup.configure(prepared, lease)
        });
        outcome.inspect_err(|e| setup.roll_back(e, ipam.as_ref().filter(|_| leased)))
    })
}

/// The result of a thread of this ADD; a panic becomes `panicked()`.
fn joined<T, E>(
    thread: std::thread::ScopedJoinHandle<'_, Result<T, E>>,
    panicked: impl FnOnce() -> E,
) -> Result<T, E> {
    thread.join().unwrap_or_else(|_| Err(panicked()))
}

/// One ADD in progress: what it knows and what it has created.
struct Setup<'a> {
    conf: &'a NetConf,
    env: &'a Env,
    host_name: String,
    /// Netlink in the plugin's (host) namespace and, once opened, in the
    /// container's.
    host: Netlink,
    container: Option<Netlink>,
    /// The ifindex of the host veth this ADD created, once it has.
    created: Option<u32>,
    /// Whether this ADD recorded the pod's addresses in interface_map.
    recorded: bool,
    /// Whether this ADD recorded where the pod lives in local_map.
    delivering: bool,
    /// Agent mode: the agent's client.
    agent: Option<&'a ebpfcni_api::Client>,
}

/// Both ends of the pod's veth: (pod end, host end).
type Ends = (Link, Link);

impl Setup<'_> {
    fn container(&mut self) -> &mut Netlink {
        self.container.as_mut().expect("opened by make_pair")
    }

    /// Creates the veth pair (exclusively: a pair of that name fails it),
    /// keeps IPv6 off both ends, and finds them through the kernel.
    fn make_pair(&mut self, netns_file: &File, claim: Claim) -> Result<Ends> {
        let env = self.env;
        let mut container = netns::socket_in(netns_file)
            .map_err(Error::netlink(format!("open a netlink socket in {}", env.netns)))?;
        if container
            .link_by_name(&env.ifname)
            .map_err(Error::netlink(format!("look up {} in the container", env.ifname)))?
            .is_some()
        {
            return Err(Error::Plumbing(format!(
                "{} already exists in the container",
                env.ifname
            )));
        }
        let index = timing::step("veth", || {
            veth::create(
                &mut self.host,
                &self.host_name,
                &env.ifname,
                netns_file,
                self.conf.mtu,
            )
        })?;
        self.created = Some(index);
        drop(claim); // the veth claims the attachment from now on
        let (pod, host_end) = veth::resolve_pair(&mut container, &mut self.host, &env.ifname)?;
        if host_end.index != index {
            return Err(Error::Plumbing(format!(
                "the peer of {} is {} (ifindex {}), not the {} (ifindex {index}) just created",
                env.ifname, host_end.name, host_end.index, self.host_name
            )));
        }
        // Before either end is up. The host end takes no IPv6 at all: the
        // program judges IPv4 only and lets other frames pass, so IPv6 from
        // the pod must reach nothing on the node. The pod end gets no IPv6
        // address (not even link-local), set over netlink: a sysctl write
        // would need a thread inside the pod's namespace, and under many
        // ADDs at once it spins on the rtnl lock (the kernel's handler only
        // tries it and restarts the write).
        timing::step("no ipv6", || {
            sysctl::disable_ipv6(&self.host_name).map_err(|source| Error::Sysctl {
                context: format!("turn IPv6 off on {}", self.host_name),
                source,
            })?;
            container
                .set_no_ipv6_addresses(pod.index)
                .map_err(Error::netlink(format!(
                    "keep IPv6 addresses off {} in the container",
                    env.ifname
                )))
        })?;
        self.container = Some(container);
        Ok((pod, host_end))
    }

    /// Attaches the program to both hooks of the host end (before the pod
    /// has an address: nothing passes yet).
    fn attach(&mut self, host_end: &Link, program: &Program) -> Result<()> {
        timing::step("attach", || {
            program.attach_as(host_end.index, self.conf.attach_mode())
        })
        .map_err(|source| Error::Attach {
            context: format!("attach the program to {}", self.host_name),
            source,
        })
    }

    /// Brings both ends up, the host end with its owner's alias: after the
    /// program is attached, before the lease (there is no address yet).
    fn set_up(&mut self, (pod, host_end): &Ends) -> Result<()> {
        let (conf, env) = (self.conf, self.env);
        let owner = Owner::new(&conf.name, &env.container_id, &env.ifname);
        self.container()
            .set_up(pod.index, None)
            .map_err(Error::netlink(format!("set {} up", env.ifname)))?;
        self.host
            .set_up(host_end.index, Some(&owner.alias()))
            .map_err(Error::netlink(format!("set {} up", self.host_name)))
    }

    /// With the lease (the IPAM plugin's; in agent mode without "ipam", the
    /// agent's): the pod's address recorded for the program (in agent mode
    /// by the agent, with the pod's identity), then addresses, routes and
    /// forwarding; then the result.
    fn configure(
        &mut self,
        ((pod, host_end), program, maps): (Ends, Program, Maps),
        leased: Option<IpamResult>,
    ) -> Result<IpamResult> {
        let (conf, env) = (self.conf, self.env);
        // Agent mode: the agent records the pod's address with its
        // identity (before the pod has its address: without a record,
        // everything it sends is dropped).
        let leased = match self.agent {
            Some(client) => {
                let ips = match &leased {
                    Some(l) => vec![Allocation::from_ips(&l.ips, None)
                        .map_err(Error::UnusableIpamResult)?
                        .ip()],
                    None => Vec::new(),
                };
                let endpoint =
                    timing::step("register", || agent::register(client, conf, env, &host_end, ips))?;
                log::info!(
                    "agent: {:?} identity {} ({} labels)",
                    endpoint.ips,
                    endpoint.identity,
                    endpoint.labels.len()
                );
                match leased {
                    Some(l) => l,
                    None => agent::lease_result(&endpoint).ok_or_else(|| {
                        Error::ipam("the agent registered the pod without leasing it an address")
                    })?,
                }
            }
            None => leased.expect("IPAM runs outside agent mode"),
        };
        let lease = Allocation::from_ips(&leased.ips, None).map_err(Error::UnusableIpamResult)?;
        let attachments = timing::step("gateway check", || {
            let attachments = AttachmentMap::open_or_create(&self.conf.pin_dir())
                .map_err(Error::bpf("open the attachment records"))?;
            refuse_other_pods_address(&maps, &attachments, lease.gateway).map(|()| attachments)
        })?;
        let routes = pod_routes(&leased.routes, lease.gateway);
        if self.agent.is_none() {
            // Before the pod has its address: without a record, everything
            // it sends is dropped. Whose record it is comes first, so that
            // GC always knows (and can give back its lease once the veth
            // is gone).
            self.recorded = true;
            let owner = Owner::new(&conf.name, &env.container_id, &env.ifname);
            timing::step("record", || {
                attachments
                    .set(host_end.index, &owner)
                    .and_then(|()| maps.interfaces.set(host_end.index, &[lease.ip()]))
            })
            .map_err(Error::bpf(format!("record {}'s address", self.host_name)))?;
        }
        // Where the pod lives, for local delivery (plumbing: in agent mode
        // too), before the pod has its address.
        self.delivering = true;
        timing::step("local record", || {
            maps.local.set(
                lease.ip(),
                &LocalDelivery {
                    ifindex: host_end.index,
                    pod_mac: mac_of(&pod)?,
                    host_mac: mac_of(&host_end)?,
                    redirect: conf.local_redirect(),
                },
            )
        })
        .map_err(Error::bpf(format!("record where {} lives", lease.ip())))?;
        if self.agent.is_some() {
            // The agent wrote the pod's identity before the record existed:
            // the record carries a copy (the agent copies again at each
            // change; under the pin directory's lock, the last copy wins).
            timing::step("local identity", || {
                maps.local.carry_identity(lease.ip(), &maps.endpoints)
            })
            .map_err(Error::bpf(format!(
                "carry {}'s identity in its local record",
                lease.ip()
            )))?;
        }
        timing::step("pod", || self.configure_pod(&pod, &lease, &routes))?;
        timing::step("host", || self.configure_host(&host_end, &lease))?;
        timing::step("forwarding", sysctl::enable_forwarding)?;
        log::info!(
            "{} {} -> host {} (ifindex {}), programs {} (from pod), {} (to pod)",
            env.ifname,
            lease.net,
            self.host_name,
            host_end.index,
            program.id(Hook::FromPod),
            program.id(Hook::ToPod)
        );
        Ok(result(conf, env, &host_end, &pod, &lease, routes, &leased))
    }

    /// Pod side (up already): the address without a prefix route, the
    /// gateway on-link, the routes via it.
    fn configure_pod(&mut self, pod: &Link, lease: &Allocation, routes: &[PodRoute]) -> Result<()> {
        let ifname = &self.env.ifname;
        let container = self.container();
        container
            .add_address(pod.index, lease.ip(), lease.net.prefix_len(), false)
            .map_err(Error::netlink(format!("add {} to {ifname}", lease.net)))?;
        container
            .add_route(&Route::link(lease.gateway, 32, pod.index))
            .map_err(Error::netlink(format!(
                "add route {}/32 dev {ifname}",
                lease.gateway
            )))?;
        for r in routes {
            container
                .add_route(&Route::via(
                    r.dst.addr(),
                    r.dst.prefix_len(),
                    r.gateway,
                    pod.index,
                ))
                .map_err(Error::netlink(format!(
                    "add route {} via {} in the container",
                    r.dst, r.gateway
                )))?;
        }
        Ok(())
    }

    /// Host side (up already): the gateway address, a /32 route to the pod.
    fn configure_host(&mut self, host_end: &Link, lease: &Allocation) -> Result<()> {
        let name = &self.host_name;
        self.host
            .add_address(host_end.index, lease.gateway, 32, true)
            .map_err(Error::netlink(format!("add {}/32 to {name}", lease.gateway)))?;
        self.host
            .add_route(&Route::link(lease.ip(), 32, host_end.index))
            .map_err(Error::netlink(format!("add route {}/32 dev {name}", lease.ip())))
    }

    /// Gives back what this ADD acquired: the veth pair it created (its pod
    /// end goes with it), by ifindex, never another ADD's of the same name;
    /// and, when it was taken, the IPAM allocation.
    fn roll_back(&mut self, cause: &Error, leased: Option<&Ipam<'_>>) {
        log::warn!("ADD failed, rolling back: {cause}");
        // Agent mode: unregistered, or queued for the agent when it does
        // not answer (the registration may have happened without its reply).
        if let (Some(client), Some(_)) = (self.agent, self.created) {
            if let Err(undo) = agent::unregister(client, self.env) {
                log::warn!("rollback: failed to unregister the endpoint from the agent: {undo}");
            }
        }
        if let (true, Some(index)) = (self.delivering, self.created) {
            if let Err(undo) = super::forget_local(self.conf, index) {
                log::warn!("rollback: failed to remove the local record of ifindex {index}: {undo}");
            }
        }
        if let (true, Some(index)) = (self.recorded, self.created) {
            if let Err(undo) = super::forget_addresses(self.conf, index) {
                log::warn!("rollback: failed to remove the record of ifindex {index}: {undo}");
            }
        }
        if let Some(index) = self.created {
            if let Err(undo) = self.host.delete_link(index) {
                log::warn!(
                    "rollback: failed to delete {} (ifindex {index}): {undo}",
                    self.host_name
                );
            }
        }
        if let Some(ipam) = leased {
            if let Err(undo) = ipam.del(&CallEnv::default()) {
                log::warn!("rollback: failed to release the IPAM allocation: {undo}");
            }
        }
    }
}

/// A veth end's MAC address, as local delivery writes it.
fn mac_of(link: &Link) -> ebpfcni::Result<[u8; 6]> {
    link.mac.as_slice().try_into().map_err(|_| ebpfcni::Error::Io {
        context: format!("read the MAC address of {}", link.name),
        source: std::io::Error::other(format!("{} bytes, not 6", link.mac.len())),
    })
}

/// Refuses a gateway that is the address of a pod (of any network sharing
/// the pin directory): the host veth would hold it, making it local on the
/// node, and that pod would be cut off.
fn refuse_other_pods_address(maps: &Maps, attachments: &AttachmentMap, gateway: Ipv4Addr) -> Result<()> {
    let records = maps
        .interfaces
        .list()
        .map_err(Error::bpf("list the interface records"))?;
    let Some((index, _)) = records.iter().find(|(_, addrs)| addrs.contains(&gateway)) else {
        return Ok(());
    };
    let whose = match attachments.get(*index) {
        Ok(Some(owner)) => format!(
            "pod {} of network {} (host ifindex {index})",
            owner.pod(),
            owner.network
        ),
        _ => format!("the pod behind host ifindex {index}"),
    };
    Err(Error::ipam(format!(
        "unusable IPAM result: the gateway {gateway} is the address of {whose}; as a gateway it would \
         become an address of this node and cut that pod off (fix the IPAM configuration's gateway)"
    )))
}

/// The ADD result, appended to a chained prevResult when there is one.
fn result(
    conf: &NetConf,
    env: &Env,
    host_end: &Link,
    pod: &Link,
    lease: &Allocation,
    routes: Vec<PodRoute>,
    leased: &IpamResult,
) -> IpamResult {
    let mut result = conf.prev_result.clone().unwrap_or_default();
    result.cni_version = conf.cni_version.clone();
    let first = result.interfaces.len();
    result.interfaces.push(Interface {
        name: host_end.name.clone(),
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
        address: lease.net.to_string(),
        gateway: Some(lease.gateway.to_string()),
        interface: Some(first + 1),
    });
    result.routes.extend(routes.into_iter().map(|r| r.entry));
    result.dns = match &conf.dns {
        Some(dns) if !dns.is_empty() => dns.clone(),
        _ if !leased.dns.is_empty() => leased.dns.clone(),
        _ => result.dns,
    };
    result
}
