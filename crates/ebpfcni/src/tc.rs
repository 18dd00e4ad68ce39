//! The tc hooks of an interface: attaching the program to both directions,
//! reading back what is attached, and detaching.
//!
//! Two ways to attach, both outliving this process and going with the
//! device ([`AttachMode`]):
//! - clsact filters at a fixed handle and priority (the default);
//! - tcx (kernel 6.6+): the device holds the program, with no qdisc and no
//!   classifier in between. The hooks cost about 3% less CPU per small
//!   packet, but each attach waits for an RCU grace period under the rtnl
//!   lock, which makes ADD and DEL tens of milliseconds slower and
//!   serializes parallel ADDs (BENCHMARKS.md, sections 4 and 6).
//!
//! Reading back and detaching see both kinds.
//!
//! These act on interfaces of the calling thread's network namespace.

use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use libbpf_rs::{libbpf_sys, ProgramHandle, TcHook, TcHookBuilder, TC_EGRESS, TC_INGRESS};

use crate::error::{Error, Result};
use crate::program::{Hook, Program};

/// Our filter's handle and priority on both clsact hooks. Fixed, so that
/// attaching again replaces it instead of adding a second filter.
pub const TC_HANDLE: u32 = 0xeb;
pub const TC_PRIORITY: u32 = 1;

/// More programs than this on one hook of a pod's veth is an error.
const MAX_TCX_PROGRAMS: usize = 64;

fn ifindex_arg(ifindex: u32) -> Result<i32> {
    i32::try_from(ifindex).ok().filter(|i| *i > 0).ok_or_else(|| {
        Error::io(
            format!("ifindex {ifindex}"),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })
}

fn os_error(rc: i32) -> libbpf_rs::Error {
    libbpf_rs::Error::from_raw_os_error(-rc)
}

fn tcx_type(hook: Hook) -> libbpf_sys::bpf_attach_type {
    match hook {
        Hook::FromPod | Hook::FromFabric => libbpf_sys::BPF_TCX_INGRESS,
        Hook::ToPod => libbpf_sys::BPF_TCX_EGRESS,
    }
}

/// The programs attached with tcx to `hook` of `ifindex`, in the order
/// they run, and the revision of that list (it changes with every attach
/// and detach). None when the kernel has no tcx.
fn tcx_query(ifindex: i32, hook: Hook) -> Result<Option<(Vec<u32>, u64)>> {
    let mut ids = [0u32; MAX_TCX_PROGRAMS];
    let mut opts = libbpf_sys::bpf_prog_query_opts {
        sz: size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
        prog_ids: ids.as_mut_ptr(),
        ..Default::default()
    };
    opts.__bindgen_anon_1.prog_cnt = ids.len() as u32;
    // SAFETY: opts is sized and prog_ids has room for prog_cnt ids.
    let rc = unsafe { libbpf_sys::bpf_prog_query_opts(ifindex, tcx_type(hook), &mut opts) };
    match -rc {
        nix::libc::EINVAL => return Ok(None), // no such attach type: a kernel before 6.6
        // No tcx program on that hook yet: some kernels say so instead of
        // returning an empty list. Revision 0 checks nothing.
        nix::libc::ENOENT => return Ok(Some((Vec::new(), 0))),
        _ => {}
    }
    if rc < 0 {
        return Err(Error::bpf(
            format!("query tcx {} of ifindex {ifindex}", hook.tc_name()),
            os_error(rc),
        ));
    }
    // SAFETY: the kernel wrote the count of ids it returned.
    let count = unsafe { opts.__bindgen_anon_1.prog_cnt } as usize;
    Ok(Some((ids[..count.min(ids.len())].to_vec(), opts.revision)))
}

/// The first of `ids` that is our entry point for `hook` (by its name in
/// the kernel), with a handle on it. A program that went away since the
/// query is skipped.
fn ours(ids: &[u32], hook: Hook) -> Option<(u32, ProgramHandle)> {
    ids.iter().find_map(|&id| {
        let handle = ProgramHandle::from_prog_id(id).ok()?;
        (handle.name() == hook.program_name()).then_some((id, handle))
    })
}

/// How the program is attached to a host veth's hooks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Filters on the interface's clsact qdisc.
    #[default]
    Clsact,
    /// tcx, where the kernel has it (6.6+); clsact filters where it does not.
    Tcx,
}

impl Program {
    /// Attaches each entry point to its tc hook of `ifindex` in the calling
    /// thread's network namespace, as clsact filters. (Written here, not in
    /// `program.rs`: attaching is this module's, and it builds on the
    /// program, not the other way round.)
    pub fn attach(&self, ifindex: u32) -> Result<()> {
        self.attach_as(ifindex, AttachMode::Clsact)
    }

    /// [`Program::attach`], the way `mode` says.
    pub fn attach_as(&self, ifindex: u32, mode: AttachMode) -> Result<()> {
        attach(self, ifindex, mode)
    }

    /// Attaches the from-fabric entry point to tc ingress of `ifindex`,
    /// the node's fabric interface (cluster mode), in the calling thread's
    /// network namespace: with tcx where the kernel has it, in place of an
    /// ebpfcni from-fabric program attached there (atomically: the
    /// interface is never unchecked), after everyone else's programs;
    /// without tcx, as a clsact filter at our handle and priority, unless
    /// a filter of another program sits there (an error: it is not
    /// ours to replace). Idempotent.
    pub fn attach_fabric(&self, ifindex: u32) -> Result<()> {
        let idx = ifindex_arg(ifindex)?;
        if attach_tcx(self, idx, Hook::FromFabric)? {
            return Ok(());
        }
        if let Some(id) = clsact::query(idx, Hook::FromFabric)? {
            let name = ProgramHandle::from_prog_id(id).map(|h| h.name().to_string_lossy().into_owned());
            if name.as_deref().ok() != Some(Hook::FromFabric.program_name()) {
                return Err(Error::io(
                    format!(
                        "attach to tc ingress of ifindex {ifindex}: the clsact filter at handle \
                         {TC_HANDLE:#x}, priority {TC_PRIORITY} runs program {id}, not ours"
                    ),
                    std::io::ErrorKind::AlreadyExists.into(),
                ));
            }
        }
        clsact::attach(self, idx, Hook::FromFabric)
    }
}

/// The id of the from-fabric program attached to tc ingress of `ifindex`
/// (tcx, or our clsact filter when it runs that program), if any.
pub fn fabric_attachment(ifindex: u32) -> Result<Option<u32>> {
    let idx = ifindex_arg(ifindex)?;
    let hook = Hook::FromFabric;
    if let Some((id, _)) = tcx_query(idx, hook)?.and_then(|(ids, _)| ours(&ids, hook)) {
        return Ok(Some(id));
    }
    Ok(clsact::query(idx, hook)?
        .filter(|&id| ProgramHandle::from_prog_id(id).is_ok_and(|h| h.name() == hook.program_name())))
}

/// Attaches each entry point of `program` to its hook of `ifindex`
/// (from-pod on ingress, to-pod on egress) as `mode` says: in place of an
/// ebpfcni program attached the same way, else after the programs there
/// (an attachment of the other kind stays: see `policyctl reattach`, which
/// keeps each pod's kind). Idempotent; the switch from an older program is
/// atomic, so the pod is never unfiltered.
pub(crate) fn attach(program: &Program, ifindex: u32, mode: AttachMode) -> Result<()> {
    let idx = ifindex_arg(ifindex)?;
    for hook in Hook::ALL {
        if mode == AttachMode::Tcx && attach_tcx(program, idx, hook)? {
            continue;
        }
        clsact::attach(program, idx, hook)?;
    }
    Ok(())
}

/// Returns: false when the kernel has no tcx.
fn attach_tcx(program: &Program, ifindex: i32, hook: Hook) -> Result<bool> {
    let what = || format!("attach to tcx {} of ifindex {ifindex}", hook.tc_name());
    // Another process may change the list between the query and the
    // attach: the kernel then refuses the stale revision, and we look again.
    for _ in 0..8 {
        let Some((ids, revision)) = tcx_query(ifindex, hook)? else {
            return Ok(false);
        };
        let mut opts = libbpf_sys::bpf_prog_attach_opts {
            sz: size_of::<libbpf_sys::bpf_prog_attach_opts>() as _,
            expected_revision: revision,
            ..Default::default()
        };
        let old = ours(&ids, hook);
        match &old {
            Some((id, _)) if *id == program.id(hook) => return Ok(true),
            Some((_, handle)) => {
                opts.flags = libbpf_sys::BPF_F_REPLACE;
                opts.__bindgen_anon_1.replace_prog_fd = handle.as_fd().as_raw_fd();
            }
            None => {}
        }
        let fd = program.as_fd(hook).as_raw_fd();
        // SAFETY: opts is sized; the fds are open for the call.
        let rc = unsafe { libbpf_sys::bpf_prog_attach_opts(fd, ifindex, tcx_type(hook), &opts) };
        match -rc {
            0 => return Ok(true),
            nix::libc::ESTALE => continue,
            _ => return Err(Error::bpf(what(), os_error(rc))),
        }
    }
    Err(Error::bpf(what(), os_error(-nix::libc::ESTALE)))
}

/// Ids of the ebpfcni programs attached to `ifindex`, one per hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    pub ingress: Option<u32>,
    pub egress: Option<u32>,
    /// How they are attached: tcx when either one is, else clsact.
    pub mode: AttachMode,
}

/// Reads back what is attached to `ifindex`: on each hook our tcx program,
/// else the program of our clsact filter.
pub fn attachment(ifindex: u32) -> Result<Attachment> {
    let idx = ifindex_arg(ifindex)?;
    let mut mode = AttachMode::Clsact;
    let mut on = |hook: Hook| -> Result<Option<u32>> {
        if let Some((id, _)) = tcx_query(idx, hook)?.and_then(|(ids, _)| ours(&ids, hook)) {
            mode = AttachMode::Tcx;
            return Ok(Some(id));
        }
        clsact::query(idx, hook)
    };
    let (ingress, egress) = (on(Hook::FromPod)?, on(Hook::ToPod)?);
    Ok(Attachment {
        ingress,
        egress,
        mode,
    })
}

/// Every program attached with tcx to `hook` of `ifindex`, ours or not, in
/// the order they run (empty on a kernel without tcx).
pub fn tcx_programs(ifindex: u32, hook: Hook) -> Result<Vec<u32>> {
    Ok(tcx_query(ifindex_arg(ifindex)?, hook)?
        .map(|(ids, _)| ids)
        .unwrap_or_default())
}

/// Removes our program from `hook` of `ifindex`, tcx and clsact filter
/// alike; an absent one is fine.
pub fn detach_hook(ifindex: u32, hook: Hook) -> Result<()> {
    let idx = ifindex_arg(ifindex)?;
    if let Some((ids, _)) = tcx_query(idx, hook)? {
        if let Some((id, handle)) = ours(&ids, hook) {
            let opts = libbpf_sys::bpf_prog_detach_opts {
                sz: size_of::<libbpf_sys::bpf_prog_detach_opts>() as _,
                ..Default::default()
            };
            let fd = handle.as_fd().as_raw_fd();
            // SAFETY: opts is sized; the fd is open for the call.
            let rc = unsafe { libbpf_sys::bpf_prog_detach_opts(fd, idx, tcx_type(hook), &opts) };
            if rc < 0 && rc != -nix::libc::ENOENT {
                return Err(Error::bpf(
                    format!(
                        "detach program {id} from tcx {} of ifindex {ifindex}",
                        hook.tc_name()
                    ),
                    os_error(rc),
                ));
            }
        }
    }
    clsact::detach(idx, hook)
}

/// Removes our programs from both hooks of `ifindex`; absent ones are
/// fine. Tries both directions and reports every failure.
pub fn detach(ifindex: u32) -> Result<()> {
    let errors: Vec<String> = Hook::ALL
        .into_iter()
        .filter_map(|hook| detach_hook(ifindex, hook).err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::io(
            format!("detach from ifindex {ifindex}: {}", errors.join("; ")),
            std::io::Error::other("detach failed"),
        ))
    }
}

/// Filters on the clsact qdisc at our handle and priority.
mod clsact {
    use super::*;

    fn point(hook: Hook) -> libbpf_rs::TcAttachPoint {
        match hook {
            Hook::FromPod | Hook::FromFabric => TC_INGRESS,
            Hook::ToPod => TC_EGRESS,
        }
    }

    /// `hook` of `ifindex` at our handle and priority, with `program` to attach.
    fn our_hook(program: BorrowedFd<'_>, ifindex: i32, hook: Hook) -> TcHook {
        let mut builder = TcHookBuilder::new(program);
        builder
            .ifindex(ifindex)
            .replace(true)
            .handle(TC_HANDLE)
            .priority(TC_PRIORITY);
        builder.hook(point(hook))
    }

    /// Query and detach must be given program fd 0 (libbpf checks); it is never used.
    fn no_program() -> BorrowedFd<'static> {
        // SAFETY: the fd is only stored in the hook's options, never used.
        unsafe { BorrowedFd::borrow_raw(0) }
    }

    /// True for the errors that mean "nothing of ours there": ENOENT (no
    /// filter) and EINVAL (no clsact qdisc at all).
    fn is_absent(e: &libbpf_rs::Error) -> bool {
        matches!(
            e.kind(),
            libbpf_rs::ErrorKind::NotFound | libbpf_rs::ErrorKind::InvalidInput
        )
    }

    /// Create-or-replace, creating the clsact qdisc when missing (EEXIST,
    /// already there, is success).
    pub(super) fn attach(program: &Program, ifindex: i32, hook: Hook) -> Result<()> {
        let hook_of = |h| our_hook(program.as_fd(h), ifindex, h);
        hook_of(Hook::FromPod)
            .create()
            .map_err(|e| Error::bpf(format!("create clsact qdisc on ifindex {ifindex}"), e))?;
        hook_of(hook)
            .attach()
            .map_err(|e| Error::bpf(format!("attach to tc {} of ifindex {ifindex}", hook.tc_name()), e))?;
        Ok(())
    }

    pub(super) fn query(ifindex: i32, hook: Hook) -> Result<Option<u32>> {
        match our_hook(no_program(), ifindex, hook).query() {
            Ok(id) => Ok(Some(id)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(Error::bpf(
                format!("query tc {} of ifindex {ifindex}", hook.tc_name()),
                e,
            )),
        }
    }

    pub(super) fn detach(ifindex: i32, hook: Hook) -> Result<()> {
        match our_hook(no_program(), ifindex, hook).detach() {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(Error::bpf(
                format!("detach from tc {} of ifindex {ifindex}", hook.tc_name()),
                e,
            )),
        }
    }
}
