//! endpointctl's output: the identities of addresses and of prefixes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::Ipv4Addr;

use ebpfcni::{IdentityAddr, PinnedMap, Stored, StoredIdentity};
use ipnet::Ipv4Net;
use serde::Serialize;

use super::table::{invalid_count, write_table};
use super::{Format, Out, View};

impl Out {
    /// Prints the identities of addresses (endpoint_map, sorted by address)
    /// and of prefixes (prefix_map), as two tables or one JSON array of
    /// `{"ip", "identity"}` and `{"cidr", "identity"}` objects. Invalid
    /// entries are shown, marked, and counted (`"invalid"` in JSON).
    pub fn identities(&mut self, state: &IdentityState, view: View) -> io::Result<()> {
        if self.skips(view) {
            return Ok(());
        }
        if self.format == Format::Json {
            let rows: Vec<IdentityRow> = state
                .endpoints
                .iter()
                .map(|&(ip, id)| {
                    let mut row = IdentityRow::from(IdentityAddr::Ip(ip), id);
                    if let Some((owner, labels)) = state.agent.get(&ip) {
                        row.endpoint = Some(owner.clone());
                        row.labels = Some(labels.clone());
                    }
                    row
                })
                .chain(
                    state
                        .prefixes
                        .iter()
                        .map(|&(net, id)| IdentityRow::from(IdentityAddr::Cidr(net), id)),
                )
                .collect();
            return self.json(&rows);
        }
        // With an agent: whose each address is, and its labels.
        let labels = |ip: &Ipv4Addr| match state.agent.get(ip) {
            Some((owner, labels)) => format!("{} {owner}", canonical(labels)),
            None => "(hand entry)".into(),
        };
        self.identity_table(
            PinnedMap::Endpoints,
            "IP",
            state.endpoints.iter().map(|(ip, id)| {
                let extra = (!state.agent.is_empty()).then(|| labels(ip));
                (ip.to_string(), *id, extra)
            }),
            state.capacities.0,
            view,
        )?;
        // Prefixes are shown once there are some (most nodes have none).
        if !state.prefixes.is_empty() {
            self.identity_table(
                PinnedMap::Prefixes,
                "PREFIX",
                state
                    .prefixes
                    .iter()
                    .map(|(net, id)| (net.to_string(), *id, None)),
                state.capacities.1,
                view,
            )?;
        }
        Ok(())
    }

    fn identity_table(
        &mut self,
        map: PinnedMap,
        key: &str,
        entries: impl ExactSizeIterator<Item = (String, StoredIdentity, Option<String>)>,
        capacity: u32,
        view: View,
    ) -> io::Result<()> {
        let entries: Vec<_> = entries.collect();
        let invalid = entries.iter().filter(|(_, id, _)| !id.is_valid()).count();
        let with_labels = entries.iter().any(|(_, _, l)| l.is_some());
        writeln!(
            self.stdout,
            "{map}: {} of {capacity} entries{}",
            entries.len(),
            invalid_count(invalid)
        )?;
        let rows = entries.iter().map(|(k, id, labels)| {
            let identity = match id {
                Stored::Valid(id) => id.to_string(),
                Stored::Invalid { raw, problem } => format!("{raw} INVALID: {problem}"),
            };
            let mut row = vec![k.clone(), identity];
            row.extend(labels.clone());
            row
        });
        let header: &[&str] = if with_labels {
            &[key, "IDENTITY", "LABELS (AGENT ENDPOINT)"]
        } else {
            &[key, "IDENTITY"]
        };
        write_table(
            &mut self.stdout,
            header,
            rows,
            entries.len(),
            view,
            "endpointctl list",
        )?;
        if invalid > 0 {
            writeln!(
                self.stdout,
                "  invalid entries count as absent; remove one with `endpointctl del --ip ADDR` (or --cidr)"
            )?;
        }
        Ok(())
    }
}

/// Everything endpointctl shows: endpoints, prefixes, and the capacities
/// of their maps.
pub struct IdentityState {
    pub endpoints: Vec<(Ipv4Addr, StoredIdentity)>,
    pub prefixes: Vec<(Ipv4Net, StoredIdentity)>,
    /// (endpoint_map, prefix_map)
    pub capacities: (u32, u32),
    /// The node agent's endpoints (`container/ifname` and identity
    /// labels), when an agent answers: shown beside their addresses.
    pub agent: BTreeMap<Ipv4Addr, (String, BTreeMap<String, String>)>,
}

fn canonical(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One identity in JSON output: of an address (`ip`) or of a prefix
/// (`cidr`). `invalid` says why an entry the tools never write is invalid
/// (and is absent for valid entries).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Ipv4Net>,
    pub identity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// The node agent's endpoint (`container/ifname`) this address is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Its identity's labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl IdentityRow {
    pub fn from(addr: IdentityAddr, id: StoredIdentity) -> Self {
        let (ip, cidr) = match addr {
            IdentityAddr::Ip(ip) => (Some(ip), None),
            IdentityAddr::Cidr(net) => (None, Some(net)),
        };
        let (identity, invalid) = match id {
            Stored::Valid(id) => (id.get(), None),
            Stored::Invalid { raw, problem } => (raw, Some(problem.to_string())),
        };
        Self {
            ip,
            cidr,
            identity,
            invalid,
            endpoint: None,
            labels: None,
        }
    }
}
