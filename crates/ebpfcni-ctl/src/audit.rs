//! `policyctl audit [on|off]`: audit mode, in which packets that policy
//! would drop pass, counted and reported as `audit` (stats, monitor,
//! Prometheus); source trust and malformed packets stay drops. A change
//! like the rules' (the pin directory's lock, the undo record, the
//! generation the agent watches).

use clap::ValueEnum;
use ebpfcni::Maps;

use crate::stats::AUDITED_REASONS;
use crate::{open_maps_for_reading, CmdResult, Common, Failure, Format, Out};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Policy drops pass, counted and reported as audit
    On,
    /// Policy is enforced (the default)
    Off,
}

fn name(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

fn read(maps: &Maps) -> Result<bool, Failure> {
    maps.config
        .audit()
        .map_err(|e| Failure::failed("read the audit mode", e))
}

fn print(out: &mut Out, on: bool) -> CmdResult {
    match out.format() {
        Format::Json => out.json(&serde_json::json!({ "audit": on }))?,
        _ => out.note(format_args!("audit mode: {}", name(on)))?,
    }
    Ok(())
}

/// `policyctl audit`: whether it is on.
pub fn show(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let on = read(&maps)?;
    let mut out = Out::new(common);
    print(&mut out, on)?;
    out.flush()?;
    Ok(())
}

/// `policyctl audit on|off`.
pub fn set(common: &Common, mode: Mode) -> CmdResult {
    let on = mode == Mode::On;
    crate::change(
        common,
        |maps| {
            let changed = maps
                .set_audit(on)
                .map_err(|e| Failure::failed(format_args!("turn audit mode {}", name(on)), e))?;
            let mut notes = vec![if changed {
                format!("audit mode: {} -> {}", name(!on), name(on))
            } else {
                format!("audit mode: {} (unchanged)", name(on))
            }];
            if on {
                notes.push(format!(
                    "packets policy would drop ({}) now pass, counted and reported as audit \
                     (`policyctl stats`, `policyctl monitor --verdict audit`); source trust, \
                     malformed packets and addresses without an identity are still dropped",
                    AUDITED_REASONS.join(", ")
                ));
            }
            Ok(notes)
        },
        |_, out| {
            if out.format() == Format::Json {
                out.json(&serde_json::json!({ "audit": on }))?;
            }
            Ok(())
        },
    )
}
