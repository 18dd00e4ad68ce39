//! CIDR identities (precedence steps 4 and 5): an address that is not an
//! endpoint takes the identity of the longest prefix holding it; an exact
//! endpoint always beats a prefix; with neither, the address is unknown.
//! Verdicts through BPF_PROG_TEST_RUN, and the library's prefix_map.

use std::net::Ipv4Addr;

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{parse_prefix, Error, Hook, Identity, IdentitySource, PolicyRule, Stored};
use ebpfcni_testutil::datapath::Datapath;
use ebpfcni_testutil::frames::ipv4;
use ebpfcni_testutil::require_root;

const POD: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);
/// A resolver outside the pods, in 10.255.0.0/16 and in 10.255.7.0/24.
const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 255, 7, 53);

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// The pod (1) may send to identity 2 ("dns") only.
fn pod_and_prefixes(test: &str) -> Datapath {
    let dp = Datapath::new(test);
    dp.maps.endpoints.upsert(POD, id(1)).unwrap();
    dp.maps.policy.allow(PolicyRule::new(id(1), id(2))).unwrap();
    dp
}

#[test]
fn an_address_known_only_by_a_prefix_takes_its_identity() {
    require_root!();
    let dp = pod_and_prefixes("prefix_resolves");
    dp.assert_drop(
        "no prefix, no endpoint",
        Hook::ToPod,
        &ipv4(POD, RESOLVER),
        Reason::EBPFCNI_DROP_UNKNOWN_DST,
    );
    dp.maps
        .prefixes
        .upsert(parse_prefix("10.255.0.0/16").unwrap(), id(2))
        .unwrap();
    dp.assert_pass("resolver by its /16", Hook::ToPod, &ipv4(POD, RESOLVER));
    dp.assert_drop(
        "the resolver answering: 2 -> 1 has no rule",
        Hook::ToPod,
        &ipv4(RESOLVER, POD),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
}

#[test]
fn the_longest_prefix_wins() {
    require_root!();
    let dp = pod_and_prefixes("prefix_longest");
    dp.maps
        .prefixes
        .upsert_batch(&[
            (parse_prefix("0.0.0.0/0").unwrap(), id(5)),
            (parse_prefix("10.255.0.0/16").unwrap(), id(2)),
            (parse_prefix("10.255.7.0/24").unwrap(), id(6)),
        ])
        .unwrap();
    // The /24 (identity 6) decides, and 1 -> 6 has no rule.
    dp.assert_drop(
        "/24 beats /16",
        Hook::ToPod,
        &ipv4(POD, RESOLVER),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    assert_eq!(
        dp.maps.identity_source(RESOLVER).unwrap(),
        Some(IdentitySource::Prefix(
            parse_prefix("10.255.7.0/24").unwrap(),
            Stored::Valid(id(6))
        ))
    );
    dp.maps
        .prefixes
        .delete(parse_prefix("10.255.7.0/24").unwrap())
        .unwrap();
    dp.assert_pass("then the /16", Hook::ToPod, &ipv4(POD, RESOLVER));
    // "The world": anything else falls into 0.0.0.0/0.
    dp.maps.policy.allow(PolicyRule::new(id(1), id(5))).unwrap();
    dp.assert_pass("the world", Hook::ToPod, &ipv4(POD, Ipv4Addr::new(192, 0, 2, 1)));
}

#[test]
fn an_exact_endpoint_beats_any_prefix() {
    require_root!();
    let dp = pod_and_prefixes("prefix_exact");
    dp.maps
        .prefixes
        .upsert(parse_prefix("10.13.0.0/24").unwrap(), id(2))
        .unwrap();
    // The pod's own address is in the /24, but its endpoint entry (1) decides:
    // 1 -> 1 has no rule.
    dp.assert_drop(
        "pod to itself",
        Hook::ToPod,
        &ipv4(POD, POD),
        Reason::EBPFCNI_DROP_NO_POLICY,
    );
    assert_eq!(
        dp.maps.identity_source(POD).unwrap(),
        Some(IdentitySource::Endpoint(Stored::Valid(id(1))))
    );
    // Another address of the /24, not an endpoint, takes the prefix's identity.
    dp.assert_pass(
        "a neighbour by prefix",
        Hook::ToPod,
        &ipv4(POD, Ipv4Addr::new(10, 13, 0, 77)),
    );
}

#[test]
fn a_full_prefix_map_refuses_a_batch_whole() {
    require_root!();
    let dp = pod_and_prefixes("prefix_full");
    let capacity = dp.maps.prefixes.capacity();
    let all: Vec<_> = (0..capacity)
        .map(|i| {
            (
                ipnet::Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).unwrap(),
                id(7),
            )
        })
        .collect();
    dp.maps.prefixes.upsert_batch(&all).unwrap();
    assert_eq!(dp.maps.prefixes.len().unwrap(), capacity as usize);
    let one_more = [(all[0].0, id(8)), (parse_prefix("10.255.0.0/16").unwrap(), id(2))];
    match dp.maps.prefixes.upsert_batch(&one_more) {
        Err(Error::MapFull { needed, .. }) => assert_eq!(needed, capacity as usize + 1),
        other => panic!("expected MapFull, got {other:?}"),
    }
    assert_eq!(
        dp.maps.prefixes.get(all[0].0).unwrap(),
        Some(Stored::Valid(id(7))),
        "a refused batch changed nothing"
    );
}
