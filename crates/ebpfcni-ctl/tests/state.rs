//! What the exit codes promise about state, tried as a careless or hostile
//! user would: output that cannot be written, entries no tool writes
//! (identity 0, unknown actions and levels, as bpftool can leave them),
//! mistyped and unusable pin directories, huge arguments.
//!
//! 0 done; 1 failed, nothing changed; 2 bad input, nothing changed;
//! 3 the change was made but reporting it failed.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};

use common::{fails, json, ok, Ctl, ENDPOINTCTL, POLICYCTL};
use ebpfcni::PinnedMap;
use ebpfcni_testutil::{require_root, TestPinDir};
use libbpf_rs::{MapCore as _, MapFlags, MapHandle};

/// Runs `bin` on `ctl`'s pin directory with stdout on /dev/full (every
/// write fails with ENOSPC).
fn to_dev_full(bin: &str, ctl: &Ctl, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--pin-dir")
        .arg(ctl.pin_dir())
        .args(args)
        .stdout(
            File::options()
                .write(true)
                .open("/dev/full")
                .expect("open /dev/full"),
        )
        .output()
        .expect("spawn")
}

/// Writes raw bytes into a pinned map, as `bpftool map update` would.
fn poke(pin_dir: &Path, map: PinnedMap, key: &[u8], value: &[u8]) {
    MapHandle::from_pinned_path(map.path(pin_dir))
        .expect("open pinned map")
        .update(key, value, MapFlags::ANY)
        .expect("write raw entry");
}

fn endpoint_key(ip: [u8; 4]) -> [u8; 4] {
    u32::from_be_bytes(ip).to_ne_bytes()
}

fn policy_key(src: u32, dst: u32) -> Vec<u8> {
    [src.to_ne_bytes(), dst.to_ne_bytes()].concat()
}

#[test]
fn a_change_whose_report_cannot_be_written_exits_3_and_stands() {
    require_root!();
    let ctl = Ctl::new("st_full");
    let err = fails(
        to_dev_full(
            ENDPOINTCTL,
            &ctl,
            &["add", "--ip", "10.13.0.50", "--identity", "50"],
        ),
        3,
    );
    assert!(err.contains("the change was made"), "{err}");
    assert_eq!(
        ctl.endpoints(),
        serde_json::json!([{"ip": "10.13.0.50", "identity": 50}])
    );

    fails(
        to_dev_full(ENDPOINTCTL, &ctl, &["del", "-q", "--ip", "10.13.0.50"]),
        3,
    );
    assert_eq!(ctl.endpoints(), serde_json::json!([]));

    fails(
        to_dev_full(POLICYCTL, &ctl, &["allow", "--src", "1", "--dst", "2"]),
        3,
    );
    assert_eq!(ctl.rules()[0]["src"], 1);

    // A command that changes nothing and cannot print: failed, nothing changed.
    let err = fails(to_dev_full(ENDPOINTCTL, &ctl, &["list"]), 1);
    assert!(err.contains("failed to write output"), "{err}");
}

#[test]
fn an_invalid_endpoint_is_listed_counted_and_removable() {
    require_root!();
    let ctl = Ctl::new("st_bad_endpoint");
    ok(ctl.endpointctl(&["add", "-q", "--ip", "10.13.0.2", "--identity", "100"]));
    poke(
        ctl.pin.path(),
        PinnedMap::Endpoints,
        &endpoint_key([10, 13, 0, 50]),
        &0u32.to_ne_bytes(),
    );

    // Other changes succeed and say so; the state shows the invalid entry.
    let out = ok(ctl.endpointctl(&["add", "--ip", "10.13.0.3", "--identity", "101"]));
    assert!(out.contains("added 10.13.0.3 with identity 101"), "{out}");
    assert!(out.contains("3 of 16384 entries, 1 invalid"), "{out}");
    assert!(
        out.contains("10.13.0.50  0 INVALID: identity 0 is not an identity"),
        "{out}"
    );
    ok(ctl.endpointctl(&["del", "-q", "--ip", "10.13.0.3"]));

    let listed = json(&ok(ctl.endpointctl(&["list", "-o", "json"])));
    assert_eq!(
        listed,
        serde_json::json!([
            {"ip": "10.13.0.2", "identity": 100},
            {"ip": "10.13.0.50", "identity": 0, "invalid": "identity 0 is not an identity"}
        ])
    );
    let got = ok(ctl.endpointctl(&["get", "--ip", "10.13.0.50"]));
    assert!(got.contains("INVALID"), "{got}");

    // A setter overwrites it; del and flush remove it.
    let out = ok(ctl.endpointctl(&["add", "-q", "--ip", "10.13.0.50", "--identity", "7"]));
    assert!(out.contains("replaced invalid identity 0 with 7"), "{out}");
    poke(
        ctl.pin.path(),
        PinnedMap::Endpoints,
        &endpoint_key([10, 13, 0, 50]),
        &0u32.to_ne_bytes(),
    );
    let out = ok(ctl.endpointctl(&["del", "-q", "--ip", "10.13.0.50"]));
    assert!(out.contains("deleted 10.13.0.50 (invalid identity 0)"), "{out}");
    poke(
        ctl.pin.path(),
        PinnedMap::Endpoints,
        &endpoint_key([10, 13, 0, 51]),
        &0u32.to_ne_bytes(),
    );
    let out = ok(ctl.endpointctl(&["flush"]));
    assert!(out.contains("removed 2 endpoints"), "{out}");
}

#[test]
fn invalid_rules_are_listed_and_deny_removes_them() {
    require_root!();
    let ctl = Ctl::new("st_bad_rule");
    ok(ctl.policyctl(&["flush", "-q"]));
    poke(ctl.pin.path(), PinnedMap::Policy, &policy_key(0, 5), &[1]);
    poke(ctl.pin.path(), PinnedMap::Policy, &policy_key(7, 8), &[9]);

    let out = ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2"]));
    assert!(out.contains("allowed 1 -> 2"), "{out}");
    assert!(out.contains("3 of 65536 rules, 2 invalid"), "{out}");
    let listed = json(&ok(ctl.policyctl(&["list", "-o", "json"])));
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert!(
        listed[0]["invalid"].as_str().unwrap().contains("identity 0"),
        "{listed}"
    );
    assert!(
        listed[2]["invalid"].as_str().unwrap().contains("unknown action"),
        "{listed}"
    );

    // The listing cannot be applied back while it holds invalid entries.
    let err = fails(ctl.policyctl_stdin(&["apply", "-f", "-"], &listed.to_string()), 2);
    assert!(err.contains("listed as invalid"), "{err}");

    ok(ctl.policyctl(&["deny", "-q", "--src", "0", "--dst", "5"]));
    ok(ctl.policyctl(&["deny", "-q", "--src", "7", "--dst", "8"]));
    assert_eq!(
        ctl.rules(),
        serde_json::json!([{"src": 1, "dst": 2, "reverse": false}])
    );
}

#[test]
fn an_invalid_trace_level_is_shown_and_overwritten() {
    require_root!();
    let ctl = Ctl::new("st_bad_level");
    ok(ctl.policyctl(&["flush", "-q"]));
    let mut config = [0u8; std::mem::size_of::<ebpfcni::types::ebpfcni_config>()]; // struct ebpfcni_config: the trace level first
    config[..4].copy_from_slice(&99u32.to_ne_bytes());
    poke(ctl.pin.path(), PinnedMap::Config, &0u32.to_ne_bytes(), &config);
    let shown = ok(ctl.policyctl(&["trace"]));
    assert_eq!(shown.trim(), "trace level: invalid (99, traces as all)");
    let set = ok(ctl.policyctl(&["trace", "drops"]));
    assert!(set.contains("invalid (99, traces as all) -> drops"), "{set}");
    assert_eq!(ok(ctl.policyctl(&["trace"])).trim(), "trace level: drops");
}

/// A mistyped --pin-dir must not look like empty maps, and must not be
/// created by a command that only reads.
#[test]
fn read_only_commands_create_nothing_where_nothing_is_pinned() {
    require_root!();
    let top = TestPinDir::adopt(TestPinDir::unused("st_typo"));
    let typo = top.path().join("sub");
    let typo = typo.to_str().unwrap();
    for (bin, args) in [
        (ENDPOINTCTL, vec!["list"]),
        (ENDPOINTCTL, vec!["get", "--ip", "10.13.0.2"]),
        (POLICYCTL, vec!["list"]),
        (POLICYCTL, vec!["trace"]),
    ] {
        let out = Command::new(bin)
            .arg("--pin-dir")
            .arg(typo)
            .args(&args)
            .output()
            .unwrap();
        let err = fails(out, 1);
        assert!(err.contains("no ebpfcni maps are pinned"), "{args:?}: {err}");
        assert!(!top.path().exists(), "{args:?} created {}", top.path().display());
    }
}

/// Every way a pin directory can be unusable: refused with a clear error,
/// and nothing is left behind.
#[test]
fn failed_commands_leave_no_directories() {
    require_root!();
    let add = ["add", "--ip", "10.13.0.2", "--identity", "5"];
    let run = |pin_dir: &str, cwd: &Path| {
        Command::new(ENDPOINTCTL)
            .current_dir(cwd)
            .arg("--pin-dir")
            .arg(pin_dir)
            .args(add)
            .output()
            .unwrap()
    };
    let scratch = tempfile::tempdir().unwrap();

    // Not on bpffs.
    let outside = scratch.path().join("x/a/b");
    let err = fails(run(outside.to_str().unwrap(), scratch.path()), 1);
    assert!(err.contains("not on a bpf filesystem"), "{err}");
    assert!(!scratch.path().join("x").exists(), "left {}", outside.display());

    // Relative.
    let err = fails(run("rel/pins", scratch.path()), 2);
    assert!(err.contains("not an absolute path"), "{err}");
    assert!(!scratch.path().join("rel").exists());

    // A name over 255 bytes.
    let top = TestPinDir::adopt(TestPinDir::unused("st_long"));
    let long = top.path().join("n".repeat(300));
    let err = fails(run(long.to_str().unwrap(), scratch.path()), 2);
    assert!(err.contains("300 bytes long (at most 255)"), "{err}");
    assert!(!top.path().exists(), "left {}", top.path().display());
}

/// An unprivileged user gets a plain "not permitted", no libbpf chatter,
/// and nothing is created.
#[test]
fn an_unprivileged_run_says_not_permitted_and_creates_nothing() {
    require_root!();
    let top = TestPinDir::adopt(TestPinDir::unused("st_nobody"));
    let pin_dir = top.path().join("pins");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(ENDPOINTCTL)
        .arg("--pin-dir")
        .arg(&pin_dir)
        .args(["add", "--ip", "10.13.0.2", "--identity", "5"])
        .output()
        .unwrap();
    let err = fails(out, 1);
    assert!(err.contains("not permitted"), "{err}");
    assert!(!err.contains("libbpf"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!top.path().exists());
}

#[test]
fn a_directory_at_a_pin_path_is_named_as_such() {
    require_root!();
    let ctl = Ctl::new("st_dir_pin");
    std::fs::create_dir(PinnedMap::Policy.path(ctl.pin.path())).unwrap();
    let err = fails(ctl.policyctl(&["allow", "--src", "1", "--dst", "2"]), 1);
    assert!(
        err.contains("policy_map is a directory, not a pinned map"),
        "{err}"
    );
    assert!(!err.contains("run as root"), "{err}");
}

#[test]
fn a_huge_argument_is_named_once_and_shortened() {
    let huge = "1".repeat(100_000);
    for (bin, args) in [
        (ENDPOINTCTL, vec!["add", "--ip", huge.as_str(), "--identity", "5"]),
        (
            ENDPOINTCTL,
            vec!["add", "--ip", "10.13.0.2", "--identity", huge.as_str()],
        ),
        (POLICYCTL, vec!["deny", "--src", huge.as_str(), "--dst", "5"]),
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        let err = fails(out, 2);
        assert!(err.len() < 600, "{} bytes of error", err.len());
        assert_eq!(err.matches("(100000 bytes)").count(), 1, "{err}");
    }
}

#[test]
fn apply_counts_repeated_lines_apart_from_rules_already_allowed() {
    require_root!();
    let ctl = Ctl::new("st_repeat");
    ok(ctl.policyctl(&["allow", "-q", "--src", "5", "--dst", "6"]));
    let out = ok(ctl.policyctl_stdin(&["apply", "-f", "-", "-q"], "1 2\n1 2\n3 4\n5 6\n"));
    assert!(
        out.contains("applied 4 rules from stdin (1 listed more than once): 2 new, 1 already allowed"),
        "{out}"
    );
    let err = fails(ctl.policyctl_stdin(&["apply", "-f", "-"], "[[5, 6]]"), 2);
    assert!(
        err.contains(r#"expected a rule object such as {"src": 100, "dst": 200}"#),
        "{err}"
    );
}
