//! How a command ends: the failure kinds, their exit codes, and the
//! `{bin}: error: ...` line on stderr.
//!
//! - 0: done;
//! - 1: the operation failed and nothing was changed (privilege, bpffs, an
//!   incompatible pinned map, a full map, an unreadable file);
//! - 2: bad input, nothing was changed (clap's usage errors, an invalid
//!   value, a bad line in an apply file).

use std::fmt::Display;
use std::io;
use std::process::ExitCode;

use ebpfcni::PinnedMap;

/// The operation failed; nothing was changed.
pub const EXIT_FAILURE: u8 = 1;
/// Bad input: nothing was attempted. (clap exits with 2 for its own errors too.)
pub const EXIT_USAGE: u8 = 2;

/// The exit status paragraph both binaries end their `--help` with.
#[macro_export]
macro_rules! exit_status_help {
    () => {
        "Exit status:\n  \
         0  done\n  \
         1  the operation failed, nothing was changed (not permitted, bpffs, incompatible pinned map,\n     \
            map full, unreadable file)\n  \
         2  bad input, nothing was changed (unknown or missing flag, invalid address or identity,\n     \
            bad line in an apply file)"
    };
}

/// Why a command failed, which decides its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad input found after the command line was parsed (exit 2).
    Usage(String),
    /// The operation failed; nothing was changed (exit 1).
    Runtime(String),
    /// Whoever read our stdout went away (`| head`): not worth an error.
    StdoutClosed,
}

impl Failure {
    /// "failed to {action}: {error}", with a hint for errors an operator can
    /// fix. A pin directory that can never work is bad input (exit 2); any
    /// other library error is a failed operation (exit 1).
    pub fn failed(action: impl Display, error: ebpfcni::Error) -> Self {
        let hint = match &error {
            ebpfcni::Error::MapFull { map, .. } => {
                let free = match map {
                    PinnedMap::Policy => "`policyctl deny` or `policyctl flush`",
                    PinnedMap::Endpoints => "`endpointctl del` or `endpointctl flush`",
                    _ => "removing entries",
                };
                format!("; nothing was written (make room with {free})")
            }
            _ => String::new(),
        };
        let message = format!("failed to {action}: {error}{hint}");
        match error {
            ebpfcni::Error::BadPinDir { .. } => Failure::Usage(message),
            _ => Failure::Runtime(message),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::StdoutClosed
        } else {
            Failure::Runtime(format!("failed to write output: {e}"))
        }
    }
}

pub type CmdResult = Result<(), Failure>;

/// Ends a binary: prints a failure as `{bin}: error: ...` on stderr and
/// turns it into the exit code.
pub fn finish(bin: &str, result: CmdResult) -> ExitCode {
    let (code, message) = match result {
        Ok(()) | Err(Failure::StdoutClosed) => return ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => (EXIT_USAGE, m),
        Err(Failure::Runtime(m)) => (EXIT_FAILURE, m),
    };
    eprintln!("{bin}: error: {message}");
    ExitCode::from(code)
}
