//! Allow rules as the operator writes them, whichever map holds them: a pair
//! rule (any protocol and port) in policy_map, a protocol or port rule in
//! port_policy_map; stateful or not. Changes span both maps, all or nothing,
//! and after each the tracked connections that no rule allows statefully
//! any longer are removed, so that revoking a rule stops its replies too.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::journal::Journal;
use super::rule::{Rule, Selector, StoredRule};
use super::{policy, ports, LabelIndex, Maps, Stored};
use crate::error::Result;
use crate::identity::PolicyRule;
use crate::object::PinnedMap;

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
        let mut journal = Journal::begin(self, Maps::after_policy_change)?;
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
        let mut journal = Journal::begin(self, Maps::after_policy_change)?;
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
        let mut journal = Journal::begin(self, Maps::after_policy_change)?;
        let n = self.rules()?.len();
        journal.record_all(PinnedMap::Policy)?;
        journal.record_all(PinnedMap::PortPolicy)?;
        self.policy.clear()?;
        self.ports.clear()?;
        self.after_policy_change()?;
        journal.commit()?;
        Ok(n)
    }

    /// Brings config label_policy and label_deny in line with the label
    /// maps (which identities are under label policy, which shapes of
    /// rules exist), as [`Self::after_policy_change`] does: for pins an
    /// older build wrote, when this build's program is first loaded.
    pub fn refresh_label_policy(&self) -> Result<()> {
        let labels = LabelIndex::read(&self.labels)?;
        self.config
            .set_label_policy(labels.policy_flags(), labels.has_deny())?;
        self.config.bump_policy_gen()
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
            .set_label_policy(index.labels.policy_flags(), index.labels.has_deny())?;
        // Tracked connections are judged again by the rules as they are
        // now (their next packet), then the ones no rule allows go.
        self.config.bump_policy_gen()?;
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
