//! Allow rules as the operator writes them, whichever map holds them: a pair
//! rule (any protocol and port) in policy_map, a protocol or port rule in
//! port_policy_map; stateful or not. Changes span both maps, all or nothing,
//! and after each the tracked connections that no rule allows statefully
//! any longer are removed, so that revoking a rule stops its replies too.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::journal::Journal;
use super::{policy, ports, Maps, Stored};
use crate::error::{Error, Result};
use crate::identity::PolicyRule;
use crate::object::PinnedMap;

/// An IP protocol a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);

    /// Whether the protocol has ports a rule can name.
    pub fn has_ports(self) -> bool {
        self == Self::TCP || self == Self::UDP
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ICMP => f.write_str("icmp"),
            Self::TCP => f.write_str("tcp"),
            Self::UDP => f.write_str("udp"),
            Protocol(n) => n.fmt(f),
        }
    }
}

impl FromStr for Protocol {
    type Err = String;

    /// "tcp", "udp", "icmp", or a protocol number from 1 to 255.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tcp" => Ok(Self::TCP),
            "udp" => Ok(Self::UDP),
            "icmp" => Ok(Self::ICMP),
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => match s.parse::<u8>() {
                Ok(n) if n > 0 => Ok(Protocol(n)),
                _ => Err(format!(
                    "protocol number {} is not from 1 to 255",
                    crate::quote_input(s)
                )),
            },
            _ => Err(format!(
                "unknown protocol {}: expected tcp, udp, icmp or a number from 1 to 255",
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
    fn matches(self, protocol: u8, dport: u16) -> bool {
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

/// What `allow` did to one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleChange {
    pub rule: Rule,
    /// The rule with this selector before: `Some(stateful)`, `None` when new.
    pub before: Option<bool>,
}

impl Maps {
    /// Allows every rule: all of them, or none when a map lacks room or a
    /// port range overlaps another rule's ports (a rule with the same
    /// selector is replaced, e.g. made stateful). Returns what changed.
    /// A change killed part way is undone by the next opener of the maps
    /// (`journal.rs`): all of them, or none, under SIGKILL too.
    pub fn allow(&self, rules: &[Rule]) -> Result<Vec<RuleChange>> {
        let pairs: Vec<(PolicyRule, bool)> = rules
            .iter()
            .filter(|r| r.selector == Selector::Any)
            .map(|r| (r.pair, r.stateful))
            .collect();
        let ported: Vec<Rule> = rules
            .iter()
            .filter(|r| r.selector != Selector::Any)
            .copied()
            .collect();
        let mut journal = Journal::begin(self)?;
        self.ports.check(&ported)?;
        journal.record(
            PinnedMap::Policy,
            pairs
                .iter()
                .map(|(p, _)| policy::key_bytes(p.src.get(), p.dst.get())),
        )?;
        journal.record(
            PinnedMap::PortPolicy,
            ported
                .iter()
                .flat_map(|r| ports::key_bytes(r.pair.src.get(), r.pair.dst.get(), r.selector)),
        )?;
        // The program is told to look for port rules (and to track
        // connections) before the first of them is in its map: a rule is
        // never there unseen. after_policy_change sets both exactly.
        if !ported.is_empty() {
            self.config.set_port_rules(true)?;
        }
        if rules.iter().any(|r| r.stateful) {
            self.config.set_conntrack(true)?;
        }
        // On an error the journal, dropped, puts back what was written.
        let pairs_before = self.policy.set_all(&pairs)?;
        let ports_before = self.ports.set_all(&ported)?;
        let (mut pairs_before, mut ports_before) = (pairs_before.into_iter(), ports_before.into_iter());
        let changes = rules
            .iter()
            .map(|&rule| RuleChange {
                rule,
                before: if rule.selector == Selector::Any {
                    pairs_before.next()
                } else {
                    ports_before.next()
                }
                .flatten(),
            })
            .collect();
        self.after_policy_change()?;
        journal.commit()?;
        Ok(changes)
    }

    /// Removes the rule of `src -> dst` with exactly this selector (an
    /// identity may be 0, to remove an invalid entry). Returns false when
    /// there was none. Killed part way, it is undone by the next opener.
    pub fn deny(&self, src: u32, dst: u32, selector: Selector) -> Result<bool> {
        let mut journal = Journal::begin(self)?;
        let removed = match selector {
            Selector::Any => {
                journal.record(PinnedMap::Policy, [policy::key_bytes(src, dst)])?;
                self.policy.revoke_raw(src, dst)?
            }
            _ => {
                journal.record(PinnedMap::PortPolicy, ports::key_bytes(src, dst, selector))?;
                self.ports.revoke(src, dst, selector)?
            }
        };
        self.after_policy_change()?;
        journal.commit()?;
        Ok(removed)
    }

    /// Every rule of both maps, invalid entries included, sorted by
    /// (source, destination, selector).
    pub fn rules(&self) -> Result<Vec<StoredRule>> {
        let mut all = self.policy.list()?;
        all.extend(self.ports.list()?);
        all.sort_by_key(|r| match r {
            Stored::Valid(rule) => (rule.pair.src.get(), rule.pair.dst.get(), Some(rule.selector)),
            Stored::Invalid { raw, .. } => (raw.src, raw.dst, None),
        });
        Ok(all)
    }

    /// Removes every rule of both maps. Returns how many rules there were.
    pub fn flush_rules(&self) -> Result<usize> {
        let mut journal = Journal::begin(self)?;
        let n = self.rules()?.len();
        journal.record_all(PinnedMap::Policy)?;
        journal.record_all(PinnedMap::PortPolicy)?;
        self.policy.clear()?;
        self.ports.clear()?;
        self.after_policy_change()?;
        journal.commit()?;
        Ok(n)
    }

    /// Keeps connection tracking in step with the rules: on while some rule
    /// is stateful, and no tracked connection that no rule allows
    /// statefully any longer (or whose addresses' identities changed), so
    /// that revoking a rule stops its replies at once.
    pub fn after_policy_change(&self) -> Result<()> {
        let index = PolicyIndex::read(self)?;
        // The flags follow the maps, which were written first: a rule is
        // in its map before the program is told to look for it.
        self.config.set_port_rules(!self.ports.is_empty()?)?;
        self.config.set_conntrack(index.any_stateful())?;
        self.sweep_connections(&index)?;
        Ok(())
    }

    /// Removes the tracked connections that no rule allows statefully any
    /// longer, or whose addresses now have other identities (what
    /// endpointctl changes). Returns how many went.
    pub fn sweep_connections(&self, index: &PolicyIndex) -> Result<usize> {
        if self.conntrack.is_empty()? {
            return Ok(0);
        }
        let identities = IdentityIndex::read(self)?;
        self.conntrack.retain(|c| {
            identities.of(c.opener) == Some(c.opener_id)
                && identities.of(c.responder) == Some(c.responder_id)
                && index.action(c.opener_id, c.responder_id, c.protocol, c.dport) == Some(true)
        })
    }

    /// What endpointctl calls after changing identities: the tracked
    /// connections of addresses whose identity changed (or went) are
    /// removed, so that none outlives the identity it was allowed for.
    /// Returns how many went.
    pub fn after_identity_change(&self) -> Result<usize> {
        if self.conntrack.is_empty()? {
            return Ok(0);
        }
        self.sweep_connections(&PolicyIndex::read(self)?)
    }
}

/// The rules in memory, to judge many connections at once as the program
/// would (steps 7 and 8).
pub struct PolicyIndex {
    pairs: HashMap<(u32, u32), bool>,
    ports: HashMap<(u32, u32), Vec<Rule>>,
}

impl PolicyIndex {
    pub fn read(maps: &Maps) -> Result<Self> {
        let mut index = Self {
            pairs: HashMap::new(),
            ports: HashMap::new(),
        };
        for rule in maps.rules()?.into_iter().filter_map(Stored::valid) {
            let key = (rule.pair.src.get(), rule.pair.dst.get());
            match rule.selector {
                Selector::Any => drop(index.pairs.insert(key, rule.stateful)),
                _ => index.ports.entry(key).or_default().push(rule),
            }
        }
        Ok(index)
    }

    fn any_stateful(&self) -> bool {
        self.pairs.values().any(|s| *s) || self.ports.values().flatten().any(|r| r.stateful)
    }

    /// The rule that allows a packet of `protocol` to `dport` (0: none)
    /// from `src` to `dst`: `Some(stateful)`, or `None`.
    pub fn action(&self, src: u32, dst: u32, protocol: u8, dport: u16) -> Option<bool> {
        if let Some(stateful) = self.pairs.get(&(src, dst)) {
            return Some(*stateful);
        }
        let rules = self.ports.get(&(src, dst))?;
        // The longest match: a port range (disjoint within a protocol)
        // before the whole protocol.
        rules
            .iter()
            .filter(|r| r.selector.matches(protocol, dport))
            .max_by_key(|r| matches!(r.selector, Selector::Ports { .. }))
            .map(|r| r.stateful)
    }
}

/// Identities by address in memory, as the program finds them (step 5).
struct IdentityIndex {
    endpoints: HashMap<Ipv4Addr, u32>,
    prefixes: Vec<(ipnet::Ipv4Net, u32)>,
}

impl IdentityIndex {
    fn read(maps: &Maps) -> Result<Self> {
        let endpoints = maps
            .endpoints
            .list()?
            .into_iter()
            .filter_map(|(ip, id)| id.valid().map(|id| (ip, id.get())))
            .collect();
        let mut prefixes: Vec<_> = maps
            .prefixes
            .list()?
            .into_iter()
            .filter_map(|(net, id)| id.valid().map(|id| (net, id.get())))
            .collect();
        prefixes.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(Self { endpoints, prefixes })
    }

    fn of(&self, ip: Ipv4Addr) -> Option<u32> {
        self.endpoints.get(&ip).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .map(|(_, id)| *id)
        })
    }
}

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
