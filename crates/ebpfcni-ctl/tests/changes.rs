//! Changes of the maps against each other and against SIGKILL: every change
//! takes the pin directory's lock, and an apply killed part way leaves the
//! old rules or the new ones, never a mix.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, Ctl, ENDPOINTCTL, POLICYCTL};
use ebpfcni_testutil::require_root;

/// Two `allow`s of overlapping port ranges of one pair, run at once: the
/// second to take the lock sees the first's rule and is refused, so
/// exactly one lands, every time.
#[test]
fn concurrent_overlapping_allows_land_exactly_once() {
    require_root!();
    let ctl = Ctl::new("chg_race");
    ok(ctl.policyctl(&["flush", "-q"]));
    for round in 0..40 {
        let spawn = |ports: &str| {
            Command::new(POLICYCTL)
                .args([
                    "--pin-dir",
                    ctl.pin_dir(),
                    "-q",
                    "allow",
                    "--src",
                    "1",
                    "--dst",
                    "2",
                ])
                .args(["--port", ports])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn policyctl")
        };
        let (a, b) = (spawn("8000-8080"), spawn("8050-8100"));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = [a.status.code(), b.status.code()];
        let rules = ctl.rules();
        let rules = rules.as_array().unwrap();
        assert_eq!(rules.len(), 1, "round {round}: {rules:?} (exit codes {codes:?})");
        let mut sorted = codes;
        sorted.sort();
        assert_eq!(
            sorted,
            [Some(0), Some(1)],
            "round {round}: one allowed, one refused"
        );
        let refused = if codes[0] == Some(1) { &a } else { &b };
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("overlaps"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
        ok(ctl.policyctl(&["flush", "-q"]));
    }
}

/// A canonical form of a `list -o json` array, to compare states.
fn state(listing: &serde_json::Value) -> BTreeSet<String> {
    listing
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|v| v.to_string())
        .collect()
}

/// Runs `bin apply -f file` under a SIGKILL `delay` after its start; true
/// when the kill came before it ended.
fn killed_apply(bin: &str, pin_dir: &str, file: &Path, delay: Duration) -> bool {
    let mut child = Command::new(bin)
        .args(["--pin-dir", pin_dir, "-q", "apply", "-f"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn apply");
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().unwrap();
    status.signal() == Some(9)
}

/// How long a whole apply of `file` takes, onto `old`.
fn timed_apply(bin: &str, pin_dir: &str, file: &Path) -> Duration {
    let start = Instant::now();
    let out = Command::new(bin)
        .args(["--pin-dir", pin_dir, "-q", "apply", "-f"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    start.elapsed()
}

/// The fractions of a whole apply's time at which it is killed.
const KILL_AT: [f64; 7] = [0.05, 0.15, 0.3, 0.45, 0.6, 0.8, 0.95];

/// Where a kill landed, as the next command found it.
enum Landed {
    /// Before any write: the old state, nothing to undo.
    Early,
    /// Among the writes: the next command undid them.
    AmongWrites,
    /// After the last write, or not killed at all: the new state.
    Late,
}

/// Where to kill an apply next: the fractions of [`KILL_AT`], then, until a
/// kill lands among the writes, a bisection between the latest kill that
/// came too early and the earliest that came too late. On a busy machine
/// the time before the first write changes from one run to the next (it did:
/// fifteen fixed fractions once all missed it), so feedback finds it where
/// fixed fractions may not.
struct KillPoints {
    fixed: std::array::IntoIter<f64, 7>,
    early: f64,
    late: f64,
    bisections: u32,
}

impl KillPoints {
    fn new() -> Self {
        Self {
            fixed: KILL_AT.into_iter(),
            early: 0.0,
            late: 2.0,
            bisections: 0,
        }
    }

    /// The next fraction to kill at; `None` once every fixed one ran and a
    /// kill landed among the writes (or 20 bisections did not find them).
    fn next(&mut self, undone: usize) -> Option<f64> {
        if let Some(f) = self.fixed.next() {
            return Some(f);
        }
        if undone > 0 || self.bisections >= 20 {
            return None;
        }
        self.bisections += 1;
        Some((self.early + self.late) / 2.0)
    }

    fn landed(&mut self, fraction: f64, landed: Landed) {
        match landed {
            Landed::Early => self.early = self.early.max(fraction),
            Landed::Late => self.late = self.late.min(fraction),
            Landed::AmongWrites => {}
        }
    }
}

/// Where a kill landed: `killed` (the process died of it), whether the next
/// command undid something, and whether it found the old state.
fn landed(killed: bool, undid: bool, found_old: bool) -> Landed {
    match (killed, undid, found_old) {
        (true, true, _) => Landed::AmongWrites,
        (true, false, true) => Landed::Early,
        _ => Landed::Late,
    }
}

/// `policyctl apply` of 20,000 port rules (some stateful) and 5,000 pair
/// rules, killed with SIGKILL at several points: the next command finds the
/// old rules or all of the new ones, never a mix, and the flags that tell
/// the program to look at port rules and to track connections match them.
#[test]
fn a_killed_policy_apply_leaves_the_old_rules_or_the_new_ones() {
    require_root!();
    let ctl = Ctl::new("chg_kill_pol");
    // Pair rules only: the old state has the port rules' flag off.
    let old: String = (0..300).map(|i| format!("{} {}\n", 900 + i, 901 + i)).collect();
    let mut new = String::new();
    for i in 0..20_000 {
        let stateful = if i % 7 == 0 { " stateful" } else { "" };
        writeln!(
            new,
            "{} {} port={}{stateful}",
            i / 200 + 1,
            i % 200 + 1000,
            i % 60_000 + 1
        )
        .unwrap();
    }
    for i in 0..5_000 {
        writeln!(new, "{} {}", i / 100 + 5000, i % 100 + 1).unwrap();
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(new.as_bytes()).unwrap();
    let reset = || {
        ok(ctl.policyctl(&["flush", "-q"]));
        ok(ctl.policyctl_stdin(&["apply", "-q", "-f", "-"], &old));
    };
    reset();
    let old_state = state(&ctl.rules());
    let whole = timed_apply(POLICYCTL, ctl.pin_dir(), file.path());
    let new_state = state(&ctl.rules());
    assert_eq!(new_state.len(), 25_300);

    let (mut killed, mut undone) = (0, 0);
    let mut points = KillPoints::new();
    while let Some(fraction) = points.next(undone) {
        reset();
        let delay = whole.mul_f64(fraction);
        let this_killed = killed_apply(POLICYCTL, ctl.pin_dir(), file.path(), delay);
        killed += usize::from(this_killed);
        // The next command: any that opens the maps.
        let out = ctl.policyctl(&["list", "-o", "json"]);
        let note = String::from_utf8_lossy(&out.stderr).into_owned();
        let undid = note.contains("was undone");
        undone += usize::from(undid);
        let after = state(&common::json(&ok(out)));
        points.landed(fraction, landed(this_killed, undid, after == old_state));
        assert!(
            after == old_state || after == new_state,
            "killed after {delay:?}: {} rules, neither the old {} nor the new {}",
            after.len(),
            old_state.len(),
            new_state.len()
        );
        let maps = ebpfcni::Maps::open(ctl.pin.path()).unwrap();
        assert_eq!(
            maps.config.port_rules().unwrap(),
            after == new_state,
            "port rules are looked at exactly while there are some"
        );
        assert_eq!(
            maps.config.conntrack().unwrap(),
            after == new_state,
            "connections are tracked exactly while a rule is stateful"
        );
    }
    eprintln!("policyctl apply: {killed} of {} runs killed before the end, {undone} undone by the next command (a whole apply: {whole:?})", KILL_AT.len());
    assert!(
        killed >= KILL_AT.len() / 2 && undone >= 1,
        "the kills hit the apply: {killed} killed, {undone} undone"
    );
}

/// `endpointctl apply` of 16,000 addresses and 16,000 prefixes, killed with
/// SIGKILL at several points: the next command finds the old identities or
/// all of the new ones.
#[test]
fn a_killed_identity_apply_leaves_the_old_identities_or_the_new_ones() {
    require_root!();
    let ctl = Ctl::new("chg_kill_ids");
    let old: String = (0..200)
        .map(|i| format!("10.200.{}.{} {}\n", i / 200, i % 200 + 1, 7 + i))
        .collect();
    let mut new = String::new();
    for i in 0..16_000 {
        writeln!(new, "10.{}.{}.1 {}", i / 250, i % 250, i + 1).unwrap();
    }
    for i in 0..16_000 {
        writeln!(new, "11.{}.{}.0/24 {}", i / 250, i % 250, i + 1).unwrap();
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(new.as_bytes()).unwrap();
    let reset = || {
        ok(ctl.endpointctl(&["flush", "-q"]));
        ok(ctl.endpointctl_stdin(&["apply", "-q", "-f", "-"], &old));
    };
    reset();
    let old_state = state(&ctl.endpoints());
    let whole = timed_apply(ENDPOINTCTL, ctl.pin_dir(), file.path());
    let new_state = state(&ctl.endpoints());
    assert_eq!(new_state.len(), 32_200);

    let (mut killed, mut undone) = (0, 0);
    let mut points = KillPoints::new();
    while let Some(fraction) = points.next(undone) {
        reset();
        let delay = whole.mul_f64(fraction);
        let this_killed = killed_apply(ENDPOINTCTL, ctl.pin_dir(), file.path(), delay);
        killed += usize::from(this_killed);
        let out = ctl.endpointctl(&["list", "-o", "json"]);
        let undid = String::from_utf8_lossy(&out.stderr).contains("was undone");
        undone += usize::from(undid);
        let after = state(&common::json(&ok(out)));
        points.landed(fraction, landed(this_killed, undid, after == old_state));
        assert!(
            after == old_state || after == new_state,
            "killed after {delay:?}: {} entries, neither the old {} nor the new {}",
            after.len(),
            old_state.len(),
            new_state.len()
        );
    }
    eprintln!("endpointctl apply: {killed} of {} runs killed before the end, {undone} undone by the next command (a whole apply: {whole:?})", KILL_AT.len());
    assert!(
        killed >= KILL_AT.len() / 2 && undone >= 1,
        "the kills hit the apply: {killed} killed, {undone} undone"
    );
}

/// While `policyctl apply` writes port rules, the program is already told
/// to look at them: no port rule is ever in its map unseen.
#[test]
fn the_port_rules_flag_is_up_before_the_first_port_rule_is_visible() {
    require_root!();
    let ctl = Ctl::new("chg_flag");
    ok(ctl.policyctl(&["flush", "-q"]));
    let mut text = String::new();
    for i in 0..30_000 {
        writeln!(text, "{} {} port={}", i / 200 + 1, i % 200 + 1000, i % 60_000 + 1).unwrap();
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let maps = ebpfcni::Maps::open(ctl.pin.path()).unwrap();
    let mut child = Command::new(POLICYCTL)
        .args(["--pin-dir", ctl.pin_dir(), "-q", "apply", "-f"])
        .arg(file.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen_while_writing = 0;
    while child.try_wait().unwrap().is_none() {
        // The entries first, then the flag: a flag raised after the
        // entries became visible would read false here.
        if !maps.ports.is_empty().unwrap() {
            let flag = maps.config.port_rules().unwrap();
            if child.try_wait().unwrap().is_none() {
                assert!(
                    flag,
                    "port rules visible while the program is told there are none"
                );
                seen_while_writing += 1;
            }
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(seen_while_writing > 0, "the writing was never caught in progress");
}

/// The record of a change left behind: the next opener puts its entries
/// back and removes it; a record of maps that were created afresh since
/// (other kernel ids) is dropped unused; one that cannot be read is named.
#[test]
fn the_record_of_an_interrupted_change_is_undone_once_and_only_for_its_maps() {
    require_root!();
    let ctl = Ctl::new("chg_record");
    ok(ctl.policyctl(&["allow", "-q", "--src", "1", "--dst", "2"]));
    let meta = std::fs::metadata(ctl.pin.path()).unwrap();
    let record = Path::new(ebpfcni::RUN_DIR).join(format!(
        "change-{:x}-{:x}",
        std::os::unix::fs::MetadataExt::dev(&meta),
        std::os::unix::fs::MetadataExt::ino(&meta)
    ));
    // Removed at the end, also when the test fails.
    struct Removed<'p>(&'p Path);
    impl Drop for Removed<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _cleanup = Removed(&record);
    let ids = ebpfcni::Maps::open(ctl.pin.path()).unwrap().ids().unwrap();
    // policy_map's key of 1 -> 2: absent before the interrupted change.
    let key: Vec<u8> = [1u32, 2].iter().flat_map(|n| n.to_ne_bytes()).collect();
    let write = |ids: &[u32]| {
        let record_json = serde_json::json!({
            "format": "ebpfcni change 2",
            "ids": ids,
            "entries": [{ "map": "policy_map", "key": key, "old": null }],
        });
        std::fs::write(&record, record_json.to_string()).unwrap()
    };

    write(&(1..=ids.len() as u32).collect::<Vec<_>>());
    let out = ctl.policyctl(&["list", "-o", "json"]);
    assert_eq!(
        common::json(&ok(out)).as_array().unwrap().len(),
        1,
        "another maps' record changes nothing"
    );
    assert!(!record.exists(), "and is dropped");

    write(&ids);
    let out = ctl.policyctl(&["list", "-o", "json"]);
    assert!(
        common::stderr(&out).contains("was undone (1 entries put back)"),
        "{}",
        common::stderr(&out)
    );
    assert_eq!(
        common::json(&ok(out)).as_array().unwrap().len(),
        0,
        "the rule the change wrote is gone"
    );
    assert!(!record.exists());
    let out = ctl.policyctl(&["list", "-o", "json"]);
    assert!(!common::stderr(&out).contains("undone"), "undone once");

    std::fs::write(&record, "garbage\n").unwrap();
    let err = common::fails(ctl.policyctl(&["list"]), 1);
    assert!(
        err.contains("cannot be read; look at it, then remove it"),
        "{err}"
    );
    std::fs::remove_file(&record).unwrap();
}
