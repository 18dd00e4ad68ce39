//! The ebpfcni datapath: the only code that knows about bpffs, pin paths,
//! map layouts and attaching.
//!
//! - [`object`] holds the table of pinned maps ([`PinnedMap`]) and their
//!   layouts; `loader` loads the embedded BPF object against a pin
//!   directory, creating missing pins and migrating older layouts (`migrate`).
//! - [`Program`] is the identity-policy tc program (compiled from
//!   `bpf/kernel/ebpfcni.bpf.c` and embedded at build time), loaded against
//!   the pinned maps; [`tc`] attaches it to an interface.
//! - [`Maps`] opens (or creates) the pinned maps and offers typed
//!   operations: [`EndpointMap`], [`PolicyMap`], [`ConfigMap`], [`DropCounters`].
//! - Shared layouts come from `bpf/include/ebpfcni.h` through the BTF of the
//!   compiled object ([`types`]); the policy precedence is documented there.
//!
//! - [`netlink`] is a small rtnetlink client (links, addresses, routes),
//!   shared by the CNI plugin and the CLIs; [`PodAttachment`] is the CNI
//!   attachment a host veth's alias records.
//!
//! Imports run one way, from the bottom up: `pinned` (the maps' names),
//! `error`; `bpffs`, `run_dir`, `identity`; `skel` and `object` (the
//! compiled object); `migrate`; `loader`; `maps` (inside it, `rule` below
//! `policy` and `ports`, one map each, below `rules`, which spans both;
//! `journal` below every change); `program`; then `tc`, `events` and
//! `reattach`; `netns`, `attachments`, `local_maps` and `netlink` beside them. Nothing
//! lower imports anything higher.

mod attachments;
pub mod bpffs;
mod error;
pub mod events;
pub mod frames;
mod identity;
mod loader;
mod local_maps;
mod maps;
mod migrate;
pub mod netlink;
mod netns;
pub mod object;
mod pinned;
mod program;
mod reattach;
mod run_dir;
mod skel;
pub mod tc;

/// Where libbpf's own messages go: to `sink` (warnings and worse), or
/// nowhere with `None`. Without a call they go to stderr, which a CLI's
/// user should not see before the error that explains them.
/// What libbpf says of clsact operations that the library treats as
/// success or absence is always left out: "Exclusivity flag on" (the
/// interface already has its clsact qdisc), "Parent Qdisc doesn't exists"
/// and "Invalid handle" (no clsact qdisc or filter of ours to read back or
/// remove: an interface attached with tcx, or with nothing yet).
pub fn set_libbpf_log(sink: Option<fn(&str)>) {
    static SINK: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();
    const EXPECTED: [&str; 3] = [
        "Exclusivity flag on",
        "Parent Qdisc doesn't exists",
        "Invalid handle",
    ];
    fn forward(_: libbpf_rs::PrintLevel, msg: String) {
        if let Some(sink) = SINK.get() {
            if !EXPECTED.iter().any(|m| msg.contains(m)) {
                sink(msg.trim_end());
            }
        }
    }
    match sink {
        None => libbpf_rs::set_print(None),
        Some(sink) => {
            let _ = SINK.set(sink);
            libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Warn, forward)))
        }
    };
}

/// Rust types generated from the BTF of `bpf/include/ebpfcni.h`.
pub use skel::types;

pub use attachments::{AttachmentMap, PodAttachment, ALIAS_MAX, ALIAS_PREFIX};
pub use bpffs::DEFAULT_PIN_DIR;
pub use error::{Error, Result};
pub use identity::{
    parse_endpoint_ip, parse_prefix, quote_input, Identity, ParseEndpointIpError, ParseIdentityError,
    ParsePrefixError, PolicyRule,
};
pub use local_maps::LocalMap;
pub use maps::{
    drop_reason_name, drop_reasons, ConfigMap, Connection, ConntrackMap, CtState, CtTimeouts, Datagram,
    DropCounters, EndpointMap, EventLevel, FragmentMap, IdentityAddr, IdentityChange, IdentitySource,
    InterfaceMap, Isolation, LabelIndex, LabelKind, LabelPolicyMap, LabelRule, LocalDelivery,
    LocalDeliveryMap, Maps, NotifyCounters, NotifyCounts, PolicyIndex, PolicyMap, PortPolicyMap, PrefixMap,
    Protocol, RateLimit, RawRule, Recovered, Rule, RuleChange, Selector, Stored, StoredIdentity, StoredRule,
    TraceLevel, ANY_PEER, INTERFACE_ADDRS,
};
pub use netns::{bind_netns, check_netns, netns_binding, NetnsId};
pub use object::PinnedMap;
pub use program::{
    program_info, program_pin, program_pins, Explained, Hook, Program, ProgramInfo, Provenance, TestContext,
    TestRun, PROGRAM_BUILD_ID, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
};
pub use reattach::{reattach, Reattached};
pub use run_dir::{fnv1a, ipam_versions_file, RUN_DIR};
pub use tc::{attachment, detach, fabric_attachment, AttachMode, Attachment, TC_HANDLE, TC_PRIORITY};
