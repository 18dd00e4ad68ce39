//! Policy by labels, through the node agent: `policyctl apply -f` of
//! NetworkPolicy / CiliumNetworkPolicy / Namespace documents, `get
//! policies`, `delete`, and selector rules (`allow --src app=x --dst
//! app=y`). The agent stores, compiles and enforces them; each command
//! returns once the datapath enforces the change.

use std::io::Write;
use std::time::Duration;

use ebpfcni_api::{Client, ClientError, Labels, PolicyChanges, PolicyDeletion, SelectorRule};

use crate::{CmdResult, Common, Failure, Format};

/// Whether an apply file holds policy documents (YAML objects with a
/// `kind` or `apiVersion`) rather than the plan's numeric rules.
pub fn is_policy_documents(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start().trim_start_matches("- ");
        l.starts_with("apiVersion:") || l.starts_with("kind:")
    })
}

/// `k=v[,k=v...]`: the labels of a selector rule's side.
pub fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=VALUE (a selector is KEY=VALUE[,KEY=VALUE...])"))?;
        if k.is_empty() {
            return Err(format!("{part:?}: the key is empty"));
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("the key {k:?} is given twice"));
        }
    }
    Ok(labels)
}

fn client(common: &Common) -> Client {
    Client::new(&common.agent).with_timeout(Duration::from_secs(60))
}

/// What a failed call becomes: no agent (exit 7), a refused request (bad
/// input: exit 2; anything else: exit 1).
fn failure(what: &str, e: ClientError) -> Failure {
    match &e {
        ClientError::Unreachable { .. } => Failure::Unreachable(format!(
            "failed to {what}: {e} (label policy goes through the node agent: start ebpfcni-agent, or name its \
             socket with --agent); nothing was changed"
        )),
        ClientError::Api { status: 400, error, .. } => {
            Failure::Usage(format!("failed to {what}: {}; nothing was changed", error.error))
        }
        ClientError::Api { .. } => Failure::Runtime(format!("failed to {what}: {e}; nothing was changed")),
        ClientError::Interrupted { .. } | ClientError::Timeout { .. } => Failure::Runtime(format!(
            "failed to {what}: {e} (whether the change was made is not known: `policyctl get policies` shows \
             where things stand)"
        )),
        ClientError::Protocol { .. } => Failure::Runtime(format!("failed to {what}: {e}")),
    }
}

fn report(common: &Common, changes: &PolicyChanges) -> CmdResult {
    let mut out = std::io::stdout().lock();
    if common.output == Format::Json {
        serde_json::to_writer_pretty(&mut out, changes).map_err(|e| Failure::Runtime(e.to_string()))?;
        writeln!(out)?;
    } else {
        for (word, list) in [
            ("created", &changes.created),
            ("changed", &changes.changed),
            ("unchanged", &changes.unchanged),
            ("deleted", &changes.deleted),
            ("not found", &changes.not_found),
        ] {
            if common.quiet && word == "unchanged" {
                continue;
            }
            for name in list {
                writeln!(out, "{name} {word}")?;
            }
        }
        if !common.quiet {
            writeln!(out, "enforced ({} map writes)", changes.map_writes)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `policyctl apply -f FILE` of policy documents.
pub fn apply(common: &Common, text: &str) -> CmdResult {
    let changes = client(common)
        .apply_policies(text)
        .map_err(|e| failure("apply the policies", e))?;
    report(common, &changes).map_err(Failure::after_change)
}

/// `policyctl delete ...`.
pub fn delete(common: &Common, deletion: &PolicyDeletion) -> CmdResult {
    let changes = client(common)
        .delete_policies(deletion)
        .map_err(|e| failure("delete policies", e))?;
    report(common, &changes).map_err(Failure::after_change)
}

/// `policyctl allow|deny --src SELECTOR --dst SELECTOR`.
pub fn selector_rule(common: &Common, rule: &SelectorRule, allow: bool) -> CmdResult {
    let c = client(common);
    let changes = if allow {
        c.allow_selector_rule(rule)
    } else {
        c.deny_selector_rule(rule)
    }
    .map_err(|e| {
        failure(
            if allow {
                "allow the rule"
            } else {
                "remove the rule"
            },
            e,
        )
    })?;
    report(common, &changes).map_err(Failure::after_change)
}

/// `policyctl get policies`.
pub fn get_policies(common: &Common) -> CmdResult {
    let policies = client(common)
        .policies()
        .map_err(|e| failure("list the policies", e))?;
    let mut out = std::io::stdout().lock();
    if common.output == Format::Json {
        serde_json::to_writer_pretty(&mut out, &policies).map_err(|e| Failure::Runtime(e.to_string()))?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:>6}  {:<20} {:<12} {:<24} SELECTED",
            "NUMBER", "KIND", "NAMESPACE", "NAME"
        )?;
        for p in &policies {
            let selected: Vec<String> = p.selected.iter().map(u32::to_string).collect();
            writeln!(
                out,
                "{:>6}  {:<20} {:<12} {:<24} {}",
                p.number,
                p.kind,
                if p.namespace.is_empty() { "-" } else { &p.namespace },
                p.name,
                if selected.is_empty() {
                    "-".to_string()
                } else {
                    selected.join(",")
                }
            )?;
            if !common.quiet {
                for r in &p.rules {
                    writeln!(out, "{:>8}{r}", "")?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}
