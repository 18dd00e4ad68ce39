//! Runs the real binaries against a private pin directory.

#![allow(dead_code)] // each test file uses part of this

use std::process::{Command, Output};

use ebpfcni_testutil::{output_with_stdin, TestPinDir};
use serde_json::Value;

pub const ENDPOINTCTL: &str = env!("CARGO_BIN_EXE_endpointctl");
pub const POLICYCTL: &str = env!("CARGO_BIN_EXE_policyctl");

/// Both CLIs pointed at one private pin directory (removed on drop).
pub struct Ctl {
    pub pin: TestPinDir,
}

impl Ctl {
    pub fn new(test: &str) -> Self {
        Self {
            pin: TestPinDir::new(test),
        }
    }

    pub fn pin_dir(&self) -> &str {
        self.pin.as_str()
    }

    pub fn endpointctl(&self, args: &[&str]) -> Output {
        run_with(ENDPOINTCTL, self.pin_dir(), args, None)
    }

    pub fn policyctl(&self, args: &[&str]) -> Output {
        run_with(POLICYCTL, self.pin_dir(), args, None)
    }

    pub fn endpointctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run_with(ENDPOINTCTL, self.pin_dir(), args, Some(stdin))
    }

    pub fn policyctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run_with(POLICYCTL, self.pin_dir(), args, Some(stdin))
    }

    /// `endpointctl list -o json`, parsed.
    pub fn endpoints(&self) -> Value {
        json(&ok(self.endpointctl(&["list", "-o", "json"])))
    }

    /// `policyctl list -o json`, parsed.
    pub fn rules(&self) -> Value {
        json(&ok(self.policyctl(&["list", "-o", "json"])))
    }
}

fn run_with(bin: &str, pin_dir: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("--pin-dir").arg(pin_dir).args(args);
    match stdin {
        None => cmd.output().unwrap_or_else(|e| panic!("spawn {bin}: {e}")),
        Some(input) => output_with_stdin(&mut cmd, input.as_bytes()),
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts the exit code and returns stderr.
pub fn fails(out: Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
