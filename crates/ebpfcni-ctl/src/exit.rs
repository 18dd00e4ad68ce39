//! How a command ends: the failure kinds, their exit codes, and the
//! `{bin}: error: ...` line on stderr. What each code promises about state:
//!
//! - 0: done (a change was made and reported; or the reader of stdout went
//!   away, `| head`);
//! - 1: the operation failed and nothing was changed (privilege, bpffs, an
//!   incompatible pinned map, a full map, an unreadable file, no maps pinned
//!   for a read-only command);
//! - 2: bad input, nothing was changed (clap's usage errors, an invalid
//!   value, a bad line in an apply file, an unusable --pin-dir);
//! - 3: the change WAS made, but reporting it failed (stdout full or
//!   unwritable, or the state after the change could not be read); `list`
//!   shows where things stand;
//! - 4: refused, nothing was changed: --pin-dir serves another network
//!   namespace (its interface records name other interfaces; `reattach`);
//! - 5: refused, nothing was changed: the address is an endpoint the node
//!   agent manages (a hand entry would fight it);
//! - 6: a read-only command found some of the maps gone from a directory
//!   where the others are pinned (removed by hand); it names them and
//!   creates nothing;
//! - 7: a command that goes through the node agent (label policy: `apply`
//!   of policy documents, `get policies`, `delete`, selector rules) found no
//!   agent answering on --agent; nothing was changed;
//! - 8: `policyctl explain`: the packet would be dropped (the verdict is
//!   printed; nothing was changed).

use std::fmt::Display;
use std::io;
use std::process::ExitCode;

use ebpfcni::PinnedMap;

/// The operation failed; nothing was changed.
pub const EXIT_FAILURE: u8 = 1;
/// Bad input: nothing was attempted. (clap exits with 2 for its own errors too.)
pub const EXIT_USAGE: u8 = 2;
/// The change was made; reporting it failed.
pub const EXIT_UNREPORTED: u8 = 3;
/// --pin-dir serves another network namespace; nothing was changed.
pub const EXIT_OTHER_NETNS: u8 = 4;
/// The address is the node agent's; nothing was changed.
pub const EXIT_AGENT: u8 = 5;
/// A read-only command found maps missing beside others; nothing created.
pub const EXIT_MISSING: u8 = 6;
/// The node agent does not answer on --agent; nothing was changed.
pub const EXIT_UNREACHABLE: u8 = 7;
/// `policyctl explain`: the packet is dropped (not an error: the answer).
pub const EXIT_DROPPED: u8 = 8;

/// The exit status paragraph both binaries end their `--help` with.
#[macro_export]
macro_rules! exit_status_help {
    () => {
        "Exit status:\n  \
         0  done\n  \
         1  the operation failed, nothing was changed (not permitted, bpffs, incompatible pinned map,\n     \
            map full, unreadable file)\n  \
         2  bad input, nothing was changed (unknown or missing flag, invalid address or identity,\n     \
            bad line in an apply file, unusable --pin-dir)\n  \
         3  the change was made, but printing what was done failed (e.g. stdout full)\n  \
         4  refused, nothing was changed: --pin-dir serves another network namespace (reattach)\n  \
         5  refused, nothing was changed: the address is an endpoint the node agent manages\n  \
         6  a command that only reads found maps missing beside the others (removed by hand?);\n     \
            it names them and creates nothing\n  \
         7  the node agent does not answer on --agent (label policy goes through it), nothing was changed\n  \
         8  explain: the packet would be dropped (0: it would pass)"
    };
}

/// Why a command failed, which decides its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad input found after the command line was parsed (exit 2).
    Usage(String),
    /// The operation failed; nothing was changed (exit 1).
    Runtime(String),
    /// The change was made; reporting it failed (exit 3).
    Unreported(String),
    /// --pin-dir serves another network namespace; nothing was changed (exit 4).
    OtherNetns(String),
    /// The address is the node agent's; nothing was changed (exit 5).
    Agent(String),
    /// A read-only command found maps missing; nothing was created (exit 6).
    Missing(String),
    /// The node agent does not answer; nothing was changed (exit 7).
    Unreachable(String),
    /// Whoever read our stdout went away (`| head`): not worth an error.
    StdoutClosed,
    /// `explain`'s answer: the packet would be dropped (exit 8, no error
    /// line: the verdict was printed).
    Dropped,
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
        match error {
            // The error names the directory and what is wrong with it:
            // once is enough (the name may be 300 bytes long).
            ebpfcni::Error::BadPinDir { .. } => Failure::Usage(error.to_string()),
            ebpfcni::Error::MapsMissing { .. } => Failure::Missing(format!("failed to {action}: {error}")),
            ebpfcni::Error::OtherNetns { .. } => Failure::OtherNetns(format!("failed to {action}: {error}")),
            _ => Failure::Runtime(format!("failed to {action}: {error}{hint}")),
        }
    }
}

impl Failure {
    /// What a failure while reporting a change that was made becomes: the
    /// change stands, so it is not "nothing was changed".
    pub fn after_change(self) -> Self {
        match self {
            Failure::Usage(m)
            | Failure::Runtime(m)
            | Failure::Unreported(m)
            | Failure::OtherNetns(m)
            | Failure::Agent(m)
            | Failure::Missing(m)
            | Failure::Unreachable(m) => Failure::Unreported(format!("the change was made, but {m}")),
            Failure::StdoutClosed => Failure::StdoutClosed,
            Failure::Dropped => Failure::Dropped,
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
        Err(Failure::Dropped) => return ExitCode::from(EXIT_DROPPED),
        Err(Failure::Usage(m)) => (EXIT_USAGE, m),
        Err(Failure::Runtime(m)) => (EXIT_FAILURE, m),
        Err(Failure::Unreported(m)) => (EXIT_UNREPORTED, m),
        Err(Failure::OtherNetns(m)) => (EXIT_OTHER_NETNS, m),
        Err(Failure::Agent(m)) => (EXIT_AGENT, m),
        Err(Failure::Missing(m)) => (EXIT_MISSING, m),
        Err(Failure::Unreachable(m)) => (EXIT_UNREACHABLE, m),
    };
    say(format_args!("{bin}: error: {message}"));
    ExitCode::from(code)
}

/// Writes one line on stderr. A stderr that cannot be written (full,
/// closed) is not a reason to fail, nor to panic as `eprintln!` does: the
/// exit code still says how the command ended.
pub fn say(line: impl Display) {
    use std::io::Write;
    let _ = writeln!(io::stderr().lock(), "{line}");
}
