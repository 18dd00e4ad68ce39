//! Policy documents: what parses, and bad documents refused naming the
//! document (place, kind, namespace, name) and the field, all or nothing.

use ebpfcni_policy::document::{parse, DocumentError, ParseOptions};
use ebpfcni_policy::model::{Entity, Peer, PolicyKind, Ports};
use ebpfcni_policy::Protocol;

fn opts() -> ParseOptions {
    ParseOptions::default()
}

fn refused(yaml: &str) -> DocumentError {
    *parse(yaml, &opts()).expect_err("must be refused")
}

const GOOD_NP: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: front}}
      namespaceSelector: {matchLabels: {team: a}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - {port: 8080}
    - {port: 9000, endPort: 9100, protocol: UDP}
";

#[test]
fn a_stream_of_documents_and_lists_parses_all_of_them() {
    let text = format!(
        "{GOOD_NP}---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {{name: prod, labels: {{team: a}}}}\n- apiVersion: cilium.io/v2\n  kind: CiliumNetworkPolicy\n  metadata: {{name: c, namespace: prod}}\n  spec:\n    endpointSelector: {{matchLabels: {{app: web}}}}\n    ingressDeny:\n    - fromEntities: [world]\n      toPorts: [{{ports: [{{port: \"22\", protocol: TCP}}]}}]\n---\n"
    );
    let docs = parse(&text, &opts()).unwrap();
    assert_eq!(docs.policies.len(), 2);
    assert_eq!(docs.namespaces["prod"]["team"], "a");
    let np = &docs.policies[0];
    assert_eq!(np.key.kind, PolicyKind::NetworkPolicy);
    // No policyTypes and no egress rules: ingress only.
    assert!(np.ingress.is_some() && np.egress.is_none());
    let rule = &np.ingress.as_ref().unwrap()[0];
    assert_eq!(rule.peers.len(), 2);
    assert_eq!(rule.ports[0].protocol, Some(Protocol::Tcp));
    assert_eq!(rule.ports[0].ports, Ports::Range(8080, 8080));
    assert_eq!(rule.ports[1].ports, Ports::Range(9000, 9100));
    let cnp = &docs.policies[1];
    assert_eq!(cnp.key.kind, PolicyKind::CiliumNetworkPolicy);
    // A deny section alone isolates that direction (as Cilium enforces it).
    assert_eq!(cnp.ingress, Some(vec![]));
    assert_eq!(cnp.ingress_deny[0].peers, vec![Peer::Entity(Entity::World)]);
}

#[test]
fn policy_types_default_to_egress_only_with_egress_rules() {
    let docs = parse(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e}\nspec:\n  podSelector: {}\n  egress:\n  - ports: [{port: 53, protocol: UDP}]\n",
        &opts(),
    )
    .unwrap();
    let p = &docs.policies[0];
    assert_eq!(p.key.namespace, "default");
    assert!(p.ingress.is_some() && p.egress.is_some());
    // An empty list is defaulted as an absent one; what `kubectl get -o
    // yaml` adds (`status: {}`, nulls) is no unknown field.
    let docs = parse(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, creationTimestamp: null}\nspec:\n  podSelector: {}\n  policyTypes: []\nstatus: {}\n",
        &opts(),
    )
    .unwrap();
    assert!(docs.policies[0].ingress.is_some() && docs.policies[0].egress.is_none());
}

#[test]
fn an_unknown_kind_is_refused_naming_the_document() {
    let e = refused(&format!(
        "{GOOD_NP}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s}}\n"
    ));
    assert_eq!((e.document, e.field.as_str()), (2, "kind"));
    assert!(
        e.to_string()
            .starts_with("document 2 (Service default/s), field kind: unknown kind"),
        "{e}"
    );
}

#[test]
fn a_wrong_api_version_is_refused() {
    let e = refused(&GOOD_NP.replace("networking.k8s.io/v1", "extensions/v1beta1"));
    assert_eq!(e.field, "apiVersion");
    assert_eq!(e.kind.as_deref(), Some("NetworkPolicy"));
    assert_eq!(
        (e.namespace.as_deref(), e.name.as_deref()),
        (Some("prod"), Some("web"))
    );
}

#[test]
fn selectors_that_do_not_parse_are_refused_naming_the_field() {
    let e = refused(&GOOD_NP.replace(
        "podSelector: {matchLabels: {app: web}}",
        "podSelector: {matchExpressions: [{key: app, operator: Equals, values: [web]}]}",
    ));
    assert_eq!(e.field, "spec.podSelector.matchExpressions[0].operator");
    let e = refused(&GOOD_NP.replace(
        "podSelector: {matchLabels: {app: web}}",
        "podSelector: {matchExpressions: [{key: app, operator: NotIn}]}",
    ));
    assert_eq!(e.field, "spec.podSelector.matchExpressions[0].values");
    let e = refused(&GOOD_NP.replace("{app: front}", "{\"bad key\": front}"));
    assert_eq!(e.field, "spec.ingress[0].from[0].podSelector.matchLabels");
}

#[test]
fn cidrs_with_host_bits_or_excepts_outside_are_refused() {
    let e = refused(&GOOD_NP.replace("cidr: 10.0.0.0/8", "cidr: 10.0.0.1/8"));
    assert_eq!(e.field, "spec.ingress[0].from[1].ipBlock.cidr");
    assert!(e.message.contains("host bits"), "{e}");
    let e = refused(&GOOD_NP.replace("except: [10.1.0.0/16]", "except: [192.168.0.0/16]"));
    assert_eq!(e.field, "spec.ingress[0].from[1].ipBlock.except[0]");
    let e = refused(&GOOD_NP.replace("except: [10.1.0.0/16]", "except: [10.0.0.0/8]"));
    assert_eq!(e.field, "spec.ingress[0].from[1].ipBlock.except[0]");
}

#[test]
fn duplicates_in_one_apply_are_refused_naming_the_first() {
    let e = refused(&format!("{GOOD_NP}---\n{GOOD_NP}"));
    assert_eq!((e.document, e.field.as_str()), (2, "metadata.name"));
    assert!(e.message.contains("document 1"), "{e}");
    // The same name in another namespace, or of another kind, is another object.
    parse(
        &format!(
            "{GOOD_NP}---\n{}",
            GOOD_NP.replace("namespace: prod", "namespace: dev")
        ),
        &opts(),
    )
    .unwrap();
}

#[test]
fn named_ports_need_known_container_ports() {
    let text = GOOD_NP.replace("{port: 8080}", "{port: http}");
    let e = refused(&text);
    assert_eq!(e.field, "spec.ingress[0].ports[0].port");
    assert!(e.message.contains("no container ports are known"), "{e}");
    let docs = parse(
        &text,
        &ParseOptions {
            named_ports_known: true,
        },
    )
    .unwrap();
    assert_eq!(
        docs.policies[0].ingress.as_ref().unwrap()[0].ports[0].ports,
        Ports::Named("http".into())
    );
}

#[test]
fn ports_out_of_range_and_backward_ranges_are_refused() {
    let e = refused(&GOOD_NP.replace("{port: 8080}", "{port: 70000}"));
    assert_eq!(e.field, "spec.ingress[0].ports[0].port");
    let e = refused(&GOOD_NP.replace("endPort: 9100", "endPort: 8000"));
    assert_eq!(e.field, "spec.ingress[0].ports[1].endPort");
    let e = refused(&GOOD_NP.replace("protocol: UDP", "protocol: ICMP"));
    assert_eq!(e.field, "spec.ingress[0].ports[1].protocol");
}

#[test]
fn fields_outside_the_api_or_the_subset_are_refused_by_name() {
    let e = refused(&GOOD_NP.replace("podSelector: {matchLabels: {app: web}}", "podSelectr: {}"));
    assert_eq!(e.field, "spec.podSelectr");
    let e = refused(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c}\nspec:\n  endpointSelector: {}\n  egress:\n  - toFQDNs: [{matchName: example.com}]\n",
    );
    assert!(
        e.field.starts_with("spec.egress[0]") && e.message.contains("toFQDNs"),
        "{e}"
    );
    let e = refused(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEntities: [kube-apiserver]\n",
    );
    assert_eq!(e.field, "spec.ingress[0].fromEntities[0]");
}

#[test]
fn one_bad_document_refuses_the_whole_text() {
    let text = format!(
        "{GOOD_NP}---\n{}",
        GOOD_NP
            .replace("name: web", "name: web2")
            .replace("10.0.0.0/8", "10.0.0.0/33")
    );
    let e = refused(&text);
    assert_eq!(e.document, 2);
    assert_eq!(e.name.as_deref(), Some("web2"));
}

#[test]
fn cilium_rules_isolate_only_with_rules_and_an_empty_rule_allows_nobody() {
    let cnp = |spec: &str| {
        parse(
            &format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: c}}\nspec:\n  endpointSelector: {{}}\n{spec}"),
            &opts(),
        )
        .unwrap()
        .policies
        .remove(0)
    };
    // An empty list does not apply (Cilium: "if omitted or empty").
    assert_eq!(cnp("  ingress: []\n").ingress, None);
    // `ingress: [{}]`: Cilium's default deny, a rule that allows nobody.
    let p = cnp("  ingress:\n  - {}\n");
    assert_eq!(p.ingress.unwrap()[0].peers, vec![Peer::Nothing]);
    // A rule with ports only allows every peer on them.
    let p = cnp("  egress:\n  - toPorts: [{ports: [{port: \"53\", protocol: UDP}]}]\n");
    let rule = &p.egress.unwrap()[0];
    assert!(rule.peers.is_empty());
    assert_eq!(rule.ports[0].ports, Ports::Range(53, 53));
    // A deny list alone enforces its direction.
    let p = cnp("  egressDeny:\n  - toEntities: [world]\n");
    assert_eq!(p.egress, Some(vec![]));
    assert_eq!(p.ingress, None);
}
