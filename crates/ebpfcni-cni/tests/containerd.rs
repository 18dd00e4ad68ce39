//! A real runtime: containerd (Debian's 1.6) started by the test, with
//! `ctr run --cni` putting busybox containers on an ebpfcni network in
//! agent mode. containerd and ctr run inside the test's node namespace
//! (nsenter --net), so the host veths land there.
//!
//! `ctr --cni` reads the plugins in /opt/cni/bin and the first config in
//! /etc/cni/net.d: the test puts its own there and restores what was there
//! when it ends, also when it fails (and at its next start after a crash).
//!
//! Skipped when containerd, ctr, runc or busybox are missing, except under
//! CI=true.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use common::{identity_of, Node};
use ebpfcni::{Identity, Maps, PolicyRule};
use ebpfcni_api::{Endpoint, EndpointState};
use ebpfcni_testutil::{require_root, tools_present, unique_name, AgentProcess};
use serde_json::json;

const TOOLS: [&str; 4] = [
    "/usr/bin/containerd",
    "/usr/bin/ctr",
    "/usr/sbin/runc",
    "/usr/bin/busybox",
];

const NET_D: &str = "/etc/cni/net.d";
const BIN_DIR: &str = "/opt/cni/bin";
/// Where what was in /etc/cni/net.d waits while a test runs.
const NET_D_STASH: &str = "/etc/cni/net.d-ebpfcni-test-stash";
/// Where a /opt/cni/bin/ebpfcni that was there waits.
const PLUGIN_STASH: &str = "/opt/cni/ebpfcni-test-stash";
/// Our config's name in net.d (how a leftover of a crashed run is told).
const OUR_CONF: &str = "00-ebpfcni-test.conflist";

/// /etc/cni/net.d holding only `conflist`, and /opt/cni/bin/ebpfcni being
/// this build's plugin, for as long as this lives.
struct CniFiles {
    net_d_existed: bool,
    plugin_existed: bool,
    /// Directories this created, removed again (deepest first) when empty.
    created: Vec<PathBuf>,
}

impl CniFiles {
    fn install(conflist: &serde_json::Value) -> Self {
        Self::recover();
        let mut created = Vec::new();
        for dir in ["/etc/cni", "/opt/cni", BIN_DIR] {
            if !Path::new(dir).exists() {
                std::fs::create_dir(dir).unwrap();
                created.push(PathBuf::from(dir));
            }
        }
        let net_d_existed = Path::new(NET_D).exists();
        if net_d_existed {
            std::fs::rename(NET_D, NET_D_STASH).unwrap();
        }
        let plugin = Path::new(BIN_DIR).join("ebpfcni");
        let plugin_existed = plugin.symlink_metadata().is_ok();
        if plugin_existed {
            std::fs::rename(&plugin, PLUGIN_STASH).unwrap();
        }
        let files = Self {
            net_d_existed,
            plugin_existed,
            created,
        };
        std::fs::create_dir(NET_D).unwrap();
        std::fs::write(Path::new(NET_D).join(OUR_CONF), conflist.to_string()).unwrap();
        symlink(env!("CARGO_BIN_EXE_ebpfcni"), &plugin).unwrap();
        files
    }

    /// Puts back what a test that died without cleaning up set aside.
    fn recover() {
        let ours = |dir: &str| {
            std::fs::read_dir(dir)
                .is_ok_and(|entries| entries.filter_map(Result::ok).all(|e| e.file_name() == OUR_CONF))
        };
        if Path::new(NET_D_STASH).exists() {
            let _ = std::fs::remove_dir_all(NET_D);
            std::fs::rename(NET_D_STASH, NET_D).unwrap();
        } else if Path::new(NET_D).exists() && Path::new(NET_D).join(OUR_CONF).exists() && ours(NET_D) {
            std::fs::remove_dir_all(NET_D).unwrap();
        }
        let plugin = Path::new(BIN_DIR).join("ebpfcni");
        if Path::new(PLUGIN_STASH).symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(&plugin);
            std::fs::rename(PLUGIN_STASH, &plugin).unwrap();
        }
    }
}

impl Drop for CniFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(NET_D);
        if self.net_d_existed {
            let _ = std::fs::rename(NET_D_STASH, NET_D);
        }
        let plugin = Path::new(BIN_DIR).join("ebpfcni");
        let _ = std::fs::remove_file(&plugin);
        if self.plugin_existed {
            let _ = std::fs::rename(PLUGIN_STASH, &plugin);
        }
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A containerd of the test's own (root, state, socket and config under
/// `dir`), in the node namespace; its containers removed and the daemon
/// stopped by pid on drop.
struct Containerd<'a> {
    node: &'a Node,
    daemon: Child,
    dir: PathBuf,
    socket: PathBuf,
    rootfs: PathBuf,
    containers: Vec<String>,
    /// Whether /run/containerd (where containerd 1.6 puts its shims'
    /// sockets whatever its config says) was there before.
    run_dir_existed: bool,
}

impl<'a> Containerd<'a> {
    fn start(node: &'a Node) -> Self {
        let dir = node.data_dir.join("containerd");
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        for d in ["proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "ping", "ip", "sleep"] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n\
                 [ttrpc]\n  address = \"{socket}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n\
                 [metrics]\n  address = \"\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = socket.display(),
                opt = dir.join("opt").display(),
            ),
        )
        .unwrap();
        let run_dir_existed = Path::new("/run/containerd").exists();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = node
            .ns
            .command("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let containerd = Self {
            node,
            daemon,
            dir,
            socket,
            rootfs,
            containers: Vec::new(),
            run_dir_existed,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up:\n{}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.node
            .ns
            .command("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run ctr")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `ctr run -d --cni --label ...` of `command`; returns the container's name.
    fn run(&mut self, labels: &[&str], command: &[&str]) -> String {
        self.run_with("-d", labels, command)
    }

    /// `ctr run MODE --cni --label ...` of `command` (MODE `-d` or `--rm`);
    /// returns the container's name.
    fn run_with(&mut self, mode: &str, labels: &[&str], command: &[&str]) -> String {
        let name = unique_name("ebpfcni-ctr");
        let (rootfs, fifo, runc) = (
            self.rootfs.display().to_string(),
            self.dir.join("fifo").display().to_string(),
            self.dir.join("runc").display().to_string(),
        );
        let mut args = vec!["run", mode, "--cni", "--fifo-dir", &fifo, "--runc-root", &runc];
        for label in labels {
            args.extend(["--label", label]);
        }
        args.extend(["--rootfs", &rootfs, &name]);
        args.extend(command);
        self.containers.push(name.clone());
        self.ok(&args);
        name
    }

    fn pings(&self, container: &str, ip: &str) -> bool {
        let fifo = self.dir.join("fifo").display().to_string();
        let exec_id = unique_name("ping");
        let args = [
            "task",
            "exec",
            "--fifo-dir",
            &fifo,
            "--exec-id",
            &exec_id,
            container,
            "/bin/ping",
            "-c",
            "1",
            "-W",
            "1",
            ip,
        ];
        self.ctr(&args).status.success()
    }

    /// Whether container `name`'s task has ended.
    fn stopped(&self, name: &str) -> bool {
        let tasks = self.ok(&["task", "list"]);
        !tasks
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name) && !l.contains("STOPPED"))
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.containers) {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", &name]);
            let _ = self.ctr(&["task", "delete", "--force", &name]);
            let _ = self.ctr(&["container", "delete", &name]);
        }
        let pid = nix::unistd::Pid::from_raw(self.daemon.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.daemon.kill();
                let _ = self.daemon.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !self.run_dir_existed {
            for dir in ["/run/containerd/s", "/run/containerd"] {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// The endpoint of container `name` (ctr names its attachment
/// `default-<name>`) once its labels are in, waiting at most 20 s.
fn ready(agent: &AgentProcess, name: &str) -> Endpoint {
    let id = format!("default-{name}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let endpoints = agent.client().endpoints().unwrap();
        if let Some(e) = endpoints
            .iter()
            .find(|e| e.container_id == id && e.state == EndpointState::Ready)
        {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no ready endpoint: {endpoints:#?}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ctr run --cni --label`: containers with the same labels share an
/// identity from 256 up, policy written for it lets them talk (an exec'd
/// ping ending is not the task ending), and a container whose task ends,
/// by itself (`ctr run -d ... sleep 1`, which never sends a DEL) or killed,
/// loses its endpoint: its address has no identity any more.
#[test]
fn ctr_labels_give_identities_and_ended_tasks_lose_them() {
    require_root!();
    if !tools_present("containerd", &TOOLS) {
        return;
    }
    let node = Node::new("ctrd");
    let agent_dir = node.data_dir.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let socket = agent_dir.join("agent.sock");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": node.network,
        "plugins": [{
            "type": "ebpfcni",
            "pinDir": node.pins.path(),
            "agent": socket,
            "logFile": node.data_dir.join("ebpfcni.log"),
        }],
    });
    let _cni = CniFiles::install(&conflist);
    let mut containerd = Containerd::start(&node);
    let mut agent = AgentProcess::start(
        &node.ns,
        node.pins.path(),
        &agent_dir,
        &[
            "--pod-cidr",
            "10.13.32.0/24",
            "--runtime",
            "containerd",
            // Identities checked with pair rules against a default deny.
            "--policy-enforcement",
            "always",
            "--containerd-socket",
            &containerd.socket.display().to_string(),
            // Only containerd's events can be quick enough for the checks
            // below: the resync would take an hour.
            "--resync-seconds",
            "3600",
        ],
    );

    let web1 = containerd.run(&["app=web", "tier=front"], &["/bin/sleep", "300"]);
    // What containerd stamps from an image is not part of an identity.
    let stamped = "io.containerd.image.config.stop-signal=SIGTERM";
    let web2 = containerd.run(&["tier=front", stamped, "app=web"], &["/bin/sleep", "300"]);
    let db = containerd.run(&["app=db"], &["/bin/sleep", "300"]);
    let (e1, e2, e3) = (ready(&agent, &web1), ready(&agent, &web2), ready(&agent, &db));
    assert_eq!(e1.labels["app"], "web");
    assert_eq!(e1.runtime.as_deref(), Some("containerd"));
    assert_eq!(e2.labels["io.containerd.image.config.stop-signal"], "SIGTERM");
    assert_eq!(e1.identity, e2.identity, "the same labels share an identity");
    assert_ne!(e1.identity, e3.identity, "other labels, another identity");
    assert!(
        e1.identity >= 256 && e3.identity >= 256,
        "{} {}",
        e1.identity,
        e3.identity
    );
    let maps = Maps::open(node.pins.path()).unwrap();
    let (ip1, ip2, ip3) = (
        e1.ips[0].to_string(),
        e2.ips[0].to_string(),
        e3.ips[0].to_string(),
    );
    assert_eq!(identity_of(&maps, &ip1), Some(e1.identity));
    assert_eq!(identity_of(&maps, &ip3), Some(e3.identity));

    assert!(!containerd.pings(&web1, &ip2), "no rule yet");
    let web = Identity::new(e1.identity).unwrap();
    maps.policy.allow(PolicyRule::new(web, web)).unwrap();
    assert!(
        containerd.pings(&web1, &ip2),
        "web -> web allowed by the label identity's rule"
    );
    assert!(!containerd.pings(&web1, &ip3), "web -> db has no rule");
    assert_eq!(
        identity_of(&maps, &ip1),
        Some(e1.identity),
        "an exec'd process ending is not the task ending"
    );

    // Exits by itself: ctr sends no DEL, containerd's /tasks/exit does it.
    let short = containerd.run(&["app=web"], &["/bin/sleep", "1"]);
    let e4 = agent
        .client()
        .endpoints()
        .unwrap()
        .into_iter()
        .find(|e| e.container_id == format!("default-{short}"))
        .expect("ctr run returns after the ADD registered the endpoint");
    let ip4 = e4.ips[0].to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    while identity_of(&maps, &ip4).is_some()
        || agent
            .client()
            .endpoints()
            .unwrap()
            .iter()
            .any(|e| e.ips == e4.ips)
    {
        assert!(
            Instant::now() < deadline,
            "{short} exited ({}), its endpoint stays:\n{}",
            containerd.stopped(&short),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(containerd.stopped(&short), "the endpoint went before the task");

    // `ctr run --rm`: the task ends, then ctr sends a DEL and removes the
    // container; whichever comes first removes the endpoint, the others
    // find nothing to do.
    let before = agent.client().endpoints().unwrap().len();
    let removed = containerd.run_with("--rm", &["app=web"], &["/bin/sleep", "1"]);
    assert!(
        !containerd.ctr(&["container", "info", &removed]).status.success(),
        "ctr run --rm removed {removed}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent.client().endpoints().unwrap().len() != before {
        assert!(
            Instant::now() < deadline,
            "{removed}'s endpoint stays:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.log_text();
    assert!(
        log.contains(&format!("endpoint default-{removed}/eth0: removed")),
        "{log}"
    );

    // Killed: the same.
    containerd.ok(&["task", "kill", "-s", "SIGKILL", &db]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while identity_of(&maps, &ip3).is_some() {
        assert!(
            Instant::now() < deadline,
            "{db} killed, its address keeps identity {:?}:\n{}",
            identity_of(&maps, &ip3),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent
        .client()
        .endpoints()
        .unwrap()
        .iter()
        .all(|e| e.ips != e3.ips));
    // The others are untouched.
    assert_eq!(identity_of(&maps, &ip1), Some(e1.identity));
    assert_eq!(identity_of(&maps, &ip2), Some(e1.identity));

    // Ended while the agent was down, its namespace (and so its host veth)
    // kept by another process: no event will come, the host veth is there
    // at the agent's start, and its resync against containerd's tasks
    // removes the endpoint.
    let _holder = NetnsHolder::enter(&e2.netns);
    assert!(agent.stop(), "the agent stops cleanly");
    containerd.ok(&["task", "kill", "-s", "SIGKILL", &web2]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !containerd.stopped(&web2) {
        assert!(Instant::now() < deadline, "{web2} did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(identity_of(&maps, &ip2), Some(e1.identity), "the agent was down");
    agent.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while identity_of(&maps, &ip2).is_some() {
        assert!(
            Instant::now() < deadline,
            "{web2} stopped while the agent was down, its address keeps its identity:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.log_text();
    assert!(
        log.contains("resync: 1 endpoints of stopped or removed containers removed"),
        "removed by the resync, not at start for a missing veth:\n{log}"
    );
    assert!(agent
        .client()
        .endpoints()
        .unwrap()
        .iter()
        .all(|e| e.ips != e2.ips));
    assert_eq!(identity_of(&maps, &ip1), Some(e1.identity), "web1 runs on");
}

/// A process inside a network namespace, which keeps it (and its veths)
/// after the task that made it ends; killed by pid on drop.
struct NetnsHolder(Child);

impl NetnsHolder {
    fn enter(netns: &str) -> Self {
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["--", "sleep", "120"])
            .spawn()
            .expect("nsenter sleep");
        // nsenter execs sleep once it is inside.
        let exe = format!("/proc/{}/exe", child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&exe)
            .map(|p| !p.ends_with("sleep"))
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "nsenter did not enter {netns}");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self(child)
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
