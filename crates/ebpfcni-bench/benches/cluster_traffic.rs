//! Cross-node pod-to-pod traffic with ebpfcni against without, in one run.
//!
//! Two node namespaces on a bridge of their own (`Fabric`), etcd on the
//! bridge, an `ebpfcni-agent --etcd` in each node (default policy
//! enforcement), and three pairs of pods, a client on n1 and a server on
//! n2, all in the same two nodes and crossing the same fabric:
//!
//! - a. no ebpfcni: pods wired by hand as the plugin wires them (a veth,
//!   the pod's address without a prefix route and a default route via
//!   169.254.1.1, which the host end holds; a /32 route to the pod in the
//!   node), their own CIDRs 10.30.1.0/24 (n1) and 10.30.2.0/24 (n2) routed
//!   between the nodes via the node addresses; no tc program anywhere;
//! - b. ebpfcni under policy: pods added through the real plugin (CNI ADD
//!   through the agents, which route the nodes' pod CIDRs), app=bench-client
//!   and app=bench-server, with NetworkPolicies applied on n1 (through its
//!   API, to etcd, enforced by both) that isolate the server's ingress and
//!   the client's egress and allow exactly the benchmark's ports;
//! - c. ebpfcni without policy: pods added the same way with labels no
//!   policy selects (unrestricted, Kubernetes' default).
//!
//! Before measuring, the bench checks that the filter is in the path: a
//! second address of each client, which no endpoint has, reaches the
//! server in a and is dropped in b and c (both nodes' host veths carry the
//! program); in b another pod of n1 and an unlisted port are denied, where
//! c's client is let through (refused by the server's kernel, no
//! listener). Then, in
//! interleaved rounds (each starting at another scenario): iperf3 TCP
//! stream; iperf3 UDP with 64-byte datagrams at no rate limit (received
//! packets/s and loss); a TCP request/response rate; new TCP connections/s.
//! Last, more interleaved rounds of b and c (TCP stream and UDP) with the
//! kernel's BPF run-time statistics on: each entry point's mean ns per run
//! on each node (statistics cost time of their own, so the rounds above
//! run without them).
//!
//! `cargo bench -p ebpfcni-bench --bench cluster_traffic -- --rounds 5`
//! (root; iperf3 and etcd-server from `scripts/install-deps.sh bench`).
//! Everything lives in namespaces and pin directories of its own and is
//! removed at the end, on error, panic or Ctrl-C alike (agents and etcd
//! killed by pid).

#[allow(dead_code)] // the traffic bench's flood and CPU counters are not used here
#[path = "traffic/traffic.rs"]
mod traffic;

#[path = "traffic/runstats.rs"]
mod runstats;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ebpfcni::{Hook, Maps, Program};
use ebpfcni_testutil::{
    hook_programs, median, output_with_stdin, text, unique_name, workspace_bin, AgentProcess, EtcdProcess,
    Fabric, Netns, Ratio, TestPinDir, ETCD_BIN,
};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use serde_json::{json, Value};

use runstats::{Snapshot, StatsEnabled};
use traffic::{AcceptServer, EchoServer, Iperf3Server, ACCEPT_PORT, ECHO_PORT, IPERF3_PORT};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser, Debug)]
#[command(about = "Cross-node pod-to-pod traffic: no ebpfcni vs ebpfcni under policy vs ebpfcni without")]
struct Args {
    /// Seconds of each measurement (TCP stream, UDP, request/response, connections)
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Rounds; each measures every scenario once, interleaved
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Request and response size in bytes
    #[arg(long, default_value_t = 64)]
    message_size: usize,
    /// UDP payload size in bytes (iperf3 -l)
    #[arg(long, default_value_t = 64)]
    udp_size: usize,
    /// Rounds of the BPF run-time statistics (after the others)
    #[arg(long, default_value_t = 3)]
    stats_rounds: u32,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

/// The cluster CIDR the agents share; a. routes CIDRs outside it, so the
/// agents leave its routes alone.
const CLUSTER_CIDR: &str = "10.20.0.0/16";
/// A port the policy does not list (nothing listens on it).
const UNLISTED_PORT: u16 = 7009;
const GATEWAY: &str = "169.254.1.1";

/// b.'s policies: the server takes the benchmark's ports from the client
/// only; the client sends to the server's benchmark ports only.
const POLICY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bench-server-from-client, namespace: default}
spec:
  podSelector: {matchLabels: {app: bench-server}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: bench-client}}
    ports:
    - {port: 5201, protocol: TCP}
    - {port: 5201, protocol: UDP}
    - {port: 7007, protocol: TCP}
    - {port: 7008, protocol: TCP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bench-client-to-server, namespace: default}
spec:
  podSelector: {matchLabels: {app: bench-client}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: bench-server}}
    ports:
    - {port: 5201, protocol: TCP}
    - {port: 5201, protocol: UDP}
    - {port: 7007, protocol: TCP}
    - {port: 7008, protocol: TCP}
";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Errors once SIGINT or SIGTERM arrived, so that main returns normally and
/// every guard (pods, agents, etcd, namespaces, pins) is dropped.
fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cluster_traffic: needs root (network namespaces, BPF)");
        std::process::exit(2);
    }
    for (tool, package) in [(ETCD_BIN, "etcd-server"), ("/usr/bin/iperf3", "iperf3")] {
        if !Path::new(tool).exists() {
            eprintln!("cluster_traffic: {tool} missing (install {package}: scripts/install-deps.sh bench)");
            std::process::exit(2);
        }
    }
    let handler = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &handler) }.expect("install signal handler");
    }
    let forward_before = root_ip_forward();
    let result = run(&args);
    let forward_after = root_ip_forward();
    if forward_after != forward_before {
        eprintln!(
            "cluster_traffic: BUG: root net.ipv4.ip_forward changed from {forward_before} to {forward_after}"
        );
        std::process::exit(3);
    }
    if let Err(e) = result {
        eprintln!("cluster_traffic: {e}");
        std::process::exit(1);
    }
}

/// The root namespace's net.ipv4.ip_forward (this process stays there).
fn root_ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The plugin and the agent as this tree builds them: `cargo build` of
/// both (a no-op when they are current), so that a binary left from an
/// older tree is not what gets measured. Without cargo (the bench run
/// directly), whatever is there.
fn plugin_and_agent() -> Result<PathBuf> {
    if let Ok(cargo) = std::env::var("CARGO") {
        let exe = std::env::current_exe()?;
        let release = exe
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|n| n == "release");
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "ebpfcni-cni", "--bin", "ebpfcni"]);
        build.args(["-p", "ebpfcni-agent", "--bin", "ebpfcni-agent"]);
        if release {
            build.arg("--release");
        }
        if !build.status()?.success() {
            return Err("cargo build of the plugin and the agent failed".into());
        }
    }
    Ok(workspace_bin("ebpfcni-cni", "ebpfcni"))
}

/// A node: its namespace on the fabric, pin directory and agent.
struct Node {
    /// Declared first: killed (by pid) before the rest goes.
    agent: AgentProcess,
    ns: Netns,
    pins: TestPinDir,
    ip: Ipv4Addr,
    network: String,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(fabric: &Fabric, i: usize, etcd: &str) -> Result<Self> {
        let ns = Netns::new(&format!("xn{}", i + 1));
        fabric.attach(&ns, i);
        let pins = TestPinDir::new(&format!("xtraffic{}", i + 1));
        let dir = tempfile::Builder::new().prefix("ebpfcni-xtraffic").tempdir()?;
        let ip = Fabric::node_ip(i);
        let ip_text = ip.to_string();
        let flags = [
            "--runtime",
            "none",
            "--etcd",
            etcd,
            "--node-ip",
            &ip_text,
            "--cluster-cidr",
            CLUSTER_CIDR,
        ];
        let agent = AgentProcess::start(&ns, pins.path(), dir.path(), &flags);
        Ok(Self {
            agent,
            ns,
            pins,
            ip,
            network: unique_name("xnet"),
            _dir: dir,
        })
    }

    /// The program this node's pods share (pinned by the first ADD).
    fn program(&self) -> Result<Program> {
        let maps = Maps::open(self.pins.path())?;
        Program::pinned(self.pins.path(), &maps)?.ok_or_else(|| "no program pinned on the node".into())
    }

    fn drops(&self) -> Result<Vec<(&'static str, u64)>> {
        let maps = Maps::open(self.pins.path())?;
        Ok(maps.drops.all()?.into_iter().filter(|(_, n)| *n > 0).collect())
    }
}

/// A pod added through the real plugin and the node's agent; deleted
/// through them on drop (best effort: its namespace goes anyway).
struct CniPod<'a> {
    node: &'a Node,
    plugin: &'a Path,
    conf: Value,
    id: String,
    ns: Netns,
    ip: Ipv4Addr,
    host_veth: String,
}

impl<'a> CniPod<'a> {
    fn add(node: &'a Node, plugin: &'a Path, tag: &str, app: &str) -> Result<Self> {
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": node.network,
            "type": "ebpfcni",
            "pinDir": node.pins.path(),
            "agent": node.agent.socket,
            "args": { "cni": { "labels": [{ "key": "app", "value": app }] } },
        });
        let mut pod = Self {
            node,
            plugin,
            conf,
            id: unique_name("xctr"),
            ns: Netns::new(tag),
            ip: Ipv4Addr::UNSPECIFIED,
            host_veth: String::new(),
        };
        let result = pod.cni("ADD")?;
        let address = result["ips"][0]["address"].as_str().unwrap_or_default();
        pod.ip = address
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| format!("ADD of {app}: no IPv4 address in {result}"))?;
        pod.host_veth = result["interfaces"][0]["name"]
            .as_str()
            .ok_or_else(|| format!("ADD of {app}: no host interface in {result}"))?
            .to_owned();
        Ok(pod)
    }

    fn cni(&self, command: &str) -> Result<Value> {
        let mut cmd = self.node.ns.command(self.plugin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.id)
            .env("CNI_NETNS", self.ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env_remove("CNI_ARGS");
        let out = output_with_stdin(&mut cmd, self.conf.to_string().as_bytes());
        if !out.status.success() {
            return Err(format!(
                "CNI {command} on {}: {}{}",
                self.node.ns.name(),
                text(&out.stdout),
                text(&out.stderr)
            )
            .into());
        }
        let stdout = text(&out.stdout);
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&stdout)?)
    }
}

impl Drop for CniPod<'_> {
    fn drop(&mut self) {
        let _ = self.cni("DEL");
    }
}

/// A pod wired by hand as the plugin wires one, with no program: the
/// reference. Its veth goes with its namespace.
struct PlainPod {
    ns: Netns,
    ip: Ipv4Addr,
}

impl PlainPod {
    fn new(node: &Node, tag: &str, host_if: &str, addresses: &[Ipv4Addr]) -> Self {
        let ns = Netns::new(tag);
        node.ns.ip(&[
            "link",
            "add",
            host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]);
        node.ns
            .ip(&["addr", "add", &format!("{GATEWAY}/32"), "dev", host_if]);
        node.ns.ip(&["link", "set", host_if, "up"]);
        for a in addresses {
            let a = a.to_string();
            ns.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0", "noprefixroute"]);
            node.ns.ip(&["route", "add", &format!("{a}/32"), "dev", host_if]);
        }
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", GATEWAY, "dev", "eth0", "scope", "link"]);
        ns.ip(&["route", "add", "default", "via", GATEWAY, "dev", "eth0"]);
        Self { ns, ip: addresses[0] }
    }
}

/// Forwarding on inside a node namespace (as the plugin sets it; /proc/sys/net
/// belongs to the namespace of whoever opens it).
fn forward_in(ns: &Netns) -> Result<()> {
    let ok = ns
        .command("sysctl")
        .args(["-qw", "net.ipv4.ip_forward=1"])
        .status()?
        .success();
    if !ok {
        return Err(format!("net.ipv4.ip_forward=1 in {}", ns.name()).into());
    }
    Ok(())
}

/// Whether a TCP socket listens on `ip`:`port` in `ns` (`ss`, which
/// connects to nothing: a probe connection would upset iperf3's server).
fn listening(ns: &Netns, ip: Ipv4Addr, port: u16) -> bool {
    ns.command("ss")
        .args(["-Hltn", &format!("src {ip}:{port}")])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// Whether a ping from `ns` with source `src` gets an answer from `dst`.
fn pings(ns: &Netns, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    ns.command("ping")
        .args([
            "-c",
            "1",
            "-W",
            "1",
            "-q",
            "-I",
            &src.to_string(),
            &dst.to_string(),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// How a TCP connect from `ns` to `to` ends within 700 ms: Ok, or the
/// error's kind (TimedOut: dropped; ConnectionRefused: reached, no listener).
fn connect(ns: &Netns, to: SocketAddr) -> std::result::Result<(), ErrorKind> {
    ns.run_in(|| TcpStream::connect_timeout(&to, Duration::from_millis(700)))
        .map(drop)
        .map_err(|e| e.kind())
}

/// Retries `check` for up to 10 s (the other node learns endpoints and
/// policy from etcd within milliseconds; ARP and routes settle).
fn until(what: &str, check: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        check_interrupted()?;
        if Instant::now() > deadline {
            return Err(format!("{what}: not within 10 s").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// UDP from a client to a server: what iperf3 sent and what arrived.
struct Udp {
    sent_pps: f64,
    received_pps: f64,
    loss: f64,
}

/// iperf3 UDP with `size`-byte datagrams and no rate limit (`-b 0`), for
/// `seconds` (no omitted first second: iperf3's loss count is wrong with
/// `-O` for UDP). Received = payload bytes the server got / size.
fn udp(client: &Netns, server: Ipv4Addr, size: usize, seconds: u32) -> Result<Udp> {
    let mut last_error = String::new();
    for _ in 0..5 {
        let out = client
            .command("iperf3")
            .args(["-c", &server.to_string(), "-p", &IPERF3_PORT.to_string()])
            .args(["-u", "-b", "0", "-l", &size.to_string()])
            .args(["-t", &seconds.to_string(), "-J"])
            .args(["-A", &traffic::client_cpu().to_string()])
            .output()?;
        let report: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("iperf3 -u printed no JSON ({e}): {}", text(&out.stderr)))?;
        let (sent, received) = (&report["end"]["sum_sent"], &report["end"]["sum_received"]);
        if let (true, Some(packets), Some(secs), Some(bytes), Some(rsecs), Some(lost)) = (
            out.status.success(),
            sent["packets"].as_f64(),
            sent["seconds"].as_f64(),
            received["bytes"].as_f64(),
            received["seconds"].as_f64(),
            received["lost_packets"].as_f64(),
        ) {
            return Ok(Udp {
                sent_pps: packets / secs,
                received_pps: bytes / size as f64 / rsecs,
                loss: lost / packets,
            });
        }
        last_error = report["error"].as_str().unwrap_or("no result").to_owned();
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("iperf3 -u -c {server}: {last_error}").into())
}

/// One scenario: a client pod on n1, a server pod on n2 (its servers
/// running), and what the rounds measured.
struct Scenario<'a> {
    key: &'static str,
    label: &'static str,
    client: &'a Netns,
    server: Ipv4Addr,
    /// The nodes' programs, for b and c (None: a, no program).
    programs: Option<[&'a Program; 2]>,
    tcp: Vec<f64>,
    udp_sent: Vec<f64>,
    udp_received: Vec<f64>,
    udp_loss: Vec<f64>,
    transactions: Vec<f64>,
    connections: Vec<f64>,
}

impl<'a> Scenario<'a> {
    fn new(
        key: &'static str,
        label: &'static str,
        client: &'a Netns,
        server: Ipv4Addr,
        programs: Option<[&'a Program; 2]>,
    ) -> Self {
        Self {
            key,
            label,
            client,
            server,
            programs,
            tcp: Vec::new(),
            udp_sent: Vec::new(),
            udp_received: Vec::new(),
            udp_loss: Vec::new(),
            transactions: Vec::new(),
            connections: Vec::new(),
        }
    }

    fn measure(&mut self, args: &Args) -> Result<()> {
        check_interrupted()?;
        let bps = traffic::throughput(self.client, self.server, args.seconds)?;
        check_interrupted()?;
        let u = udp(self.client, self.server, args.udp_size, args.seconds)?;
        check_interrupted()?;
        let (tps, _round_trip) =
            traffic::transactions(self.client, self.server, args.message_size, args.seconds)?;
        check_interrupted()?;
        let cps = traffic::connections(self.client, self.server, args.seconds)?;
        eprintln!(
            "  {:<10} TCP {:>6.2} Gbit/s  UDP sent {:>8.0} received {:>8.0} packets/s (loss {:>4.1}%)  {:>6.0} transactions/s  {:>6.0} connections/s",
            self.key,
            bps / 1e9,
            u.sent_pps,
            u.received_pps,
            u.loss * 100.0,
            tps,
            cps
        );
        self.tcp.push(bps);
        self.udp_sent.push(u.sent_pps);
        self.udp_received.push(u.received_pps);
        self.udp_loss.push(u.loss);
        self.transactions.push(tps);
        self.connections.push(cps);
        Ok(())
    }
}

fn run(args: &Args) -> Result<()> {
    let plugin = plugin_and_agent()?;
    eprintln!(
        "setting up: fabric, etcd, two nodes with agents, pods (load average {})",
        load_average()
    );
    let fabric = Fabric::new(0);
    let etcd = EtcdProcess::start_in(&fabric.fabric.path(), Fabric::fabric_ip());
    let n1 = Node::start(&fabric, 0, &etcd.url())?;
    let n2 = Node::start(&fabric, 1, &etcd.url())?;

    // b. and c.: through the plugin and the agents.
    let client_b = CniPod::add(&n1, &plugin, "xcb", "bench-client")?;
    let other_b = CniPod::add(&n1, &plugin, "xob", "bench-other")?;
    let server_b = CniPod::add(&n2, &plugin, "xsb", "bench-server")?;
    let client_c = CniPod::add(&n1, &plugin, "xcc", "bench-free-client")?;
    let server_c = CniPod::add(&n2, &plugin, "xsc", "bench-free-server")?;
    n1.agent.client().apply_policies(POLICY)?;

    // a.: by hand, no program, its own CIDRs routed via the node addresses.
    forward_in(&n1.ns)?;
    forward_in(&n2.ns)?;
    n1.ns
        .ip(&["route", "add", "10.30.2.0/24", "via", &n2.ip.to_string()]);
    n2.ns
        .ip(&["route", "add", "10.30.1.0/24", "via", &n1.ip.to_string()]);
    let stranger_a = Ipv4Addr::new(10, 30, 1, 3);
    let client_a = PlainPod::new(&n1, "xca", "xplain", &[Ipv4Addr::new(10, 30, 1, 2), stranger_a]);
    let server_a = PlainPod::new(&n2, "xsa", "xplain", &[Ipv4Addr::new(10, 30, 2, 2)]);

    // A second address on each ebpfcni client, in its node's pod CIDR,
    // that no endpoint has.
    let stranger = |pod: &CniPod, last: u8| -> Ipv4Addr {
        let o = pod.ip.octets();
        let a = Ipv4Addr::new(o[0], o[1], o[2], last);
        pod.ns
            .ip(&["addr", "add", &format!("{a}/32"), "dev", "eth0", "noprefixroute"]);
        a
    };
    let (stranger_b, stranger_c) = (stranger(&client_b, 250), stranger(&client_c, 251));

    // Servers in every server pod.
    let mut servers = Vec::new();
    for (ns, ip) in [
        (&server_a.ns, server_a.ip),
        (&server_b.ns, server_b.ip),
        (&server_c.ns, server_c.ip),
    ] {
        servers.push((
            Iperf3Server::start(ns, ip)?,
            EchoServer::start(ns, ip, args.message_size)?,
            AcceptServer::start(ns, ip)?,
        ));
    }

    for (ns, ip) in [
        (&server_a.ns, server_a.ip),
        (&server_b.ns, server_b.ip),
        (&server_c.ns, server_c.ip),
    ] {
        until(&format!("iperf3 -s listening on {ip}"), || {
            listening(ns, ip, IPERF3_PORT)
        })?;
    }

    // The filter is in the path (and a. has none).
    eprintln!("checking the paths");
    until("a: client reaches server", || {
        pings(&client_a.ns, client_a.ip, server_a.ip)
    })?;
    until("b: client reaches server", || {
        connect(&client_b.ns, SocketAddr::from((server_b.ip, ACCEPT_PORT))).is_ok()
    })?;
    until("c: client reaches server", || {
        pings(&client_c.ns, client_c.ip, server_c.ip)
    })?;
    if !pings(&client_a.ns, stranger_a, server_a.ip) {
        return Err(
            "a: the client's second address does not reach the server (no filter should drop it)".into(),
        );
    }
    for (key, client, stranger, server) in [
        ("b", &client_b, stranger_b, &server_b),
        ("c", &client_c, stranger_c, &server_c),
    ] {
        if pings(&client.ns, stranger, server.ip) {
            return Err(format!(
                "{key}: {stranger}, an address no endpoint has, reached the server: no filter in the path?"
            )
            .into());
        }
        for pod in [client, server] {
            for hook in [Hook::FromPod, Hook::ToPod] {
                if hook_programs(&pod.node.ns, &pod.host_veth, hook).is_empty() {
                    return Err(format!("{key}: no program on {} ({hook:?})", pod.host_veth).into());
                }
            }
        }
    }
    until("b: another pod of n1 is denied", || {
        connect(&other_b.ns, SocketAddr::from((server_b.ip, ACCEPT_PORT))) == Err(ErrorKind::TimedOut)
    })?;
    let unlisted =
        |pod: &CniPod, server: Ipv4Addr| connect(&pod.ns, SocketAddr::from((server, UNLISTED_PORT)));
    if unlisted(&client_b, server_b.ip) != Err(ErrorKind::TimedOut) {
        return Err(format!("b: the client's connect to port {UNLISTED_PORT} was not dropped").into());
    }
    if unlisted(&client_c, server_c.ip) != Err(ErrorKind::ConnectionRefused) {
        return Err(
            format!("c: the client's connect to port {UNLISTED_PORT} was not refused by the server").into(),
        );
    }
    connect(&client_b.ns, SocketAddr::from((server_b.ip, ECHO_PORT)))
        .map_err(|e| format!("b: client -> server port {ECHO_PORT}: {e:?}"))?;
    let drops_checked = (n1.drops()?, n2.drops()?);
    eprintln!(
        "  in place: a's stranger routed; b's and c's dropped; b denies another pod and an unlisted port (drops n1 {:?}, n2 {:?})",
        drops_checked.0, drops_checked.1
    );

    let (p1, p2) = (n1.program()?, n2.program()?);
    let mut scenarios = [
        Scenario::new("plain", "a. no ebpfcni", &client_a.ns, server_a.ip, None),
        Scenario::new(
            "policy",
            "b. ebpfcni, NetworkPolicy allows",
            &client_b.ns,
            server_b.ip,
            Some([&p1, &p2]),
        ),
        Scenario::new(
            "no-policy",
            "c. ebpfcni, no policy selects",
            &client_c.ns,
            server_c.ip,
            Some([&p1, &p2]),
        ),
    ];
    for round in 1..=args.rounds {
        eprintln!("round {round}/{} (load average {})", args.rounds, load_average());
        let n = scenarios.len();
        for i in 0..n {
            scenarios[(i + round as usize - 1) % n].measure(args)?;
        }
    }
    let load_after = load_average();
    let stats = program_stats(&scenarios, args)?;
    let drops_after = (n1.drops()?, n2.drops()?);

    print_traffic(&scenarios, args, &load_after);
    print_stats(&stats, args);
    println!();
    println!(
        "Drop counters (all reasons), n1: {:?}; n2: {:?} (after the checks: n1 {:?}, n2 {:?})",
        drops_after.0, drops_after.1, drops_checked.0, drops_checked.1
    );
    drop(servers);
    drop((client_b, other_b, server_b, client_c, server_c));
    drop((client_a, server_a));
    drop((n1, n2, etcd, fabric));
    Ok(())
}

/// Mean ns per run and runs of each (node, entry point) during one
/// measurement: [n1 from-pod, n1 to-pod, n2 from-pod, n2 to-pod].
type Runs = [(f64, u64); 4];

/// A scenario's run-time statistics, one entry per round.
struct Stats {
    key: &'static str,
    tcp: Vec<Runs>,
    udp: Vec<Runs>,
}

/// More TCP stream and UDP runs of each scenario with programs, with the
/// kernel's run-time statistics on, in interleaved rounds of their own.
fn program_stats(scenarios: &[Scenario], args: &Args) -> Result<Vec<Stats>> {
    let _on = StatsEnabled::on()?;
    let mut out: Vec<Stats> = scenarios
        .iter()
        .filter(|s| s.programs.is_some())
        .map(|s| Stats {
            key: s.key,
            tcp: Vec::new(),
            udp: Vec::new(),
        })
        .collect();
    for round in 1..=args.stats_rounds {
        eprintln!("run-time statistics, round {round}/{}", args.stats_rounds);
        for (s, stats) in scenarios.iter().filter(|s| s.programs.is_some()).zip(&mut out) {
            let Some([p1, p2]) = s.programs else { continue };
            check_interrupted()?;
            let during = |f: &dyn Fn() -> Result<()>| -> Result<Runs> {
                let before = (Snapshot::take(p1)?, Snapshot::take(p2)?);
                f()?;
                let (a, b) = (
                    Snapshot::take(p1)?.since(&before.0),
                    Snapshot::take(p2)?.since(&before.1),
                );
                Ok([a[0], a[1], b[0], b[1]])
            };
            let tcp = during(&|| traffic::throughput(s.client, s.server, args.seconds).map(drop))?;
            let udp = during(&|| udp(s.client, s.server, args.udp_size, args.seconds).map(drop))?;
            // The data's path: n1's from-pod (sender) and n2's to-pod (receiver).
            if tcp[0].1 == 0 || tcp[3].1 == 0 || udp[0].1 == 0 || udp[3].1 == 0 {
                return Err(format!(
                    "{}: a program did not run during its traffic: TCP {tcp:?}, UDP {udp:?}",
                    s.key
                )
                .into());
            }
            eprintln!(
                "  {:<10} ns per run, n1 from-pod / n2 to-pod: TCP {:.1} / {:.1}, UDP {:.1} / {:.1}",
                s.key, tcp[0].0, tcp[3].0, udp[0].0, udp[3].0
            );
            stats.tcp.push(tcp);
            stats.udp.push(udp);
        }
    }
    Ok(out)
}

fn print_traffic(scenarios: &[Scenario], args: &Args, load_after: &str) {
    let base = &scenarios[0];
    println!();
    println!(
        "Pod on n1 -> pod on n2 across the fabric (two node namespaces on a bridge); {} interleaved rounds; \
         iperf3 TCP {} s (after 1 s warm-up); iperf3 UDP, {}-byte datagrams, no rate limit, {} s; \
         request/response: one TCP connection, {}-byte messages, {} s; new connections: connect and reset, \
         one at a time, {} s. Load average at the end: {load_after}.",
        args.rounds, args.seconds, args.udp_size, args.seconds, args.message_size, args.seconds, args.seconds
    );
    println!();
    println!(
        "| {:<33} | {:>10} | {:>11} | {:>12} | {:>11} | {:>9} | {:>11} | {:>14} | {:>11} | {:>13} | {:>11} |",
        "scenario",
        "TCP Gbit/s",
        "vs a",
        "UDP rx pkt/s",
        "vs a",
        "UDP loss",
        "UDP tx vs a",
        "transactions/s",
        "vs a",
        "connections/s",
        "vs a"
    );
    println!(
        "|{:-<35}|{:->12}|{:->13}|{:->14}|{:->13}|{:->11}|{:->13}|{:->16}|{:->13}|{:->15}|{:->13}|",
        "", "", "", "", "", "", "", "", "", "", ""
    );
    for s in scenarios {
        println!(
            "| {:<33} | {:>10.2} | {:>11} | {:>12.0} | {:>11} | {:>8.1}% | {:>11} | {:>14.0} | {:>11} | {:>13.0} | {:>11} |",
            s.label,
            median(&s.tcp) / 1e9,
            Ratio::of(&s.tcp, &base.tcp).show(),
            median(&s.udp_received),
            Ratio::of(&s.udp_received, &base.udp_received).show(),
            median(&s.udp_loss) * 100.0,
            Ratio::of(&s.udp_sent, &base.udp_sent).show(),
            median(&s.transactions),
            Ratio::of(&s.transactions, &base.transactions).show(),
            median(&s.connections),
            Ratio::of(&s.connections, &base.connections).show(),
        );
    }
    println!();
    println!("Absolute figures: medians over the rounds. Ratios: median of the per-round ratios to a, ± half their");
    println!("range (the run-to-run noise). UDP rx: datagrams the server received per second; loss: of those sent;");
    println!(
        "UDP tx vs a: the sender's rate against a's (the sender's CPU also forwards, through both nodes)."
    );
    println!();
    if let [_, b, c] = scenarios {
        for (s, vs) in [(b, base), (c, base), (b, c)] {
            let key = |s: &Scenario| s.label.split('.').next().unwrap_or_default().to_owned();
            println!(
                "{} vs {}: TCP x{}, UDP received x{}, transactions x{}, connections x{}",
                key(s),
                key(vs),
                Ratio::of(&s.tcp, &vs.tcp).show(),
                Ratio::of(&s.udp_received, &vs.udp_received).show(),
                Ratio::of(&s.transactions, &vs.transactions).show(),
                Ratio::of(&s.connections, &vs.connections).show(),
            );
        }
    }
}

fn print_stats(stats: &[Stats], args: &Args) {
    println!();
    println!(
        "BPF run-time statistics (BPF_ENABLE_STATS), {} more interleaved rounds of a {} s TCP stream and a {} s \
         UDP run with them on: mean ns per run of each entry point on each node, median over the rounds (runs \
         in the last round). Data goes n1 from-pod -> n2 to-pod; ACKs and replies n2 from-pod -> n1 to-pod.",
        args.stats_rounds, args.seconds, args.seconds
    );
    println!();
    println!(
        "| {:<10} | {:<7} | {:>20} | {:>20} | {:>20} | {:>20} |",
        "scenario", "traffic", "n1 from-pod", "n2 to-pod", "n2 from-pod", "n1 to-pod"
    );
    println!(
        "|{:-<12}|{:-<9}|{:->22}|{:->22}|{:->22}|{:->22}|",
        "", "", "", "", "", ""
    );
    // The median ns per run of entry point `i`, and the last round's runs.
    let cell = |rounds: &[Runs], i: usize| {
        let ns: Vec<f64> = rounds.iter().map(|r| r[i].0).collect();
        let runs = rounds.last().map_or(0, |r| r[i].1);
        format!("{:.1} ({runs})", median(&ns))
    };
    for s in stats {
        for (what, r) in [("TCP", &s.tcp), ("UDP", &s.udp)] {
            println!(
                "| {:<10} | {:<7} | {:>20} | {:>20} | {:>20} | {:>20} |",
                s.key,
                what,
                cell(r, 0),
                cell(r, 3),
                cell(r, 2),
                cell(r, 1)
            );
        }
    }
    // The data's two hooks (sender's from-pod, receiver's to-pod) together,
    // per round, b against c.
    if let [b, c] = stats {
        let both = |rounds: &[Runs]| -> Vec<f64> { rounds.iter().map(|r| r[0].0 + r[3].0).collect() };
        println!();
        for (what, rb, rc) in [("TCP", &b.tcp, &c.tcp), ("UDP", &b.udp, &c.udp)] {
            println!(
                "{what}: n1 from-pod + n2 to-pod per packet, {} {:.1} ns, {} {:.1} ns: x{}",
                b.key,
                median(&both(rb)),
                c.key,
                median(&both(rc)),
                Ratio::of(&both(rb), &both(rc)).show()
            );
        }
    }
}
