//! Flow events, counters, the policy graph, audit mode and explain with
//! real pods: two pod namespaces routed through a node namespace, the
//! program attached to both host veths, and policyctl run inside the node
//! namespace (where the host veths are) against the test's own pin
//! directory.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, ChildStderr, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{fails, json, ok, POLICYCTL};
use ebpfcni::{Identity, Isolation, LabelKind, LabelRule, Maps, PolicyRule, Program, Selector, TraceLevel};
use ebpfcni_testutil::{require_root, TestPinDir, TwoPods};
use serde_json::Value;

const A: Ipv4Addr = TwoPods::POD_A;
const B: Ipv4Addr = TwoPods::POD_B;
const A_ID: u64 = 1001;
const B_ID: u64 = 1002;

fn id(n: u64) -> Identity {
    Identity::new(n as u32).unwrap()
}

/// Pods A (1001) and B (1002) with the program on both host veths and no
/// rule; trace lines off (a flood must not fill the machine's trace
/// buffer); pod A's host veth carries the alias the CNI plugin would give.
struct Pods {
    topo: TwoPods,
    pins: TestPinDir,
    maps: Maps,
    _program: Program,
}

impl Pods {
    fn new(tag: &str) -> Self {
        let pins = TestPinDir::new(tag);
        let topo = TwoPods::new(tag);
        let pods = Self::attach(topo, pins);
        pods.maps
            .endpoints
            .upsert_batch(&[(A, id(A_ID)), (B, id(B_ID))])
            .unwrap();
        pods
    }

    /// The program loaded against `pins` and attached to both host veths.
    fn attach(topo: TwoPods, pins: TestPinDir) -> Self {
        let program = Program::load(pins.path()).expect("load program");
        let maps = Maps::open(pins.path()).unwrap();
        maps.config.set_trace_level(TraceLevel::Off).unwrap();
        maps.interfaces.set(topo.ifindex_a, &[A]).unwrap();
        maps.interfaces.set(topo.ifindex_b, &[B]).unwrap();
        topo.node
            .run_in(|| {
                program.attach(topo.ifindex_a)?;
                program.attach(topo.ifindex_b)
            })
            .expect("attach");
        topo.node.ip(&[
            "link",
            "set",
            TwoPods::NODE_IF_A,
            "alias",
            "ebpfcni/testnet/ctr-a/eth0",
        ]);
        Self {
            topo,
            pins,
            maps,
            _program: program,
        }
    }

    /// policyctl in the node namespace, against our pins.
    fn policyctl(&self, args: &[&str]) -> std::process::Output {
        self.policyctl_cmd(args).output().expect("run policyctl")
    }

    fn policyctl_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.topo.node.command(POLICYCTL);
        cmd.arg("--pin-dir").arg(self.pins.path()).args(args);
        cmd
    }

    fn stats(&self) -> Value {
        json(&ok(self.policyctl(&["stats", "-o", "json"])))
    }

    /// Sends `n` UDP datagrams from pod A to pod B, from one CPU (so that
    /// one per-CPU rate limit bucket sees them all).
    fn send_udp(&self, n: usize) {
        self.topo.pod_a.run_in(|| {
            let mut cpu = nix::sched::CpuSet::new();
            cpu.set(0).unwrap();
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu).expect("pin to CPU 0");
            let socket = UdpSocket::bind((A, 0)).expect("bind");
            for _ in 0..n {
                socket.send_to(b"x", (B, 9)).expect("send");
            }
        });
    }
}

/// A running `policyctl monitor`, killed on drop.
struct Monitor {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Monitor {
    /// Starts it and waits until it says it is watching (or `waits_for` a
    /// first line of stderr containing that text).
    fn start(pods: &Pods, args: &[&str], waits_for: &str) -> Self {
        let mut child = pods
            .policyctl_cmd(&[&["monitor"], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start policyctl monitor");
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut monitor = Self { child, stderr };
        monitor.wait_for(waits_for);
        monitor
    }

    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("policyctl monitor never said {text:?}");
    }

    /// Waits for it to end; its stdout, and the rest of its stderr.
    fn finish(mut self) -> (String, String) {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        let err: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "monitor failed: {}", err.join("\n"));
        (out, err.join("\n"))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn counter(stats: &Value, path: &[&str]) -> u64 {
    let mut v = stats;
    for key in path {
        v = &v[*key];
    }
    v.as_u64().unwrap_or_else(|| panic!("{path:?} in {stats}"))
}

#[test]
fn a_denied_ping_shows_up_in_the_monitor_with_both_identities() {
    require_root!();
    let pods = Pods::new("mon-ping");
    let monitor = Monitor::start(
        &pods,
        &["-o", "json", "--count", "1", "--duration", "20"],
        "watching",
    );
    assert!(!pods.topo.reaches(A), "ping passed without a rule");
    let (out, _) = monitor.finish();
    let event = json(out.lines().next().expect("an event"));
    assert_eq!(event["verdict"], "drop", "{event}");
    assert_eq!(event["reason"], "no-policy", "{event}");
    assert_eq!(event["src_ip"], A.to_string());
    assert_eq!(event["dst_ip"], B.to_string());
    assert_eq!(event["src_identity"], A_ID);
    assert_eq!(event["dst_identity"], B_ID);
    assert_eq!(event["proto"], "icmp");
    assert_eq!(event["hook"], "from-pod");
    assert_eq!(event["interface"], TwoPods::NODE_IF_A);
    assert_eq!(event["pod"], "ctr-a/eth0");

    // With a stateful rule and --level all, one ping is four passes: its
    // request leaves A's host veth (a new flow) and enters B's (tracked),
    // its reply leaves B's and enters A's.
    pods.maps
        .allow(&[ebpfcni::Rule::pair(PolicyRule::new(id(A_ID), id(B_ID)), true)])
        .unwrap();
    let monitor = Monitor::start(
        &pods,
        &[
            "--level",
            "all",
            "--identity",
            "1002",
            "--count",
            "4",
            "--duration",
            "20",
        ],
        "watching",
    );
    assert!(pods.topo.reaches(A), "ping failed with a stateful rule");
    let (out, _) = monitor.finish();
    let lines: Vec<&str> = out.lines().collect();
    let request = format!("{A} (1001) -> {B} (1002) icmp id");
    let reply = format!("{B} (1002) -> {A} (1001) icmp id");
    for (line, (what, packet, place)) in lines.iter().zip([
        ("PASS new-flow", &request, "from-pod veth_a pod ctr-a/eth0"),
        ("PASS tracked", &request, "to-pod veth_b"),
        ("PASS reply", &reply, "from-pod veth_b"),
        ("PASS reply", &reply, "to-pod veth_a pod ctr-a/eth0"),
    ]) {
        assert!(
            line.contains(what) && line.contains(packet.as_str()) && line.ends_with(place),
            "expected {what} {packet} ... {place}:\n{out}"
        );
    }
    assert_eq!(
        ok(pods.policyctl(&["events"])).trim(),
        "event level: drops",
        "--level was not restored"
    );
}

#[test]
fn stats_count_exactly_the_packets_sent() {
    require_root!();
    let pods = Pods::new("mon-stats");
    let before = pods.stats();
    pods.send_udp(50);
    let after = pods.stats();
    assert_eq!(
        counter(&after, &["drops", "no-policy"]) - counter(&before, &["drops", "no-policy"]),
        50
    );
    assert_eq!(
        counter(&after, &["events_written"]) - counter(&before, &["events_written"]),
        50
    );
    let maps = after["maps"].as_array().unwrap();
    assert!(
        maps.iter()
            .any(|m| m["map"] == "endpoint_map" && m["entries"] == 2 && m["capacity"] == 16384),
        "{after}"
    );
    let prom = ok(pods.policyctl(&["stats", "-o", "prometheus"]));
    assert!(
        prom.contains("ebpfcni_drops_total{reason=\"no-policy\"} 50"),
        "{prom}"
    );
    assert!(
        prom.contains("ebpfcni_map_entries{map=\"endpoint_map\"} 2"),
        "{prom}"
    );
    assert!(prom.contains("# TYPE ebpfcni_drops_total counter"), "{prom}");
}

#[test]
fn a_flood_beyond_the_rate_limit_adds_up() {
    require_root!();
    let pods = Pods::new("mon-flood");
    ok(pods.policyctl(&["rate-limit", "--rate", "1", "--burst", "20"]));
    let before = pods.stats();
    // Long enough for the flood on a busy machine: what is written after the
    // monitor stops is not shown.
    let monitor = Monitor::start(&pods, &["-o", "json", "--duration", "8"], "watching");
    let sent = 500;
    let start = Instant::now();
    pods.send_udp(sent);
    let elapsed = start.elapsed();
    let (out, err) = monitor.finish();
    let after = pods.stats();
    let delta = |path: &[&str]| counter(&after, path) - counter(&before, path);
    let shown = out.lines().count() as u64;
    assert_eq!(
        delta(&["drops", "no-policy"]),
        sent as u64,
        "the drop counter is exact"
    );
    assert_eq!(shown, delta(&["events_written"]), "every event written was shown");
    assert_eq!(
        shown + delta(&["events_over_rate_limit"]) + delta(&["events_ring_full"]),
        sent as u64,
        "events shown and held back add up to the packets"
    );
    let allowed = 20 + elapsed.as_secs() + 1;
    assert!(
        (20..=allowed).contains(&shown),
        "{shown} events for a burst of 20 at 1/s"
    );
    assert!(err.contains("over the rate limit"), "{err}");
}

#[test]
fn a_monitor_waits_for_maps_and_a_second_one_is_refused() {
    require_root!();
    let topo = TwoPods::new("mon-wait");
    let pins = TestPinDir::adopt(TestPinDir::unused("mon-wait"));
    // Nothing is pinned yet: the monitor waits.
    let mut cmd = topo.node.command(POLICYCTL);
    cmd.arg("--pin-dir")
        .arg(pins.path())
        .args(["monitor", "-o", "json", "--count", "1", "--duration", "30"]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let mut first = Monitor { child, stderr };
    first.wait_for("waiting for ebpfcni's maps");

    std::fs::create_dir_all(pins.path()).unwrap();
    let pods = Pods::attach(topo, pins);
    pods.maps
        .endpoints
        .upsert_batch(&[(A, id(A_ID)), (B, id(B_ID))])
        .unwrap();
    first.wait_for("watching");

    let err = fails(pods.policyctl(&["monitor", "--duration", "5"]), 1);
    assert!(
        err.contains(&format!("another reader (pid {})", first.child.id())),
        "{err}"
    );
    pods.send_udp(1);
    let (out, _) = first.finish();
    assert_eq!(json(out.trim())["reason"], "no-policy", "{out}");
    // The first one is gone: a new one may read.
    let ok_again = pods.policyctl(&["monitor", "--duration", "1"]);
    assert!(
        ok_again.status.success(),
        "{}",
        String::from_utf8_lossy(&ok_again.stderr)
    );
}

#[test]
fn a_slow_reader_loses_events_but_the_counters_add_up() {
    require_root!();
    let pods = Pods::new("mon-slow");
    ok(pods.policyctl(&["rate-limit", "--rate", "10000000"]));
    let before = pods.stats();
    // Nobody reads its stdout while the flood runs: once the pipe is full
    // the monitor stops reading the ring, which then fills.
    let monitor = Monitor::start(&pods, &["-o", "json", "--duration", "6"], "watching");
    let sent = 40_000;
    pods.send_udp(sent);
    let (out, err) = monitor.finish();
    let after = pods.stats();
    let delta = |path: &[&str]| counter(&after, path) - counter(&before, path);
    let shown = out.lines().count() as u64;
    assert_eq!(
        delta(&["drops", "no-policy"]),
        sent as u64,
        "the drop counter is exact"
    );
    assert!(delta(&["events_ring_full"]) > 0, "the ring never filled: {err}");
    assert_eq!(
        shown + delta(&["events_over_rate_limit"]) + delta(&["events_ring_full"]),
        sent as u64
    );
    assert!(err.contains("to a full ring"), "{err}");
}

#[test]
fn graph_is_valid_dot_with_identities_rules_and_flows() {
    require_root!();
    let pods = Pods::new("mon-graph");
    ok(pods.policyctl(&[
        "allow",
        "--src",
        "1002",
        "--dst",
        "1001",
        "--port",
        "8080",
        "--stateful",
    ]));
    ok(pods.policyctl(&["allow", "--src", "1002", "--dst", "7"]));
    let out = ok(pods.policyctl(&["graph"]));
    assert!(out.starts_with("digraph ebpfcni {"), "{out}");
    assert!(out.contains(&format!("\"1001\" [label=\"1001\\n{A}\"]")), "{out}");
    assert!(
        out.contains("\"1002\" -> \"1001\" [label=\"8080/tcp (stateful)\", style=bold]"),
        "{out}"
    );
    assert!(out.contains("\"1002\" -> \"7\" [label=\"any\"]"), "{out}");
    check_with_dot(&out);

    let flows = std::thread::scope(|s| {
        let graph = s.spawn(|| ok(pods.policyctl(&["graph", "--flows", "3"])));
        std::thread::sleep(Duration::from_millis(1000));
        pods.send_udp(5);
        graph.join().unwrap()
    });
    assert!(
        flows.contains("\"1001\" -> \"1002\" [label=\"5 dropped: no-policy\", color=red"),
        "{flows}"
    );
    check_with_dot(&flows);
}

/// Parses `text` with Graphviz's `dot` when it is installed (the test
/// dependencies install it).
fn check_with_dot(text: &str) {
    let Ok(mut dot) = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "dot (graphviz) is missing under CI"
        );
        eprintln!("dot not installed: DOT output not parsed");
        return;
    };
    std::io::Write::write_all(dot.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(dot.stdin.take());
    let out = dot.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dot rejected the graph: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stand-in for the agent's API on a socket of the test's own: fixed
/// JSON for GET /v1/endpoints, /v1/identities and (when given)
/// /v1/policies, 404 for anything else, as an agent without the policies
/// route answers. Stopped on drop.
struct FakeAgent {
    dir: tempfile::TempDir,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeAgent {
    fn start(endpoints: Value, identities: Value, policies: Option<Value>) -> Self {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("agent.sock")).unwrap();
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("");
                let body = match path {
                    "/v1/endpoints" => Some(endpoints.to_string()),
                    "/v1/identities" => Some(identities.to_string()),
                    "/v1/policies" => policies.as_ref().map(Value::to_string),
                    _ => None,
                };
                let (status, body) = match body {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", String::new()),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            dir,
            done,
            thread: Some(thread),
        }
    }

    fn socket(&self) -> String {
        self.dir.path().join("agent.sock").display().to_string()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::os::unix::net::UnixStream::connect(self.socket());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The agent's view of pods A (prod/a, app=a) and B (prod/b, app=b).
fn agent_endpoint(ip: Ipv4Addr, pod: &str, identity: u32, veth: &str) -> Value {
    let labels = serde_json::json!({
        "app": pod,
        "io.kubernetes.pod.namespace": "prod",
        "io.kubernetes.pod.name": pod,
    });
    serde_json::json!({
        "container_id": format!("ctr-{pod}"), "ifname": "eth0", "network": "testnet",
        "netns": "/run/netns/x", "host_veth": veth, "host_ifindex": 0, "ips": [ip.to_string()],
        "leased": false, "labels": labels,
        "identity_labels": {"app": pod, "io.kubernetes.pod.namespace": "prod"},
        "identity": identity, "state": "ready",
    })
}

const LABEL_A: u32 = 300;
const LABEL_B: u32 = 301;

impl Pods {
    /// A and B as label identities (300, 301), under label policy with no
    /// isolation: unrestricted.
    fn with_label_identities(tag: &str) -> Self {
        let pods = Pods::new(tag);
        pods.maps
            .endpoints
            .upsert_batch(&[(A, id(LABEL_A.into())), (B, id(LABEL_B.into()))])
            .unwrap();
        for n in [LABEL_A, LABEL_B] {
            pods.maps.labels.set_isolation(n, Isolation::default()).unwrap();
        }
        pods.maps.after_policy_change().unwrap();
        pods
    }

    fn isolate_ingress(&self, n: u32) {
        self.maps
            .labels
            .set_isolation(
                n,
                Isolation {
                    ingress: true,
                    egress: false,
                },
            )
            .unwrap();
        self.maps.after_policy_change().unwrap();
    }

    fn label_rule(&self, subject: u32, peer: u32, kind: LabelKind, policy: u32) {
        self.maps
            .labels
            .add(&LabelRule {
                subject,
                peer,
                kind,
                selector: Selector::Protocol(ebpfcni::Protocol(1)),
                policy,
            })
            .unwrap();
        self.maps.after_policy_change().unwrap();
    }

    /// `policyctl explain` from A to B (ICMP echo) with `extra` flags:
    /// its exit code and stdout.
    fn explain(&self, extra: &[&str]) -> (Option<i32>, String) {
        let out = self.policyctl(
            &[
                &[
                    "explain",
                    "--from",
                    &A.to_string(),
                    "--to",
                    &B.to_string(),
                    "--icmp",
                ],
                extra,
            ]
            .concat(),
        );
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

const NO_AGENT: [&str; 2] = ["--agent", "/nonexistent/agent.sock"];

#[test]
fn audit_mode_lets_policy_drops_pass_and_counts_and_reports_them() {
    require_root!();
    let pods = Pods::new("audit-ping");
    assert!(!pods.topo.reaches(A), "ping passed without a rule");
    assert_eq!(ok(pods.policyctl(&["audit"])).trim(), "audit mode: off");
    let before = pods.stats();
    let out = ok(pods.policyctl(&["audit", "on"]));
    assert!(out.contains("audit mode: off -> on"), "{out}");
    assert!(pods.maps.config.audit().unwrap());

    let monitor = Monitor::start(
        &pods,
        &[
            "-o",
            "json",
            "--verdict",
            "audit",
            "--count",
            "1",
            "--duration",
            "20",
        ],
        "watching",
    );
    assert!(pods.topo.reaches(A), "audit mode dropped a ping policy denies");
    let (out, _) = monitor.finish();
    let event = json(out.lines().next().expect("an audit event"));
    assert_eq!(event["verdict"], "audit", "{event}");
    assert_eq!(event["reason"], "no-policy", "{event}");
    assert_eq!(event["src_ip"], A.to_string());

    let after = pods.stats();
    let delta = |path: &[&str]| counter(&after, path) - counter(&before, path);
    assert_eq!(delta(&["drops", "no-policy"]), 0, "counted as drops: {after}");
    // Request and reply, each at from-pod and at to-pod (a stack network).
    assert!(delta(&["audited", "no-policy"]) >= 2, "{after}");
    assert_eq!(after["audit"], true);
    let table = ok(pods.policyctl(&["stats"]));
    assert!(table.contains("(audit mode on)"), "{table}");
    let prom = ok(pods.policyctl(&["stats", "-o", "prometheus"]));
    assert!(prom.contains("ebpfcni_audit_mode 1"), "{prom}");
    assert!(
        prom.contains(&format!(
            "ebpfcni_audit_total{{reason=\"no-policy\"}} {}",
            counter(&after, &["audited", "no-policy"])
        )),
        "{prom}"
    );

    // Source trust is not policy: a forged source is still dropped.
    let forged = Ipv4Addr::new(10, 13, 1, 77);
    pods.topo
        .pod_a
        .ip(&["addr", "add", "10.13.1.77/24", "dev", "eth0"]);
    assert!(
        !pods.topo.reaches(forged),
        "audit mode let a forged source through"
    );
    assert!(counter(&pods.stats(), &["drops", "invalid-source"]) >= 1);

    ok(pods.policyctl(&["audit", "off"]));
    assert!(!pods.topo.reaches(A), "audit off: the ping passed");
    assert_eq!(
        ok(pods.policyctl(&["audit", "-o", "json"])).trim(),
        "{\n  \"audit\": false\n}"
    );
}

#[test]
fn explain_agrees_with_real_traffic_and_leaves_nothing_behind() {
    require_root!();
    // The plan's pair rules: denied, then allowed both ways.
    let pods = Pods::new("explain-plan");
    let (code, out) = pods.explain(&NO_AGENT);
    assert_eq!(code, Some(8), "{out}");
    assert!(out.contains("verdict: dropped (no-policy)"), "{out}");
    assert!(
        out.contains("hook from-pod on veth_a: dropped (no-policy)"),
        "{out}"
    );
    assert!(!pods.topo.reaches(A));
    pods.maps
        .allow(&[
            ebpfcni::Rule::pair(PolicyRule::new(id(A_ID), id(B_ID)), true),
            ebpfcni::Rule::pair(PolicyRule::new(id(B_ID), id(A_ID)), false),
        ])
        .unwrap();
    let connections = pods.maps.conntrack.len().unwrap();
    let before = pods.stats();
    let monitor = Monitor::start(&pods, &["--level", "all", "--duration", "3"], "watching");
    let (code, out) = pods.explain(&NO_AGENT);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verdict: allowed"), "{out}");
    assert!(
        out.contains("hook from-pod on veth_a: allowed (new-flow)"),
        "{out}"
    );
    assert!(out.contains("hook to-pod on veth_b: allowed"), "{out}");
    assert!(
        out.contains("identity 1001") && out.contains("identity 1002"),
        "{out}"
    );
    assert!(
        !out.contains("note:"),
        "both hooks run this build's program: {out}"
    );
    let (shown, _) = monitor.finish();
    assert_eq!(shown, "", "a running monitor saw explain's packets");
    assert_eq!(
        pods.maps.conntrack.len().unwrap(),
        connections,
        "explain tracked a connection"
    );
    let after = pods.stats();
    assert_eq!(after["drops"], before["drops"]);
    assert_eq!(after["events_written"], before["events_written"]);
    assert!(pods.topo.reaches(A), "explain said allowed, the ping failed");
    // A hook without the program: explain says real packets are not judged there.
    let ifindex_b = pods.topo.ifindex_b;
    pods.topo
        .node
        .run_in(|| ebpfcni::tc::detach_hook(ifindex_b, ebpfcni::Hook::ToPod))
        .unwrap();
    let (_, out) = pods.explain(&NO_AGENT);
    assert!(
        out.contains("note: no ebpfcni program runs on its egress hook"),
        "{out}"
    );

    // Label policy: isolation, an allow rule, a deny rule.
    let pods = Pods::with_label_identities("explain-labels");
    pods.isolate_ingress(LABEL_B);
    let (code, out) = pods.explain(&NO_AGENT);
    assert_eq!(code, Some(8), "{out}");
    assert!(out.contains("(policy-isolated)"), "{out}");
    assert!(out.contains("isolated: the receiver's ingress"), "{out}");
    assert!(!pods.topo.reaches(A), "explain said isolated, the ping passed");

    pods.label_rule(LABEL_B, LABEL_A, LabelKind::IngressAllow, 5);
    let (code, out) = pods.explain(&NO_AGENT);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("label policy: policy ingress policy #5"), "{out}");
    assert!(
        pods.topo.reaches(A),
        "explain said allowed by policy #5, the ping failed"
    );

    pods.label_rule(LABEL_A, LABEL_B, LabelKind::EgressDeny, 6);
    let (code, out) = pods.explain(&NO_AGENT);
    assert_eq!(code, Some(8), "{out}");
    assert!(out.contains("(policy-denied)"), "{out}");
    assert!(out.contains("policy egress policy #6"), "{out}");
    let out = pods.policyctl(
        &[
            &NO_AGENT[..],
            &[
                "-o",
                "json",
                "explain",
                "--from",
                &A.to_string(),
                "--to",
                &B.to_string(),
                "--icmp",
            ],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(8));
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["verdict"], "dropped", "{report}");
    assert_eq!(report["reason"], "policy-denied", "{report}");
    assert_eq!(report["from"]["identity"], LABEL_A, "{report}");
    assert_eq!(report["hooks"][0]["hook"], "from-pod", "{report}");
    assert_eq!(
        report["hooks"][0]["label_policy"]["egress_policy"]["number"], 6,
        "{report}"
    );
    assert!(!pods.topo.reaches(A), "explain said denied, the ping passed");

    // Audit mode: it would be dropped, and passes.
    ok(pods.policyctl(&["audit", "on"]));
    let (code, out) = pods.explain(&NO_AGENT);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verdict: audit (policy-denied)"), "{out}");
    assert!(pods.topo.reaches(A));
}

#[test]
fn monitor_and_explain_name_policies_and_labels_through_the_agent() {
    require_root!();
    let pods = Pods::with_label_identities("names-agent");
    pods.isolate_ingress(LABEL_B);
    let endpoints = serde_json::json!([
        agent_endpoint(A, "a", LABEL_A, TwoPods::NODE_IF_A),
        agent_endpoint(B, "b", LABEL_B, TwoPods::NODE_IF_B),
    ]);
    let identities = serde_json::json!([
        {"id": LABEL_A, "labels": {"app": "a", "io.kubernetes.pod.namespace": "prod"}, "endpoints": 1},
        {"id": LABEL_B, "labels": {"app": "b", "io.kubernetes.pod.namespace": "prod"}, "endpoints": 1},
    ]);
    let policies = serde_json::json!([{
        "number": 5, "kind": "NetworkPolicy", "namespace": "prod", "name": "b-from-a",
        "selected": [LABEL_B], "rules": ["ingress from app=a"],
    }]);
    let agent = FakeAgent::start(endpoints.clone(), identities.clone(), Some(policies));
    let with_agent = ["--agent", &agent.socket()];

    // Denied: the monitor shows both pods' labels and whose isolation.
    let monitor = Monitor::start(
        &pods,
        &[&with_agent[..], &["--count", "1", "--duration", "20"]].concat(),
        "watching",
    );
    assert!(!pods.topo.reaches(A));
    let (out, _) = monitor.finish();
    assert!(
        out.contains(&format!(
            "{A} ({LABEL_A} app=a,io.kubernetes.pod.namespace=prod) -> {B} ({LABEL_B} app=b,"
        )) && out.contains("[isolated: the receiver's ingress]"),
        "{out}"
    );

    // Allowed by policy 5: named by the agent, in the monitor and explain.
    pods.label_rule(LABEL_B, LABEL_A, LabelKind::IngressAllow, 5);
    let monitor = Monitor::start(
        &pods,
        &[
            &with_agent[..],
            &["-o", "json", "--level", "all", "--count", "1", "--duration", "20"],
        ]
        .concat(),
        "watching",
    );
    assert!(pods.topo.reaches(A));
    let (out, _) = monitor.finish();
    let event = json(out.lines().next().expect("an event"));
    assert_eq!(
        event["label_policy"]["ingress_policy"]["name"], "b-from-a",
        "{event}"
    );
    assert_eq!(
        event["src_labels"], "app=a,io.kubernetes.pod.namespace=prod",
        "{event}"
    );

    let out = pods.policyctl(
        &[
            &with_agent[..],
            &["explain", "--from", "prod/a", "--to", "prod/b", "--icmp"],
        ]
        .concat(),
    );
    let text = ok(out);
    assert!(
        text.contains("label policy: policy ingress prod/b-from-a (NetworkPolicy)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{A} (prod/a) identity {LABEL_A} [app=a,")),
        "{text}"
    );
    let out = pods.policyctl(
        &[
            &with_agent[..],
            &["explain", "--from", "prod/zz", "--to", "prod/b", "--icmp"],
        ]
        .concat(),
    );
    assert!(fails(out, 2).contains("no endpoint of pod zz"));

    // An agent without the policies route (404): `policy #N`.
    drop(agent);
    let agent = FakeAgent::start(endpoints, identities, None);
    let text = ok(pods.policyctl(&[
        "--agent",
        &agent.socket(),
        "explain",
        "--from",
        "prod/a",
        "--to",
        "prod/b",
        "--icmp",
    ]));
    assert!(text.contains("policy ingress policy #5"), "{text}");
}
