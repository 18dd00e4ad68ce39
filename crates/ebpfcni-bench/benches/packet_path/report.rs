//! The tables and the goals, from the medians.

use ebpfcni::{EventLevel, TraceLevel};

use crate::rows::Runs;
use crate::setup::Table;

/// The value of row `name` in column `setup`.
pub fn cell(table: &Table, medians: &[Vec<Option<f64>>], name: &str, setup: usize) -> f64 {
    table
        .rows
        .iter()
        .position(|r| r.name == name)
        .and_then(|i| medians[i][setup])
        .unwrap_or_else(|| panic!("row {name}"))
}

pub fn goal(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

pub fn print_table(table: &Table, medians: &[Vec<Option<f64>>]) {
    println!();
    print!("| {:<36} |", "path");
    for s in &table.setups {
        print!(" {:>15} |", s.name);
    }
    println!();
    print!("|{:-<38}|", "");
    for _ in &table.setups {
        print!("{:->17}|", "");
    }
    println!();
    for (row, cells) in table.rows.iter().zip(medians) {
        print!("| {:<36} |", row.name);
        for cell in cells {
            match cell {
                Some(ns) => print!(" {ns:>15.1} |"),
                None => print!(" {:>15} |", "-"),
            }
        }
        println!();
    }
    println!();
}

pub fn report_notifications(table: &Table, medians: &[Vec<Option<f64>>]) {
    let at = |name: &str| cell(table, medians, name, 0);
    let off = at("deny (no policy), trace off");
    let event = at("deny, event written");
    println!(
        "goal: a drop with its event written within +50 ns of a drop with events off ({off:.1} ns): {:+.1} ns: {}",
        event - off,
        goal(event - off <= 50.0)
    );
    println!(
        "a drop's notifications (nearly empty maps): event written {:+.1} ns, held back by the rate limit {:+.1} ns; \
         trace line written {:+.1} ns, held back {:+.1} ns; both held back (a flood at the default levels) {:+.1} ns",
        event - off,
        at("deny, event over the rate limit") - off,
        at("deny, trace line written") - off,
        at("deny, trace line over the rate limit") - off,
        at("deny, default levels, flood") - off
    );
}

pub fn report_tracking(tables: &[Table], medians: &[Vec<Vec<Option<f64>>>]) {
    let stateless = cell(&tables[0], &medians[0], "allow, to-pod", 0);
    let (t, m) = (&tables[1], &medians[1]);
    for (i, s) in t.setups.iter().enumerate() {
        let forward = cell(t, m, "tracked forward (TCP ACK)", i);
        let reply = cell(t, m, "tracked reply (TCP ACK)", i);
        println!(
            "goal: tracked packets within +25 ns of a stateless allow ({stateless:.1} ns, tracking off) ({}): forward {:+.1} ns, reply {:+.1} ns: {}",
            s.name,
            forward - stateless,
            reply - stateless,
            goal(forward - stateless <= 25.0 && reply - stateless <= 25.0)
        );
    }
    println!(
        "tracking on costs a stateless allow {:+.1} ns (one ct_map lookup that misses)",
        cell(t, m, "pair allow (stateless), tracking on", 0) - stateless
    );
}

pub fn report_plan_rules(table: &Table, medians: &[Vec<Option<f64>>]) {
    let at = |name: &str, setup: usize| cell(table, medians, name, setup);
    for (i, s) in table.setups.iter().enumerate() {
        let (before, now) = (at("allow, first release", i), at("allow, to-pod", i));
        let from_pod = at("allow, from-pod (+ source check)", i);
        println!(
            "goal: allow between exact endpoints within +10 ns of the first release's ({}): to-pod {:+.1} ns, from-pod {:+.1} ns: {}",
            s.name,
            now - before,
            from_pod - before,
            goal(now - before <= 10.0 && from_pod - before <= 10.0)
        );
    }
    for (i, s) in table.setups.iter().enumerate() {
        let (plain, delivered) = (
            at("allow, from-pod, one run a call", i),
            at("allow, from-pod, delivered, one a call", i),
        );
        println!(
            "goal: from-pod allow with local delivery within +10 ns of from-pod allow ({}): {:+.1} ns: {}",
            s.name,
            delivered - plain,
            goal(delivered - plain <= 10.0)
        );
        let (carried, carried_delivered) = (
            at("allow, from-pod, carried id, one a call", i),
            at("allow, from-pod, carried ids, delivered", i),
        );
        println!(
            "the identities carried in the interface and local records ({}): from-pod allow {:+.1} ns, delivered {:+.1} ns; \
             delivered with them against today's from-pod allow {:+.1} ns: {}",
            s.name,
            carried - plain,
            carried_delivered - delivered,
            carried_delivered - plain,
            goal(carried_delivered - plain <= 10.0)
        );
    }
    let worst = table
        .rows
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            matches!(r.program, Runs::Hook(_) | Runs::FromPodOnce { .. })
                && r.name != "non-IPv4 (ARP)"
                && r.trace == TraceLevel::Off
                && r.events == EventLevel::Off
        })
        .map(|(i, r)| (r.name, medians[i][1].unwrap() / medians[i][0].unwrap()))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("rows");
    println!(
        "goal: full maps within 15% of nearly empty (rows with lookups, notifications off): worst \"{}\" at {:+.1}%: {}",
        worst.0,
        (worst.1 - 1.0) * 100.0,
        goal(worst.1 <= 1.15)
    );
    println!(
        "CIDR-resolved dst: {:.1} ns with 1 prefix, {:.1} with 1,000, {:.1} with 16,384 (exact allow: {:.1})",
        at("allow to a CIDR-resolved dst", 0),
        at("allow to a CIDR-resolved dst", 2),
        at("allow to a CIDR-resolved dst", 3),
        at("allow, to-pod", 0)
    );
}

pub fn report_labels(table: &Table, medians: &[Vec<Option<f64>>]) {
    let at = |name: &str, setup: usize| cell(table, medians, name, setup);
    for (i, s) in table.setups.iter().enumerate() {
        let pair = at("pair stateful allow, new flow", i);
        let by_peer = at("label allow by peer, new flow", i) - pair;
        let by_any = at("label allow by any peer, new flow", i) - pair;
        println!(
            "goal: NetworkPolicy allow within +15 ns of a pair-rule allow, a connection's first packet ({}): \
             by peer {by_peer:+.1} ns, by any peer {by_any:+.1} ns: {}",
            s.name,
            goal(by_peer <= 15.0 && by_any <= 15.0)
        );
    }
}
