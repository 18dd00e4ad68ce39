//! The node agent, seen from the CLIs: which addresses are its endpoints
//! (with their labels), so that listings show labels and hand changes never
//! fight the agent. No agent (no socket) is the plan's way: everything is
//! the operator's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ebpfcni_api::{Client, Endpoint};

use crate::{Common, Failure};

/// The agent's endpoints by address: empty when no agent listens on
/// `--agent`. An agent that is there but does not answer is an error
/// (its endpoints cannot be told apart from hand entries).
pub fn endpoints(common: &Common) -> Result<BTreeMap<Ipv4Addr, Endpoint>, Failure> {
    if !common.agent.exists() {
        return Ok(BTreeMap::new());
    }
    let client = Client::new(&common.agent).with_timeout(Duration::from_secs(5));
    if client.listening().is_err() {
        return Ok(BTreeMap::new()); // a socket file nobody listens on: no agent
    }
    let endpoints = client.endpoints().map_err(|e| {
        Failure::Runtime(format!(
            "{e} (its endpoints cannot be told from hand entries; --agent names another socket)"
        ))
    })?;
    Ok(endpoints
        .into_iter()
        .flat_map(|e| e.ips.clone().into_iter().map(move |ip| (ip, e.clone())))
        .collect())
}

/// The agent's identities (number -> `k=v,...`, or the reserved name):
/// empty when no agent listens on `--agent`.
pub fn identities(common: &Common) -> Result<BTreeMap<u32, String>, Failure> {
    if !common.agent.exists() {
        return Ok(BTreeMap::new());
    }
    let client = Client::new(&common.agent).with_timeout(Duration::from_secs(5));
    if client.listening().is_err() {
        return Ok(BTreeMap::new());
    }
    let identities = client.identities().map_err(|e| Failure::Runtime(e.to_string()))?;
    Ok(identities.into_iter().map(|i| (i.id, i.label_text())).collect())
}

/// Refuses a hand change of `ip` when it is one of the agent's endpoints.
pub fn refuse_managed(agent: &BTreeMap<Ipv4Addr, Endpoint>, ip: Ipv4Addr, what: &str) -> Result<(), Failure> {
    match agent.get(&ip) {
        None => Ok(()),
        Some(e) => Err(Failure::Agent(format!(
            "refused to {what}: {ip} is endpoint {}/{} (identity {}, {}), managed by the ebpfcni agent; \
             it changes with the container, not by hand",
            e.container_id,
            e.ifname,
            e.identity,
            describe_labels(e)
        ))),
    }
}

/// An endpoint's identity labels, `k=v,...`.
pub fn describe_labels(e: &Endpoint) -> String {
    if e.identity_labels.is_empty() {
        return format!("{:?}", e.state).to_lowercase();
    }
    e.identity_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
