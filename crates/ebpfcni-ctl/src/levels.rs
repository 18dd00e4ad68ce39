//! policyctl's run-time settings of the datapath: the trace level, the
//! event level, and the rate limit of both. Each takes effect on the next
//! packet; a value this build does not know is shown as invalid and
//! overwritten by the next set.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use ebpfcni::{EventLevel, RateLimit, Stored, TraceLevel};
use serde::Serialize;

use crate::{
    open_maps_for_reading, open_maps_for_writing, report_change, CmdResult, Common, Failure, Format, Out,
};

#[derive(Serialize)]
struct RateLimitJson {
    rate: u32,
    burst: u32,
}

#[derive(Serialize)]
struct EventsJson {
    event_level: String,
}

#[derive(Serialize)]
struct TraceJson {
    trace_level: String,
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

/// The trace level, "invalid (N)" for a value this build does not know.
fn level_name(level: Stored<TraceLevel, u32>) -> String {
    match level {
        Stored::Valid(level) => level.name().to_owned(),
        Stored::Invalid { raw, .. } => format!("invalid ({raw}, traces as all)"),
    }
}

pub fn show_trace_level(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let current = maps
        .config
        .trace_level()
        .map_err(|e| Failure::failed("read the trace level", e))?;
    let mut out = Out::new(common);
    match out.format() {
        Format::Table | Format::Prometheus => {
            out.note(format_args!("trace level: {}", level_name(current)))?
        }
        Format::Json => out.json(&TraceJson {
            trace_level: level_name(current),
        })?,
    }
    out.flush()?;
    Ok(())
}

/// Sets the level; a current value that is invalid is overwritten.
pub fn set_trace_level(common: &Common, level: TraceLevel) -> CmdResult {
    let maps = open_maps_for_writing(common)?;
    let current = maps
        .config
        .trace_level()
        .map_err(|e| Failure::failed("read the trace level", e))?;
    maps.config
        .set_trace_level(level)
        .map_err(|e| Failure::failed(format_args!("set the trace level to {level}"), e))?;
    let note = if current == Stored::Valid(level) {
        format!("trace level: {level} (unchanged)")
    } else {
        format!("trace level: {} -> {level}", level_name(current))
    };
    let mut out = Out::new(common);
    report_change(&mut out, &[note], |out| {
        if out.format() == Format::Json {
            out.json(&TraceJson {
                trace_level: level.name().to_owned(),
            })?;
        }
        Ok(())
    })
}

/// The event level, "invalid (N)" for a value this build does not know.
fn event_level_name(level: Stored<EventLevel, u32>) -> String {
    match level {
        Stored::Valid(level) => level.name().to_owned(),
        Stored::Invalid { raw, .. } => format!("invalid ({raw}, reports as all)"),
    }
}

pub fn show_event_level(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let current = maps
        .config
        .event_level()
        .map_err(|e| Failure::failed("read the event level", e))?;
    let mut out = Out::new(common);
    match out.format() {
        Format::Json => out.json(&EventsJson {
            event_level: event_level_name(current),
        })?,
        _ => out.note(format_args!("event level: {}", event_level_name(current)))?,
    }
    out.flush()?;
    Ok(())
}

pub fn set_event_level(common: &Common, level: EventLevel) -> CmdResult {
    let maps = open_maps_for_writing(common)?;
    let current = maps
        .config
        .event_level()
        .map_err(|e| Failure::failed("read the event level", e))?;
    maps.config
        .set_event_level(level)
        .map_err(|e| Failure::failed(format_args!("set the event level to {level}"), e))?;
    let note = if current == Stored::Valid(level) {
        format!("event level: {level} (unchanged)")
    } else {
        format!("event level: {} -> {level}", event_level_name(current))
    };
    let mut out = Out::new(common);
    report_change(&mut out, &[note], |out| {
        if out.format() == Format::Json {
            out.json(&EventsJson {
                event_level: level.name().to_owned(),
            })?;
        }
        Ok(())
    })
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
    let maps = open_maps_for_writing(common)?;
    let current = maps
        .config
        .rate_limit()
        .map_err(|e| Failure::failed("read the rate limit", e))?;
    let rate = rate.unwrap_or(current.rate);
    let new = RateLimit {
        rate,
        burst: burst.unwrap_or(rate),
    };
    maps.config
        .set_rate_limit(new)
        .map_err(|e| Failure::failed("set the rate limit", e))?;
    let mut out = Out::new(common);
    report_change(&mut out, &[], |out| print_rate_limit(out, new))
}
