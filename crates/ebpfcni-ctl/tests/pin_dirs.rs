//! How the CLIs treat the pin directory they are given: however its path is
//! written it is one directory (one monitor), an unusable one is bad input,
//! and a read-only command never creates what is missing there.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{json, ok, Ctl, POLICYCTL};
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
