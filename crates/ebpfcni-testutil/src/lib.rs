//! Fixtures for ebpfcni's integration tests.
//!
//! - [`require_root!`]: tests that need root skip on a developer's laptop but
//!   fail loudly under `CI=true`.
//! - [`TestPinDir`]: a private pin directory under /sys/fs/bpf, removed on drop.
//! - [`Netns`]: a throwaway network namespace, deleted on drop.
//!
//! Names carry the process id and a counter, so tests run in parallel
//! without meeting each other. bpffs refuses '.' in names: none are used.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `{prefix}{pid}x{n}`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// True when the test may run. False (skip, with a message) on a
/// non-root developer machine; panics when `CI=true`, since a skipped
/// privileged test in CI would hide breakage.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root (BPF, netns) and CI=true forbids skipping");
    }
    eprintln!("SKIPPED {test}: needs root");
    false
}

/// Returns from the calling test unless it may run (see [`privileged`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::privileged(module_path!()) {
            return;
        }
    };
}

/// A private pin directory under /sys/fs/bpf, with everything pinned in it
/// removed on drop (also when the test panics).
pub struct TestPinDir {
    path: PathBuf,
}

impl TestPinDir {
    pub fn new(test: &str) -> Self {
        ebpfcni::bpffs::ensure_mounted().expect("mount bpffs");
        let path = Path::new(ebpfcni::bpffs::BPFFS_ROOT).join(unique_name(&format!("ebpfcni_test_{test}_")));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestPinDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("warning: could not remove {}: {e}", self.path.display()),
        }
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command and returns whether it succeeded, without panicking.
pub fn succeeds(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A network namespace made for one test (`ip netns add`), deleted on drop
/// together with every interface in it.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = unique_name(&format!("ebpfcni-{tag}-"));
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// /run/netns/NAME: what CNI_NETNS points at.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME args...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs a command inside the namespace with `nsenter --net`, which (unlike
    /// `ip netns exec`) keeps the real /sys/fs/bpf visible.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Whether `ping` from this namespace to `dst` gets an answer
    /// (`count` probes, 1 s timeout each).
    pub fn ping(&self, dst: &str, count: u32) -> bool {
        self.command("ping")
            .args(["-c", &count.to_string(), "-W", "1", "-i", "0.2", "-q", dst])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Runs `f` on a thread that has entered this namespace (setns), so
    /// netlink calls made by `f` act on it. The calling thread is untouched.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path()).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }

    /// The ifindex of `ifname` inside this namespace.
    pub fn ifindex(&self, ifname: &str) -> u32 {
        // /sys/class/net shows the namespace that mounted sysfs, not ours:
        // ask the kernel from a thread inside the namespace instead.
        self.run_in(|| {
            nix::net::if_::if_nametoindex(ifname).unwrap_or_else(|e| panic!("ifindex of {ifname}: {e}"))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !succeeds(&["ip", "netns", "del", &self.name]) {
            eprintln!("warning: could not delete netns {}", self.name);
        }
    }
}

/// Two namespaces joined by a veth pair, each end addressed in one /24:
/// `host` holds `veth_host` (10.13.0.1 by default) and `pod` holds `eth0`.
pub struct VethPair {
    pub host: Netns,
    pub pod: Netns,
    pub host_ifname: &'static str,
    pub pod_ifname: &'static str,
}

impl VethPair {
    pub fn new(tag: &str, host_addr: &str, pod_addr: &str) -> Self {
        let host = Netns::new(&format!("{tag}-h"));
        let pod = Netns::new(&format!("{tag}-p"));
        let pair = Self {
            host,
            pod,
            host_ifname: "veth_host",
            pod_ifname: "eth0",
        };
        pair.host.ip(&[
            "link",
            "add",
            pair.host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            pair.pod_ifname,
            "netns",
            pair.pod.name(),
        ]);
        pair.host.ip(&["addr", "add", host_addr, "dev", pair.host_ifname]);
        pair.host.ip(&["link", "set", pair.host_ifname, "up"]);
        pair.pod.ip(&["addr", "add", pod_addr, "dev", pair.pod_ifname]);
        pair.pod.ip(&["link", "set", pair.pod_ifname, "up"]);
        pair
    }
}
