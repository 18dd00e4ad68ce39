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
        Self::with_plugin(node, node.config("1.0.0"))
    }

    /// Podman with `plugin` as the network's one plugin.
    fn with_plugin(node: &'a Node, mut plugin: serde_json::Value) -> Self {
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
        self.start_labelled(&[])
    }

    /// Starts a sleeping container with `labels` (`k=v`) and returns its address.
    fn start_labelled(&mut self, labels: &[&str]) -> String {
        let name = unique_name("ebpfcni-pod");
        let rootfs = self.dir.join("rootfs").display().to_string();
        let mut args = vec!["run", "-d", "--name", &name, "--network", &self.node.network];
        for label in labels {
            args.extend(["--label", label]);
        }
        args.extend(["--cap-add", "NET_RAW", "--rootfs", &rootfs, "sleep", "600"]);
        self.ok(&args);
        self.containers.push(name.clone());
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.node.network
        );
        self.ok(&["inspect", "-f", &format, &name])
    }

    /// Podman's API service on a socket of the test's own, in the node
    /// namespace; stopped by pid on drop.
    fn service(&self) -> Service {
        let socket = self.dir.join("podman.sock");
        let mut cmd = self.node.ns.command("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "system",
                "service",
                "--time=0",
            ])
            .arg(format!("unix://{}", socket.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = cmd.spawn().expect("start podman system service");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "podman's API did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Service { child, socket }
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

/// Podman on an agent-mode network, its API service, and an agent that
/// leases from `pod_cidr` and asks that service for labels.
fn with_agent<'a>(node: &'a Node, pod_cidr: &str) -> (Podman<'a>, Service, ebpfcni_testutil::AgentProcess) {
    let agent_dir = node.data_dir.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let socket = agent_dir.join("agent.sock");
    let plugin = json!({ "type": "ebpfcni", "pinDir": node.pins.path(), "agent": socket });
    let podman = Podman::with_plugin(node, plugin);
    let service = podman.service();
    let agent = ebpfcni_testutil::AgentProcess::start(
        &node.ns,
        node.pins.path(),
        &agent_dir,
        &[
            "--pod-cidr",
            pod_cidr,
            "--runtime",
            "podman",
            // Identities checked with pair rules against a default deny.
            "--policy-enforcement",
            "always",
            "--podman-socket",
            &service.socket.display().to_string(),
        ],
    );
    (podman, service, agent)
}

/// `podman system service`, killed by pid on drop.
struct Service {
    child: std::process::Child,
    socket: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
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

/// Agent mode with podman: the agent asks podman's API for each container's
/// labels (after the ADD, which podman runs holding the container), so
/// containers started with the same `--label`s share an identity, and
/// policy written for it lets them talk; `podman rm` takes it away.
#[test]
fn podman_labels_give_identities_through_the_agent() {
    require_root!();
    if !tools_present("podman_agent", &TOOLS) {
        return;
    }
    let node = Node::new("pmagent");
    let (mut podman, _service, agent) = with_agent(&node, "10.13.31.0/24");
    let web1 = podman.start_labelled(&["app=web", "tier=front"]);
    let web2 = podman.start_labelled(&["tier=front", "app=web"]);
    let db = podman.start_labelled(&["app=db"]);
    let client = agent.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let endpoints = loop {
        let endpoints = client.endpoints().unwrap();
        if endpoints.len() == 3
            && endpoints
                .iter()
                .all(|e| e.state == ebpfcni_api::EndpointState::Ready)
        {
            break endpoints;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "labels never arrived: {endpoints:#?}\n{}",
            agent.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let of = |ip: &str| {
        endpoints
            .iter()
            .find(|e| e.ips[0].to_string() == ip)
            .unwrap_or_else(|| panic!("no endpoint for {ip}"))
    };
    let (e1, e2, e3) = (of(&web1), of(&web2), of(&db));
    assert_eq!(e1.labels["app"], "web");
    assert_eq!(e1.runtime.as_deref(), Some("podman"));
    assert_eq!(e1.identity, e2.identity, "the same labels share an identity");
    assert_ne!(e1.identity, e3.identity);
    assert!(e1.identity >= 256);
    assert!(
        e1.identity_labels
            .keys()
            .all(|k| !k.starts_with("io.containers.")),
        "runtime metadata is not part of identities: {:?}",
        e1.identity_labels
    );

    let maps = Maps::open(node.pins.path()).unwrap();
    // Registered with init, then the runtime's labels: both records carry
    // the number now, as the endpoint entries say.
    for e in [e1, e2, e3] {
        let ip = e.ips[0];
        assert_eq!(
            maps.local.carried_identity(ip).unwrap(),
            Some(id(e.identity)),
            "{ip}"
        );
        assert_eq!(
            maps.interfaces.carried_identity(e.host_ifindex).unwrap(),
            Some(id(e.identity)),
            "{ip}"
        );
    }
    assert!(!podman.pings(0, &web2), "no rule yet");
    maps.policy
        .allow(PolicyRule::new(id(e1.identity), id(e1.identity)))
        .unwrap();
    assert!(
        podman.pings(0, &web2),
        "web -> web allowed by the label identity's rule"
    );
    assert!(!podman.pings(0, &db), "web -> db has no rule");

    let db_name = podman.containers[2].clone();
    podman.ok(&["rm", "-f", "-t", "0", &db_name]);
    podman.containers.retain(|c| *c != db_name);
    assert!(client
        .endpoints()
        .unwrap()
        .iter()
        .all(|e| e.ips[0].to_string() != db));
    assert_eq!(maps.endpoints.get(db.parse().unwrap()).unwrap(), None);
    drop(podman);
    assert!(
        client.endpoints().unwrap().is_empty(),
        "podman rm removed every endpoint"
    );
}

/// With a pod CIDR of one address, a container that podman starts after
/// another was removed gets the same address: it must not inherit the old
/// container's permissions, from its first packet on (a client allowed to
/// talk to the old one's label identity cannot reach the new one).
#[test]
fn podman_a_reused_address_never_carries_the_old_containers_identity() {
    require_root!();
    if !tools_present("podman_reuse", &TOOLS) {
        return;
    }
    let node = Node::new("pmreuse");
    let (mut podman, _service, agent) = with_agent(&node, "10.13.32.0/30");
    let socket = agent.socket.clone();
    // A client outside podman, through the plugin with static IPAM.
    let client_pod = common::Pod::new("pmrc");
    let client_conf = json!({
        "cniVersion": "1.0.0", "name": node.network, "type": "ebpfcni", "pinDir": node.pins.path(),
        "agent": socket, "args": { "cni": { "labels": [{ "key": "app", "value": "client" }] } },
        "ipam": { "type": "static", "addresses": [{ "address": "10.13.33.2/24", "gateway": "10.13.33.1" }] },
    });
    node.add(&client_conf, &client_pod).ok();
    let client = agent.client();
    let ready = |ip: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let found = client
                .endpoints()
                .unwrap()
                .into_iter()
                .find(|e| e.ips[0].to_string() == ip && e.state == ebpfcni_api::EndpointState::Ready);
            if let Some(e) = found {
                return e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{ip} never ready:\n{}",
                agent.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let web = podman.start_labelled(&["app=web"]);
    assert_eq!(web, "10.13.32.2", "the pod CIDR's one address");
    let (client_id, web_id) = (ready("10.13.33.2").identity, ready(&web).identity);
    let maps = Maps::open(node.pins.path()).unwrap();
    let rule = PolicyRule::new(id(client_id), id(web_id));
    maps.policy.allow_all(&[rule, rule.reverse()]).unwrap();
    assert!(client_pod.ns.ping(&web, 2), "client -> web allowed");

    let web_name = podman.containers.remove(0);
    podman.ok(&["rm", "-f", "-t", "0", &web_name]);
    let other = podman.start_labelled(&["app=other"]);
    assert_eq!(other, web, "the address is reused");
    // From its first packet: while its labels are asked for it has init,
    // then its own identity; never web's.
    assert_ne!(
        maps.endpoints.get(other.parse().unwrap()).unwrap(),
        Some(ebpfcni::Stored::Valid(id(web_id)))
    );
    assert_ne!(ready(&other).identity, web_id);
    assert!(
        !client_pod.ns.ping(&other, 1),
        "web's rule does not reach the new container"
    );
    node.del(&client_conf, &client_pod).ok();
}
