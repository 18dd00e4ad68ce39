//! A second process for the datapath tests: what another program does with
//! the pinned maps. A binary rather than a test entry point, so that a normal
//! test run neither runs nor counts it.
//!
//! ```text
//! ebpfcni-test-helper write PIN_DIR                 endpoint 10.13.0.2 = 1001, rule 1001 -> 1002
//! ebpfcni-test-helper open PIN_DIR                  prints "IDS <map ids>"
//! ebpfcni-test-helper attach PIN_DIR NETNS IFNAME [tcx]   loads and attaches, then exits
//! ```

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use ebpfcni::{AttachMode, Identity, Maps, PolicyRule, Program};

fn id(n: u32) -> Identity {
    Identity::new(n).expect("non-zero identity")
}

fn run(args: &[String]) -> Result<(), String> {
    let fail = |e: ebpfcni::Error| e.to_string();
    match args {
        [task, pin_dir] if task == "write" => {
            let maps = Maps::open_or_create(Path::new(pin_dir)).map_err(fail)?;
            maps.endpoints
                .upsert(Ipv4Addr::new(10, 13, 0, 2), id(1001))
                .map_err(fail)?;
            maps.policy
                .allow(PolicyRule::new(id(1001), id(1002)))
                .map_err(fail)?;
            Ok(())
        }
        [task, pin_dir] if task == "open" => {
            let maps = Maps::open_or_create(Path::new(pin_dir)).map_err(fail)?;
            println!("IDS {:?}", maps.ids().map_err(fail)?);
            Ok(())
        }
        [task, pin_dir, netns, ifname, mode @ ..] if task == "attach" && mode.len() <= 1 => {
            let mode = match mode.first().map(String::as_str) {
                None => AttachMode::Clsact,
                Some("tcx") => AttachMode::Tcx,
                Some(other) => return Err(format!("attach mode {other:?}: tcx or nothing")),
            };
            let file = std::fs::File::open(netns).map_err(|e| format!("open {netns}: {e}"))?;
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {netns}: {e}"))?;
            let ifindex =
                nix::net::if_::if_nametoindex(ifname.as_str()).map_err(|e| format!("{ifname}: {e}"))?;
            Program::load(Path::new(pin_dir))
                .and_then(|p| p.attach_as(ifindex, mode))
                .map_err(fail)
        }
        _ => Err("usage: ebpfcni-test-helper write|open PIN_DIR | attach PIN_DIR NETNS IFNAME [tcx]".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebpfcni-test-helper: {e}");
            ExitCode::FAILURE
        }
    }
}
