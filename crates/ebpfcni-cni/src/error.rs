//! CNI errors: what the plugin prints on stdout when it fails.
//!
//! Codes below 100 are the spec's; codes from 100 up are ours:
//!
//! | code | meaning |
//! |------|---------|
//! | 1    | incompatible CNI version (cniVersion not in [`crate::SUPPORTED_VERSIONS`]) |
//! | 4    | invalid environment: a CNI_* variable is missing or malformed, or CNI_NETNS is not a network namespace |
//! | 6    | the network configuration on stdin is not JSON |
//! | 7    | invalid network configuration (missing or wrong field, IPAM plugin not found on CNI_PATH) |
//! | 11   | try again later (also passed through from the IPAM plugin) |
//! | 50   | STATUS: the plugin is not ready (bpffs, program or IPAM plugin unusable) |
//! | 100  | BPF: the maps could not be pinned/opened or the program not loaded |
//! | 101  | netlink: creating, configuring, reading or deleting interfaces, addresses or routes failed |
//! | 102  | the IPAM plugin failed or returned an unusable result (its own code is kept when below 100) |
//! | 103  | attaching the program to the host veth failed |
//! | 104  | CHECK found the attachment different from what ADD set up; the message says what |
//! | 105  | sysctl: enabling IPv4 forwarding in the plugin's namespace failed |
//! | 106  | DEL or GC failed part way (every failure is listed) |

use serde::Serialize;

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

#[derive(Debug, Clone, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

pub type CniResult<T> = Result<T, CniError>;

/// Builds a `map_err` closure: "failed to <what>: <cause>" with `code`.
pub fn fail<E: std::fmt::Display>(code: u32, what: impl Into<String>) -> impl FnOnce(E) -> CniError {
    let what = what.into();
    move |e| CniError::new(code, format!("failed to {what}: {e}"))
}

/// The exit status for an error: its code when it fits, else 1.
pub fn exit_status(code: u32) -> i32 {
    u8::try_from(code).ok().filter(|c| *c != 0).map_or(1, i32::from)
}
