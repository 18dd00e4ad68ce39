//! A real runtime: podman 4.3 with its CNI backend starts two busybox
//! containers on an ebpfcni network. Podman itself runs inside the test's
//! node namespace (nsenter --net), so the host ends, routes and the
//! forwarding switch land there and not in the machine's root namespace.
//!
//! Skipped when podman, runc or busybox are missing, except under CI=true.

mod common;

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Output;

use common::Node;
use ebpfcni::{Identity, Maps, PolicyRule};
use ebpfcni_testutil::{require_root, tools_present, unique_name};
use serde_json::json;

const TOOLS: [&str; 3] = ["/usr/bin/podman", "/usr/sbin/runc", "/usr/bin/busybox"];

/// Podman's world for one test: containers.conf, the conflist, a plugin
/// directory with our binary beside the reference plugins, a busybox rootfs.
struct Podman<'a> {
    node: &'a Node,
    dir: PathBuf,
    containers: Vec<String>,
}

impl<'a> Podman<'a> {
    fn new(node: &'a Node) -> Self {
        let dir = node.data_dir.join("podman");
        let (confdir, plugins, rootfs) = (dir.join("net.d"), dir.join("plugins"), dir.join("rootfs"));
        for d in [&confdir, &plugins, &rootfs.join("bin")] {
            std::fs::create_dir_all(d).unwrap();
        }
        for d in ["proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "ping", "ip", "sleep"] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        symlink(env!("CARGO_BIN_EXE_ebpfcni"), plugins.join("ebpfcni")).unwrap();
        let mut plugin = node.config("1.0.0");
        plugin.as_object_mut().unwrap().remove("cniVersion");
        plugin.as_object_mut().unwrap().remove("name");
        plugin["logFile"] = json!(dir.join("ebpfcni.log"));
        let conflist = json!({ "cniVersion": "1.0.0", "name": node.network, "plugins": [plugin] });
        std::fs::write(
            confdir.join(format!("{}.conflist", node.network)),
            conflist.to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = []\n[network]\nnetwork_backend = \"cni\"\n\
                 network_config_dir = \"{}\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n",
                confdir.display(),
                plugins.display()
            ),
        )
        .unwrap();
        Self {
            node,
            dir,
            containers: Vec::new(),
        }
    }

    fn podman(&self, args: &[&str]) -> Output {
        let mut cmd = self.node.ns.command("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .args(args);
        cmd.output().expect("spawn podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        let log = std::fs::read_to_string(self.dir.join("ebpfcni.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{}\nplugin log:\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts a sleeping container and returns its address.
    fn start(&mut self) -> String {
        let name = unique_name("ebpfcni-pod");
        let rootfs = self.dir.join("rootfs").display().to_string();
        self.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &self.node.network,
            "--cap-add",
            "NET_RAW",
            "--rootfs",
            &rootfs,
            "sleep",
            "600",
        ]);
        self.containers.push(name.clone());
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.node.network
        );
        self.ok(&["inspect", "-f", &format, &name])
    }

    fn pings(&self, from: usize, ip: &str) -> bool {
        let args = ["exec", &self.containers[from], "ping", "-c", "2", "-W", "1", ip];
        self.podman(&args).status.success()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.containers) {
            let _ = self.podman(&["rm", "-f", "-t", "0", &name]);
        }
    }
}

fn id(n: u32) -> Identity {
    n.to_string().parse().unwrap()
}

#[test]
fn podman_containers_ping_when_allowed_and_leave_no_veth() {
    require_root!();
    if !tools_present("podman", &TOOLS) {
        return;
    }
    let mut node = Node::new("podman");
    node.subnet = "10.13.5.0/24".into();
    let mut podman = Podman::new(&node);
    let (a, b) = (podman.start(), podman.start());
    assert!(a.starts_with("10.13.5.") && b.starts_with("10.13.5."), "{a} {b}");
    assert_eq!(node.links().iter().filter(|l| l.starts_with("ebc")).count(), 2);

    let maps = Maps::open(node.pins.path()).expect("maps pinned by the plugin");
    maps.endpoints.upsert(a.parse().unwrap(), id(300)).unwrap();
    maps.endpoints.upsert(b.parse().unwrap(), id(400)).unwrap();
    assert!(!podman.pings(0, &b), "denied by default");
    let rule = PolicyRule {
        src: id(300),
        dst: id(400),
    };
    maps.policy.allow_all(&[rule, rule.reverse()]).unwrap();
    assert!(podman.pings(0, &b), "allowed both ways");
    assert!(podman.pings(1, &a), "allowed both ways");
    maps.policy.revoke(rule.reverse()).unwrap();
    assert!(!podman.pings(0, &b), "one-way: replies dropped");

    for name in std::mem::take(&mut podman.containers) {
        podman.ok(&["rm", "-f", "-t", "0", &name]);
    }
    let left: Vec<_> = node
        .links()
        .into_iter()
        .filter(|l| l.starts_with("ebc"))
        .collect();
    assert!(left.is_empty(), "podman rm left veths: {left:?}");
    assert!(
        node.allocations().is_empty(),
        "podman rm left allocations: {:?}",
        node.allocations()
    );
}
