//! The plugin's errors. Inside the plugin they are typed and keep their
//! causes; only at the edge (main) does one become the spec's error JSON
//! ([`Error::to_wire`]) with its code.
//!
//! Codes below 100 are the spec's; codes from 100 up are ours:
//!
//! | code | meaning |
//! |------|---------|
//! | 1    | incompatible CNI version (cniVersion not in [`crate::versions::SUPPORTED_VERSIONS`]) |
//! | 4    | invalid environment: a CNI_* variable is missing or malformed, or CNI_NETNS is not a network namespace |
//! | 6    | the network configuration on stdin is not JSON |
//! | 7    | invalid network configuration (missing or wrong field, `pinDir` not usable, IPAM plugin not found on CNI_PATH, unusable prevResult) |
//! | 11   | try again later (also passed through from the IPAM plugin) |
//! | 50   | STATUS: the plugin is not ready (bpffs, program or IPAM plugin unusable) |
//! | 100  | BPF: the maps could not be pinned/opened or the program not loaded |
//! | 101  | netlink: creating, configuring, reading or deleting interfaces, addresses or routes failed |
//! | 102  | the IPAM plugin failed or returned an unusable result (its own code is kept when below 100) |
//! | 103  | attaching the program to the host veth failed |
//! | 104  | CHECK found the attachment different from what ADD set up; the message says what |
//! | 105  | sysctl: enabling IPv4 forwarding in the plugin's namespace failed |
//! | 106  | DEL or GC failed part way (every failure is listed) |
//! | 107  | `pinDir` serves another network namespace (the one its first pod was added in): nothing was changed |
//! | 108  | the result could not be written on stdout; ADD was rolled back (the message says whether that failed too) |
//! | 109  | agent mode: the agent refused the request, or its deletion queue could not be written (the agent unreachable is 11) |

use std::io;

use serde::Serialize;

use crate::addressing::Unusable;
use crate::netlink::NlError;

pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const INVALID_ENV: u32 = 4;
pub const DECODE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN_LATER: u32 = 11;
pub const NOT_AVAILABLE: u32 = 50;
pub const BPF: u32 = 100;
pub const NETLINK: u32 = 101;
pub const IPAM: u32 = 102;
pub const ATTACH: u32 = 103;
pub const CHECK: u32 = 104;
pub const SYSCTL: u32 = 105;
pub const TEARDOWN: u32 = 106;
pub const OTHER_NETNS: u32 = 107;
pub const RESULT_UNWRITTEN: u32 = 108;
pub const AGENT: u32 = 109;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Agent mode: the agent could not be reached (11) or refused (109).
    #[error("failed to {context}: {source}")]
    Agent {
        context: String,
        #[source]
        source: ebpfcni_api::ClientError,
    },

    /// Agent mode: a deletion could not be queued for the agent.
    #[error("failed to queue the deletion for the agent: {context}: {source}")]
    Queue {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("incompatible CNI version {version:?}")]
    IncompatibleVersion { version: String },

    /// A CNI_* variable is missing or malformed.
    #[error("{0}")]
    InvalidEnv(String),

    #[error("failed to decode network config: {0}")]
    Decode(String),

    #[error("invalid network config: {msg}")]
    InvalidConfig { msg: String, details: String },

    /// `pinDir` cannot hold the maps (not on bpffs, relative, ...).
    #[error("invalid network config: pinDir: {source}")]
    PinDir {
        #[source]
        source: ebpfcni::Error,
    },

    #[error("failed to {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: NlError,
    },

    /// The interfaces are not as the plugin needs them (a missing or
    /// foreign veth, an existing interface of the same name).
    #[error("{0}")]
    Plumbing(String),

    /// The IPAM plugin failed (with its own code when it gave a spec code)
    /// or answered with something we cannot use.
    #[error("{msg}")]
    Ipam { code: u32, msg: String, details: String },

    /// The IPAM plugin's result holds no address the pod can have.
    #[error("unusable IPAM result: {0}")]
    UnusableIpamResult(#[source] Unusable),

    /// CHECK's prevResult cannot be read.
    #[error("invalid network config: prevResult: {0}")]
    BadPrevResult(#[source] Unusable),

    #[error("failed to {context}: {source}")]
    Bpf {
        context: String,
        #[source]
        source: ebpfcni::Error,
    },

    #[error("failed to {context}: {source}")]
    Attach {
        context: String,
        #[source]
        source: ebpfcni::Error,
    },

    /// CHECK found something other than what ADD set up.
    #[error("{0}")]
    CheckFailed(String),

    #[error("failed to {context}: {source}")]
    Sysctl {
        context: String,
        #[source]
        source: io::Error,
    },

    /// DEL or GC went on after failures; each one is here.
    #[error("{command} failed: {}", list(.errors))]
    Teardown {
        command: &'static str,
        errors: Vec<Error>,
    },

    /// `pinDir` serves another network namespace: its interface records
    /// name other interfaces ([`ebpfcni::bind_netns`]).
    #[error("{0}")]
    OtherNetns(#[source] ebpfcni::Error),

    /// The result could not be written on stdout. `rollback`: for ADD,
    /// whether rolling it back worked (`None` for commands that changed
    /// nothing).
    #[error(
        "failed to write the result on stdout: {source}{}",
        match rollback {
            None => String::new(),
            Some(Ok(())) => "; the ADD was rolled back".to_string(),
            Some(Err(e)) => format!("; rolling the ADD back failed too: {e}"),
        }
    )]
    ResultUnwritten {
        #[source]
        source: io::Error,
        rollback: Option<Result<(), Box<Error>>>,
    },

    /// STATUS: not ready to add pods.
    #[error("{0}")]
    NotReady(String),
}

fn list(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(msg: impl Into<String>) -> Self {
        Error::InvalidConfig {
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// A `map_err` closure for netlink calls: "failed to {context}: {cause}".
    pub fn netlink(context: impl Into<String>) -> impl FnOnce(NlError) -> Self {
        let context = context.into();
        move |source| Error::Netlink { context, source }
    }

    /// A `map_err` closure for the library's BPF calls.
    pub fn bpf(context: impl Into<String>) -> impl FnOnce(ebpfcni::Error) -> Self {
        let context = context.into();
        move |source| match source {
            ebpfcni::Error::OtherNetns { .. } => Error::OtherNetns(source),
            source => Error::Bpf { context, source },
        }
    }

    /// An IPAM failure of ours (not the plugin's own code).
    pub fn ipam(msg: impl Into<String>) -> Self {
        Error::Ipam {
            code: IPAM,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } => INCOMPATIBLE_VERSION,
            Error::InvalidEnv(_) => INVALID_ENV,
            Error::Decode(_) => DECODE,
            Error::InvalidConfig { .. } | Error::PinDir { .. } | Error::BadPrevResult(_) => INVALID_CONFIG,
            // The kernel says busy: the runtime may retry.
            Error::Netlink { source, .. }
                if matches!(source.errno(), Some(nix::libc::EAGAIN | nix::libc::EBUSY)) =>
            {
                TRY_AGAIN_LATER
            }
            Error::Netlink { .. } | Error::Plumbing(_) => NETLINK,
            Error::Ipam { code, .. } => *code,
            Error::Agent { source, .. } => match source {
                e if e.is_unanswered() => TRY_AGAIN_LATER,
                _ => AGENT,
            },
            Error::Queue { .. } => AGENT,
            Error::UnusableIpamResult(_) => IPAM,
            Error::Bpf { .. } => BPF,
            Error::Attach { .. } => ATTACH,
            Error::CheckFailed(_) => CHECK,
            Error::Sysctl { .. } => SYSCTL,
            Error::Teardown { .. } => TEARDOWN,
            Error::OtherNetns(_) => OTHER_NETNS,
            Error::ResultUnwritten { .. } => RESULT_UNWRITTEN,
            Error::NotReady(_) => NOT_AVAILABLE,
        }
    }

    /// The spec's `details`: more context for a person.
    pub fn details(&self) -> String {
        match self {
            Error::IncompatibleVersion { .. } => {
                format!(
                    "supported versions: {}",
                    crate::versions::SUPPORTED_VERSIONS.join(", ")
                )
            }
            Error::InvalidConfig { details, .. } | Error::Ipam { details, .. } => details.clone(),
            _ => String::new(),
        }
    }

    /// The error as the spec's JSON object, in `cni_version`.
    pub fn to_wire(&self, cni_version: &str) -> WireError {
        WireError {
            cni_version: cni_version.to_string(),
            code: self.code(),
            msg: self.to_string(),
            details: self.details(),
        }
    }
}

/// The spec's error result, printed on stdout.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireError {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// The exit status for an error: its code when it fits, else 1.
pub fn exit_status(code: u32) -> i32 {
    u8::try_from(code).ok().filter(|c| *c != 0).map_or(1, i32::from)
}
