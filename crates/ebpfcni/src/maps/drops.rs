//! drop_counters: packets dropped per reason, per CPU.

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::{Error, Result};
use crate::object::{self, PinnedMap};
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::DropCounters;

/// Where the audit counters start (EBPFCNI_AUDIT_SLOT): slot
/// AUDIT_SLOT + reason counts what audit mode let pass for that reason.
const AUDIT_SLOT: u32 = 32;

/// The name of a drop reason, as traces, counters and the CLIs say it
/// (written once, in bpf/include/ebpfcni.h). `None` for values that are not
/// a drop reason.
pub fn drop_reason_name(reason: types::ebpfcni_drop_reason) -> Option<&'static str> {
    object::drop_reason_names()
        .get(reason.0 as usize)
        .map(String::as_str)
        .filter(|name| !name.is_empty())
}

/// Every drop reason's name, in the order of their values.
pub fn drop_reasons() -> Vec<&'static str> {
    (1..types::ebpfcni_drop_reason::EBPFCNI_DROP_REASON_MAX.0)
        .filter_map(|r| drop_reason_name(types::ebpfcni_drop_reason(r)))
        .collect()
}

#[derive(Debug)]
pub struct DropCounters {
    pub(super) map: MapHandle,
}

impl DropCounters {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    /// Packets dropped for `reason` since the map was created, summed over CPUs.
    pub fn get(&self, reason: types::ebpfcni_drop_reason) -> Result<u64> {
        let per_cpu = self
            .map
            .lookup_percpu(&reason.0.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("read {MAP}"), e))?
            .unwrap_or_default();
        Ok(per_cpu
            .iter()
            .map(|v| bytemuck::pod_read_unaligned::<types::ebpfcni_drop_count>(v).packets)
            .sum())
    }

    /// Packets audit mode let pass that policy would have dropped for
    /// `reason` (the reason's audit slot), summed over CPUs.
    pub fn audited(&self, reason: types::ebpfcni_drop_reason) -> Result<u64> {
        self.get(types::ebpfcni_drop_reason(reason.0 + AUDIT_SLOT))
    }

    /// (reason name, packets audit mode let pass) for every reason.
    pub fn all_audited(&self) -> Result<Vec<(&'static str, u64)>> {
        (1..types::ebpfcni_drop_reason::EBPFCNI_DROP_REASON_MAX.0)
            .map(types::ebpfcni_drop_reason)
            .map(|r| Ok((drop_reason_name(r).unwrap_or("unnamed"), self.audited(r)?)))
            .collect()
    }

    /// (reason name, packets) for every reason.
    pub fn all(&self) -> Result<Vec<(&'static str, u64)>> {
        (1..types::ebpfcni_drop_reason::EBPFCNI_DROP_REASON_MAX.0)
            .map(types::ebpfcni_drop_reason)
            .map(|r| Ok((drop_reason_name(r).unwrap_or("unnamed"), self.get(r)?)))
            .collect()
    }
}
