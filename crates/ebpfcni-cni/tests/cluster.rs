//! Two nodes (namespaces on a bridge of their own), an agent on each with
//! `--etcd` (etcd on the bridge), pods added through the plugin: a pod on
//! n1 reaches a pod on n2 under label identities both nodes share, and is
//! denied where the receiver has no rule; a NetworkPolicy applied on n1
//! (written to etcd) between pods of different nodes, enforced by both
//! (each node's compiler knows the other node's identities from etcd).

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{cli, pod_ip, Node, Pod};
use ebpfcni::{Identity, Maps, PolicyRule, Stored};
use ebpfcni_testutil::{require_root, tools_present, AgentProcess, EtcdProcess, Fabric, ETCD_BIN};
use serde_json::{json, Value};

fn agent_config(node: &Node, agent: &AgentProcess, app: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": node.network,
        "type": "ebpfcni",
        "pinDir": node.pins.path(),
        "agent": agent.socket,
        "args": { "cni": { "labels": [{ "key": "app", "value": app }] } },
    })
}

fn identity_of(maps: &Maps, ip: &str) -> Option<u32> {
    maps.endpoints
        .get(ip.parse().unwrap())
        .unwrap()
        .and_then(Stored::valid)
        .map(Identity::get)
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ping_once(pod: &Pod, ip: &str) -> bool {
    pod.ns
        .command("ping")
        .args(["-c", "1", "-W", "1", "-q", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn start_agent(node: &Node, dir: &Path, url: &str, node_ip: &str, extra: &[&str]) -> AgentProcess {
    let mut flags = vec![
        "--runtime",
        "none",
        "--etcd",
        url,
        "--node-ip",
        node_ip,
        "--cluster-cidr",
        "10.20.0.0/16",
    ];
    flags.extend_from_slice(extra);
    AgentProcess::start(&node.ns, node.pins.path(), dir, &flags)
}

#[test]
fn a_pod_on_n1_reaches_a_pod_on_n2_under_shared_identities() {
    require_root!();
    if !tools_present(
        "a_pod_on_n1_reaches_a_pod_on_n2_under_shared_identities",
        &[ETCD_BIN],
    ) {
        return;
    }
    let fabric = Fabric::new(0);
    let (n1, n2) = (Node::new("cln1"), Node::new("cln2"));
    fabric.attach(&n1.ns, 0);
    fabric.attach(&n2.ns, 1);
    let mut etcd = EtcdProcess::start_in(&fabric.fabric.path(), Fabric::fabric_ip());
    let url = etcd.url();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Every identity isolated (label policy knows the other node's
    // identities): only the pair rules below allow.
    let always = ["--policy-enforcement", "always"];
    let a1 = start_agent(&n1, d1.path(), &url, "10.0.0.11", &always);
    let mut a2 = start_agent(&n2, d2.path(), &url, "10.0.0.12", &always);

    let (web, db) = (Pod::new("clweb"), Pod::new("cldb"));
    let web_ip = pod_ip(&n1.add(&agent_config(&n1, &a1, "web"), &web).ok());
    let db_ip = pod_ip(&n2.add(&agent_config(&n2, &a2, "db"), &db).ok());
    let (maps1, maps2) = (
        Maps::open(n1.pins.path()).unwrap(),
        Maps::open(n2.pins.path()).unwrap(),
    );
    let (id_web, id_db) = (
        identity_of(&maps1, &web_ip).unwrap(),
        identity_of(&maps2, &db_ip).unwrap(),
    );
    wait_until("each node knows the other's pod", || {
        identity_of(&maps1, &db_ip) == Some(id_db) && identity_of(&maps2, &web_ip) == Some(id_web)
    });

    // No rule on either node: dropped.
    assert!(!ping_once(&web, &db_ip), "web -> db without a rule");
    let (w, d) = (Identity::new(id_web).unwrap(), Identity::new(id_db).unwrap());
    let allow = |maps: &Maps| {
        maps.policy.allow(PolicyRule::new(w, d)).unwrap();
        maps.policy.allow(PolicyRule::new(d, w)).unwrap();
    };
    // Rules on the receiver (n2) only: the sender's egress (n1) drops it.
    allow(&maps2);
    assert!(!ping_once(&web, &db_ip), "n1's egress has no rule");
    // web <-> db allowed on both nodes: the ping crosses the fabric.
    allow(&maps1);
    assert!(web.ns.ping(&db_ip, 2), "web on n1 -> db on n2 allowed on both");
    // etcd dies, n2's agent is killed and restarted meanwhile: the maps
    // are untouched, the verdicts stay.
    etcd.kill9();
    assert!(web.ns.ping(&db_ip, 2), "allowed while etcd is down");
    a2.kill9();
    assert!(web.ns.ping(&db_ip, 1), "allowed while n2's agent is down");
    a2.restart();
    assert!(
        web.ns.ping(&db_ip, 2),
        "allowed after n2's agent restarted on its cache"
    );
    assert_eq!(identity_of(&maps1, &db_ip), Some(id_db));
    assert_eq!(identity_of(&maps2, &web_ip), Some(id_web));
    etcd.restart();
    // The receiver (n2) withdraws its rule: its ingress drops it.
    maps2.policy.revoke(PolicyRule::new(w, d)).unwrap();
    assert!(!ping_once(&web, &db_ip), "n2's ingress has no rule");
    n1.del(&agent_config(&n1, &a1, "web"), &web).ok();
    n2.del(&agent_config(&n2, &a2, "db"), &db).ok();
}

const BACKEND_FROM_FRONTEND: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: backend-from-frontend
  namespace: default
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: frontend}}
    ports:
    - {port: 8080, protocol: TCP}
";

fn tcp_opens(from: &Pod, to: SocketAddr) -> bool {
    from.ns
        .run_in(|| TcpStream::connect_timeout(&to, Duration::from_millis(600)))
        .is_ok()
}

/// `policyctl` through `agent`'s socket with `yaml` in a file: must succeed.
fn policyctl(node: &Node, agent: &AgentProcess, dir: &Path, verb: &str, yaml: &str) {
    let file = dir.join("policy.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (code, out, err) = cli(
        node,
        &agent.socket,
        "policyctl",
        &[verb, "-f", file.to_str().unwrap()],
    );
    assert_eq!(
        code,
        Some(0),
        "policyctl {verb}: {out}{err}\n{}",
        agent.log_text()
    );
}

#[test]
fn a_network_policy_between_pods_of_two_nodes_is_enforced_by_both() {
    require_root!();
    if !tools_present(
        "a_network_policy_between_pods_of_two_nodes_is_enforced_by_both",
        &[ETCD_BIN],
    ) {
        return;
    }
    let fabric = Fabric::new(0);
    let (n1, n2) = (Node::new("cnp1"), Node::new("cnp2"));
    fabric.attach(&n1.ns, 0);
    fabric.attach(&n2.ns, 1);
    let etcd = EtcdProcess::start_in(&fabric.fabric.path(), Fabric::fabric_ip());
    let url = etcd.url();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Kubernetes' default: a pod selected by no policy is unrestricted.
    let a1 = start_agent(&n1, d1.path(), &url, "10.0.0.11", &[]);
    let a2 = start_agent(&n2, d2.path(), &url, "10.0.0.12", &[]);

    let (frontend, other, backend) = (Pod::new("cnpfe"), Pod::new("cnpot"), Pod::new("cnpbe"));
    let conf_fe = agent_config(&n1, &a1, "frontend");
    let conf_other = agent_config(&n1, &a1, "other");
    let conf_be = agent_config(&n2, &a2, "backend");
    let fe_ip = pod_ip(&n1.add(&conf_fe, &frontend).ok());
    let other_ip = pod_ip(&n1.add(&conf_other, &other).ok());
    let be_ip = pod_ip(&n2.add(&conf_be, &backend).ok());
    let be_ip4: Ipv4Addr = be_ip.parse().unwrap();
    let _listener = backend
        .ns
        .run_in(|| TcpListener::bind((be_ip4, 8080)))
        .expect("listen on the backend");
    let to_backend = SocketAddr::from((be_ip4, 8080));
    let (maps1, maps2) = (
        Maps::open(n1.pins.path()).unwrap(),
        Maps::open(n2.pins.path()).unwrap(),
    );
    let (id_fe, id_other, id_be) = (
        identity_of(&maps1, &fe_ip).unwrap(),
        identity_of(&maps1, &other_ip).unwrap(),
        identity_of(&maps2, &be_ip).unwrap(),
    );
    // Each node has the other's pods, and their identities under label
    // policy (MANAGED: learnt from etcd, not from a pod of its own).
    wait_until("each node knows the other's pods and their identities", || {
        let (i1, i2) = (
            maps1.labels.isolations().unwrap(),
            maps2.labels.isolations().unwrap(),
        );
        identity_of(&maps1, &be_ip) == Some(id_be)
            && identity_of(&maps2, &fe_ip) == Some(id_fe)
            && identity_of(&maps2, &other_ip) == Some(id_other)
            && i1.contains_key(&id_be)
            && i2.contains_key(&id_fe)
            && i2.contains_key(&id_other)
    });
    assert!(tcp_opens(&frontend, to_backend), "no policy: frontend -> backend");
    assert!(tcp_opens(&other, to_backend), "no policy: other -> backend");

    // Applied on n1 only: through etcd, n2 (the receiver) enforces it too,
    // naming n1's frontend.
    policyctl(&n1, &a1, d1.path(), "apply", BACKEND_FROM_FRONTEND);
    // Returned once n1 enforces it (n1 judges the backend's ingress of
    // what its pods send, as n2 does).
    assert!(
        maps1.labels.isolations().unwrap()[&id_be].ingress,
        "apply returned before n1 enforced the policy"
    );
    wait_until("n2 isolates the backend for ingress", || {
        maps2.labels.isolations().unwrap()[&id_be].ingress
    });
    assert!(
        tcp_opens(&frontend, to_backend),
        "frontend (n1) -> backend (n2) TCP 8080 allowed\n{}",
        a2.log_text()
    );
    assert!(
        !tcp_opens(&other, to_backend),
        "other (n1) -> backend (n2) dropped"
    );
    let (code, out, _) = cli(&n2, &a2.socket, "policyctl", &["get", "policies"]);
    assert!(
        code == Some(0) && out.contains("backend-from-frontend"),
        "n2 has the policy applied on n1: {out}"
    );

    // A bad document is refused on n1 and reaches no node.
    let file = d1.path().join("bad.yaml");
    std::fs::write(
        &file,
        BACKEND_FROM_FRONTEND
            .replace("backend-from-frontend", "bad")
            .replace("app: frontend", "app: [x]"),
    )
    .unwrap();
    let (code, _, err) = cli(
        &n1,
        &a1.socket,
        "policyctl",
        &["apply", "-f", file.to_str().unwrap()],
    );
    assert_ne!(code, Some(0), "a bad document applied: {err}");
    let (_, out, _) = cli(&n2, &a2.socket, "policyctl", &["get", "policies"]);
    assert!(!out.contains(" bad "), "the bad document reached n2: {out}");

    // Deleted on n1: unrestricted again on both.
    policyctl(&n1, &a1, d1.path(), "delete", BACKEND_FROM_FRONTEND);
    wait_until("n2 no longer isolates the backend", || {
        !maps2.labels.isolations().unwrap()[&id_be].ingress
    });
    assert!(tcp_opens(&other, to_backend), "deleted: other -> backend again");
    assert!(tcp_opens(&frontend, to_backend), "deleted: frontend -> backend");

    // A selector rule from n1's command line, the same way.
    let rule = ["--src", "app=frontend", "--dst", "app=backend", "--port", "8080"];
    let run = |verb: &str| {
        let args: Vec<&str> = std::iter::once(verb).chain(rule).collect();
        let (code, out, err) = cli(&n1, &a1.socket, "policyctl", &args);
        assert_eq!(code, Some(0), "policyctl {verb}: {out}{err}");
    };
    run("allow");
    wait_until("n2 isolates the backend by the selector rule", || {
        maps2.labels.isolations().unwrap()[&id_be].ingress
    });
    assert!(tcp_opens(&frontend, to_backend), "rule: frontend -> backend");
    assert!(!tcp_opens(&other, to_backend), "rule: other -> backend dropped");
    run("deny");
    wait_until("n2 no longer has the selector rule", || {
        !maps2.labels.isolations().unwrap()[&id_be].ingress
    });
    n1.del(&conf_fe, &frontend).ok();
    n1.del(&conf_other, &other).ok();
    n2.del(&conf_be, &backend).ok();
}
