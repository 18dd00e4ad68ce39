//! Two or three nodes (namespaces on a bridge of their own), an agent on
//! each with `--etcd` (etcd on the bridge), pods added through the plugin:
//! a pod on n1 reaches a pod on n2 under label identities both nodes
//! share, and is denied where the receiver has no rule; a NetworkPolicy
//! applied on n3 (written to etcd) between pods of n1, n2 and n3, enforced
//! by every node (each node's compiler knows the other nodes' identities
//! from etcd).

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    cli, cluster_agent_config, identity_of, pod_ip, start_cluster_agent, wait_until, wait_until_within, Node,
    Pod,
};
use ebpfcni::{Identity, Maps, PolicyRule};
use ebpfcni_kvstore::{Store, DEFAULT_PREFIX};
use ebpfcni_testutil::{require_root, tools_present, AgentProcess, EtcdProcess, Fabric, ETCD_BIN};

fn tcp_opens(from: &Pod, to: SocketAddr) -> bool {
    from.ns
        .run_in(|| TcpStream::connect_timeout(&to, Duration::from_millis(600)))
        .is_ok()
}

fn ping_once(pod: &Pod, ip: &str) -> bool {
    pod.ns
        .command("ping")
        .args(["-c", "1", "-W", "1", "-q", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What etcd (in the fabric namespace) holds: every identity, every
/// endpoint.
fn etcd_contents(
    fabric: &Fabric,
    url: &str,
) -> (
    Vec<(u32, ebpfcni_kvstore::Labels)>,
    Vec<ebpfcni_kvstore::EndpointRecord>,
) {
    fabric.fabric.run_in(|| {
        // A runtime on this thread only: its connection is made in the
        // fabric namespace.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Store::connect(&[url.to_string()], DEFAULT_PREFIX).await.unwrap();
            (
                store.identities().await.unwrap(),
                store.endpoints().await.unwrap(),
            )
        })
    })
}

/// How long etcd stays dead (the "a minute").
const ETCD_DOWN: Duration = Duration::from_secs(60);

/// Two nodes under `--policy-enforcement always` with pair rules: web (n1)
/// <-> db (n2) allowed, other (n1) -> db denied. etcd is killed (-9) for a
/// minute, traffic sampled every second throughout, n2's agent killed and
/// restarted meanwhile; a pod with a known label set starts, one with a new
/// set waits with `init`; after: nothing lost or duplicated.
#[test]
fn pods_of_two_nodes_keep_their_verdicts_through_a_minute_without_etcd() {
    require_root!();
    if !tools_present(
        "pods_of_two_nodes_keep_their_verdicts_through_a_minute_without_etcd",
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
    let a1 = start_cluster_agent(&n1, d1.path(), &url, "10.0.0.11", &always);
    let mut a2 = start_cluster_agent(&n2, d2.path(), &url, "10.0.0.12", &always);

    let (web, other, db) = (Pod::new("clweb"), Pod::new("clot"), Pod::new("cldb"));
    let (conf_web, conf_other, conf_db) = (
        cluster_agent_config(&n1, &a1, "web"),
        cluster_agent_config(&n1, &a1, "other"),
        cluster_agent_config(&n2, &a2, "db"),
    );
    let web_ip = pod_ip(&n1.add(&conf_web, &web).ok());
    let other_ip = pod_ip(&n1.add(&conf_other, &other).ok());
    let db_ip = pod_ip(&n2.add(&conf_db, &db).ok());
    let db_ip4: Ipv4Addr = db_ip.parse().unwrap();
    let _listener = db
        .ns
        .run_in(|| TcpListener::bind((db_ip4, 8080)))
        .expect("listen on db");
    let to_db = SocketAddr::from((db_ip4, 8080));
    let (maps1, maps2) = (
        Maps::open(n1.pins.path()).unwrap(),
        Maps::open(n2.pins.path()).unwrap(),
    );
    let (id_web, id_other, id_db) = (
        identity_of(&maps1, &web_ip).unwrap(),
        identity_of(&maps1, &other_ip).unwrap(),
        identity_of(&maps2, &db_ip).unwrap(),
    );
    wait_until("each node knows the other's pods", || {
        identity_of(&maps1, &db_ip) == Some(id_db)
            && identity_of(&maps2, &web_ip) == Some(id_web)
            && identity_of(&maps2, &other_ip) == Some(id_other)
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
    assert!(tcp_opens(&web, to_db), "web -> db TCP allowed");
    assert!(!tcp_opens(&other, to_db), "other -> db TCP denied");

    // etcd dies for a minute. Throughout, every second: web -> db passes,
    // other -> db is dropped, both nodes' entries stay.
    etcd.kill9();
    let down = Instant::now();
    let (web2, api) = (Pod::new("clweb2"), Pod::new("clapi"));
    let conf_api = cluster_agent_config(&n1, &a1, "api");
    let (web2_ip, api_ip, samples) = std::thread::scope(|s| {
        let (pins1, pins2) = (n1.pins.path().to_path_buf(), n2.pins.path().to_path_buf());
        let (web, other) = (&web, &other);
        let (db_ip, web_ip, other_ip) = (&db_ip, &web_ip, &other_ip);
        let sampler = s.spawn(move || {
            let (maps1, maps2) = (Maps::open(&pins1).unwrap(), Maps::open(&pins2).unwrap());
            let mut samples = 0;
            let mut failures = Vec::new();
            while down.elapsed() < ETCD_DOWN {
                let second = Instant::now();
                let at = down.elapsed().as_secs();
                if !tcp_opens(web, to_db) {
                    failures.push(format!("{at} s: web -> db dropped"));
                }
                if tcp_opens(other, to_db) {
                    failures.push(format!("{at} s: other -> db passed"));
                }
                if identity_of(&maps1, db_ip) != Some(id_db)
                    || identity_of(&maps2, web_ip) != Some(id_web)
                    || identity_of(&maps2, other_ip) != Some(id_other)
                {
                    failures.push(format!("{at} s: a remote entry changed"));
                }
                samples += 1;
                std::thread::sleep(Duration::from_secs(1).saturating_sub(second.elapsed()));
            }
            (samples, failures)
        });
        // A pod with a known label set starts at once, with its number.
        let t = Instant::now();
        let web2_ip = pod_ip(&n1.add(&conf_web, &web2).ok());
        assert!(t.elapsed() < Duration::from_secs(5), "ADD took {:?}", t.elapsed());
        assert_eq!(identity_of(&maps1, &web2_ip), Some(id_web));
        // One with a new label set starts with init, and waits.
        let api_ip = pod_ip(&n1.add(&conf_api, &api).ok());
        assert_eq!(identity_of(&maps1, &api_ip), Some(5), "init while etcd is down");
        assert_eq!(carried(&maps1, &api_ip), Some(5), "its local record carries init");
        // n2's agent is killed and restarted (on its cache) meanwhile.
        a2.kill9();
        std::thread::sleep(Duration::from_secs(2));
        a2.restart();
        let (samples, failures) = sampler.join().unwrap();
        assert!(
            failures.is_empty(),
            "verdicts changed while etcd was down:\n{}",
            failures.join("\n")
        );
        assert_eq!(
            identity_of(&maps1, &api_ip),
            Some(5),
            "api waits with init while etcd is down"
        );
        (web2_ip, api_ip, samples)
    });
    assert!(samples >= 50, "only {samples} samples in {ETCD_DOWN:?}");
    eprintln!("etcd down {:?}: {samples} samples, verdicts held", down.elapsed());

    // etcd is back: api gets its number, n2 learns n1's new pods, web2
    // (a known set) reaches db as web does.
    etcd.restart();
    wait_until_within("api gets its identity", Duration::from_secs(20), || {
        identity_of(&maps1, &api_ip).is_some_and(|id| id >= 256)
    });
    let id_api = identity_of(&maps1, &api_ip).unwrap();
    assert!(![id_web, id_other, id_db].contains(&id_api));
    assert_eq!(carried(&maps1, &api_ip), Some(id_api), "and then its number");
    wait_until_within("n2 has n1's new pods", Duration::from_secs(20), || {
        identity_of(&maps2, &web2_ip) == Some(id_web) && identity_of(&maps2, &api_ip) == Some(id_api)
    });
    assert!(tcp_opens(&web2, to_db), "web2 (known set) -> db allowed");
    assert!(tcp_opens(&web, to_db), "web -> db after etcd is back");
    assert!(!tcp_opens(&other, to_db), "other -> db after etcd is back");
    assert!(!tcp_opens(&api, to_db), "api -> db: no rule");

    // Nothing lost or duplicated: one number per label set, one endpoint
    // key per pod, each with its node and identity.
    let (identities, endpoints) = etcd_contents(&fabric, &url);
    for (app, id) in [
        ("web", id_web),
        ("other", id_other),
        ("db", id_db),
        ("api", id_api),
    ] {
        let numbers: Vec<u32> = identities
            .iter()
            .filter(|(_, l)| l.get("app").map(String::as_str) == Some(app))
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(numbers, vec![id], "app={app} in etcd: {identities:?}");
    }
    assert_eq!(identities.len(), 4, "{identities:?}");
    let mut published: Vec<(String, u32, String)> = endpoints
        .iter()
        .map(|e| (e.ip.to_string(), e.identity, e.node.clone()))
        .collect();
    published.sort();
    let (s1, s2) = (n1.ns.name().to_string(), n2.ns.name().to_string());
    let mut expected = vec![
        (web_ip.clone(), id_web, s1.clone()),
        (other_ip.clone(), id_other, s1.clone()),
        (web2_ip.clone(), id_web, s1.clone()),
        (api_ip.clone(), id_api, s1.clone()),
        (db_ip.clone(), id_db, s2.clone()),
    ];
    expected.sort();
    assert_eq!(published, expected, "endpoints in etcd");

    // The receiver (n2) withdraws its rule: its ingress drops it.
    maps2.policy.revoke(PolicyRule::new(w, d)).unwrap();
    assert!(!ping_once(&web, &db_ip), "n2's ingress has no rule");
    n1.del(&conf_web, &web).ok();
    n1.del(&conf_web, &web2).ok();
    n1.del(&conf_other, &other).ok();
    n1.del(&conf_api, &api).ok();
    n2.del(&conf_db, &db).ok();
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

/// Three nodes: frontend on n1, backend on n2, other on n3; the policy is
/// applied on n3 only.
#[test]
fn a_network_policy_applied_on_one_node_is_enforced_across_three() {
    require_root!();
    if !tools_present(
        "a_network_policy_applied_on_one_node_is_enforced_across_three",
        &[ETCD_BIN],
    ) {
        return;
    }
    let fabric = Fabric::new(0);
    let (n1, n2, n3) = (Node::new("cnp1"), Node::new("cnp2"), Node::new("cnp3"));
    fabric.attach(&n1.ns, 0);
    fabric.attach(&n2.ns, 1);
    fabric.attach(&n3.ns, 2);
    let etcd = EtcdProcess::start_in(&fabric.fabric.path(), Fabric::fabric_ip());
    let url = etcd.url();
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // Kubernetes' default: a pod selected by no policy is unrestricted.
    let a1 = start_cluster_agent(&n1, d1.path(), &url, "10.0.0.11", &[]);
    let a2 = start_cluster_agent(&n2, d2.path(), &url, "10.0.0.12", &[]);
    let a3 = start_cluster_agent(&n3, d3.path(), &url, "10.0.0.13", &[]);

    let (frontend, other, backend) = (Pod::new("cnpfe"), Pod::new("cnpot"), Pod::new("cnpbe"));
    let conf_fe = cluster_agent_config(&n1, &a1, "frontend");
    let conf_other = cluster_agent_config(&n3, &a3, "other");
    let conf_be = cluster_agent_config(&n2, &a2, "backend");
    let fe_ip = pod_ip(&n1.add(&conf_fe, &frontend).ok());
    let other_ip = pod_ip(&n3.add(&conf_other, &other).ok());
    let be_ip = pod_ip(&n2.add(&conf_be, &backend).ok());
    let be_ip4: Ipv4Addr = be_ip.parse().unwrap();
    let _listener = backend
        .ns
        .run_in(|| TcpListener::bind((be_ip4, 8080)))
        .expect("listen on the backend");
    let to_backend = SocketAddr::from((be_ip4, 8080));
    let (maps1, maps2, maps3) = (
        Maps::open(n1.pins.path()).unwrap(),
        Maps::open(n2.pins.path()).unwrap(),
        Maps::open(n3.pins.path()).unwrap(),
    );
    let (id_fe, id_other, id_be) = (
        identity_of(&maps1, &fe_ip).unwrap(),
        identity_of(&maps3, &other_ip).unwrap(),
        identity_of(&maps2, &be_ip).unwrap(),
    );
    let pods = [(&fe_ip, id_fe), (&be_ip, id_be), (&other_ip, id_other)];
    // Each node has the others' pods, and their identities under label
    // policy (MANAGED: learnt from etcd, not from a pod of its own).
    wait_until("each node knows the others' pods and their identities", || {
        [&maps1, &maps2, &maps3].iter().all(|maps| {
            let isolations = maps.labels.isolations().unwrap();
            pods.iter()
                .all(|(ip, id)| identity_of(maps, ip) == Some(*id) && isolations.contains_key(id))
        })
    });
    assert!(tcp_opens(&frontend, to_backend), "no policy: frontend -> backend");
    assert!(tcp_opens(&other, to_backend), "no policy: other -> backend");

    // Applied on n3 only (where neither the backend nor the frontend
    // runs): through etcd, n2 (the receiver) enforces it, naming n1's
    // frontend, and so do n1 and n3 (senders).
    policyctl(&n3, &a3, d3.path(), "apply", BACKEND_FROM_FRONTEND);
    // Returned once n3 enforces it (n3 judges the backend's ingress of
    // what its pods send, as n2 does).
    assert!(
        maps3.labels.isolations().unwrap()[&id_be].ingress,
        "apply returned before n3 enforced the policy"
    );
    wait_until("n1 and n2 isolate the backend for ingress", || {
        maps1.labels.isolations().unwrap()[&id_be].ingress
            && maps2.labels.isolations().unwrap()[&id_be].ingress
    });
    assert!(
        tcp_opens(&frontend, to_backend),
        "frontend (n1) -> backend (n2) TCP 8080 allowed\n{}",
        a2.log_text()
    );
    assert!(
        !tcp_opens(&other, to_backend),
        "other (n3) -> backend (n2) dropped"
    );
    for (node, agent) in [(&n1, &a1), (&n2, &a2)] {
        let (code, out, _) = cli(node, &agent.socket, "policyctl", &["get", "policies"]);
        assert!(
            code == Some(0) && out.contains("backend-from-frontend"),
            "{} has the policy applied on n3: {out}",
            node.ns.name()
        );
    }

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

    // Deleted on n3: unrestricted again everywhere.
    policyctl(&n3, &a3, d3.path(), "delete", BACKEND_FROM_FRONTEND);
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
    n3.del(&conf_other, &other).ok();
    n2.del(&conf_be, &backend).ok();
}

/// The identity `ip`'s local delivery record carries (agent mode).
fn carried(maps: &Maps, ip: &str) -> Option<u32> {
    maps.local
        .carried_identity(ip.parse().unwrap())
        .unwrap()
        .map(|i| i.get())
}
