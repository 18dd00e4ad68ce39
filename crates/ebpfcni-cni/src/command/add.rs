//! ADD: a veth pair into the pod, its addresses and routes (see
//! [`crate::addressing`]), and the program on both hooks of the host end.
//! Everything acquired is given back when a later step fails.

use std::fs::File;

use ebpfcni::{Hook, Maps, Program};

use crate::addressing::{pod_routes, Allocation, PodRoute};
use crate::config::NetConf;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::ipam::{CallEnv, Ipam};
use crate::netlink::{Link, Netlink, Route};
use crate::result::{Interface, IpConfig, IpamResult};
use crate::veth::{self, host_veth_name, Owner};
use crate::{netns, sysctl, timing};

pub fn add(conf: &NetConf, env: &Env, stdin: &[u8]) -> Result<IpamResult> {
    let prepare = std::time::Instant::now();
    // What would otherwise fail half way is refused before anything is touched.
    super::check_pin_dir(conf)?;
    Owner::new(&conf.name, &env.container_id, &env.ifname).check_alias_fits()?;
    let ipam = super::ipam(conf, env, stdin)?;
    let netns_file = super::open_netns(&env.netns)?;
    let mut setup = Setup {
        conf,
        env,
        host_name: host_veth_name(&env.container_id, &env.ifname),
        host: Netlink::open().map_err(Error::netlink("open a netlink socket"))?,
        container: netns::socket_in(&netns_file)
            .map_err(Error::netlink(format!("open a netlink socket in {}", env.netns)))?,
        created: None,
        recorded: false,
    };
    if setup
        .container
        .link_by_name(&env.ifname)
        .map_err(Error::netlink(format!("look up {} in the container", env.ifname)))?
        .is_some()
    {
        return Err(Error::Plumbing(format!(
            "{} already exists in the container",
            env.ifname
        )));
    }
    timing::record("prepare", prepare.elapsed());

    // The program comes from a thread of its own: this build's pinned
    // program, or on the first ADD, loaded (the verifier is the slowest
    // step of all). The pair comes first, alone: creating it is exclusive
    // (NLM_F_EXCL), so of two ADDs racing for one attachment exactly one
    // gets past it, and the loser never takes or releases a lease, which
    // the IPAM plugin keys by the attachment. The lease (the IPAM plugin's
    // exec, the slowest step left) is then taken beside the rest of the
    // host side: the program is attached before the pod has an address.
    let pin_dir = conf.pin_dir();
    std::thread::scope(|s| {
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
        timing::step("veth", || setup.create_veth(&netns_file))?;
        let leasing = s.spawn(|| timing::step("ipam", || ipam.add(&CallEnv::default())));
        let host_side = setup.finish_pair(&netns_file).and_then(|ends| {
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
            Ok((ends, program, maps))
        });
        let lease = joined(leasing, || {
            Error::ipam("the thread running the IPAM plugin panicked")
        });
        let leased = lease.is_ok();
        let outcome = host_side.and_then(|prepared| {
            let lease = lease?;
            log::info!("IPAM {} gave {:?}", ipam.plugin, lease.ips);
            setup.configure(prepared, &lease)
        });
        outcome.inspect_err(|e| setup.roll_back(e, leased.then_some(&ipam)))
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
    /// Netlink in the plugin's (host) namespace and in the container's.
    host: Netlink,
    container: Netlink,
    /// The ifindex of the host veth this ADD created, once it has.
    created: Option<u32>,
    /// Whether this ADD recorded the pod's addresses in interface_map.
    recorded: bool,
}

/// Both ends of the pod's veth: (pod end, host end).
type Ends = (Link, Link);

impl Setup<'_> {
    /// Creates the veth pair (exclusively: a pair of that name fails it).
    fn create_veth(&mut self, netns_file: &File) -> Result<()> {
        let index = veth::create(
            &mut self.host,
            &self.host_name,
            &self.env.ifname,
            netns_file,
            self.conf.mtu,
        )?;
        self.created = Some(index);
        Ok(())
    }

    /// Turns IPv6 off on both ends and finds them through the kernel.
    fn finish_pair(&mut self, netns_file: &File) -> Result<Ends> {
        let env = self.env;
        let index = self.created.expect("the pair was created");
        // Before either end is up, so that neither ever has an IPv6 address.
        let no_ipv6 = |context: String| move |source| Error::Sysctl { context, source };
        sysctl::disable_ipv6(&self.host_name)
            .map_err(no_ipv6(format!("turn IPv6 off on {}", self.host_name)))?;
        netns::run_in(netns_file, || sysctl::disable_ipv6(&env.ifname)).map_err(no_ipv6(format!(
            "turn IPv6 off on {} in the container",
            env.ifname
        )))?;
        let (pod, host_end) = veth::resolve_pair(&mut self.container, &mut self.host, &env.ifname)?;
        if host_end.index != index {
            return Err(Error::Plumbing(format!(
                "the peer of {} is {} (ifindex {}), not the {} (ifindex {index}) just created",
                env.ifname, host_end.name, host_end.index, self.host_name
            )));
        }
        Ok((pod, host_end))
    }

    /// Attaches the program to both hooks of the host end (before the pod
    /// has an address: nothing passes yet).
    fn attach(&mut self, host_end: &Link, program: &Program) -> Result<()> {
        timing::step("attach", || program.attach(host_end.index)).map_err(|source| Error::Attach {
            context: format!("attach the program to {}", self.host_name),
            source,
        })
    }

    /// With the lease: the pod's address recorded for the program, then
    /// addresses, routes and forwarding; then the result.
    fn configure(
        &mut self,
        ((pod, host_end), program, maps): (Ends, Program, Maps),
        leased: &IpamResult,
    ) -> Result<IpamResult> {
        let (conf, env) = (self.conf, self.env);
        let lease = Allocation::from_ips(&leased.ips, None).map_err(Error::UnusableIpamResult)?;
        let routes = pod_routes(&leased.routes, lease.gateway);
        // Before the pod has its address: without a record, everything it
        // sends is dropped.
        timing::step("record", || maps.interfaces.set(host_end.index, &[lease.ip()]))
            .map_err(Error::bpf(format!("record {}'s address", self.host_name)))?;
        self.recorded = true;
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
        Ok(result(conf, env, &host_end, &pod, &lease, routes, leased))
    }

    /// Pod side: the address without a prefix route, the gateway on-link,
    /// the routes via it.
    fn configure_pod(&mut self, pod: &Link, lease: &Allocation, routes: &[PodRoute]) -> Result<()> {
        let ifname = &self.env.ifname;
        self.container
            .set_up(pod.index, None)
            .map_err(Error::netlink(format!("set {ifname} up")))?;
        self.container
            .add_address(pod.index, lease.ip(), lease.net.prefix_len(), false)
            .map_err(Error::netlink(format!("add {} to {ifname}", lease.net)))?;
        self.container
            .add_route(&Route::link(lease.gateway, 32, pod.index))
            .map_err(Error::netlink(format!(
                "add route {}/32 dev {ifname}",
                lease.gateway
            )))?;
        for r in routes {
            self.container
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

    /// Host side: up with the owner's alias, the gateway address, a /32
    /// route to the pod.
    fn configure_host(&mut self, host_end: &Link, lease: &Allocation) -> Result<()> {
        let (conf, env, name) = (self.conf, self.env, &self.host_name);
        let owner = Owner::new(&conf.name, &env.container_id, &env.ifname);
        self.host
            .set_up(host_end.index, Some(&owner.alias()))
            .map_err(Error::netlink(format!("set {name} up")))?;
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
        if let (true, Some(index)) = (self.recorded, self.created) {
            let removed = Maps::open(&self.conf.pin_dir()).and_then(|maps| maps.interfaces.remove(index));
            if let Err(undo) = removed {
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
