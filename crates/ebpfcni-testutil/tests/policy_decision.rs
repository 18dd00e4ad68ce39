//! The library's copy of the policy decision ([`PolicyIndex`], which the
//! tools use: which connections a rule change ends, the REVERSE column of
//! `policyctl list`) against the program's own (bpf/lib/policy.h), through
//! BPF_PROG_TEST_RUN, on the same rule sets: for a grid of packets both
//! ways, the program passes exactly what [`PolicyIndex::action`] allows,
//! and [`PolicyIndex::replies_allowed`] says whether the program passes
//! every reply of a rule's packets.

use std::net::Ipv4Addr;

use ebpfcni::{Hook, Identity, PolicyIndex, PolicyRule, Rule, Selector, TC_ACT_OK};
use ebpfcni_testutil::datapath::Datapath;
use ebpfcni_testutil::frames::{
    eth, icmp_echo, ipv4_header, ipv4_tcp, ipv4_udp, ACK, ETH_P_IP, ICMP_ECHO, IPPROTO_ICMP, IPPROTO_TCP,
    IPPROTO_UDP,
};
use ebpfcni_testutil::require_root;

const ONE: Ipv4Addr = Ipv4Addr::new(10, 13, 1, 2);
const TWO: Ipv4Addr = Ipv4Addr::new(10, 13, 2, 2);
const GRE: u8 = 47;

fn addr(id: u32) -> Ipv4Addr {
    if id == 1 {
        ONE
    } else {
        TWO
    }
}

fn rule(src: u32, dst: u32, selector: &str) -> Rule {
    let selector = match selector {
        "any" => Selector::Any,
        s if s.contains('/') => Selector::parse_ports(s).unwrap(),
        s => Selector::Protocol(s.parse().unwrap()),
    };
    Rule {
        pair: PolicyRule::new(Identity::new(src).unwrap(), Identity::new(dst).unwrap()),
        selector,
        stateful: false,
    }
}

/// A packet of `protocol` from `src` to `dst` (identities 1 and 2) from
/// `sport` to `dport` (TCP, UDP; ICMP echo and GRE have no ports).
fn frame(src: u32, dst: u32, protocol: u8, sport: u16, dport: u16) -> Vec<u8> {
    let (s, d) = (addr(src), addr(dst));
    match protocol {
        IPPROTO_TCP => ipv4_tcp(s, d, sport, dport, ACK),
        IPPROTO_UDP => ipv4_udp(s, d, sport, dport),
        IPPROTO_ICMP => icmp_echo(s, d, ICMP_ECHO, 7),
        p => {
            let mut f = eth(ETH_P_IP);
            f.extend(ipv4_header(s, d, 5, 0, p, 16));
            f
        }
    }
}

fn passes(dp: &Datapath, frame: &[u8]) -> bool {
    // Unfragmented, stateless rules: nothing the program keeps (tracked
    // connections, fragments' records) changes the next verdict.
    dp.verdict(Hook::ToPod, frame) == TC_ACT_OK
}

const PROTOCOLS: [u8; 4] = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, GRE];
/// Ports around every rule set's edges (30001: the gap of one of them).
const PORTS: [u16; 10] = [1, 53, 1023, 8079, 8080, 8081, 30000, 30001, 40000, 65535];

fn rule_sets() -> Vec<Vec<Rule>> {
    vec![
        // The issue's: REVERSE said MISSING, the program passes the replies.
        vec![rule(1, 2, "8080/tcp"), rule(2, 1, "tcp")],
        vec![rule(1, 2, "any")],
        vec![rule(1, 2, "any"), rule(2, 1, "any")],
        vec![rule(1, 2, "any"), rule(2, 1, "udp")],
        vec![rule(1, 2, "53/udp"), rule(2, 1, "any")],
        vec![rule(1, 2, "53/udp"), rule(2, 1, "tcp"), rule(2, 1, "53/udp")],
        vec![rule(1, 2, "icmp"), rule(2, 1, "icmp"), rule(2, 1, "47")],
        vec![rule(1, 2, "tcp"), rule(2, 1, "8080/tcp")],
        vec![
            rule(1, 2, "8000-8080/tcp"),
            rule(1, 2, "udp"),
            rule(2, 1, "1-30000/tcp"),
            rule(2, 1, "30001-65535/tcp"),
        ],
        vec![
            rule(1, 2, "8080/tcp"),
            rule(2, 1, "1-30000/tcp"),
            rule(2, 1, "30002-65535/tcp"),
        ],
        // A pair rule and port rules of one pair: the pair rule decides.
        vec![rule(1, 2, "any"), rule(1, 2, "8080/tcp"), rule(2, 1, "40000/tcp")],
    ]
}

#[test]
fn the_librarys_decision_is_the_programs() {
    require_root!();
    let dp = Datapath::new("policy_decision");
    dp.maps
        .endpoints
        .upsert_batch(&[(ONE, Identity::new(1).unwrap()), (TWO, Identity::new(2).unwrap())])
        .unwrap();
    for rules in rule_sets() {
        dp.maps.flush_rules().unwrap();
        dp.maps.allow(&rules).unwrap();
        // As the tools build it: from the maps (sweeping connections), or
        // from the rules listed (the REVERSE column).
        let index = PolicyIndex::read(&dp.maps).unwrap();
        let listed = PolicyIndex::of(rules.iter().copied());
        for (src, dst) in [(1, 2), (2, 1)] {
            for protocol in PROTOCOLS {
                let ported = protocol == IPPROTO_TCP || protocol == IPPROTO_UDP;
                let ports: &[u16] = if ported { &PORTS } else { &[0] };
                for &dport in ports {
                    let library = index.action(src, dst, protocol, dport).is_some();
                    let program = passes(&dp, &frame(src, dst, protocol, 40000, dport));
                    assert_eq!(library, listed.action(src, dst, protocol, dport).is_some());
                    assert_eq!(
                        library, program,
                        "{rules:?}: {src} -> {dst} protocol {protocol} port {dport}: library allows {library}, program passes {program}"
                    );
                }
            }
        }
        for r in &rules {
            let (back_src, back_dst) = (r.pair.dst.get(), r.pair.src.get());
            let protocols: Vec<u8> = match r.selector.protocol() {
                Some(p) => vec![p.0],
                None => PROTOCOLS.to_vec(),
            };
            let sport = r.selector.ports().map_or(40000, |(first, _)| first);
            let every_reply = protocols.iter().all(|&p| {
                let ported = p == IPPROTO_TCP || p == IPPROTO_UDP;
                let ports: &[u16] = if ported { &PORTS } else { &[0] };
                ports
                    .iter()
                    .all(|&dport| passes(&dp, &frame(back_src, back_dst, p, sport, dport)))
            });
            assert_eq!(listed.replies_allowed(r), index.replies_allowed(r));
            assert_eq!(
                index.replies_allowed(r),
                every_reply,
                "{rules:?}: replies of {r}: library says {}, the program passes every one: {every_reply}",
                index.replies_allowed(r)
            );
        }
    }
}
