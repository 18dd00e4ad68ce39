//! What one rule is: the protocol and ports it covers ([`Selector`]), the
//! pair it allows ([`Rule`]), and an entry as stored. Below `policy.rs` and
//! `ports.rs` (one map each) and `rules.rs` (changes across both), which
//! all build on it.

use std::fmt;
use std::str::FromStr;

use super::Stored;
use crate::error::Error;
use crate::identity::PolicyRule;
use crate::object::PinnedMap;

/// An IP protocol a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    /// Its common header starts with the ports, as UDP's does: port rules
    /// match it (NetworkPolicy's `protocol: SCTP`).
    pub const SCTP: Protocol = Protocol(132);

    /// Whether the protocol has ports a rule can name.
    pub fn has_ports(self) -> bool {
        self == Self::TCP || self == Self::UDP || self == Self::SCTP
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ICMP => f.write_str("icmp"),
            Self::TCP => f.write_str("tcp"),
            Self::UDP => f.write_str("udp"),
            Self::SCTP => f.write_str("sctp"),
            Protocol(n) => n.fmt(f),
        }
    }
}

impl FromStr for Protocol {
    type Err = String;

    /// "tcp", "udp", "sctp", "icmp", or a protocol number from 1 to 255.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tcp" => Ok(Self::TCP),
            "udp" => Ok(Self::UDP),
            "sctp" => Ok(Self::SCTP),
            "icmp" => Ok(Self::ICMP),
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => match s.parse::<u8>() {
                Ok(n) if n > 0 => Ok(Protocol(n)),
                _ => Err(format!(
                    "protocol number {} is not from 1 to 255",
                    crate::quote_input(s)
                )),
            },
            _ => Err(format!(
                "unknown protocol {}: expected tcp, udp, sctp, icmp or a number from 1 to 255",
                crate::quote_input(s)
            )),
        }
    }
}

/// Which packets of an identity pair a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// Any protocol and port: the plan's pair rule (policy_map).
    Any,
    /// Every packet of one protocol (port_policy_map).
    Protocol(Protocol),
    /// TCP or UDP destination ports `first..=last` (port_policy_map).
    Ports {
        protocol: Protocol,
        first: u16,
        last: u16,
    },
}

impl Selector {
    /// Parses `--port PORT[-LAST][/tcp|/udp]` (TCP when no protocol is
    /// given): ports from 1 to 65535.
    pub fn parse_ports(s: &str) -> std::result::Result<Self, String> {
        let bad = |why: String| format!("invalid port {}: {why}", crate::quote_input(s));
        let (ports, protocol) = match s.split_once('/') {
            None => (s, Protocol::TCP),
            Some((ports, proto)) => {
                let protocol: Protocol = proto.parse().map_err(&bad)?;
                if !protocol.has_ports() {
                    return Err(bad(format!(
                        "{protocol} has no ports; name the whole protocol instead"
                    )));
                }
                (ports, protocol)
            }
        };
        let port = |p: &str| -> std::result::Result<u16, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{p:?} is not a port number")));
            }
            match p.parse::<u32>() {
                Ok(n @ 1..=65535) => Ok(n as u16),
                _ => Err(bad(format!("{p} is not from 1 to 65535"))),
            }
        };
        let (first, last) = match ports.split_once('-') {
            None => (port(ports)?, port(ports)?),
            Some((a, b)) => (port(a)?, port(b)?),
        };
        if first > last {
            return Err(bad(format!("the range {first}-{last} is empty")));
        }
        Ok(Selector::Ports {
            protocol,
            first,
            last,
        })
    }

    /// The protocol the selector names, `None` for any.
    pub fn protocol(self) -> Option<Protocol> {
        match self {
            Selector::Any => None,
            Selector::Protocol(p) | Selector::Ports { protocol: p, .. } => Some(p),
        }
    }

    /// The ports, `None` for any.
    pub fn ports(self) -> Option<(u16, u16)> {
        match self {
            Selector::Ports { first, last, .. } => Some((first, last)),
            _ => None,
        }
    }

    /// Whether a packet of `protocol` to `dport` (0: no ports) matches.
    pub(super) fn matches(self, protocol: u8, dport: u16) -> bool {
        match self {
            Selector::Any => true,
            Selector::Protocol(p) => p.0 == protocol,
            Selector::Ports {
                protocol: p,
                first,
                last,
            } => p.0 == protocol && dport != 0 && (first..=last).contains(&dport),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Selector::Any => f.write_str("any"),
            Selector::Protocol(p) => p.fmt(f),
            Selector::Ports {
                protocol,
                first,
                last,
            } if first == last => write!(f, "{first}/{protocol}"),
            Selector::Ports {
                protocol,
                first,
                last,
            } => write!(f, "{first}-{last}/{protocol}"),
        }
    }
}

/// One allow rule: packets from identity `pair.src` to `pair.dst` that the
/// selector covers pass; when stateful, their connections' replies pass
/// too (and only the replies). Precedence: steps 7 to 9 of ebpfcni.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub pair: PolicyRule,
    pub selector: Selector,
    pub stateful: bool,
}

impl Rule {
    /// The plan's rule: the pair, any protocol and port.
    pub fn pair(pair: PolicyRule, stateful: bool) -> Self {
        Self {
            pair,
            selector: Selector::Any,
            stateful,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.pair)?;
        if self.selector != Selector::Any {
            write!(f, " {}", self.selector)?;
        }
        if self.stateful {
            f.write_str(" stateful")?;
        }
        Ok(())
    }
}

/// A rule entry as its bytes say, for entries the tools never write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawRule {
    pub src: u32,
    pub dst: u32,
    pub action: u8,
    /// What a port_policy_map entry covers (`None` for policy_map).
    pub selector: Option<String>,
}

/// A rule as stored: identity 0 on either side, an unknown action, or a
/// port entry that does not belong to a whole rule, is invalid.
pub type StoredRule = Stored<Rule, RawRule>;

/// The map that refused a change, for errors about overlapping ranges.
pub(super) const PORTS: PinnedMap = PinnedMap::PortPolicy;

/// An overlap of a new port rule with another rule of the same pair and
/// protocol: refused, nothing written.
pub(super) fn overlap(rule: &Rule, other: &Rule) -> Error {
    Error::Conflict(format!(
        "{rule} overlaps the rule {other}: port ranges of one pair and protocol must not overlap \
         (deny the other first, or name exactly its ports)"
    ))
}
