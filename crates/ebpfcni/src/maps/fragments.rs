//! frag_map: the verdicts of fragmented datagrams' first fragments, which
//! their later fragments pass with (precedence step 4a), for the tools:
//! listing them, forgetting them when the rules or identities they were
//! given under change.

use std::net::Ipv4Addr;
use std::time::Duration;

use libbpf_rs::{MapCore, MapHandle};

use super::conntrack::now_coarse_ns;
use super::dump;
use crate::error::Result;
use crate::object::PinnedMap;
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::Fragments;

/// A datagram whose first fragment passed by a port rule or as a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The IP ID its fragments share.
    pub ip_id: u16,
    /// The first fragment's identities.
    pub src_id: u32,
    pub dst_id: u32,
    /// How the first fragment passed (enum ebpfcni_pass_kind).
    pub pass_kind: u8,
    /// Time left before the record expires (zero: expired, counts as absent).
    pub expires_in: Duration,
}

fn datagram(key: &[u8], value: &[u8], now: u64) -> Datagram {
    let k: types::ebpfcni_frag_key = bytemuck::pod_read_unaligned(key);
    let v: types::ebpfcni_frag_entry = bytemuck::pod_read_unaligned(value);
    Datagram {
        protocol: k.protocol,
        src: Ipv4Addr::from(k.saddr.to_ne_bytes()),
        dst: Ipv4Addr::from(k.daddr.to_ne_bytes()),
        ip_id: u16::from_be(k.id),
        src_id: v.src_id,
        dst_id: v.dst_id,
        pass_kind: v.pass_kind.0,
        expires_in: Duration::from_nanos(v.expires_ns.saturating_sub(now)),
    }
}

#[derive(Debug)]
pub struct FragmentMap {
    map: MapHandle,
}

impl FragmentMap {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Every record still alive (expired ones count as absent), sorted by
    /// source, destination, IP ID.
    pub fn list(&self) -> Result<Vec<Datagram>> {
        let now = now_coarse_ns();
        let mut all: Vec<Datagram> = dump(&self.map, MAP)?
            .iter()
            .map(|(k, v)| datagram(k, v, now))
            .filter(|d| !d.expires_in.is_zero())
            .collect();
        all.sort_by_key(|d| (d.src, d.dst, d.ip_id, d.protocol));
        Ok(all)
    }

    /// Entries in the table, expired ones included (they hold room until
    /// the LRU reuses it).
    pub fn len(&self) -> Result<usize> {
        Ok(dump(&self.map, MAP)?.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.map.keys().next().is_none())
    }

    /// Forgets every record: the later fragments still on their way are
    /// judged by themselves. Returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        super::clear(&self.map, MAP)
    }

    /// Moves every record `by` closer to its expiry, as if that much time
    /// had passed (for tests of expiry).
    #[doc(hidden)]
    pub fn age(&self, by: Duration) -> Result<()> {
        super::age_entries(&self.map, MAP, by, |e: &mut types::ebpfcni_frag_entry| {
            &mut e.expires_ns
        })
    }
}
