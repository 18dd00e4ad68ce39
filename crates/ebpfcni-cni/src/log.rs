//! Diagnostics: to stderr, or appended to the configured `logFile`.
//! Never to stdout, which carries only the result or error JSON.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

static SINK: Mutex<Option<std::fs::File>> = Mutex::new(None);
static TAG: Mutex<String> = Mutex::new(String::new());

/// Sends further diagnostics to `path` (appending); stays on stderr when
/// the file cannot be opened, and says so there.
pub fn to_file(path: &Path) {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(file),
        Err(e) => eprintln!(
            "ebpfcni: cannot open log file {}: {e}; logging to stderr",
            path.display()
        ),
    }
}

/// Sets the context shown on every line (command and container).
pub fn set_tag(tag: String) {
    *TAG.lock().unwrap_or_else(|e| e.into_inner()) = tag;
}

pub fn write(msg: std::fmt::Arguments<'_>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let tag = TAG.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let line = format!(
        "{}.{:03} ebpfcni[{}] {tag}: {msg}\n",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id()
    );
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    match sink.as_mut() {
        Some(file) => {
            let _ = file.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// `diag!("...", args)`: one diagnostic line.
#[macro_export]
macro_rules! diag {
    ($($arg:tt)*) => { $crate::log::write(format_args!($($arg)*)) };
}
