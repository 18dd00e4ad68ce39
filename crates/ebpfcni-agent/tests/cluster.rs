//! The other nodes, from a real etcd, applied to a node's real pinned maps
//! and to the routes of a node namespace of the test's own.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ebpfcni::netlink::Netlink;
use ebpfcni::{Identity as Id, Maps, Stored};
use ebpfcni_agent::cluster::{Remote, REMOTE_NODE};
use ebpfcni_kvstore::{Labels, NodeSpec, Session, Store, Watcher, DEFAULT_PREFIX};
use ebpfcni_testutil::{
    require_root, tools_present, AgentProcess, EtcdProcess, Fabric, Netns, TestPinDir, ETCD_BIN,
};
use ipnet::Ipv4Net;

const CLUSTER: &str = "10.20.0.0/16";

fn spec(name: &str, node_ip: &str, ttl: i64) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        node_ip: node_ip.parse().unwrap(),
        pod_cidr: None,
        cluster_cidr: Some((CLUSTER.parse().unwrap(), 24)),
        ttl,
    }
}

fn pod_ip(cidr: Ipv4Net, n: u32) -> Ipv4Addr {
    (u32::from(cidr.network()) + n).into()
}

fn entry(maps: &Maps, ip: Ipv4Addr) -> Option<u32> {
    match maps.endpoints.get(ip).unwrap() {
        Some(Stored::Valid(id)) => Some(id.get()),
        _ => None,
    }
}

/// `ip route` of the namespace, one line per route.
fn routes(node: &Netns) -> String {
    node.ip_text(&["-4", "route", "show"])
}

/// Applies the watcher's events until `done` holds; panics after 10 s.
async fn pump(w: &mut Watcher, remote: &mut Remote, maps: &Maps, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(200)), w.next()).await {
            Ok(Some(e)) => {
                remote.apply(maps, &e).unwrap();
            }
            Ok(None) => panic!("watcher stopped"),
            Err(_) => assert!(Instant::now() < deadline, "{what}: not within 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_nodes_endpoints_and_routes_follow_etcd() {
    require_root!();
    if !tools_present("other_nodes_endpoints_and_routes_follow_etcd", &[ETCD_BIN]) {
        return;
    }
    let etcd = tokio::task::block_in_place(EtcdProcess::start);
    let pins = TestPinDir::new("cluster");
    let maps = Maps::open_or_create(pins.path()).unwrap();
    // Node n1's namespace, on a fabric 10.0.0.0/24 where n2 and n3 are
    // 10.0.0.12 and 10.0.0.13.
    let node = Netns::new("etcdn1");
    node.ip(&["link", "add", "fab0", "type", "veth", "peer", "name", "fab1"]);
    node.ip(&["link", "set", "fab1", "up"]);
    node.ip(&["addr", "add", "10.0.0.11/24", "dev", "fab0"]);
    node.ip(&["link", "set", "fab0", "up"]);
    let netlink = node.run_in(|| Netlink::open().unwrap());

    let urls = [etcd.url()];
    let connect = || Store::connect(&urls, DEFAULT_PREFIX);
    let (s1, s2, s3) = (
        connect().await.unwrap(),
        connect().await.unwrap(),
        connect().await.unwrap(),
    );
    let n1 = Session::start(&s1, &spec("n1", "10.0.0.11", 10), None)
        .await
        .unwrap();
    let n2 = Session::start(&s2, &spec("n2", "10.0.0.12", 10), None)
        .await
        .unwrap();
    let n3 = Session::start(&s3, &spec("n3", "10.0.0.13", 3), None)
        .await
        .unwrap();
    let (c1, c2, c3) = (
        n1.record().await.pod_cidr,
        n2.record().await.pod_cidr,
        n3.record().await.pod_cidr,
    );
    let web = n2
        .identity(&Labels::from([("app".into(), "web".into())]))
        .await
        .unwrap();
    let db = n3
        .identity(&Labels::from([("app".into(), "db".into())]))
        .await
        .unwrap();
    let (e2, e3) = (pod_ip(c2, 2), pod_ip(c3, 2));
    n2.publish_endpoint(IpAddr::V4(e2), web).await.unwrap();
    n3.publish_endpoint(IpAddr::V4(e3), db).await.unwrap();
    // n3 claims an address of n2's CIDR and one of n1's: neither enters.
    let (bogus2, bogus1) = (pod_ip(c2, 99), pod_ip(c1, 99));
    n3.publish_endpoint(IpAddr::V4(bogus2), db).await.unwrap();
    n3.publish_endpoint(IpAddr::V4(bogus1), db).await.unwrap();
    // n1's own endpoint is the agent's business, not the remote view's.
    let own = pod_ip(c1, 2);
    n1.publish_endpoint(IpAddr::V4(own), web).await.unwrap();
    // A stale remote entry and route from before a restart.
    let stale = pod_ip("10.20.250.0/24".parse().unwrap(), 5);
    maps.endpoints.upsert(stale, Id::new(4242).unwrap()).unwrap();
    node.ip(&["route", "add", "10.20.250.0/24", "via", "10.0.0.250"]);

    let mut remote = Remote::new("n1", c1, Some(CLUSTER.parse().unwrap()), netlink);
    let mut watcher = s1.watch();
    let via = |cidr: Ipv4Net, gw: &str| format!("{cidr} via {gw} dev fab0");
    pump(&mut watcher, &mut remote, &maps, "n2 and n3 applied", || {
        let r = routes(&node);
        entry(&maps, e2) == Some(web)
            && entry(&maps, e3) == Some(db)
            && r.contains(&via(c2, "10.0.0.12"))
            && r.contains(&via(c3, "10.0.0.13"))
            && !r.contains("10.20.250.0/24")
    })
    .await;
    assert_eq!(entry(&maps, "10.0.0.12".parse().unwrap()), Some(REMOTE_NODE));
    assert_eq!(entry(&maps, "10.0.0.13".parse().unwrap()), Some(REMOTE_NODE));
    assert_eq!(entry(&maps, bogus2), None, "n3 cannot claim n2's addresses");
    assert_eq!(entry(&maps, bogus1), None, "n3 cannot claim n1's addresses");
    assert_eq!(entry(&maps, own), None, "own endpoints are the agent's");
    assert_eq!(entry(&maps, stale), None, "stale remote entry swept");
    assert!(
        !routes(&node).contains(&c1.to_string()),
        "no route to its own CIDR"
    );
    // Nothing of it in the root namespace.
    let root =
        String::from_utf8_lossy(&ebpfcni_testutil::run(&["ip", "-4", "route", "show"]).stdout).into_owned();
    assert!(
        !root.contains(&c2.to_string()) && !root.contains(&c3.to_string()),
        "{root}"
    );

    // An endpoint deleted on n2 leaves n1's map.
    n2.remove_endpoint(IpAddr::V4(e2)).await.unwrap();
    pump(&mut watcher, &mut remote, &maps, "e2 removed", || {
        entry(&maps, e2).is_none()
    })
    .await;

    // n3 dies: its lease (3 s) ends, its endpoint and route leave n1.
    drop(n3);
    let t = Instant::now();
    pump(&mut watcher, &mut remote, &maps, "n3 gone", || {
        entry(&maps, e3).is_none() && !routes(&node).contains(&c3.to_string())
    })
    .await;
    assert_eq!(entry(&maps, "10.0.0.13".parse().unwrap()), None);
    assert!(routes(&node).contains(&via(c2, "10.0.0.12")), "n2's route stays");
    eprintln!(
        "n3's endpoint and route left n1 {:?} after it died (lease 3 s)",
        t.elapsed()
    );
}

/// A pod's host veth in `node` (its peer stays in the node: the agent
/// only needs the host side to exist).
fn host_veth(node: &Netns, name: &str) -> u32 {
    node.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        &format!("p{name}"),
    ]);
    node.ifindex(name)
}

fn request(id: &str, host_veth: &str, ifindex: u32, app: &str) -> ebpfcni_api::EndpointRequest {
    ebpfcni_api::EndpointRequest {
        container_id: id.into(),
        ifname: "eth0".into(),
        network: "ebpfcni".into(),
        netns: "/run/netns/none".into(),
        host_veth: host_veth.into(),
        host_ifindex: ifindex,
        ips: Vec::new(),
        labels: Labels::from([("app".to_string(), app.to_string())]),
        pod_namespace: None,
        pod_name: None,
    }
}

/// The nodes etcd (listening in the fabric namespace) has as users of `id`.
fn users_in_etcd(fab: &Netns, url: &str, id: u32) -> Vec<String> {
    fab.run_in(|| {
        // A runtime on this thread only: its connections are made in the
        // fabric namespace.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Store::connect(&[url.to_string()], DEFAULT_PREFIX).await.unwrap();
            store.identity_users(id).await.unwrap()
        })
    })
}

fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn agents_share_identities_endpoints_and_routes_through_etcd() {
    require_root!();
    if !tools_present(
        "agents_share_identities_endpoints_and_routes_through_etcd",
        &[ETCD_BIN],
    ) {
        return;
    }
    let Fabric { fabric: fab, nodes } = Fabric::new(2);
    let etcd = EtcdProcess::start_in(&fab.path(), "10.0.0.1".parse().unwrap());
    let url = etcd.url();
    let flags = |node_ip: &'static str| {
        vec![
            "--runtime",
            "none",
            "--etcd",
            &url,
            "--node-ip",
            node_ip,
            "--cluster-cidr",
            CLUSTER,
            "--lease-seconds",
            "3",
            // Identities nobody uses are freed within a second (below:
            // n2 gone for good).
            "--identity-gc-seconds",
            "1",
        ]
    };
    let (p1, p2) = (TestPinDir::new("etcdag1"), TestPinDir::new("etcdag2"));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a1 = AgentProcess::start(&nodes[0], p1.path(), d1.path(), &flags("10.0.0.11"));
    let mut a2 = AgentProcess::start(&nodes[1], p2.path(), d2.path(), &flags("10.0.0.12"));
    let cidr =
        |a: &AgentProcess| -> Ipv4Net { a.client().health().unwrap().pod_cidr.unwrap().parse().unwrap() };
    let (c1, c2) = (cidr(&a1), cidr(&a2));
    let cluster: Ipv4Net = CLUSTER.parse().unwrap();
    assert!(
        c1 != c2 && cluster.contains(&c1) && cluster.contains(&c2),
        "{c1} {c2}"
    );

    // A pod on n2; the same labels on n1 get the same number.
    let ifindex = host_veth(&nodes[1], "hweb2");
    let web2 = a2
        .client()
        .create_endpoint(&request("web2", "hweb2", ifindex, "web"))
        .unwrap();
    let ip2 = web2.ips[0];
    assert!(c2.contains(&ip2));
    let ifindex = host_veth(&nodes[0], "hweb1");
    let web1 = a1
        .client()
        .create_endpoint(&request("web1", "hweb1", ifindex, "web"))
        .unwrap();
    assert_eq!(
        web1.identity, web2.identity,
        "one number per label set across nodes"
    );
    let ifindex = host_veth(&nodes[0], "hdb1");
    let db1 = a1
        .client()
        .create_endpoint(&request("db1", "hdb1", ifindex, "db"))
        .unwrap();
    assert_ne!(db1.identity, web1.identity);

    // Each node's maps get the other's pods and node IP, and a route to
    // the other's pod CIDR via its node IP.
    let (maps1, maps2) = (
        Maps::open_or_create(p1.path()).unwrap(),
        Maps::open_or_create(p2.path()).unwrap(),
    );
    wait_until("n2's pod on n1", Duration::from_secs(10), || {
        entry(&maps1, ip2) == Some(web2.identity)
            && routes(&nodes[0]).contains(&format!("{c2} via 10.0.0.12"))
    });
    wait_until("n1's pods on n2", Duration::from_secs(10), || {
        entry(&maps2, web1.ips[0]) == Some(web1.identity)
            && entry(&maps2, db1.ips[0]) == Some(db1.identity)
            && routes(&nodes[1]).contains(&format!("{c1} via 10.0.0.11"))
    });
    assert_eq!(entry(&maps1, "10.0.0.12".parse().unwrap()), Some(REMOTE_NODE));
    assert_eq!(entry(&maps2, "10.0.0.11".parse().unwrap()), Some(REMOTE_NODE));

    // A second agent named n1 (another pin directory and socket) refuses
    // to start, with exit code 5.
    let (p3, d3) = (TestPinDir::new("etcdag3"), tempfile::tempdir().unwrap());
    let refused = AgentProcess::run_unchecked(&nodes[0], p3.path(), d3.path(), &flags("10.0.0.11"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("is held by another agent"), "{stderr}");
    assert_eq!(entry(&maps2, web1.ips[0]), Some(web1.identity), "n1 untouched");

    // n2's agent killed and restarted within its lease: nothing changes
    // on n1, even past the lease's length.
    a2.kill9();
    a2.restart();
    assert_eq!(cidr(&a2), c2, "same pod CIDR after a restart");
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            entry(&maps1, ip2),
            Some(web2.identity),
            "n2's pod left n1 during n2's restart"
        );
        assert!(routes(&nodes[0]).contains(&format!("{c2} via 10.0.0.12")));
        std::thread::sleep(Duration::from_millis(100));
    }

    // A pod deleted on n2 leaves n1; n2 no longer uses web (its last
    // pod), n1 still does.
    let users = |id: u32| users_in_etcd(&fab, &url, id);
    let mut both = vec![nodes[0].name().to_string(), nodes[1].name().to_string()];
    both.sort();
    assert_eq!(users(web1.identity), both);
    a2.client().delete_endpoint("web2", "eth0").unwrap();
    wait_until("n2's deleted pod leaves n1", Duration::from_secs(5), || {
        entry(&maps1, ip2).is_none()
    });
    assert_eq!(users(web1.identity), vec![nodes[0].name().to_string()]);
    let ifindex = host_veth(&nodes[1], "hdb2");
    let db2 = a2
        .client()
        .create_endpoint(&request("db2", "hdb2", ifindex, "db"))
        .unwrap();
    assert_eq!(db2.identity, db1.identity);
    wait_until("db2 on n1", Duration::from_secs(5), || {
        entry(&maps1, db2.ips[0]) == Some(db2.identity)
    });

    // A pod moved: deleted on n1, created on n2 with the same labels.
    a1.client().delete_endpoint("db1", "eth0").unwrap();
    wait_until("db1 leaves n2", Duration::from_secs(5), || {
        entry(&maps2, db1.ips[0]).is_none()
    });
    let ifindex = host_veth(&nodes[1], "hdb3");
    let moved = a2
        .client()
        .create_endpoint(&request("db3", "hdb3", ifindex, "db"))
        .unwrap();
    assert_eq!(moved.identity, db1.identity);
    assert!(c2.contains(&moved.ips[0]));
    wait_until("the moved pod on n1", Duration::from_secs(5), || {
        entry(&maps1, moved.ips[0]) == Some(db1.identity)
    });

    // n2 uses web again (n1 too) and db (n2 only) when it goes.
    let ifindex = host_veth(&nodes[1], "hweb4");
    let web4 = a2
        .client()
        .create_endpoint(&request("web4", "hweb4", ifindex, "web"))
        .unwrap();
    assert_eq!(web4.identity, web1.identity);
    assert_eq!(users(web1.identity), both);
    assert_eq!(users(db1.identity), vec![nodes[1].name().to_string()]);

    // n2 gone for good (killed, never restarted): when its lease (3 s)
    // ends, its pods, node IP and route leave n1...
    drop(a2);
    let t = Instant::now();
    wait_until("n2 gone from n1", Duration::from_secs(10), || {
        entry(&maps1, db2.ips[0]).is_none() && !routes(&nodes[0]).contains(&c2.to_string())
    });
    assert_eq!(entry(&maps1, "10.0.0.12".parse().unwrap()), None);
    assert_eq!(entry(&maps1, moved.ips[0]), None);
    assert_eq!(entry(&maps1, web4.ips[0]), None);
    assert_eq!(
        entry(&maps1, web1.ips[0]),
        Some(web1.identity),
        "n1's own pods stay"
    );
    // ...and n1's GC (every second) frees db, which nobody uses any more,
    // while web, which n1 still uses, keeps its number.
    let labels_in_etcd = |id: u32| {
        fab.run_in(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = Store::connect(&[url.to_string()], DEFAULT_PREFIX).await.unwrap();
                store.labels_of(id).await.unwrap()
            })
        })
    };
    wait_until("db freed in etcd", Duration::from_secs(10), || {
        labels_in_etcd(db1.identity).is_none()
    });
    eprintln!(
        "n2's route and pods left n1, and db was freed, {:?} after n2 died (lease 3 s, GC every 1 s)",
        t.elapsed()
    );
    assert!(users(db1.identity).is_empty());
    // Several GC rounds later, web is still there, n1 its only user.
    std::thread::sleep(Duration::from_millis(2500));
    let web_labels = labels_in_etcd(web1.identity).expect("web is n1's: never freed");
    assert_eq!(web_labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(users(web1.identity), vec![nodes[0].name().to_string()]);
    assert_eq!(
        a1.client().endpoint("web1", "eth0").unwrap().identity,
        web1.identity
    );
    drop(a1);
    drop(etcd);
}

#[test]
fn agents_keep_their_verdicts_while_etcd_is_down_and_catch_up_after() {
    require_root!();
    if !tools_present(
        "agents_keep_their_verdicts_while_etcd_is_down_and_catch_up_after",
        &[ETCD_BIN],
    ) {
        return;
    }
    let Fabric { fabric: fab, nodes } = Fabric::new(2);
    let mut etcd = EtcdProcess::start_in(&fab.path(), "10.0.0.1".parse().unwrap());
    let url = etcd.url();
    let flags = |node_ip: &'static str| {
        vec![
            "--runtime",
            "none",
            "--etcd",
            &url,
            "--node-ip",
            node_ip,
            "--cluster-cidr",
            CLUSTER,
            "--lease-seconds",
            "3",
        ]
    };
    let (p1, p2) = (TestPinDir::new("etcddown1"), TestPinDir::new("etcddown2"));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a1 = AgentProcess::start(&nodes[0], p1.path(), d1.path(), &flags("10.0.0.11"));
    let a2 = AgentProcess::start(&nodes[1], p2.path(), d2.path(), &flags("10.0.0.12"));
    let c1: Ipv4Net = a1.client().health().unwrap().pod_cidr.unwrap().parse().unwrap();
    let (maps1, maps2) = (
        Maps::open_or_create(p1.path()).unwrap(),
        Maps::open_or_create(p2.path()).unwrap(),
    );

    // Before: a web pod on n2 (seen by n1), and web known to n1 too.
    let ifindex = host_veth(&nodes[1], "hweb2");
    let web2 = a2
        .client()
        .create_endpoint(&request("web2", "hweb2", ifindex, "web"))
        .unwrap();
    let ifindex = host_veth(&nodes[0], "hweb1");
    let web1 = a1
        .client()
        .create_endpoint(&request("web1", "hweb1", ifindex, "web"))
        .unwrap();
    wait_until("n2's web on n1", Duration::from_secs(10), || {
        entry(&maps1, web2.ips[0]) == Some(web2.identity)
    });

    // etcd dies.
    etcd.kill9();
    // A new pod with a known label set starts with its number at once...
    let ifindex = host_veth(&nodes[0], "hweb3");
    let t = Instant::now();
    let web3 = a1
        .client()
        .create_endpoint(&request("web3", "hweb3", ifindex, "web"))
        .unwrap();
    assert_eq!(web3.identity, web1.identity);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // ...one with a new label set starts with init, and waits.
    let ifindex = host_veth(&nodes[0], "hapi1");
    let api = a1
        .client()
        .create_endpoint(&request("api1", "hapi1", ifindex, "api"))
        .unwrap();
    assert_eq!(api.identity, 5, "init while etcd is down");
    assert_eq!(entry(&maps1, api.ips[0]), Some(5));
    // n1 restarts while etcd is down: from its cached pod CIDR.
    a1.kill9();
    a1.restart();
    let again: Ipv4Net = a1.client().health().unwrap().pod_cidr.unwrap().parse().unwrap();
    assert_eq!(again, c1);
    // Throughout, longer than the leases: n2's pod keeps its identity on n1.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            entry(&maps1, web2.ips[0]),
            Some(web2.identity),
            "maps untouched while etcd is down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // etcd is back: the waiting pod gets its number, n2 learns n1's new pods.
    etcd.restart();
    wait_until("api gets its identity", Duration::from_secs(15), || {
        a1.client().endpoint("api1", "eth0").unwrap().identity >= 256
    });
    let api = a1.client().endpoint("api1", "eth0").unwrap();
    assert_ne!(api.identity, web1.identity);
    assert_eq!(entry(&maps1, api.ips[0]), Some(api.identity));
    wait_until("n2 has n1's pods", Duration::from_secs(10), || {
        entry(&maps2, api.ips[0]) == Some(api.identity) && entry(&maps2, web3.ips[0]) == Some(web3.identity)
    });
    assert_eq!(entry(&maps1, web2.ips[0]), Some(web2.identity));
    // The same new set on n2 gets the same number.
    let ifindex = host_veth(&nodes[1], "hapi2");
    let api2 = a2
        .client()
        .create_endpoint(&request("api2", "hapi2", ifindex, "api"))
        .unwrap();
    assert_eq!(api2.identity, api.identity);
}

/// Deletes `old` (at `ip`) on n2, asks n2 for `new` at once (refused),
/// runs `meanwhile`, and asks again until it is handed out, while watching n1's entry for `ip`:
/// returns the error of the first ADD right after the DEL, the endpoint
/// `new` got, and how long before it was handed out n1 had dropped the
/// old entry (None: n1 still had it).
fn delete_and_reuse(
    a2: &AgentProcess,
    pins1: &std::path::Path,
    ip: Ipv4Addr,
    old: &str,
    new: (&str, &str, u32),
    meanwhile: impl FnOnce(),
) -> (String, ebpfcni_api::Endpoint, Option<Duration>) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let ask = || a2.client().create_endpoint(&request(new.0, new.1, new.2, "new"));
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let maps1 = Maps::open_or_create(pins1).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if entry(&maps1, ip).is_none() {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        });
        a2.client().delete_endpoint(old, "eth0").unwrap();
        // At once: the only address is not handed out yet.
        let refused = match ask() {
            Err(e) => e.to_string(),
            Ok(e) => panic!("{ip} handed out again right after its DEL (as {:?})", e.ips),
        };
        meanwhile();
        // Then, as soon as n2 hands it out: had n1 forgotten it before?
        let deadline = Instant::now() + Duration::from_secs(20);
        let (handed, got) = loop {
            let asked = Instant::now();
            if let Ok(e) = ask() {
                break (asked, e);
            }
            assert!(Instant::now() < deadline, "the address never came back");
            std::thread::sleep(Duration::from_millis(50));
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let forgotten = watcher.join().unwrap();
        (
            refused,
            got,
            forgotten.map(|t| handed.saturating_duration_since(t)),
        )
    })
}

#[test]
fn a_deleted_pods_address_has_no_identity_on_other_nodes_before_it_is_handed_out_again() {
    require_root!();
    if !tools_present(
        "a_deleted_pods_address_has_no_identity_on_other_nodes_before_it_is_handed_out_again",
        &[ETCD_BIN],
    ) {
        return;
    }
    let Fabric { fabric: fab, nodes } = Fabric::new(2);
    let mut etcd = EtcdProcess::start_in(&fab.path(), "10.0.0.1".parse().unwrap());
    let url = etcd.url();
    let flags = |node_ip: &'static str, size: &'static str| {
        vec![
            "--runtime",
            "none",
            "--etcd",
            &url,
            "--node-ip",
            node_ip,
            "--cluster-cidr",
            CLUSTER,
            "--node-cidr-size",
            size,
        ]
    };
    let (p1, p2) = (TestPinDir::new("etcdreuse1"), TestPinDir::new("etcdreuse2"));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _a1 = AgentProcess::start(&nodes[0], p1.path(), d1.path(), &flags("10.0.0.11", "24"));
    // n2's pod CIDR is a /30: one pod address, so the next pod can only
    // have the address of the last one.
    let mut a2 = AgentProcess::start(&nodes[1], p2.path(), d2.path(), &flags("10.0.0.12", "30"));
    let maps1 = Maps::open_or_create(p1.path()).unwrap();

    let ifindex = host_veth(&nodes[1], "hold2");
    let old = a2
        .client()
        .create_endpoint(&request("old2", "hold2", ifindex, "old"))
        .unwrap();
    let ip = old.ips[0];
    wait_until("n2's pod on n1", Duration::from_secs(10), || {
        entry(&maps1, ip) == Some(old.identity)
    });

    // Deleted with etcd up: refused right after the DEL, handed out again
    // once n1 has dropped the old pod's entry.
    let ifindex = host_veth(&nodes[1], "hnew2");
    let (refused, new, before) =
        delete_and_reuse(&a2, p1.path(), ip, "old2", ("new2", "hnew2", ifindex), || {});
    assert!(refused.contains("no free address"), "{refused}");
    assert_eq!(new.ips, vec![ip], "the /30's only address");
    assert_ne!(new.identity, old.identity);
    let before = before.unwrap_or_else(|| {
        panic!(
            "n1 still had {ip} as identity {} when n2 handed it out again",
            old.identity
        )
    });
    eprintln!("etcd up: n1 forgot {ip} {before:?} before n2 handed it out again");
    wait_until("the new pod on n1", Duration::from_secs(10), || {
        entry(&maps1, ip) == Some(new.identity)
    });

    // Deleted while etcd is down: its key cannot be withdrawn, and n1
    // keeps its entry (never flushed), so the address waits, longer than
    // the grace, until etcd is back and the key is gone.
    etcd.kill9();
    let ifindex = host_veth(&nodes[1], "hnew3");
    let (refused, newer, before) =
        delete_and_reuse(&a2, p1.path(), ip, "new2", ("new3", "hnew3", ifindex), || {
            std::thread::sleep(Duration::from_secs(4));
            let again = a2
                .client()
                .create_endpoint(&request("new3", "hnew3", ifindex, "new"));
            assert!(again.is_err(), "handed out while etcd is down: {again:?}");
            assert_eq!(entry(&maps1, ip), Some(new.identity), "n1 keeps its entries");
            etcd.restart();
        });
    assert!(refused.contains("no free address"), "{refused}");
    assert_eq!(newer.ips, vec![ip]);
    assert_eq!(newer.identity, new.identity, "the same label set");
    let before = before.unwrap_or_else(|| panic!("n1 still had {ip} when n2 handed it out again"));
    eprintln!("etcd down: n1 forgot {ip} {before:?} before n2 handed it out again");
    wait_until("the newer pod on n1", Duration::from_secs(10), || {
        entry(&maps1, ip) == Some(newer.identity)
    });

    // Deleted while etcd is down, and n2's agent killed -9 right after the
    // DEL and started again, etcd still down: the wait survives the
    // restart (the agent's store no longer has the pod, etcd cannot be
    // asked), and the address comes back only once n1 forgot it.
    etcd.kill9();
    a2.client().delete_endpoint("new3", "eth0").unwrap();
    a2.kill9();
    a2.restart();
    let ifindex = host_veth(&nodes[1], "hnew4");
    let again = a2
        .client()
        .create_endpoint(&request("new4", "hnew4", ifindex, "new"));
    assert!(
        again.is_err(),
        "handed out after a restart while etcd is down: {again:?}"
    );
    assert_eq!(entry(&maps1, ip), Some(newer.identity), "n1 keeps its entries");
    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let forgotten = entry(&maps1, ip).is_none();
        if let Ok(e) = a2
            .client()
            .create_endpoint(&request("new4", "hnew4", ifindex, "new"))
        {
            assert!(forgotten, "n2 handed {ip} out again while n1 still had it");
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "the address never came back after the restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(last.ips, vec![ip]);
    drop(etcd);
}
