//! endpointctl: which security identity each endpoint (pod) address has,
//! in the pinned endpoint_map the datapath reads on every packet.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ebpfcni::{Identity, Maps, Stored};
use ebpfcni_ctl::{
    args, exit_status_help, open_maps_for_reading, open_maps_for_writing, report_change, CmdResult, Common,
    EndpointRow, Failure, Format, Out, View,
};

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
        #[arg(long, value_name = "ID", allow_negative_numbers = true, value_parser = args::identity())]
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
    #[arg(long, value_name = "IPv4", value_parser = args::endpoint_ip())]
    ip: Ipv4Addr,
}

fn main() -> ExitCode {
    ebpfcni_ctl::init();
    ebpfcni_ctl::finish("endpointctl", run(Cli::parse()))
}

fn run(cli: Cli) -> CmdResult {
    let common = &cli.common;
    match cli.command {
        Command::Completions { shell } => ebpfcni_ctl::print_completions::<Cli>(shell),
        Command::Get { ip: IpArg { ip } } => get(common, ip),
        Command::List => list(common),
        Command::Add {
            ip: IpArg { ip },
            identity,
        } => change(common, |maps| add(maps, ip, identity)),
        Command::Del { ip: IpArg { ip } } => change(common, |maps| del(maps, ip)),
        Command::Flush => change(common, flush),
    }
}

/// Opens the maps, makes a change with `make` (which returns what it did,
/// one note a line), then reports it and the map's state (exit 3 when that
/// fails: the change stands).
fn change(common: &Common, make: impl FnOnce(&Maps) -> Result<Vec<String>, Failure>) -> CmdResult {
    let maps = open_maps_for_writing(common)?;
    let notes = make(&maps)?;
    let mut out = Out::new(common);
    report_change(&mut out, &notes, |out| {
        let all = maps
            .endpoints
            .list()
            .map_err(|e| Failure::failed("list endpoints", e))?;
        out.endpoints(&all, maps.endpoints.capacity(), View::State)?;
        Ok(())
    })
}

fn add(maps: &Maps, ip: Ipv4Addr, identity: Identity) -> Result<Vec<String>, Failure> {
    let previous = maps
        .endpoints
        .upsert(ip, identity)
        .map_err(|e| Failure::failed(format_args!("add {ip}"), e))?;
    Ok(vec![match previous {
        None => format!("added {ip} with identity {identity}"),
        Some(Stored::Valid(old)) if old == identity => format!("{ip} already had identity {identity}"),
        Some(Stored::Valid(old)) => format!("{ip}: replaced identity {old} with {identity}"),
        Some(Stored::Invalid { raw, .. }) => {
            format!("{ip}: replaced invalid identity {raw} with {identity}")
        }
    }])
}

fn del(maps: &Maps, ip: Ipv4Addr) -> Result<Vec<String>, Failure> {
    let removed = maps
        .endpoints
        .delete(ip)
        .map_err(|e| Failure::failed(format_args!("delete {ip}"), e))?;
    Ok(vec![match removed {
        Some(Stored::Valid(old)) => format!("deleted {ip} (identity {old})"),
        Some(Stored::Invalid { raw, .. }) => format!("deleted {ip} (invalid identity {raw})"),
        None => format!("{ip} was not present; nothing to delete"),
    }])
}

fn flush(maps: &Maps) -> Result<Vec<String>, Failure> {
    let n = maps
        .endpoints
        .clear()
        .map_err(|e| Failure::failed("flush endpoints", e))?;
    Ok(vec![format!("removed {n} endpoints")])
}

fn get(common: &Common, ip: Ipv4Addr) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let identity = maps
        .endpoints
        .get(ip)
        .map_err(|e| Failure::failed(format_args!("look up {ip}"), e))?
        .ok_or_else(|| Failure::Runtime(format!("{ip} is not an endpoint (see `endpointctl list`)")))?;
    let mut out = Out::new(common);
    match out.format() {
        Format::Json => out.json(&EndpointRow::from(ip, identity))?,
        Format::Table => out.endpoints(&[(ip, identity)], maps.endpoints.capacity(), View::Full)?,
    }
    out.flush()?;
    Ok(())
}

fn list(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let all = maps
        .endpoints
        .list()
        .map_err(|e| Failure::failed("list endpoints", e))?;
    let mut out = Out::new(common);
    out.endpoints(&all, maps.endpoints.capacity(), View::Full)?;
    out.flush()?;
    Ok(())
}
