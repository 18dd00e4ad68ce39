//! Allow rules as the operator writes them, whichever map holds them: a pair
//! rule (any protocol and port) in policy_map, a protocol or port rule in
//! port_policy_map; stateful or not. Changes span both maps, all or nothing,
//! and after each the tracked connections that no rule allows statefully
//! any longer are removed, so that revoking a rule stops its replies too.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::{Maps, Stored};
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
    pub(crate) fn matches(self, protocol: u8, dport: u16) -> bool {
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
        self.ports.check(&ported)?;
        let pairs_before = self.policy.set_all(&pairs)?;
        let ports_before = match self.ports.set_all(&ported) {
            Ok(before) => before,
            Err(e) => {
                // Undo the pair rules: back to what each was.
                for ((pair, _), before) in pairs.iter().zip(&pairs_before) {
                    let _ = match before {
                        Some(stateful) => self.policy.set_all(&[(*pair, *stateful)]).map(drop),
                        None => self.policy.revoke(*pair).map(drop),
                    };
                }
                return Err(e);
            }
        };
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
        Ok(changes)
    }

    /// Removes the rule of `src -> dst` with exactly this selector (an
    /// identity may be 0, to remove an invalid entry). Returns false when
    /// there was none.
    pub fn deny(&self, src: u32, dst: u32, selector: Selector) -> Result<bool> {
        let removed = match selector {
            Selector::Any => self.policy.revoke_raw(src, dst)?,
            _ => self.ports.revoke(src, dst, selector)?,
        };
        self.after_policy_change()?;
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
        let n = self.rules()?.len();
        self.policy.clear()?;
        self.ports.clear()?;
        self.after_policy_change()?;
        Ok(n)
    }

    /// Keeps connection tracking in step with the rules: on while some rule
    /// is stateful, and no tracked connection that no rule allows
    /// statefully any longer (or whose addresses' identities changed), so
    /// that revoking a rule stops its replies at once; the fragments'
    /// records, given under the old rules, are forgotten too.
    pub fn after_policy_change(&self) -> Result<()> {
        let index = PolicyIndex::read(self)?;
        // The flags follow the maps, which were written first: a rule is
        // in its map before the program is told to look for it.
        self.config.set_port_rules(!self.ports.is_empty()?)?;
        // Tracking before label policy: what label policy allows is
        // stateful, and its replies must find their connection.
        self.config.set_conntrack(index.any_stateful())?;
        self.config
            .set_label_policy(index.labels.is_active(), index.labels.has_deny())?;
        self.sweep_connections(&index)?;
        self.forget_fragments()?;
        Ok(())
    }

    /// Forgets the records of fragmented datagrams (a rule or an identity
    /// they passed under may have gone): their later fragments still on
    /// the way are judged by themselves.
    fn forget_fragments(&self) -> Result<()> {
        if !self.fragments.is_empty()? {
            self.fragments.clear()?;
        }
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
        self.forget_fragments()?;
        if self.conntrack.is_empty()? {
            return Ok(0);
        }
        self.sweep_connections(&PolicyIndex::read(self)?)
    }
}

/// The rules in memory, judging packets as the program does (steps 7 and
/// 8 of ebpfcni.h, written in bpf/lib/policy.h): the one copy of that
/// decision in Rust, for the tools (which connections a rule change ends,
/// whether a rule's replies pass). The datapath tests run it beside the
/// program on the same rule sets.
pub struct PolicyIndex {
    pairs: HashMap<(u32, u32), bool>,
    ports: HashMap<(u32, u32), Vec<Rule>>,
    /// Label policy (step 8b), read from its maps by [`PolicyIndex::read`].
    labels: super::labels::LabelIndex,
}

impl PolicyIndex {
    /// The valid rules of the maps (invalid entries allow nothing).
    pub fn read(maps: &Maps) -> Result<Self> {
        let mut index = Self::of(maps.rules()?.into_iter().filter_map(Stored::valid));
        index.labels = super::labels::LabelIndex::read(&maps.labels)?;
        Ok(index)
    }

    /// `rules`, as if they were the maps' (a later rule with the selector
    /// of an earlier one replaces it, as `allow` does).
    pub fn of(rules: impl IntoIterator<Item = Rule>) -> Self {
        let mut index = Self {
            pairs: HashMap::new(),
            ports: HashMap::new(),
            labels: Default::default(),
        };
        for rule in rules {
            let key = (rule.pair.src.get(), rule.pair.dst.get());
            match rule.selector {
                Selector::Any => drop(index.pairs.insert(key, rule.stateful)),
                _ => {
                    let rules = index.ports.entry(key).or_default();
                    rules.retain(|r| r.selector != rule.selector);
                    rules.push(rule);
                }
            }
        }
        index
    }

    fn any_stateful(&self) -> bool {
        self.pairs.values().any(|s| *s)
            || self.ports.values().flatten().any(|r| r.stateful)
            || self.labels.is_active()
    }

    /// The rule that allows a packet of `protocol` to `dport` (0: none)
    /// from `src` to `dst`: `Some(stateful)`, or `None`.
    pub fn action(&self, src: u32, dst: u32, protocol: u8, dport: u16) -> Option<bool> {
        if let Some(stateful) = self.pairs.get(&(src, dst)) {
            return Some(*stateful);
        }
        // The longest match: a port range (disjoint within a protocol)
        // before the whole protocol.
        let port_rule = self.ports.get(&(src, dst)).and_then(|rules| {
            rules
                .iter()
                .filter(|r| r.selector.matches(protocol, dport))
                .max_by_key(|r| matches!(r.selector, Selector::Ports { .. }))
                .map(|r| r.stateful)
        });
        // Step 8b: what label policy allows is stateful.
        port_rule.or_else(|| (self.labels.allows(src, dst, protocol, dport) == Some(true)).then_some(true))
    }

    /// Whether the rules of the reverse pair let every reply of `rule`'s
    /// packets through by themselves (tracking aside): packets from its
    /// destination to its source, of its protocol (of every protocol for
    /// a pair rule), whatever their destination port (the opener's port,
    /// 1 to 65535). That is: the reverse pair rule, a rule of the reverse
    /// for the whole protocol, or its port rules covering every port.
    pub fn replies_allowed(&self, rule: &Rule) -> bool {
        let (src, dst) = (rule.pair.dst.get(), rule.pair.src.get());
        let every_port = |protocol: u8| {
            // A packet without ports (dport 0) matches no port rule: only
            // the pair rule or a whole-protocol rule allows it, and those
            // allow every port.
            self.action(src, dst, protocol, 0).is_some() || self.ports_cover_all(src, dst, protocol)
        };
        match rule.selector.protocol() {
            None => (0..=u8::MAX).all(every_port),
            Some(p) => every_port(p.0),
        }
    }

    /// Whether the port rules of `src -> dst` for `protocol` cover every
    /// port from 1 to 65535 (their ranges do not overlap).
    fn ports_cover_all(&self, src: u32, dst: u32, protocol: u8) -> bool {
        let mut ranges: Vec<(u16, u16)> = self
            .ports
            .get(&(src, dst))
            .into_iter()
            .flatten()
            .filter(|r| r.selector.protocol().map(|p| p.0) == Some(protocol))
            .filter_map(|r| r.selector.ports())
            .collect();
        ranges.sort_unstable();
        let mut next = 1u32; // the first port not covered yet
        for (first, last) in ranges {
            if u32::from(first) > next {
                return false;
            }
            next = next.max(u32::from(last) + 1);
        }
        next > u32::from(u16::MAX)
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
