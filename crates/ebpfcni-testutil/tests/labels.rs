//! Label policy (precedence 8b) in the real program, through
//! BPF_PROG_TEST_RUN: per-direction isolation, rules of each side's own
//! identity, deny winning over allow, identities outside label policy left
//! to the plan's rules, replies of what it allowed passing as tracked; and
//! the library's one Rust copy of the decision (PolicyIndex) agreeing with
//! the program on every case.

use std::net::Ipv4Addr;

use ebpfcni::types::{self, ebpfcni_drop_reason as Reason};
use ebpfcni::{
    Hook, Identity, Isolation, LabelKind, LabelRule, PolicyIndex, PolicyRule, Protocol, Selector, ANY_PEER,
    TC_ACT_OK,
};
use ebpfcni_testutil::datapath::Datapath;
use ebpfcni_testutil::frames::{icmp_echo, ipv4_tcp, ipv4_udp};
use ebpfcni_testutil::require_root;
use libbpf_rs::MapCore;

// frontend 300, backend 301 (isolated for ingress), other 302 (selected by
// no policy), hand 1001 (the plan's).
use ebpfcni_testutil::datapath::label_pods::{self, BACKEND, FRONTEND, HAND, OTHER};
const TCP: Protocol = Protocol(6);
const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// The NetworkPolicy "backend allows ingress from frontend on TCP 8080";
/// frontend, backend and other under label policy; HAND the plan's.
fn fixture(test: &str) -> Datapath {
    let dp = Datapath::new(test);
    label_pods::seed(&dp, 1);
    dp
}

/// The program's verdict at from-pod's place of judgement (to-pod: no
/// source check) agrees with PolicyIndex's decision.
fn agrees(dp: &Datapath, src: (Ipv4Addr, u32), dst: (Ipv4Addr, u32), frame: &[u8], protocol: u8, dport: u16) {
    let index = PolicyIndex::read(&dp.maps).unwrap();
    let rust = index.action(src.1, dst.1, protocol, dport).is_some();
    let program = dp.verdict(Hook::ToPod, frame) == TC_ACT_OK;
    assert_eq!(
        rust, program,
        "{src:?} -> {dst:?} {protocol}/{dport}: library {rust}, program {program}"
    );
}

#[test]
fn an_isolated_receiver_takes_only_what_its_rules_allow() {
    require_root!();
    let dp = fixture("labels_ingress");
    assert!(dp.maps.config.label_policy().unwrap() && dp.maps.config.conntrack().unwrap());
    dp.assert_pass(
        "frontend -> backend 8080/tcp (ingress rule)",
        Hook::ToPod,
        &ipv4_tcp(FRONTEND, BACKEND, 40000, 8080, SYN),
    );
    dp.assert_drop(
        "frontend -> backend 8081/tcp",
        Hook::ToPod,
        &ipv4_tcp(FRONTEND, BACKEND, 40001, 8081, SYN),
        Reason::EBPFCNI_DROP_ISOLATED,
    );
    dp.assert_drop(
        "other -> backend 8080/tcp (not frontend)",
        Hook::ToPod,
        &ipv4_tcp(OTHER, BACKEND, 40002, 8080, SYN),
        Reason::EBPFCNI_DROP_ISOLATED,
    );
    // Selected by no policy: unrestricted both ways, with no rule at all.
    dp.assert_pass(
        "frontend -> other",
        Hook::ToPod,
        &icmp_echo(FRONTEND, OTHER, 8, 7),
    );
    dp.assert_pass(
        "other -> frontend",
        Hook::ToPod,
        &ipv4_udp(OTHER, FRONTEND, 5353, 53),
    );
    // Backend is isolated for ingress only: it may open connections.
    dp.assert_pass(
        "backend -> other (egress not isolated)",
        Hook::ToPod,
        &icmp_echo(BACKEND, OTHER, 8, 9),
    );
}

#[test]
fn replies_of_allowed_connections_pass_and_others_do_not() {
    require_root!();
    let dp = fixture("labels_replies");
    dp.assert_pass("SYN", Hook::ToPod, &ipv4_tcp(FRONTEND, BACKEND, 40010, 8080, SYN));
    // Backend -> frontend is allowed anyway (frontend is not isolated): the
    // reply passes either way; isolate frontend's ingress to see tracking.
    dp.maps
        .labels
        .set_isolation(
            300,
            Isolation {
                ingress: true,
                egress: false,
            },
        )
        .unwrap();
    dp.maps.after_policy_change().unwrap();
    dp.assert_pass(
        "SYN-ACK, a reply of the tracked connection",
        Hook::ToPod,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, 40010, SYN_ACK),
    );
    dp.assert_drop(
        "backend opening a connection to frontend",
        Hook::ToPod,
        &ipv4_tcp(BACKEND, FRONTEND, 40011, 22, SYN),
        Reason::EBPFCNI_DROP_ISOLATED,
    );
}

#[test]
fn an_isolated_sender_sends_only_what_its_egress_rules_allow() {
    require_root!();
    let dp = fixture("labels_egress");
    dp.maps
        .labels
        .set_isolation(
            302,
            Isolation {
                ingress: false,
                egress: true,
            },
        )
        .unwrap();
    dp.maps
        .labels
        .add(&LabelRule {
            subject: 302,
            peer: 300,
            kind: LabelKind::EgressAllow,
            selector: Selector::Protocol(Protocol(17)),
            policy: 2,
        })
        .unwrap();
    dp.maps.after_policy_change().unwrap();
    dp.assert_pass(
        "other -> frontend udp (egress rule)",
        Hook::ToPod,
        &ipv4_udp(OTHER, FRONTEND, 1000, 53),
    );
    dp.assert_drop(
        "other -> frontend icmp",
        Hook::ToPod,
        &icmp_echo(OTHER, FRONTEND, 8, 1),
        Reason::EBPFCNI_DROP_ISOLATED,
    );
    // Both sides must allow: other's egress allows udp to frontend only.
    dp.assert_drop(
        "other -> backend udp",
        Hook::ToPod,
        &ipv4_udp(OTHER, BACKEND, 1000, 8080),
        Reason::EBPFCNI_DROP_ISOLATED,
    );
}

#[test]
fn deny_wins_over_allow_and_the_plan_keeps_its_own_identities() {
    require_root!();
    let dp = fixture("labels_deny");
    dp.maps
        .labels
        .add(&LabelRule {
            subject: 301,
            peer: 300,
            kind: LabelKind::IngressDeny,
            selector: Selector::Any,
            policy: 3,
        })
        .unwrap();
    dp.maps.after_policy_change().unwrap();
    assert!(dp.maps.config.label_deny().unwrap());
    dp.assert_drop(
        "frontend -> backend 8080 (allowed, but denied)",
        Hook::ToPod,
        &ipv4_tcp(FRONTEND, BACKEND, 40020, 8080, SYN),
        Reason::EBPFCNI_DROP_POLICY_DENIED,
    );
    // A hand identity next to label identities: only the plan's rules.
    dp.assert_drop(
        "hand -> other (other is unrestricted, but hand is the plan's)",
        Hook::ToPod,
        &icmp_echo(HAND, OTHER, 8, 3),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    dp.maps.policy.allow(PolicyRule::new(id(1001), id(302))).unwrap();
    dp.assert_pass(
        "hand -> other by a pair rule",
        Hook::ToPod,
        &icmp_echo(HAND, OTHER, 8, 3),
    );
    // Taking every identity out of label policy switches it off.
    dp.maps.labels.clear().unwrap();
    dp.maps.after_policy_change().unwrap();
    assert!(!dp.maps.config.label_policy().unwrap());
    dp.assert_drop(
        "frontend -> other with no label policy: the plan's default deny",
        Hook::ToPod,
        &icmp_echo(FRONTEND, OTHER, 8, 4),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
}

#[test]
fn the_librarys_decision_is_the_programs_for_label_policy() {
    require_root!();
    let dp = fixture("labels_agree");
    dp.maps
        .labels
        .add(&LabelRule {
            subject: 301,
            peer: 302,
            kind: LabelKind::IngressAllow,
            selector: Selector::Ports {
                protocol: TCP,
                first: 8000,
                last: 8100,
            },
            policy: 4,
        })
        .unwrap();
    // Every peer may reach backend's UDP 8080.
    dp.maps
        .labels
        .add(&LabelRule {
            subject: 301,
            peer: ANY_PEER,
            kind: LabelKind::IngressAllow,
            selector: Selector::Ports {
                protocol: Protocol(17),
                first: 8080,
                last: 8080,
            },
            policy: 5,
        })
        .unwrap();
    dp.maps.after_policy_change().unwrap();
    dp.assert_pass(
        "other -> backend udp 8080 (a rule for every peer)",
        Hook::ToPod,
        &ipv4_udp(OTHER, BACKEND, 40200, 8080),
    );
    let all = [(FRONTEND, 300), (BACKEND, 301), (OTHER, 302), (HAND, 1001)];
    for src in all {
        for dst in all {
            if src == dst {
                continue;
            }
            for port in [22, 7999, 8000, 8080, 8100, 8101] {
                agrees(&dp, src, dst, &ipv4_tcp(src.0, dst.0, 40100, port, SYN), 6, port);
            }
            agrees(&dp, src, dst, &ipv4_udp(src.0, dst.0, 40100, 8080), 17, 8080);
        }
    }
}

/// Rules of one port and of everything live in label_exact_map (one hash
/// lookup), ranges and whole protocols in label_rule_map (the trie);
/// config label_policy says which shapes exist so that the program looks
/// up only those, and follows the rules as they come and go. A rule an
/// older build kept in the trie (every rule was there) is still found,
/// listed and removed.
#[test]
fn each_shape_of_rule_is_found_where_it_lives() {
    use ebpfcni::types::ebpfcni_label_policy_flags as F;
    require_root!();
    let dp = fixture("labels_shapes");
    let flags = || dp.maps.config.label_policy_flags().unwrap();
    let exact_entries = || {
        let path = ebpfcni::PinnedMap::LabelExact.path(dp.pins.path());
        libbpf_rs::MapHandle::from_pinned_path(&path)
            .unwrap()
            .keys()
            .count()
    };
    // The fixture's rule: backend takes TCP 8080 from frontend (one port).
    assert_eq!(
        flags(),
        F::EBPFCNI_LABEL_POLICY_ON.0,
        "one port for a peer: no other shape"
    );
    assert_eq!(exact_entries(), 1);
    let rule = |peer, selector| LabelRule {
        subject: 301,
        peer,
        kind: LabelKind::IngressAllow,
        selector,
        policy: 9,
    };
    let udp_range = Selector::Ports {
        protocol: Protocol(17),
        first: 5000,
        last: 5003,
    };
    let shapes = [
        (rule(302, Selector::Any), F::EBPFCNI_LABEL_HAS_PEER_ALL.0),
        (
            rule(
                ANY_PEER,
                Selector::Ports {
                    protocol: TCP,
                    first: 9090,
                    last: 9090,
                },
            ),
            F::EBPFCNI_LABEL_HAS_ANY_PORT.0,
        ),
        (rule(ANY_PEER, udp_range), F::EBPFCNI_LABEL_HAS_WIDE.0),
    ];
    for (rule, flag) in shapes {
        dp.maps.labels.add(&rule).unwrap();
        dp.maps.after_policy_change().unwrap();
        assert_ne!(flags() & flag, 0, "{rule:?}");
    }
    dp.assert_pass(
        "other -> backend, anything (peer, everything)",
        Hook::ToPod,
        &icmp_echo(OTHER, BACKEND, 8, 1),
    );
    dp.assert_pass(
        "frontend -> backend 9090 (every peer, one port)",
        Hook::ToPod,
        &ipv4_tcp(FRONTEND, BACKEND, 40300, 9090, SYN),
    );
    dp.assert_pass(
        "frontend -> backend udp 5002 (every peer, a range)",
        Hook::ToPod,
        &ipv4_udp(FRONTEND, BACKEND, 40301, 5002),
    );
    dp.assert_drop(
        "frontend -> backend udp 5004",
        Hook::ToPod,
        &ipv4_udp(FRONTEND, BACKEND, 40302, 5004),
        Reason::EBPFCNI_DROP_ISOLATED,
    );
    assert_eq!(exact_entries(), 3, "one port and everything: the hash");
    // Every peer, everything: and the flags go as the rules do.
    dp.maps.labels.add(&rule(ANY_PEER, Selector::Any)).unwrap();
    dp.maps.after_policy_change().unwrap();
    assert_ne!(flags() & F::EBPFCNI_LABEL_HAS_ANY_ALL.0, 0);
    dp.assert_pass(
        "frontend -> backend udp 5004 (every peer, everything)",
        Hook::ToPod,
        &ipv4_udp(FRONTEND, BACKEND, 40303, 5004),
    );
    for (rule, _) in shapes {
        assert!(dp.maps.labels.remove(&rule).unwrap());
    }
    dp.maps.labels.remove(&rule(ANY_PEER, Selector::Any)).unwrap();
    dp.maps.after_policy_change().unwrap();
    assert_eq!(flags(), F::EBPFCNI_LABEL_POLICY_ON.0, "back to one shape");

    // An older build's entry: backend takes UDP 53 from other, one port,
    // in the trie.
    let old = types::ebpfcni_label_key {
        prefixlen: 96,
        subject: 301,
        peer: 302,
        kind: types::ebpfcni_label_kind(LabelKind::IngressAllow as u8),
        protocol: 17,
        dport: 53u16.to_be(),
    };
    let value = types::ebpfcni_label_rule {
        policy: 7,
        first_port: 53,
        last_port: 53,
    };
    let trie =
        libbpf_rs::MapHandle::from_pinned_path(ebpfcni::PinnedMap::LabelRules.path(dp.pins.path())).unwrap();
    trie.update(
        bytemuck::bytes_of(&old),
        bytemuck::bytes_of(&value),
        libbpf_rs::MapFlags::ANY,
    )
    .unwrap();
    dp.maps.refresh_label_policy().unwrap();
    assert_ne!(flags() & F::EBPFCNI_LABEL_HAS_WIDE.0, 0);
    dp.assert_pass(
        "other -> backend udp 53 (an older build's entry)",
        Hook::ToPod,
        &ipv4_udp(OTHER, BACKEND, 40304, 53),
    );
    let listed = rule(
        302,
        Selector::Ports {
            protocol: Protocol(17),
            first: 53,
            last: 53,
        },
    );
    assert!(dp
        .maps
        .labels
        .rules()
        .unwrap()
        .contains(&LabelRule { policy: 7, ..listed }));
    assert!(dp.maps.labels.remove(&listed).unwrap(), "removed from the trie");
    assert_eq!(trie.keys().count(), 0);
}

/// SCTP's ports sit where TCP's and UDP's do: a NetworkPolicy's
/// `protocol: SCTP` port rule matches SCTP packets by destination port,
/// and their replies pass as tracked.
#[test]
fn sctp_port_rules_match_by_port() {
    use ebpfcni_testutil::frames::ipv4_sctp;
    require_root!();
    let dp = fixture("labels_sctp");
    dp.maps
        .labels
        .add(&LabelRule {
            subject: 301,
            peer: 300,
            kind: LabelKind::IngressAllow,
            selector: Selector::Ports {
                protocol: Protocol::SCTP,
                first: 3868,
                last: 3868,
            },
            policy: 3,
        })
        .unwrap();
    dp.maps.after_policy_change().unwrap();
    dp.assert_pass(
        "frontend -> backend sctp 3868",
        Hook::ToPod,
        &ipv4_sctp(FRONTEND, BACKEND, 40400, 3868),
    );
    dp.assert_drop(
        "frontend -> backend sctp 3869",
        Hook::ToPod,
        &ipv4_sctp(FRONTEND, BACKEND, 40401, 3869),
        Reason::EBPFCNI_DROP_ISOLATED,
    );
    // Frontend is ingress-isolated too: backend's answer passes as a reply.
    dp.maps
        .labels
        .set_isolation(
            300,
            Isolation {
                ingress: true,
                egress: false,
            },
        )
        .unwrap();
    dp.maps.after_policy_change().unwrap();
    dp.assert_pass(
        "frontend -> backend sctp 3868 again",
        Hook::ToPod,
        &ipv4_sctp(FRONTEND, BACKEND, 40402, 3868),
    );
    dp.assert_pass(
        "backend -> frontend, the reply",
        Hook::ToPod,
        &ipv4_sctp(BACKEND, FRONTEND, 3868, 40402),
    );
    dp.assert_drop(
        "backend -> frontend, not a reply",
        Hook::ToPod,
        &ipv4_sctp(BACKEND, FRONTEND, 3868, 40403),
        Reason::EBPFCNI_DROP_ISOLATED,
    );
}
