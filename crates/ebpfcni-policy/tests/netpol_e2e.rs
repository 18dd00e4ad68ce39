//! Cases of the Kubernetes network policy e2e suite
//! (test/e2e/network/netpol/network_policy.go), each under its upstream
//! name (the `It("should ...")` string, in the doc comment), building the
//! policies as the upstream case does and checking the full 9x9
//! reachability matrix of the semantic model and of the compiled entries.
//! The TCP cases come from "NetworkPolicy between server and client", the
//! `udp_`/`sctp_` ones from the "... using UDP" / "... using SCTP" contexts.

mod netpol_world;

use ebpfcni_policy::Protocol::{Sctp, Tcp, Udp};
use netpol_world::{any, np, ns, pod, Cluster, Reachability};

/// should support a 'default-deny-ingress' policy
#[test]
fn default_deny_ingress() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-ingress",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress: []",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(any(), ns("x"), false);
    c.validate(&r, Tcp, 80);
}

/// should support a 'default-deny-all' policy
#[test]
fn default_deny_all() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-all",
        "podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress: []\negress: []",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(any(), ns("x"), false)
        .expect_peer(ns("x"), any(), false);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy to allow traffic from pods within server namespace based on PodSelector
#[test]
fn allow_from_pods_within_namespace_by_pod_selector() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "x-a-allows-x-b",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false).expect("x/b", "x/a", true);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy to allow ingress traffic for a target
#[test]
fn allow_ingress_for_a_target() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-all",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress: []",
    ));
    c.apply(&np(
        "x",
        "allow-all-to-a",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - podSelector: {}\n    namespaceSelector: {}",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", true)
        .expect_all_ingress("x/b", false)
        .expect_all_ingress("x/c", false);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy to allow ingress traffic from pods in all namespaces
#[test]
fn allow_ingress_from_all_namespaces() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-from-another-ns",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {}}",
    ));
    c.validate(&Reachability::new(true), Tcp, 80);
}

/// should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector
#[test]
fn allow_only_from_a_different_namespace_by_namespace_selector() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-client-a-via-ns-selector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), pod("x", "a"), false)
        .expect_peer(ns("z"), pod("x", "a"), false);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy based on PodSelector with MatchExpressions
#[test]
fn pod_selector_with_match_expressions() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "x-a-allows-x-b",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - podSelector:\n      matchExpressions: [{key: pod, operator: In, values: [b]}]",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false).expect("x/b", "x/a", true);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy based on NamespaceSelector with MatchExpressions
#[test]
fn namespace_selector_with_match_expressions() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ns-y-match-selector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [y]}]",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), pod("x", "a"), false)
        .expect_peer(ns("z"), pod("x", "a"), false);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy based on PodSelector or NamespaceSelector
#[test]
fn pod_selector_or_namespace_selector() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ns-y-match-selector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]\n  - podSelector: {matchLabels: {pod: b}}",
    ));
    let mut r = Reachability::new(true);
    r.expect("x/a", "x/a", false).expect("x/c", "x/a", false);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy based on PodSelector and NamespaceSelector
#[test]
fn pod_selector_and_namespace_selector() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ns-y-podselector-and-nsselector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]\n    podSelector: {matchLabels: {pod: b}}",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false)
        .expect("y/b", "x/a", true)
        .expect("z/b", "x/a", true);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy based on Multiple PodSelectors and NamespaceSelectors
#[test]
fn multiple_pod_selectors_and_namespace_selectors() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ns-y-z-pod-b-c",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]\n    podSelector:\n      matchExpressions: [{key: pod, operator: In, values: [b, c]}]",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), pod("x", "a"), false)
        .expect("y/a", "x/a", false)
        .expect("z/a", "x/a", false);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy based on any PodSelectors
#[test]
fn any_pod_selectors() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ns-x-pod-b-c",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}\n  - podSelector: {matchLabels: {pod: c}}",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true)
        .expect("x/c", "x/a", true);
    c.validate(&r, Tcp, 80);
}

const ONLY_FROM_Y_A: &str = "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}\n    podSelector: {matchLabels: {pod: a}}";

/// should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector
#[test]
fn allow_only_from_a_pod_in_a_different_namespace() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ns-y-pod-a-via-namespace-pod-selector",
        ONLY_FROM_Y_A,
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false).expect("y/a", "x/a", true);
    c.validate(&r, Tcp, 80);
}

fn port_81_from_y(protocol: &str) -> String {
    format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: y}}}}\n  ports:\n  - {{port: 81, protocol: {protocol}}}")
}

/// should enforce policy based on Ports
#[test]
fn ports() {
    let mut c = Cluster::new();
    c.apply(&np("x", "allow-client-a-via-ns-selector", &port_81_from_y("TCP")));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), pod("x", "a"), false)
        .expect_peer(ns("y"), pod("x", "a"), true)
        .expect_peer(ns("z"), pod("x", "a"), false);
    c.validate(&r, Tcp, 81);
}

/// should enforce multiple, stacked policies with overlapping podSelectors
#[test]
fn multiple_stacked_policies_with_overlapping_pod_selectors() {
    let mut c = Cluster::new();
    c.apply(&np("x", "allow-client-a-via-ns-selector", &port_81_from_y("TCP")));
    let mut allow = Reachability::new(true);
    allow
        .expect_peer(ns("x"), pod("x", "a"), false)
        .expect_peer(ns("y"), pod("x", "a"), true)
        .expect_peer(ns("z"), pod("x", "a"), false);
    c.validate(&allow, Tcp, 81);
    let mut deny = Reachability::new(true);
    deny.expect_all_ingress("x/a", false);
    c.validate(&deny, Tcp, 80);
    c.apply(&np(
        "x",
        "allow-client-a-via-ns-selector-80",
        &port_81_from_y("TCP").replace("port: 81", "port: 80"),
    ));
    c.validate(&allow, Tcp, 80);
}

/// should support allow-all policy
#[test]
fn allow_all_policy() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-all",
        "podSelector: {matchLabels: {}}\npolicyTypes: [Ingress]\ningress:\n- {}",
    ));
    c.validate(&Reachability::new(true), Tcp, 80);
    c.validate(&Reachability::new(true), Tcp, 81);
}

/// should allow ingress access on one named port
#[test]
fn allow_ingress_on_one_named_port() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-all",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress:\n- ports:\n  - port: serve-81-tcp",
    ));
    c.validate(&Reachability::new(true), Tcp, 81);
    let mut r = Reachability::new(true);
    r.expect_peer(any(), ns("x"), false);
    c.validate(&r, Tcp, 80);
}

/// should allow ingress access from namespace on one named port
#[test]
fn allow_ingress_from_namespace_on_one_named_port() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-client-a-via-ns-selector-80",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}\n  ports:\n  - {port: serve-80-tcp, protocol: TCP}",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), pod("x", "a"), false)
        .expect_peer(ns("z"), pod("x", "a"), false);
    c.validate(&r, Tcp, 80);
    let mut fail = Reachability::new(true);
    fail.expect_all_ingress("x/a", false);
    c.validate(&fail, Tcp, 81);
}

/// should allow egress access on one named port
#[test]
fn allow_egress_on_one_named_port() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-egress",
        "podSelector: {}\npolicyTypes: [Egress]\negress:\n- ports:\n  - port: serve-80-tcp",
    ));
    c.validate(&Reachability::new(true), Tcp, 80);
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), any(), false);
    c.validate(&r, Tcp, 81);
}

/// should enforce updated policy
#[test]
fn updated_policy() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-all-mutate-to-deny-all",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress:\n- {}",
    ));
    c.validate(&Reachability::new(true), Tcp, 81);
    c.apply(&np(
        "x",
        "allow-all-mutate-to-deny-all",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress: []",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(any(), ns("x"), false);
    c.validate(&r, Tcp, 81);
}

/// should allow ingress access from updated namespace
#[test]
fn allow_ingress_from_updated_namespace() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-client-a-via-ns-selector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns2: updated}}",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false);
    c.validate(&r, Tcp, 80);
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: y\n  labels: {ns: y, ns2: updated}\n");
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false)
        .expect_peer(ns("y"), any(), true);
    c.validate(&r, Tcp, 80);
}

/// should allow ingress access from updated pod
#[test]
fn allow_ingress_from_updated_pod() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-client-a-via-pod-selector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b, pod2: updated}}",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false);
    c.validate(&r, Tcp, 80);
    c.add_pod_labels("x/b", &[("pod2", "updated")]);
    r.expect("x/b", "x/a", true);
    c.validate(&r, Tcp, 80);
}

/// should deny ingress from pods on other namespaces
#[test]
fn deny_ingress_from_pods_on_other_namespaces() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-empty-policy",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - podSelector: {matchLabels: {}}",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("y"), ns("x"), false)
        .expect_peer(ns("z"), ns("x"), false);
    c.validate(&r, Tcp, 80);
}

/// should deny ingress access to updated pod
#[test]
fn deny_ingress_to_updated_pod() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-ingress-via-label-selector",
        "podSelector: {matchLabels: {target: isolated}}\npolicyTypes: [Ingress]\ningress: []",
    ));
    c.validate(&Reachability::new(true), Tcp, 80);
    c.add_pod_labels("x/a", &[("target", "isolated")]);
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false);
    c.validate(&r, Tcp, 80);
}

/// should deny egress from pods based on PodSelector
#[test]
fn deny_egress_from_pods_by_pod_selector() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-egress-pod-a",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress: []",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_egress("x/a", false);
    c.validate(&r, Tcp, 80);
}

/// should deny egress from all pods in a namespace
#[test]
fn deny_egress_from_all_pods_in_a_namespace() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-egress-ns-x",
        "podSelector: {}\npolicyTypes: [Egress]\negress: []",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), any(), false);
    c.validate(&r, Tcp, 80);
}

/// should work with Ingress, Egress specified together
#[test]
fn ingress_and_egress_together() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-client-a-via-pod-selector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress, Ingress]\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}\negress:\n- ports:\n  - port: 80",
    ));
    let mut r80 = Reachability::new(true);
    r80.expect_all_ingress("x/a", false).expect("x/b", "x/a", true);
    c.validate(&r80, Tcp, 80);
    let mut r81 = Reachability::new(true);
    r81.expect_all_ingress("x/a", false)
        .expect_all_egress("x/a", false)
        .expect("x/b", "x/a", true);
    c.validate(&r81, Tcp, 81);
}

/// should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)
#[test]
fn deny_egress_on_the_client_side_even_if_the_server_allows() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-to-ns-y-pod-a",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}\n    podSelector: {matchLabels: {pod: a}}",
    ));
    let ingress = "policyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}\n    podSelector: {matchLabels: {pod: a}}";
    c.apply(&np(
        "y",
        "allow-from-xa-on-ya-match-selector",
        &format!("podSelector: {{matchLabels: {{pod: a}}}}\n{ingress}"),
    ));
    c.apply(&np(
        "y",
        "allow-from-xa-on-yb-match-selector",
        &format!("podSelector: {{matchLabels: {{pod: b}}}}\n{ingress}"),
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(pod("x", "a"), any(), false)
        .expect_peer(any(), pod("y", "a"), false)
        .expect_peer(pod("x", "a"), pod("y", "a"), true)
        .expect_peer(any(), pod("y", "b"), false);
    c.validate(&r, Tcp, 80);
}

/// should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector
#[test]
fn egress_to_a_server_in_a_different_namespace() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-to-ns-y-pod-a",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}\n    podSelector: {matchLabels: {pod: a}}",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_egress("x/a", false).expect("x/a", "y/a", true);
    c.validate(&r, Tcp, 80);
}

/// should enforce ingress policy allowing any port traffic to a server on a specific protocol
#[test]
fn ingress_any_port_on_a_specific_protocol() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ingress-by-proto",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- ports:\n  - protocol: TCP",
    ));
    c.validate(&Reachability::new(true), Tcp, 80);
    let mut r = Reachability::new(true);
    r.expect_peer(any(), pod("x", "a"), false);
    c.validate(&r, Udp, 80);
}

/// should enforce multiple ingress policies with ingress allow-all policy taking precedence
#[test]
fn multiple_ingress_policies_allow_all_takes_precedence() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ingress-port-80",
        "podSelector: {matchLabels: {}}\npolicyTypes: [Ingress]\ningress:\n- ports:\n  - port: 80",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(any(), ns("x"), false);
    c.validate(&r, Tcp, 81);
    c.apply(&np(
        "x",
        "allow-ingress",
        "podSelector: {matchLabels: {}}\npolicyTypes: [Ingress]\ningress:\n- {}",
    ));
    c.validate(&Reachability::new(true), Tcp, 81);
}

/// should enforce multiple egress policies with egress allow-all policy taking precedence
#[test]
fn multiple_egress_policies_allow_all_takes_precedence() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-egress-port-80",
        "podSelector: {matchLabels: {}}\npolicyTypes: [Egress]\negress:\n- ports:\n  - port: 80",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), any(), false);
    c.validate(&r, Tcp, 81);
    c.apply(&np(
        "x",
        "allow-egress",
        "podSelector: {matchLabels: {}}\npolicyTypes: [Egress]\negress:\n- {}",
    ));
    c.validate(&Reachability::new(true), Tcp, 81);
}

/// should stop enforcing policies after they are deleted
#[test]
fn stop_enforcing_policies_after_they_are_deleted() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-all",
        "podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress: []\negress: []",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), any(), false)
        .expect_peer(any(), ns("x"), false);
    c.validate(&r, Tcp, 80);
    c.delete_all_policies();
    c.validate(&Reachability::new(true), Tcp, 80);
    assert_eq!(c.compiler.entry_count(), 0);
    assert_eq!(c.datapath.isolation_count(), 0);
}

/// should allow egress access to server in CIDR block
#[test]
fn allow_egress_to_server_in_cidr_block() {
    let mut c = Cluster::new();
    let ip = c.pod_ip("y/b");
    c.apply(&np(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {{cidr: {ip}/32}}"),
    ));
    let mut r = Reachability::new(true);
    r.expect_all_egress("x/a", false).expect("x/a", "y/b", true);
    c.validate(&r, Tcp, 80);
}

/// The e2e suite's makeLargeCIDRForIP: the /16 around an IPv4 address.
fn large_cidr(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.0.0/16", o[0], o[1])
}

/// should enforce except clause while egress access to server in CIDR block
#[test]
fn except_clause_in_egress_cidr_block() {
    let mut c = Cluster::new();
    let ip = c.pod_ip("x/b");
    c.apply(&np(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        &format!(
            "podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {{cidr: {}, except: [{ip}/32]}}",
            large_cidr(ip)
        ),
    ));
    let mut r = Reachability::new(true);
    r.expect("x/a", "x/b", false);
    c.validate(&r, Tcp, 80);
}

/// should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed
#[test]
fn ip_overlapping_cidr_and_except_is_allowed() {
    let mut c = Cluster::new();
    let ip = c.pod_ip("x/b");
    c.apply(&np(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        &format!(
            "podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {{cidr: {}, except: [{ip}/32]}}",
            large_cidr(ip)
        ),
    ));
    let mut r = Reachability::new(true);
    r.expect("x/a", "x/b", false);
    c.validate(&r, Tcp, 80);
    // Upstream updates the same policy to allow x/b's address alone.
    c.apply(&np(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {{cidr: {ip}/32}}"),
    ));
    let mut r = Reachability::new(true);
    r.expect_all_egress("x/a", false).expect("x/a", "x/b", true);
    c.validate(&r, Tcp, 80);
}

/// should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector
#[test]
fn ingress_and_egress_controlled_independently() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-egress-for-target",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- {}",
    ));
    c.validate(&Reachability::new(true), Tcp, 80);
    c.apply(&np(
        "x",
        "deny-ingress-via-label-selector",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: []",
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false);
    c.validate(&r, Tcp, 80);
}

/// should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP
#[test]
fn sctp_is_not_tcp() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-ingress",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress: []",
    ));
    c.apply(&np("x", "allow-only-sctp-ingress-on-port-81", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- ports:\n  - {port: 81, protocol: SCTP}"));
    let mut r = Reachability::new(true);
    r.expect_peer(any(), ns("x"), false);
    c.validate(&r, Tcp, 81);
}

/// should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP
#[test]
fn sctp_policy_still_isolates() {
    let mut c = Cluster::new();
    c.apply(&np("x", "allow-only-sctp-ingress-on-port-80", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- ports:\n  - {port: 80, protocol: SCTP}"));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false);
    c.validate(&r, Tcp, 81);
}

/// should not allow access by TCP when a policy specifies only UDP
#[test]
fn udp_only_policy_does_not_allow_tcp() {
    let mut c = Cluster::new();
    c.apply(&np("x", "allow-only-udp-ingress-on-port-81", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- ports:\n  - {port: 81, protocol: UDP}"));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false);
    c.validate(&r, Tcp, 81);
}

/// should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label
#[test]
fn namespace_selector_match_labels_on_the_default_ns_label() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-client-a-via-ns-selector-for-immutable-ns-label",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), pod("x", "a"), false)
        .expect_peer(ns("z"), pod("x", "a"), false);
    c.validate(&r, Tcp, 80);
}

/// should enforce policy based on NamespaceSelector with MatchExpressions using default ns label
#[test]
fn namespace_selector_match_expressions_on_the_default_ns_label() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ns-y-match-selector-for-immutable-ns-label",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector:\n      matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}]",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(pod("x", "a"), ns("y"), false);
    c.validate(&r, Tcp, 80);
}

/// (UDP) should support a 'default-deny-ingress' policy
#[test]
fn udp_default_deny_ingress() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-all",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress: []",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(any(), ns("x"), false);
    c.validate(&r, Udp, 80);
}

/// (UDP) should enforce policy based on Ports
#[test]
fn udp_ports() {
    let mut c = Cluster::new();
    c.apply(&np("x", "allow-ingress-on-port-81-ns-x", &port_81_from_y("UDP")));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), pod("x", "a"), false)
        .expect_peer(ns("z"), pod("x", "a"), false);
    c.validate(&r, Udp, 81);
    // And TCP to the same port stays closed.
    let mut tcp = Reachability::new(true);
    tcp.expect_all_ingress("x/a", false);
    c.validate(&tcp, Tcp, 81);
}

/// (UDP) should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector
#[test]
fn udp_allow_only_from_a_pod_in_a_different_namespace() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ns-y-pod-a-via-namespace-pod-selector",
        ONLY_FROM_Y_A,
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false).expect("y/a", "x/a", true);
    c.validate(&r, Udp, 80);
}

/// (SCTP) should support a 'default-deny-ingress' policy
#[test]
fn sctp_default_deny_ingress() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "deny-all",
        "podSelector: {}\npolicyTypes: [Ingress]\ningress: []",
    ));
    let mut r = Reachability::new(true);
    r.expect_peer(any(), ns("x"), false);
    c.validate(&r, Sctp, 80);
}

/// (SCTP) should enforce policy based on Ports
#[test]
fn sctp_ports() {
    let mut c = Cluster::new();
    c.apply(&np("x", "allow-ingress-on-port-81-ns-x", &port_81_from_y("SCTP")));
    let mut r = Reachability::new(true);
    r.expect_peer(ns("x"), pod("x", "a"), false)
        .expect_peer(ns("z"), pod("x", "a"), false);
    c.validate(&r, Sctp, 81);
}

/// (SCTP) should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector
#[test]
fn sctp_allow_only_from_a_pod_in_a_different_namespace() {
    let mut c = Cluster::new();
    c.apply(&np(
        "x",
        "allow-ns-y-pod-a-via-namespace-pod-selector",
        ONLY_FROM_Y_A,
    ));
    let mut r = Reachability::new(true);
    r.expect_all_ingress("x/a", false).expect("y/a", "x/a", true);
    c.validate(&r, Sctp, 80);
}
