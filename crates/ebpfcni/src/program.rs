//! The identity-policy program: loading it against the pinned maps, running
//! it on crafted frames (BPF_PROG_TEST_RUN), and reading what the kernel
//! knows of a loaded program.

use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use libbpf_rs::libbpf_sys;
use libbpf_rs::ProgramHandle;

use crate::error::{Error, Result};
use crate::object;
use crate::skel::types;

/// Name of the program in the kernel (`bpftool prog show`, `tc filter show`).
pub const PROGRAM_NAME: &str = "process_tc";

/// tc verdicts the program returns.
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;

/// A loaded instance of the program, sharing the pinned maps. The kernel
/// keeps it alive while this handle or an attachment holds it.
#[derive(Debug)]
pub struct Program {
    handle: ProgramHandle,
}

/// Outcome of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, Copy)]
pub struct TestRun {
    /// The program's return value: a TC_ACT_* verdict.
    pub verdict: i32,
    /// Mean time per repetition, as measured by the kernel.
    pub duration: Duration,
}

/// `__sk_buff` fields for [`Program::test_run`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TestContext {
    /// Device the program runs on (must exist in the caller's namespace; 1 is lo).
    pub ifindex: u32,
    /// Device the packet was received on: equal to `ifindex` at tc ingress.
    pub ingress_ifindex: u32,
}

impl Program {
    /// Loads the program with its maps pinned under `pin_dir`: pins that
    /// exist are reused (after checking their layout), missing ones are
    /// created and pinned. A fresh config map starts at trace level "drops".
    /// Concurrent loaders serialise on a lock of `pin_dir`.
    pub fn load(pin_dir: &Path) -> Result<Self> {
        object::load(pin_dir, |skel| {
            let handle = ProgramHandle::try_from(&skel.progs.process_tc)
                .map_err(|e| Error::bpf("keep the loaded program", e))?;
            Ok(Self { handle })
        })
    }

    /// Whether the program would load against the maps pinned under
    /// `pin_dir`, changing nothing (see [`crate::object`]): for readiness
    /// probes.
    pub fn verify(pin_dir: &Path) -> Result<()> {
        object::verify(pin_dir)
    }

    /// The kernel's id of this instance.
    pub fn id(&self) -> u32 {
        self.handle.id()
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
    }

    /// Attaches this program to both tc hooks of `ifindex` in the calling
    /// thread's network namespace (see [`crate::tc`]).
    pub fn attach(&self, ifindex: u32) -> Result<()> {
        crate::tc::attach(self.as_fd(), ifindex)
    }

    /// Runs the program once per repeat on `frame` through BPF_PROG_TEST_RUN.
    /// `ctx` sets the `__sk_buff` fields a caller may set.
    pub fn test_run(&self, frame: &[u8], ctx: Option<&TestContext>, repeat: u32) -> Result<TestRun> {
        // The kernel rejects a context whose reserved bytes (padding
        // included) are not zero: start from all-zero bytes, set fields in place.
        // SAFETY: __sk_buff and bpf_test_run_opts are plain C structs for
        // which all-zero bytes are valid.
        let mut skb: types::__sk_buff = unsafe { std::mem::zeroed() };
        let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
        opts.sz = size_of::<libbpf_sys::bpf_test_run_opts>() as _;
        opts.data_in = frame.as_ptr().cast();
        opts.data_size_in = frame.len() as u32;
        if let Some(ctx) = ctx {
            skb.ifindex = ctx.ifindex;
            skb.ingress_ifindex = ctx.ingress_ifindex;
            opts.ctx_in = (&skb as *const types::__sk_buff).cast();
            opts.ctx_size_in = size_of::<types::__sk_buff>() as u32;
        }
        opts.repeat = repeat as i32;
        // SAFETY: opts points at live buffers for the duration of the call.
        let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(self.as_fd().as_raw_fd(), &mut opts) };
        if rc != 0 {
            return Err(Error::bpf(
                "BPF_PROG_TEST_RUN",
                libbpf_rs::Error::from_raw_os_error(-rc),
            ));
        }
        Ok(TestRun {
            verdict: opts.retval as i32,
            duration: Duration::from_nanos(opts.duration.into()),
        })
    }
}

/// What a loaded program is, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramInfo {
    pub id: u32,
    pub name: String,
    /// Ids of the maps the program uses (including its private .rodata).
    pub map_ids: Vec<u32>,
}

/// Looks up a loaded program by id (as returned by [`crate::attachment`]).
pub fn program_info(id: u32) -> Result<ProgramInfo> {
    let handle =
        ProgramHandle::from_prog_id(id).map_err(|e| Error::bpf(format!("open program id {id}"), e))?;
    let fd = handle.as_fd().as_raw_fd();
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // First call: learn how many map ids there are.
    // SAFETY: info is a live, correctly sized bpf_prog_info.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    if rc != 0 {
        return Err(Error::bpf(
            format!("read info of program {id}"),
            libbpf_rs::Error::from_raw_os_error(-rc),
        ));
    }
    let mut map_ids = vec![0u32; info.nr_map_ids as usize];
    let mut with_maps = libbpf_sys::bpf_prog_info {
        nr_map_ids: map_ids.len() as u32,
        map_ids: map_ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: map_ids has room for nr_map_ids entries.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut with_maps, &mut len) };
    if rc != 0 {
        return Err(Error::bpf(
            format!("read map ids of program {id}"),
            libbpf_rs::Error::from_raw_os_error(-rc),
        ));
    }
    map_ids.truncate(with_maps.nr_map_ids as usize);
    Ok(ProgramInfo {
        id,
        name: handle.name().to_string_lossy().into_owned(),
        map_ids,
    })
}
