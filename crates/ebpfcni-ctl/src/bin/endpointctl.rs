//! endpointctl: which security identity each address has. An endpoint (pod)
//! address has its own entry in endpoint_map; addresses that are not pods
//! (the node's resolver, an external service, "the world") get theirs from
//! CIDR prefixes in prefix_map, the longest prefix winning and an endpoint
//! always beating a prefix.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ebpfcni::{Identity, IdentityAddr, IdentitySource, Maps, Stored, StoredIdentity};
use ebpfcni_ctl::{
    agent, args, exit_status_help, input, open_maps_for_reading, CmdResult, Common, Failure, Format,
    IdentityRow, IdentityState, Out, View,
};
use ipnet::Ipv4Net;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "endpointctl",
    version,
    about = "Manage ebpfcni identities: of each pod IPv4 address, and of CIDR prefixes for addresses that are not pods",
    long_about = "Manage ebpfcni identities: of each pod IPv4 address (endpoint_map), and of CIDR prefixes \
                  (prefix_map) for addresses that are not pods, such as the node's resolver or \"the world\" \
                  (0.0.0.0/0).\n\n\
                  An address's identity is its own entry; an address without one takes the identity of the \
                  longest prefix that holds it. The maps are pinned under --pin-dir; commands that write \
                  create them when missing. Changes take effect on the next packet. After every change the \
                  state is printed, sorted (--quiet to skip it).",
    after_help = concat!(
        "Examples:\n  \
         endpointctl add --ip 10.13.0.2 --identity 100\n  \
         endpointctl add --cidr 10.255.0.0/16 --identity 2\n  \
         endpointctl get --ip 10.255.0.53            # which entry decides, and the identity\n  \
         endpointctl list -o json > ids.json && endpointctl apply -f ids.json\n  \
         endpointctl completions bash > /etc/bash_completion.d/endpointctl\n\n",
        exit_status_help!()
    )
)]
struct Cli {
    #[command(flatten)]
    common: Common,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Set the identity of an address or a prefix, replacing the one it had
    #[command(after_help = "Examples:\n  \
                            endpointctl add --ip 10.13.0.2 --identity 100\n  \
                            endpointctl add --ip 10.13.0.2 --identity 200   # says it replaced 100\n  \
                            endpointctl add --cidr 10.255.0.0/16 --identity 2\n  \
                            endpointctl add --cidr 0.0.0.0/0 --identity 9   # the world")]
    Add {
        #[command(flatten)]
        addr: AddrArg,
        /// Security identity, a decimal integer from 1 to 4294967295
        #[arg(long, value_name = "ID", allow_negative_numbers = true, value_parser = args::identity())]
        identity: Identity,
    },

    /// Remove an address or a prefix; removing one that is not there is not an error
    #[command(after_help = "Examples:\n  \
                            endpointctl del --ip 10.13.0.2\n  \
                            endpointctl del --cidr 10.255.0.0/16\n  \
                            endpointctl del --ip 10.13.0.2 -o json   # state as JSON; the note on stderr")]
    Del {
        #[command(flatten)]
        addr: AddrArg,
    },

    /// Show the identity of an address and which entry gives it (exit 1 when none does)
    #[command(after_help = "Examples:\n  \
                            endpointctl get --ip 10.13.0.2       # its endpoint entry\n  \
                            endpointctl get --ip 10.255.7.53     # the longest prefix holding it\n  \
                            endpointctl get --cidr 10.255.0.0/16 # that prefix's entry\n  \
                            endpointctl get --ip 10.13.0.2 -o json")]
    Get {
        #[command(flatten)]
        addr: AddrArg,
    },

    /// List every endpoint and every prefix, sorted
    #[command(after_help = "Examples:\n  \
                            endpointctl list\n  \
                            endpointctl list -o json | jq -r '.[] | \"\\(.ip // .cidr) \\(.identity)\"'")]
    List,

    /// Set many identities at once from a file (all or none)
    ///
    /// Set every identity of FILE in one change: all of them, or none when a line is bad (exit 2) or
    /// a map has no room for them (exit 1).
    #[command(after_help = "File formats:\n  \
                            text: one \"ADDRESS IDENTITY\" or \"PREFIX IDENTITY\" a line, separated by spaces\n        \
                            or tabs; '#' starts a comment; blank lines are ignored.\n  \
                            JSON: when the first character is '[': [{\"ip\": \"10.13.0.2\", \"identity\": 100},\n        \
                            {\"cidr\": \"10.255.0.0/16\", \"identity\": 2}], as `endpointctl list -o json` prints it.\n\
                            Entries add to (or replace) those already there; `endpointctl flush` first to start over.\n\n\
                            Examples:\n  \
                            printf '10.13.0.2 100\\n10.255.0.0/16 2\\n' | endpointctl apply -f -\n  \
                            endpointctl apply -f identities.json --quiet")]
    Apply {
        /// Identities file, or '-' for stdin
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
    },

    /// Remove every endpoint and every prefix (all IPv4 traffic of the pods is then dropped)
    #[command(after_help = "Examples:\n  \
                            endpointctl flush\n  \
                            endpointctl --pin-dir /sys/fs/bpf/test flush --quiet")]
    Flush,

    /// Print a shell completion script on stdout
    #[command(after_help = "Examples:\n  \
                            endpointctl completions bash > /etc/bash_completion.d/endpointctl\n  \
                            endpointctl completions zsh > \"${fpath[1]}/_endpointctl\"")]
    Completions {
        /// Shell to complete for
        shell: clap_complete::Shell,
    },
}

/// One address (--ip) or one prefix (--cidr).
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct AddrArg {
    /// Endpoint address: dotted IPv4 unicast, no prefix length
    #[arg(long, value_name = "IPv4", value_parser = args::endpoint_ip())]
    ip: Option<Ipv4Addr>,
    /// IPv4 prefix, host bits clear: 10.255.0.0/16, 0.0.0.0/0
    #[arg(long, value_name = "PREFIX", value_parser = args::prefix())]
    cidr: Option<Ipv4Net>,
}

impl AddrArg {
    fn get(&self) -> IdentityAddr {
        match (self.ip, self.cidr) {
            (Some(ip), _) => IdentityAddr::Ip(ip),
            (None, Some(net)) => IdentityAddr::Cidr(net),
            (None, None) => unreachable!("clap requires one of --ip and --cidr"),
        }
    }
}

fn main() -> ExitCode {
    ebpfcni_ctl::init();
    ebpfcni_ctl::finish("endpointctl", run(Cli::parse()))
}

fn run(cli: Cli) -> CmdResult {
    let common = &cli.common;
    if common.output == Format::Prometheus {
        return Err(Failure::Usage(
            "-o prometheus is only for `policyctl stats`".into(),
        ));
    }
    match cli.command {
        Command::Completions { shell } => ebpfcni_ctl::print_completions::<Cli>(shell),
        Command::Get { addr } => get(common, addr.get()),
        Command::List => list(common),
        Command::Add { addr, identity } => {
            let agent = agent::endpoints(common)?;
            refuse_managed(&agent, addr.get(), "add a hand entry")?;
            change(common, &agent, |maps| add(maps, addr.get(), identity))
        }
        Command::Del { addr } => {
            let agent = agent::endpoints(common)?;
            refuse_managed(&agent, addr.get(), "delete it by hand")?;
            change(common, &agent, |maps| del(maps, addr.get()))
        }
        Command::Apply { file } => {
            // Read and checked before the maps are opened (which may create them).
            let (entries, repeats) = input::read_file(&file, ebpfcni_ctl::identities_file::parse_identities)?;
            let agent = agent::endpoints(common)?;
            for (addr, _) in &entries {
                refuse_managed(&agent, *addr, &format!("apply {}", input::source_name(&file)))?;
            }
            change(common, &agent, |maps| {
                apply(maps, &entries, repeats, &input::source_name(&file))
            })
        }
        Command::Flush => {
            let agent = agent::endpoints(common)?;
            change(common, &agent, |maps| flush(maps, &agent))
        }
    }
}

/// Hand changes of the agent's endpoints are refused (exit 5).
fn refuse_managed(
    agent: &BTreeMap<Ipv4Addr, ebpfcni_api::Endpoint>,
    addr: IdentityAddr,
    what: &str,
) -> CmdResult {
    match addr {
        IdentityAddr::Ip(ip) => agent::refuse_managed(agent, ip, what),
        IdentityAddr::Cidr(_) => Ok(()),
    }
}

fn state(maps: &Maps, agent: &BTreeMap<Ipv4Addr, ebpfcni_api::Endpoint>) -> Result<IdentityState, Failure> {
    Ok(IdentityState {
        agent: agent
            .iter()
            .map(|(ip, e)| {
                (
                    *ip,
                    (
                        format!("{}/{}", e.container_id, e.ifname),
                        e.identity_labels.clone(),
                    ),
                )
            })
            .collect(),
        endpoints: maps
            .endpoints
            .list()
            .map_err(|e| Failure::failed("list endpoints", e))?,
        prefixes: maps
            .prefixes
            .list()
            .map_err(|e| Failure::failed("list prefixes", e))?,
        capacities: (maps.endpoints.capacity(), maps.prefixes.capacity()),
    })
}

/// Opens the maps, makes a change with `make` (which returns what it did,
/// one note a line, and how many tracked connections of changed identities
/// it ended), then reports it and the state (exit 3 when that fails: the
/// change stands).
fn change(
    common: &Common,
    agent: &BTreeMap<Ipv4Addr, ebpfcni_api::Endpoint>,
    make: impl FnOnce(&Maps) -> Result<(Vec<String>, usize), Failure>,
) -> CmdResult {
    ebpfcni_ctl::change(
        common,
        |maps| {
            let (mut notes, ended) = make(maps)?;
            if ended > 0 {
                notes.push(format!("ended {ended} tracked connections of changed identities"));
            }
            Ok(notes)
        },
        |maps, out| Ok(out.identities(&state(maps, agent)?, View::State)?),
    )
}

fn add(maps: &Maps, addr: IdentityAddr, identity: Identity) -> Result<(Vec<String>, usize), Failure> {
    let (previous, ended) = maps
        .set_identity(addr, identity)
        .map_err(|e| Failure::failed(format_args!("add {addr}"), e))?;
    let note = match previous {
        None => format!("added {addr} with identity {identity}"),
        Some(Stored::Valid(old)) if old == identity => format!("{addr} already had identity {identity}"),
        Some(Stored::Valid(old)) => format!("{addr}: replaced identity {old} with {identity}"),
        Some(Stored::Invalid { raw, .. }) => {
            format!("{addr}: replaced invalid identity {raw} with {identity}")
        }
    };
    Ok((vec![note], ended))
}

fn del(maps: &Maps, addr: IdentityAddr) -> Result<(Vec<String>, usize), Failure> {
    let (removed, ended) = maps
        .remove_identity(addr)
        .map_err(|e| Failure::failed(format_args!("delete {addr}"), e))?;
    let note = match removed {
        Some(Stored::Valid(old)) => format!("deleted {addr} (identity {old})"),
        Some(Stored::Invalid { raw, .. }) => format!("deleted {addr} (invalid identity {raw})"),
        None => format!("{addr} was not present; nothing to delete"),
    };
    Ok((vec![note], ended))
}

fn apply(
    maps: &Maps,
    entries: &[(IdentityAddr, Identity)],
    repeats: usize,
    source: &str,
) -> Result<(Vec<String>, usize), Failure> {
    let done = maps.set_identities(entries).map_err(|e| {
        Failure::failed(
            format_args!("apply {} identities from {source}", entries.len()),
            e,
        )
    })?;
    let repeated = match repeats {
        0 => String::new(),
        n => format!(" ({n} listed more than once)"),
    };
    let note = format!(
        "applied {} identities from {source}{repeated}: {} new",
        entries.len() + repeats,
        done.new
    );
    Ok((vec![note], done.ended))
}

/// Removes every endpoint and prefix; with an agent, every hand endpoint
/// and prefix (the agent's endpoints stay: they change with their
/// containers).
fn flush(
    maps: &Maps,
    agent: &BTreeMap<Ipv4Addr, ebpfcni_api::Endpoint>,
) -> Result<(Vec<String>, usize), Failure> {
    if agent.is_empty() {
        let (endpoints, prefixes, ended) = maps
            .flush_identities()
            .map_err(|e| Failure::failed("flush endpoints and prefixes", e))?;
        return Ok((
            vec![format!("removed {endpoints} endpoints and {prefixes} prefixes")],
            ended,
        ));
    }
    let hand: Vec<IdentityAddr> = maps
        .endpoints
        .list()
        .map_err(|e| Failure::failed("list endpoints", e))?
        .into_iter()
        .map(|(ip, _)| ip)
        .filter(|ip| !agent.contains_key(ip))
        .map(IdentityAddr::Ip)
        .collect();
    let prefixes: Vec<IdentityAddr> = maps
        .prefixes
        .list()
        .map_err(|e| Failure::failed("list prefixes", e))?
        .into_iter()
        .map(|(net, _)| IdentityAddr::Cidr(net))
        .collect();
    let mut ended = 0;
    for addr in hand.iter().chain(&prefixes) {
        ended += maps
            .remove_identity(*addr)
            .map_err(|e| Failure::failed(format_args!("delete {addr}"), e))?
            .1;
    }
    Ok((
        vec![format!(
            "removed {} endpoints and {} prefixes (kept the agent's {} endpoints)",
            hand.len(),
            prefixes.len(),
            agent.len()
        )],
        ended,
    ))
}

/// `get -o json`: the entry's row, and which entry decides.
#[derive(Serialize)]
struct Decided {
    #[serde(flatten)]
    row: IdentityRow,
    /// "endpoint", or the prefix that gives the address its identity.
    from: String,
}

fn get(common: &Common, addr: IdentityAddr) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let (id, from): (StoredIdentity, String) = match addr {
        IdentityAddr::Ip(ip) => match maps
            .identity_source(ip)
            .map_err(|e| Failure::failed(format_args!("look up {ip}"), e))?
        {
            Some(IdentitySource::Endpoint(id)) => (id, "endpoint".into()),
            Some(IdentitySource::Prefix(net, id)) => (id, net.to_string()),
            None => {
                return Err(Failure::Runtime(format!(
                "{ip} has no identity: it is not an endpoint and no prefix holds it (see `endpointctl list`)"
            )))
            }
        },
        IdentityAddr::Cidr(net) => match maps
            .prefixes
            .get(net)
            .map_err(|e| Failure::failed(format_args!("look up {net}"), e))?
        {
            Some(id) => (id, "prefix".into()),
            None => return Err(Failure::Runtime(format!("{net} is not a prefix in prefix_map"))),
        },
    };
    let mut out = Out::new(common);
    match out.format() {
        Format::Json => out.json(&Decided {
            row: IdentityRow::from(addr, id),
            from,
        })?,
        Format::Table | Format::Prometheus => {
            let identity = match id {
                Stored::Valid(id) => id.to_string(),
                Stored::Invalid { raw, problem } => format!("{raw} INVALID: {problem}"),
            };
            out.table(
                &["ADDRESS", "IDENTITY", "FROM"],
                vec![vec![addr.to_string(), identity, from]],
            )?
        }
    }
    out.flush()?;
    Ok(())
}

fn list(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let agent = agent::endpoints(common)?;
    let mut out = Out::new(common);
    out.identities(&state(&maps, &agent)?, View::Full)?;
    out.flush()?;
    Ok(())
}
