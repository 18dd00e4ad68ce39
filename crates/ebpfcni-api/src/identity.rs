//! The numbers below [`FIRST_LABEL_IDENTITY`] are reserved, as Cilium
//! reserves them; the agent gives label sets numbers from 256 up.

/// The first number the agent gives a label set.
pub const FIRST_LABEL_IDENTITY: u32 = 256;

/// A reserved identity: its number and what it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedIdentity {
    pub id: u32,
    pub name: &'static str,
    pub meaning: &'static str,
}

/// Reserved identities with a meaning today (Cilium's numbers). Every other
/// number below 256 is reserved for later use.
pub const RESERVED: [ReservedIdentity; 4] = [
    ReservedIdentity {
        id: 1,
        name: "host",
        meaning: "the node itself",
    },
    ReservedIdentity {
        id: 2,
        name: "world",
        meaning: "everything outside the cluster (e.g. a 0.0.0.0/0 prefix)",
    },
    ReservedIdentity {
        id: 5,
        name: "init",
        meaning: "a container whose labels are not known yet: policy allows it nothing",
    },
    ReservedIdentity {
        id: 6,
        name: "remote-node",
        meaning: "the other nodes of a cluster",
    },
];

impl ReservedIdentity {
    pub fn by_id(id: u32) -> Option<&'static ReservedIdentity> {
        RESERVED.iter().find(|r| r.id == id)
    }

    pub fn by_name(name: &str) -> Option<&'static ReservedIdentity> {
        RESERVED.iter().find(|r| r.name == name)
    }

    pub const INIT: u32 = 5;
}
