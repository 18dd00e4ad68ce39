//! Loading the program against the pinned maps, attaching it to an
//! interface's clsact hooks, and running it on crafted frames.
//!
//! Attach, detach and query act on interfaces of the calling thread's
//! network namespace.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapHandle, OpenMapMut, ProgramHandle, TcHook, TcHookBuilder, TC_EGRESS, TC_INGRESS};

use crate::bpffs::{self, PinDirLock};
use crate::error::{Error, Result};
use crate::maps::{self, ConfigMap, MapSpec, TraceLevel, CONFIG_MAP, PINNED_MAPS};
use crate::skel::{types, EbpfcniSkelBuilder, OpenEbpfcniMaps};

/// Our filter's handle and priority on both clsact hooks. Fixed, so that
/// attaching again replaces it instead of adding a second filter.
pub const TC_HANDLE: u32 = 0xeb;
pub const TC_PRIORITY: u32 = 1;

/// Name of the program in the kernel (`bpftool prog show`).
pub const PROGRAM_NAME: &str = "process_tc";

/// The pinned maps of an open skeleton, in [`PINNED_MAPS`] order.
fn pinned_maps<'a, 'obj>(maps: &'a mut OpenEbpfcniMaps<'obj>) -> [&'a mut OpenMapMut<'obj>; 4] {
    [
        &mut maps.endpoint_map,
        &mut maps.policy_map,
        &mut maps.config_map,
        &mut maps.drop_counters,
    ]
}

/// The layouts of the pinned maps as compiled into this build, in
/// [`PINNED_MAPS`] order. Opens (does not load) the embedded object.
pub(crate) fn map_specs() -> Result<[MapSpec; 4]> {
    let mut storage = MaybeUninit::uninit();
    let mut open = EbpfcniSkelBuilder::default()
        .open(&mut storage)
        .map_err(|e| Error::bpf("open the embedded BPF object", e))?;
    Ok(pinned_maps(&mut open.maps).map(|m| MapSpec::of_open(m)))
}

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

/// tc verdicts the program returns.
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;

impl Program {
    /// Loads the program with its maps pinned under `pin_dir`: pins that
    /// exist are reused (after checking their layout), missing ones are
    /// created and pinned. A fresh config map starts at trace level "drops".
    /// Concurrent loaders serialise on a lock of `pin_dir`.
    pub fn load(pin_dir: &Path) -> Result<Self> {
        bpffs::prepare_pin_dir(pin_dir)?;
        let _lock = PinDirLock::acquire(pin_dir)?;

        let mut storage = MaybeUninit::uninit();
        let mut open = EbpfcniSkelBuilder::default()
            .open(&mut storage)
            .map_err(|e| Error::bpf("open the embedded BPF object", e))?;
        let mut config_created = false;
        for (name, map) in PINNED_MAPS.iter().zip(pinned_maps(&mut open.maps)) {
            let path = pin_dir.join(name);
            if maps::open_pinned(&path, &MapSpec::of_open(map))?.is_none() {
                config_created |= *name == CONFIG_MAP;
            }
            map.set_pin_path(&path)
                .map_err(|e| Error::bpf(format!("set pin path {}", path.display()), e))?;
        }
        let skel = open.load().map_err(|e| {
            Error::bpf(
                format!("load the BPF program with maps in {}", pin_dir.display()),
                e,
            )
        })?;
        if config_created {
            let config = MapHandle::try_from(&skel.maps.config_map)
                .map_err(|e| Error::bpf(format!("open {CONFIG_MAP}"), e))?;
            ConfigMap::new(config).set_trace_level(TraceLevel::Drops)?;
        }
        let handle = ProgramHandle::try_from(&skel.progs.process_tc)
            .map_err(|e| Error::bpf("keep the loaded program", e))?;
        Ok(Self { handle })
    }

    /// The kernel's id of this instance.
    pub fn id(&self) -> u32 {
        self.handle.id()
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
    }

    /// Attaches to tc INGRESS (what the device receives: a host veth's pod
    /// egress) and EGRESS (what it sends: pod ingress) of `ifindex`, creating
    /// the clsact qdisc when missing. Create-or-replace at a fixed handle and
    /// priority: any number of attaches leaves one filter per direction. The
    /// attachment outlives this process.
    pub fn attach(&self, ifindex: u32) -> Result<()> {
        let mut builder = TcHookBuilder::new(self.as_fd());
        builder
            .ifindex(ifindex_arg(ifindex)?)
            .replace(true)
            .handle(TC_HANDLE)
            .priority(TC_PRIORITY);
        // One clsact qdisc holds both hooks; EEXIST (already there) is success.
        builder
            .hook(TC_INGRESS)
            .create()
            .map_err(|e| Error::bpf(format!("create clsact qdisc on ifindex {ifindex}"), e))?;
        for (name, point) in [("ingress", TC_INGRESS), ("egress", TC_EGRESS)] {
            builder
                .hook(point)
                .attach()
                .map_err(|e| Error::bpf(format!("attach to tc {name} of ifindex {ifindex}"), e))?;
        }
        Ok(())
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

fn ifindex_arg(ifindex: u32) -> Result<i32> {
    i32::try_from(ifindex).ok().filter(|i| *i > 0).ok_or_else(|| {
        Error::io(
            format!("ifindex {ifindex}"),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })
}

/// A hook of `ifindex` at our handle and priority. The program fd is only
/// needed to attach; query and detach ignore it.
fn our_hook(fd: BorrowedFd<'_>, ifindex: i32, point: libbpf_rs::TcAttachPoint) -> TcHook {
    TcHookBuilder::new(fd)
        .ifindex(ifindex)
        .handle(TC_HANDLE)
        .priority(TC_PRIORITY)
        .hook(point)
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
    let query = |point, name: &str| -> Result<Option<u32>> {
        // SAFETY: the fd is not used by query (bpf_tc_query needs prog_fd 0).
        let fd = unsafe { BorrowedFd::borrow_raw(0) };
        match our_hook(fd, idx, point).query() {
            Ok(id) => Ok(Some(id)),
            // ENOENT: no filter there; EINVAL: no clsact qdisc at all.
            Err(e)
                if matches!(
                    e.kind(),
                    libbpf_rs::ErrorKind::NotFound | libbpf_rs::ErrorKind::InvalidInput
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::bpf(format!("query tc {name} of ifindex {ifindex}"), e)),
        }
    };
    Ok(Attachment {
        ingress: query(TC_INGRESS, "ingress")?,
        egress: query(TC_EGRESS, "egress")?,
    })
}

/// Removes our filters from both hooks of `ifindex`; absent filters are
/// fine. Tries both directions and reports every failure.
pub fn detach(ifindex: u32) -> Result<()> {
    let idx = ifindex_arg(ifindex)?;
    let mut errors = Vec::new();
    for (name, point) in [("ingress", TC_INGRESS), ("egress", TC_EGRESS)] {
        // SAFETY: detach requires prog_fd 0; the fd is never used.
        let fd = unsafe { BorrowedFd::borrow_raw(0) };
        match our_hook(fd, idx, point).detach() {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    libbpf_rs::ErrorKind::NotFound | libbpf_rs::ErrorKind::InvalidInput
                ) => {}
            Err(e) => errors.push(format!("tc {name}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::io(
            format!("detach from ifindex {ifindex}: {}", errors.join("; ")),
            std::io::Error::other("detach failed"),
        ))
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

/// Looks up a loaded program by id (as returned by [`attachment`]).
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
    let mut info2 = libbpf_sys::bpf_prog_info {
        nr_map_ids: map_ids.len() as u32,
        map_ids: map_ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: map_ids has room for nr_map_ids entries.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info2, &mut len) };
    if rc != 0 {
        return Err(Error::bpf(
            format!("read map ids of program {id}"),
            libbpf_rs::Error::from_raw_os_error(-rc),
        ));
    }
    map_ids.truncate(info2.nr_map_ids as usize);
    Ok(ProgramInfo {
        id,
        name: handle.name().to_string_lossy().into_owned(),
        map_ids,
    })
}
