//! What runs on the tc hooks of an interface, read back from the kernel
//! independently of how ebpfcni reads it: tcx programs by name, clsact
//! filters as `tc filter show` prints them.

use ebpfcni::{AttachMode, Hook};
use libbpf_rs::ProgramHandle;

use crate::Netns;

/// The programs on one hook of an interface.
#[derive(Debug, Default)]
pub struct HookPrograms {
    /// Names of the programs attached with tcx, in the order they run.
    pub tcx: Vec<String>,
    /// The bpf filters of the clsact qdisc, one `tc filter show` line each
    /// (the one with its handle).
    pub clsact: Vec<String>,
}

impl HookPrograms {
    /// Exactly one program, ours for `hook`, attached the way `mode` says.
    pub fn is_ours_alone(&self, hook: Hook, mode: AttachMode) -> bool {
        match mode {
            AttachMode::Tcx => self.tcx == [hook.program_name()] && self.clsact.is_empty(),
            AttachMode::Clsact => {
                self.tcx.is_empty() && self.clsact.len() == 1 && self.clsact[0].contains(hook.program_name())
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tcx.is_empty() && self.clsact.is_empty()
    }
}

/// What runs on `hook` of `dev` in `ns`.
pub fn hook_programs(ns: &Netns, dev: &str, hook: Hook) -> HookPrograms {
    let ifindex = ns.ifindex(dev);
    let ids = ns.run_in(|| ebpfcni::tc::tcx_programs(ifindex, hook).expect("query tcx"));
    let tcx = ids
        .into_iter()
        .filter_map(|id| ProgramHandle::from_prog_id(id).ok())
        .map(|p| p.name().to_string_lossy().into_owned())
        .collect();
    let out = ns
        .command("tc")
        .args(["filter", "show", "dev", dev, hook.tc_name()])
        .output()
        .expect("spawn tc");
    assert!(
        out.status.success(),
        "tc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clsact = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" bpf ") && l.contains(" handle "))
        .map(str::to_owned)
        .collect();
    HookPrograms { tcx, clsact }
}
