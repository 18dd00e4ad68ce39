//! Label selectors as Kubernetes defines them, and endpoint selectors (which
//! pods, in which namespaces).

use std::collections::BTreeSet;
use std::fmt;

use crate::{namespace_of, Labels, NAMESPACE_NAME_LABEL};

/// One `matchExpressions` requirement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // Kubernetes: NotIn matches a set without the key.
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }
}

/// A label selector: every label of `labels` and every requirement must
/// match. The empty selector matches every label set.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSelector {
    pub labels: Labels,
    pub requirements: BTreeSet<Requirement>,
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector names `key` (in matchLabels or an expression).
    pub fn names(&self, key: &str) -> bool {
        self.labels.contains_key(key) || self.requirements.iter().any(|r| r.key() == key)
    }

    /// Parses the API's selector; `field` is where it sits, for errors.
    pub fn from_k8s(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        field: &str,
    ) -> Result<Self, SelectorError> {
        let mut out = LabelSelector::default();
        for (k, v) in sel.match_labels.iter().flatten() {
            check_key(k).map_err(|why| SelectorError::new(format!("{field}.matchLabels"), why))?;
            check_value(v).map_err(|why| SelectorError::new(format!("{field}.matchLabels.{k}"), why))?;
            out.labels.insert(k.clone(), v.clone());
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            out.requirements
                .insert(requirement(&e.key, &e.operator, e.values.as_deref(), &at)?);
        }
        Ok(out)
    }
}

/// One matchExpressions entry, checked as the API server does.
pub fn requirement(
    key: &str,
    operator: &str,
    values: Option<&[String]>,
    at: &str,
) -> Result<Requirement, SelectorError> {
    check_key(key).map_err(|why| SelectorError::new(format!("{at}.key"), why))?;
    let values = values.unwrap_or_default();
    for v in values {
        check_value(v).map_err(|why| SelectorError::new(format!("{at}.values"), why))?;
    }
    let set: BTreeSet<String> = values.iter().cloned().collect();
    let need_values = |r: Requirement| {
        if set.is_empty() {
            Err(SelectorError::new(
                format!("{at}.values"),
                format!("operator {operator} needs at least one value"),
            ))
        } else {
            Ok(r)
        }
    };
    let no_values = |r: Requirement| {
        if set.is_empty() {
            Ok(r)
        } else {
            Err(SelectorError::new(
                format!("{at}.values"),
                format!("operator {operator} takes no values"),
            ))
        }
    };
    match operator {
        "In" => need_values(Requirement::In(key.to_string(), set.clone())),
        "NotIn" => need_values(Requirement::NotIn(key.to_string(), set.clone())),
        "Exists" => no_values(Requirement::Exists(key.to_string())),
        "DoesNotExist" => no_values(Requirement::DoesNotExist(key.to_string())),
        other => Err(SelectorError::new(
            format!("{at}.operator"),
            format!("unknown operator {other:?} (In, NotIn, Exists or DoesNotExist)"),
        )),
    }
}

/// A selector that does not parse: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    pub field: String,
    pub why: String,
}

impl SelectorError {
    fn new(field: String, why: String) -> Self {
        Self { field, why }
    }
}

fn name_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain (at most 253),
/// the name 1 to 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub fn check_key(key: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("label key {key:?}: {why}"));
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return bad("the prefix must be a DNS subdomain (lower case, '.' separated)");
        }
    }
    if !name_part_ok(name) {
        return bad("the name must be 1 to 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends");
    }
    Ok(())
}

/// A label value: empty, or 1 to 63 of `[A-Za-z0-9_.-]`, alphanumeric at
/// both ends.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || name_part_ok(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?}: at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends"
        ))
    }
}

/// Which namespaces an endpoint selector takes pods from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespaces {
    /// One namespace (a policy's own).
    Named(String),
    /// Namespaces whose labels (with `kubernetes.io/metadata.name`) match.
    Matching(LabelSelector),
}

/// Pods (by their labels) in namespaces: a NetworkPolicy's podSelector, a
/// peer's podSelector and namespaceSelector (AND), a Cilium endpoint selector.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointSelector {
    pub pods: LabelSelector,
    pub namespaces: Namespaces,
}

impl EndpointSelector {
    /// Whether an endpoint with these labels matches; `namespace_labels` are
    /// the labels of its namespace as selectors see them ([`namespace_labels`]).
    pub fn matches(&self, labels: &Labels, namespace_labels: &Labels) -> bool {
        let ns = namespace_of(labels);
        let ns_ok = match &self.namespaces {
            Namespaces::Named(n) => n == ns,
            Namespaces::Matching(sel) => sel.matches(namespace_labels),
        };
        ns_ok && self.pods.matches(labels)
    }

    /// Whether matching depends on namespaces' labels (beyond their names).
    pub fn uses_namespace_labels(&self) -> bool {
        match &self.namespaces {
            Namespaces::Named(_) => false,
            Namespaces::Matching(sel) => !sel.is_empty(),
        }
    }
}

/// A namespace's labels as selectors see them: its own, plus
/// `kubernetes.io/metadata.name: <name>` (which Kubernetes always sets).
pub fn namespace_labels(name: &str, own: Option<&Labels>) -> Labels {
    let mut labels = own.cloned().unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    labels
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("{}");
        }
        let mut parts: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for r in &self.requirements {
            let list = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
            parts.push(match r {
                Requirement::In(k, vs) => format!("{k} in ({})", list(vs)),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", list(vs)),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expressions_match_as_kubernetes_defines_them() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let vals = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert!(Requirement::In("app".into(), vals(&["web", "db"])).matches(&l));
        assert!(!Requirement::In("zone".into(), vals(&["a"])).matches(&l));
        assert!(Requirement::NotIn("zone".into(), vals(&["a"])).matches(&l));
        assert!(!Requirement::NotIn("app".into(), vals(&["web"])).matches(&l));
        assert!(Requirement::Exists("tier".into()).matches(&l));
        assert!(Requirement::DoesNotExist("zone".into()).matches(&l));
        assert!(LabelSelector::all().matches(&l));
    }

    #[test]
    fn bad_expressions_are_refused_naming_the_field() {
        let e = requirement(
            "app",
            "Equals",
            Some(&["x".into()]),
            "spec.podSelector.matchExpressions[0]",
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.podSelector.matchExpressions[0].operator");
        let e = requirement("app", "In", None, "s").unwrap_err();
        assert_eq!(e.field, "s.values");
        let e = requirement("app", "Exists", Some(&["x".into()]), "s").unwrap_err();
        assert_eq!(e.field, "s.values");
        assert!(requirement("bad key!", "Exists", None, "s").is_err());
        assert!(check_key("kubernetes.io/metadata.name").is_ok());
        assert!(check_key("Bad.Prefix/x").is_err());
    }
}
