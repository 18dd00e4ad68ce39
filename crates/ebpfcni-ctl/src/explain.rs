//! `policyctl explain --from A --to B --port 80/tcp`: what the datapath
//! does with such a packet, and why. The answer is the program's own: the
//! packet is crafted and run through this build's program
//! (BPF_PROG_TEST_RUN) against the live pinned maps, on the hooks a real
//! packet meets: the sender's from-pod hook when it is a pod of this node,
//! then (unless from-pod delivered it straight into the pod) the
//! receiver's to-pod hook when it is one. The runs carry the explain
//! marker (ebpfcni.h): the program writes no state (no connection tracked,
//! no fragment recorded, no counter, no event a monitor would take for
//! traffic) and reports its verdict, the identities, and the label policy
//! that decided. The agent names the policies and labels when it can.

use std::net::Ipv4Addr;
use std::str::FromStr;

use clap::Args;
use ebpfcni::events::{PassKind, Verdict};
use ebpfcni::frames::{icmp_echo, ipv4_sctp, ipv4_tcp, ipv4_udp, ICMP_ECHO, SYN};
use ebpfcni::{Explained, Hook, Maps, Program, Stored, TC_ACT_REDIRECT};
use ebpfcni_api::{Client, Endpoint, POD_NAMESPACE_LABEL, POD_NAME_LABEL};
use serde::Serialize;

use crate::names::{LabelVerdict, Names};
use crate::{open_maps_for_reading, CmdResult, Common, Failure, Format, Out};

/// One end of the packet, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Addr(Ipv4Addr),
    /// NAMESPACE/POD: one of the agent's endpoints.
    Pod {
        namespace: String,
        name: String,
    },
    /// Outside the cluster.
    World,
    /// The node.
    Host,
}

impl FromStr for Peer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "world" => return Ok(Peer::World),
            "host" => return Ok(Peer::Host),
            _ => {}
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(Peer::Addr(ip));
        }
        match s.split_once('/') {
            Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() && !pod.contains('/') => Ok(Peer::Pod {
                namespace: ns.to_owned(),
                name: pod.to_owned(),
            }),
            _ => Err(format!(
                "{}: expected an IPv4 address, NAMESPACE/POD, world or host",
                ebpfcni::quote_input(s)
            )),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Addr(ip) => write!(f, "{ip}"),
            Peer::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
            Peer::World => f.write_str("world"),
            Peer::Host => f.write_str("host"),
        }
    }
}

/// What the packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    Tcp(u16),
    Udp(u16),
    Sctp(u16),
    Icmp,
}

impl Packet {
    fn describe(self) -> String {
        match self {
            Packet::Tcp(p) => format!("TCP SYN to port {p}"),
            Packet::Udp(p) => format!("UDP to port {p}"),
            Packet::Sctp(p) => format!("SCTP to port {p}"),
            Packet::Icmp => "ICMP echo request".to_owned(),
        }
    }

    fn frame(self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        const SPORT: u16 = 40000;
        match self {
            Packet::Tcp(p) => ipv4_tcp(src, dst, SPORT, p, SYN),
            Packet::Udp(p) => ipv4_udp(src, dst, SPORT, p),
            Packet::Sctp(p) => ipv4_sctp(src, dst, SPORT, p),
            Packet::Icmp => icmp_echo(src, dst, ICMP_ECHO, 1),
        }
    }
}

/// `80/tcp`, `53/udp`, `9/sctp`; `80` is TCP.
fn parse_port(s: &str) -> Result<Packet, String> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{}: the port must be 1 to 65535", ebpfcni::quote_input(s)))?;
    match proto {
        "tcp" => Ok(Packet::Tcp(port)),
        "udp" => Ok(Packet::Udp(port)),
        "sctp" => Ok(Packet::Sctp(port)),
        _ => Err(format!(
            "{}: the protocol must be tcp, udp or sctp (--icmp for ICMP)",
            ebpfcni::quote_input(s)
        )),
    }
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The sender: an IPv4 address, NAMESPACE/POD (the agent's endpoints), world or host
    #[arg(long, value_name = "ENDPOINT")]
    pub from: Peer,
    /// The receiver: an IPv4 address, NAMESPACE/POD, world or host
    #[arg(long, value_name = "ENDPOINT")]
    pub to: Peer,
    #[command(flatten)]
    pub packet: PacketArgs,
}

/// --port or --icmp: one of them.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PacketArgs {
    /// Destination port and protocol: 80/tcp (a SYN), 53/udp, 9/sctp
    #[arg(long, value_name = "PORT[/PROTO]", value_parser = parse_port)]
    pub port: Option<Packet>,
    /// An ICMP echo request (ping)
    #[arg(long)]
    pub icmp: bool,
}

/// An end resolved to an address.
#[derive(Debug, Clone, Serialize)]
struct End {
    /// As written.
    name: String,
    ip: Ipv4Addr,
    /// The identity the program found (0: none).
    identity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<String>,
    /// Its host veth, when it is a pod of this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<String>,
    #[serde(skip)]
    ifindex: Option<u32>,
}

/// One hook's run.
#[derive(Debug, Serialize)]
struct HookRun {
    hook: &'static str,
    interface: String,
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'static str>,
    /// From-pod handed it straight to the receiving pod (its to-pod hook
    /// does not run).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    label_policy: Option<LabelVerdict>,
    #[serde(skip_serializing_if = "String::is_empty")]
    decided_by: String,
    /// When what runs on the hook is not this build's program.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    packet: String,
    from: End,
    to: End,
    hooks: Vec<HookRun>,
}

/// The address TEST-NET-1 stands for `world` unless a prefix of the world
/// identity says otherwise: no pod has it.
const WORLD_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HOST_ID: u32 = 1;
const WORLD_ID: u32 = 2;

/// The identity the program would find for `ip` (endpoint, else prefix).
fn identity_of(maps: &Maps, ip: Ipv4Addr) -> Result<Option<u32>, Failure> {
    use ebpfcni::IdentitySource;
    let source = maps
        .identity_source(ip)
        .map_err(|e| Failure::failed("read the identities", e))?;
    Ok(match source {
        Some(IdentitySource::Endpoint(Stored::Valid(id)))
        | Some(IdentitySource::Prefix(_, Stored::Valid(id))) => Some(id.get()),
        _ => None,
    })
}

/// An address whose identity is `id`: an endpoint's, else a prefix's
/// first address that no longer entry takes.
fn address_of_identity(maps: &Maps, id: u32) -> Result<Option<Ipv4Addr>, Failure> {
    let read = |e| Failure::failed("read the identities", e);
    for (ip, stored) in maps.endpoints.list().map_err(read)? {
        if stored.valid().map(|i| i.get()) == Some(id) {
            return Ok(Some(ip));
        }
    }
    for (net, stored) in maps.prefixes.list().map_err(read)? {
        if stored.valid().map(|i| i.get()) != Some(id) {
            continue;
        }
        for ip in net.hosts().take(256) {
            if identity_of(maps, ip)? == Some(id) {
                return Ok(Some(ip));
            }
        }
    }
    Ok(None)
}

fn find_pod<'e>(endpoints: &'e [Endpoint], namespace: &str, name: &str) -> Option<&'e Endpoint> {
    endpoints.iter().find(|e| {
        e.labels.get(POD_NAMESPACE_LABEL).map(String::as_str) == Some(namespace)
            && e.labels.get(POD_NAME_LABEL).map(String::as_str) == Some(name)
    })
}

/// The agent's endpoints, for NAMESPACE/POD: an agent is needed.
fn agent_endpoints(common: &Common) -> Result<Vec<Endpoint>, Failure> {
    let client = Client::new(&common.agent).with_timeout(std::time::Duration::from_secs(5));
    client.endpoints().map_err(|e| {
        Failure::Runtime(format!(
            "NAMESPACE/POD names are resolved by the ebpfcni agent (--agent {}): {e}",
            common.agent.display()
        ))
    })
}

fn resolve(
    common: &Common,
    maps: &Maps,
    peer: &Peer,
    endpoints: &mut Option<Vec<Endpoint>>,
) -> Result<Ipv4Addr, Failure> {
    match peer {
        Peer::Addr(ip) => Ok(*ip),
        Peer::Pod { namespace, name } => {
            if endpoints.is_none() {
                *endpoints = Some(agent_endpoints(common)?);
            }
            let all = endpoints.as_deref().unwrap_or_default();
            let e = find_pod(all, namespace, name).ok_or_else(|| {
                Failure::Usage(format!(
                    "{peer}: the agent has no endpoint of pod {name} in namespace {namespace} \
                     (labels {POD_NAMESPACE_LABEL}, {POD_NAME_LABEL})"
                ))
            })?;
            e.ips.first().copied().ok_or_else(|| {
                Failure::Usage(format!("{peer}: the agent's endpoint of that pod has no address"))
            })
        }
        Peer::World => Ok(match identity_of(maps, WORLD_ADDR)? {
            Some(WORLD_ID) | None => WORLD_ADDR,
            Some(_) => address_of_identity(maps, WORLD_ID)?.unwrap_or(WORLD_ADDR),
        }),
        Peer::Host => address_of_identity(maps, HOST_ID)?.ok_or_else(|| {
            Failure::Usage(
                "host: no address has the host identity (1) in endpoint_map or prefix_map; \
                 give the node's address instead"
                    .into(),
            )
        }),
    }
}

/// The host veth that has `ip` in its record (a pod of this node).
fn local_veth(maps: &Maps, ip: Ipv4Addr) -> Result<Option<u32>, Failure> {
    Ok(maps
        .interfaces
        .list()
        .map_err(|e| Failure::failed("read the interface records", e))?
        .into_iter()
        .find(|(_, addrs)| addrs.contains(&ip))
        .map(|(ifindex, _)| ifindex))
}

fn interface_name(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("ifindex {ifindex}"))
}

/// This build's program: the pinned one (what the pods run once they are
/// on this build), else loaded for this run (not pinned).
fn program(common: &Common, maps: &Maps) -> Result<Program, Failure> {
    let action = "load this build's program";
    match Program::pinned(&common.pin_dir, maps).map_err(|e| Failure::failed(action, e))? {
        Some(program) => Ok(program),
        None => Program::load(&common.pin_dir).map_err(|e| Failure::failed(action, e)),
    }
}

/// Why real packets may meet something else than what explain ran on
/// the hook: no ebpfcni program there, or another build's (the pods were
/// not moved onto this build's yet). `None` when it is this build's.
fn attached_note(program: &Program, hook: Hook, ifindex: u32) -> Option<String> {
    let attachment = ebpfcni::attachment(ifindex).ok()?;
    let attached = match hook {
        Hook::FromPod => attachment.ingress,
        Hook::ToPod => attachment.egress,
        Hook::FromFabric => ebpfcni::fabric_attachment(ifindex).ok()?,
    };
    let Some(id) = attached else {
        return Some(format!(
            "no ebpfcni program runs on its {} hook: real packets pass there unjudged",
            hook.tc_name()
        ));
    };
    let ours = program.id(hook);
    if id == ours {
        return None;
    }
    let (theirs, ours) = (ebpfcni::program_info(id).ok()?, ebpfcni::program_info(ours).ok()?);
    (theirs.tag != ours.tag).then(|| {
        format!(
            "it runs another build's program (id {id}); explain ran this build's: \
             `policyctl reattach` moves the pods onto it"
        )
    })
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "allowed",
        Verdict::Drop => "dropped",
        Verdict::Audit => "audit",
    }
}

/// In words, what decided a hook's verdict.
fn decided_by(x: &Explained, label: Option<&LabelVerdict>) -> String {
    match (x.verdict, x.pass_kind) {
        (Verdict::Pass, Some(PassKind::Reply)) => return "a reply of a tracked connection".into(),
        (Verdict::Pass, Some(PassKind::Related)) => return "an ICMP error about a tracked connection".into(),
        _ => {}
    }
    if let Some(label) = label {
        let text = label.text();
        return if text.is_empty() {
            "label policy: neither side is isolated in this direction".into()
        } else {
            format!("label policy: {text}")
        };
    }
    match x.verdict {
        Verdict::Pass => format!(
            "a rule of the plan for {} -> {} (`policyctl list`)",
            x.src_id, x.dst_id
        ),
        _ => match x.reason {
            Some("no-policy") => "no rule allows it (default deny)".into(),
            Some("no-flow") => "a reply whose connection is not tracked".into(),
            Some("unknown-source") => "the source address has no identity".into(),
            Some("unknown-destination") => "the destination address has no identity".into(),
            Some("invalid-source") => "the sender's host veth records other addresses".into(),
            Some("unknown-interface") => "the sender's host veth has no record of its addresses".into(),
            _ => String::new(),
        },
    }
}

pub fn explain(common: &Common, args: &ExplainArgs) -> CmdResult {
    let packet = if args.packet.icmp {
        Packet::Icmp
    } else {
        args.packet.port.expect("clap requires --port or --icmp")
    };
    let maps = open_maps_for_reading(common)?;
    let mut endpoints = None;
    let src = resolve(common, &maps, &args.from, &mut endpoints)?;
    let dst = resolve(common, &maps, &args.to, &mut endpoints)?;
    let (src_veth, dst_veth) = (local_veth(&maps, src)?, local_veth(&maps, dst)?);
    if src_veth.is_none() && dst_veth.is_none() {
        return Err(Failure::Usage(format!(
            "neither {src} nor {dst} is a pod of this node (no host veth records either address): \
             no hook of this node judges such a packet"
        )));
    }
    let program = program(common, &maps)?;
    let mut names = Names::new(common);
    let frame = packet.frame(src, dst);

    let mut hooks = Vec::new();
    let mut last: Option<Explained> = None;
    let mut ids = (0, 0);
    for (hook, veth) in [(Hook::FromPod, src_veth), (Hook::ToPod, dst_veth)] {
        let Some(ifindex) = veth else { continue };
        let x = program
            .explain(hook, &frame, ifindex)
            .map_err(|e| {
                Failure::failed(
                    format_args!(
                        "run the program on the {} hook of ifindex {ifindex} (run explain in the \
                         network namespace of the host veths)",
                        hook.name()
                    ),
                    e,
                )
            })?
            .ok_or_else(|| Failure::Runtime("the program gave no verdict (it has no explain)".into()))?;
        if x.src_id != 0 || x.dst_id != 0 {
            ids = (x.src_id, x.dst_id);
        }
        let label = x.label.map(|l| LabelVerdict::of(&l, &mut names));
        let delivered = x.tc_verdict == TC_ACT_REDIRECT;
        hooks.push(HookRun {
            note: attached_note(&program, hook, ifindex),
            hook: hook.name(),
            interface: interface_name(ifindex),
            verdict: verdict_word(x.verdict),
            reason: x.reason,
            pass: x
                .pass_kind
                .filter(|_| x.verdict == Verdict::Pass)
                .map(|k| k.name()),
            delivered,
            decided_by: decided_by(&x, label.as_ref()),
            label_policy: label,
        });
        let stop = x.verdict == Verdict::Drop || delivered;
        last = Some(x);
        if stop {
            break;
        }
    }
    let last = last.expect("at least one hook ran");
    // A packet that passes every hook it meets is allowed; in audit mode,
    // one that some hook audited passes as audit.
    let verdict = if last.verdict == Verdict::Drop {
        Verdict::Drop
    } else if hooks.iter().any(|h| h.verdict == "audit") {
        Verdict::Audit
    } else {
        Verdict::Pass
    };
    let reason = hooks.iter().rev().find_map(|h| h.reason);
    let end = |name: &Peer, ip, identity, veth: Option<u32>, names: &mut Names| End {
        name: name.to_string(),
        ip,
        identity,
        labels: names.labels(identity),
        interface: veth.map(interface_name),
        ifindex: veth,
    };
    let report = Report {
        verdict: verdict_word(verdict),
        reason,
        packet: packet.describe(),
        from: end(&args.from, src, ids.0, src_veth, &mut names),
        to: end(&args.to, dst, ids.1, dst_veth, &mut names),
        hooks,
    };
    let mut out = Out::new(common);
    match out.format() {
        Format::Json => out.json(&report)?,
        _ => out.raw(&text(&report))?,
    }
    out.flush()?;
    if verdict == Verdict::Drop {
        return Err(Failure::Dropped);
    }
    Ok(())
}

fn describe_end(e: &End) -> String {
    let mut s = if e.name == e.ip.to_string() {
        e.ip.to_string()
    } else {
        format!("{} ({})", e.ip, e.name)
    };
    s += &match e.identity {
        0 => " identity none".to_owned(),
        id => format!(" identity {id}"),
    };
    if let Some(labels) = &e.labels {
        s += &format!(" [{labels}]");
    }
    if let (Some(name), Some(ifindex)) = (&e.interface, e.ifindex) {
        s += &format!(", a pod of this node behind {name} (ifindex {ifindex})");
    }
    s
}

fn text(r: &Report) -> String {
    let mut t = format!(
        "verdict: {}{}\n",
        r.verdict,
        r.reason.map(|x| format!(" ({x})")).unwrap_or_default()
    );
    if r.verdict == "audit" {
        t += "  audit mode: policy would drop it; it passes, counted as audit\n";
    }
    t += &format!("packet: {} from {} to {}\n", r.packet, r.from.ip, r.to.ip);
    t += &format!("from: {}\n", describe_end(&r.from));
    t += &format!("to:   {}\n", describe_end(&r.to));
    for h in &r.hooks {
        let what = match (h.reason, h.pass) {
            (Some(reason), _) => format!("{} ({reason})", h.verdict),
            (None, Some(pass)) => format!("{} ({pass})", h.verdict),
            _ => h.verdict.to_owned(),
        };
        t += &format!("hook {} on {}: {what}", h.hook, h.interface);
        if !h.decided_by.is_empty() {
            t += &format!(": {}", h.decided_by);
        }
        if h.delivered {
            t += "; delivered straight into the receiving pod (its to-pod hook does not run)";
        }
        t += "\n";
        if let Some(note) = &h.note {
            t += &format!("  note: {note}\n");
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_ports_parse_or_say_what_is_wrong() {
        assert_eq!(
            "10.0.0.1".parse::<Peer>(),
            Ok(Peer::Addr(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(
            "prod/web".parse::<Peer>(),
            Ok(Peer::Pod {
                namespace: "prod".into(),
                name: "web".into()
            })
        );
        assert_eq!("world".parse::<Peer>(), Ok(Peer::World));
        assert!("a/b/c".parse::<Peer>().is_err());
        assert!("/b".parse::<Peer>().is_err());
        assert_eq!(parse_port("80/tcp"), Ok(Packet::Tcp(80)));
        assert_eq!(parse_port("53/udp"), Ok(Packet::Udp(53)));
        assert_eq!(parse_port("9/sctp"), Ok(Packet::Sctp(9)));
        assert_eq!(parse_port("8080"), Ok(Packet::Tcp(8080)));
        assert!(parse_port("0/tcp").is_err());
        assert!(parse_port("80/icmp").unwrap_err().contains("--icmp"));
    }
}
