//! Labels and the filter that keeps a label set's identity about the kind
//! of workload, not the container: ids, timestamps and build or image
//! metadata are left out, so identities grow with kinds of workload.

use ebpfcni_api::{Labels, POD_NAMESPACE_LABEL};

/// Key prefixes the project reserves: no container may set them.
pub const RESERVED_PREFIXES: [&str; 2] = ["ebpfcni.io/", "reserved:"];

/// Left out of identities unless the agent is told otherwise: what
/// runtimes and build tools stamp on every container (Cilium's default
/// label filter leaves out the same kinds).
pub const DEFAULT_EXCLUDED: [&str; 14] = [
    "io.containers.",
    "org.opencontainers.",
    "io.podman.",
    "io.buildah.",
    "io.cri-containerd.",
    "io.containerd.",
    "io.kubernetes.pod.name",
    "io.kubernetes.pod.uid",
    "io.kubernetes.container.",
    "containerd.io/",
    "nerdctl/",
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
];

/// Which labels make a container's identity: every label but the excluded
/// ones. An exclusion ending in '.', '/' or '*' matches every key that
/// starts with it (without the '*'); any other matches that key alone.
#[derive(Debug, Clone)]
pub struct LabelFilter {
    excluded: Vec<String>,
}

impl Default for LabelFilter {
    fn default() -> Self {
        Self::new(DEFAULT_EXCLUDED.iter().map(|s| s.to_string()).collect())
    }
}

impl LabelFilter {
    pub fn new(excluded: Vec<String>) -> Self {
        Self { excluded }
    }

    pub fn excluded(&self) -> &[String] {
        &self.excluded
    }

    /// The labels that make the identity.
    pub fn identity_labels(&self, labels: &Labels) -> Labels {
        labels
            .iter()
            .filter(|(k, _)| !self.excluded.iter().any(|e| excludes(e, k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn excludes(exclusion: &str, key: &str) -> bool {
    match exclusion.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None if exclusion.ends_with(['.', '/']) => key.starts_with(exclusion),
        None => key == exclusion,
    }
}

/// Why a label set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLabel {
    #[error("label key {0:?} is reserved for ebpfcni (keys starting with {prefixes})", prefixes = RESERVED_PREFIXES.join(" or "))]
    Reserved(String),
    #[error("label {key:?}={value:?}: a key is 1 to 253 printable characters without '=' or ',', a value at most 253 without ','")]
    Malformed { key: String, value: String },
    #[error("label {POD_NAMESPACE_LABEL:?} comes from the CNI request's K8S_POD_NAMESPACE only; a container cannot set it")]
    Namespace,
}

fn printable(s: &str) -> bool {
    s.chars().all(|c| !c.is_control())
}

/// Checks labels a container (or its runtime) gave.
pub fn check_container_labels(labels: &Labels) -> Result<(), BadLabel> {
    for (key, value) in labels {
        check_label(key, value)?;
        if key == POD_NAMESPACE_LABEL {
            return Err(BadLabel::Namespace);
        }
    }
    Ok(())
}

/// Checks one label's shape, and that its key is not reserved.
pub fn check_label(key: &str, value: &str) -> Result<(), BadLabel> {
    let bad = || BadLabel::Malformed {
        key: key.to_string(),
        value: value.to_string(),
    };
    if key.is_empty() || key.len() > 253 || key.contains(['=', ',']) || !printable(key) {
        return Err(bad());
    }
    if value.len() > 253 || value.contains(',') || !printable(value) {
        return Err(bad());
    }
    if RESERVED_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return Err(BadLabel::Reserved(key.to_string()));
    }
    Ok(())
}

/// A label set as one string, `k1=v1,k2=v2` in key order: the store's key
/// for its identity, and how labels are shown.
pub fn canonical(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
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
    fn the_default_filter_leaves_out_runtime_metadata_and_the_pod_name() {
        let all = labels(&[
            ("app", "web"),
            ("io.containers.autoupdate", "registry"),
            ("org.opencontainers.image.created", "2026-01-01"),
            ("io.containerd.image.config.stop-signal", "SIGTERM"),
            ("io.kubernetes.pod.name", "web-7d9f"),
            ("io.kubernetes.pod.namespace", "prod"),
            ("pod-template-hash", "7d9f"),
        ]);
        assert_eq!(
            LabelFilter::default().identity_labels(&all),
            labels(&[("app", "web"), ("io.kubernetes.pod.namespace", "prod")])
        );
    }

    #[test]
    fn exclusions_match_a_key_or_a_prefix() {
        let filter = LabelFilter::new(vec!["build".into(), "ci/".into(), "git*".into()]);
        let all = labels(&[
            ("build", "1"),
            ("build-id", "2"),
            ("ci/run", "3"),
            ("gitsha", "4"),
            ("app", "x"),
        ]);
        assert_eq!(
            filter.identity_labels(&all),
            labels(&[("app", "x"), ("build-id", "2")])
        );
    }

    #[test]
    fn the_order_labels_come_in_does_not_change_their_set() {
        let a = labels(&[("b", "2"), ("a", "1")]);
        let b = labels(&[("a", "1"), ("b", "2")]);
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), "a=1,b=2");
    }

    #[test]
    fn containers_cannot_set_reserved_keys_or_their_namespace() {
        assert_eq!(
            check_container_labels(&labels(&[("ebpfcni.io/identity", "1")])),
            Err(BadLabel::Reserved("ebpfcni.io/identity".into()))
        );
        assert_eq!(
            check_container_labels(&labels(&[(POD_NAMESPACE_LABEL, "kube-system")])),
            Err(BadLabel::Namespace)
        );
        assert!(check_container_labels(&labels(&[("a=b", "c")])).is_err());
        assert!(check_container_labels(&labels(&[("app", "x,y")])).is_err());
        assert!(check_container_labels(&labels(&[("app", "web")])).is_ok());
    }
}
