//! `policyctl graph`: the policy as a Graphviz DOT graph. Identities are
//! nodes, labelled with their addresses and prefixes; rules are edges,
//! labelled with their protocol and ports, bold when stateful. With
//! `--flows N` the flow events of the next N seconds are drawn over it:
//! drops in red (dashed), passes in green.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;
use ebpfcni::events::{monotonic_now, EventReader, Verdict};
use ebpfcni::{EventLevel, Maps, Rule, Selector, Stored};

use crate::monitor::Level;
use crate::{args, open_maps_for_reading, CmdResult, Common, Failure, Out};

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// Also watch the flow events of the next SECONDS and draw them (drops in red)
    #[arg(long, value_name = "SECONDS", value_parser = args::seconds())]
    pub flows: Option<u32>,
    /// With --flows: raise the event level while watching (all: passes too); restored after
    #[arg(long, value_enum, requires = "flows")]
    pub level: Option<Level>,
}

/// Events between two identities (0: an address without one).
#[derive(Default)]
struct Flow {
    packets: u64,
    reasons: BTreeSet<&'static str>,
}

/// Quotes `s` as a DOT string; a newline becomes DOT's line break `\n`.
fn quote(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("\"{escaped}\"")
}

fn selector_label(rule: &Rule) -> String {
    let what = match rule.selector {
        Selector::Any => "any".to_owned(),
        s => s.to_string(),
    };
    if rule.stateful {
        format!("{what} (stateful)")
    } else {
        what
    }
}

/// The DOT text for the rules, identities and flows.
fn dot(maps: &Maps, flows: &BTreeMap<(u32, u32, Verdict), Flow>) -> Result<String, ebpfcni::Error> {
    // Identity -> its addresses and prefixes.
    let mut nodes: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (ip, id) in maps.endpoints.list()? {
        if let Stored::Valid(id) = id {
            nodes.entry(id.get()).or_default().push(ip.to_string());
        }
    }
    for (net, id) in maps.prefixes.list()? {
        if let Stored::Valid(id) = id {
            nodes.entry(id.get()).or_default().push(net.to_string());
        }
    }
    // (src, dst) -> the rules between them.
    let mut edges: BTreeMap<(u32, u32), Vec<Rule>> = BTreeMap::new();
    for rule in maps.rules()?.into_iter().filter_map(Stored::valid) {
        let key = (rule.pair.src.get(), rule.pair.dst.get());
        nodes.entry(key.0).or_default();
        nodes.entry(key.1).or_default();
        edges.entry(key).or_default().push(rule);
    }
    for &(src, dst, _) in flows.keys() {
        nodes.entry(src).or_default();
        nodes.entry(dst).or_default();
    }

    let mut t = String::new();
    let _ = writeln!(t, "digraph ebpfcni {{");
    let _ = writeln!(t, "  rankdir=LR;");
    let _ = writeln!(t, "  node [shape=box, fontname=\"monospace\"];");
    let _ = writeln!(t, "  edge [fontname=\"monospace\", fontsize=10];");
    for (id, addrs) in &nodes {
        let name = if *id == 0 {
            "no identity".to_owned()
        } else {
            id.to_string()
        };
        let label = std::iter::once(name)
            .chain(addrs.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n");
        let style = if *id == 0 { ", style=dashed" } else { "" };
        let _ = writeln!(
            t,
            "  {} [label={}{style}];",
            quote(&id.to_string()),
            quote(&label)
        );
    }
    for ((src, dst), rules) in &edges {
        let label = rules.iter().map(selector_label).collect::<Vec<_>>().join("\n");
        let bold = if rules.iter().any(|r| r.stateful) {
            ", style=bold"
        } else {
            ""
        };
        let _ = writeln!(
            t,
            "  {} -> {} [label={}{bold}];",
            quote(&src.to_string()),
            quote(&dst.to_string()),
            quote(&label)
        );
    }
    for ((src, dst, verdict), flow) in flows {
        let (color, what) = match verdict {
            Verdict::Drop => ("red", format!("{} dropped", flow.packets)),
            Verdict::Pass => ("darkgreen", format!("{} passed", flow.packets)),
            Verdict::Audit => (
                "orange",
                format!("{} audited (passed, policy would drop)", flow.packets),
            ),
        };
        let reasons = flow.reasons.iter().copied().collect::<Vec<_>>().join(", ");
        let label = if reasons.is_empty() {
            what
        } else {
            format!("{what}: {reasons}")
        };
        let _ = writeln!(
            t,
            "  {} -> {} [label={}, color={color}, fontcolor={color}, style=dashed, constraint=false];",
            quote(&src.to_string()),
            quote(&dst.to_string()),
            quote(&label)
        );
    }
    let _ = writeln!(t, "}}");
    Ok(t)
}

/// Watches `seconds` of events, summed by identity pair and verdict.
fn watch(
    common: &Common,
    maps: &Maps,
    seconds: u32,
    level: Option<Level>,
) -> Result<BTreeMap<(u32, u32, Verdict), Flow>, Failure> {
    let mut reader =
        EventReader::open(maps, &common.pin_dir).map_err(|e| Failure::failed("read flow events", e))?;
    let previous = maps
        .config
        .event_level()
        .map_err(|e| Failure::failed("read the event level", e))?;
    if let Some(level) = level {
        maps.config
            .set_event_level(EventLevel::from(level))
            .map_err(|e| Failure::failed("set the event level", e))?;
    }
    let start = monotonic_now();
    let deadline = Instant::now() + Duration::from_secs(seconds.into());
    let mut flows: BTreeMap<(u32, u32, Verdict), Flow> = BTreeMap::new();
    let mut result = Ok(());
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            Ok(events) => {
                for e in events.iter().filter(|e| e.time >= start) {
                    let flow = flows.entry((e.src_id, e.dst_id, e.verdict)).or_default();
                    flow.packets += 1;
                    flow.reasons.extend(e.reason);
                }
            }
            Err(e) => {
                result = Err(Failure::failed("read flow events", e));
                break;
            }
        }
    }
    if let (Some(_), Stored::Valid(level)) = (level, previous) {
        if let Err(e) = maps.config.set_event_level(level) {
            crate::say(format_args!(
                "policyctl graph: could not restore the event level {level}: {e}"
            ));
        }
    }
    result.map(|()| flows)
}

pub fn graph(common: &Common, args: &GraphArgs) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let flows = match args.flows {
        Some(seconds) => watch(common, &maps, seconds, args.level)?,
        None => BTreeMap::new(),
    };
    let text = dot(&maps, &flows).map_err(|e| Failure::failed("read the policy", e))?;
    let mut out = Out::new(common);
    out.raw(&text)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_strings_are_quoted() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quote("1001\n10.0.0.1"), r#""1001\n10.0.0.1""#);
    }
}
