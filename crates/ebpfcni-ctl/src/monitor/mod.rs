//! `policyctl monitor`: the datapath's flow events, live, one line (or one
//! JSON object) each, with what the rate limit or a full ring kept back
//! reported on stderr.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ebpfcni::events::{monotonic_now, Event, EventReader, Verdict};
use ebpfcni::{EventLevel, Identity, Maps, NotifyCounts, Stored};

use crate::links::{self, Interface};
use crate::names::Names;

mod format;
use crate::{args, CmdResult, Common, Failure, Format};
pub use format::tcp_flags;
use format::{json_line, line, Clock};

/// Which verdicts to show.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerdictFilter {
    Drop,
    Pass,
    /// What audit mode let pass that policy would have dropped
    Audit,
}

/// Event levels `--level` can raise the datapath to.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Every drop
    Drops,
    /// Drops, new tracked connections and their state changes
    Flows,
    /// Every IPv4 packet
    All,
}

impl From<Level> for EventLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Drops => EventLevel::Drops,
            Level::Flows => EventLevel::Flows,
            Level::All => EventLevel::All,
        }
    }
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Only drops, or only passes
    #[arg(long, value_enum)]
    pub verdict: Option<VerdictFilter>,
    /// Only events with this identity on either side (repeatable)
    #[arg(long = "identity", value_name = "ID", value_parser = args::identity())]
    pub identities: Vec<Identity>,
    /// Only events with this address on either side (repeatable)
    #[arg(long = "ip", value_name = "ADDR", value_parser = args::endpoint_ip())]
    pub ips: Vec<Ipv4Addr>,
    /// Only drops for this reason (no-policy, no-flow, invalid-source, ...)
    #[arg(long, value_name = "NAME")]
    pub reason: Option<String>,
    /// Raise the datapath's event level while the monitor runs (restored when it ends)
    #[arg(long, value_enum)]
    pub level: Option<Level>,
    /// Stop after this many events have been shown
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = args::count())]
    pub count: Option<u32>,
    /// Stop after this many seconds
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds())]
    pub duration: Option<u32>,
}

impl MonitorArgs {
    /// The drop reason names the datapath knows, checked before anything
    /// is opened (exit 2 for an unknown one).
    fn check(&self) -> Result<(), Failure> {
        if let Some(reason) = &self.reason {
            let known = ebpfcni::drop_reasons();
            if !known.contains(&reason.as_str()) {
                return Err(Failure::Usage(format!(
                    "--reason: unknown drop reason {}: expected one of {}",
                    ebpfcni::quote_input(reason),
                    known.join(", ")
                )));
            }
            if self.verdict == Some(VerdictFilter::Pass) {
                return Err(Failure::Usage(
                    "--reason names drops; it cannot go with --verdict pass".into(),
                ));
            }
        }
        Ok(())
    }

    fn shows(&self, e: &Event) -> bool {
        let verdict = match self.verdict {
            None => true,
            Some(VerdictFilter::Drop) => e.verdict == Verdict::Drop,
            Some(VerdictFilter::Pass) => e.verdict == Verdict::Pass,
            Some(VerdictFilter::Audit) => e.verdict == Verdict::Audit,
        };
        verdict
            && (self.identities.is_empty()
                || self
                    .identities
                    .iter()
                    .any(|id| id.get() == e.src_id || id.get() == e.dst_id))
            && (self.ips.is_empty() || self.ips.iter().any(|ip| *ip == e.saddr || *ip == e.daddr))
            && self.reason.as_deref().is_none_or(|r| e.reason == Some(r))
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::Relaxed);
}

/// Ctrl-C and SIGTERM end the monitor cleanly (its level restored): the
/// handler only sets a flag, which the loop checks between polls.
fn catch_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// The host veths by ifindex, dumped again (at most once a second) when an
/// event names one not seen yet. None at all when the pin directory serves
/// another network namespace: the indexes there name other interfaces.
struct Interfaces {
    known: HashMap<u32, Interface>,
    dumped: Option<Instant>,
    named: bool,
}

impl Interfaces {
    fn new(pin_dir: &std::path::Path) -> Self {
        let named = match ebpfcni::check_netns(pin_dir) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("policyctl monitor: interfaces are shown by index only: {e}");
                false
            }
        };
        Self {
            known: HashMap::new(),
            dumped: None,
            named,
        }
    }

    fn get(&mut self, ifindex: u32) -> Option<&Interface> {
        if !self.named {
            return None;
        }
        if !self.known.contains_key(&ifindex)
            && self.dumped.is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            if let Ok(links) = links::dump() {
                self.known = links;
            }
            self.dumped = Some(Instant::now());
        }
        self.known.get(&ifindex)
    }
}

/// Waits for the maps to be pinned (a monitor may start before the first
/// pod or rule), saying so once. `None` when stopped first.
fn wait_for_maps(common: &Common, deadline: Option<Instant>) -> Result<Option<Maps>, Failure> {
    let mut said = false;
    loop {
        match Maps::open_for_reading(&common.pin_dir) {
            Ok(maps) => return Ok(Some(maps)),
            Err(ebpfcni::Error::NothingPinned { .. }) => {
                if !said {
                    crate::say(format_args!(
                        "policyctl monitor: waiting for ebpfcni's maps under {} (nothing is pinned there yet)",
                        common.pin_dir.display()
                    ));
                    said = true;
                }
            }
            Err(e) => {
                return Err(Failure::failed(
                    format_args!("open the maps under {}", common.pin_dir.display()),
                    e,
                ))
            }
        }
        if STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the rate limit and a full ring kept back since the monitor started.
fn not_written(start: NotifyCounts, now: NotifyCounts) -> (u64, u64) {
    (
        now.events_suppressed.saturating_sub(start.events_suppressed),
        now.events_lost.saturating_sub(start.events_lost),
    )
}

pub fn monitor(common: &Common, args: &MonitorArgs) -> CmdResult {
    args.check()?;
    catch_signals();
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s.into()));
    let Some(maps) = wait_for_maps(common, deadline)? else {
        return Ok(());
    };
    let mut reader =
        EventReader::open(&maps, &common.pin_dir).map_err(|e| Failure::failed("read flow events", e))?;

    let previous = maps
        .config
        .event_level()
        .map_err(|e| Failure::failed("read the event level", e))?;
    if let Some(level) = args.level {
        maps.config
            .set_event_level(level.into())
            .map_err(|e| Failure::failed("set the event level", e))?;
    } else {
        match previous {
            Stored::Valid(EventLevel::Off) => crate::say(format_args!(
                "policyctl monitor: the event level is off: nothing will show (`policyctl events drops`, or --level)"
            )),
            Stored::Valid(EventLevel::Drops) if args.verdict == Some(VerdictFilter::Pass) => crate::say(format_args!(
                "policyctl monitor: passes are reported at event level flows (new connections) or all: add --level all"
            )),
            _ => {}
        }
    }
    let level = match args.level {
        Some(level) => EventLevel::from(level).to_string(),
        None => match previous {
            Stored::Valid(level) => level.to_string(),
            Stored::Invalid { raw, .. } => format!("invalid ({raw})"),
        },
    };
    crate::say(format_args!(
        "policyctl monitor: watching the flow events of {} (event level {level}); Ctrl-C to stop",
        common.pin_dir.display()
    ));
    let result = watch(common, args, &maps, &mut reader, deadline);
    if args.level.is_some() {
        if let Stored::Valid(level) = previous {
            if let Err(e) = maps.config.set_event_level(level) {
                crate::say(format_args!(
                    "policyctl monitor: could not restore the event level {level}: {e}"
                ));
            }
        }
    }
    result
}

fn watch(
    common: &Common,
    args: &MonitorArgs,
    maps: &Maps,
    reader: &mut EventReader,
    deadline: Option<Instant>,
) -> CmdResult {
    let start = monotonic_now();
    let counts = || {
        maps.counters
            .all()
            .map_err(|e| Failure::failed("read the event counters", e))
    };
    let first = counts()?;
    let mut reported = (0, 0);
    let mut last_report = Instant::now();
    let clock = Clock::new();
    let mut interfaces = Interfaces::new(&common.pin_dir);
    let mut names = Names::new(common);
    let mut shown = 0u64;
    let mut stdout = io::stdout().lock();
    let done = |shown: u64| {
        STOP.load(Ordering::Relaxed)
            || deadline.is_some_and(|d| Instant::now() >= d)
            || args.count.is_some_and(|n| shown >= u64::from(n))
    };
    while !done(shown) {
        let events = reader
            .poll(Duration::from_millis(100))
            .map_err(|e| Failure::failed("read flow events", e))?;
        for e in events.iter().filter(|e| e.time >= start && args.shows(e)) {
            let iface = interfaces.get(e.ifindex).cloned();
            let text = match common.output {
                Format::Json => json_line(e, &clock, iface.as_ref(), &mut names),
                _ => line(e, &clock, iface.as_ref(), &mut names),
            };
            writeln!(stdout, "{text}")?;
            shown += 1;
            if args.count.is_some_and(|n| shown >= u64::from(n)) {
                break;
            }
        }
        stdout.flush()?;
        if last_report.elapsed() >= Duration::from_secs(1) {
            let now = not_written(first, counts()?);
            if now != reported {
                crate::say(format_args!(
                    "policyctl monitor: {} events not written since the start: {} over the rate limit, {} to a full ring",
                    now.0 + now.1,
                    now.0,
                    now.1
                ));
                reported = now;
            }
            last_report = Instant::now();
        }
    }
    let (limited, lost) = not_written(first, counts()?);
    crate::say(format_args!(
        "policyctl monitor: {shown} events shown; not written since the start: {limited} over the rate limit, {lost} to a full ring"
    ));
    Ok(())
}
