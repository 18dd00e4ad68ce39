//! event_counters: what the notifications wrote, and what the rate limit or
//! a full ring kept back, summed over CPUs.

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::{Error, Result};
use crate::object::PinnedMap;
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::EventCounters;

/// The counts since the map was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyCounts {
    pub events: u64,
    pub events_suppressed: u64,
    pub events_lost: u64,
    pub traces: u64,
    pub traces_suppressed: u64,
}

#[derive(Debug)]
pub struct EventCounters {
    pub(super) map: MapHandle,
}

impl EventCounters {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    fn get(&self, counter: types::ebpfcni_counter) -> Result<u64> {
        let per_cpu = self
            .map
            .lookup_percpu(&counter.0.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("read {MAP}"), e))?
            .unwrap_or_default();
        Ok(per_cpu
            .iter()
            .map(|v| u64::from_ne_bytes(v[..8].try_into().expect("8-byte counter")))
            .sum())
    }

    pub fn all(&self) -> Result<NotifyCounts> {
        use types::ebpfcni_counter as C;
        Ok(NotifyCounts {
            events: self.get(C::EBPFCNI_COUNT_EVENTS)?,
            events_suppressed: self.get(C::EBPFCNI_COUNT_EVENTS_SUPPRESSED)?,
            events_lost: self.get(C::EBPFCNI_COUNT_EVENTS_LOST)?,
            traces: self.get(C::EBPFCNI_COUNT_TRACES)?,
            traces_suppressed: self.get(C::EBPFCNI_COUNT_TRACES_SUPPRESSED)?,
        })
    }
}
