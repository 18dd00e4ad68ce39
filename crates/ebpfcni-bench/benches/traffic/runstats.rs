//! The kernel's BPF run-time statistics of ebpfcni's program: run_time_ns
//! and run_cnt of each entry point, read before and after some traffic.
//! Switched on with BPF_ENABLE_STATS, which lasts as long as the file
//! descriptor it returns: nothing global is left changed
//! (kernel.bpf_stats_enabled is not touched). Shared by the traffic and
//! cluster_traffic benches.

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
