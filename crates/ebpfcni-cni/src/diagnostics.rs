//! Where the plugin's diagnostics (the `log` crate's records) go: stderr, or
//! appended to the configured `logFile`. Never stdout, which carries only
//! the result or the error JSON.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

struct Sink {
    file: Mutex<Option<std::fs::File>>,
    /// Shown on every line: command, container id and interface.
    tag: Mutex<String>,
}

static SINK: Sink = Sink {
    file: Mutex::new(None),
    tag: Mutex::new(String::new()),
};

impl log::Log for Sink {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let tag = self.tag.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let line = format!(
            "{}.{:03} ebpfcni[{}] {tag}: {}{}\n",
            now.as_secs(),
            now.subsec_millis(),
            std::process::id(),
            match record.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                _ => "",
            },
            record.args()
        );
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = match file.as_mut() {
            Some(file) => file.write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}

/// Installs the sink (on stderr until [`to_file`]).
pub fn init() {
    if log::set_logger(&SINK).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Sends further diagnostics to `path` (appending); stays on stderr when
/// the file cannot be opened, and says so there.
pub fn to_file(path: &Path) {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => *SINK.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file),
        Err(e) => log::warn!("cannot open log file {}: {e}; logging to stderr", path.display()),
    }
}

/// Sets the context shown on every line.
pub fn set_tag(tag: String) {
    *SINK.tag.lock().unwrap_or_else(|e| e.into_inner()) = tag;
}
