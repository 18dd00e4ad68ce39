//! Label policy (precedence 8b): label_isolation_map says which identities
//! are under it and whether they are isolated for ingress or egress; each
//! identity's own rules per direction are in label_exact_map (a hash: rules
//! of one port, or of every protocol and port: the commonest cost the
//! program one lookup) and label_rule_map (an LPM trie: port ranges as
//! prefix blocks as in port_policy_map, whole protocols). Written by the
//! node agent from the NetworkPolicy and CiliumNetworkPolicy it compiles.
//! Which shapes of rules exist is kept in config label_policy
//! ([`LabelIndex::policy_flags`]) so that the program skips lookups that
//! cannot match. (A build before label_exact_map kept every rule in the
//! trie: such entries are still found, read and removed.)

use std::collections::{BTreeMap, HashMap};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::ports::blocks;
use super::rule::{Protocol, Selector};
use super::{insert_error, ConfigMap};
use crate::error::{Error, Result};
use crate::object::PinnedMap;
use crate::skel::types;

const ISOLATION: PinnedMap = PinnedMap::LabelIsolation;
const RULES: PinnedMap = PinnedMap::LabelRules;
const EXACT: PinnedMap = PinnedMap::LabelExact;

/// Bits of the key after prefixlen (EBPFCNI_LABEL_PREFIX_* in ebpfcni.h).
const PREFIX_ANY: u32 = 72;
const PREFIX_PROTOCOL: u32 = 80;
const PREFIX_ONE_PORT: u32 = 96;

/// The peer of a rule for every peer (EBPFCNI_LABEL_ANY_PEER).
pub const ANY_PEER: u32 = 0;

/// An identity under label policy: isolated (default deny) for ingress,
/// egress, both, or neither (selected by no policy: unrestricted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Isolation {
    pub ingress: bool,
    pub egress: bool,
}

impl Isolation {
    fn bits(self) -> u32 {
        types::ebpfcni_label_flags::EBPFCNI_LABEL_MANAGED.0
            | if self.ingress {
                types::ebpfcni_label_flags::EBPFCNI_LABEL_ISOLATED_INGRESS.0
            } else {
                0
            }
            | if self.egress {
                types::ebpfcni_label_flags::EBPFCNI_LABEL_ISOLATED_EGRESS.0
            } else {
                0
            }
    }

    fn from_bits(bits: u32) -> Self {
        Self {
            ingress: bits & types::ebpfcni_label_flags::EBPFCNI_LABEL_ISOLATED_INGRESS.0 != 0,
            egress: bits & types::ebpfcni_label_flags::EBPFCNI_LABEL_ISOLATED_EGRESS.0 != 0,
        }
    }
}

/// What a rule says of its subject and peer (enum ebpfcni_label_kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LabelKind {
    EgressAllow = 1,
    IngressAllow = 2,
    EgressDeny = 3,
    IngressDeny = 4,
}

impl LabelKind {
    const ALL: [LabelKind; 4] = [
        LabelKind::EgressAllow,
        LabelKind::IngressAllow,
        LabelKind::EgressDeny,
        LabelKind::IngressDeny,
    ];

    fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == v)
    }

    pub fn is_deny(self) -> bool {
        matches!(self, LabelKind::EgressDeny | LabelKind::IngressDeny)
    }
}

/// One rule of label policy: `subject` (whose policy) may send to
/// (egress) or receive from (ingress) `peer` ([`ANY_PEER`]: every peer)
/// what `selector` covers; or may not (deny). `policy` is the agent's
/// number of the policy it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelRule {
    pub subject: u32,
    pub peer: u32,
    pub kind: LabelKind,
    pub selector: Selector,
    pub policy: u32,
}

fn keys(rule: &LabelRule) -> Vec<types::ebpfcni_label_key> {
    let key = |prefixlen, protocol: u8, port: u16| types::ebpfcni_label_key {
        prefixlen,
        subject: rule.subject,
        peer: rule.peer,
        kind: types::ebpfcni_label_kind(rule.kind as u8),
        protocol,
        dport: port.to_be(),
    };
    match rule.selector {
        Selector::Any => vec![key(PREFIX_ANY, 0, 0)],
        Selector::Protocol(p) => vec![key(PREFIX_PROTOCOL, p.0, 0)],
        Selector::Ports {
            protocol,
            first,
            last,
        } => blocks(first.into(), last.into())
            .into_iter()
            .map(|(port, fixed)| key(PREFIX_ONE_PORT - 16 + fixed, protocol.0, port))
            .collect(),
    }
}

impl LabelRule {
    /// The flag of config label_policy (enum ebpfcni_label_policy_flags)
    /// the program needs on to look this rule up; 0 for a rule of one port
    /// for one peer, which it always looks up. A writer that adds a rule
    /// whose flag is off sets it ([`crate::Maps::after_policy_change`]).
    pub fn shape(&self) -> u32 {
        use types::ebpfcni_label_policy_flags as F;
        match (self.peer == ANY_PEER, exact_key(self).is_some(), self.selector) {
            (_, false, _) => F::EBPFCNI_LABEL_HAS_WIDE.0,
            (false, true, Selector::Any) => F::EBPFCNI_LABEL_HAS_PEER_ALL.0,
            (false, true, _) => 0,
            (true, true, Selector::Any) => F::EBPFCNI_LABEL_HAS_ANY_ALL.0,
            (true, true, _) => F::EBPFCNI_LABEL_HAS_ANY_PORT.0,
        }
    }
}

/// The label_exact_map key of a rule of one port or of everything; `None`
/// for the trie's rules (ranges, whole protocols).
fn exact_key(rule: &LabelRule) -> Option<types::ebpfcni_label_exact_key> {
    let (protocol, port) = match rule.selector {
        Selector::Any => (0, 0),
        Selector::Ports {
            protocol,
            first,
            last,
        } if first == last => (protocol.0, first),
        _ => return None,
    };
    Some(types::ebpfcni_label_exact_key {
        subject: rule.subject,
        peer: rule.peer,
        kind: types::ebpfcni_label_kind(rule.kind as u8),
        protocol,
        dport: port.to_be(),
    })
}

fn exact_rule_of(
    key: &types::ebpfcni_label_exact_key,
    value: &types::ebpfcni_label_rule,
) -> Option<LabelRule> {
    let selector = match (key.protocol, u16::from_be(key.dport)) {
        (0, _) => Selector::Any,
        (protocol, port) => Selector::Ports {
            protocol: Protocol(protocol),
            first: port,
            last: port,
        },
    };
    Some(LabelRule {
        subject: key.subject,
        peer: key.peer,
        kind: LabelKind::from_u8(key.kind.0)?,
        selector,
        policy: value.policy,
    })
}

fn value(rule: &LabelRule) -> types::ebpfcni_label_rule {
    let (first_port, last_port) = rule.selector.ports().unwrap_or((0, 0));
    types::ebpfcni_label_rule {
        policy: rule.policy,
        first_port,
        last_port,
    }
}

fn rule_of(key: &types::ebpfcni_label_key, value: &types::ebpfcni_label_rule) -> Option<LabelRule> {
    let selector = match key.prefixlen {
        PREFIX_ANY => Selector::Any,
        PREFIX_PROTOCOL if value.first_port == 0 && value.last_port == 0 => {
            Selector::Protocol(Protocol(key.protocol))
        }
        _ => Selector::Ports {
            protocol: Protocol(key.protocol),
            first: value.first_port,
            last: value.last_port,
        },
    };
    Some(LabelRule {
        subject: key.subject,
        peer: key.peer,
        kind: LabelKind::from_u8(key.kind.0)?,
        selector,
        policy: value.policy,
    })
}

#[derive(Debug)]
pub struct LabelPolicyMap {
    isolation: MapHandle,
    /// The trie: ranges, whole protocols.
    rules: MapHandle,
    /// The hash: one port, or every protocol and port.
    exact: MapHandle,
    /// For label_policy's shape flags.
    config: ConfigMap,
}

impl LabelPolicyMap {
    pub(super) fn new(isolation: MapHandle, rules: MapHandle, exact: MapHandle, config: ConfigMap) -> Self {
        Self {
            isolation,
            rules,
            exact,
            config,
        }
    }

    /// Puts `id` under label policy with `isolation` (replacing its flags).
    pub fn set_isolation(&self, id: u32, isolation: Isolation) -> Result<()> {
        self.isolation
            .update(&id.to_ne_bytes(), &isolation.bits().to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| {
                insert_error(
                    ISOLATION,
                    self.isolation.max_entries(),
                    self.isolations().map_or(0, |l| l.len()) + 1,
                    e,
                )
            })
    }

    /// Takes `id` out of label policy. Returns whether it was under it.
    pub fn remove_isolation(&self, id: u32) -> Result<bool> {
        match self.isolation.delete(&id.to_ne_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::bpf(format!("remove identity {id} from {ISOLATION}"), e)),
        }
    }

    /// The identities under label policy.
    pub fn isolations(&self) -> Result<BTreeMap<u32, Isolation>> {
        Ok(super::dump(&self.isolation, ISOLATION)?
            .into_iter()
            .map(|(k, v)| {
                let id = u32::from_ne_bytes(k.as_slice().try_into().expect("4-byte key"));
                let bits = u32::from_ne_bytes(v.as_slice().try_into().expect("4-byte value"));
                (id, Isolation::from_bits(bits))
            })
            .collect())
    }

    /// Writes `rule`'s entries (a range is several), then turns its shape's
    /// flag on (config label_policy), so that the program finds it before
    /// anything it replaces is removed (adds before removes); removing
    /// leaves the flags to [`crate::Maps::after_policy_change`], which sets
    /// them exactly.
    pub fn add(&self, rule: &LabelRule) -> Result<()> {
        self.write(rule)?;
        self.config.enable_label_shapes(rule.shape())
    }

    fn write(&self, rule: &LabelRule) -> Result<()> {
        let value = value(rule);
        if let Some(key) = exact_key(rule) {
            return self
                .exact
                .update(
                    bytemuck::bytes_of(&key),
                    bytemuck::bytes_of(&value),
                    MapFlags::ANY,
                )
                .map_err(|e| {
                    insert_error(EXACT, self.exact.max_entries(), self.exact.keys().count() + 1, e)
                });
        }
        for key in keys(rule) {
            self.rules
                .update(
                    bytemuck::bytes_of(&key),
                    bytemuck::bytes_of(&value),
                    MapFlags::ANY,
                )
                .map_err(|e| insert_error(RULES, self.rules.max_entries(), self.len().unwrap_or(0) + 1, e))?;
        }
        Ok(())
    }

    /// Removes `rule`'s entries (from the trie too, where an older build
    /// kept every rule). Returns whether it was there.
    pub fn remove(&self, rule: &LabelRule) -> Result<bool> {
        let mut removed = false;
        if let Some(key) = exact_key(rule) {
            match self.exact.delete(bytemuck::bytes_of(&key)) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::bpf(format!("remove a rule from {EXACT}"), e)),
            }
        }
        for key in keys(rule) {
            match self.rules.delete(bytemuck::bytes_of(&key)) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::bpf(format!("remove a rule from {RULES}"), e)),
            }
        }
        Ok(removed)
    }

    fn entries(&self) -> Result<Vec<(types::ebpfcni_label_key, types::ebpfcni_label_rule)>> {
        super::lpm_entries(&self.rules, RULES)
    }

    /// Entries in label_exact_map and label_rule_map (a range counts its
    /// blocks).
    pub fn len(&self) -> Result<usize> {
        Ok(self.exact.keys().count() + self.rules.keys().count())
    }

    /// Whether label_rule_map (the trie) has an entry: only then does the
    /// program look it up.
    fn has_wide(&self) -> bool {
        self.rules.keys().next().is_some()
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every rule, each once (a range's blocks are one rule), sorted;
    /// entries of an unknown kind are left out.
    pub fn rules(&self) -> Result<Vec<LabelRule>> {
        let exact: Vec<(types::ebpfcni_label_exact_key, types::ebpfcni_label_rule)> =
            super::lpm_entries(&self.exact, EXACT)?;
        let mut rules: Vec<LabelRule> = self
            .entries()?
            .iter()
            .filter_map(|(k, v)| rule_of(k, v))
            .chain(exact.iter().filter_map(|(k, v)| exact_rule_of(k, v)))
            .collect();
        rules.sort_unstable();
        rules.dedup();
        Ok(rules)
    }

    /// Removes every rule and every identity's flags. Returns how many
    /// (rules, identities) there were.
    pub fn clear(&self) -> Result<(usize, usize)> {
        let rules = self.rules()?;
        for rule in &rules {
            self.remove(rule)?;
        }
        let ids = self.isolations()?;
        for id in ids.keys() {
            self.remove_isolation(*id)?;
        }
        Ok((rules.len(), ids.len()))
    }
}

/// Label policy in memory, to judge as the program does (step 8b).
#[derive(Debug, Default)]
pub struct LabelIndex {
    isolation: HashMap<u32, Isolation>,
    rules: HashMap<(u32, u32, LabelKind), Vec<Selector>>,
    /// label_rule_map (the trie) has an entry.
    wide: bool,
}

impl LabelIndex {
    pub fn read(map: &LabelPolicyMap) -> Result<Self> {
        let mut index = Self {
            isolation: map.isolations()?.into_iter().collect(),
            wide: map.has_wide(),
            ..Default::default()
        };
        for rule in map.rules()? {
            index
                .rules
                .entry((rule.subject, rule.peer, rule.kind))
                .or_default()
                .push(rule.selector);
        }
        Ok(index)
    }

    pub fn is_active(&self) -> bool {
        !self.isolation.is_empty()
    }

    /// Config label_policy for these maps: 0 while no identity is under
    /// label policy, else on with the shapes of rules that exist (enum
    /// ebpfcni_label_policy_flags), so that the program looks up only what
    /// can match.
    pub fn policy_flags(&self) -> u32 {
        use types::ebpfcni_label_policy_flags as F;
        if !self.is_active() {
            return 0;
        }
        let mut flags = F::EBPFCNI_LABEL_POLICY_ON.0;
        for ((subject, peer, kind), selectors) in &self.rules {
            for selector in selectors {
                let rule = LabelRule {
                    subject: *subject,
                    peer: *peer,
                    kind: *kind,
                    selector: *selector,
                    policy: 0,
                };
                // The trie's rules count by `wide` (an older build's
                // exact-shaped entries live there too).
                flags |= rule.shape() & !F::EBPFCNI_LABEL_HAS_WIDE.0;
            }
        }
        if self.wide {
            flags |= F::EBPFCNI_LABEL_HAS_WIDE.0;
        }
        flags
    }

    pub fn has_deny(&self) -> bool {
        self.rules.keys().any(|(_, _, k)| k.is_deny())
    }

    fn rule(&self, subject: u32, peer: u32, kind: LabelKind, protocol: u8, dport: u16) -> bool {
        [peer, ANY_PEER].into_iter().any(|peer| {
            self.rules
                .get(&(subject, peer, kind))
                .is_some_and(|s| s.iter().any(|s| s.matches(protocol, dport)))
        })
    }

    /// Step 8b for a packet from `src` to `dst`: `None` when label policy
    /// has no say (neither identity under it), else whether it allows.
    pub fn allows(&self, src: u32, dst: u32, protocol: u8, dport: u16) -> Option<bool> {
        let (s, d) = (self.isolation.get(&src), self.isolation.get(&dst));
        let (s, d) = match (s, d) {
            (None, None) => return None,
            (Some(s), Some(d)) => (s, d),
            _ => return Some(false),
        };
        if self.rule(src, dst, LabelKind::EgressDeny, protocol, dport)
            || self.rule(dst, src, LabelKind::IngressDeny, protocol, dport)
        {
            return Some(false);
        }
        let egress = !s.egress || self.rule(src, dst, LabelKind::EgressAllow, protocol, dport);
        let ingress = !d.ingress || self.rule(dst, src, LabelKind::IngressAllow, protocol, dport);
        Some(egress && ingress)
    }
}
