//! The cluster store against a real etcd (Debian's 3.4), one etcd of its
//! own per test, on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ebpfcni_kvstore::{
    Claim, EndpointRecord, Error, Event, Labels, NodeSpec, PolicyKey, Session, Store, Watcher, DEFAULT_PREFIX,
};
use ebpfcni_testutil::{tools_present, EtcdProcess, ETCD_BIN};
use ipnet::Ipv4Net;

const CLUSTER: &str = "10.20.0.0/16";

fn etcd(test: &str) -> Option<EtcdProcess> {
    tools_present(test, &[ETCD_BIN]).then(|| tokio::task::block_in_place(EtcdProcess::start))
}

async fn store(etcd: &EtcdProcess) -> Store {
    Store::connect(&[etcd.url()], DEFAULT_PREFIX)
        .await
        .expect("connect to etcd")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec(name: &str, node_ip: &str, ttl: i64) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        node_ip: node_ip.parse().unwrap(),
        pod_cidr: None,
        cluster_cidr: Some((CLUSTER.parse().unwrap(), 24)),
        ttl,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The `n`th address of a node's pod CIDR.
fn pod_ip(cidr: Ipv4Net, n: u32) -> IpAddr {
    IpAddr::V4((u32::from(cidr.network()) + n).into())
}

/// The next event that `keep` accepts, skipping others; panics after
/// `within`.
async fn wait_event(w: &mut Watcher, within: Duration, keep: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(e)) if keep(&e) => return e,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("watcher stopped"),
            Err(_) => panic!("no matching event within {within:?}"),
        }
    }
}

/// Every event up to and including the next `Synced`.
async fn until_synced(w: &mut Watcher) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("Synced within 10 s")
            .expect("watcher running");
        let done = matches!(e, Event::Synced { .. });
        out.push(e);
        if done {
            return out;
        }
    }
}

/// Retries `f` until it succeeds (etcd coming back), for at most `within`.
async fn retry<T, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_unavailable(), "unexpected error: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still failing after {within:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_allocating_the_same_new_label_set_at_once_get_one_number() {
    let Some(etcd) = etcd("two_nodes_allocating_the_same_new_label_set_at_once_get_one_number") else {
        return;
    };
    // Two agents, each with its own connection.
    let (a, b) = (store(&etcd).await, store(&etcd).await);
    let n1 = Session::start(&a, &spec("n1", "10.0.0.11", 10), None)
        .await
        .unwrap();
    let n2 = Session::start(&b, &spec("n2", "10.0.0.12", 10), None)
        .await
        .unwrap();
    let (n1, n2) = (std::sync::Arc::new(n1), std::sync::Arc::new(n2));
    let mut shared = BTreeSet::new();
    let mut all = BTreeSet::new();
    for i in 0..20 {
        // The same new set from both nodes at once...
        let set = labels(&[("app", &format!("same{i}"))]);
        let (s1, s2) = (n1.clone(), n2.clone());
        let (l1, l2) = (set.clone(), set.clone());
        let t1 = tokio::spawn(async move { s1.identity(&l1).await });
        let t2 = tokio::spawn(async move { s2.identity(&l2).await });
        let (i1, i2) = (t1.await.unwrap().unwrap(), t2.await.unwrap().unwrap());
        assert_eq!(i1, i2, "{set:?} got two numbers");
        assert_eq!(a.labels_of(i1).await.unwrap(), Some(set.clone()));
        assert_eq!(
            a.identity_users(i1).await.unwrap(),
            vec!["n1".to_string(), "n2".to_string()]
        );
        shared.insert(i1);
        // ...and two different new sets at once.
        let (s1, s2) = (n1.clone(), n2.clone());
        let (x, y) = (
            labels(&[("app", &format!("x{i}"))]),
            labels(&[("app", &format!("y{i}"))]),
        );
        let t1 = tokio::spawn(async move { s1.identity(&x).await });
        let t2 = tokio::spawn(async move { s2.identity(&y).await });
        let (ix, iy) = (t1.await.unwrap().unwrap(), t2.await.unwrap().unwrap());
        assert_ne!(ix, iy, "two label sets share a number");
        all.extend([i1, ix, iy]);
    }
    assert_eq!(shared.len(), 20);
    assert_eq!(all.len(), 60, "60 label sets, 60 numbers");
    assert!(all.iter().all(|&id| id >= 256), "label identities start at 256");
    let listed = a.identities().await.unwrap();
    assert_eq!(listed.len(), 60);
    // Allocating a known set again gives its number back.
    let again = n1.identity(&labels(&[("app", "same3")])).await.unwrap();
    assert_eq!(
        Some(again),
        a.identity_of(&labels(&[("app", "same3")])).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_never_frees_a_number_in_use() {
    let Some(etcd) = etcd("gc_never_frees_a_number_in_use") else {
        return;
    };
    let (a, b) = (store(&etcd).await, store(&etcd).await);
    let n1 = Session::start(&a, &spec("n1", "10.0.0.11", 10), None)
        .await
        .unwrap();
    let n2 = std::sync::Arc::new(
        Session::start(&b, &spec("n2", "10.0.0.12", 10), None)
            .await
            .unwrap(),
    );
    let web = labels(&[("app", "web")]);
    let db = labels(&[("app", "db")]);
    let id_web = n1.identity(&web).await.unwrap();
    assert_eq!(n2.identity(&web).await.unwrap(), id_web);
    let id_db = n1.identity(&db).await.unwrap();

    assert_eq!(a.gc_identities().await.unwrap(), Vec::<u32>::new(), "all in use");
    n1.release_identity(id_web).await.unwrap();
    assert_eq!(
        a.gc_identities().await.unwrap(),
        Vec::<u32>::new(),
        "n2 still uses web"
    );
    assert_eq!(a.labels_of(id_web).await.unwrap(), Some(web.clone()));
    n2.release_identity(id_web).await.unwrap();
    assert_eq!(a.gc_identities().await.unwrap(), vec![id_web], "nobody uses web");
    assert_eq!(a.identity_of(&web).await.unwrap(), None);
    assert_eq!(a.labels_of(id_db).await.unwrap(), Some(db));

    // A GC racing with a node that starts using a number nobody used: the
    // number is either freed before (and the node gets a valid new one) or
    // kept; never freed under the node.
    let mut freed_under_race = 0;
    for i in 0..30 {
        let set = labels(&[("app", &format!("race{i}"))]);
        let id = n1.identity(&set).await.unwrap();
        n1.release_identity(id).await.unwrap();
        let (s2, l2, gc) = (n2.clone(), set.clone(), a.clone());
        let user = tokio::spawn(async move { s2.identity(&l2).await.unwrap() });
        let collector = tokio::spawn(async move { gc.gc_identities().await.unwrap() });
        let (got, freed) = (user.await.unwrap(), collector.await.unwrap());
        if freed.contains(&id) {
            freed_under_race += 1;
        }
        assert_eq!(
            a.labels_of(got).await.unwrap(),
            Some(set.clone()),
            "round {i}: n2 uses {got}, which must still name its set (GC freed {freed:?})"
        );
        assert_eq!(a.identity_of(&set).await.unwrap(), Some(got));
        assert_eq!(a.identity_users(got).await.unwrap(), vec!["n2".to_string()]);
        // And a GC after the race frees nothing n2 uses.
        assert!(!a.gc_identities().await.unwrap().contains(&got));
    }
    eprintln!("GC won the race {freed_under_race} times out of 30");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_removes_a_nodes_endpoints_and_identity_users() {
    let Some(etcd) = etcd("lease_expiry_removes_a_nodes_endpoints_and_identity_users") else {
        return;
    };
    let (a, b) = (store(&etcd).await, store(&etcd).await);
    let mut watcher = b.watch();
    until_synced(&mut watcher).await;
    let n1 = Session::start(&a, &spec("n1", "10.0.0.11", 2), None)
        .await
        .unwrap();
    let n2 = Session::start(&b, &spec("n2", "10.0.0.12", 10), None)
        .await
        .unwrap();
    let cidr1 = n1.record().await.pod_cidr;
    let web = labels(&[("app", "web")]);
    let id = n1.identity(&web).await.unwrap();
    let addr = pod_ip(cidr1, 5);
    n1.publish_endpoint(addr, id).await.unwrap();
    let seen = wait_event(&mut watcher, Duration::from_secs(5), |e| {
        matches!(e, Event::EndpointUpsert(_))
    })
    .await;
    assert_eq!(
        seen,
        Event::EndpointUpsert(EndpointRecord {
            ip: addr,
            identity: id,
            node: "n1".into()
        })
    );
    // n2 shares nothing with n1's identity.
    let id_db = n2.identity(&labels(&[("app", "db")])).await.unwrap();

    // n1 crashes: nobody renews its lease (3 s). Its keys stay while the
    // lease lives (a restart within it changes nothing)...
    drop(n1);
    let crashed = Instant::now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        a.endpoints().await.unwrap().len(),
        1,
        "endpoint kept within the lease"
    );
    // ...then go with it: endpoint withdrawn, then node down.
    let gone = wait_event(&mut watcher, Duration::from_secs(8), |e| {
        matches!(e, Event::EndpointDelete(_) | Event::NodeDown(_))
    })
    .await;
    assert_eq!(gone, Event::EndpointDelete(addr));
    let down = wait_event(&mut watcher, Duration::from_secs(1), |e| {
        matches!(e, Event::NodeDown(_))
    })
    .await;
    assert_eq!(down, Event::NodeDown("n1".into()));
    let after = crashed.elapsed();
    assert!(
        after < Duration::from_secs(8),
        "lease of 3 s ended after {after:?}"
    );
    assert!(a.endpoints().await.unwrap().is_empty());
    assert_eq!(a.identity_users(id).await.unwrap(), Vec::<String>::new());
    assert_eq!(
        a.nodes()
            .await
            .unwrap()
            .iter()
            .map(|n| n.name.clone())
            .collect::<Vec<_>>(),
        vec!["n2".to_string()]
    );
    // n1's identity is freed now that nobody uses it; n2's is not.
    assert_eq!(a.gc_identities().await.unwrap(), vec![id]);
    assert_eq!(a.labels_of(id_db).await.unwrap(), Some(labels(&[("app", "db")])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_node_name_twice_is_refused_and_a_restart_within_the_lease_resumes() {
    let Some(etcd) = etcd("the_same_node_name_twice_is_refused_and_a_restart_within_the_lease_resumes")
    else {
        return;
    };
    let (a, b) = (store(&etcd).await, store(&etcd).await);
    let mut watcher = b.watch();
    until_synced(&mut watcher).await;
    let first = Session::start(&a, &spec("n1", "10.0.0.11", 10), None)
        .await
        .unwrap();
    let cidr = first.record().await.pod_cidr;
    let id = first.identity(&labels(&[("app", "web")])).await.unwrap();
    first.publish_endpoint(pod_ip(cidr, 7), id).await.unwrap();

    // A second agent named n1, while the first lives: refused, and
    // nothing of the first touched.
    let before = a.nodes().await.unwrap();
    match Session::start(&b, &spec("n1", "10.0.0.99", 10), None).await {
        Err(Error::NodeTaken { name, ttl, .. }) => {
            assert_eq!(name, "n1");
            assert!(ttl > 0, "the holder's lease is alive");
        }
        Err(e) => panic!("expected NodeTaken, got {e}"),
        Ok(_) => panic!("a second agent named n1 started"),
    }
    // A forged claim (wrong token) is refused too.
    let claim = first.claim().await;
    let forged = Claim {
        lease: claim.lease,
        token: "0".repeat(32),
    };
    assert!(matches!(
        Session::start(&b, &spec("n1", "10.0.0.99", 10), Some(&forged)).await,
        Err(Error::NodeTaken { .. })
    ));
    assert_eq!(a.nodes().await.unwrap(), before);

    // The agent is killed and restarts within its lease with the claim it
    // kept: same lease, same node key, endpoint never withdrawn.
    drop(first);
    let again = Session::start(&b, &spec("n1", "10.0.0.11", 10), Some(&claim))
        .await
        .unwrap();
    assert_eq!(again.claim().await, claim);
    assert_eq!(again.record().await, before[0]);
    assert_eq!(a.endpoints().await.unwrap().len(), 1);
    // Still refused to a newcomer.
    assert!(matches!(
        Session::start(&a, &spec("n1", "10.0.0.99", 10), None).await,
        Err(Error::NodeTaken { .. })
    ));
    // Nothing changed for the watcher: node up and endpoint once, no
    // down, no delete.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = Vec::new();
    while let Some(e) = watcher.try_next() {
        seen.push(e);
    }
    assert!(
        seen.iter()
            .all(|e| !matches!(e, Event::NodeDown(_) | Event::EndpointDelete(_))),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|e| matches!(e, Event::EndpointUpsert(_)))
            .count(),
        1
    );

    // Leaving for good frees the name at once.
    again.leave().await.unwrap();
    let third = Session::start(&a, &spec("n1", "10.0.0.11", 10), None)
        .await
        .unwrap();
    assert_eq!(third.record().await.pod_cidr, cidr, "same name, same pod CIDR");
    assert!(a.endpoints().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidrs_are_disjoint_and_stable_across_restarts() {
    let Some(etcd) = etcd("pod_cidrs_are_disjoint_and_stable_across_restarts") else {
        return;
    };
    let a = store(&etcd).await;
    // Six nodes at once get six disjoint /24s of the cluster CIDR.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = store(&etcd).await;
        tasks.push(tokio::spawn(async move {
            let name = format!("n{i}");
            let cidr = s
                .pod_cidr(&name, None, Some((CLUSTER.parse().unwrap(), 24)))
                .await
                .unwrap();
            (name, cidr)
        }));
    }
    let mut cidrs = BTreeMap::new();
    for t in tasks {
        let (name, cidr) = t.await.unwrap();
        cidrs.insert(name, cidr);
    }
    let distinct: BTreeSet<Ipv4Net> = cidrs.values().copied().collect();
    assert_eq!(distinct.len(), 6, "{cidrs:?}");
    let cluster: Ipv4Net = CLUSTER.parse().unwrap();
    assert!(distinct
        .iter()
        .all(|c| cluster.contains(c) && c.prefix_len() == 24));

    // A node that restarts (or leaves and comes back) keeps its CIDR.
    let n3 = Session::start(&a, &spec("n3", "10.0.0.13", 10), None)
        .await
        .unwrap();
    assert_eq!(n3.record().await.pod_cidr, cidrs["n3"]);
    n3.leave().await.unwrap();
    let n3 = Session::start(&a, &spec("n3", "10.0.0.13", 10), None)
        .await
        .unwrap();
    assert_eq!(n3.record().await.pod_cidr, cidrs["n3"]);

    // --pod-cidr: refused when it overlaps another node's, or when the
    // node holds another one; accepted when free.
    let taken = cidrs["n1"];
    let mut asked = spec("n9", "10.0.0.19", 10);
    asked.pod_cidr = Some(taken);
    match Session::start(&a, &asked, None).await {
        Err(Error::CidrTaken { other, .. }) => assert_eq!(other, "n1"),
        other => panic!("expected CidrTaken, got {:?}", other.err()),
    }
    asked.pod_cidr = Some("10.20.0.0/20".parse().unwrap()); // overlaps several
    assert!(matches!(
        Session::start(&a, &asked, None).await,
        Err(Error::CidrTaken { .. })
    ));
    asked.pod_cidr = Some("10.20.200.0/24".parse().unwrap());
    let n9 = Session::start(&a, &asked, None).await.unwrap();
    assert_eq!(n9.record().await.pod_cidr, "10.20.200.0/24".parse().unwrap());
    let mut moved = spec("n3", "10.0.0.13", 10);
    moved.pod_cidr = Some("10.20.201.0/24".parse().unwrap());
    drop(n3);
    assert!(matches!(
        a.pod_cidr("n3", moved.pod_cidr, None).await,
        Err(Error::CidrMismatch { .. })
    ));
    // Released, the CIDR goes back to the pool.
    assert_eq!(a.release_pod_cidr("n0").await.unwrap(), Some(cidrs["n0"]));
    let n10 = a
        .pod_cidr("n10", None, Some((CLUSTER.parse().unwrap(), 24)))
        .await
        .unwrap();
    assert_eq!(n10, cidrs["n0"], "the lowest free /24 again");

    // A small cluster CIDR runs out, with an error that says so.
    let small: Ipv4Net = "10.30.0.0/23".parse().unwrap();
    a.pod_cidr("s1", None, Some((small, 24))).await.unwrap();
    a.pod_cidr("s2", None, Some((small, 24))).await.unwrap();
    let err = a.pod_cidr("s3", None, Some((small, 24))).await.unwrap_err();
    assert!(matches!(err, Error::CidrExhausted { .. }), "{err}");
    assert_eq!(err.to_string(), "no free /24 left in cluster CIDR 10.30.0.0/23");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_outside_its_owners_pod_cidr_is_ignored() {
    let Some(etcd) = etcd("an_endpoint_outside_its_owners_pod_cidr_is_ignored") else {
        return;
    };
    let (a, b) = (store(&etcd).await, store(&etcd).await);
    let n1 = Session::start(&a, &spec("n1", "10.0.0.11", 10), None)
        .await
        .unwrap();
    let n2 = Session::start(&b, &spec("n2", "10.0.0.12", 10), None)
        .await
        .unwrap();
    let cidr2 = n2.record().await.pod_cidr;
    let id = n1.identity(&labels(&[("app", "web")])).await.unwrap();
    // n1 claims an address of n2's CIDR (a confused or hostile node).
    n1.publish_endpoint(pod_ip(cidr2, 9), id).await.unwrap();
    // n2 then cannot publish it (n1 holds the key)...
    assert!(matches!(
        n2.publish_endpoint(pod_ip(cidr2, 9), id).await,
        Err(Error::EndpointTaken { .. })
    ));
    // ...but no watcher accepts n1's claim.
    let mut watcher = b.watch();
    let listed = until_synced(&mut watcher).await;
    assert!(
        !listed.iter().any(|e| matches!(e, Event::EndpointUpsert(_))),
        "{listed:?}"
    );
    assert!(watcher.rejected() >= 1);
    // A good one is accepted.
    let good = pod_ip(n1.record().await.pod_cidr, 3);
    n1.publish_endpoint(good, id).await.unwrap();
    let e = wait_event(&mut watcher, Duration::from_secs(5), |e| {
        matches!(e, Event::EndpointUpsert(_))
    })
    .await;
    assert_eq!(
        e,
        Event::EndpointUpsert(EndpointRecord {
            ip: good,
            identity: id,
            node: "n1".into()
        })
    );
    // Removing an endpoint another node holds does nothing.
    n2.remove_endpoint(good).await.unwrap();
    assert_eq!(a.endpoints().await.unwrap().len(), 2);
    n1.remove_endpoint(good).await.unwrap();
    let e = wait_event(&mut watcher, Duration::from_secs(5), |_| true).await;
    assert_eq!(e, Event::EndpointDelete(good));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_relists_after_compaction_without_loss_or_duplicates() {
    let Some(etcd) = etcd("the_watcher_relists_after_compaction_without_loss_or_duplicates") else {
        return;
    };
    let (a, b) = (store(&etcd).await, store(&etcd).await);
    let n1 = Session::start(&a, &spec("n1", "10.0.0.11", 10), None)
        .await
        .unwrap();
    let cidr = n1.record().await.pod_cidr;
    let web = n1.identity(&labels(&[("app", "web")])).await.unwrap();
    let (e1, e2, e3, e4) = (pod_ip(cidr, 1), pod_ip(cidr, 2), pod_ip(cidr, 3), pod_ip(cidr, 4));
    n1.publish_endpoint(e1, web).await.unwrap();
    n1.publish_endpoint(e2, web).await.unwrap();
    let p1 = PolicyKey::new("NetworkPolicy", "default", "p1").unwrap();
    let p2 = PolicyKey::new("NetworkPolicy", "default", "p2").unwrap();
    a.put_policy(&p1, b"{\"v\":1}").await.unwrap();

    let mut watcher = b.watch();
    let first = until_synced(&mut watcher).await;
    let mut state = State::default();
    state.apply_all(&first);
    assert_eq!(state.endpoints.len(), 2);
    assert_eq!(state.policies.len(), 1);
    assert_eq!(state.nodes.len(), 1);
    assert_eq!(state.identities.len(), 1);

    // The watcher falls behind; meanwhile everything changes, and etcd
    // compacts its history past where the watcher stands.
    watcher.hold(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = n1.identity(&labels(&[("app", "db")])).await.unwrap();
    n1.remove_endpoint(e1).await.unwrap();
    n1.publish_endpoint(e2, db).await.unwrap();
    n1.publish_endpoint(e3, web).await.unwrap();
    n1.publish_endpoint(e4, web).await.unwrap();
    n1.remove_endpoint(e4).await.unwrap();
    a.put_policy(&p2, b"{\"v\":2}").await.unwrap();
    assert!(a.delete_policy(&p1).await.unwrap());
    let mut client = a.client();
    let rev = client.get("/", None).await.unwrap().header().unwrap().revision();
    client.compact(rev, None).await.unwrap();
    watcher.hold(false);

    // The relist emits exactly the difference, once.
    let caught_up = until_synced(&mut watcher).await;
    assert_eq!(watcher.lists(), 2, "a relist after the compaction");
    let endpoint = |ip, identity| {
        Event::EndpointUpsert(EndpointRecord {
            ip,
            identity,
            node: "n1".into(),
        })
    };
    let mut expected = vec![
        Event::EndpointDelete(e1),
        Event::PolicyDelete(p1.clone()),
        endpoint(e2, db),
        endpoint(e3, web),
        Event::IdentityUpsert {
            id: db,
            labels: labels(&[("app", "db")]),
        },
        Event::PolicyUpsert {
            key: p2.clone(),
            document: b"{\"v\":2}".to_vec(),
        },
    ];
    let mut got: Vec<Event> = caught_up
        .iter()
        .filter(|e| !matches!(e, Event::Synced { .. }))
        .cloned()
        .collect();
    let key = |e: &Event| format!("{e:?}");
    expected.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, expected);
    state.apply_all(&caught_up);
    assert_eq!(
        state.endpoints,
        BTreeMap::from([(e2, db), (e3, web)]),
        "the state after the relist is etcd's"
    );
    assert_eq!(state.policies, BTreeSet::from([p2.clone()]));

    // And it watches on from there: one change, one event.
    n1.publish_endpoint(e4, db).await.unwrap();
    let e = wait_event(&mut watcher, Duration::from_secs(5), |_| true).await;
    assert_eq!(e, endpoint(e4, db));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(watcher.try_next(), None, "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted_operations_and_watch_resume() {
    let Some(mut etcd) = etcd("etcd_killed_and_restarted_operations_and_watch_resume") else {
        return;
    };
    let (a, b) = (store(&etcd).await, store(&etcd).await);
    let n1 = Session::start(&a, &spec("n1", "10.0.0.11", 3), None)
        .await
        .unwrap();
    let cidr = n1.record().await.pod_cidr;
    let claim = n1.claim().await;
    let web = n1.identity(&labels(&[("app", "web")])).await.unwrap();
    n1.publish_endpoint(pod_ip(cidr, 1), web).await.unwrap();
    let mut watcher = b.watch();
    let first = until_synced(&mut watcher).await;
    assert_eq!(
        first
            .iter()
            .filter(|e| matches!(e, Event::EndpointUpsert(_)))
            .count(),
        1
    );

    // The watch is open (it opens after the list's Synced)...
    let deadline = Instant::now() + Duration::from_secs(5);
    while watcher.watches() == 0 {
        assert!(Instant::now() < deadline, "the watch never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...when etcd dies without a word, for longer than the node's lease.
    let pid = etcd.pid().unwrap();
    tokio::task::block_in_place(|| etcd.kill9());
    let down = Instant::now();
    let err = n1.identity(&labels(&[("app", "db")])).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        down.elapsed() < Duration::from_secs(6),
        "failed fast: {:?}",
        down.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::task::block_in_place(|| etcd.restart());
    assert_ne!(etcd.pid(), Some(pid));

    // The clients reconnect; writes resume; the lease survived the outage
    // (etcd renews leases when it starts), so nothing was lost.
    let db_labels = labels(&[("app", "db")]);
    let db = retry(Duration::from_secs(15), || n1.identity(&db_labels)).await;
    retry(Duration::from_secs(5), || {
        n1.publish_endpoint(pod_ip(cidr, 2), db)
    })
    .await;
    let e = wait_event(&mut watcher, Duration::from_secs(10), |e| {
        matches!(e, Event::EndpointUpsert(_))
    })
    .await;
    assert_eq!(
        e,
        Event::EndpointUpsert(EndpointRecord {
            ip: pod_ip(cidr, 2),
            identity: db,
            node: "n1".into()
        })
    );
    assert_eq!(n1.claim().await, claim, "same lease");
    assert_eq!(n1.renewals(), 0);
    assert_eq!(a.endpoints().await.unwrap().len(), 2);
    // Stays alive past the lease's TTL after the restart: the keeper
    // renews it on the new connection.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(a.nodes().await.unwrap().len(), 1);
    assert_eq!(a.endpoints().await.unwrap().len(), 2);
    // The watcher watched again from where it stood: no relist, and the
    // first endpoint was not emitted a second time.
    assert_eq!(watcher.lists(), 1);
    assert!(watcher.watches() >= 2);
    let mut rest = Vec::new();
    while let Some(e) = watcher.try_next() {
        rest.push(e);
    }
    assert!(
        rest.iter()
            .all(|e| !matches!(e, Event::EndpointUpsert(_) | Event::EndpointDelete(_))),
        "{rest:?}"
    );
}

/// What a consumer builds from the events.
#[derive(Default)]
struct State {
    nodes: BTreeSet<String>,
    endpoints: BTreeMap<IpAddr, u32>,
    identities: BTreeMap<u32, Labels>,
    policies: BTreeSet<PolicyKey>,
}

impl State {
    fn apply_all(&mut self, events: &[Event]) {
        for e in events {
            match e.clone() {
                Event::NodeUp(n) => {
                    self.nodes.insert(n.name);
                }
                Event::NodeDown(n) => {
                    assert!(self.nodes.remove(&n), "down twice: {n}");
                }
                Event::EndpointUpsert(e) => {
                    assert_ne!(
                        self.endpoints.insert(e.ip, e.identity),
                        Some(e.identity),
                        "same endpoint twice"
                    );
                }
                Event::EndpointDelete(ip) => {
                    assert!(self.endpoints.remove(&ip).is_some(), "delete of unknown {ip}");
                }
                Event::IdentityUpsert { id, labels } => {
                    assert_ne!(
                        self.identities.insert(id, labels.clone()),
                        Some(labels),
                        "identity twice"
                    );
                }
                Event::IdentityDelete(id) => {
                    assert!(self.identities.remove(&id).is_some());
                }
                Event::PolicyUpsert { key, .. } => {
                    self.policies.insert(key);
                }
                Event::PolicyDelete(key) => {
                    assert!(self.policies.remove(&key));
                }
                Event::Synced { .. } => {}
            }
        }
    }
}

#[test]
fn bad_names_and_urls_are_refused_with_what_is_wrong() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let err = Store::connect(&["10.0.0.1:2379".to_string()], DEFAULT_PREFIX)
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "etcd endpoint \"10.0.0.1:2379\" is not a URL (http://HOST:PORT)"
        );
    });
    let err = PolicyKey::new("NetworkPolicy", "a/b", "p").unwrap_err();
    assert_eq!(
        err.to_string(),
        "policy namespace \"a/b\" must be 1-253 printable characters without '/'"
    );
    assert!(PolicyKey::from_path("NetworkPolicy/default").is_err());
    assert_eq!(
        PolicyKey::from_path("NetworkPolicy/default/p").unwrap(),
        PolicyKey::new("NetworkPolicy", "default", "p").unwrap()
    );
    let _ = ip("10.0.0.1");
}
