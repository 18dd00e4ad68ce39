//! Names for the numbers the datapath reports, from the node agent:
//! policies (`GET /v1/policies`: a label rule carries its policy's number)
//! and identities' labels (`GET /v1/identities`). Cached, asked again (at
//! most once a second) when a number is not known yet. Without an agent,
//! or one that does not serve policies yet (404), a policy is `policy #N`
//! and an identity its number: names are a help, never a reason to fail.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ebpfcni::events::LabelDecision;
use ebpfcni_api::{Client, PolicySummary};
use serde::Serialize;

use crate::Common;

/// How often an unknown number may send us to the agent again.
const REFRESH: Duration = Duration::from_secs(1);

/// A policy as events and explain name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyName {
    pub number: u32,
    /// `NetworkPolicy`, ...; absent when the agent did not name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl std::fmt::Display for PolicyName {
    /// `NAMESPACE/NAME (KIND)`, `NAME (KIND)` for a cluster-wide one, else
    /// `policy #N`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, &self.kind) {
            (Some(name), Some(kind)) => match self.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => write!(f, "{ns}/{name} ({kind})"),
                _ => write!(f, "{name} ({kind})"),
            },
            _ => write!(f, "policy #{}", self.number),
        }
    }
}

/// One kind of answer of the agent, cached.
struct Cache<T> {
    known: HashMap<u32, T>,
    asked: Option<Instant>,
}

impl<T> Cache<T> {
    fn new() -> Self {
        Self {
            known: HashMap::new(),
            asked: None,
        }
    }

    /// `key`'s entry, asking `fetch` again first when it is not known and
    /// the last answer is older than [`REFRESH`].
    fn get(&mut self, key: u32, fetch: impl FnOnce() -> Option<HashMap<u32, T>>) -> Option<&T> {
        if !self.known.contains_key(&key) && self.asked.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.asked = Some(Instant::now());
            if let Some(all) = fetch() {
                self.known = all;
            }
        }
        self.known.get(&key)
    }
}

/// The agent's names, as far as it gives them.
pub struct Names {
    client: Option<Client>,
    policies: Cache<PolicySummary>,
    identities: Cache<String>,
}

impl Names {
    /// Asks the agent of `--agent` when one listens there; nothing is
    /// asked until a number needs a name.
    pub fn new(common: &Common) -> Self {
        let client = common
            .agent
            .exists()
            .then(|| Client::new(&common.agent).with_timeout(Duration::from_secs(2)))
            .filter(|c| c.listening().is_ok());
        Self::with_client(client)
    }

    /// Names without an agent: every policy `policy #N`.
    pub fn none() -> Self {
        Self::with_client(None)
    }

    fn with_client(client: Option<Client>) -> Self {
        Self {
            client,
            policies: Cache::new(),
            identities: Cache::new(),
        }
    }

    /// Whether an agent answers (names may come).
    pub fn has_agent(&self) -> bool {
        self.client.is_some()
    }

    /// Policy `number` as the agent names it, else `policy #N`.
    pub fn policy(&mut self, number: u32) -> PolicyName {
        let client = self.client.as_ref();
        let found = self.policies.get(number, || {
            // Unreachable, or an agent without the route (404): unnamed.
            let all = client?.policies().ok()?;
            Some(all.into_iter().map(|p| (p.number, p)).collect())
        });
        match found {
            Some(p) => PolicyName {
                number,
                kind: Some(p.kind.clone()),
                namespace: Some(p.namespace.clone()),
                name: Some(p.name.clone()),
            },
            None => PolicyName {
                number,
                kind: None,
                namespace: None,
                name: None,
            },
        }
    }

    /// The labels of identity `id` (`k=v,...`, or `reserved:NAME`), when
    /// the agent knows it.
    pub fn labels(&mut self, id: u32) -> Option<String> {
        if id == 0 {
            return None;
        }
        let client = self.client.as_ref();
        self.identities
            .get(id, || {
                let all = client?.identities().ok()?;
                Some(all.into_iter().map(|i| (i.id, i.label_text())).collect())
            })
            .cloned()
    }
}

/// What label policy decided, in words and for JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelVerdict {
    /// The sender's egress rule's policy (an allow, or a deny rule's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_policy: Option<PolicyName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_policy: Option<PolicyName>,
    /// `egress` (the sender's) or `ingress` (the receiver's) isolation
    /// dropped it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub isolated: Vec<&'static str>,
}

impl LabelVerdict {
    pub fn of(decision: &LabelDecision, names: &mut Names) -> Self {
        let isolated = [
            (decision.egress_isolated, "egress"),
            (decision.ingress_isolated, "ingress"),
        ]
        .into_iter()
        .filter_map(|(on, side)| on.then_some(side))
        .collect();
        Self {
            egress_policy: decision.egress_policy.map(|n| names.policy(n)),
            ingress_policy: decision.ingress_policy.map(|n| names.policy(n)),
            isolated,
        }
    }

    /// `policy egress NS/NAME (KIND), ingress ...`, `isolated: the
    /// sender's egress`; empty when label policy judged it without a rule
    /// (both sides unrestricted).
    pub fn text(&self) -> String {
        let mut parts = Vec::new();
        let rules: Vec<String> = [("egress", &self.egress_policy), ("ingress", &self.ingress_policy)]
            .into_iter()
            .filter_map(|(side, p)| p.as_ref().map(|p| format!("{side} {p}")))
            .collect();
        if !rules.is_empty() {
            parts.push(format!("policy {}", rules.join(", ")));
        }
        for side in &self.isolated {
            parts.push(match *side {
                "egress" => "isolated: the sender's egress".to_owned(),
                _ => "isolated: the receiver's ingress".to_owned(),
            });
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_without_a_name_is_its_number() {
        let mut names = Names::none();
        assert_eq!(names.policy(7).to_string(), "policy #7");
        let named = PolicyName {
            number: 7,
            kind: Some("NetworkPolicy".into()),
            namespace: Some("prod".into()),
            name: Some("web".into()),
        };
        assert_eq!(named.to_string(), "prod/web (NetworkPolicy)");
        let decision = LabelDecision {
            egress_policy: Some(3),
            ingress_isolated: true,
            ..Default::default()
        };
        assert_eq!(
            LabelVerdict::of(&decision, &mut names).text(),
            "policy egress policy #3; isolated: the receiver's ingress"
        );
    }
}
