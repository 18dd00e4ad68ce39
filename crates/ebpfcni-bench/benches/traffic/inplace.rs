//! The program's own cost per run on real traffic, from the kernel's BPF
//! run-time statistics (run_time_ns / run_cnt of each entry point), and the
//! whole machine's CPU time per packet, with and without the filter. Unlike
//! a throughput ratio, neither depends much on how busy the machine is.
//!
//! Statistics are switched on with BPF_ENABLE_STATS, which lasts as long as
//! the file descriptor it returns: nothing global is left changed
//! (kernel.bpf_stats_enabled is not touched).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ebpfcni::{Hook, Program};
use libbpf_rs::libbpf_sys;

use crate::Result;

/// Run-time statistics on while this lives.
pub struct StatsEnabled(#[allow(dead_code)] OwnedFd);

impl StatsEnabled {
    pub fn on() -> Result<Self> {
        // SAFETY: a plain syscall wrapper; the fd it returns is ours.
        let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
        if fd < 0 {
            return Err(format!("BPF_ENABLE_STATS: {}", std::io::Error::from_raw_os_error(-fd)).into());
        }
        // SAFETY: fd was just returned to us and is open.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// (run_time_ns, run_cnt) of a program, as the kernel counts them.
fn counters(program: &Program, hook: Hook) -> Result<(u64, u64)> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a plain C struct of len bytes.
    let rc = unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(
            program.as_fd(hook).as_raw_fd(),
            (&mut info as *mut libbpf_sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(format!("read program info: {}", std::io::Error::from_raw_os_error(-rc)).into());
    }
    Ok((info.run_time_ns, info.run_cnt))
}

/// Both entry points' counters at one moment.
#[derive(Clone, Copy)]
pub struct Snapshot([(u64, u64); 2]);

impl Snapshot {
    pub fn take(program: &Program) -> Result<Self> {
        Ok(Self([
            counters(program, Hook::FromPod)?,
            counters(program, Hook::ToPod)?,
        ]))
    }

    /// Mean ns per run of each entry point (from-pod, to-pod) since `before`,
    /// and the runs.
    pub fn since(&self, before: &Snapshot) -> [(f64, u64); 2] {
        let per = |i: usize| {
            let runs = self.0[i].1 - before.0[i].1;
            let ns = self.0[i].0 - before.0[i].0;
            (if runs == 0 { 0.0 } else { ns as f64 / runs as f64 }, runs)
        };
        [per(0), per(1)]
    }
}

/// A tc program that does nothing, attached where ebpfcni's would be: the
/// cost of the tc hooks themselves (clsact, classify), the floor under any
/// tc filter.
pub struct NoopFilter {
    object: libbpf_rs::Object,
}

impl NoopFilter {
    pub fn load() -> Result<Self> {
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/noop.bpf.c");
        let bytes = ebpfcni_testutil::bpf::compile(&source, &[source.parent().unwrap()]);
        let object = libbpf_rs::ObjectBuilder::default().open_memory(&bytes)?.load()?;
        Ok(Self { object })
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        let prog = self
            .object
            .progs()
            .find(|p| p.name() == "noop")
            .expect("noop program");
        // SAFETY: the fd lives as long as the object, which outlives the borrow.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(prog.as_fd().as_raw_fd()) }
    }

    /// Attaches on both hooks of both host veths, at ebpfcni's handle and
    /// priority (so that `Ebpfcni::remove` takes it off again).
    pub fn install(&self, topo: &ebpfcni_testutil::TwoPods) -> Result<()> {
        let fd = self.fd();
        topo.node.run_in(|| -> Result<()> {
            for ifindex in [topo.ifindex_a, topo.ifindex_b] {
                let mut builder = libbpf_rs::TcHookBuilder::new(fd);
                builder
                    .ifindex(ifindex as i32)
                    .replace(true)
                    .handle(ebpfcni::TC_HANDLE)
                    .priority(ebpfcni::TC_PRIORITY);
                builder.hook(libbpf_rs::TC_INGRESS).create()?;
                builder.hook(libbpf_rs::TC_INGRESS).attach()?;
                builder.hook(libbpf_rs::TC_EGRESS).attach()?;
            }
            Ok(())
        })
    }
}
