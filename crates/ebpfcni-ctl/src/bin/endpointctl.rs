//! endpointctl: which security identity each endpoint (pod) address has,
//! in the pinned endpoint_map the datapath reads on every packet.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ebpfcni::{parse_endpoint_ip, Identity};
use ebpfcni_ctl::{exit_status_help, open_maps, CmdResult, Common, Failure, Format, Out, View};

#[derive(Parser, Debug)]
#[command(
    name = "endpointctl",
    version,
    about = "Manage ebpfcni endpoints: the security identity of each pod IPv4 address",
    long_about = "Manage ebpfcni endpoints: the security identity of each pod IPv4 address.\n\n\
                  Entries live in the pinned endpoint_map under --pin-dir, which is created (with the \
                  other maps) when missing. Changes take effect on the next packet. After every change \
                  the map's state is printed, sorted by address (--quiet to skip it).",
    after_help = concat!(
        "Examples:\n  \
         endpointctl add --ip 10.13.0.2 --identity 100\n  \
         endpointctl list -o json\n  \
         endpointctl --pin-dir /sys/fs/bpf/test del --ip 10.13.0.2\n  \
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
    /// Set the identity of an address, replacing the one it had
    #[command(after_help = "Examples:\n  \
                            endpointctl add --ip 10.13.0.2 --identity 100\n  \
                            endpointctl add --ip 10.13.0.2 --identity 200   # says it replaced 100\n  \
                            endpointctl add --quiet --ip 10.13.0.3 --identity 100")]
    Add {
        #[command(flatten)]
        ip: IpArg,
        /// Security identity, a decimal integer from 1 to 4294967295
        #[arg(long, value_name = "ID", allow_negative_numbers = true)]
        identity: Identity,
    },

    /// Remove an address; removing one that is not there is not an error
    #[command(after_help = "Examples:\n  \
                            endpointctl del --ip 10.13.0.2\n  \
                            endpointctl del --ip 10.13.0.2 -o json   # state as JSON; the note on stderr")]
    Del {
        #[command(flatten)]
        ip: IpArg,
    },

    /// Show the identity of one address (exit 1 when it has none)
    #[command(after_help = "Examples:\n  \
                            endpointctl get --ip 10.13.0.2\n  \
                            endpointctl get --ip 10.13.0.2 -o json   # {\"ip\": \"10.13.0.2\", \"identity\": 100}")]
    Get {
        #[command(flatten)]
        ip: IpArg,
    },

    /// List every endpoint, sorted by address
    #[command(after_help = "Examples:\n  \
                            endpointctl list\n  \
                            endpointctl list -o json | jq -r '.[] | \"\\(.ip) \\(.identity)\"'")]
    List,

    /// Remove every endpoint (every pod's traffic is then dropped)
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

#[derive(clap::Args, Debug)]
struct IpArg {
    /// Endpoint address: dotted IPv4 unicast, no prefix length
    #[arg(long, value_name = "IPv4", value_parser = parse_endpoint_ip)]
    ip: Ipv4Addr,
}

fn main() -> ExitCode {
    ebpfcni_ctl::finish("endpointctl", run(Cli::parse()))
}

fn run(cli: Cli) -> CmdResult {
    if let Command::Completions { shell } = cli.command {
        return ebpfcni_ctl::print_completions::<Cli>(shell);
    }
    let maps = open_maps(&cli.common)?;
    let endpoints = &maps.endpoints;
    let mut out = Out::new(&cli.common);
    let changed = match cli.command {
        Command::Add {
            ip: IpArg { ip },
            identity,
        } => {
            let previous = endpoints
                .upsert(ip, identity)
                .map_err(|e| Failure::failed(format_args!("add {ip}"), e))?;
            match previous {
                None => out.note(format_args!("added {ip} with identity {identity}"))?,
                Some(old) if old == identity => {
                    out.note(format_args!("{ip} already had identity {identity}"))?
                }
                Some(old) => out.note(format_args!("{ip}: replaced identity {old} with {identity}"))?,
            }
            true
        }
        Command::Del { ip: IpArg { ip } } => {
            match endpoints
                .delete(ip)
                .map_err(|e| Failure::failed(format_args!("delete {ip}"), e))?
            {
                Some(old) => out.note(format_args!("deleted {ip} (identity {old})"))?,
                None => out.note(format_args!("{ip} was not present; nothing to delete"))?,
            }
            true
        }
        Command::Get { ip: IpArg { ip } } => {
            let identity = endpoints
                .get(ip)
                .map_err(|e| Failure::failed(format_args!("look up {ip}"), e))?
                .ok_or_else(|| {
                    Failure::Runtime(format!("{ip} is not an endpoint (see `endpointctl list`)"))
                })?;
            match out.format() {
                Format::Json => out.json(&ebpfcni_ctl::EndpointRow {
                    ip,
                    identity: identity.get(),
                })?,
                Format::Table => out.table(
                    &["IP", "IDENTITY"],
                    vec![vec![ip.to_string(), identity.to_string()]],
                )?,
            }
            false
        }
        Command::List => {
            let all = endpoints
                .list()
                .map_err(|e| Failure::failed("list endpoints", e))?;
            out.endpoints(&all, endpoints.capacity(), View::Full)?;
            false
        }
        Command::Flush => {
            let n = endpoints
                .clear()
                .map_err(|e| Failure::failed("flush endpoints", e))?;
            out.note(format_args!("removed {n} endpoints"))?;
            true
        }
        Command::Completions { .. } => unreachable!("handled before the maps are opened"),
    };
    if changed {
        let all = endpoints
            .list()
            .map_err(|e| Failure::failed("list endpoints", e))?;
        out.endpoints(&all, endpoints.capacity(), View::State)?;
    }
    out.flush()?;
    Ok(())
}
