//! Label policy through the agent, with real packets: NetworkPolicy
//! documents applied with `policyctl apply -f` to pods the CNI plugin made
//! in agent mode, checked with TCP and UDP between their namespaces;
//! edited without a window, deleted, kept across a restart (maps not
//! rewritten), bad documents refused with nothing changed, the node always
//! allowed, ipBlock with except, selector rules, and a handful of the
//! Kubernetes e2e suite's cases under their upstream names (a 2x2 subset of
//! its x/y/z x a/b/c model, ports 80 and 81).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{cli, pod_ip, Node, Pod};
use ebpfcni::{Isolation, LabelRule, Maps};
use ebpfcni_testutil::{require_root, AgentProcess};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_millis(600);

/// A node with an agent and pods made by the plugin in agent mode.
struct Cluster {
    node: Node,
    dir: tempfile::TempDir,
    agent: AgentProcess,
    pods: BTreeMap<String, (Pod, Ipv4Addr)>,
    /// Listeners kept open in the pods (TCP 80, 81; UDP 80).
    tcp: Vec<TcpListener>,
    udp: BTreeMap<String, UdpSocket>,
}

impl Cluster {
    fn new(tag: &str, cidr: &str, extra: &[&str]) -> Self {
        let node = Node::new(tag);
        let dir = tempfile::Builder::new()
            .prefix(&format!("ebpfcni-agpol-{tag}-"))
            .tempdir()
            .unwrap();
        let mut flags = vec!["--pod-cidr", cidr, "--runtime", "none"];
        flags.extend_from_slice(extra);
        let agent = AgentProcess::start(&node.ns, node.pins.path(), dir.path(), &flags);
        Self {
            node,
            dir,
            agent,
            pods: BTreeMap::new(),
            tcp: Vec::new(),
            udp: BTreeMap::new(),
        }
    }

    fn conf(&self, labels: &[(&str, &str)]) -> Value {
        let labels: Vec<Value> = labels
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        json!({
            "cniVersion": "1.0.0",
            "name": self.node.network,
            "type": "ebpfcni",
            "pinDir": self.node.pins.path(),
            "agent": self.agent.socket,
            "args": { "cni": { "labels": labels } },
        })
    }

    /// A pod `name` in Kubernetes namespace `ns` with `labels`, listening
    /// on TCP 80 and 81 and UDP 80.
    fn pod(&mut self, name: &str, ns: &str, labels: &[(&str, &str)]) -> Ipv4Addr {
        let pod = Pod::new(&format!("ap{}", name.replace('/', "")));
        let conf = self.conf(labels);
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={}",
            name.replace('/', "-")
        );
        let result = self
            .node
            .exec(
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", &pod.id),
                    ("CNI_NETNS", &pod.ns.path_string()),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_PATH", common::CNI_PATH),
                    ("CNI_ARGS", &args),
                ],
                conf.to_string().as_bytes(),
            )
            .ok();
        let ip: Ipv4Addr = pod_ip(&result).parse().unwrap();
        for port in [80, 81] {
            self.tcp
                .push(pod.ns.run_in(|| TcpListener::bind((ip, port))).expect("listen"));
        }
        let udp = pod.ns.run_in(|| UdpSocket::bind((ip, 80))).expect("bind udp");
        udp.set_read_timeout(Some(TIMEOUT)).unwrap();
        self.udp.insert(name.to_string(), udp);
        self.pods.insert(name.to_string(), (pod, ip));
        ip
    }

    /// The pod's TCP listener on `port`.
    fn listener(&self, name: &str, port: u16) -> &TcpListener {
        let addr = SocketAddr::from((self.ip(name), port));
        self.tcp
            .iter()
            .find(|l| l.local_addr().unwrap() == addr)
            .expect("a listener")
    }

    fn ip(&self, name: &str) -> Ipv4Addr {
        self.pods[name].1
    }

    /// Whether a TCP connection from `from` to `to`:`port` opens.
    fn tcp(&self, from: &str, to: &str, port: u16) -> bool {
        let addr = SocketAddr::from((self.ip(to), port));
        self.pods[from]
            .0
            .ns
            .run_in(|| TcpStream::connect_timeout(&addr, TIMEOUT))
            .is_ok()
    }

    /// Whether a UDP datagram from `from` reaches `to`:80 and its answer
    /// comes back.
    fn udp(&self, from: &str, to: &str) -> bool {
        let client = self.pods[from]
            .0
            .ns
            .run_in(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .unwrap();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        client.send_to(b"ping", (self.ip(to), 80)).unwrap();
        let server = &self.udp[to];
        let mut buf = [0u8; 64];
        let Ok((_, peer)) = server.recv_from(&mut buf) else {
            return false;
        };
        server.send_to(b"pong", peer).unwrap();
        client.recv(&mut buf).is_ok()
    }

    fn policyctl(&self, args: &[&str]) -> (Option<i32>, String, String) {
        cli(&self.node, &self.agent.socket, "policyctl", args)
    }

    /// `policyctl apply -f` of `yaml` (through a file): must succeed.
    fn apply(&self, yaml: &str) -> String {
        let (code, out, err) = self.apply_unchecked(yaml);
        assert_eq!(
            code,
            Some(0),
            "apply failed: {out}{err}\n{}",
            self.agent.log_text()
        );
        out
    }

    fn apply_unchecked(&self, yaml: &str) -> (Option<i32>, String, String) {
        let file = self.dir.path().join("policy.yaml");
        std::fs::write(&file, yaml).unwrap();
        self.policyctl(&["apply", "-f", file.to_str().unwrap()])
    }

    fn maps(&self) -> Maps {
        Maps::open(self.node.pins.path()).unwrap()
    }

    /// What label policy holds.
    fn label_maps(&self) -> (Vec<LabelRule>, BTreeMap<u32, Isolation>) {
        let maps = self.maps();
        (maps.labels.rules().unwrap(), maps.labels.isolations().unwrap())
    }

    /// How many times the agent wrote label policy so far.
    fn label_writes(&self) -> usize {
        self.agent.log_text().matches("label policy: ").count()
    }

    /// Every (from, to) of the pods but a pod with itself, probed at once:
    /// the pairs whose TCP connection to `port` opened.
    fn matrix(&self, port: u16) -> BTreeSet<(String, String)> {
        let names: Vec<&String> = self.pods.keys().collect();
        let pairs: Vec<(&String, &String)> = names
            .iter()
            .flat_map(|a| names.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a != b)
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = pairs
                .iter()
                .map(|(a, b)| s.spawn(move || ((*a).clone(), (*b).clone(), self.tcp(a, b, port))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|(_, _, ok)| *ok)
                .map(|(a, b, _)| (a, b))
                .collect()
        })
    }
}

fn np(ns: &str, name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}")
}

const WEB_FROM_CLIENT_80: &str = "podSelector: {matchLabels: {app: web}}\ningress:\n- from:\n  - podSelector: {matchLabels: {app: client}}\n  ports:\n  - {port: 80, protocol: TCP}";

#[test]
fn a_network_policy_applied_with_policyctl_is_enforced_edited_deleted_and_kept_across_a_restart() {
    require_root!();
    let mut c = Cluster::new("agpol", "10.13.41.0/24", &[]);
    c.pod("client", "default", &[("app", "client")]);
    c.pod("web", "default", &[("app", "web")]);
    c.pod("other", "default", &[("app", "other")]);

    // Kubernetes' default: selected by no policy, unrestricted.
    assert!(c.tcp("other", "web", 80) && c.tcp("other", "web", 81) && c.udp("other", "web"));

    let out = c.apply(&np("default", "web", WEB_FROM_CLIENT_80));
    assert!(out.contains("NetworkPolicy default/web created"), "{out}");
    // Enforced when apply returns: web's ingress takes client on TCP 80 only.
    assert!(c.tcp("client", "web", 80), "client -> web:80 allowed");
    assert!(!c.tcp("client", "web", 81), "client -> web:81 not allowed");
    assert!(!c.udp("client", "web"), "client -> web UDP 80 not allowed");
    assert!(!c.tcp("other", "web", 80), "other -> web denied");
    // web's egress is not isolated: it opens connections to anyone.
    assert!(c.tcp("web", "client", 80) && c.tcp("web", "other", 81) && c.udp("web", "client"));
    assert!(c.tcp("other", "client", 80), "client is selected by no policy");

    let (code, out, _) = c.policyctl(&["get", "policies"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("NetworkPolicy") && out.contains("web"), "{out}");
    let policies = c.agent.client().policies().unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].number, 1);
    let rules = c.label_maps().0;
    let web_id = c
        .agent
        .client()
        .endpoints()
        .unwrap()
        .into_iter()
        .find(|e| e.ips[0] == c.ip("web"))
        .unwrap()
        .identity;
    assert!(
        rules.iter().any(|r| r.subject == web_id && r.policy == 1),
        "web's rules carry policy number 1: {rules:?}"
    );

    // Applying the same text again changes nothing.
    let before = c.label_maps();
    let writes = c.label_writes();
    let out = c.apply(&np("default", "web", WEB_FROM_CLIENT_80));
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(c.label_writes(), writes);

    // An edit: TCP 80 becomes 80-81 and UDP 80. A client hammering TCP 80
    // through the edit never fails (the new entries are in before the old
    // ones go).
    let edited = "podSelector: {matchLabels: {app: web}}\ningress:\n- from:\n  - podSelector: {matchLabels: {app: client}}\n  ports:\n  - {port: 80, endPort: 81, protocol: TCP}\n  - {port: 80, protocol: UDP}";
    let stop = AtomicBool::new(false);
    let (tried, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let listener = c.listener("web", 80);
    listener.set_nonblocking(true).unwrap();
    std::thread::scope(|s| {
        // Accepted (and closed), so that the backlog never fills.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if listener.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                tried.fetch_add(1, Ordering::Relaxed);
                if !c.tcp("client", "web", 80) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let out = c.apply(&np("default", "web", edited));
        assert!(out.contains("NetworkPolicy default/web changed"), "{out}");
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
    });
    assert!(tried.load(Ordering::Relaxed) > 3);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "connections failed during the edit"
    );
    assert!(
        c.tcp("client", "web", 81) && c.udp("client", "web"),
        "the edit is enforced"
    );
    assert!(!c.tcp("other", "web", 81));
    assert_ne!(c.label_maps(), before);

    // A bad document: refused, naming it and the field; nothing changes.
    let before = c.label_maps();
    let bad = format!(
        "{}---\n{}",
        np("default", "fine", "podSelector: {}\npolicyTypes: [Ingress]"),
        np(
            "default",
            "broken",
            "podSelector: {matchExpressions: [{key: app, operator: Equals, values: [x]}]}"
        )
    );
    let (code, out, err) = c.apply_unchecked(&bad);
    assert_eq!(code, Some(2), "bad input: {out}{err}");
    assert!(
        err.contains("document 2") && err.contains("default/broken") && err.contains("operator"),
        "{err}"
    );
    assert_eq!(c.label_maps(), before, "nothing of the text applied");
    assert_eq!(c.agent.client().policies().unwrap().len(), 1);

    // A restart: the policy stays enforced, the maps are not rewritten.
    let writes = c.label_writes();
    assert!(c.agent.stop());
    c.agent.restart();
    assert_eq!(c.label_maps(), before, "the same entries after the restart");
    assert_eq!(
        c.label_writes(),
        writes,
        "no label map write at start:\n{}",
        c.agent.log_text()
    );
    assert!(
        c.tcp("client", "web", 81) && !c.tcp("other", "web", 80),
        "still enforced"
    );

    // A new pod with a known label set: no label map write.
    c.pod("client2", "default", &[("app", "client")]);
    assert_eq!(c.label_writes(), writes, "a known label set writes nothing");
    assert!(c.tcp("client2", "web", 80));

    // Deleted: unrestricted again.
    let (code, out, err) = c.policyctl(&["delete", "networkpolicy", "default/web"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("deleted"), "{out}");
    assert!(
        c.tcp("other", "web", 80) && c.udp("other", "web"),
        "unrestricted again"
    );
    assert!(c.agent.client().policies().unwrap().is_empty());
    assert!(
        c.label_maps().0.is_empty(),
        "no rule left: {:?}",
        c.label_maps().0
    );
}

#[test]
fn the_node_is_always_allowed_both_ways_with_an_isolated_pod() {
    require_root!();
    let mut c = Cluster::new("agpolhost", "10.13.42.0/24", &[]);
    c.pod("web", "default", &[("app", "web")]);
    c.pod("other", "default", &[("app", "other")]);
    // The node's own address, registered as the host (identity 1).
    let node_ip = "10.13.42.254";
    c.node
        .ns
        .ip(&["addr", "add", &format!("{node_ip}/32"), "dev", "lo"]);
    let (code, _, err) = cli(
        &c.node,
        &c.agent.socket,
        "endpointctl",
        &["add", "--ip", node_ip, "--identity", "1"],
    );
    assert_eq!(code, Some(0), "{err}");
    c.apply(&np(
        "default",
        "isolate-web",
        "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Ingress, Egress]",
    ));
    let web = c.ip("web").to_string();
    assert!(!c.tcp("other", "web", 80), "web takes nothing from pods");
    assert!(!c.tcp("web", "other", 80), "web sends nothing to pods");
    let node_ping = |dst: &str, src: &str| {
        c.node
            .ns
            .command("ping")
            .args(["-c", "1", "-W", "1", "-q", "-I", src, dst])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(node_ping(&web, node_ip), "node -> web (and its reply) allowed");
    let (web_pod, _) = &c.pods["web"];
    assert!(web_pod.ns.ping(node_ip, 1), "web -> node (and its reply) allowed");
    let addr = SocketAddr::from((node_ip.parse::<Ipv4Addr>().unwrap(), 8080));
    let listener = c.node.ns.run_in(|| TcpListener::bind(addr)).unwrap();
    assert!(
        web_pod
            .ns
            .run_in(|| TcpStream::connect_timeout(&addr, TIMEOUT))
            .is_ok(),
        "web -> node TCP"
    );
    drop(listener);
}

#[test]
fn an_ip_block_with_except_matches_real_pods_by_address() {
    require_root!();
    let mut c = Cluster::new("agpolcidr", "10.13.43.0/24", &[]);
    c.pod("web", "default", &[("app", "web")]);
    let in_block = c.pod("c1", "default", &[("app", "c1")]);
    let excepted = c.pod("c2", "default", &[("app", "c2")]);
    let spec = format!(
        "podSelector: {{matchLabels: {{app: web}}}}\ningress:\n- from:\n  - ipBlock: {{cidr: 10.13.43.0/24, except: [{excepted}/32]}}"
    );
    assert!(!c.ip("web").is_unspecified() && in_block != excepted);
    c.apply(&np("default", "web-from-block", &spec));
    assert!(c.tcp("c1", "web", 80), "c1 is in the block");
    assert!(!c.tcp("c2", "web", 80), "c2 is excepted");
    // The CIDR identities got prefix entries of the agent's own.
    let prefixes = c.maps().prefixes.list().unwrap();
    assert!(!prefixes.is_empty(), "prefix entries for the block's parts");
    // Deleting restores c2.
    c.policyctl(&["delete", "networkpolicy", "default/web-from-block"]);
    assert!(c.tcp("c2", "web", 80));

    // A prefix with a hand entry is not taken over: refused, nothing changed.
    let (code, _, err) = cli(
        &c.node,
        &c.agent.socket,
        "endpointctl",
        &["add", "--cidr", "192.0.2.0/24", "--identity", "3000"],
    );
    assert_eq!(code, Some(0), "{err}");
    let before = c.label_maps();
    let (code, out, err) = c.apply_unchecked(&np(
        "default",
        "to-doc-net",
        "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {cidr: 192.0.2.0/24}",
    ));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("192.0.2.0/24") && err.contains("hand"), "{err}");
    assert_eq!(c.label_maps(), before);
    assert!(c.agent.client().policies().unwrap().is_empty());
}

#[test]
fn with_policy_enforcement_never_policies_are_kept_but_not_enforced() {
    require_root!();
    let mut c = Cluster::new("agpolnever", "10.13.50.0/24", &["--policy-enforcement", "never"]);
    c.pod("web", "default", &[("app", "web")]);
    c.pod("other", "default", &[("app", "other")]);
    c.apply(&np("default", "web", WEB_FROM_CLIENT_80));
    assert!(
        c.tcp("other", "web", 80) && c.tcp("other", "web", 81),
        "nothing enforced"
    );
    assert_eq!(
        c.agent.client().policies().unwrap().len(),
        1,
        "but the policy is kept"
    );
    assert!(c.label_maps().0.is_empty(), "no rule written");
}

#[test]
fn selector_rules_from_the_command_line_are_idempotent_and_removed_by_deny() {
    require_root!();
    let mut c = Cluster::new("agpolsel", "10.13.44.0/24", &["--policy-enforcement", "always"]);
    c.pod("fe", "default", &[("app", "frontend")]);
    c.pod("be", "default", &[("app", "backend")]);
    assert!(!c.tcp("fe", "be", 80), "always: nothing without a rule");
    let args = [
        "allow",
        "--src",
        "app=frontend",
        "--dst",
        "app=backend",
        "--port",
        "80",
    ];
    let (code, out, err) = c.policyctl(&args);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("created"), "{out}");
    assert!(c.tcp("fe", "be", 80), "allowed on 80");
    assert!(!c.tcp("fe", "be", 81), "not on 81");
    assert!(!c.tcp("be", "fe", 80), "one way");
    let (_, out, _) = c.policyctl(&args);
    assert!(out.contains("unchanged"), "allow is idempotent: {out}");
    assert_eq!(c.agent.client().policies().unwrap().len(), 1);
    let mut deny = args;
    deny[0] = "deny";
    let (code, out, _) = c.policyctl(&deny);
    assert_eq!(code, Some(0));
    assert!(out.contains("deleted"), "{out}");
    assert!(!c.tcp("fe", "be", 80), "removed");
    // Mixed forms are refused; the numeric form is the plan's.
    let (code, _, err) = c.policyctl(&["allow", "--src", "100", "--dst", "app=x"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn policyctl_without_an_agent_exits_7_and_changes_nothing() {
    require_root!();
    let node = Node::new("agpolnone");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, np("default", "x", "podSelector: {}")).unwrap();
    let socket = dir.path().join("nobody.sock");
    for args in [
        vec!["apply", "-f", file.to_str().unwrap()],
        vec!["get", "policies"],
        vec!["delete", "--all"],
        vec!["allow", "--src", "a=b", "--dst", "c=d"],
    ] {
        let (code, _, err) = cli(&node, &socket, "policyctl", &args);
        assert_eq!(code, Some(7), "{args:?}: {err}");
        assert!(err.contains("unreachable"), "{err}");
    }
    assert!(
        !ebpfcni::PinnedMap::LabelRules.path(node.pins.path()).exists(),
        "nothing was created: policyctl went no further than the agent's socket"
    );
}

/// The Kubernetes e2e suite's model, 2x2: namespaces x and y, pods a and b
/// (labels `pod: a|b`), each serving TCP 80 and 81.
fn model(tag: &str, cidr: &str) -> Cluster {
    let mut c = Cluster::new(tag, cidr, &[]);
    for ns in ["x", "y"] {
        for pod in ["a", "b"] {
            c.pod(&format!("{ns}/{pod}"), ns, &[("pod", pod)]);
        }
    }
    c
}

/// Every pair but those in `denied` (from, to) reaches on `port`.
fn expect(c: &Cluster, port: u16, denied: &[(&str, &str)]) {
    let names: Vec<String> = c.pods.keys().cloned().collect();
    let want: BTreeSet<(String, String)> = names
        .iter()
        .flat_map(|a| names.iter().map(move |b| (a.clone(), b.clone())))
        .filter(|(a, b)| a != b && !denied.iter().any(|(x, y)| x == a && y == b))
        .collect();
    let got = c.matrix(port);
    assert_eq!(
        got,
        want,
        "port {port}: reachability differs (missing: {:?}, unexpected: {:?})",
        want.difference(&got).collect::<Vec<_>>(),
        got.difference(&want).collect::<Vec<_>>()
    );
}

/// should support a 'default-deny-ingress' policy
#[test]
fn default_deny_ingress() {
    require_root!();
    let c = model("e2eddi", "10.13.45.0/24");
    c.apply(&np(
        "x",
        "deny-ingress",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress: []",
    ));
    let denied = [
        ("x/b", "x/a"),
        ("y/a", "x/a"),
        ("y/b", "x/a"),
        ("x/a", "x/b"),
        ("y/a", "x/b"),
        ("y/b", "x/b"),
    ];
    expect(&c, 80, &denied);
}

/// should enforce policy to allow traffic from pods within server namespace based on PodSelector
#[test]
fn allow_from_pods_within_namespace_by_pod_selector() {
    require_root!();
    let c = model("e2eps", "10.13.46.0/24");
    c.apply(&np(
        "x",
        "x-a-allows-x-b",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}",
    ));
    expect(&c, 80, &[("y/a", "x/a"), ("y/b", "x/a")]);
}

/// should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector
#[test]
fn allow_only_from_a_different_namespace_by_namespace_selector() {
    require_root!();
    let c = model("e2ens", "10.13.47.0/24");
    c.apply(&np(
        "x",
        "allow-client-a-via-ns-selector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}",
    ));
    expect(&c, 80, &[("x/b", "x/a")]);
}

/// should enforce policy based on Ports
#[test]
fn ports() {
    require_root!();
    let c = model("e2eports", "10.13.48.0/24");
    c.apply(&np(
        "x",
        "allow-client-a-via-ns-selector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}\n  ports:\n  - {port: 81, protocol: TCP}",
    ));
    expect(&c, 81, &[("x/b", "x/a")]);
    expect(&c, 80, &[("x/b", "x/a"), ("y/a", "x/a"), ("y/b", "x/a")]);
}

/// should deny egress from all pods in a namespace
#[test]
fn deny_egress_from_all_pods_in_a_namespace() {
    require_root!();
    let c = model("e2edeg", "10.13.49.0/24");
    c.apply(&np(
        "x",
        "deny-egress-ns-x",
        "podSelector: {}\npolicyTypes: [Egress]\negress: []",
    ));
    let denied = [
        ("x/a", "x/b"),
        ("x/a", "y/a"),
        ("x/a", "y/b"),
        ("x/b", "x/a"),
        ("x/b", "y/a"),
        ("x/b", "y/b"),
    ];
    expect(&c, 80, &denied);
}

#[test]
fn a_cilium_deny_rule_wins_over_an_allow_and_survives_a_kill_9() {
    require_root!();
    let mut c = Cluster::new("agpolcnp", "10.13.51.0/24", &[]);
    c.pod("web", "default", &[("app", "web")]);
    c.pod("client", "default", &[("app", "client")]);
    c.pod("other", "default", &[("app", "other")]);
    let cnp = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: web\n  namespace: default\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress:\n  - fromEndpoints: [{}]\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: other}}]\n";
    let out = c.apply(cnp);
    assert!(out.contains("CiliumNetworkPolicy default/web created"), "{out}");
    assert!(
        c.tcp("client", "web", 80) && c.udp("client", "web"),
        "allowed by the allow rule"
    );
    assert!(
        !c.tcp("other", "web", 80) && !c.udp("other", "web"),
        "the deny rule wins"
    );
    assert!(c.maps().config.label_deny().unwrap(), "deny rules are looked at");
    let before = c.label_maps();
    let writes = c.label_writes();
    c.agent.kill9();
    c.agent.restart();
    assert_eq!(c.label_maps(), before, "kill -9 and restart: the same entries");
    assert_eq!(c.label_writes(), writes, "and no write");
    assert!(!c.tcp("other", "web", 80) && c.tcp("client", "web", 80));
    let (code, _, err) = c.policyctl(&["delete", "--all"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(c.tcp("other", "web", 80), "unrestricted again");
    assert!(!c.maps().config.label_deny().unwrap(), "no deny rule left");
}
