//! config_map: the run-time settings the program reads on every packet.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::journal::Journal;
use super::{Maps, Stored};
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

/// Which flow events the program writes (policyctl monitor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLevel {
    /// None.
    Off,
    /// Every drop (the default).
    Drops,
    /// Drops, and new tracked connections and their state changes.
    Flows,
    /// Every IPv4 packet.
    All,
}

impl EventLevel {
    pub const ALL_LEVELS: [EventLevel; 4] = [
        EventLevel::Off,
        EventLevel::Drops,
        EventLevel::Flows,
        EventLevel::All,
    ];

    fn raw(self) -> types::ebpfcni_event_level {
        match self {
            EventLevel::Off => types::ebpfcni_event_level::EBPFCNI_EVENTS_OFF,
            EventLevel::Drops => types::ebpfcni_event_level::EBPFCNI_EVENTS_DROPS,
            EventLevel::Flows => types::ebpfcni_event_level::EBPFCNI_EVENTS_FLOWS,
            EventLevel::All => types::ebpfcni_event_level::EBPFCNI_EVENTS_ALL,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EventLevel::Off => "off",
            EventLevel::Drops => "drops",
            EventLevel::Flows => "flows",
            EventLevel::All => "all",
        }
    }
}

impl fmt::Display for EventLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EventLevel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL_LEVELS
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| format!("invalid event level {s:?}: expected off, drops, flows or all"))
    }
}

/// Connection lifetimes in seconds, by state (0 in the map: the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtTimeouts {
    pub tcp_syn: u32,
    pub tcp_established: u32,
    pub tcp_closing: u32,
    pub udp: u32,
    /// ICMP echo and every other protocol.
    pub other: u32,
}

impl CtTimeouts {
    /// The defaults (Cilium's), from ebpfcni.h.
    pub const DEFAULT: CtTimeouts = {
        use types::ebpfcni_default as D;
        CtTimeouts {
            tcp_syn: D::EBPFCNI_CT_DEFAULT_SYN.0,
            tcp_established: D::EBPFCNI_CT_DEFAULT_ESTABLISHED.0,
            tcp_closing: D::EBPFCNI_CT_DEFAULT_CLOSING.0,
            udp: D::EBPFCNI_CT_DEFAULT_UDP.0,
            other: D::EBPFCNI_CT_DEFAULT_ICMP.0,
        }
    };

    fn as_array(self) -> [u32; 5] {
        [
            self.tcp_syn,
            self.tcp_established,
            self.tcp_closing,
            self.udp,
            self.other,
        ]
    }

    fn from_array(a: [u32; 5]) -> Self {
        let d = Self::DEFAULT.as_array();
        let pick = |i: usize| if a[i] == 0 { d[i] } else { a[i] };
        Self {
            tcp_syn: pick(0),
            tcp_established: pick(1),
            tcp_closing: pick(2),
            udp: pick(3),
            other: pick(4),
        }
    }
}

/// The notifications' rate limit, per CPU, separately for events and
/// trace lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Per second.
    pub rate: u32,
    /// At most this many at once.
    pub burst: u32,
}

impl RateLimit {
    /// The highest rate the datapath takes (from ebpfcni.h).
    pub const MAX_RATE: u32 = types::ebpfcni_default::EBPFCNI_NOTIFY_MAX_RATE.0;
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

    /// The event level; a value this build does not know is invalid (the
    /// program then reports as at "all").
    pub fn event_level(&self) -> Result<Stored<EventLevel, u32>> {
        let raw = self.read()?.event_level;
        Ok(
            match EventLevel::ALL_LEVELS.into_iter().find(|l| l.raw() == raw) {
                Some(level) => Stored::Valid(level),
                None => Stored::Invalid {
                    raw: raw.0,
                    problem: "unknown event level",
                },
            },
        )
    }

    pub fn set_event_level(&self, level: EventLevel) -> Result<()> {
        self.update(|config| config.event_level = level.raw())
    }

    /// Whether the program tracks connections (some rule is stateful).
    pub fn conntrack(&self) -> Result<bool> {
        Ok(self.read()?.conntrack != 0)
    }

    /// Kept by [`crate::Maps::after_policy_change`]: on while some rule is
    /// stateful.
    pub(crate) fn set_conntrack(&self, on: bool) -> Result<()> {
        if self.conntrack()? == on {
            return Ok(());
        }
        self.update(|config| config.conntrack = u32::from(on))
    }

    /// Whether the program looks port rules up (some are allowed).
    pub fn port_rules(&self) -> Result<bool> {
        Ok(self.read()?.port_rules != 0)
    }

    /// Kept by [`crate::Maps::after_policy_change`]: on while
    /// port_policy_map holds a rule.
    pub(crate) fn set_port_rules(&self, on: bool) -> Result<()> {
        if self.port_rules()? == on {
            return Ok(());
        }
        self.update(|config| config.port_rules = u32::from(on))
    }

    /// Whether from-pod looks local_map up (some record delivers locally).
    pub fn local_redirect(&self) -> Result<bool> {
        Ok(self.read()?.local_redirect != 0)
    }

    /// Kept by [`super::LocalDeliveryMap`]: on while a record of a
    /// "redirect" network exists.
    pub(crate) fn set_local_redirect(&self, on: bool) -> Result<()> {
        if self.local_redirect()? == on {
            return Ok(());
        }
        self.update(|config| config.local_redirect = u32::from(on))
    }

    /// Changes the tools made so far (wrapping): equal twice, nothing but
    /// the agent's own writes happened in between.
    pub fn generation(&self) -> Result<u32> {
        Ok(self.read()?.generation)
    }

    /// Counts one more change (by [`super::journal::Journal::begin`]).
    pub(crate) fn bump_generation(&self) -> Result<()> {
        self.update(|config| config.generation = config.generation.wrapping_add(1))
    }

    /// The generation of what policy decides with: a tracked connection
    /// passed at this generation is not judged again until it changes.
    pub fn policy_gen(&self) -> Result<u32> {
        Ok(self.read()?.policy_gen)
    }

    /// Kept by [`crate::Maps::after_policy_change`], after the maps
    /// changed: tracked connections are judged again (never 0, which
    /// would judge every packet).
    pub(crate) fn bump_policy_gen(&self) -> Result<()> {
        self.update(|config| config.policy_gen = config.policy_gen.wrapping_add(1).max(1))
    }

    /// Whether the program looks at label policy (some identity is under it).
    pub fn label_policy(&self) -> Result<bool> {
        Ok(self.read()?.label_policy != 0)
    }

    /// Whether the program looks deny rules of label policy up.
    pub fn label_deny(&self) -> Result<bool> {
        Ok(self.read()?.label_deny != 0)
    }

    /// Label policy's flags as the program reads them (0: off; else
    /// enum ebpfcni_label_policy_flags: on, and the shapes of rules that
    /// exist).
    pub fn label_policy_flags(&self) -> Result<u32> {
        Ok(self.read()?.label_policy)
    }

    /// Turns on the flags of shapes of label rules just added
    /// ([`super::LabelRule::shape`]), so that the program finds them
    /// before anything they replace is removed (adds before removes). A
    /// flag on too many costs lookups only; [`crate::Maps::after_policy_change`]
    /// sets them exactly.
    pub(crate) fn enable_label_shapes(&self, shapes: u32) -> Result<()> {
        if self.label_policy_flags()? & shapes == shapes {
            return Ok(());
        }
        self.update(|config| {
            config.label_policy |= shapes | types::ebpfcni_label_policy_flags::EBPFCNI_LABEL_POLICY_ON.0
        })
    }

    /// Kept by [`crate::Maps::after_policy_change`]: `flags` from
    /// [`super::LabelIndex::policy_flags`] (0 while no identity is under
    /// label policy), and `deny` while a deny rule exists.
    pub(crate) fn set_label_policy(&self, flags: u32, deny: bool) -> Result<()> {
        if self.label_policy_flags()? == flags && self.label_deny()? == deny {
            return Ok(());
        }
        self.update(|config| {
            config.label_policy = flags;
            config.label_deny = u32::from(deny);
        })
    }

    /// Whether audit mode is on: policy drops pass, counted and reported
    /// as audit (source trust and malformed packets stay drops).
    pub fn audit(&self) -> Result<bool> {
        Ok(self.read()?.audit != 0)
    }

    /// Takes effect on the next packet; no reload. Callers make it a
    /// journaled change ([`crate::Maps::set_audit`]).
    pub(crate) fn set_audit(&self, on: bool) -> Result<()> {
        self.update(|config| config.audit = u32::from(on))
    }

    /// The connection lifetimes in effect.
    pub fn ct_timeouts(&self) -> Result<CtTimeouts> {
        Ok(CtTimeouts::from_array(self.read()?.ct_timeout))
    }

    /// Takes effect as connections are next refreshed.
    pub fn set_ct_timeouts(&self, timeouts: CtTimeouts) -> Result<()> {
        self.update(|config| config.ct_timeout = timeouts.as_array())
    }

    /// The notifications' rate limit in effect.
    pub fn rate_limit(&self) -> Result<RateLimit> {
        let config = self.read()?;
        let rate = if config.notify_rate == 0 {
            types::ebpfcni_default::EBPFCNI_NOTIFY_DEFAULT_RATE.0
        } else {
            config.notify_rate
        };
        let burst = if config.notify_burst == 0 {
            rate
        } else {
            config.notify_burst
        };
        Ok(RateLimit { rate, burst })
    }

    /// Rates above [`RateLimit::MAX_RATE`] count as it (in the datapath too).
    pub fn set_rate_limit(&self, limit: RateLimit) -> Result<()> {
        self.update(|config| {
            config.notify_rate = limit.rate;
            config.notify_burst = limit.burst;
        })
    }
}

impl Maps {
    /// Turns audit mode on or off: a change like the rules' (under the pin
    /// directory's lock, recorded so that a kill leaves the old setting,
    /// counted in the generation). Returns whether it changed.
    pub fn set_audit(&self, on: bool) -> Result<bool> {
        let mut journal = Journal::begin(self, Maps::after_policy_change)?;
        if self.config.audit()? == on {
            journal.commit()?;
            return Ok(false);
        }
        journal.record(MAP, [CONFIG_KEY.to_vec()])?;
        self.config.set_audit(on)?;
        journal.commit()?;
        Ok(true)
    }
}
