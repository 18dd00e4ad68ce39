//! Where a command spends its time: steps timed as they run, reported as
//! one diagnostics line at the end ("timing: 4.1 ms: ipam 2.3, veth 0.6,
//! ..."), so that `logFile` shows the breakdown of every ADD and DEL.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();
static STEPS: Mutex<Vec<(&'static str, Duration)>> = Mutex::new(Vec::new());

/// Marks the start of the command (the first call wins).
pub fn start() {
    let _ = START.set(Instant::now());
}

/// Records that `name` took `took`.
pub fn record(name: &'static str, took: Duration) {
    STEPS.lock().unwrap_or_else(|e| e.into_inner()).push((name, took));
}

/// Runs `f` as step `name`.
pub fn step<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    record(name, start.elapsed());
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The line: total since [`start`], then each step in the order recorded.
pub fn summary() -> String {
    let total = START.get().map(Instant::elapsed).unwrap_or_default();
    let mut line = format!("timing: {} ms:", ms(total));
    for (name, took) in STEPS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = write!(line, " {name} {},", ms(*took));
    }
    line.trim_end_matches(',').to_owned()
}
