//! notify_state: what the notifications (flow events, trace lines) wrote,
//! and what the rate limit or a full ring held back, summed over CPUs.

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::{Error, Result};
use crate::object::PinnedMap;
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::NotifyState;

/// The counts since the map was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyCounts {
    pub events: u64,
    /// Held back by the rate limit.
    pub events_suppressed: u64,
    /// Found the ring full.
    pub events_lost: u64,
    pub traces: u64,
    /// Held back by the rate limit.
    pub traces_suppressed: u64,
}

#[derive(Debug)]
pub struct NotifyCounters {
    pub(super) map: MapHandle,
}

impl NotifyCounters {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    /// (written, over the limit, ring full) of one slot, summed over CPUs.
    fn get(&self, slot: types::ebpfcni_notify) -> Result<(u64, u64, u64)> {
        let per_cpu = self
            .map
            .lookup_percpu(&slot.0.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("read {MAP}"), e))?
            .unwrap_or_default();
        Ok(per_cpu
            .iter()
            .map(|v| bytemuck::pod_read_unaligned::<types::ebpfcni_notify_state>(v))
            .fold((0, 0, 0), |(w, o, r), s| {
                (w + s.written, o + s.over_limit, r + s.ring_full)
            }))
    }

    pub fn all(&self) -> Result<NotifyCounts> {
        let (events, events_suppressed, events_lost) =
            self.get(types::ebpfcni_notify::EBPFCNI_NOTIFY_EVENTS)?;
        let (traces, traces_suppressed, _) = self.get(types::ebpfcni_notify::EBPFCNI_NOTIFY_TRACES)?;
        Ok(NotifyCounts {
            events,
            events_suppressed,
            events_lost,
            traces,
            traces_suppressed,
        })
    }
}
