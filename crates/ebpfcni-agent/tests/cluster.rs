//! The other nodes, from a real etcd, applied to a node's real pinned maps
//! and to the routes of a node namespace of the test's own.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ebpfcni::netlink::Netlink;
use ebpfcni::{Identity as Id, Maps, Stored};
use ebpfcni_agent::cluster::{Remote, REMOTE_NODE};
use ebpfcni_kvstore::{Labels, NodeSpec, Session, Store, Watcher, DEFAULT_PREFIX};
use ebpfcni_testutil::{require_root, tools_present, EtcdProcess, Netns, TestPinDir, ETCD_BIN};
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
