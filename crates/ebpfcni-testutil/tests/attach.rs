//! Attaching to a real veth in throwaway namespaces, as clsact filters and
//! with tcx: one program per direction however often we attach,
//! attachments that outlive the attaching process, reattach keeping each
//! pod's kind of attachment, and real traffic passing or dropping as the
//! maps say.

use std::net::Ipv4Addr;
use std::process::Command;

use ebpfcni::{AttachMode, Hook, Identity, Maps, PolicyRule, Program};
use ebpfcni_testutil::frames::send_raw_frame;
use ebpfcni_testutil::{hook_programs, require_root, TestPinDir, VethPair};

const MODES: [AttachMode; 2] = [AttachMode::Clsact, AttachMode::Tcx];

fn assert_ours_alone_each_way(pair: &VethPair, mode: AttachMode) {
    for hook in Hook::ALL {
        let on = hook_programs(&pair.host, pair.host_ifname, hook);
        assert!(on.is_ours_alone(hook, mode), "{mode:?} {hook:?}: {on:?}");
    }
}

#[test]
fn attaching_twice_leaves_one_program_per_direction() {
    require_root!();
    for mode in MODES {
        let pins = TestPinDir::new("attach_twice");
        let pair = VethPair::new("att2", "10.13.0.1/24", "10.13.0.2/24");
        let ifindex = pair.host_ifindex();
        let (first, second) = pair.host.run_in(|| {
            let first = Program::load(pins.path()).unwrap();
            first.attach_as(ifindex, mode).unwrap();
            first.attach_as(ifindex, mode).unwrap();
            let second = Program::load(pins.path()).unwrap();
            second.attach_as(ifindex, mode).unwrap();
            let ids = |p: &Program| (p.id(Hook::FromPod), p.id(Hook::ToPod));
            (ids(&first), ids(&second))
        });
        assert_ours_alone_each_way(&pair, mode);
        let attached = pair.host.run_in(|| ebpfcni::attachment(ifindex).unwrap());
        assert_ne!(first, second);
        assert_eq!(
            (attached.ingress, attached.egress, attached.mode),
            (Some(second.0), Some(second.1), mode),
            "the later program replaced the first, each entry point on its hook"
        );

        pair.host.run_in(|| ebpfcni::detach(ifindex).unwrap());
        for hook in Hook::ALL {
            let on = hook_programs(&pair.host, pair.host_ifname, hook);
            assert!(on.is_empty(), "{mode:?} {hook:?}: {on:?}");
        }
        let detached = pair.host.run_in(|| ebpfcni::attachment(ifindex).unwrap());
        assert_eq!((detached.ingress, detached.egress), (None, None));
        // Detaching what is not attached is fine.
        pair.host.run_in(|| ebpfcni::detach(ifindex).unwrap());
    }
}

#[test]
fn attachment_outlives_the_process() {
    require_root!();
    for (mode, arg) in [(AttachMode::Clsact, None), (AttachMode::Tcx, Some("tcx"))] {
        let pins = TestPinDir::new("outlives");
        let pair = VethPair::new("attx", "10.13.0.1/24", "10.13.0.2/24");
        let status = Command::new(env!("CARGO_BIN_EXE_ebpfcni-test-helper"))
            .arg("attach")
            .arg(pins.path())
            .arg(pair.host.path())
            .arg(pair.host_ifname)
            .args(arg)
            .status()
            .unwrap();
        assert!(status.success());
        assert_ours_alone_each_way(&pair, mode);
        let ifindex = pair.host_ifindex();
        let attached = pair.host.run_in(|| ebpfcni::attachment(ifindex).unwrap());
        assert_eq!(attached.mode, mode);
        let info = ebpfcni::program_info(attached.ingress.expect("ingress attached")).unwrap();
        assert_eq!(info.name, Hook::FromPod.program_name());
        let maps = Maps::open(pins.path()).unwrap();
        assert!(
            info.foreign_maps(&maps).unwrap().is_empty()
                && info.uses(&maps, ebpfcni::PinnedMap::Interfaces).unwrap(),
            "uses the pinned maps"
        );
    }
}

/// A pod attached with tcx is judged like one with clsact filters;
/// reattach moves it to the pinned program and keeps it on tcx (and a pod
/// on clsact filters on them).
#[test]
fn reattach_keeps_each_pods_kind_of_attachment() {
    require_root!();
    for mode in MODES {
        let pins = TestPinDir::new("reattach_kind");
        let pair = VethPair::new("rkind", "10.13.0.1/24", "10.13.0.2/24");
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
        pair.host.run_in(|| old.attach_as(ifindex, mode).unwrap());
        assert!(pair.pod.ping("10.13.0.1", 1), "{mode:?}: allowed");

        let report = pair
            .host
            .run_in(|| ebpfcni::reattach(&maps, pins.path()).unwrap());
        assert_eq!(
            report.moved,
            vec![(pair.host_ifname.to_owned(), ifindex)],
            "{mode:?}"
        );
        assert_ours_alone_each_way(&pair, mode);
        let attached = pair.host.run_in(|| ebpfcni::attachment(ifindex).unwrap());
        assert!(
            attached.mode == mode && attached.ingress != Some(old.id(Hook::FromPod)),
            "{attached:?}"
        );
        assert!(pair.pod.ping("10.13.0.1", 1), "{mode:?}: still allowed");
        maps.policy.clear().unwrap();
        assert!(!pair.pod.ping("10.13.0.1", 1), "{mode:?}: no rule, dropped");
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

/// After an upgrade, reattach also moves the source check on the fabric
/// (cluster mode's from-fabric, attached by the agent) onto this build's
/// program: it used to stay on the old one until the agent restarted.
#[test]
fn reattach_moves_from_fabric_onto_this_build() {
    require_root!();
    let pins = TestPinDir::new("reattach_fabric");
    let pair = VethPair::new("rfab", "10.13.0.1/24", "10.13.0.2/24");
    let ifindex = pair.host_ifindex();
    let old = Program::load(pins.path()).unwrap();
    let maps = Maps::open(pins.path()).unwrap();
    pair.host.run_in(|| old.attach_fabric(ifindex).unwrap());
    let fabric = || pair.host.run_in(|| ebpfcni::fabric_attachment(ifindex).unwrap());
    assert_eq!(fabric(), Some(old.id(Hook::FromFabric)));

    let report = pair
        .host
        .run_in(|| ebpfcni::reattach(&maps, pins.path()).unwrap());
    assert_eq!(report.fabric, vec![(pair.host_ifname.to_owned(), ifindex)]);
    assert!(
        report.moved.is_empty() && report.unrecorded.is_empty(),
        "{report:?}"
    );
    let (shared, _) = Program::shared(pins.path()).unwrap();
    assert_eq!(fabric(), Some(shared.id(Hook::FromFabric)));
    assert_ne!(fabric(), Some(old.id(Hook::FromFabric)));
    let on = pair
        .host
        .run_in(|| ebpfcni::tc::tcx_programs(ifindex, Hook::FromFabric).unwrap());
    assert_eq!(
        on,
        vec![shared.id(Hook::FromFabric)],
        "the old one replaced, not added to"
    );

    // Again: already on this build, nothing moves.
    let again = pair
        .host
        .run_in(|| ebpfcni::reattach(&maps, pins.path()).unwrap());
    assert!(again.fabric.is_empty(), "{again:?}");
}
