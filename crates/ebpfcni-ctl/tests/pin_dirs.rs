//! How the CLIs treat the pin directory they are given: however its path is
//! written it is one directory (one monitor), an unusable one is bad input,
//! and a read-only command never creates what is missing there.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{fails, json, ok, Ctl, ENDPOINTCTL, POLICYCTL};
use ebpfcni_testutil::require_root;

/// A second monitor on the same directory written otherwise (`X/`, `X//`)
/// is refused; the event level the first set is restored when it stops.
#[test]
fn one_monitor_per_directory_however_its_path_is_written() {
    require_root!();
    let ctl = Ctl::new("pd_monitor");
    ok(ctl.policyctl(&["flush", "-q"]));
    let level = || json(&ok(ctl.policyctl(&["events", "-o", "json"])))["event_level"].clone();
    assert_eq!(level(), "drops");

    let mut first = Command::new(POLICYCTL)
        .args([
            "--pin-dir",
            ctl.pin_dir(),
            "monitor",
            "--level",
            "all",
            "--duration",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start policyctl monitor");
    let (tx, rx) = mpsc::channel();
    let stderr = first.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("watching") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = first.kill();
                let _ = first.wait();
                panic!("the first monitor never started");
            }
        }
    }
    let refused = (|| {
        for spelling in [format!("{}/", ctl.pin_dir()), format!("{}//", ctl.pin_dir())] {
            let out = Command::new(POLICYCTL)
                .args([
                    "--pin-dir",
                    &spelling,
                    "monitor",
                    "--level",
                    "flows",
                    "--duration",
                    "2",
                ])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.code() != Some(1) || !err.contains(&format!("another reader (pid {})", first.id()))
            {
                return Err(format!("{spelling}: {:?} {err}", out.status.code()));
            }
        }
        Ok(())
    })();
    let during = level();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = first.wait().unwrap();
    refused.unwrap();
    assert_eq!(during, "all", "the second monitor changed nothing");
    assert!(status.success(), "{status}");
    assert_eq!(level(), "drops", "the first monitor's level was undone");
}

/// A map pin removed by hand: commands that only read name it (exit 4) and
/// do not pin it afresh; the next change does.
#[test]
fn a_read_only_command_does_not_recreate_a_removed_map() {
    require_root!();
    let ctl = Ctl::new("pd_removed");
    ok(ctl.endpointctl(&["add", "-q", "--ip", "10.13.0.2", "--identity", "7"]));
    let endpoints = ctl.pin.path().join("endpoint_map");
    std::fs::remove_file(&endpoints).unwrap();
    for (bin, args) in [
        (ENDPOINTCTL, &["list"][..]),
        (ENDPOINTCTL, &["get", "--ip", "10.13.0.2"][..]),
        (POLICYCTL, &["list"][..]),
        (POLICYCTL, &["stats"][..]),
        (POLICYCTL, &["trace"][..]),
    ] {
        let out = Command::new(bin)
            .args(["--pin-dir", ctl.pin_dir()])
            .args(args)
            .output()
            .unwrap();
        let err = fails(out, 6);
        assert!(
            err.contains("the map endpoint_map is missing in") && err.contains("creates nothing"),
            "{args:?}: {err}"
        );
        assert!(!endpoints.exists(), "{args:?} pinned endpoint_map again");
    }
    ok(ctl.endpointctl(&["add", "-q", "--ip", "10.13.0.2", "--identity", "7"]));
    assert!(endpoints.exists(), "a change pins it afresh");
}

/// A --pin-dir that can never hold the maps is bad input (exit 2) for
/// commands that read as well as for those that write, named once.
#[test]
fn an_unusable_pin_dir_is_bad_input_for_every_command() {
    require_root!();
    let long = format!("/sys/fs/bpf/{}", "n".repeat(300));
    for (dir, why) in [
        ("sys/fs/bpf/x", "not an absolute path"),
        ("/etc/hostname/x", "/etc/hostname is not a directory"),
        (long.as_str(), "is 300 bytes long"),
    ] {
        for (bin, args) in [
            (ENDPOINTCTL, &["list"][..]),
            (ENDPOINTCTL, &["add", "--ip", "10.13.0.2", "--identity", "7"][..]),
            (POLICYCTL, &["list"][..]),
            (POLICYCTL, &["pins"][..]),
            (POLICYCTL, &["trace"][..]),
            (POLICYCTL, &["monitor", "--duration", "1"][..]),
        ] {
            let out = Command::new(bin)
                .args(["--pin-dir", dir])
                .args(args)
                .output()
                .unwrap();
            let err = fails(out, 2);
            assert!(
                err.contains("invalid pin directory") && err.contains(why),
                "{dir} {args:?}: {err}"
            );
            assert_eq!(err.matches(dir).count(), 1, "named once: {err}");
        }
    }
}

/// stderr that cannot be written (/dev/full) changes no exit code and
/// panics nowhere.
#[test]
fn a_full_stderr_keeps_the_exit_codes() {
    require_root!();
    let ctl = Ctl::new("pd_full");
    let run = |bin: &str, args: &[&str]| {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        Command::new(bin)
            .args(["--pin-dir", ctl.pin_dir()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(full)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(run(POLICYCTL, &["list"]), Some(1), "nothing pinned");
    assert_eq!(run(POLICYCTL, &["allow", "--src", "0", "--dst", "1"]), Some(2));
    assert_eq!(run(POLICYCTL, &["--no-such-flag"]), Some(2));
    assert_eq!(run(POLICYCTL, &["allow", "--src", "1", "--dst", "2"]), Some(0));
    assert_eq!(run(ENDPOINTCTL, &["list", "-o", "json"]), Some(0));
    assert_eq!(run(POLICYCTL, &["monitor", "--duration", "1"]), Some(0));
    assert_eq!(run(POLICYCTL, &["list", "-o", "prometheus"]), Some(2));
}

/// Contradicting entries of an apply file are refused with both places
/// named, and nothing is written; exact repeats are counted once.
#[test]
fn contradicting_apply_entries_are_refused_and_repeats_counted_once() {
    require_root!();
    let ctl = Ctl::new("pd_dups");
    let err = fails(
        ctl.endpointctl_stdin(
            &["apply", "-f", "-"],
            "10.13.0.2 100\n10.13.0.3 5\n10.13.0.2 200\n",
        ),
        2,
    );
    assert!(
        err.contains("10.13.0.2 is given two identities, 100 and 200 (line 1 and line 3)"),
        "{err}"
    );
    let err = fails(
        ctl.endpointctl_stdin(
            &["apply", "-f", "-"],
            r#"[{"ip": "10.13.0.2", "identity": 1, "identity": 2}]"#,
        ),
        2,
    );
    assert!(err.contains("\"identity\" is given twice"), "{err}");
    let err = fails(ctl.policyctl_stdin(&["apply", "-f", "-"], "src=31 32 33\n"), 2);
    assert!(
        err.contains("line 1: the source identity is given twice (31 and 32)"),
        "{err}"
    );
    let err = fails(
        ctl.policyctl_stdin(&["apply", "-f", "-"], "51 52\n51 52 stateful\n"),
        2,
    );
    assert!(
        err.contains("the rule 51 -> 52 is listed both stateful and not (line 1 and line 2)"),
        "{err}"
    );
    assert!(!ctl.pin.path().join("policy_map").exists(), "nothing was created");
    ok(ctl.policyctl(&["allow", "-q", "--src", "51", "--dst", "52"]));
    let out = ok(ctl.policyctl_stdin(
        &["apply", "-f", "-", "-q"],
        "51 52 stateful\n51 52 stateful\n1 2\n",
    ));
    assert!(
        out.contains(
            "applied 3 rules from stdin (1 listed more than once): 1 new, 0 already allowed, 1 changed"
        ),
        "{out}"
    );
    let out = ok(ctl.endpointctl_stdin(&["apply", "-f", "-", "-q"], "10.13.0.2 100\n10.13.0.2 100\n"));
    assert!(
        out.contains("applied 2 identities from stdin (1 listed more than once): 1 new"),
        "{out}"
    );
}
