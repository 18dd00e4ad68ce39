//! What sits in the node's forwarding path in each scenario, installed and
//! removed inside the node namespace only.
//!
//! The stateless filters allow exactly the pod A <-> pod B pair (both
//! directions, as the plan's rules do) and drop the rest; "full" variants
//! carry as many other entries as ebpfcni's maps hold. The stateful ones
//! let pod A open TCP connections to the bench's ports on pod B (and ping
//! it), and let only their replies back.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Stdio;

use ebpfcni::{
    AttachMode, EventLevel, Identity, LocalDelivery, Maps, PolicyRule, Program, Protocol, Rule, Selector,
    TraceLevel,
};
use ebpfcni_bench::{fill_maps, filler_ip, filler_pair};
use ebpfcni_testutil::{Netns, TestPinDir, TwoPods};

use crate::traffic::{ACCEPT_PORT, ECHO_PORT, IPERF3_PORT};
use crate::Result;

/// The TCP ports pod A opens connections to on pod B.
const PORTS: [u16; 3] = [IPERF3_PORT, ECHO_PORT, ACCEPT_PORT];

const POD_A: Ipv4Addr = TwoPods::POD_A;
const POD_B: Ipv4Addr = TwoPods::POD_B;

const NFT_TABLE: &str = "ebpfcni_bench";

/// The MAC and ifindex of `ifname` in `ns`.
fn mac_and_index(ns: &Netns, ifname: &str) -> Result<([u8; 6], u32)> {
    ns.run_in(|| -> Result<([u8; 6], u32)> {
        let link = ebpfcni::netlink::Netlink::open()?
            .link_by_name(ifname)?
            .ok_or_else(|| format!("no {ifname}"))?;
        let mac = link
            .mac
            .as_slice()
            .try_into()
            .map_err(|_| format!("{ifname}: no MAC"))?;
        Ok((mac, link.index))
    })
}

fn id(n: u32) -> Identity {
    Identity::new(n).expect("non-zero identity")
}

/// ebpfcni loaded against a private pin directory.
pub struct Ebpfcni {
    pub pins: TestPinDir,
    program: Program,
    /// Entries in endpoint_map and policy_map.
    pub entries: (usize, usize),
    /// Local delivery records say "redirect" (the default) or "stack".
    redirect: bool,
}

/// Who writes the pods' records: the CNI plugin alone (plan mode, no
/// identity in them), or with the agent (agent mode: each carries its pod's
/// identity, sparing from-pod two lookups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    Plugin,
    Agent,
}

impl Ebpfcni {
    /// Pods A and B as identities 1 and 2, allowed both ways. With `full`,
    /// both maps are then filled to capacity with other entries.
    pub fn new(name: &str, full: bool) -> Result<Self> {
        let pair = PolicyRule::new(id(1), id(2));
        Self::with_rules(
            name,
            full,
            &[Rule::pair(pair, false), Rule::pair(pair.reverse(), false)],
        )
    }

    /// Pods A and B as identities 1 and 2; A may open TCP connections to
    /// B's bench ports, and ping B, statefully: one rule per port.
    pub fn stateful(name: &str) -> Result<Self> {
        let pair = PolicyRule::new(id(1), id(2));
        let mut rules: Vec<Rule> = PORTS
            .iter()
            .map(|&port| Rule {
                pair,
                selector: Selector::Ports {
                    protocol: Protocol::TCP,
                    first: port,
                    last: port,
                },
                stateful: true,
            })
            .collect();
        rules.push(Rule {
            pair,
            selector: Selector::Protocol(Protocol::ICMP),
            stateful: true,
        });
        Self::with_rules(name, false, &rules)
    }

    /// Pods A and B as identities 1 and 2, and no rule: everything A
    /// sends is dropped at its host veth.
    pub fn deny_all(name: &str) -> Result<Self> {
        Self::with_rules(name, false, &[])
    }

    /// Sets the trace and event levels (and the default rate limit).
    pub fn set_levels(&self, trace: TraceLevel, events: EventLevel) -> Result<()> {
        let maps = Maps::open(self.pins.path())?;
        maps.config.set_trace_level(trace)?;
        maps.config.set_event_level(events)?;
        Ok(())
    }

    fn with_rules(name: &str, full: bool, rules: &[Rule]) -> Result<Self> {
        let pins = TestPinDir::new(name);
        let program = Program::load(pins.path())?;
        let maps = Maps::open(pins.path())?;
        maps.config.set_trace_level(TraceLevel::Off)?;
        maps.config.set_event_level(EventLevel::Off)?;
        maps.endpoints.upsert_batch(&[(POD_A, id(1)), (POD_B, id(2))])?;
        maps.allow(rules)?;
        let entries = if full {
            fill_maps(&maps)?
        } else {
            (2, maps.rules()?.len())
        };
        Ok(Self {
            pins,
            program,
            entries,
            redirect: true,
        })
    }

    /// The same, with the pods' local delivery records saying "stack": the
    /// node forwards pod-to-pod packets and both hooks judge them.
    pub fn through_the_stack(mut self) -> Self {
        self.redirect = false;
        self
    }

    /// Records each pod's address for its host veth, as the CNI plugin
    /// does (pod A's second address is not recorded: what it sends is
    /// dropped at the source check), and attaches the program to both.
    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn install(&self, topo: &TwoPods) -> Result<()> {
        self.install_as(topo, AttachMode::Clsact)
    }

    /// [`Ebpfcni::install`], attached the way `mode` says.
    pub fn install_as(&self, topo: &TwoPods, mode: AttachMode) -> Result<()> {
        self.install_with(topo, mode, Records::Plugin)
    }

    /// [`Ebpfcni::install_as`], with the records written as `records` says.
    pub fn install_with(&self, topo: &TwoPods, mode: AttachMode, records: Records) -> Result<()> {
        self.record_addresses(topo, records)?;
        topo.node.run_in(|| {
            self.program.attach_as(topo.ifindex_a, mode)?;
            self.program.attach_as(topo.ifindex_b, mode)
        })?;
        Ok(())
    }

    /// The interface records, and where each pod lives (local delivery),
    /// as the CNI plugin writes them; with [`Records::Agent`], carrying the
    /// pods' identities as in agent mode.
    pub fn record_addresses(&self, topo: &TwoPods, records: Records) -> Result<()> {
        let maps = Maps::open(self.pins.path())?;
        maps.interfaces.set(topo.ifindex_a, &[POD_A])?;
        maps.interfaces.set(topo.ifindex_b, &[POD_B])?;
        for (pod, ip, host_if) in [
            (&topo.pod_a, POD_A, TwoPods::NODE_IF_A),
            (&topo.pod_b, POD_B, TwoPods::NODE_IF_B),
        ] {
            let host = mac_and_index(&topo.node, host_if)?;
            let eth0 = mac_and_index(pod, "eth0")?;
            maps.local.set(
                ip,
                &LocalDelivery {
                    ifindex: host.1,
                    pod_mac: eth0.0,
                    host_mac: host.0,
                    redirect: self.redirect,
                },
            )?;
        }
        if records == Records::Agent {
            for (ifindex, ip, n) in [(topo.ifindex_a, POD_A, 1), (topo.ifindex_b, POD_B, 2)] {
                maps.interfaces.set_carrying(ifindex, &[ip], Some(id(n)))?;
                maps.local.carry_identity(ip, &maps.endpoints)?;
            }
        }
        Ok(())
    }

    pub fn remove(topo: &TwoPods) -> Result<()> {
        topo.node.run_in(|| {
            let a = ebpfcni::detach(topo.ifindex_a);
            let b = ebpfcni::detach(topo.ifindex_b);
            a.and(b)
        })?;
        Ok(())
    }

    /// Also takes the (then empty) clsact qdiscs away: an empty clsact still
    /// sends every packet through the tc classifier, so "no filter" must
    /// have none.
    pub fn remove_clsact(topo: &TwoPods) -> Result<()> {
        Self::remove(topo)?;
        topo.node.run_in(|| -> Result<()> {
            for ifindex in [topo.ifindex_a, topo.ifindex_b] {
                // SAFETY: the fd is never used by a destroy; libbpf wants 0.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
                let mut hook = libbpf_rs::TcHookBuilder::new(fd);
                hook.ifindex(ifindex as i32);
                match hook.hook(libbpf_rs::TC_INGRESS | libbpf_rs::TC_EGRESS).destroy() {
                    Ok(()) => {}
                    Err(e)
                        if e.kind() == libbpf_rs::ErrorKind::NotFound
                            || e.kind() == libbpf_rs::ErrorKind::InvalidInput => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
    }
}

/// Two programs attached with tcx links (BPF_LINK_CREATE, kernel 6.6+)
/// instead of clsact filters, on both host veths: from-pod on ingress,
/// to-pod on egress. Attached while this lives (the links are not pinned).
pub struct TcxLinks(#[allow(dead_code)] Vec<std::os::fd::OwnedFd>);

impl TcxLinks {
    pub fn attach(
        topo: &TwoPods,
        from_pod: std::os::fd::BorrowedFd<'_>,
        to_pod: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Self> {
        use libbpf_rs::libbpf_sys;
        use std::os::fd::{AsRawFd, FromRawFd};
        topo.node.run_in(|| -> Result<Self> {
            let mut links = Vec::new();
            for ifindex in [topo.ifindex_a, topo.ifindex_b] {
                for (program, point) in [
                    (from_pod, libbpf_sys::BPF_TCX_INGRESS),
                    (to_pod, libbpf_sys::BPF_TCX_EGRESS),
                ] {
                    // SAFETY: a syscall wrapper; NULL options are allowed.
                    let fd = unsafe {
                        libbpf_sys::bpf_link_create(
                            program.as_raw_fd(),
                            ifindex as i32,
                            point,
                            std::ptr::null(),
                        )
                    };
                    if fd < 0 {
                        return Err(format!(
                            "tcx attach to ifindex {ifindex}: {}",
                            std::io::Error::from_raw_os_error(-fd)
                        )
                        .into());
                    }
                    // SAFETY: fd was just returned to us and is open.
                    links.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
                }
            }
            Ok(Self(links))
        })
    }
}

/// An nftables ruleset for the node's forward hook, policy drop.
pub struct Nft {
    script: String,
}

impl Nft {
    /// `ip saddr . ip daddr @allowed`: one hash lookup per packet. `elements`
    /// includes the two pod pairs.
    pub fn set(elements: u32) -> Self {
        let mut pairs = vec![format!("{POD_A} . {POD_B}"), format!("{POD_B} . {POD_A}")];
        pairs.extend((0..elements.saturating_sub(2)).map(|i| {
            let (s, d) = filler_pair(i);
            format!("{} . {}", filler_ip(s), filler_ip(d))
        }));
        let script = format!(
            "table ip {NFT_TABLE} {{\n\
             \tset allowed {{\n\t\ttype ipv4_addr . ipv4_addr\n\t\telements = {{ {} }}\n\t}}\n\
             \tchain forward {{\n\t\ttype filter hook forward priority filter; policy drop;\n\
             \t\tip saddr . ip daddr @allowed accept\n\t}}\n}}\n",
            pairs.join(",\n\t\t\t")
        );
        Self { script }
    }

    /// Connection tracking: `ct state established,related accept`, then new
    /// connections from pod A to pod B's bench ports (a set of address,
    /// address, protocol, port), and its ping.
    pub fn conntrack() -> Self {
        let ports: Vec<String> = PORTS
            .iter()
            .map(|p| format!("{POD_A} . {POD_B} . tcp . {p}"))
            .collect();
        let script = format!(
            "table ip {NFT_TABLE} {{\n\
             \tset allowed {{\n\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service\n\
             \t\telements = {{ {} }}\n\t}}\n\
             \tset allowed_proto {{\n\t\ttype ipv4_addr . ipv4_addr . inet_proto\n\
             \t\telements = {{ {POD_A} . {POD_B} . icmp }}\n\t}}\n\
             \tchain forward {{\n\t\ttype filter hook forward priority filter; policy drop;\n\
             \t\tct state established,related accept\n\
             \t\tip saddr . ip daddr . meta l4proto . th dport @allowed accept\n\
             \t\tip saddr . ip daddr . meta l4proto @allowed_proto accept\n\t}}\n}}\n",
            ports.join(", ")
        );
        Self { script }
    }

    /// One `ip saddr X ip daddr Y accept` rule per pair, `rules` in all, the
    /// pods' two pairs last: every packet walks the whole chain.
    pub fn linear(rules: u32) -> Self {
        let mut script = format!(
            "table ip {NFT_TABLE} {{\n\tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy drop;\n"
        );
        for i in 0..rules.saturating_sub(2) {
            let (s, d) = filler_pair(i);
            script += &format!("\t\tip saddr {} ip daddr {} accept\n", filler_ip(s), filler_ip(d));
        }
        script += &format!("\t\tip saddr {POD_A} ip daddr {POD_B} accept\n");
        script += &format!("\t\tip saddr {POD_B} ip daddr {POD_A} accept\n\t}}\n}}\n");
        Self { script }
    }

    pub fn install(&self, topo: &TwoPods) -> Result<()> {
        let mut child = topo
            .node
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("run nft (is nftables installed?): {e}"))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(self.script.as_bytes())
            .map_err(|e| format!("write to nft: {e}"))?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("wait for nft: {e}"))?;
        if !out.status.success() {
            return Err(format!("nft -f: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    }

    /// Deletes our table; a missing table is fine.
    pub fn remove(topo: &TwoPods) {
        let _ = topo
            .node
            .command("nft")
            .args(["delete", "table", "ip", NFT_TABLE])
            .stderr(Stdio::null())
            .status();
    }
}
