//! Changes of the maps against each other and against SIGKILL: every change
//! takes the pin directory's lock, and an apply killed part way leaves the
//! old rules or the new ones, never a mix.

mod common;

use std::process::{Command, Stdio};

use common::{ok, Ctl, POLICYCTL};
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
