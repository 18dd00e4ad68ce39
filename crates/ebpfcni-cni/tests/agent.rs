//! Agent mode with a real `ebpfcni-agent` of each test's own: identities
//! from labels (CNI args and K8S_POD_*), the agent's IPAM, an address
//! reused by another container, the agent down at ADD and at DEL, a kill -9
//! in the middle of a storm of ADDs and DELs with traffic running through
//! it, and stores the agent must refuse.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use common::{cli, identity_of, pod_ip, Node, Outcome, Pod};
use ebpfcni::{Identity, Maps, PolicyRule};
use ebpfcni_testutil::{require_root, AgentProcess};
use serde_json::{json, Value};

/// An agent-mode config: no "ipam" (the agent leases), the container's
/// labels in args.cni.labels.
fn agent_config(node: &Node, agent: &AgentProcess, labels: &[(&str, &str)]) -> Value {
    let labels: Vec<Value> = labels
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({
        "cniVersion": "1.0.0",
        "name": node.network,
        "type": "ebpfcni",
        "pinDir": node.pins.path(),
        "agent": agent.socket,
        "args": { "cni": { "labels": labels } },
    })
}

/// The same with static IPAM giving `address` (gateway .1 of its /24).
fn static_agent_config(node: &Node, agent: &AgentProcess, labels: &[(&str, &str)], address: &str) -> Value {
    let mut conf = agent_config(node, agent, labels);
    let gateway = format!("{}.1", address.rsplit_once('.').unwrap().0);
    conf["ipam"] = json!({ "type": "static", "addresses": [{ "address": format!("{address}/24"), "gateway": gateway }] });
    conf
}

/// An agent whose every endpoint is isolated both ways
/// (`--policy-enforcement always`): these tests are about identities, and
/// check them with the plan's pair rules against a default deny (with the
/// default, Kubernetes' enforcement, pods selected by no policy are
/// unrestricted: see agent_policy.rs).
fn start_agent(node: &Node, dir: &Path, cidr: &str) -> AgentProcess {
    AgentProcess::start(
        &node.ns,
        node.pins.path(),
        dir,
        &[
            "--pod-cidr",
            cidr,
            "--runtime",
            "none",
            "--policy-enforcement",
            "always",
        ],
    )
}

fn tempdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ebpfcni-agent-{tag}-"))
        .tempdir()
        .expect("tempdir")
}

fn allow_both(maps: &Maps, a: u32, b: u32) {
    let (a, b) = (Identity::new(a).unwrap(), Identity::new(b).unwrap());
    maps.policy.allow(PolicyRule::new(a, b)).unwrap();
    maps.policy.allow(PolicyRule::new(b, a)).unwrap();
}

fn ping_once(pod: &Pod, ip: &str) -> bool {
    pod.ns
        .command("ping")
        .args(["-c", "1", "-W", "1", "-q", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn containers_get_identities_from_their_labels_and_lose_them_at_del() {
    require_root!();
    let node = Node::new("agid");
    let dir = tempdir("agid");
    let agent = start_agent(&node, dir.path(), "10.13.21.0/24");
    let (web1, web2, db) = (Pod::new("agw1"), Pod::new("agw2"), Pod::new("agdb"));
    let web = agent_config(&node, &agent, &[("app", "web"), ("tier", "front")]);
    // The same labels in another order: the same set.
    let web_reordered = agent_config(&node, &agent, &[("tier", "front"), ("app", "web")]);
    let dbc = agent_config(&node, &agent, &[("app", "db")]);
    let r1 = node.add(&web, &web1).ok();
    let r2 = node.add(&web_reordered, &web2).ok();
    let r3 = node.add(&dbc, &db).ok();
    let (ip1, ip2, ip3) = (pod_ip(&r1), pod_ip(&r2), pod_ip(&r3));
    for ip in [&ip1, &ip2, &ip3] {
        assert!(ip.starts_with("10.13.21."), "leased from --pod-cidr: {ip}");
    }
    assert_eq!(r1["ips"][0]["gateway"], "10.13.21.1");

    let maps = Maps::open(node.pins.path()).unwrap();
    let (id_web, id_web2, id_db) = (
        identity_of(&maps, &ip1).expect("web1 has an identity"),
        identity_of(&maps, &ip2).expect("web2 has an identity"),
        identity_of(&maps, &ip3).expect("db has an identity"),
    );
    assert_eq!(id_web, id_web2, "the same labels share an identity");
    assert_ne!(id_web, id_db);
    assert!(id_web >= 256 && id_db >= 256, "label identities start at 256");
    let endpoints = agent.client().endpoints().unwrap();
    let web_ep = endpoints.iter().find(|e| e.container_id == web1.id).unwrap();
    assert_eq!(web_ep.labels.get("app").map(String::as_str), Some("web"));
    // The record behind web1's host veth carries its identity: from-pod
    // takes the source's from there instead of looking it up.
    assert_eq!(
        maps.interfaces
            .carried_identity(web_ep.host_ifindex)
            .unwrap()
            .map(|i| i.get()),
        Some(id_web)
    );
    assert_eq!(
        maps.interfaces.get(web_ep.host_ifindex).unwrap(),
        Some(web_ep.ips.clone())
    );
    // So does its local delivery record (the plugin's, after the agent
    // wrote the identity): from-pod takes a destination's from there.
    for (ip, id) in [(&ip1, id_web), (&ip2, id_web), (&ip3, id_db)] {
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert_eq!(
            maps.local.carried_identity(ip).unwrap().map(|i| i.get()),
            Some(id),
            "{ip}"
        );
    }
    assert_eq!(
        web_ep
            .labels
            .get("io.kubernetes.pod.namespace")
            .map(String::as_str),
        Some("default"),
        "a pod without a namespace is in default"
    );

    // Policy written for the identities: web <-> db passes, web -> web not.
    allow_both(&maps, id_web, id_db);
    assert!(web1.ns.ping(&ip3, 2), "web1 -> db allowed");
    assert!(!ping_once(&web1, &ip2), "web1 -> web2 has no rule");

    // DEL: the address has no identity any more, and the agent forgets it.
    node.del(&dbc, &db).ok();
    assert_eq!(identity_of(&maps, &ip3), None);
    assert!(agent
        .client()
        .endpoints()
        .unwrap()
        .iter()
        .all(|e| e.container_id != db.id));
    let ids = agent.client().identities().unwrap();
    let db_id = ids
        .iter()
        .find(|i| i.id == id_db)
        .expect("identities stay allocated");
    assert_eq!(db_id.endpoints, 0);
    assert!(ids
        .iter()
        .any(|i| i.reserved.as_deref() == Some("init") && i.id == 5));
    node.del(&web, &web1).ok();
    node.del(&web, &web2).ok();
    assert!(agent.client().endpoints().unwrap().is_empty());
}

#[test]
fn an_address_reused_by_another_container_has_its_identity_from_the_first_packet() {
    require_root!();
    let node = Node::new("agreuse");
    let dir = tempdir("agreuse");
    let agent = start_agent(&node, dir.path(), "10.13.22.0/24");
    let (web, db, other) = (Pod::new("agrw"), Pod::new("agrd"), Pod::new("agro"));
    // Delivered locally: the destination's identity is the one its local
    // record carries, which must be the new container's from its first
    // packet on, never db's.
    let redirect = |mut conf: Value| {
        conf["localDelivery"] = json!("redirect");
        conf
    };
    let webc = redirect(static_agent_config(
        &node,
        &agent,
        &[("app", "web")],
        "10.13.22.2",
    ));
    let dbc = redirect(static_agent_config(&node, &agent, &[("app", "db")], "10.13.22.3"));
    let otherc = redirect(static_agent_config(
        &node,
        &agent,
        &[("app", "other")],
        "10.13.22.3",
    ));
    node.add(&webc, &web).ok();
    node.add(&dbc, &db).ok();
    let maps = Maps::open(node.pins.path()).unwrap();
    let (id_web, id_db) = (
        identity_of(&maps, "10.13.22.2").unwrap(),
        identity_of(&maps, "10.13.22.3").unwrap(),
    );
    allow_both(&maps, id_web, id_db);
    assert!(web.ns.ping("10.13.22.3", 2), "web -> db allowed");
    node.del(&dbc, &db).ok();
    node.add(&otherc, &other).ok();
    let id_other = identity_of(&maps, "10.13.22.3").unwrap();
    assert_ne!(id_other, id_db);
    assert_eq!(
        maps.local
            .carried_identity("10.13.22.3".parse().unwrap())
            .unwrap()
            .map(|i| i.get()),
        Some(id_other)
    );
    assert!(
        !ping_once(&web, "10.13.22.3"),
        "the new container on db's address must not inherit db's permissions"
    );
    allow_both(&maps, id_web, id_other);
    assert!(web.ns.ping("10.13.22.3", 2), "once allowed, it answers");
    node.del(&otherc, &other).ok();
    node.del(&webc, &web).ok();
}

#[test]
fn kubernetes_namespaces_are_part_of_the_identity_and_pod_names_are_not() {
    require_root!();
    let node = Node::new("agk8s");
    let dir = tempdir("agk8s");
    let agent = start_agent(&node, dir.path(), "10.13.23.0/24");
    let conf = agent_config(&node, &agent, &[("app", "web")]);
    let add = |pod: &Pod, args: &str| -> Outcome {
        node.exec(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", &pod.id),
                ("CNI_NETNS", &pod.ns.path_string()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", common::CNI_PATH),
                ("CNI_ARGS", args),
            ],
            conf.to_string().as_bytes(),
        )
    };
    let (a, b, c) = (Pod::new("agka"), Pod::new("agkb"), Pod::new("agkc"));
    add(&a, "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1").ok();
    add(&b, "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-2").ok();
    add(&c, "IgnoreUnknown=1;K8S_POD_NAME=web-3").ok();
    let endpoints = agent.client().endpoints().unwrap();
    let by_id: BTreeMap<&str, &ebpfcni_api::Endpoint> =
        endpoints.iter().map(|e| (e.container_id.as_str(), e)).collect();
    let (ea, eb, ec) = (by_id[a.id.as_str()], by_id[b.id.as_str()], by_id[c.id.as_str()]);
    assert_eq!(ea.labels["io.kubernetes.pod.namespace"], "prod");
    assert_eq!(ea.labels["io.kubernetes.pod.name"], "web-1");
    assert!(!ea.identity_labels.contains_key("io.kubernetes.pod.name"));
    assert_eq!(ea.identity, eb.identity, "pod names do not split identities");
    assert_ne!(ea.identity, ec.identity, "namespaces do");
    assert_eq!(ec.labels["io.kubernetes.pod.namespace"], "default");

    // A container cannot claim a namespace or a reserved key by its labels.
    let d = Pod::new("agkd");
    let links_before = node.links();
    let forged = agent_config(&node, &agent, &[("io.kubernetes.pod.namespace", "kube-system")]);
    let msg = node.add(&forged, &d).err(109);
    assert!(msg.contains("io.kubernetes.pod.namespace"), "{msg}");
    let reserved = agent_config(&node, &agent, &[("ebpfcni.io/identity", "1")]);
    let msg = node.add(&reserved, &d).err(109);
    assert!(msg.contains("reserved"), "{msg}");
    assert_eq!(node.links(), links_before, "a refused ADD leaves no veth behind");
}

#[test]
fn an_unreachable_agent_fails_add_cleanly_and_del_is_queued_until_it_is_back() {
    require_root!();
    let node = Node::new("agdown");
    let dir = tempdir("agdown");
    let mut agent = start_agent(&node, dir.path(), "10.13.24.0/24");
    let conf = agent_config(&node, &agent, &[("app", "web")]);
    let pod = Pod::new("agdp");
    let result = node.add(&conf, &pod).ok();
    let ip = pod_ip(&result);
    let maps = Maps::open(node.pins.path()).unwrap();
    let id = identity_of(&maps, &ip).unwrap();

    assert!(
        agent.stop(),
        "SIGTERM stops the agent cleanly:\n{}",
        agent.log_text()
    );
    // ADD with the agent down: code 11, nothing left behind.
    let links_before = node.links();
    let late = Pod::new("agdl");
    let msg = node.add(&conf, &late).err(11);
    assert!(msg.contains("unreachable"), "{msg}");
    assert_eq!(node.links(), links_before, "no veth left behind");
    assert!(!late.ns.links().iter().any(|l| l == "eth0"));

    // DEL with the agent down succeeds; the identity stays until the agent
    // is back (it hands out no address before the queue is done).
    node.del(&conf, &pod).ok();
    let queue = ebpfcni_api::delete_queue_dir(&agent.socket);
    assert_eq!(
        std::fs::read_dir(&queue).unwrap().count(),
        1,
        "one deletion queued"
    );
    assert_eq!(identity_of(&maps, &ip), Some(id));
    agent.restart();
    assert_eq!(
        identity_of(&maps, &ip),
        None,
        "the queued deletion is carried out at start"
    );
    assert_eq!(std::fs::read_dir(&queue).unwrap().count(), 0);
    assert!(agent.client().endpoints().unwrap().is_empty());
}

#[test]
fn kill_9_in_a_storm_of_adds_and_dels_loses_nothing_and_drops_no_packet() {
    require_root!();
    let node = Node::new("agstorm");
    let dir = tempdir("agstorm");
    let mut agent = start_agent(&node, dir.path(), "10.13.25.0/24");
    let (a, b) = (Pod::new("agsa"), Pod::new("agsb"));
    let conf_a = agent_config(&node, &agent, &[("app", "a")]);
    let conf_b = agent_config(&node, &agent, &[("app", "b")]);
    let ip_b = pod_ip(&node.add(&conf_b, &b).ok());
    let ip_a = pod_ip(&node.add(&conf_a, &a).ok());
    let maps = Maps::open(node.pins.path()).unwrap();
    allow_both(
        &maps,
        identity_of(&maps, &ip_a).unwrap(),
        identity_of(&maps, &ip_b).unwrap(),
    );
    assert!(a.ns.ping(&ip_b, 1));

    // 200 pings at 20 ms run through the whole storm and the restart.
    let ping =
        a.ns.command("ping")
            .args(["-c", "200", "-i", "0.02", "-W", "1", "-q", &ip_b])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("ping");
    let churn: Vec<Pod> = (0..24).map(|i| Pod::new(&format!("agc{i}"))).collect();
    let conf_c = agent_config(&node, &agent, &[("app", "churn")]);
    std::thread::scope(|s| {
        for chunk in churn.chunks(6) {
            let (node, conf_c) = (&node, &conf_c);
            s.spawn(move || {
                for pod in chunk {
                    // Either outcome is fine while the agent is down; DEL
                    // always succeeds (queued when it must be).
                    let _ = node.add(conf_c, pod);
                    node.del(conf_c, pod).ok();
                    let _ = node.add(conf_c, pod);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        agent.kill9();
        std::thread::sleep(Duration::from_millis(500));
        agent.restart();
    });
    let out = ping.wait_with_output().expect("ping ends");
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        summary.contains(" 0% packet loss"),
        "ping lost packets through the restart: {summary}"
    );

    // Store, maps and the node agree: every endpoint the agent has is in
    // the maps as it says, behind a veth that exists; every pod address in
    // the maps is one of its endpoints'; no address has two containers.
    let endpoints = agent.client().endpoints().unwrap();
    let mut owners = BTreeMap::new();
    for e in &endpoints {
        for ip in &e.ips {
            assert!(owners.insert(*ip, e.container_id.clone()).is_none(), "{ip} twice");
            assert_eq!(identity_of(&maps, &ip.to_string()), Some(e.identity), "{ip}");
        }
        assert_eq!(
            maps.interfaces.get(e.host_ifindex).unwrap().as_deref(),
            Some(e.ips.as_slice())
        );
        assert!(node.links().contains(&e.host_veth), "{} exists", e.host_veth);
    }
    let cidr: ipnet::Ipv4Net = "10.13.25.0/24".parse().unwrap();
    for (ip, _) in maps.endpoints.list().unwrap() {
        if cidr.contains(&ip) {
            assert!(owners.contains_key(&ip), "{ip} in the map but no endpoint's");
        }
    }
    // Every churn pod that is set up now is an endpoint, and none other.
    for pod in &churn {
        let has_eth0 = pod.ns.links().iter().any(|l| l == "eth0");
        let known = endpoints.iter().any(|e| e.container_id == pod.id);
        assert_eq!(
            has_eth0, known,
            "pod {}: veth {has_eth0}, endpoint {known}",
            pod.id
        );
        node.del(&conf_c, pod).ok();
    }
}

#[test]
fn a_store_the_agent_cannot_read_is_refused_and_the_maps_are_untouched() {
    require_root!();
    let node = Node::new("agstore");
    let dir = tempdir("agstore");
    let mut agent = start_agent(&node, dir.path(), "10.13.26.0/24");
    let conf = agent_config(&node, &agent, &[("app", "web")]);
    let pod = Pod::new("agst");
    let ip = pod_ip(&node.add(&conf, &pod).ok());
    assert!(agent.stop());
    let maps = Maps::open(node.pins.path()).unwrap();
    let before = maps.endpoints.list().unwrap();
    let store = agent.state_dir.join("agent.redb");
    let good = std::fs::read(&store).unwrap();
    std::fs::write(&store, b"not a redb file at all, just bytes").unwrap();
    let out = agent.run_once(&[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent.redb"));
    assert_eq!(
        maps.endpoints.list().unwrap(),
        before,
        "nothing written to the maps"
    );
    // The good store back: the agent starts and keeps the endpoint.
    std::fs::write(&store, good).unwrap();
    agent.restart();
    assert!(identity_of(&maps, &ip).is_some());

    // A second agent on the same pin directory is refused (exit 5).
    let other = tempdir("agstore2");
    let second = AgentProcess::start_unchecked(&node.ns, node.pins.path(), other.path());
    assert_eq!(
        second.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // Its lock file goes when it ends normally (no file per pin directory
    // piling up in /run/ebpfcni); the next agent takes a new one.
    let pins = std::fs::canonicalize(node.pins.path()).unwrap();
    let lock = Path::new(ebpfcni::RUN_DIR).join(format!(
        "agent-{:016x}.lock",
        ebpfcni::fnv1a(pins.as_os_str().as_encoded_bytes())
    ));
    assert!(lock.exists(), "{}", lock.display());
    assert!(agent.stop(), "a clean stop");
    assert!(!lock.exists(), "the lock file goes with the agent");
    agent.restart();
    assert!(lock.exists());
    node.del(&conf, &pod).ok();
    // Tests end their agents with kill -9: the fixture removes the file
    // then (only when no agent holds it: the refused second one above did
    // not take the first one's).
    drop(agent);
    assert!(
        !lock.exists(),
        "a killed agent's lock file is removed by the fixture"
    );
}

/// endpointctl with an agent: labels beside addresses, hand changes of the
/// agent's endpoints refused (exit 5), hand entries kept beside the agent's
/// (through its restarts and a flush), and the agent refusing an address
/// that has a hand entry.
#[test]
fn hand_entries_and_the_agents_stay_apart() {
    require_root!();
    let node = Node::new("aghand");
    let dir = tempdir("aghand");
    let mut agent = start_agent(&node, dir.path(), "10.13.27.0/24");
    let conf = agent_config(&node, &agent, &[("app", "web")]);
    let pod = Pod::new("aghp");
    let ip = pod_ip(&node.add(&conf, &pod).ok());
    let socket = agent.socket.clone();
    let endpointctl = |args: &[&str]| cli(&node, &socket, "endpointctl", args);
    let (code, list, _) = endpointctl(&["list"]);
    assert_eq!(code, Some(0));
    let line = list
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{ip} ")))
        .expect("listed");
    assert!(line.contains("app=web") && line.contains(&pod.id), "{line}");

    let (code, _, err) = endpointctl(&["add", "--ip", &ip, "--identity", "9"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains(&pod.id) && err.contains("agent"), "{err}");
    let (code, _, err) = endpointctl(&["del", "--ip", &ip]);
    assert_eq!(code, Some(5), "{err}");

    let (code, _, err) = endpointctl(&["add", "--ip", "10.13.27.200", "--identity", "77"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, list, _) = endpointctl(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.trim_start().starts_with("10.13.27.200 ") && l.contains("hand entry")),
        "{list}"
    );

    // The agent refuses the hand entry's address, naming it.
    let intruder = Pod::new("aghi");
    let conf_static = static_agent_config(&node, &agent, &[("app", "x")], "10.13.27.200");
    let msg = node.add(&conf_static, &intruder).err(109);
    assert!(
        msg.contains("10.13.27.200") && msg.contains("hand entry") && msg.contains("77"),
        "{msg}"
    );

    // policyctl says what the numbers of its rules stand for.
    let id = identity_of(&Maps::open(node.pins.path()).unwrap(), &ip)
        .unwrap()
        .to_string();
    let policyctl = |args: &[&str]| cli(&node, &socket, "policyctl", args);
    assert_eq!(policyctl(&["allow", "--src", &id, "--dst", "77"]).0, Some(0));
    let list = policyctl(&["list"]).1;
    assert!(
        list.contains(&format!("  {id}  app=web,io.kubernetes.pod.namespace=default")),
        "{list}"
    );

    // A restart keeps both; a flush removes only the hand entry.
    agent.kill9();
    agent.restart();
    let maps = Maps::open(node.pins.path()).unwrap();
    assert_eq!(identity_of(&maps, "10.13.27.200"), Some(77));
    assert!(identity_of(&maps, &ip).is_some());
    let (code, out, err) = endpointctl(&["flush"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("kept the agent's 1 endpoints"), "{out}");
    assert_eq!(identity_of(&maps, "10.13.27.200"), None);
    assert!(identity_of(&maps, &ip).is_some());
    node.del(&conf, &pod).ok();
}

/// The agent never gives a label set a number an operator's entries use:
/// a hand endpoint's identity, a rule's identities; and it sees hand
/// entries made while it runs (the tools' changes are counted in
/// config_map, so it reads the maps again only then).
#[test]
fn new_label_sets_skip_the_numbers_hand_entries_use() {
    require_root!();
    let node = Node::new("agskip");
    let dir = tempdir("agskip");
    let agent = start_agent(&node, dir.path(), "10.13.29.0/24");
    let ctl = |bin: &str, args: &[&str]| {
        let (code, _, err) = cli(&node, &agent.socket, bin, args);
        assert_eq!(code, Some(0), "{bin} {args:?}: {err}");
    };
    ctl(
        "endpointctl",
        &["add", "--ip", "10.13.29.200", "--identity", "256"],
    );
    ctl("policyctl", &["allow", "--src", "257", "--dst", "1"]);
    let maps = Maps::open(node.pins.path()).unwrap();
    let pods = std::cell::RefCell::new(Vec::new());
    let add = |app: &str| -> u32 {
        let pod = Pod::new(&format!("ags{app}"));
        let conf = agent_config(&node, &agent, &[("app", app)]);
        let ip = pod_ip(&node.add(&conf, &pod).ok());
        pods.borrow_mut().push((pod, conf));
        identity_of(&maps, &ip).unwrap()
    };
    assert_eq!(
        add("one"),
        258,
        "256 (a hand endpoint's) and 257 (a rule's) are skipped"
    );
    // A hand entry made while the agent runs.
    ctl(
        "endpointctl",
        &["add", "--ip", "10.13.29.201", "--identity", "259"],
    );
    assert_eq!(add("two"), 260, "the hand entry made since is seen");
    assert_eq!(add("three"), 261);
    for (pod, conf) in pods.take() {
        node.del(&conf, &pod).ok();
    }
}
