//! One attachment's life as a runtime drives it: ADD (result, datapath,
//! spec versions, static IPAM), CHECK, DEL, rollback of a failed ADD,
//! policy between two pods, and many ADDs and DELs in parallel.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use common::{for_each_version, host_veth, pod_ip, Node, Pod};
use ebpfcni::{AttachMode, Hook, Identity, Maps, PolicyRule};
use ebpfcni_testutil::require_root;
use libbpf_rs::{MapHandle, MapType};
use serde_json::{json, Value};

fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':')
            .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok())
}

fn add_result_fields_and_datapath_setup(version: &str) {
    require_root!();
    let node = Node::new("addres");
    let pod = Pod::new("addres-pod");
    let mut conf = node.config(version);
    conf["mtu"] = json!(1400);
    conf["dns"] = json!({ "nameservers": ["10.13.1.53"], "search": ["pods.test"] });
    let result = node.add(&conf, &pod).ok();

    assert_eq!(result["cniVersion"], version, "[{version}] {result}");
    let ifaces = result["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifaces.len(), 2, "[{version}] {result}");
    let host = ifaces[0]["name"].as_str().unwrap();
    assert!(
        host.starts_with("ebc") && host.len() == 15,
        "[{version}] host veth {host}"
    );
    assert!(is_mac(ifaces[0]["mac"].as_str().unwrap()), "[{version}] {result}");
    assert!(
        ifaces[0].get("sandbox").is_none(),
        "[{version}] host end has no sandbox"
    );
    assert_eq!(ifaces[1]["name"], "eth0");
    assert_eq!(ifaces[1]["sandbox"], pod.ns.path().display().to_string());
    let pod_mac = ifaces[1]["mac"].as_str().unwrap();
    assert!(is_mac(pod_mac), "[{version}] {result}");
    let ips = result["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1);
    assert_eq!(ips[0]["address"], "10.13.1.2/24");
    assert_eq!(ips[0]["gateway"], "10.13.1.1");
    assert_eq!(ips[0]["interface"], 1);
    assert!(ips[0].get("version").is_none(), "no 'version' after 0.4.0");
    assert_eq!(
        result["routes"],
        json!([{ "dst": "0.0.0.0/0", "gw": "10.13.1.1" }])
    );
    assert_eq!(result["dns"], conf["dns"]);

    // What the kernel holds matches the result.
    let link = String::from_utf8(pod.ns.ip(&["-o", "link", "show", "eth0"]).stdout).unwrap();
    assert!(
        link.contains(pod_mac) && link.contains("mtu 1400") && link.contains("UP"),
        "{link}"
    );
    let addr = String::from_utf8(pod.ns.ip(&["-o", "-4", "addr", "show", "eth0"]).stdout).unwrap();
    assert!(
        addr.contains("10.13.1.2/24") && addr.contains("noprefixroute"),
        "{addr}"
    );
    let routes = String::from_utf8(pod.ns.ip(&["-4", "route", "show"]).stdout).unwrap();
    assert!(routes.contains("default via 10.13.1.1 dev eth0"), "{routes}");
    assert!(
        routes.contains("10.13.1.1 dev eth0") && routes.contains("scope link"),
        "{routes}"
    );
    let host_link = node.output("ip", &["-o", "link", "show", host]);
    assert!(
        host_link.contains("mtu 1400") && host_link.contains("UP"),
        "{host_link}"
    );
    let host_routes = node.output("ip", &["-4", "route", "show"]);
    assert!(
        host_routes.contains(&format!("10.13.1.2 dev {host}")),
        "{host_routes}"
    );
    let host_addr = node.output("ip", &["-o", "-4", "addr", "show", host]);
    assert!(host_addr.contains("10.13.1.1/32"), "{host_addr}");
    assert_eq!(node.output("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(), "1");
    for hook in Hook::ALL {
        let on = node.hook_programs(host, hook);
        assert!(on.is_ours_alone(hook, AttachMode::Clsact), "{hook:?}: {on:?}");
    }
    assert!(node.allocated("10.13.1.2"));

    node.del(&conf, &pod).ok();
    assert!(
        !node.links().contains(&host.to_string()),
        "[{version}] host veth left behind"
    );
    assert!(!node.allocated("10.13.1.2"), "[{version}] address not released");
}
for_each_version!(add_result_fields_and_datapath_setup);

#[test]
fn add_result_in_spec_0_4_0_has_ip_versions() {
    require_root!();
    let node = Node::new("v040");
    let pod = Pod::new("v040-pod");
    let conf = node.config("0.4.0");
    let result = node.add(&conf, &pod).ok();
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(result["ips"][0]["version"], "4");
    node.del(&conf, &pod).ok();
}

/// Sets both pods' identities, and the policy `rules`, in the node's maps.
fn seed(node: &Node, a: &str, b: &str, rules: &[PolicyRule]) -> Maps {
    let maps = Maps::open(node.pins.path()).expect("maps pinned by ADD");
    maps.endpoints.upsert(a.parse().unwrap(), id(100)).unwrap();
    maps.endpoints.upsert(b.parse().unwrap(), id(200)).unwrap();
    maps.policy.clear().unwrap();
    maps.policy.allow_all(rules).unwrap();
    maps
}

fn id(n: u32) -> Identity {
    n.to_string().parse().unwrap()
}

fn two_pods_ping_only_under_symmetric_policy(version: &str) {
    require_root!();
    let node = Node::new("ping");
    let (pa, pb) = (Pod::new("ping-a"), Pod::new("ping-b"));
    let conf = node.config(version);
    let (ra, rb) = (node.add(&conf, &pa).ok(), node.add(&conf, &pb).ok());
    let (a, b) = (pod_ip(&ra), pod_ip(&rb));
    let forward = PolicyRule {
        src: id(100),
        dst: id(200),
    };

    seed(&node, &a, &b, &[]);
    assert!(!pa.ns.ping(&b, 1), "[{version}] no policy: must not ping");
    seed(&node, &a, &b, &[forward]);
    assert!(
        !pa.ns.ping(&b, 1),
        "[{version}] one-way policy: replies must drop"
    );
    seed(&node, &a, &b, &[forward, forward.reverse()]);
    assert!(pa.ns.ping(&b, 2), "[{version}] symmetric policy: must ping");
    assert!(pb.ns.ping(&a, 2), "[{version}] symmetric policy: must ping back");

    node.del(&conf, &pa).ok();
    node.del(&conf, &pb).ok();
}
for_each_version!(two_pods_ping_only_under_symmetric_policy);

fn del_is_idempotent(version: &str) {
    require_root!();
    let node = Node::new("del");
    let conf = node.config(version);

    // Twice.
    let pod = Pod::new("del-twice");
    let host = host_veth(&node.add(&conf, &pod).ok());
    node.del(&conf, &pod).ok();
    node.del(&conf, &pod).ok();
    assert!(!node.links().contains(&host));

    // With an empty CNI_NETNS: still releases the address and the veth.
    let pod = Pod::new("del-nonetns");
    let result = node.add(&conf, &pod).ok();
    node.call("DEL", &conf, &pod.id, "", "eth0").ok();
    assert!(
        !node.links().contains(&host_veth(&result)),
        "[{version}] veth left"
    );
    assert!(!node.allocated(&pod_ip(&result)), "[{version}] address left");

    // After the namespace is gone.
    let pod = Pod::new("del-gone");
    let result = node.add(&conf, &pod).ok();
    let netns = pod.ns.path().display().to_string();
    let id = pod.id.clone();
    drop(pod);
    node.call("DEL", &conf, &id, &netns, "eth0").ok();
    node.call("DEL", &conf, &id, &netns, "eth0").ok();
    assert!(!node.allocated(&pod_ip(&result)), "[{version}] address left");
    assert!(
        node.allocations().is_empty(),
        "[{version}] {:?}",
        node.allocations()
    );
}
for_each_version!(del_is_idempotent);

fn check_passes_then_fails_when_a_program_is_removed(version: &str) {
    require_root!();
    let node = Node::new("check");
    let pod = Pod::new("check-pod");
    let conf = node.config(version);
    let result = node.add(&conf, &pod).ok();
    node.check(&conf, &pod, &result).ok();

    let host = host_veth(&result);
    let index = node.ns.ifindex(&host);
    node.ns
        .run_in(|| ebpfcni::tc::detach_hook(index, Hook::FromPod))
        .unwrap();
    let msg = node.check(&conf, &pod, &result).err(104);
    assert!(
        msg.contains("ingress") && msg.contains(&host),
        "[{version}] {msg}"
    );

    // After DEL, CHECK reports the interface as missing.
    node.del(&conf, &pod).ok();
    let msg = node.check(&conf, &pod, &result).err(104);
    assert!(msg.contains("eth0"), "[{version}] {msg}");
}
for_each_version!(check_passes_then_fails_when_a_program_is_removed);

/// `"attach": "tcx"` puts the program on the host veth with tcx instead of
/// clsact filters; CHECK reads it back the same way.
#[test]
fn a_network_can_attach_with_tcx() {
    require_root!();
    let node = Node::new("tcx");
    let pod = Pod::new("tcx-pod");
    let mut conf = node.config("1.0.0");
    conf["attach"] = json!("tcx");
    let result = node.add(&conf, &pod).ok();
    let host = host_veth(&result);
    for hook in Hook::ALL {
        let on = node.hook_programs(&host, hook);
        assert!(on.is_ours_alone(hook, AttachMode::Tcx), "{hook:?}: {on:?}");
    }
    node.check(&conf, &pod, &result).ok();

    let index = node.ns.ifindex(&host);
    node.ns
        .run_in(|| ebpfcni::tc::detach_hook(index, Hook::ToPod))
        .unwrap();
    let msg = node.check(&conf, &pod, &result).err(104);
    assert!(msg.contains("egress") && msg.contains(&host), "{msg}");
    node.del(&conf, &pod).ok();
    assert!(!node.ns.links().contains(&host), "{host} deleted");
}

#[test]
fn check_notices_a_missing_route() {
    require_root!();
    let node = Node::new("checkrt");
    let pod = Pod::new("checkrt-pod");
    let conf = node.config("1.1.0");
    let result = node.add(&conf, &pod).ok();
    pod.ns.ip(&["route", "del", "default"]);
    let msg = node.check(&conf, &pod, &result).err(104);
    assert!(msg.contains("0.0.0.0/0 via 10.13.1.1"), "{msg}");
    node.del(&conf, &pod).ok();
}

/// CHECK expects the routes ADD made from the IPAM result: here an extra
/// IPAM route, which it notices when it goes missing.
#[test]
fn check_follows_the_routes_add_made_from_ipam() {
    require_root!();
    let node = Node::new("checkipamrt");
    let pod = Pod::new("checkipamrt-pod");
    let mut conf = node.static_config("1.1.0", "10.13.3.10/24", Some("10.13.3.1"));
    conf["ipam"]["routes"] = json!([{ "dst": "10.99.0.0/16" }, { "dst": "0.0.0.0/0", "gw": "10.13.3.1" }]);
    let result = node.add(&conf, &pod).ok();
    assert_eq!(
        result["routes"],
        json!([
            { "dst": "10.99.0.0/16", "gw": "10.13.3.1" },
            { "dst": "0.0.0.0/0", "gw": "10.13.3.1" }
        ])
    );
    node.check(&conf, &pod, &result).ok();
    pod.ns.ip(&["route", "del", "10.99.0.0/16"]);
    let msg = node.check(&conf, &pod, &result).err(104);
    assert!(msg.contains("10.99.0.0/16 via 10.13.3.1"), "{msg}");
    node.del(&conf, &pod).ok();
}

/// Pins a `policy_map` of another layout (4-byte keys, as an imagined
/// older build had) where the program expects its own.
fn pin_incompatible_policy_map(pin_dir: &Path) -> PathBuf {
    let path = ebpfcni::PinnedMap::Policy.path(pin_dir);
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut old =
        MapHandle::create(MapType::Hash, Some("policy_map"), 4, 1, 1024, &opts).expect("create a map");
    old.pin(&path).expect("pin it");
    path
}

#[test]
fn failure_after_ipam_rolls_back() {
    require_root!();
    let node = Node::new("rollback");
    let pod = Pod::new("rollback-pod");
    let conf = node.config("1.0.0");
    // Everything succeeds up to loading the program, which refuses the map.
    let pinned = pin_incompatible_policy_map(node.pins.path());
    let msg = node.add(&conf, &pod).err(100);
    assert!(
        msg.contains(&pinned.display().to_string()) && msg.contains("incompatible"),
        "{msg}"
    );
    // host-local makes its network directory on first use: IPAM ran.
    assert!(node.data_dir.join(&node.network).exists(), "failed before IPAM");
    assert!(
        node.allocations().is_empty(),
        "allocation kept: {:?}",
        node.allocations()
    );
    assert!(
        !node.links().iter().any(|l| l.starts_with("ebc")),
        "veth kept: {:?}",
        node.links()
    );
    assert!(
        !pod.ns.links().iter().any(|l| l == "eth0"),
        "eth0 kept in the pod"
    );
    assert!(pinned.exists(), "the foreign map was replaced");
}

#[test]
fn duplicate_add_is_refused_without_releasing_the_first() {
    require_root!();
    let node = Node::new("dup");
    let pod = Pod::new("dup-pod");
    let conf = node.config("1.0.0");
    let result = node.add(&conf, &pod).ok();
    node.add(&conf, &pod).err(101);
    assert!(node.allocated(&pod_ip(&result)));
    node.check(&conf, &pod, &result).ok();
    node.del(&conf, &pod).ok();
}

#[test]
fn parallel_adds_and_dels_32() {
    parallel_adds_and_dels(32);
}

#[test]
fn parallel_adds_and_dels_100() {
    parallel_adds_and_dels(100);
}

/// `pods` ADDs at once end with one set of maps and one pinned program,
/// which every pod runs; as many DELs at once remove everything.
fn parallel_adds_and_dels(pods: usize) {
    require_root!();
    const NAME: &str = "par";
    let node = Node::new(&format!("{NAME}{pods}"));
    let conf = node.config("1.1.0");
    let count = pods;
    let pods: Vec<Pod> = (0..count)
        .map(|i| Pod::new(&format!("{NAME}{count}-{i}")))
        .collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| node.add(&conf, p))).collect();
        handles.into_iter().map(|h| h.join().unwrap().ok()).collect()
    });
    let ips: HashSet<String> = results.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), count, "addresses must be distinct");

    // One set of maps, and every veth runs our program on those maps,
    // with one filter per direction.
    let mut pins: Vec<_> = std::fs::read_dir(node.pins.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pins.sort();
    let mut expected: Vec<String> = ebpfcni::PinnedMap::ALL
        .iter()
        .map(|m| m.name().to_string())
        .chain(ebpfcni::LocalMap::ALL.map(|m| m.name().to_string()))
        .chain(Hook::ENTRY_POINTS.map(|hook| {
            let pin = ebpfcni::program_pin(node.pins.path(), hook, ebpfcni::PROGRAM_BUILD_ID);
            pin.file_name().unwrap().to_str().unwrap().to_owned()
        }))
        .collect();
    expected.sort();
    assert_eq!(pins, expected, "one set of maps and one pinned program");
    let maps = Maps::open(node.pins.path()).unwrap();
    let shared = ebpfcni::Program::pinned(node.pins.path(), &maps)
        .unwrap()
        .expect("this build's program is pinned");
    for result in &results {
        let host = host_veth(result);
        for hook in Hook::ALL {
            let on = node.hook_programs(&host, hook);
            assert!(
                on.is_ours_alone(hook, AttachMode::Clsact),
                "{host} {hook:?}: {on:?}"
            );
        }
        let index = node.ns.ifindex(&host);
        let attached = node.ns.run_in(|| ebpfcni::attachment(index).unwrap());
        for (hook, id) in [
            (Hook::FromPod, attached.ingress.unwrap()),
            (Hook::ToPod, attached.egress.unwrap()),
        ] {
            assert_eq!(
                id,
                shared.id(hook),
                "{host} runs another program than the pinned one"
            );
            let info = ebpfcni::program_info(id).unwrap();
            assert_eq!(info.name, hook.program_name());
            assert!(
                info.foreign_maps(&maps).unwrap().is_empty()
                    && info.uses(&maps, ebpfcni::PinnedMap::Endpoints).unwrap(),
                "{host}: {info:?}"
            );
        }
    }

    std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| node.del(&conf, p))).collect();
        for h in handles {
            h.join().unwrap().ok();
        }
    });
    assert!(
        !node.links().iter().any(|l| l.starts_with("ebc")),
        "{:?}",
        node.links()
    );
    assert!(node.allocations().is_empty(), "{:?}", node.allocations());
}

fn static_ipam_with_and_without_gateway(version: &str) {
    require_root!();
    let node = Node::new("static");
    let (pa, pb) = (Pod::new("static-a"), Pod::new("static-b"));
    // With a gateway from IPAM.
    let ca = node.static_config(version, "10.13.2.10/24", Some("10.13.2.1"));
    let ra = node.add(&ca, &pa).ok();
    assert_eq!(ra["ips"][0]["address"], "10.13.2.10/24");
    assert_eq!(ra["ips"][0]["gateway"], "10.13.2.1");
    node.check(&ca, &pa, &ra).ok();
    // Without: the link-local gateway every host veth holds.
    let cb = node.static_config(version, "10.13.2.20/32", None);
    let rb = node.add(&cb, &pb).ok();
    assert_eq!(rb["ips"][0]["gateway"], "169.254.1.1");
    node.check(&cb, &pb, &rb).ok();

    let rule = PolicyRule {
        src: id(100),
        dst: id(200),
    };
    seed(&node, "10.13.2.10", "10.13.2.20", &[rule, rule.reverse()]);
    assert!(pa.ns.ping("10.13.2.20", 2), "[{version}] static pods must ping");
    assert!(
        pb.ns.ping("10.13.2.10", 2),
        "[{version}] static pods must ping back"
    );

    node.del(&ca, &pa).ok();
    node.del(&cb, &pb).ok();
    assert!(
        !node.links().iter().any(|l| l.starts_with("ebc")),
        "{:?}",
        node.links()
    );
}
for_each_version!(static_ipam_with_and_without_gateway);
