//! Stateful rules and port rules through BPF_PROG_TEST_RUN (precedence
//! steps 4 and 7 to 10 of ebpfcni.h): a connection opened under a stateful
//! rule is tracked, its replies pass and nothing else of the reverse
//! direction does; entries expire; revoking a rule ends its connections.
//!
//! Frames are judged at the to-pod hook, where no source check applies, so
//! that both directions of a connection can be sent from one place.

use std::net::Ipv4Addr;
use std::time::Duration;

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{CtState, CtTimeouts, Hook, Identity, PolicyRule, Protocol, Rule, Selector};
use ebpfcni_testutil::datapath::Datapath;
use ebpfcni_testutil::frames::{
    icmp_echo, icmp_error, ipv4_tcp, ipv4_udp, ACK, FIN, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_ECHOREPLY,
    ICMP_TIME_EXCEEDED, RST, SYN,
};
use ebpfcni_testutil::require_root;

const FRONTEND: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 13, 2, 2);
/// A router between them: an address with no identity.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 1);
const FRONTEND_ID: u32 = 1001;
const BACKEND_ID: u32 = 1002;
const CLIENT_PORT: u16 = 40000;

const TO_POD: Hook = Hook::ToPod;

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

fn frontend_to_backend() -> PolicyRule {
    PolicyRule::new(id(FRONTEND_ID), id(BACKEND_ID))
}

fn tcp(port: u16) -> Selector {
    Selector::Ports {
        protocol: Protocol::TCP,
        first: port,
        last: port,
    }
}

fn udp(port: u16) -> Selector {
    Selector::Ports {
        protocol: Protocol::UDP,
        first: port,
        last: port,
    }
}

/// The two pods with their identities, and `rules`.
fn pods_with(test: &str, rules: &[Rule]) -> Datapath {
    let dp = Datapath::new(test);
    dp.maps
        .endpoints
        .upsert_batch(&[(FRONTEND, id(FRONTEND_ID)), (BACKEND, id(BACKEND_ID))])
        .unwrap();
    dp.maps.allow(rules).unwrap();
    dp
}

/// The only rule of the example: frontend may open TCP 8080 on
/// backend, statefully.
fn frontend_may_open_8080(test: &str) -> Datapath {
    pods_with(
        test,
        &[Rule {
            pair: frontend_to_backend(),
            selector: tcp(8080),
            stateful: true,
        }],
    )
}

fn only_connection(dp: &Datapath) -> ebpfcni::Connection {
    let all = dp.maps.conntrack.list().unwrap();
    assert_eq!(all.len(), 1, "expected one tracked connection: {all:#?}");
    all.into_iter().next().unwrap()
}

#[test]
fn a_tcp_connection_under_a_stateful_port_rule_is_tracked_through_its_life() {
    require_root!();
    let dp = frontend_may_open_8080("ct_tcp_life");
    assert!(
        dp.maps.config.conntrack().unwrap(),
        "a stateful rule turns tracking on"
    );
    let to_server = |flags| ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, flags);
    let to_client = |flags| ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, flags);

    dp.assert_pass("SYN", TO_POD, &to_server(SYN));
    let c = only_connection(&dp);
    assert_eq!(
        (c.protocol, c.opener, c.opener_port, c.responder, c.dport),
        (6, FRONTEND, CLIENT_PORT, BACKEND, 8080)
    );
    assert_eq!((c.opener_id, c.responder_id), (FRONTEND_ID, BACKEND_ID));
    assert_eq!((c.state, c.seen_reply), (CtState::Syn, false));
    assert!(
        c.expires_in > Duration::from_secs(55) && c.expires_in <= Duration::from_secs(60),
        "{c:?}"
    );

    dp.assert_pass("SYN-ACK, the reply", TO_POD, &to_client(SYN | ACK));
    assert_eq!(
        only_connection(&dp).state,
        CtState::Syn,
        "the handshake is not done yet"
    );
    dp.assert_pass("the opener's ACK", TO_POD, &to_server(ACK));
    let c = only_connection(&dp);
    assert_eq!((c.state, c.seen_reply), (CtState::Established, true));
    assert!(c.expires_in > Duration::from_secs(7990), "{c:?}");

    dp.assert_pass("data back", TO_POD, &to_client(ACK));
    dp.assert_pass("the server's FIN", TO_POD, &to_client(FIN | ACK));
    assert_eq!(only_connection(&dp).state, CtState::Established);
    dp.assert_pass("the client's FIN", TO_POD, &to_server(FIN | ACK));
    let c = only_connection(&dp);
    assert_eq!(c.state, CtState::Closing);
    assert!(c.expires_in <= Duration::from_secs(10), "{c:?}");
    dp.assert_pass("the last ACK", TO_POD, &to_client(ACK));

    // A reset closes a connection at once.
    dp.maps.conntrack.clear().unwrap();
    dp.assert_pass("SYN", TO_POD, &to_server(SYN));
    dp.assert_pass("RST, refused", TO_POD, &to_client(RST | ACK));
    assert_eq!(only_connection(&dp).state, CtState::Closing);
}

#[test]
fn only_replies_pass_back_and_only_the_rules_port_opens() {
    require_root!();
    let dp = frontend_may_open_8080("ct_tcp_one_way");
    dp.assert_drop(
        "backend's SYN to frontend",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 40001, 22, SYN),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    dp.assert_drop(
        "another port on backend",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8081, SYN),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    dp.assert_drop(
        "UDP to the rule's port number",
        TO_POD,
        &ipv4_udp(FRONTEND, BACKEND, CLIENT_PORT, 8080),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    // From the server's port, to a client port with no connection: it
    // looks like a reply, so it is dropped as one without a flow.
    dp.assert_drop(
        "an unsolicited 'reply'",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, SYN | ACK),
        Reason::EBPFCNI_DROP_NO_FLOW,
    );
    assert!(
        dp.maps.conntrack.list().unwrap().is_empty(),
        "a drop tracked something"
    );

    dp.assert_pass(
        "SYN",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, SYN),
    );
    dp.assert_drop(
        "the reply of another connection",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT + 1, SYN | ACK),
        Reason::EBPFCNI_DROP_NO_FLOW,
    );
    dp.assert_drop(
        "the server opening back under the client's connection",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, SYN),
        Reason::EBPFCNI_DROP_NO_FLOW,
    );
    assert_eq!(only_connection(&dp).state, CtState::Syn);
}

#[test]
fn udp_flows_are_tracked_by_ports() {
    require_root!();
    let rule = Rule {
        pair: frontend_to_backend(),
        selector: udp(53),
        stateful: true,
    };
    let dp = pods_with("ct_udp", &[rule]);
    dp.assert_pass("query", TO_POD, &ipv4_udp(FRONTEND, BACKEND, 5353, 53));
    dp.assert_pass("answer", TO_POD, &ipv4_udp(BACKEND, FRONTEND, 53, 5353));
    dp.assert_drop(
        "an answer to another port",
        TO_POD,
        &ipv4_udp(BACKEND, FRONTEND, 53, 5354),
        Reason::EBPFCNI_DROP_NO_FLOW,
    );
    dp.assert_drop(
        "backend querying frontend",
        TO_POD,
        &ipv4_udp(BACKEND, FRONTEND, 5353, 53),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    let c = only_connection(&dp);
    assert_eq!((c.protocol, c.state, c.seen_reply), (17, CtState::Open, true));
}

#[test]
fn icmp_echo_is_tracked_by_identifier_one_way() {
    require_root!();
    let rule = Rule {
        pair: frontend_to_backend(),
        selector: Selector::Protocol(Protocol::ICMP),
        stateful: true,
    };
    let dp = pods_with("ct_icmp_echo", &[rule]);
    dp.assert_pass(
        "echo request",
        TO_POD,
        &icmp_echo(FRONTEND, BACKEND, ICMP_ECHO, 7),
    );
    dp.assert_pass(
        "its reply",
        TO_POD,
        &icmp_echo(BACKEND, FRONTEND, ICMP_ECHOREPLY, 7),
    );
    dp.assert_drop(
        "a reply with another identifier",
        TO_POD,
        &icmp_echo(BACKEND, FRONTEND, ICMP_ECHOREPLY, 8),
        Reason::EBPFCNI_DROP_NO_FLOW,
    );
    dp.assert_drop(
        "backend pinging frontend with the same identifier",
        TO_POD,
        &icmp_echo(BACKEND, FRONTEND, ICMP_ECHO, 7),
        Reason::EBPFCNI_DROP_NO_FLOW,
    );
    let c = only_connection(&dp);
    assert_eq!((c.protocol, c.dport, c.state), (1, 7, CtState::Open));
}

#[test]
fn an_expired_entry_counts_as_absent() {
    require_root!();
    let dp = frontend_may_open_8080("ct_expiry");
    dp.assert_pass(
        "SYN",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, SYN),
    );
    dp.maps.conntrack.age(Duration::from_secs(59)).unwrap();
    dp.assert_pass(
        "SYN-ACK a second before expiry",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, SYN | ACK),
    );
    dp.maps.conntrack.age(Duration::from_secs(61)).unwrap();
    assert!(
        dp.maps.conntrack.list().unwrap().is_empty(),
        "listed an expired entry"
    );
    assert_eq!(
        dp.maps.conntrack.len().unwrap(),
        1,
        "no cleaner ran: the entry is still there"
    );
    dp.assert_drop(
        "SYN-ACK after expiry",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, SYN | ACK),
        Reason::EBPFCNI_DROP_NO_FLOW,
    );
    // The opener's next packet is allowed by the rule and tracks the
    // connection anew (mid-stream: established).
    dp.assert_pass(
        "the opener's ACK",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, ACK),
    );
    assert_eq!(only_connection(&dp).state, CtState::Established);
    dp.assert_pass(
        "a reply again",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, ACK),
    );
}

#[test]
fn lifetimes_follow_the_settings() {
    require_root!();
    let rule = Rule {
        pair: frontend_to_backend(),
        selector: udp(53),
        stateful: true,
    };
    let dp = pods_with("ct_timeouts", &[rule]);
    dp.maps
        .config
        .set_ct_timeouts(CtTimeouts {
            udp: 5,
            ..CtTimeouts::DEFAULT
        })
        .unwrap();
    dp.assert_pass("query", TO_POD, &ipv4_udp(FRONTEND, BACKEND, 5353, 53));
    let c = only_connection(&dp);
    assert!(
        c.expires_in <= Duration::from_secs(5) && c.expires_in > Duration::from_secs(3),
        "{c:?}"
    );
    dp.maps.conntrack.age(Duration::from_secs(5)).unwrap();
    dp.assert_drop(
        "an answer 5 s later",
        TO_POD,
        &ipv4_udp(BACKEND, FRONTEND, 53, 5353),
        Reason::EBPFCNI_DROP_NO_FLOW,
    );
}

#[test]
fn icmp_errors_about_a_tracked_connection_pass_as_related() {
    require_root!();
    let rule = Rule {
        pair: frontend_to_backend(),
        selector: udp(53),
        stateful: true,
    };
    let dp = pods_with("ct_related", &[rule]);
    let query = ipv4_udp(FRONTEND, BACKEND, 5353, 53);
    let untracked = ipv4_udp(FRONTEND, BACKEND, 5354, 53);
    dp.assert_drop(
        "port unreachable before any connection",
        TO_POD,
        &icmp_error(BACKEND, FRONTEND, ICMP_DEST_UNREACH, 3, &query),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    dp.assert_pass("query", TO_POD, &query);
    dp.assert_pass(
        "port unreachable",
        TO_POD,
        &icmp_error(BACKEND, FRONTEND, ICMP_DEST_UNREACH, 3, &query),
    );
    dp.assert_pass(
        "fragmentation needed, from a router without identity",
        TO_POD,
        &icmp_error(ROUTER, FRONTEND, ICMP_DEST_UNREACH, 4, &query),
    );
    dp.assert_pass(
        "time exceeded",
        TO_POD,
        &icmp_error(ROUTER, FRONTEND, ICMP_TIME_EXCEEDED, 0, &query),
    );
    dp.assert_drop(
        "an error about another flow",
        TO_POD,
        &icmp_error(BACKEND, FRONTEND, ICMP_DEST_UNREACH, 3, &untracked),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    dp.assert_drop(
        "an error sent to the wrong end",
        TO_POD,
        &icmp_error(FRONTEND, BACKEND, ICMP_DEST_UNREACH, 3, &query),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
}

#[test]
fn revoking_the_rule_ends_its_connections_in_both_directions() {
    require_root!();
    let dp = frontend_may_open_8080("ct_revoke");
    let to_server = ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, ACK);
    let to_client = ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, ACK);
    dp.assert_pass("established", TO_POD, &to_server);
    dp.assert_pass("reply", TO_POD, &to_client);

    assert!(dp.maps.deny(FRONTEND_ID, BACKEND_ID, tcp(8080)).unwrap());
    assert!(
        dp.maps.conntrack.list().unwrap().is_empty(),
        "deny left the connection"
    );
    assert!(!dp.maps.config.conntrack().unwrap(), "no stateful rule is left");
    assert!(!dp.maps.config.port_rules().unwrap(), "no port rule is left");
    dp.assert_drop("forward", TO_POD, &to_server, Reason::EBPFCNI_DROP_NO_POLICY);
    dp.assert_drop("reply", TO_POD, &to_client, Reason::EBPFCNI_DROP_NO_POLICY);

    // Made stateless, a rule no longer lets its connections' replies back.
    let rule = Rule {
        pair: frontend_to_backend(),
        selector: tcp(8080),
        stateful: true,
    };
    dp.maps.allow(&[rule]).unwrap();
    dp.assert_pass("forward again", TO_POD, &to_server);
    dp.maps
        .allow(&[Rule {
            stateful: false,
            ..rule
        }])
        .unwrap();
    assert!(dp.maps.conntrack.list().unwrap().is_empty());
    dp.assert_pass("forward, stateless", TO_POD, &to_server);
    dp.assert_drop("reply", TO_POD, &to_client, Reason::EBPFCNI_DROP_NO_POLICY);

    // Flush ends them too.
    dp.maps.allow(&[rule]).unwrap();
    dp.assert_pass("forward again", TO_POD, &to_server);
    dp.maps.flush_rules().unwrap();
    assert!(dp.maps.conntrack.list().unwrap().is_empty());
    dp.assert_drop(
        "reply after flush",
        TO_POD,
        &to_client,
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
}

#[test]
fn a_changed_identity_ends_the_connections_of_its_address() {
    require_root!();
    let dp = frontend_may_open_8080("ct_identity_change");
    let to_client = ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, ACK);
    dp.assert_pass(
        "open",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, SYN),
    );
    assert_eq!(dp.maps.after_identity_change().unwrap(), 0, "nothing changed");
    dp.maps.endpoints.upsert(BACKEND, id(7)).unwrap();
    assert_eq!(dp.maps.after_identity_change().unwrap(), 1);
    dp.assert_drop("reply", TO_POD, &to_client, Reason::EBPFCNI_DROP_NO_POLICY);
}

#[test]
fn rules_are_matched_pair_then_port_then_protocol() {
    require_root!();
    let rules = [
        // TCP to any port statefully, but 8080 stateless.
        Rule {
            pair: frontend_to_backend(),
            selector: Selector::Protocol(Protocol::TCP),
            stateful: true,
        },
        Rule {
            pair: frontend_to_backend(),
            selector: tcp(8080),
            stateful: false,
        },
        Rule {
            pair: frontend_to_backend(),
            selector: Selector::Ports {
                protocol: Protocol::UDP,
                first: 8000,
                last: 8100,
            },
            stateful: false,
        },
    ];
    let dp = pods_with("ct_precedence", &rules);
    dp.assert_pass(
        "8080: the port rule",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, SYN),
    );
    assert!(
        dp.maps.conntrack.list().unwrap().is_empty(),
        "the port rule is stateless"
    );
    dp.assert_pass(
        "9090: the protocol rule",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 9090, SYN),
    );
    assert_eq!(only_connection(&dp).dport, 9090);
    for port in [8000, 8050, 8100] {
        dp.assert_pass(
            "in the UDP range",
            TO_POD,
            &ipv4_udp(FRONTEND, BACKEND, CLIENT_PORT, port),
        );
    }
    for port in [7999, 8101] {
        dp.assert_drop(
            "beside the UDP range",
            TO_POD,
            &ipv4_udp(FRONTEND, BACKEND, CLIENT_PORT, port),
            Reason::EBPFCNI_DROP_NO_POLICY,
        );
    }

    // The plan's pair rule comes first: stateless, every port.
    dp.maps
        .allow(&[Rule::pair(frontend_to_backend(), false)])
        .unwrap();
    dp.maps.conntrack.clear().unwrap();
    dp.assert_pass(
        "9091: the pair rule",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 9091, SYN),
    );
    assert!(
        dp.maps.conntrack.list().unwrap().is_empty(),
        "the pair rule is stateless"
    );
}

/// The plan's rules keep the plan's meaning: nothing is tracked, and a
/// reply needs the reverse rule.
#[test]
fn plan_rules_stay_stateless() {
    require_root!();
    let pair = frontend_to_backend();
    let dp = pods_with(
        "ct_plan_rules",
        &[Rule::pair(pair, false), Rule::pair(pair.reverse(), false)],
    );
    assert!(!dp.maps.config.conntrack().unwrap());
    dp.assert_pass(
        "request",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, SYN),
    );
    dp.assert_pass(
        "reply",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, SYN | ACK),
    );
    assert!(dp.maps.conntrack.list().unwrap().is_empty());
    dp.maps.deny(BACKEND_ID, FRONTEND_ID, Selector::Any).unwrap();
    dp.assert_drop(
        "reply without the reverse rule",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, SYN | ACK),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    // A stateful rule elsewhere turns tracking on; the plan's rules still
    // track nothing.
    dp.maps
        .allow(&[Rule {
            pair: PolicyRule::new(id(5), id(6)),
            selector: Selector::Any,
            stateful: true,
        }])
        .unwrap();
    assert!(dp.maps.config.conntrack().unwrap());
    dp.assert_pass(
        "request",
        TO_POD,
        &ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, SYN),
    );
    assert!(dp.maps.conntrack.list().unwrap().is_empty());
    dp.assert_drop(
        "reply",
        TO_POD,
        &ipv4_tcp(BACKEND, FRONTEND, 8080, CLIENT_PORT, SYN | ACK),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
}

/// Once policy has passed a connection, its opener's packets pass as
/// tracked without being judged again for as long as config policy_gen
/// stays: a rule removed behind the library's back (nothing bumped) does
/// not stop them; any change through the library does, at once.
#[test]
fn a_connection_is_judged_again_only_when_policy_changes() {
    use libbpf_rs::MapCore;
    require_root!();
    let dp = frontend_may_open_8080("ct_policy_gen");
    let gen = dp.maps.config.policy_gen().unwrap();
    assert_ne!(gen, 0, "a fresh config has a generation");
    let syn = ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, SYN);
    let to_server = ipv4_tcp(FRONTEND, BACKEND, CLIENT_PORT, 8080, ACK);
    dp.assert_pass("SYN", TO_POD, &syn);
    dp.assert_pass("forward, judged", TO_POD, &to_server);

    // The port rule's entry removed without the library: no new generation.
    let ports =
        libbpf_rs::MapHandle::from_pinned_path(ebpfcni::PinnedMap::PortPolicy.path(dp.pins.path())).unwrap();
    let keys: Vec<Vec<u8>> = ports.keys().collect();
    assert_eq!(keys.len(), 1);
    ports.delete(&keys[0]).unwrap();
    dp.assert_pass("forward, judged at this generation", TO_POD, &to_server);
    assert_eq!(dp.maps.config.policy_gen().unwrap(), gen);

    // A change through the library (another pair's rule) bumps it: the
    // connection is judged by the rules as they are.
    dp.maps
        .allow(&[Rule {
            pair: PolicyRule::new(id(3001), id(3002)),
            selector: Selector::Any,
            stateful: true,
        }])
        .unwrap();
    assert_ne!(dp.maps.config.policy_gen().unwrap(), gen, "bumped");
    dp.assert_drop(
        "forward, judged again",
        TO_POD,
        &to_server,
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
}
