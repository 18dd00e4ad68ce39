//! The ebpfcni datapath: the only code that knows about bpffs, pin paths,
//! map layouts and attaching.
//!
//! - [`Program`] loads the identity-policy tc program (compiled from
//!   `bpf/kernel/ebpfcni.bpf.c` and embedded at build time) against the maps
//!   pinned under a pin directory, and attaches it to an interface.
//! - [`Maps`] opens (or creates) the pinned maps and offers typed
//!   operations: [`EndpointMap`], [`PolicyMap`], [`ConfigMap`], [`DropCounters`].
//! - Shared layouts come from `bpf/include/ebpfcni.h` through the BTF of the
//!   compiled object ([`types`]); the policy precedence is documented there.

pub mod bpffs;
mod error;
mod identity;
mod maps;
mod program;

mod skel {
    #![allow(
        clippy::all,
        clippy::pedantic,
        non_camel_case_types,
        non_snake_case,
        dead_code,
        unused_imports
    )]
    include!(concat!(env!("OUT_DIR"), "/ebpfcni.skel.rs"));
}

/// Rust types generated from the BTF of `bpf/include/ebpfcni.h`.
pub use skel::types;

pub use bpffs::DEFAULT_PIN_DIR;
pub use error::{Error, Result};
pub use identity::{parse_endpoint_ip, Identity, ParseEndpointIpError, ParseIdentityError, PolicyRule};
pub use maps::{
    drop_reason_name, ConfigMap, DropCounters, EndpointMap, Maps, PolicyMap, TraceLevel, CONFIG_MAP,
    DROP_COUNTERS, ENDPOINT_MAP, PINNED_MAPS, POLICY_MAP,
};
pub use program::{
    attachment, detach, program_info, Attachment, Program, ProgramInfo, TestContext, TestRun, PROGRAM_NAME,
    TC_ACT_OK, TC_ACT_SHOT, TC_HANDLE, TC_PRIORITY,
};
