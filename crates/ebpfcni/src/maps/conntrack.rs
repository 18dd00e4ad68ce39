//! ct_map: the connections of stateful rules (precedence steps 4 and 9),
//! for the tools: listing them, removing those no rule allows any longer,
//! flushing.

use std::net::Ipv4Addr;
use std::time::Duration;

use libbpf_rs::{MapCore, MapHandle};

use super::dump;
use crate::error::{Error, Result};
use crate::object::PinnedMap;
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::Conntrack;

/// The life of a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    Syn,
    Established,
    Closing,
    Open,
    /// A value this build does not know.
    Unknown(u8),
}

impl CtState {
    pub fn from_raw(raw: u8) -> Self {
        match types::ebpfcni_ct_state(raw) {
            types::ebpfcni_ct_state::EBPFCNI_CT_SYN => CtState::Syn,
            types::ebpfcni_ct_state::EBPFCNI_CT_ESTABLISHED => CtState::Established,
            types::ebpfcni_ct_state::EBPFCNI_CT_CLOSING => CtState::Closing,
            types::ebpfcni_ct_state::EBPFCNI_CT_OPEN => CtState::Open,
            _ => CtState::Unknown(raw),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CtState::Syn => "syn",
            CtState::Established => "established",
            CtState::Closing => "closing",
            CtState::Open => "open",
            CtState::Unknown(_) => "unknown",
        }
    }
}

/// A tracked connection, opener to responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub protocol: u8,
    pub opener: Ipv4Addr,
    /// The opener's port (ICMP echo: the identifier; 0 without ports).
    pub opener_port: u16,
    pub responder: Ipv4Addr,
    /// The port the opener sent to (ICMP echo: the identifier).
    pub dport: u16,
    /// Identities when the connection was opened.
    pub opener_id: u32,
    pub responder_id: u32,
    pub state: CtState,
    pub seen_reply: bool,
    /// Time left before the entry expires (zero: expired, counts as absent).
    pub expires_in: Duration,
}

/// CLOCK_MONOTONIC_COARSE in ns: the clock of the entries' expiries.
pub(super) fn now_coarse_ns() -> u64 {
    let t =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).expect("the coarse clock reads");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn connection(key: &[u8], value: &[u8], now: u64) -> Connection {
    let k: types::ebpfcni_ct_key = bytemuck::pod_read_unaligned(key);
    let v: types::ebpfcni_ct_entry = bytemuck::pod_read_unaligned(value);
    let a = (Ipv4Addr::from(k.addr_a.to_ne_bytes()), u16::from_be(k.port_a));
    let b = (Ipv4Addr::from(k.addr_b.to_ne_bytes()), u16::from_be(k.port_b));
    let opener_is_b = v.flags & 0x01 != 0; // EBPFCNI_CT_OPENER_IS_B
    let (opener, responder) = if opener_is_b { (b, a) } else { (a, b) };
    Connection {
        protocol: k.protocol,
        opener: opener.0,
        opener_port: opener.1,
        responder: responder.0,
        dport: u16::from_be(v.dport),
        opener_id: v.opener_id,
        responder_id: v.responder_id,
        state: CtState::from_raw(v.state.0),
        seen_reply: v.flags & 0x02 != 0, // EBPFCNI_CT_SEEN_REPLY
        expires_in: Duration::from_nanos(v.expires_ns.saturating_sub(now)),
    }
}

#[derive(Debug)]
pub struct ConntrackMap {
    pub(super) map: MapHandle,
}

impl ConntrackMap {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Every connection still alive (expired entries count as absent),
    /// sorted by opener then responder.
    pub fn list(&self) -> Result<Vec<Connection>> {
        let now = now_coarse_ns();
        let mut all: Vec<Connection> = dump(&self.map, MAP)?
            .iter()
            .map(|(k, v)| connection(k, v, now))
            .filter(|c| !c.expires_in.is_zero())
            .collect();
        all.sort_by_key(|c| (c.opener, c.opener_port, c.responder, c.dport, c.protocol));
        Ok(all)
    }

    /// Removes the connections `keep` refuses (and expired ones). Returns
    /// how many went.
    pub fn retain(&self, keep: impl Fn(&Connection) -> bool) -> Result<usize> {
        let now = now_coarse_ns();
        let mut gone = 0;
        for (k, v) in dump(&self.map, MAP)? {
            let c = connection(&k, &v, now);
            if !c.expires_in.is_zero() && keep(&c) {
                continue;
            }
            match self.map.delete(&k) {
                Ok(()) => gone += 1,
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::bpf(format!("remove a connection from {MAP}"), e)),
            }
        }
        Ok(gone)
    }

    /// Entries in the table, expired ones included (they hold room until
    /// the LRU reuses it).
    pub fn len(&self) -> Result<usize> {
        Ok(dump(&self.map, MAP)?.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.map.keys().next().is_none())
    }

    /// Forgets every connection: their replies need a rule of their own
    /// again until their next allowed packet tracks them anew.
    pub fn clear(&self) -> Result<usize> {
        super::clear(&self.map, MAP)
    }

    /// Moves every entry `by` closer to its expiry, as if that much time
    /// had passed without a packet (for tests of expiry).
    #[doc(hidden)]
    pub fn age(&self, by: Duration) -> Result<()> {
        super::age_entries(&self.map, MAP, by, |e: &mut types::ebpfcni_ct_entry| {
            &mut e.expires_ns
        })
    }
}
