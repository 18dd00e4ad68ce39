//! The identity-policy program, one entry point per hook: loading it against
//! the pinned maps, running it on crafted frames (BPF_PROG_TEST_RUN), and
//! reading what the kernel knows of a loaded program.

use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapHandle, ProgramHandle};

use crate::error::{Error, Result};
use crate::events::{LabelDecision, PassKind, Verdict};
use crate::loader;
use crate::maps::Maps;
use crate::object::PinnedMap;
use crate::skel::types;

/// Which tc hook a program runs on: the two of a pod's host veth, or the
/// node's fabric interface (cluster mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// tc ingress of a host veth: what the pod sends.
    FromPod,
    /// tc egress of a host veth: what the pod receives.
    ToPod,
    /// tc ingress of the node's fabric interface: what other nodes send
    /// (precedence step F: a source address with an identity must come
    /// from the node that holds it).
    FromFabric,
}

impl Hook {
    /// The hooks of a pod's host veth.
    pub const ALL: [Hook; 2] = [Hook::FromPod, Hook::ToPod];
    /// Every entry point of the program (each pinned under its name).
    pub const ENTRY_POINTS: [Hook; 3] = [Hook::FromPod, Hook::ToPod, Hook::FromFabric];

    /// The entry point's name in the kernel (`bpftool prog show`,
    /// `bpftool net show`): at most 15 characters, which the kernel keeps
    /// (attachments are recognised as ours by it).
    pub const fn program_name(self) -> &'static str {
        match self {
            Hook::FromPod => "ebpfcni_frompod",
            Hook::ToPod => "ebpfcni_topod",
            Hook::FromFabric => "ebpfcni_fabric",
        }
    }

    /// The tc hook's name: "ingress" or "egress".
    pub const fn tc_name(self) -> &'static str {
        match self {
            Hook::FromPod | Hook::FromFabric => "ingress",
            Hook::ToPod => "egress",
        }
    }

    /// "from-pod", "to-pod" or "from-fabric".
    pub const fn name(self) -> &'static str {
        match self {
            Hook::FromPod => "from-pod",
            Hook::ToPod => "to-pod",
            Hook::FromFabric => "from-fabric",
        }
    }
}

// The kernel keeps 15 characters of a program's name: longer ones would
// not be recognised as ours once attached.
const _: () = {
    let mut i = 0;
    while i < Hook::ENTRY_POINTS.len() {
        assert!(Hook::ENTRY_POINTS[i].program_name().len() <= 15);
        i += 1;
    }
};

/// The marker of an explaining test run (EBPFCNI_EXPLAIN_MAGIC0/1).
const EXPLAIN_MAGIC: [u32; 2] = [0xeb9f_c0de, 0x3e7a_1a1b];

/// What the program decided about an explained packet ([`Program::explain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The program's return value (TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT:
    /// from-pod delivered it into a pod of the node, whose to-pod hook is
    /// then not run).
    pub tc_verdict: i32,
    pub verdict: Verdict,
    /// Why it was dropped (or would have been, in audit mode).
    pub reason: Option<&'static str>,
    /// Why it passed.
    pub pass_kind: Option<PassKind>,
    /// The identities the program found (0: not found, or not looked up).
    pub src_id: u32,
    pub dst_id: u32,
    /// What label policy said, when it judged the packet.
    pub label: Option<LabelDecision>,
}

/// tc verdicts the program returns.
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
/// What from-pod returns for a packet it delivers into a pod of the node
/// (bpf_redirect_peer).
pub const TC_ACT_REDIRECT: i32 = 7;

/// A loaded instance of the program (every entry point), sharing the
/// pinned maps. The kernel keeps it alive while this handle or an
/// attachment holds it.
#[derive(Debug)]
pub struct Program {
    from_pod: ProgramHandle,
    to_pod: ProgramHandle,
    from_fabric: ProgramHandle,
}

/// Outcome of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, Copy)]
pub struct TestRun {
    /// The program's return value: a TC_ACT_* verdict.
    pub verdict: i32,
    /// Mean time per repetition, as measured by the kernel.
    pub duration: Duration,
}

/// `__sk_buff` fields for [`Program::test_run`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TestContext {
    /// Device the program runs on (must exist in the caller's namespace; 1 is lo).
    pub ifindex: u32,
    /// Device the packet was received on (0: sent by this host).
    pub ingress_ifindex: u32,
}

/// The build id of the program this binary carries: a hash of the
/// compiled object. Programs are pinned under names that carry it.
pub const PROGRAM_BUILD_ID: &str = env!("EBPFCNI_PROGRAM_BUILD_ID");

/// How [`Program::shared`] got the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// This build's program was pinned already: nothing was loaded.
    Pinned,
    /// Loaded (and verified) now, and pinned for the next callers.
    Loaded,
}

/// Where an entry point of the program of build `build_id` is pinned.
pub fn program_pin(pin_dir: &Path, hook: Hook, build_id: &str) -> PathBuf {
    pin_dir.join(format!("{}_{build_id}", hook.program_name()))
}

/// The programs pinned under `pin_dir`, by any build: (hook, build id, path).
pub fn program_pins(pin_dir: &Path) -> Vec<(Hook, String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Vec::new();
    };
    let mut pins: Vec<(Hook, String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Hook::ENTRY_POINTS.into_iter().find_map(|hook| {
                let id = name.strip_prefix(hook.program_name())?.strip_prefix('_')?;
                let is_id = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
                is_id.then(|| (hook, id.to_owned(), e.path()))
            })
        })
        .collect();
    pins.sort_by(|a, b| a.2.cmp(&b.2));
    pins
}

impl Program {
    /// This build's program as pinned under `pin_dir`, when it is there
    /// and uses the maps pinned there (`None` otherwise: not pinned yet, or
    /// pinned before its maps were replaced).
    pub fn pinned(pin_dir: &Path, maps: &Maps) -> Result<Option<Self>> {
        let mut handles = Vec::with_capacity(3);
        for hook in Hook::ENTRY_POINTS {
            let path = program_pin(pin_dir, hook, PROGRAM_BUILD_ID);
            let handle = match ProgramHandle::from_pinned_path(&path) {
                Ok(handle) => handle,
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::bpf(format!("open pinned program {}", path.display()), e)),
            };
            if handle.name() != hook.program_name() {
                return Ok(None);
            }
            // From-fabric uses a subset of from-pod's maps (and was
            // pinned with it, from one load): from-pod's check covers it.
            if hook != Hook::FromFabric && !program_info(handle.id())?.foreign_maps(maps)?.is_empty() {
                return Ok(None);
            }
            handles.push(handle);
        }
        let from_fabric = handles.pop().expect("three handles");
        let to_pod = handles.pop().expect("three handles");
        let from_pod = handles.pop().expect("three handles");
        Ok(Some(Self {
            from_pod,
            to_pod,
            from_fabric,
        }))
    }

    /// The program every pod of `pin_dir` shares: this build's, pinned
    /// there. The first caller loads (and the kernel verifies) it and pins
    /// it; later callers attach the pinned one, which costs no load. A
    /// build with another program replaces the pins (pods attached to the
    /// old program keep running it until they are attached again).
    /// Concurrent callers end with one pinned program.
    pub fn shared(pin_dir: &Path) -> Result<(Self, Provenance)> {
        if let Ok(maps) = Maps::open(pin_dir) {
            if let Some(program) = Self::pinned(pin_dir, &maps)? {
                return Ok((program, Provenance::Pinned));
            }
        }
        loader::load(pin_dir, |skel| {
            // Under the pin directory's lock: another caller may have
            // pinned it while this one waited.
            let maps = Maps::open(pin_dir)?;
            if let Some(program) = Self::pinned(pin_dir, &maps)? {
                return Ok((program, Provenance::Pinned));
            }
            let program = Self::keep(skel)?;
            program.pin(pin_dir)?;
            // Records written before config_map had the flag (a build
            // that always looked local_map up) deliver again.
            maps.local.refresh_flag()?;
            // Label policy's flags say which shapes of rules exist (a
            // build before label_exact_map set it to 1 alone).
            maps.refresh_label_policy()?;
            Ok((program, Provenance::Loaded))
        })
    }

    /// Pins every entry point under this build's names, replacing stale
    /// pins of those names, then removes other builds' program pins.
    fn pin(&self, pin_dir: &Path) -> Result<()> {
        for hook in Hook::ENTRY_POINTS {
            let path = program_pin(pin_dir, hook, PROGRAM_BUILD_ID);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove stale pin {}", path.display()), e)),
            }
            self.handle(hook)
                .pin(&path)
                .map_err(|e| Error::bpf(format!("pin the program at {}", path.display()), e))?;
        }
        for (_, build, path) in program_pins(pin_dir) {
            if build != PROGRAM_BUILD_ID {
                std::fs::remove_file(&path).map_err(|e| {
                    Error::io(format!("remove the older program's pin {}", path.display()), e)
                })?;
            }
        }
        Ok(())
    }

    fn keep(skel: &crate::skel::EbpfcniSkel<'_>) -> Result<Self> {
        let keep = |prog| ProgramHandle::try_from(prog).map_err(|e| Error::bpf("keep the loaded program", e));
        Ok(Self {
            from_pod: keep(&skel.progs.ebpfcni_frompod)?,
            to_pod: keep(&skel.progs.ebpfcni_topod)?,
            from_fabric: keep(&skel.progs.ebpfcni_fabric)?,
        })
    }

    /// Loads the program with its maps pinned under `pin_dir`: pins that
    /// exist are reused (after checking their layout), missing ones are
    /// created and pinned. A fresh config map starts at trace level "drops".
    /// Concurrent loaders serialise on a lock of `pin_dir`.
    /// The program itself is not pinned (see [`Program::shared`]).
    pub fn load(pin_dir: &Path) -> Result<Self> {
        loader::load(pin_dir, Self::keep)
    }

    /// Whether the program would load against the maps pinned under
    /// `pin_dir`, changing nothing (see [`crate::object`]): for readiness
    /// probes.
    pub fn verify(pin_dir: &Path) -> Result<()> {
        loader::verify(pin_dir)
    }

    fn handle(&self, hook: Hook) -> &ProgramHandle {
        match hook {
            Hook::FromPod => &self.from_pod,
            Hook::ToPod => &self.to_pod,
            Hook::FromFabric => &self.from_fabric,
        }
    }

    /// The kernel's id of the entry point for `hook`.
    pub fn id(&self, hook: Hook) -> u32 {
        self.handle(hook).id()
    }

    pub fn as_fd(&self, hook: Hook) -> BorrowedFd<'_> {
        self.handle(hook).as_fd()
    }

    /// Runs the entry point for `hook` once per repeat on `frame` through
    /// BPF_PROG_TEST_RUN. `ctx` sets the `__sk_buff` fields a caller may set.
    pub fn test_run(
        &self,
        hook: Hook,
        frame: &[u8],
        ctx: Option<&TestContext>,
        repeat: u32,
    ) -> Result<TestRun> {
        self.run_test(hook, frame, ctx, repeat, None, None)
    }

    /// [`Program::test_run`] once, with the frame as the program left it
    /// (rewritten for local delivery, say).
    pub fn test_run_output(
        &self,
        hook: Hook,
        frame: &[u8],
        ctx: Option<&TestContext>,
    ) -> Result<(TestRun, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 256];
        let run = self.run_test(hook, frame, ctx, 1, Some(&mut out), None)?;
        Ok((run, out))
    }

    /// Judges `frame` at `hook` on the host veth `ifindex` (which must
    /// exist in the caller's network namespace; 1, lo, for none) against
    /// the live maps, as the program judges a real packet, but writing no
    /// state: no connection tracked or refreshed, no fragment recorded, no
    /// counter, event or trace line (the explain marker, ebpfcni.h). The
    /// program says what it decided. `None` when it said nothing (a frame
    /// that is not IPv4, or a program without explain).
    pub fn explain(&self, hook: Hook, frame: &[u8], ifindex: u32) -> Result<Option<Explained>> {
        let ctx = TestContext {
            ifindex,
            ingress_ifindex: 0,
        };
        let mut cb = [EXPLAIN_MAGIC[0], EXPLAIN_MAGIC[1], 0, 0, 0];
        let run = self.run_test(hook, frame, Some(&ctx), 1, None, Some(&mut cb))?;
        if cb[..2] == EXPLAIN_MAGIC[..] {
            return Ok(None);
        }
        let [word, src_id, dst_id, egress_policy, ingress_policy] = cb;
        let [verdict, reason, pass_kind, label] = word.to_le_bytes();
        let verdict = match types::ebpfcni_verdict(verdict) {
            types::ebpfcni_verdict::EBPFCNI_VERDICT_DROP => Verdict::Drop,
            types::ebpfcni_verdict::EBPFCNI_VERDICT_AUDIT => Verdict::Audit,
            _ => Verdict::Pass,
        };
        Ok(Some(Explained {
            tc_verdict: run.verdict,
            verdict,
            reason: (verdict != Verdict::Pass)
                .then(|| crate::maps::drop_reason_name(types::ebpfcni_drop_reason(reason.into())))
                .flatten(),
            pass_kind: PassKind::from_raw(pass_kind),
            src_id,
            dst_id,
            label: LabelDecision::from_raw(label, egress_policy, ingress_policy),
        }))
    }

    fn run_test(
        &self,
        hook: Hook,
        frame: &[u8],
        ctx: Option<&TestContext>,
        repeat: u32,
        out: Option<&mut Vec<u8>>,
        cb: Option<&mut [u32; 5]>,
    ) -> Result<TestRun> {
        // The kernel rejects a context whose reserved bytes (padding
        // included) are not zero: start from all-zero bytes, set fields in place.
        // SAFETY: __sk_buff and bpf_test_run_opts are plain C structs for
        // which all-zero bytes are valid.
        let mut skb: types::__sk_buff = unsafe { std::mem::zeroed() };
        let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
        opts.sz = size_of::<libbpf_sys::bpf_test_run_opts>() as _;
        opts.data_in = frame.as_ptr().cast();
        opts.data_size_in = frame.len() as u32;
        if let Some(ctx) = ctx {
            skb.ifindex = ctx.ifindex;
            skb.ingress_ifindex = ctx.ingress_ifindex;
        }
        if let Some(cb) = cb.as_deref() {
            skb.cb = *cb;
        }
        // The context comes back (cb[] as the program left it) when asked.
        let mut skb_out: types::__sk_buff = skb;
        if ctx.is_some() || cb.is_some() {
            opts.ctx_in = (&skb as *const types::__sk_buff).cast();
            opts.ctx_size_in = size_of::<types::__sk_buff>() as u32;
        }
        if cb.is_some() {
            opts.ctx_out = (&mut skb_out as *mut types::__sk_buff).cast();
            opts.ctx_size_out = size_of::<types::__sk_buff>() as u32;
        }
        opts.repeat = repeat as i32;
        let mut out = out;
        if let Some(o) = out.as_deref_mut() {
            opts.data_out = o.as_mut_ptr().cast();
            opts.data_size_out = o.len() as u32;
        }
        // SAFETY: opts points at live buffers for the duration of the call.
        let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(self.as_fd(hook).as_raw_fd(), &mut opts) };
        if rc != 0 {
            return Err(Error::bpf(
                "BPF_PROG_TEST_RUN",
                libbpf_rs::Error::from_raw_os_error(-rc),
            ));
        }
        if let Some(o) = out {
            o.truncate(opts.data_size_out as usize);
        }
        if let Some(cb) = cb {
            *cb = skb_out.cb;
        }
        Ok(TestRun {
            verdict: opts.retval as i32,
            duration: Duration::from_nanos(opts.duration.into()),
        })
    }
}

/// What a loaded program is, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramInfo {
    pub id: u32,
    pub name: String,
    /// Ids of the maps the program uses (including its private .rodata).
    pub map_ids: Vec<u32>,
    /// The kernel's hash of its instructions (bpftool's "tag"): two loads
    /// of the same build's entry point have the same.
    pub tag: [u8; 8],
}

impl ProgramInfo {
    /// The maps this program uses under the name of a pinned map but that
    /// are not the map pinned in `maps` (a program loaded against other
    /// pins, or before a pin was replaced): (which, the id it uses). Empty
    /// when the program uses the pinned maps. Each entry point uses the
    /// maps its own steps need (to-pod has no source check), so this asks
    /// about the maps the program uses, not for every pinned one.
    pub fn foreign_maps(&self, maps: &Maps) -> Result<Vec<(PinnedMap, u32)>> {
        let pinned = maps.ids()?;
        let mut foreign = Vec::new();
        for &id in &self.map_ids {
            let handle =
                MapHandle::from_map_id(id).map_err(|e| Error::bpf(format!("open map id {id}"), e))?;
            let name = handle.name().to_string_lossy().into_owned();
            let Some(index) = PinnedMap::ALL.iter().position(|m| m.name() == name) else {
                continue; // the program's own .rodata and such
            };
            if pinned[index] != id {
                foreign.push((PinnedMap::ALL[index], id));
            }
        }
        Ok(foreign)
    }

    /// Whether the program uses `map`'s pinned instance.
    pub fn uses(&self, maps: &Maps, map: PinnedMap) -> Result<bool> {
        let index = PinnedMap::ALL.iter().position(|m| *m == map).expect("listed");
        Ok(self.map_ids.contains(&maps.ids()?[index]))
    }
}

/// Looks up a loaded program by id (as returned by [`crate::attachment`]).
pub fn program_info(id: u32) -> Result<ProgramInfo> {
    let handle =
        ProgramHandle::from_prog_id(id).map_err(|e| Error::bpf(format!("open program id {id}"), e))?;
    let fd = handle.as_fd().as_raw_fd();
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // First call: learn how many map ids there are.
    // SAFETY: info is a live, correctly sized bpf_prog_info.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    if rc != 0 {
        return Err(Error::bpf(
            format!("read info of program {id}"),
            libbpf_rs::Error::from_raw_os_error(-rc),
        ));
    }
    let mut map_ids = vec![0u32; info.nr_map_ids as usize];
    let mut with_maps = libbpf_sys::bpf_prog_info {
        nr_map_ids: map_ids.len() as u32,
        map_ids: map_ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: map_ids has room for nr_map_ids entries.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut with_maps, &mut len) };
    if rc != 0 {
        return Err(Error::bpf(
            format!("read map ids of program {id}"),
            libbpf_rs::Error::from_raw_os_error(-rc),
        ));
    }
    map_ids.truncate(with_maps.nr_map_ids as usize);
    Ok(ProgramInfo {
        id,
        name: handle.name().to_string_lossy().into_owned(),
        map_ids,
        tag: info.tag,
    })
}
