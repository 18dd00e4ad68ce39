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

mod commands;
mod config;
mod error;
mod ipam;
mod log;
mod netlink;
mod netns;
mod result;

use std::io::{Read, Write};

use serde_json::json;

use crate::config::{Env, Needs};
use crate::error::{exit_status, CniError, CniResult, INVALID_ENV};

/// Spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// The version errors are reported in when the config names none we know.
const LATEST: &str = "1.1.0";

fn main() {
    let mut stdin = Vec::new();
    // An unreadable stdin is an empty config; parsing then reports it.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let outcome = run(&stdin);
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(Some(reply)) => {
            let _ = writeln!(stdout, "{reply}");
        }
        Ok(None) => {}
        Err(e) => {
            diag!("error: {e}");
            let version = config::version_of(&stdin).unwrap_or_else(|| LATEST.to_string());
            let reply = json!({
                "cniVersion": version,
                "code": e.code,
                "msg": e.msg,
                "details": e.details,
            });
            let _ = writeln!(stdout, "{reply}");
            let _ = stdout.flush();
            std::process::exit(exit_status(e.code));
        }
    }
}

/// Runs the command named by CNI_COMMAND; returns the JSON to print, if any.
fn run(stdin: &[u8]) -> CniResult<Option<String>> {
    let command = Env::command()?;
    if command == "VERSION" {
        return Ok(Some(commands::version(stdin).to_string()));
    }
    let needs = match command.as_str() {
        "ADD" | "CHECK" => Needs {
            container_id: true,
            netns: true,
            ifname: true,
            path: true,
        },
        "DEL" => Needs {
            container_id: true,
            netns: false,
            ifname: true,
            path: true,
        },
        "STATUS" | "GC" => Needs {
            container_id: false,
            netns: false,
            ifname: false,
            path: true,
        },
        other => {
            return Err(
                CniError::new(INVALID_ENV, format!("unknown CNI_COMMAND {other:?}"))
                    .with_details("known: ADD, DEL, CHECK, VERSION, STATUS, GC"),
            )
        }
    };
    let conf = config::parse(stdin)?;
    if let Some(path) = &conf.log_file {
        log::to_file(path);
    }
    let env = Env::read(command, needs)?;
    log::set_tag(
        format!("{} {} {}", env.command, env.container_id, env.ifname)
            .trim()
            .to_string(),
    );
    let reply = match env.command.as_str() {
        "ADD" => Some(serde_json::to_string(&commands::add(&conf, &env, stdin)?).expect("results serialise")),
        "DEL" => commands::del(&conf, &env, stdin).map(|()| None)?,
        "CHECK" => commands::check(&conf, &env, stdin).map(|()| None)?,
        "STATUS" => commands::status(&conf, &env).map(|()| None)?,
        "GC" => commands::gc(&conf, &env, stdin).map(|()| None)?,
        _ => unreachable!("commands were matched above"),
    };
    diag!("done");
    Ok(reply)
}
