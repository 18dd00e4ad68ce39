//! policyctl's rule commands: allow, deny, flush, apply and list, each
//! reporting what it did in words and then the rules.

use ebpfcni::{Maps, Rule, RuleChange, Selector};

use crate::{open_maps_for_reading, CmdResult, Common, Failure, Out, PolicyUsage, View};

/// Opens the maps, makes a change with `make` (which returns what it did,
/// one note a line), then reports it and the rules (exit 3 when that
/// fails: the change stands).
pub fn change(common: &Common, make: impl FnOnce(&Maps) -> Result<Vec<String>, Failure>) -> CmdResult {
    crate::change(common, make, |maps, out| {
        let rules = maps.rules().map_err(|e| Failure::failed("list rules", e))?;
        out.policy(&rules, usage(maps)?, View::State)?;
        Ok(())
    })
}

fn usage(maps: &Maps) -> Result<PolicyUsage, Failure> {
    Ok(PolicyUsage {
        pair_capacity: maps.policy.capacity(),
        port_capacity: maps.ports.capacity(),
        port_entries: maps
            .ports
            .len()
            .map_err(|e| Failure::failed("count the port rules' entries", e))?,
    })
}

/// What `allow` did to one rule, in words.
fn describe_change(change: &RuleChange) -> String {
    let RuleChange { rule, before } = change;
    let plain = Rule {
        stateful: false,
        ..*rule
    };
    match before {
        None => format!("allowed {rule}"),
        Some(was) if *was == rule.stateful => format!("{rule} was already allowed"),
        Some(true) => {
            format!("{plain}: no longer stateful (its tracked connections' replies need a rule now)")
        }
        Some(false) => format!("{plain}: now stateful"),
    }
}

pub fn allow(maps: &Maps, rules: &[Rule]) -> Result<Vec<String>, Failure> {
    let changes = maps
        .allow(rules)
        .map_err(|e| Failure::failed(format_args!("allow {}", describe(rules)), e))?;
    Ok(changes.iter().map(describe_change).collect())
}

pub fn deny(maps: &Maps, keys: &[(u32, u32)], selector: Selector) -> Result<Vec<String>, Failure> {
    let mut notes = Vec::new();
    for &(src, dst) in keys {
        let what = match selector {
            Selector::Any => format!("{src} -> {dst}"),
            s => format!("{src} -> {dst} {s}"),
        };
        let removed = maps
            .deny(src, dst, selector)
            .map_err(|e| Failure::failed(format_args!("deny {what}"), e))?;
        notes.push(if removed {
            format!("denied {what} (rule removed)")
        } else {
            format!("{what} was not allowed; nothing to remove")
        });
    }
    Ok(notes)
}

pub fn flush(maps: &Maps) -> Result<Vec<String>, Failure> {
    let n = maps
        .flush_rules()
        .map_err(|e| Failure::failed("flush rules", e))?;
    Ok(vec![format!("removed {n} rules")])
}

/// Allows `rules` (each once: [`crate::parse_rules`] took out `repeats`
/// lines that listed a rule again) and says what was written.
pub fn apply(maps: &Maps, rules: &[Rule], repeats: usize, source: &str) -> Result<Vec<String>, Failure> {
    let changes = maps
        .allow(rules)
        .map_err(|e| Failure::failed(format_args!("apply {} rules from {source}", rules.len()), e))?;
    let repeated = match repeats {
        0 => String::new(),
        n => format!(" ({n} listed more than once)"),
    };
    let new = changes.iter().filter(|c| c.before.is_none()).count();
    let already = changes
        .iter()
        .filter(|c| c.before == Some(c.rule.stateful))
        .count();
    let changed = match changes.len() - new - already {
        0 => String::new(),
        n => format!(", {n} changed (stateful or not)"),
    };
    Ok(vec![format!(
        "applied {} rules from {source}{repeated}: {new} new, {already} already allowed{changed}",
        rules.len() + repeats
    )])
}

pub fn list(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let rules = maps.rules().map_err(|e| Failure::failed("list rules", e))?;
    let labels = crate::agent::identities(common)?;
    let mut out = Out::new(common);
    out.policy(&rules, usage(&maps)?, View::Full)?;
    // With an agent: what the numbers of the rules stand for.
    if out.format() == crate::Format::Table && !labels.is_empty() {
        let used: std::collections::BTreeSet<u32> = rules
            .iter()
            .filter_map(|r| r.clone().valid())
            .flat_map(|r| [r.pair.src.get(), r.pair.dst.get()])
            .collect();
        let legend: Vec<String> = used
            .iter()
            .filter_map(|id| labels.get(id).map(|l| format!("  {id}  {l}")))
            .collect();
        if !legend.is_empty() {
            out.note(format!(
                "identities (from the agent at {}):",
                common.agent.display()
            ))?;
            for line in legend {
                out.note(line)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// "1 -> 2" or "1 -> 2 and 2 -> 1".
fn describe(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}
