//! Attaching to a real veth in throwaway namespaces: one program per
//! direction however often we attach, attachments that outlive the
//! attaching process, an earlier build's clsact filters giving way to tcx,
//! and real traffic passing or dropping as the maps say.

use std::net::Ipv4Addr;
use std::process::Command;

use ebpfcni::{Hook, Identity, Maps, PolicyRule, Program};
use ebpfcni_testutil::frames::send_raw_frame;
use ebpfcni_testutil::{hook_programs, require_root, TestPinDir, VethPair};

fn assert_ours_alone_each_way(pair: &VethPair) {
    for hook in Hook::ALL {
        let on = hook_programs(&pair.host, pair.host_ifname, hook);
        assert!(on.is_ours_alone(hook), "{hook:?}: {on:?}");
    }
}

/// What a build before tcx attached: our program as clsact filters at our
/// handle and priority.
fn attach_as_clsact_filters(program: &Program, ifindex: u32) {
    for hook in Hook::ALL {
        let mut builder = libbpf_rs::TcHookBuilder::new(program.as_fd(hook));
        builder
            .ifindex(ifindex as i32)
            .replace(true)
            .handle(ebpfcni::TC_HANDLE)
            .priority(ebpfcni::TC_PRIORITY);
        builder.hook(libbpf_rs::TC_INGRESS).create().unwrap();
        let point = match hook {
            Hook::FromPod => libbpf_rs::TC_INGRESS,
            Hook::ToPod => libbpf_rs::TC_EGRESS,
        };
        builder.hook(point).attach().unwrap();
    }
}

#[test]
fn attaching_twice_leaves_one_program_per_direction() {
    require_root!();
    let pins = TestPinDir::new("attach_twice");
    let pair = VethPair::new("att2", "10.13.0.1/24", "10.13.0.2/24");
    let ifindex = pair.host_ifindex();
    let (first, second) = pair.host.run_in(|| {
        let first = Program::load(pins.path()).unwrap();
        first.attach(ifindex).unwrap();
        first.attach(ifindex).unwrap();
        let second = Program::load(pins.path()).unwrap();
        second.attach(ifindex).unwrap();
        let ids = |p: &Program| (p.id(Hook::FromPod), p.id(Hook::ToPod));
        (ids(&first), ids(&second))
    });
    assert_ours_alone_each_way(&pair);
    let attached = pair.host.run_in(|| ebpfcni::attachment(ifindex).unwrap());
    assert_ne!(first, second);
    assert_eq!(
        (attached.ingress, attached.egress),
        (Some(second.0), Some(second.1)),
        "the later program replaced the first, each entry point on its hook"
    );

    pair.host.run_in(|| ebpfcni::detach(ifindex).unwrap());
    for hook in Hook::ALL {
        assert!(hook_programs(&pair.host, pair.host_ifname, hook).is_empty());
    }
    let detached = pair.host.run_in(|| ebpfcni::attachment(ifindex).unwrap());
    assert_eq!((detached.ingress, detached.egress), (None, None));
    // Detaching what is not attached is fine.
    pair.host.run_in(|| ebpfcni::detach(ifindex).unwrap());
}

#[test]
fn attachment_outlives_the_process() {
    require_root!();
    let pins = TestPinDir::new("outlives");
    let pair = VethPair::new("attx", "10.13.0.1/24", "10.13.0.2/24");
    let status = Command::new(env!("CARGO_BIN_EXE_ebpfcni-test-helper"))
        .arg("attach")
        .arg(pins.path())
        .arg(pair.host.path())
        .arg(pair.host_ifname)
        .status()
        .unwrap();
    assert!(status.success());
    assert_ours_alone_each_way(&pair);
    let ifindex = pair.host_ifindex();
    let attached = pair.host.run_in(|| ebpfcni::attachment(ifindex).unwrap());
    let info = ebpfcni::program_info(attached.ingress.expect("ingress attached")).unwrap();
    assert_eq!(info.name, Hook::FromPod.program_name());
    let maps = Maps::open(pins.path()).unwrap();
    assert!(
        info.foreign_maps(&maps).unwrap().is_empty()
            && info.uses(&maps, ebpfcni::PinnedMap::Interfaces).unwrap(),
        "uses the pinned maps"
    );
}

/// A pod attached by a build before tcx runs our program as clsact
/// filters: attachment() reports them, reattach moves the pod to tcx and
/// takes them away, and the pod's traffic is judged throughout.
#[test]
fn an_earlier_builds_clsact_filters_give_way_to_tcx() {
    require_root!();
    let pins = TestPinDir::new("clsact_tcx");
    let pair = VethPair::new("cltx", "10.13.0.1/24", "10.13.0.2/24");
    let ifindex = pair.host_ifindex();
    let old = Program::load(pins.path()).unwrap();
    let maps = Maps::open(pins.path()).unwrap();
    let (host, pod) = (Identity::new(1).unwrap(), Identity::new(2).unwrap());
    maps.endpoints.upsert(Ipv4Addr::new(10, 13, 0, 1), host).unwrap();
    maps.endpoints.upsert(Ipv4Addr::new(10, 13, 0, 2), pod).unwrap();
    maps.interfaces
        .set(ifindex, &[Ipv4Addr::new(10, 13, 0, 2)])
        .unwrap();
    let rule = PolicyRule::new(pod, host);
    maps.policy.allow_all(&[rule, rule.reverse()]).unwrap();

    pair.host.run_in(|| attach_as_clsact_filters(&old, ifindex));
    let attached = pair.host.run_in(|| ebpfcni::attachment(ifindex).unwrap());
    assert_eq!(
        (attached.ingress, attached.egress, attached.clsact),
        (Some(old.id(Hook::FromPod)), Some(old.id(Hook::ToPod)), true)
    );
    assert!(pair.pod.ping("10.13.0.1", 1), "allowed under the old filters");

    let report = pair
        .host
        .run_in(|| ebpfcni::reattach(&maps, pins.path()).unwrap());
    assert_eq!(report.moved, vec![(pair.host_ifname.to_owned(), ifindex)]);
    assert_ours_alone_each_way(&pair);
    let attached = pair.host.run_in(|| ebpfcni::attachment(ifindex).unwrap());
    assert!(
        !attached.clsact && attached.ingress != Some(old.id(Hook::FromPod)),
        "{attached:?}"
    );
    assert!(pair.pod.ping("10.13.0.1", 1), "allowed under tcx");
    maps.policy.clear().unwrap();
    assert!(!pair.pod.ping("10.13.0.1", 1), "and judged: no rule, dropped");

    // detach takes both kinds away.
    pair.host.run_in(|| attach_as_clsact_filters(&old, ifindex));
    pair.host.run_in(|| ebpfcni::detach(ifindex).unwrap());
    for hook in Hook::ALL {
        let on = hook_programs(&pair.host, pair.host_ifname, hook);
        assert!(on.is_empty(), "{hook:?}: {on:?}");
    }
}

/// ping from the pod namespace to the host end: the request crosses tc
/// ingress of the host veth, the reply its tc egress.
#[test]
fn real_traffic_follows_the_maps() {
    require_root!();
    let pins = TestPinDir::new("traffic");
    let pair = VethPair::new("trf", "10.13.0.1/24", "10.13.0.2/24");
    let ifindex = pair.host_ifindex();
    assert!(pair.pod.ping("10.13.0.1", 1), "no connectivity before attaching");

    pair.host
        .run_in(|| Program::load(pins.path()).unwrap().attach(ifindex).unwrap());
    let maps = Maps::open(pins.path()).unwrap();
    assert!(
        !pair.pod.ping("10.13.0.1", 2),
        "no record of the pod's address: everything it sends is dropped"
    );
    let unknown_interface = ebpfcni::types::ebpfcni_drop_reason::EBPFCNI_DROP_UNKNOWN_INTERFACE;
    assert!(maps.drops.get(unknown_interface).unwrap() >= 2);
    // What the CNI plugin records at ADD.
    maps.interfaces
        .set(ifindex, &[Ipv4Addr::new(10, 13, 0, 2)])
        .unwrap();
    assert!(
        !pair.pod.ping("10.13.0.1", 2),
        "unknown endpoints must be dropped"
    );

    let (host, pod) = (Identity::new(1).unwrap(), Identity::new(2).unwrap());
    maps.endpoints.upsert(Ipv4Addr::new(10, 13, 0, 1), host).unwrap();
    maps.endpoints.upsert(Ipv4Addr::new(10, 13, 0, 2), pod).unwrap();
    assert!(!pair.pod.ping("10.13.0.1", 2), "no policy: dropped");

    let rule = PolicyRule::new(pod, host);
    maps.policy.allow_all(&[rule, rule.reverse()]).unwrap();
    assert!(pair.pod.ping("10.13.0.1", 3), "symmetric allow: ping passes");

    maps.policy.revoke(rule.reverse()).unwrap();
    assert!(!pair.pod.ping("10.13.0.1", 2), "one-way rule: replies dropped");
    let no_policy = maps
        .drops
        .get(ebpfcni::types::ebpfcni_drop_reason::EBPFCNI_DROP_NO_POLICY)
        .unwrap();
    assert!(no_policy >= 2, "replies counted as no-policy drops: {no_policy}");

    // ARP keeps working while IPv4 is denied: the neighbour entry is refreshed.
    maps.policy.clear().unwrap();
    pair.pod.ip(&["neigh", "flush", "dev", pair.pod_ifname]);
    assert!(!pair.pod.ping("10.13.0.1", 1));
    let neigh = pair
        .pod
        .ip(&["neigh", "show", "10.13.0.1", "dev", pair.pod_ifname]);
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(neigh.contains("lladdr"), "ARP was answered: {neigh}");
}

/// Frames whose IPv4 header is cut short cannot go through
/// BPF_PROG_TEST_RUN (the kernel refuses them), but a pod can send them:
/// the program must drop them as malformed at the host veth's tc ingress.
#[test]
fn truncated_ipv4_from_a_pod_is_dropped_as_malformed() {
    require_root!();
    let pins = TestPinDir::new("truncated");
    let pair = VethPair::new("trunc", "10.13.0.1/24", "10.13.0.2/24");
    let ifindex = pair.host_ifindex();
    pair.host
        .run_in(|| Program::load(pins.path()).unwrap().attach(ifindex).unwrap());
    let maps = Maps::open(pins.path()).unwrap();
    let malformed = || {
        maps.drops
            .get(ebpfcni::types::ebpfcni_drop_reason::EBPFCNI_DROP_MALFORMED)
            .unwrap()
    };

    let mut frame = vec![0xff; 6]; // broadcast: tc ingress runs before any MAC filtering
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
    let header = [
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 13, 0, 2, 10, 13, 0, 1,
    ];
    for cut in [1, 10, 19] {
        let before = malformed();
        let mut f = frame.clone();
        f.extend_from_slice(&header[..cut]);
        pair.pod
            .run_in(|| send_raw_frame(pair.pod_ifname, &f))
            .expect("send raw frame");
        assert_eq!(malformed(), before + 1, "{cut} bytes of IPv4 header");
    }
}
