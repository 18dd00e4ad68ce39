//! `ebpfcni`: the CNI plugin that gives a pod a veth into the node, routes
//! it at layer 3, and attaches ebpfcni's identity-policy program to both
//! directions of the host end.
//!
//! Spec 1.0.0 and 1.1.0 (VERSION also lists 0.4.0): ADD, DEL, CHECK,
//! VERSION, STATUS, GC. The runtime passes the network config on stdin and
//! CNI_* in the environment; the plugin prints the result (or a CNI error,
//! see [`error`] for the codes) on stdout and diagnostics on stderr or in
//! `logFile`. On failure the exit status is the error's code.
//!
//! Config fields besides the standard ones: `pinDir` (where the maps are
//! pinned, default /sys/fs/bpf/tc/globals), `mtu`, `logFile`.
//!
//! The plugin never writes map entries: identities and policy belong to
//! the operator (endpointctl, policyctl).
//!
//! This file is the edge: it reads the environment and stdin, runs the
//! command, and turns a typed error into the spec's JSON.

mod addressing;
mod agent;
mod claim;
mod command;
mod config;
mod diagnostics;
mod env;
mod error;
mod ipam;
mod netns;
mod result;
mod sysctl;
mod timing;
mod versions;
mod veth;

use std::io::{Read, Write};

/// The rtnetlink client is the library's (the CLIs use it too).
use ebpfcni::netlink;

use crate::env::{Command, Env};
use crate::error::{exit_status, Result};
use crate::versions::LATEST;

fn main() {
    timing::start();
    diagnostics::init();
    // libbpf's own messages (a verifier log, say) join our diagnostics.
    ebpfcni::set_libbpf_log(Some(|msg| log::info!("libbpf: {msg}")));
    let mut stdin = Vec::new();
    // An unreadable stdin is an empty config; parsing then reports it.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let outcome = run(&stdin);
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(Some(reply)) => {
            if let Err(source) = print(&reply) {
                let e = error::Error::ResultUnwritten {
                    source,
                    rollback: None,
                };
                log::error!("{e}");
                std::process::exit(exit_status(e.code()));
            }
        }
        Ok(None) => {}
        Err(e) => {
            log::error!("{e}");
            let version = config::version_of(&stdin).unwrap_or_else(|| LATEST.to_string());
            let wire = e.to_wire(&version);
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::to_string(&wire).expect("errors serialise")
            );
            let _ = stdout.flush();
            std::process::exit(exit_status(wire.code));
        }
    }
}

/// Writes `reply` and a newline on stdout, flushed.
fn print(reply: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{reply}")?;
    stdout.flush()
}

/// Runs the command named by CNI_COMMAND; returns the JSON to print, if any.
/// ADD prints its result itself: when that fails, the runtime never learns
/// of the pod's network, so the ADD is rolled back (as a DEL would).
fn run(stdin: &[u8]) -> Result<Option<String>> {
    let command = Command::from_env()?;
    if command == Command::Version {
        return Ok(Some(command::version(stdin).to_string()));
    }
    let conf = config::parse(stdin)?;
    if let Some(path) = &conf.log_file {
        diagnostics::to_file(path);
    }
    let env = Env::read(command)?;
    diagnostics::set_tag(
        format!("{} {} {}", env.command, env.container_id, env.ifname)
            .trim()
            .to_string(),
    );
    let reply = match command {
        Command::Add => {
            let result = command::add(&conf, &env, stdin)?;
            let reply = serde_json::to_string(&result).expect("results serialise");
            if let Err(source) = print(&reply) {
                log::error!("failed to write the result on stdout ({source}): rolling the ADD back");
                let rollback = Some(command::del(&conf, &env, stdin).map_err(Box::new));
                return Err(error::Error::ResultUnwritten { source, rollback });
            }
            None
        }
        Command::Del => command::del(&conf, &env, stdin).map(|()| None)?,
        Command::Check => command::check(&conf, &env, stdin).map(|()| None)?,
        Command::Status => command::status(&conf, &env).map(|()| None)?,
        Command::Gc => command::gc(&conf, &env, stdin).map(|()| None)?,
        Command::Version => unreachable!("answered before the config is read"),
    };
    log::info!("done; {}", timing::summary());
    Ok(reply)
}
