//! The program's verdict on crafted frames, through BPF_PROG_TEST_RUN, with
//! real pinned maps seeded through the library. Each case also checks which
//! drop counter moved, so the *reason* is asserted, not just the verdict.

use std::net::Ipv4Addr;

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{Hook, Identity, PinnedMap, PolicyRule, TraceLevel, TC_ACT_OK, TC_ACT_SHOT};
use ebpfcni_testutil::datapath::{Datapath, TEST_IFINDEX};
use ebpfcni_testutil::frames::{
    eth, ipv4, ipv4_header, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ETH_P_LLDP, IPPROTO_ICMP,
};
use ebpfcni_testutil::require_root;
use libbpf_rs::{MapCore as _, MapFlags, MapHandle};

const FRONTEND: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 3);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 99);

/// frontend (1001) may send to backend (1002); nothing else is allowed.
/// The to-pod hook: no source check (tests/trust.rs has those).
fn fixture(test: &str) -> Fixture {
    let dp = Datapath::new(test);
    let (fe, be) = (Identity::new(1001).unwrap(), Identity::new(1002).unwrap());
    dp.maps.endpoints.upsert(FRONTEND, fe).unwrap();
    dp.maps.endpoints.upsert(BACKEND, be).unwrap();
    dp.maps.policy.allow(PolicyRule::new(fe, be)).unwrap();
    Fixture(dp)
}

struct Fixture(Datapath);

impl std::ops::Deref for Fixture {
    type Target = Datapath;
    fn deref(&self) -> &Datapath {
        &self.0
    }
}

impl Fixture {
    fn assert_pass(&self, what: &str, frame: &[u8]) {
        self.0.assert_pass(what, Hook::ToPod, frame);
    }

    fn assert_drop(&self, what: &str, frame: &[u8], reason: Reason) {
        self.0.assert_drop(what, Hook::ToPod, frame, reason);
    }
}

#[test]
fn non_ipv4_frames_pass_untouched() {
    require_root!();
    let fx = fixture("non_ipv4");
    let mut arp = eth(ETH_P_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.resize(42, 0);
    fx.assert_pass("ARP", &arp);

    let mut ipv6 = eth(ETH_P_IPV6);
    ipv6.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    ipv6.resize(14 + 40 + 8, 0);
    fx.assert_pass("IPv6 UDP", &ipv6);

    let mut ns = eth(ETH_P_IPV6);
    ns.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]); // next header ICMPv6
    ns.resize(14 + 40, 0);
    ns.extend_from_slice(&[135, 0, 0, 0]); // neighbour solicitation
    ns.resize(14 + 40 + 32, 0);
    fx.assert_pass("IPv6 neighbour solicitation", &ns);

    let mut lldp = eth(ETH_P_LLDP);
    lldp.resize(60, 0);
    fx.assert_pass("LLDP", &lldp);
}

/// On a real device the kernel strips the VLAN tag before tc ingress
/// (skb_vlan_untag), so the program then sees the inner IPv4 header. A frame
/// that still carries the tag is not IPv4 at the program's level: it passes.
#[test]
fn vlan_tagged_frame_passes_as_non_ipv4() {
    require_root!();
    let fx = fixture("vlan");
    let mut f = eth(ETH_P_8021Q);
    f.extend_from_slice(&[0, 10]); // TCI: VLAN 10
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    f.extend(ipv4_header(STRANGER, STRANGER, 5, 0, IPPROTO_ICMP, 8));
    fx.assert_pass("VLAN-tagged IPv4", &f);
}

#[test]
fn ipv4_allowed_pair_passes() {
    require_root!();
    let fx = fixture("allowed");
    fx.assert_pass("frontend -> backend", &ipv4(FRONTEND, BACKEND));
}

#[test]
fn ipv4_reverse_direction_without_rule_drops() {
    require_root!();
    let fx = fixture("reverse");
    fx.assert_drop(
        "backend -> frontend",
        &ipv4(BACKEND, FRONTEND),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
}

#[test]
fn unknown_endpoints_drop() {
    require_root!();
    let fx = fixture("unknown");
    fx.assert_drop(
        "unknown source",
        &ipv4(STRANGER, BACKEND),
        Reason::EBPFCNI_DROP_UNKNOWN_SRC,
    );
    fx.assert_drop(
        "unknown destination",
        &ipv4(FRONTEND, STRANGER),
        Reason::EBPFCNI_DROP_UNKNOWN_DST,
    );
    fx.assert_drop(
        "both unknown",
        &ipv4(STRANGER, STRANGER),
        Reason::EBPFCNI_DROP_UNKNOWN_SRC,
    );
}

#[test]
fn malformed_ipv4_headers_drop() {
    require_root!();
    let fx = fixture("malformed");
    let malformed = Reason::EBPFCNI_DROP_MALFORMED;

    // Frames whose IPv4 header is cut short reach tc on a real device, but
    // BPF_PROG_TEST_RUN refuses them (EINVAL below 14 + 20 bytes since
    // 6.x): attach.rs sends them from a pod over a real veth instead.
    let mut ihl4 = eth(ETH_P_IP);
    ihl4.extend(ipv4_header(FRONTEND, BACKEND, 4, 0, IPPROTO_ICMP, 8));
    fx.assert_drop("ihl = 4", &ihl4, malformed);

    let mut long_options = eth(ETH_P_IP);
    long_options.extend(ipv4_header(FRONTEND, BACKEND, 5, 0, IPPROTO_ICMP, 0));
    long_options[14] = 0x4f; // ihl 15: 60 bytes claimed, 20 present
    fx.assert_drop(
        "ihl claims options longer than the packet",
        &long_options,
        malformed,
    );

    let mut version6 = ipv4(FRONTEND, BACKEND);
    version6[14] = 0x65;
    fx.assert_drop("version 6 in an IPv4 frame", &version6, malformed);
}

#[test]
fn ipv4_with_valid_options_is_judged_by_policy() {
    require_root!();
    let fx = fixture("options");
    let mut f = eth(ETH_P_IP);
    f.extend(ipv4_header(FRONTEND, BACKEND, 6, 0, IPPROTO_ICMP, 8));
    fx.assert_pass("allowed, 4 bytes of options", &f);
    let mut f = eth(ETH_P_IP);
    f.extend(ipv4_header(BACKEND, FRONTEND, 15, 0, IPPROTO_ICMP, 8));
    fx.assert_drop("denied, 40 bytes of options", &f, Reason::EBPFCNI_DROP_NO_POLICY);
}

/// Fragments carry both addresses, so each is judged by policy like any
/// packet (the program does not look at L4).
#[test]
fn fragments_are_judged_by_policy() {
    require_root!();
    let fx = fixture("fragments");
    for (name, frag) in [("first fragment", 0x2000u16), ("later fragment", 0x00b9)] {
        let mut f = eth(ETH_P_IP);
        f.extend(ipv4_header(FRONTEND, BACKEND, 5, frag, IPPROTO_ICMP, 8));
        fx.assert_pass(name, &f);
        let mut f = eth(ETH_P_IP);
        f.extend(ipv4_header(BACKEND, FRONTEND, 5, frag, IPPROTO_ICMP, 8));
        fx.assert_drop(name, &f, Reason::EBPFCNI_DROP_NO_POLICY);
    }
}

#[test]
fn verdicts_do_not_depend_on_trace_level_or_hook() {
    require_root!();
    let fx = fixture("trace_levels");
    // Both addresses behind the test interface, so that the from-pod
    // hook's source check passes them and policy decides.
    fx.maps
        .interfaces
        .set(TEST_IFINDEX, &[FRONTEND, BACKEND])
        .unwrap();
    for level in TraceLevel::ALL_LEVELS {
        fx.maps.config.set_trace_level(level).unwrap();
        assert_eq!(
            fx.maps.config.trace_level().unwrap(),
            ebpfcni::Stored::Valid(level)
        );
        for hook in Hook::ALL {
            let run = |f: &[u8]| fx.verdict(hook, f);
            assert_eq!(run(&ipv4(FRONTEND, BACKEND)), TC_ACT_OK, "{level} {hook:?}");
            assert_eq!(run(&ipv4(BACKEND, FRONTEND)), TC_ACT_SHOT, "{level} {hook:?}");
        }
    }
}

/// The library writes endpoint keys as host-order integers and the program
/// converts packet addresses with bpf_ntohl: an endpoint written for
/// 10.13.0.2 must match a frame from 10.13.0.2 and nothing else.
#[test]
fn endpoint_byte_order_matches_the_program() {
    require_root!();
    let fx = fixture("byte_order");
    let swapped = Ipv4Addr::from(u32::from(FRONTEND).swap_bytes()); // 2.0.13.10
    fx.assert_drop(
        "byte-swapped source",
        &ipv4(swapped, BACKEND),
        Reason::EBPFCNI_DROP_UNKNOWN_SRC,
    );
    fx.maps.endpoints.delete(FRONTEND).unwrap();
    fx.assert_drop(
        "after delete",
        &ipv4(FRONTEND, BACKEND),
        Reason::EBPFCNI_DROP_UNKNOWN_SRC,
    );
    fx.maps
        .endpoints
        .upsert(FRONTEND, Identity::new(1001).unwrap())
        .unwrap();
    fx.assert_pass("after upsert", &ipv4(FRONTEND, BACKEND));
}

/// Entries the tools never write count as absent (the precedence in
/// ebpfcni.h): an endpoint with identity 0 is an unknown address, even when
/// a rule names identity 0.
#[test]
fn an_endpoint_with_identity_0_is_unknown() {
    require_root!();
    let fx = fixture("identity_0");
    let pinned = |map: PinnedMap| MapHandle::from_pinned_path(map.path(fx.pins.path())).unwrap();
    let stranger = u32::from(STRANGER).to_ne_bytes();
    pinned(PinnedMap::Endpoints)
        .update(&stranger, &0u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap();
    // Rules from and to identity 0 (written by hand; the tools refuse 0).
    for (src, dst) in [(0u32, 1002u32), (1001, 0)] {
        let key = [src.to_ne_bytes(), dst.to_ne_bytes()].concat();
        pinned(PinnedMap::Policy)
            .update(&key, &[1], MapFlags::ANY)
            .unwrap();
    }
    fx.assert_drop(
        "identity-0 source",
        &ipv4(STRANGER, BACKEND),
        Reason::EBPFCNI_DROP_UNKNOWN_SRC,
    );
    fx.assert_drop(
        "identity-0 destination",
        &ipv4(FRONTEND, STRANGER),
        Reason::EBPFCNI_DROP_UNKNOWN_DST,
    );
}

#[test]
fn every_drop_reason_has_a_name() {
    let max = Reason::EBPFCNI_DROP_REASON_MAX.0;
    for value in 1..max {
        assert!(
            ebpfcni::drop_reason_name(Reason(value)).is_some(),
            "drop reason {value} has no name"
        );
    }
    assert!(ebpfcni::drop_reason_name(Reason(0)).is_none());
    assert!(ebpfcni::drop_reason_name(Reason(max)).is_none());
}
