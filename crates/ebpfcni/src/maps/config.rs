//! config_map: the run-time settings the program reads on every packet.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::Stored;
use crate::bpffs::PinDirLock;
use crate::error::{Error, Result};
use crate::object::{PinnedMap, CONFIG_KEY};
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::Config;

/// How much the program writes to the trace pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceLevel {
    /// Nothing.
    Off,
    /// One line per dropped packet (the default).
    Drops,
    /// One line per IPv4 packet, for debugging only (BENCHMARKS.md has the
    /// measured cost of a line).
    All,
}

impl TraceLevel {
    pub const ALL_LEVELS: [TraceLevel; 3] = [TraceLevel::Off, TraceLevel::Drops, TraceLevel::All];

    fn raw(self) -> types::ebpfcni_trace_level {
        match self {
            TraceLevel::Off => types::ebpfcni_trace_level::EBPFCNI_TRACE_OFF,
            TraceLevel::Drops => types::ebpfcni_trace_level::EBPFCNI_TRACE_DROPS,
            TraceLevel::All => types::ebpfcni_trace_level::EBPFCNI_TRACE_ALL,
        }
    }

    fn from_raw(raw: types::ebpfcni_trace_level) -> Option<Self> {
        Self::ALL_LEVELS.into_iter().find(|l| l.raw() == raw)
    }

    pub fn name(self) -> &'static str {
        match self {
            TraceLevel::Off => "off",
            TraceLevel::Drops => "drops",
            TraceLevel::All => "all",
        }
    }
}

impl fmt::Display for TraceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TraceLevel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL_LEVELS
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| format!("invalid trace level {s:?}: expected off, drops or all"))
    }
}

#[derive(Debug)]
pub struct ConfigMap {
    pub(super) map: MapHandle,
    /// Setters change one field of the shared value: they serialise on
    /// the pin directory's lock so that concurrent setters of different
    /// fields do not undo each other.
    pin_dir: PathBuf,
}

impl ConfigMap {
    pub(super) fn new(map: MapHandle, pin_dir: &Path) -> Self {
        Self {
            map,
            pin_dir: pin_dir.to_owned(),
        }
    }

    /// Reads the settings, lets `change` edit them, writes them back, under
    /// the pin directory's lock.
    fn update(&self, change: impl FnOnce(&mut types::ebpfcni_config)) -> Result<()> {
        let _lock = PinDirLock::acquire(&self.pin_dir)?;
        let mut config = self.read()?;
        change(&mut config);
        self.map
            .update(&CONFIG_KEY, bytemuck::bytes_of(&config), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("write {MAP}"), e))
    }

    fn read(&self) -> Result<types::ebpfcni_config> {
        let value = self
            .map
            .lookup(&CONFIG_KEY, MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("read {MAP}"), e))?
            .expect("an array map always has key 0");
        Ok(bytemuck::pod_read_unaligned(&value))
    }

    /// The trace level; a value this build does not know is invalid (the
    /// program then traces as at "all") and [`Self::set_trace_level`]
    /// overwrites it.
    pub fn trace_level(&self) -> Result<Stored<TraceLevel, u32>> {
        let raw = self.read()?.trace_level;
        Ok(match TraceLevel::from_raw(raw) {
            Some(level) => Stored::Valid(level),
            None => Stored::Invalid {
                raw: raw.0,
                problem: "unknown trace level",
            },
        })
    }

    /// Takes effect on the next packet; no reload.
    pub fn set_trace_level(&self, level: TraceLevel) -> Result<()> {
        self.update(|config| config.trace_level = level.raw())
    }
}
