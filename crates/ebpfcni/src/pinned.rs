//! The names of the maps the program shares through a pin directory: the
//! lowest module of the library (it imports nothing of it), so that the
//! error type can name a map. What depends on the compiled object (a map's
//! capacity and layouts) is added to [`PinnedMap`] in [`crate::object`].

use std::path::{Path, PathBuf};

/// A map the program shares with userspace through the pin directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinnedMap {
    /// IPv4 address -> security identity.
    Endpoints,
    /// (source identity, destination identity) -> allow.
    Policy,
    /// Run-time settings read on every packet (the trace level).
    Config,
    /// Dropped packets per reason, per CPU.
    DropCounters,
    /// IPv4 prefix -> identity (CIDR identities), for addresses that are
    /// not endpoints.
    Prefixes,
    /// Host veth ifindex -> the pod addresses behind it (source trust),
    /// written by the CNI plugin.
    Interfaces,
    /// Port and protocol rules (an LPM trie).
    PortPolicy,
    /// Tracked connections of stateful rules (an LRU hash).
    Conntrack,
    /// The verdicts of fragmented datagrams' first fragments, for their
    /// later fragments (an LRU hash).
    Fragments,
    /// Flow events (a ring buffer), read by `policyctl monitor`.
    EventRing,
    /// The rate limits of events and trace lines, and what they let
    /// through or held back, per CPU.
    NotifyState,
    /// Identities under label policy and their isolation (precedence 8b).
    LabelIsolation,
    /// Label policy's per-direction rules (an LPM trie).
    LabelRules,
    /// Pod IPv4 address -> its host veth and MACs (local delivery),
    /// written by the CNI plugin.
    Local,
    /// Label policy's rules of one port or of everything (a hash: one
    /// lookup for the commonest rules).
    LabelExact,
}

impl PinnedMap {
    /// Every pinned map, in the order [`crate::Maps::ids`] reports them.
    pub const ALL: [PinnedMap; 15] = [
        PinnedMap::Endpoints,
        PinnedMap::Policy,
        PinnedMap::Config,
        PinnedMap::DropCounters,
        PinnedMap::Prefixes,
        PinnedMap::Interfaces,
        PinnedMap::PortPolicy,
        PinnedMap::Conntrack,
        PinnedMap::Fragments,
        PinnedMap::EventRing,
        PinnedMap::NotifyState,
        PinnedMap::LabelIsolation,
        PinnedMap::LabelRules,
        PinnedMap::Local,
        PinnedMap::LabelExact,
    ];

    /// The pin's file name under a pin directory; also the map's name in
    /// the kernel (`bpftool map show`).
    pub const fn name(self) -> &'static str {
        match self {
            PinnedMap::Endpoints => "endpoint_map",
            PinnedMap::Policy => "policy_map",
            PinnedMap::Config => "config_map",
            PinnedMap::DropCounters => "drop_counters",
            PinnedMap::Prefixes => "prefix_map",
            PinnedMap::Interfaces => "interface_map",
            PinnedMap::PortPolicy => "port_policy_map",
            PinnedMap::Conntrack => "ct_map",
            PinnedMap::Fragments => "frag_map",
            PinnedMap::EventRing => "event_ring",
            PinnedMap::NotifyState => "notify_state",
            PinnedMap::LabelIsolation => "label_isolation_map",
            PinnedMap::LabelRules => "label_rule_map",
            PinnedMap::Local => "local_map",
            PinnedMap::LabelExact => "label_exact_map",
        }
    }

    /// Where this map is pinned under `pin_dir`.
    pub fn path(self, pin_dir: &Path) -> PathBuf {
        pin_dir.join(self.name())
    }
}

impl std::fmt::Display for PinnedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
