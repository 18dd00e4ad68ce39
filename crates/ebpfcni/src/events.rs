//! Flow events: the records the datapath writes into event_ring (one per
//! drop, and per pass when the event level asks), decoded, and a reader.
//!
//! A BPF ring buffer has one consumer position, shared by whoever maps it:
//! two readers would each get some of the events. So a reader first takes
//! an exclusive lock for the pin directory ([`EventReader::open`]); a
//! second one is refused with the first one's pid.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use libbpf_rs::{RingBuffer, RingBufferBuilder};
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::maps::{drop_reason_name, CtState, Maps};
use crate::object::PinnedMap;
use crate::program::Hook;
use crate::skel::types;

/// The size of an event record before the label decision was added
/// (EBPFCNI_EVENT_V1_SIZE).
const EVENT_V1_SIZE: usize = 40;

/// What happened to the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Pass,
    Drop,
    /// Policy would have dropped it (the reason says why); audit mode let
    /// it pass.
    Audit,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Drop => "DROP",
            Verdict::Audit => "AUDIT",
        }
    }

    fn from_raw(raw: types::ebpfcni_verdict) -> Self {
        use types::ebpfcni_verdict as V;
        match raw {
            V::EBPFCNI_VERDICT_DROP => Verdict::Drop,
            V::EBPFCNI_VERDICT_AUDIT => Verdict::Audit,
            _ => Verdict::Pass,
        }
    }
}

/// Why a packet passed (precedence steps of ebpfcni.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    /// A stateless rule allowed it (7, 8).
    Allowed,
    /// A stateful rule allowed it and its connection is new (9).
    NewFlow,
    /// A stateful rule allowed it; its connection was tracked (9).
    Tracked,
    /// A reply of a tracked connection (4).
    Reply,
    /// An ICMP error about a tracked connection (4).
    Related,
    /// Policy would have dropped it; audit mode let it pass.
    Audit,
}

impl PassKind {
    pub(crate) fn from_raw(raw: u8) -> Option<Self> {
        use types::ebpfcni_pass_kind as K;
        Some(match K(raw) {
            K::EBPFCNI_PASS_POLICY => PassKind::Allowed,
            K::EBPFCNI_PASS_NEW_FLOW => PassKind::NewFlow,
            K::EBPFCNI_PASS_TRACKED => PassKind::Tracked,
            K::EBPFCNI_PASS_REPLY => PassKind::Reply,
            K::EBPFCNI_PASS_RELATED => PassKind::Related,
            K::EBPFCNI_PASS_AUDIT => PassKind::Audit,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PassKind::Allowed => "allowed",
            PassKind::NewFlow => "new-flow",
            PassKind::Tracked => "tracked",
            PassKind::Reply => "reply",
            PassKind::Related => "related",
            PassKind::Audit => "audit",
        }
    }
}

/// One flow event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC_COARSE when the program judged the packet (to a
    /// kernel tick, 1-4 ms).
    pub time: Duration,
    /// The host veth (the fabric interface for [`Hook::FromFabric`]).
    pub ifindex: u32,
    pub hook: Hook,
    pub verdict: Verdict,
    /// The drop reason's name (drops only).
    pub reason: Option<&'static str>,
    /// Why it passed (passes only).
    pub pass_kind: Option<PassKind>,
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    /// 0 when not known yet (a drop before the identities were found).
    pub src_id: u32,
    pub dst_id: u32,
    pub protocol: u8,
    /// Ports (0 without them); for an ICMP echo, its identifier.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// The connection's state after the packet, when it is tracked.
    pub ct_state: Option<CtState>,
    /// The packet opened the connection or changed its state.
    pub ct_changed: bool,
    /// What label policy (8b) said, when it judged the packet.
    pub label: Option<LabelDecision>,
}

/// What label policy (precedence 8b) said of a packet: the agent's numbers
/// of the rules' policies that decided, or whose isolation dropped it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LabelDecision {
    /// The sender's egress rule (an allow, or the deny rule of a
    /// policy-denied drop).
    pub egress_policy: Option<u32>,
    /// The receiver's ingress rule.
    pub ingress_policy: Option<u32>,
    /// The sender is isolated for egress and none of its rules allows it.
    pub egress_isolated: bool,
    /// The receiver is isolated for ingress and none of its rules allows it.
    pub ingress_isolated: bool,
}

impl LabelDecision {
    /// From the bits of enum ebpfcni_label_decision and the two policy
    /// numbers; `None` when label policy had no say.
    pub fn from_raw(label: u8, egress_policy: u32, ingress_policy: u32) -> Option<Self> {
        use types::ebpfcni_label_decision as D;
        let bit = |d: D| u32::from(label) & d.0 != 0;
        if label == 0 {
            return None;
        }
        Some(Self {
            egress_policy: bit(D::EBPFCNI_DECIDED_EGRESS_RULE).then_some(egress_policy),
            ingress_policy: bit(D::EBPFCNI_DECIDED_INGRESS_RULE).then_some(ingress_policy),
            egress_isolated: bit(D::EBPFCNI_DECIDED_EGRESS_ISOLATED),
            ingress_isolated: bit(D::EBPFCNI_DECIDED_INGRESS_ISOLATED),
        })
    }

    /// The policy numbers that decided, egress first, each once.
    pub fn policies(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .egress_policy
            .into_iter()
            .chain(self.ingress_policy)
            .collect();
        v.dedup();
        v
    }
}

impl Event {
    /// Decodes a record of event_ring: this build's (56 bytes) or an older
    /// program's (40 bytes, without the label decision, still written by
    /// pods not yet moved onto this build's program); `None` for one of
    /// another size.
    pub fn parse(record: &[u8]) -> Option<Self> {
        let full = size_of::<types::ebpfcni_event>();
        let mut bytes = vec![0u8; full];
        match record.len() {
            n if n == full || n == EVENT_V1_SIZE => bytes[..n].copy_from_slice(record),
            _ => return None,
        }
        let e: types::ebpfcni_event = bytemuck::pod_read_unaligned(&bytes);
        let verdict = Verdict::from_raw(e.verdict);
        Some(Self {
            time: Duration::from_nanos(e.time_ns),
            ifindex: e.ifindex,
            hook: match u32::from(e.hook) {
                h if h == types::ebpfcni_hook::EBPFCNI_HOOK_FROM_POD.0 => Hook::FromPod,
                h if h == types::ebpfcni_hook::EBPFCNI_HOOK_FROM_FABRIC.0 => Hook::FromFabric,
                _ => Hook::ToPod,
            },
            verdict,
            reason: match verdict {
                Verdict::Drop | Verdict::Audit => {
                    Some(drop_reason_name(types::ebpfcni_drop_reason(e.reason.into())).unwrap_or("unknown"))
                }
                Verdict::Pass => None,
            },
            pass_kind: PassKind::from_raw(e.pass_kind.0),
            saddr: Ipv4Addr::from(e.saddr.to_ne_bytes()),
            daddr: Ipv4Addr::from(e.daddr.to_ne_bytes()),
            src_id: e.src_id,
            dst_id: e.dst_id,
            protocol: e.protocol,
            sport: u16::from_be(e.sport),
            dport: u16::from_be(e.dport),
            tcp_flags: e.tcp_flags,
            ct_state: (e.ct_state.0 != 0).then(|| CtState::from_raw(e.ct_state.0)),
            ct_changed: e.ct_changed != 0,
            label: LabelDecision::from_raw(e.label, e.egress_policy, e.ingress_policy),
        })
    }
}

/// The exclusive right to read a pin directory's events: a lock file under
/// [`MonitorLock::DIR`], named after the pin directory, holding the
/// reader's pid; removed when the reader ends.
#[derive(Debug)]
pub struct MonitorLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl MonitorLock {
    /// Where the lock files live.
    pub const DIR: &'static str = crate::RUN_DIR;

    /// The lock file of the directory itself (its device and inode), so
    /// that every spelling of its path (`X`, `X/`, `X//`, through a
    /// symbolic link) names the same lock.
    fn path_for(pin_dir: &Path) -> Result<PathBuf> {
        let meta =
            std::fs::metadata(pin_dir).map_err(|e| Error::io(format!("stat {}", pin_dir.display()), e))?;
        Ok(Path::new(Self::DIR).join(format!("monitor-{:x}-{:x}.lock", meta.dev(), meta.ino())))
    }

    /// Takes the lock, or says who holds it ([`Error::Busy`]).
    pub fn acquire(pin_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(Self::DIR).map_err(|e| Error::io(format!("create {}", Self::DIR), e))?;
        let path = Self::path_for(pin_dir)?;
        loop {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
            let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    return Err(Error::Busy(format!(
                        "another reader (pid {}) is reading the events of {}: a ring buffer has one \
                         reader at a time",
                        pid.trim(),
                        pin_dir.display()
                    )));
                }
                Err((_, e)) => return Err(Error::errno(format!("lock {}", path.display()), e)),
            };
            // The file may have been removed by a reader that ended between
            // our open and our lock: then lock the new one.
            let same = std::fs::metadata(&path)
                .ok()
                .zip(lock.metadata().ok())
                .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
            if !same {
                continue;
            }
            lock.set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| write!(lock, "{}", std::process::id()))
                .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
            return Ok(Self { path, _lock: lock });
        }
    }
}

impl Drop for MonitorLock {
    fn drop(&mut self) {
        // Removed while still held; the lock goes with the file descriptor.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads the events of a pin directory's event_ring (one reader at a time).
pub struct EventReader<'m> {
    ring: RingBuffer<'m>,
    received: Rc<RefCell<Vec<Event>>>,
    _lock: MonitorLock,
}

impl<'m> EventReader<'m> {
    /// Takes the pin directory's reader lock and maps `maps`' event ring.
    pub fn open(maps: &'m Maps, pin_dir: &Path) -> Result<Self> {
        let lock = MonitorLock::acquire(pin_dir)?;
        let received = Rc::new(RefCell::new(Vec::new()));
        let sink = received.clone();
        let mut builder = RingBufferBuilder::new();
        builder
            .add(maps.event_ring(), move |record: &[u8]| {
                if let Some(event) = Event::parse(record) {
                    sink.borrow_mut().push(event);
                }
                0
            })
            .map_err(|e| Error::bpf(format!("read {}", PinnedMap::EventRing), e))?;
        let ring = builder
            .build()
            .map_err(|e| Error::bpf(format!("map {}", PinnedMap::EventRing), e))?;
        Ok(Self {
            ring,
            received,
            _lock: lock,
        })
    }

    /// Waits up to `timeout` for events; returns those that arrived (at
    /// most the ring's content: call again for more).
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Event>> {
        match self.ring.poll(timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::bpf(format!("read {}", PinnedMap::EventRing), e)),
        }
        Ok(std::mem::take(&mut *self.received.borrow_mut()))
    }
}

/// CLOCK_MONOTONIC_COARSE now: the clock of [`Event::time`].
pub fn monotonic_now() -> Duration {
    let t =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).expect("the coarse clock reads");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}
