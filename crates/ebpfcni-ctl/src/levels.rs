//! policyctl's run-time settings of the datapath: the trace level, the
//! event level, and the rate limit of both. Each takes effect on the next
//! packet; a value this build does not know is shown as invalid and
//! overwritten by the next set.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use ebpfcni::{ConfigMap, EventLevel, Maps, RateLimit, Stored, TraceLevel};
use serde::Serialize;

use crate::{open_maps_for_reading, CmdResult, Common, Failure, Format, Out};

#[derive(Serialize)]
struct RateLimitJson {
    rate: u32,
    burst: u32,
}

pub fn trace_level_parser() -> impl TypedValueParser<Value = TraceLevel> {
    let values = TraceLevel::ALL_LEVELS.map(|level| {
        PossibleValue::new(level.name()).help(match level {
            TraceLevel::Off => "nothing",
            TraceLevel::Drops => "one line per dropped packet (the default)",
            TraceLevel::All => "one line per IPv4 packet; slow, for debugging",
        })
    });
    PossibleValuesParser::new(values).map(|name| name.parse::<TraceLevel>().expect("a listed level"))
}

pub fn event_level_parser() -> impl TypedValueParser<Value = EventLevel> {
    let values = EventLevel::ALL_LEVELS.map(|level| {
        PossibleValue::new(level.name()).help(match level {
            EventLevel::Off => "nothing",
            EventLevel::Drops => "every drop (the default)",
            EventLevel::Flows => "drops, new tracked connections and their state changes",
            EventLevel::All => "every IPv4 packet",
        })
    });
    PossibleValuesParser::new(values).map(|name| name.parse::<EventLevel>().expect("a listed level"))
}

/// A level of the datapath's config (trace, events): shown and set alike.
pub trait Level: Copy + PartialEq + std::fmt::Display + 'static {
    /// "trace level", "event level".
    const WHAT: &'static str;
    /// How the datapath treats a value this build does not know.
    const INVALID: &'static str;
    fn name(self) -> &'static str;
    fn read(config: &ConfigMap) -> ebpfcni::Result<Stored<Self, u32>>;
    fn write(config: &ConfigMap, level: Self) -> ebpfcni::Result<()>;
}

impl Level for TraceLevel {
    const WHAT: &'static str = "trace level";
    const INVALID: &'static str = "traces as all";
    fn name(self) -> &'static str {
        TraceLevel::name(self)
    }
    fn read(config: &ConfigMap) -> ebpfcni::Result<Stored<Self, u32>> {
        config.trace_level()
    }
    fn write(config: &ConfigMap, level: Self) -> ebpfcni::Result<()> {
        config.set_trace_level(level)
    }
}

impl Level for EventLevel {
    const WHAT: &'static str = "event level";
    const INVALID: &'static str = "reports as all";
    fn name(self) -> &'static str {
        EventLevel::name(self)
    }
    fn read(config: &ConfigMap) -> ebpfcni::Result<Stored<Self, u32>> {
        config.event_level()
    }
    fn write(config: &ConfigMap, level: Self) -> ebpfcni::Result<()> {
        config.set_event_level(level)
    }
}

/// The level's name, "invalid (N, ...)" for a value this build does not know.
fn level_name<L: Level>(level: Stored<L, u32>) -> String {
    match level {
        Stored::Valid(level) => level.name().to_owned(),
        Stored::Invalid { raw, .. } => format!("invalid ({raw}, {})", L::INVALID),
    }
}

/// `{"trace_level": "drops"}`, `{"event_level": "all"}`.
fn level_json<L: Level>(name: String) -> serde_json::Value {
    serde_json::json!({ L::WHAT.replace(' ', "_"): name })
}

fn read_level<L: Level>(maps: &Maps) -> Result<Stored<L, u32>, Failure> {
    L::read(&maps.config).map_err(|e| Failure::failed(format_args!("read the {}", L::WHAT), e))
}

/// `policyctl trace`, `policyctl events`: the current level.
pub fn show_level<L: Level>(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let current = level_name(read_level::<L>(&maps)?);
    let mut out = Out::new(common);
    match out.format() {
        Format::Json => out.json(&level_json::<L>(current))?,
        Format::Table | Format::Prometheus => out.note(format_args!("{}: {current}", L::WHAT))?,
    }
    out.flush()?;
    Ok(())
}

/// `policyctl trace LEVEL`, `policyctl events LEVEL`: sets it (a current
/// value that is invalid is overwritten).
pub fn set_level<L: Level>(common: &Common, level: L) -> CmdResult {
    crate::change(
        common,
        |maps| {
            let current = read_level::<L>(maps)?;
            L::write(&maps.config, level)
                .map_err(|e| Failure::failed(format_args!("set the {} to {level}", L::WHAT), e))?;
            Ok(vec![if current == Stored::Valid(level) {
                format!("{}: {level} (unchanged)", L::WHAT)
            } else {
                format!("{}: {} -> {level}", L::WHAT, level_name(current))
            }])
        },
        |_, out| {
            if out.format() == Format::Json {
                out.json(&level_json::<L>(level.name().to_owned()))?;
            }
            Ok(())
        },
    )
}

fn print_rate_limit(out: &mut Out, limit: RateLimit) -> CmdResult {
    match out.format() {
        Format::Json => out.json(&RateLimitJson {
            rate: limit.rate,
            burst: limit.burst,
        })?,
        _ => out.note(format_args!(
            "rate limit: {} a second per CPU, bursts of up to {} (events and trace lines each)",
            limit.rate, limit.burst
        ))?,
    }
    Ok(())
}

pub fn show_rate_limit(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let limit = maps
        .config
        .rate_limit()
        .map_err(|e| Failure::failed("read the rate limit", e))?;
    let mut out = Out::new(common);
    print_rate_limit(&mut out, limit)?;
    out.flush()?;
    Ok(())
}

/// Sets what is given; a new rate without a burst keeps bursts as large as
/// the rate.
pub fn set_rate_limit(common: &Common, rate: Option<u32>, burst: Option<u32>) -> CmdResult {
    let new = std::cell::Cell::new(None);
    crate::change(
        common,
        |maps| {
            let current = maps
                .config
                .rate_limit()
                .map_err(|e| Failure::failed("read the rate limit", e))?;
            let rate = rate.unwrap_or(current.rate);
            let limit = RateLimit {
                rate,
                burst: burst.unwrap_or(rate),
            };
            maps.config
                .set_rate_limit(limit)
                .map_err(|e| Failure::failed("set the rate limit", e))?;
            new.set(Some(limit));
            Ok(Vec::new())
        },
        |_, out| print_rate_limit(out, new.get().expect("set before it is reported")),
    )
}
