//! `policyctl stats`: the datapath's counters and the maps' occupancy, for
//! people (a table), programs (JSON) and Prometheus (the text exposition
//! format that node_exporter's textfile collector reads).

use std::fmt::Write as _;

use ebpfcni::{EventLevel, Maps, NotifyCounts, PinnedMap, RateLimit, Stored, TraceLevel};
use serde::Serialize;

use crate::{open_maps_for_reading, CmdResult, Common, Failure, Format, Out};

/// How full one map is.
#[derive(Serialize)]
pub struct Occupancy {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

/// Everything `stats` shows.
#[derive(Serialize)]
pub struct Stats {
    /// Packets dropped per reason (summed over CPUs), every reason listed;
    /// a JSON object by reason.
    #[serde(serialize_with = "as_object")]
    pub drops: Vec<(&'static str, u64)>,
    /// Packets that policy would have dropped and audit mode let pass,
    /// per reason (the policy reasons; a JSON object by reason).
    #[serde(serialize_with = "as_object")]
    pub audited: Vec<(&'static str, u64)>,
    /// Whether audit mode is on.
    pub audit: bool,
    pub events_written: u64,
    pub events_over_rate_limit: u64,
    pub events_ring_full: u64,
    pub traces_written: u64,
    pub traces_over_rate_limit: u64,
    pub maps: Vec<Occupancy>,
    pub trace_level: String,
    pub event_level: String,
    pub connection_tracking: bool,
    pub rate_limit_per_cpu: u32,
    pub rate_limit_burst: u32,
}

/// The drop reasons that are policy's, which audit mode lets pass (the
/// datapath's ebpfcni_policy_drop callers).
pub const AUDITED_REASONS: [&str; 4] = ["no-policy", "no-flow", "policy-isolated", "policy-denied"];

fn as_object<S: serde::Serializer>(pairs: &[(&'static str, u64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

fn level_name<L: std::fmt::Display>(level: Stored<L, u32>) -> String {
    match level {
        Stored::Valid(level) => level.to_string(),
        Stored::Invalid { raw, .. } => format!("invalid ({raw})"),
    }
}

impl Stats {
    pub fn read(maps: &Maps) -> Result<Self, ebpfcni::Error> {
        let counts: NotifyCounts = maps.counters.all()?;
        let occupancy = |map: PinnedMap, entries: usize| Occupancy {
            map: map.name(),
            entries,
            capacity: map.capacity(),
        };
        let trace: Stored<TraceLevel, u32> = maps.config.trace_level()?;
        let events: Stored<EventLevel, u32> = maps.config.event_level()?;
        let RateLimit { rate, burst } = maps.config.rate_limit()?;
        Ok(Self {
            drops: maps.drops.all()?,
            audited: maps
                .drops
                .all_audited()?
                .into_iter()
                .filter(|(reason, _)| AUDITED_REASONS.contains(reason))
                .collect(),
            audit: maps.config.audit()?,
            events_written: counts.events,
            events_over_rate_limit: counts.events_suppressed,
            events_ring_full: counts.events_lost,
            traces_written: counts.traces,
            traces_over_rate_limit: counts.traces_suppressed,
            maps: vec![
                occupancy(PinnedMap::Endpoints, maps.endpoints.list()?.len()),
                occupancy(PinnedMap::Prefixes, maps.prefixes.len()?),
                occupancy(PinnedMap::Interfaces, maps.interfaces.list()?.len()),
                occupancy(PinnedMap::Policy, maps.policy.len()?),
                occupancy(PinnedMap::PortPolicy, maps.ports.len()?),
                occupancy(PinnedMap::Conntrack, maps.conntrack.len()?),
                occupancy(PinnedMap::Fragments, maps.fragments.len()?),
            ],
            trace_level: level_name(trace),
            event_level: level_name(events),
            connection_tracking: maps.config.conntrack()?,
            rate_limit_per_cpu: rate,
            rate_limit_burst: burst,
        })
    }

    fn table(&self) -> String {
        let mut t = String::new();
        let total: u64 = self.drops.iter().map(|(_, n)| n).sum();
        let _ = writeln!(t, "drops: {total} packets");
        for (reason, n) in &self.drops {
            let _ = writeln!(t, "  {reason:<22} {n}");
        }
        let audited: u64 = self.audited.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            t,
            "audit: {audited} packets policy would have dropped passed (audit mode {})",
            if self.audit { "on" } else { "off" }
        );
        for (reason, n) in &self.audited {
            let _ = writeln!(t, "  {reason:<22} {n}");
        }
        let _ = writeln!(
            t,
            "events: {} written, {} over the rate limit, {} to a full ring (event level {})",
            self.events_written, self.events_over_rate_limit, self.events_ring_full, self.event_level
        );
        let _ = writeln!(
            t,
            "trace lines: {} written, {} over the rate limit (trace level {})",
            self.traces_written, self.traces_over_rate_limit, self.trace_level
        );
        let _ = writeln!(
            t,
            "rate limit: {} a second per CPU, bursts of {} (events and trace lines each)",
            self.rate_limit_per_cpu, self.rate_limit_burst
        );
        let _ = writeln!(
            t,
            "connection tracking: {}",
            if self.connection_tracking {
                "on (some rule is stateful)"
            } else {
                "off (no rule is stateful)"
            }
        );
        let _ = writeln!(t, "maps:");
        for m in &self.maps {
            let _ = writeln!(t, "  {:<16} {} of {}", m.map, m.entries, m.capacity);
        }
        t
    }

    /// The Prometheus text exposition format, metric names prefixed
    /// `ebpfcni_`.
    pub fn prometheus(&self) -> String {
        let mut t = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(t, "# HELP ebpfcni_{name} {help}");
            let _ = writeln!(t, "# TYPE ebpfcni_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(t, "ebpfcni_{name}{labels} {value}");
            }
        };
        let drops: Vec<(String, u64)> = self
            .drops
            .iter()
            .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n))
            .collect();
        metric(
            "drops_total",
            "counter",
            "Packets dropped by the datapath, by reason.",
            &drops,
        );
        let audited: Vec<(String, u64)> = self
            .audited
            .iter()
            .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n))
            .collect();
        metric(
            "audit_total",
            "counter",
            "Packets policy would have dropped that audit mode let pass, by reason.",
            &audited,
        );
        metric(
            "audit_mode",
            "gauge",
            "1 while audit mode is on (policy drops pass, counted in audit_total).",
            &[(String::new(), u64::from(self.audit))],
        );
        metric(
            "events_total",
            "counter",
            "Flow events written to the event ring.",
            &[(String::new(), self.events_written)],
        );
        metric(
            "events_not_written_total",
            "counter",
            "Flow events not written: over the rate limit, or the ring was full.",
            &[
                ("{cause=\"rate-limit\"}".into(), self.events_over_rate_limit),
                ("{cause=\"ring-full\"}".into(), self.events_ring_full),
            ],
        );
        metric(
            "trace_lines_total",
            "counter",
            "Lines written to the trace pipe.",
            &[(String::new(), self.traces_written)],
        );
        metric(
            "trace_lines_not_written_total",
            "counter",
            "Trace lines not written: over the rate limit.",
            &[("{cause=\"rate-limit\"}".into(), self.traces_over_rate_limit)],
        );
        let entries: Vec<(String, u64)> = self
            .maps
            .iter()
            .map(|m| (format!("{{map=\"{}\"}}", m.map), m.entries as u64))
            .collect();
        metric("map_entries", "gauge", "Entries in each pinned map.", &entries);
        let capacity: Vec<(String, u64)> = self
            .maps
            .iter()
            .map(|m| (format!("{{map=\"{}\"}}", m.map), u64::from(m.capacity)))
            .collect();
        metric("map_capacity", "gauge", "Capacity of each pinned map.", &capacity);
        metric(
            "trace_level",
            "gauge",
            "The trace level in effect (1 for the level named).",
            &[(format!("{{level=\"{}\"}}", self.trace_level), 1)],
        );
        metric(
            "event_level",
            "gauge",
            "The event level in effect (1 for the level named).",
            &[(format!("{{level=\"{}\"}}", self.event_level), 1)],
        );
        metric(
            "connection_tracking",
            "gauge",
            "1 while some rule is stateful and connections are tracked.",
            &[(String::new(), u64::from(self.connection_tracking))],
        );
        t
    }
}

pub fn stats(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let stats = Stats::read(&maps).map_err(|e| Failure::failed("read the counters", e))?;
    let mut out = Out::new(common);
    match out.format() {
        Format::Json => out.json(&stats)?,
        Format::Prometheus => out.raw(&stats.prometheus())?,
        Format::Table => out.raw(&stats.table())?,
    }
    out.flush()?;
    Ok(())
}
