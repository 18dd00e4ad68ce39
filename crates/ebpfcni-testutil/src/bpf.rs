//! BPF objects other than the product's: compiled from C at test time with
//! clang-19 (the no-op baseline of the benches, the first release's program
//! for the upgrade tests) and run through BPF_PROG_TEST_RUN.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::process::Command;

use libbpf_rs::libbpf_sys;

/// Compiles `source` for the BPF target (with `includes` on the include
/// path) and returns the object's bytes. `EBPFCNI_CLANG` overrides clang-19.
pub fn compile(source: &Path, includes: &[&Path]) -> Vec<u8> {
    let clang = std::env::var("EBPFCNI_CLANG").unwrap_or_else(|_| "clang-19".into());
    let out = tempfile::Builder::new()
        .prefix("ebpfcni-test-")
        .suffix(".o")
        .tempfile()
        .expect("temporary object file");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH))
        .args(includes.iter().map(|dir| format!("-I{}", dir.display())))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(out.path())
        .status()
        .unwrap_or_else(|e| panic!("run {clang}: {e}"));
    assert!(status.success(), "{clang} failed on {}", source.display());
    std::fs::read(out.path()).expect("read the compiled object")
}

/// One BPF_PROG_TEST_RUN of `program` on `frame`, `repeat` times: the
/// program's return value and the mean ns per run, as the kernel measured.
pub fn test_run(program: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> (i32, u32) {
    // SAFETY: zeroed is a valid bpf_test_run_opts; sz set below.
    let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _;
    opts.data_in = frame.as_ptr().cast();
    opts.data_size_in = frame.len() as u32;
    opts.repeat = repeat as i32;
    // SAFETY: opts points at live buffers for the duration of the call.
    let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(program.as_fd().as_raw_fd(), &mut opts) };
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN failed: {}",
        std::io::Error::from_raw_os_error(-rc)
    );
    (opts.retval as i32, opts.duration)
}
