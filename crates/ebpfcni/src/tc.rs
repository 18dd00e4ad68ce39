//! The tc hooks of an interface: attaching a program to both directions of
//! its clsact qdisc, reading back what is attached, and detaching.
//!
//! These act on interfaces of the calling thread's network namespace.

use std::os::fd::BorrowedFd;

use libbpf_rs::{TcHook, TcHookBuilder, TC_EGRESS, TC_INGRESS};

use crate::error::{Error, Result};

/// Our filter's handle and priority on both clsact hooks. Fixed, so that
/// attaching again replaces it instead of adding a second filter.
pub const TC_HANDLE: u32 = 0xeb;
pub const TC_PRIORITY: u32 = 1;

/// Both hooks, with the names `tc` uses for them.
const HOOKS: [(&str, libbpf_rs::TcAttachPoint); 2] = [("ingress", TC_INGRESS), ("egress", TC_EGRESS)];

fn ifindex_arg(ifindex: u32) -> Result<i32> {
    i32::try_from(ifindex).ok().filter(|i| *i > 0).ok_or_else(|| {
        Error::io(
            format!("ifindex {ifindex}"),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })
}

/// Hooks of `ifindex` at our handle and priority, with `program` to attach.
fn our_hooks(program: BorrowedFd<'_>, ifindex: i32) -> TcHookBuilder<'_> {
    let mut builder = TcHookBuilder::new(program);
    builder
        .ifindex(ifindex)
        .replace(true)
        .handle(TC_HANDLE)
        .priority(TC_PRIORITY);
    builder
}

/// One hook of `ifindex` at our handle and priority.
fn our_hook(program: BorrowedFd<'_>, ifindex: i32, point: libbpf_rs::TcAttachPoint) -> TcHook {
    our_hooks(program, ifindex).hook(point)
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

/// Attaches `ingress` to tc INGRESS (what the device receives: a host veth's
/// pod egress) and `egress` to EGRESS (what it sends: pod ingress) of
/// `ifindex`, creating the clsact qdisc when missing. Create-or-replace at a
/// fixed handle and priority: any number of attaches leaves one filter per
/// direction. The attachment outlives this process.
pub(crate) fn attach(ingress: BorrowedFd<'_>, egress: BorrowedFd<'_>, ifindex: u32) -> Result<()> {
    let idx = ifindex_arg(ifindex)?;
    // One clsact qdisc holds both hooks; EEXIST (already there) is success.
    our_hook(ingress, idx, TC_INGRESS)
        .create()
        .map_err(|e| Error::bpf(format!("create clsact qdisc on ifindex {ifindex}"), e))?;
    for ((name, point), program) in HOOKS.into_iter().zip([ingress, egress]) {
        our_hook(program, idx, point)
            .attach()
            .map_err(|e| Error::bpf(format!("attach to tc {name} of ifindex {ifindex}"), e))?;
    }
    Ok(())
}

/// Ids of the programs attached at our handle and priority on `ifindex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    pub ingress: Option<u32>,
    pub egress: Option<u32>,
}

/// Reads back what is attached to `ifindex` at our handle and priority.
pub fn attachment(ifindex: u32) -> Result<Attachment> {
    let idx = ifindex_arg(ifindex)?;
    let query = |(name, point): (&str, _)| -> Result<Option<u32>> {
        match our_hook(no_program(), idx, point).query() {
            Ok(id) => Ok(Some(id)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(Error::bpf(format!("query tc {name} of ifindex {ifindex}"), e)),
        }
    };
    Ok(Attachment {
        ingress: query(HOOKS[0])?,
        egress: query(HOOKS[1])?,
    })
}

/// Removes our filters from both hooks of `ifindex`; absent filters are
/// fine. Tries both directions and reports every failure.
pub fn detach(ifindex: u32) -> Result<()> {
    let idx = ifindex_arg(ifindex)?;
    let errors: Vec<String> = HOOKS
        .into_iter()
        .filter_map(
            |(name, point)| match our_hook(no_program(), idx, point).detach() {
                Ok(()) => None,
                Err(e) if is_absent(&e) => None,
                Err(e) => Some(format!("tc {name}: {e}")),
            },
        )
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
