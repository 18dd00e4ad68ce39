//! Throwaway network namespaces and the topologies tests build from them.
//! Everything is deleted on drop, also when the test panics.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::sched::{setns, CloneFlags};

use crate::process::{run, succeeds};
use crate::unique_name;

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

    /// IPv4 forwarding on in this namespace only (/proc/sys/net belongs
    /// to the namespace of the process that opens it; the root namespace's
    /// is left as it is).
    pub fn enable_forwarding(&self) {
        let status = self
            .command("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"])
            .status()
            .expect("run sysctl");
        assert!(status.success(), "enable forwarding in {}", self.name);
    }

    /// /run/netns/NAME: what CNI_NETNS points at.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// The path as a string, for environment variables and command lines.
    pub fn path_string(&self) -> String {
        self.path().display().to_string()
    }

    /// `ip -n NAME args...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Stdout of `ip -n NAME args...`.
    pub fn ip_text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.ip(args).stdout).into_owned()
    }

    /// Runs a command inside the namespace with `nsenter --net`, which (unlike
    /// `ip netns exec`) keeps the real /sys/fs/bpf visible.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
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
    /// netlink calls and sockets made by `f` act in it. The calling thread
    /// is untouched.
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

    /// Names of the namespace's links.
    pub fn links(&self) -> Vec<String> {
        self.ip_text(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !succeeds(&["ip", "netns", "del", &self.name]) {
            eprintln!("warning: could not delete netns {}", self.name);
        }
    }
}

/// Creates a veth pair: `host_if` in `host`, `pod_if` in `pod`, both up,
/// each end with its addresses.
fn veth(host: &Netns, host_if: &str, host_addrs: &[&str], pod: &Netns, pod_if: &str, pod_addrs: &[&str]) {
    host.ip(&[
        "link",
        "add",
        host_if,
        "type",
        "veth",
        "peer",
        "name",
        pod_if,
        "netns",
        pod.name(),
    ]);
    for addr in host_addrs {
        host.ip(&["addr", "add", addr, "dev", host_if]);
    }
    host.ip(&["link", "set", host_if, "up"]);
    for addr in pod_addrs {
        pod.ip(&["addr", "add", addr, "dev", pod_if]);
    }
    pod.ip(&["link", "set", pod_if, "up"]);
}

/// Two namespaces joined by a veth pair, each end addressed in one subnet:
/// `host` holds `veth_host` and `pod` holds `eth0`.
pub struct VethPair {
    pub host: Netns,
    pub pod: Netns,
    pub host_ifname: &'static str,
    pub pod_ifname: &'static str,
}

impl VethPair {
    /// `host_addr` and `pod_addr` with their prefix: "10.13.0.1/24".
    pub fn new(tag: &str, host_addr: &str, pod_addr: &str) -> Self {
        let pair = Self {
            host: Netns::new(&format!("{tag}-h")),
            pod: Netns::new(&format!("{tag}-p")),
            host_ifname: "veth_host",
            pod_ifname: "eth0",
        };
        veth(
            &pair.host,
            pair.host_ifname,
            &[host_addr],
            &pair.pod,
            pair.pod_ifname,
            &[pod_addr],
        );
        pair
    }

    /// The host end's ifindex (in the host namespace).
    pub fn host_ifindex(&self) -> u32 {
        self.host.ifindex(self.host_ifname)
    }
}

/// Two pods on one node, all in namespaces made for the test: pod A and pod
/// B each have an `eth0` whose peer (`veth_a`, `veth_b`) lives in a node
/// namespace that routes between them (forwarding on in the node only).
///
/// ```text
///  pod A 10.13.1.2 (+10.13.1.3) --veth_a-- node 10.13.1.1 | 10.13.2.1 --veth_b-- pod B 10.13.2.2
/// ```
pub struct TwoPods {
    pub node: Netns,
    pub pod_a: Netns,
    pub pod_b: Netns,
    pub ifindex_a: u32,
    pub ifindex_b: u32,
}

impl TwoPods {
    pub const POD_A: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 2);
    /// A second address of pod A.
    pub const POD_A2: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 3);
    pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 13, 2, 2);
    pub const NODE_IF_A: &'static str = "veth_a";
    pub const NODE_IF_B: &'static str = "veth_b";

    pub fn new(tag: &str) -> Self {
        let node = Netns::new(&format!("{tag}-node"));
        let pod_a = Netns::new(&format!("{tag}-a"));
        let pod_b = Netns::new(&format!("{tag}-b"));
        veth(
            &node,
            Self::NODE_IF_A,
            &["10.13.1.1/24"],
            &pod_a,
            "eth0",
            &["10.13.1.2/24", "10.13.1.3/24"],
        );
        veth(
            &node,
            Self::NODE_IF_B,
            &["10.13.2.1/24"],
            &pod_b,
            "eth0",
            &["10.13.2.2/24"],
        );
        pod_a.ip(&["route", "add", "default", "via", "10.13.1.1"]);
        pod_b.ip(&["route", "add", "default", "via", "10.13.2.1"]);
        node.enable_forwarding();
        let ifindex_a = node.ifindex(Self::NODE_IF_A);
        let ifindex_b = node.ifindex(Self::NODE_IF_B);
        Self {
            node,
            pod_a,
            pod_b,
            ifindex_a,
            ifindex_b,
        }
    }

    /// Whether a ping from pod A's address `src` gets an answer from pod B.
    pub fn reaches(&self, src: Ipv4Addr) -> bool {
        self.pod_a
            .command("ping")
            .args(["-c", "1", "-W", "1", "-q", "-I", &src.to_string()])
            .arg(Self::POD_B.to_string())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}
