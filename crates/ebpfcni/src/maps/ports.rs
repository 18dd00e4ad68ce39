//! port_policy_map: protocol and port rules, an LPM trie (precedence step 8).
//! A whole-protocol rule is one entry; a port range is the few aligned
//! blocks of ports that make it up, each entry naming the whole range, so
//! that one lookup finds the longest match and the tools still see the
//! rule as it was written.

use std::collections::{HashMap, HashSet};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::policy::{action, stateful_of};
use super::rule::{overlap, Protocol, RawRule, Rule, Selector, StoredRule, PORTS};
use super::{insert_error, Stored};
use crate::error::{Error, Result};
use crate::identity::{Identity, PolicyRule};
use crate::skel::types;

const MAP: crate::object::PinnedMap = PORTS;

/// Bits of the key, after prefixlen, that a rule of each kind fixes
/// (EBPFCNI_PORT_PREFIX_* in ebpfcni.h).
const PREFIX_PROTOCOL: u32 = 72;
const PREFIX_ONE_PORT: u32 = 96;

#[derive(Debug)]
pub struct PortPolicyMap {
    pub(super) map: MapHandle,
}

/// The aligned blocks of ports that make up `first..=last`: (first port of
/// the block, number of its high bits that are fixed).
pub(super) fn blocks(mut first: u32, last: u32) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    while first <= last {
        // The largest power-of-two block aligned at `first` within the range.
        let mut size = if first == 0 {
            1 << 16
        } else {
            1 << first.trailing_zeros().min(16)
        };
        while first + size - 1 > last {
            size >>= 1;
        }
        out.push((first as u16, 16 - size.trailing_zeros()));
        first += size;
    }
    out
}

/// The keys of a rule's entries.
fn keys(src: u32, dst: u32, selector: Selector) -> Vec<types::ebpfcni_port_key> {
    let key = |prefixlen, protocol: Protocol, port: u16| types::ebpfcni_port_key {
        prefixlen,
        src_id: src,
        dst_id: dst,
        protocol: protocol.0,
        pad: 0,
        dport: port.to_be(),
    };
    match selector {
        Selector::Any => Vec::new(),
        Selector::Protocol(p) => vec![key(PREFIX_PROTOCOL, p, 0)],
        Selector::Ports {
            protocol,
            first,
            last,
        } => blocks(first.into(), last.into())
            .into_iter()
            .map(|(port, fixed)| key(PREFIX_ONE_PORT - 16 + fixed, protocol, port))
            .collect(),
    }
}

/// The bytes of the keys of a rule's entries.
pub(super) fn key_bytes(src: u32, dst: u32, selector: Selector) -> Vec<Vec<u8>> {
    keys(src, dst, selector)
        .iter()
        .map(|k| bytemuck::bytes_of(k).to_vec())
        .collect()
}

fn value(rule: &Rule) -> types::ebpfcni_port_rule {
    let (first_port, last_port) = rule.selector.ports().unwrap_or((0, 0));
    types::ebpfcni_port_rule {
        action: types::ebpfcni_policy_action(action(rule.stateful)),
        first_port,
        last_port,
        ..bytemuck::Zeroable::zeroed()
    }
}

/// The selector an entry's value names, given its key's protocol.
fn selector_of(key: &types::ebpfcni_port_key, value: &types::ebpfcni_port_rule) -> Selector {
    let protocol = Protocol(key.protocol);
    if key.prefixlen == PREFIX_PROTOCOL && value.first_port == 0 && value.last_port == 0 {
        Selector::Protocol(protocol)
    } else {
        Selector::Ports {
            protocol,
            first: value.first_port,
            last: value.last_port,
        }
    }
}

type Entries = Vec<(types::ebpfcni_port_key, types::ebpfcni_port_rule)>;

impl PortPolicyMap {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Every entry (LPM tries have no batch lookup: the keys are walked).
    fn entries(&self) -> Result<Entries> {
        super::lpm_entries(&self.map, MAP)
    }

    /// Refuses `rules` whose ports overlap another rule of the same pair and
    /// protocol (a rule with exactly the same ports replaces it).
    pub(super) fn check(&self, rules: &[Rule]) -> Result<()> {
        let mut by_pair: HashMap<(PolicyRule, u8), Vec<Rule>> = HashMap::new();
        for rule in self
            .list()?
            .into_iter()
            .filter_map(Stored::valid)
            .chain(rules.iter().copied())
        {
            if let Selector::Ports {
                protocol,
                first,
                last,
            } = rule.selector
            {
                let others = by_pair.entry((rule.pair, protocol.0)).or_default();
                if let Some(other) = others.iter().find(|o| {
                    let (f, l) = o.selector.ports().expect("port rules only");
                    (f, l) != (first, last) && f <= last && first <= l
                }) {
                    return Err(overlap(&rule, other));
                }
                others.push(rule);
            }
        }
        Ok(())
    }

    /// Writes every rule (their ports checked by [`Self::check`]), or none
    /// when the trie lacks room or the kernel refuses one (what was written
    /// is undone). Returns the rule each had before: `Some(stateful)`, or
    /// `None` when new.
    pub(super) fn set_all(&self, rules: &[Rule]) -> Result<Vec<Option<bool>>> {
        let present: HashMap<Vec<u8>, types::ebpfcni_port_rule> = self
            .entries()?
            .into_iter()
            .map(|(k, v)| (bytemuck::bytes_of(&k).to_vec(), v))
            .collect();
        let mut before = Vec::with_capacity(rules.len());
        let mut writes: HashMap<Vec<u8>, types::ebpfcni_port_rule> = HashMap::new();
        for rule in rules {
            let keys = keys(rule.pair.src.get(), rule.pair.dst.get(), rule.selector);
            let had = keys
                .first()
                .and_then(|k| present.get(bytemuck::bytes_of(k)))
                .filter(|v| selector_of(&keys[0], v) == rule.selector)
                .and_then(|v| stateful_of(v.action.0));
            before.push(had);
            for k in keys {
                writes.insert(bytemuck::bytes_of(&k).to_vec(), value(rule));
            }
        }
        let new = writes.keys().filter(|k| !present.contains_key(*k)).count();
        let needed = present.len() + new;
        super::check_room(MAP, self.capacity(), needed)?;
        let mut written = Vec::new();
        for (k, v) in &writes {
            if let Err(e) = self.map.update(k, bytemuck::bytes_of(v), MapFlags::ANY) {
                for k in written {
                    let _ = match present.get(k) {
                        Some(old) => self.map.update(k, bytemuck::bytes_of(old), MapFlags::ANY),
                        None => self.map.delete(k),
                    };
                }
                return Err(insert_error(MAP, self.capacity(), needed, e));
            }
            written.push(k);
        }
        Ok(before)
    }

    /// Removes the entries of the rule `src -> dst` with exactly this
    /// selector. Returns false when there was no such rule.
    pub(super) fn revoke(&self, src: u32, dst: u32, selector: Selector) -> Result<bool> {
        let mut removed = false;
        for k in keys(src, dst, selector) {
            let bytes = bytemuck::bytes_of(&k);
            let Some(v) = self
                .map
                .lookup(bytes, MapFlags::ANY)
                .map_err(|e| Error::bpf(format!("read {MAP}"), e))?
            else {
                continue;
            };
            // An LPM lookup finds the longest match, which is this very
            // entry when it exists (blocks of one range are disjoint, and
            // ranges do not overlap); a shorter match names another rule.
            let stored: types::ebpfcni_port_rule = bytemuck::pod_read_unaligned(&v);
            if selector_of(&k, &stored) != selector {
                continue;
            }
            match self.map.delete(bytes) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::bpf(
                        format!("remove {src} -> {dst} {selector} from {MAP}"),
                        e,
                    ))
                }
            }
        }
        Ok(removed)
    }

    /// Every rule, and every entry that is not part of a whole valid rule
    /// (as invalid), in no particular order.
    pub fn list(&self) -> Result<Vec<StoredRule>> {
        let mut groups: HashMap<(u32, u32, Selector, u8), HashSet<Vec<u8>>> = HashMap::new();
        for (k, v) in self.entries()? {
            groups
                .entry((k.src_id, k.dst_id, selector_of(&k, &v), v.action.0))
                .or_default()
                .insert(bytemuck::bytes_of(&k).to_vec());
        }
        Ok(groups
            .into_iter()
            .map(|((src, dst, selector, action), found)| {
                let expected: HashSet<Vec<u8>> = keys(src, dst, selector)
                    .iter()
                    .map(|k| bytemuck::bytes_of(k).to_vec())
                    .collect();
                let raw = || RawRule {
                    src,
                    dst,
                    action,
                    selector: Some(selector.to_string()),
                };
                let problem = match (Identity::new(src), Identity::new(dst), stateful_of(action)) {
                    (_, _, None) => Some("unknown action (allow is 1, allow statefully 3)"),
                    (None, _, _) | (_, None, _) => Some("identity 0 is not an identity"),
                    _ if found != expected => Some("entries that do not make up a whole rule"),
                    _ => None,
                };
                match (
                    problem,
                    Identity::new(src),
                    Identity::new(dst),
                    stateful_of(action),
                ) {
                    (None, Some(s), Some(d), Some(stateful)) => Stored::Valid(Rule {
                        pair: PolicyRule::new(s, d),
                        selector,
                        stateful,
                    }),
                    (problem, ..) => Stored::Invalid {
                        raw: raw(),
                        problem: problem.unwrap_or("invalid"),
                    },
                }
            })
            .collect())
    }

    /// Number of entries (a range takes several).
    pub fn len(&self) -> Result<usize> {
        Ok(self.map.keys().count())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.map.keys().next().is_none())
    }

    /// Removes every entry. Returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        super::clear_each(&self.map, MAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_decompose_into_aligned_blocks_that_cover_them_exactly() {
        assert_eq!(blocks(8080, 8080), [(8080, 16)]);
        assert_eq!(blocks(8000, 8003), [(8000, 14)]);
        assert_eq!(blocks(1, 65535).len(), 16);
        for (first, last) in [
            (1u32, 1023u32),
            (8000, 8080),
            (443, 443),
            (1, 65535),
            (32768, 65535),
        ] {
            let mut covered = Vec::new();
            for (start, fixed) in blocks(first, last) {
                let size = 1u32 << (16 - fixed);
                assert_eq!(u32::from(start) % size, 0, "aligned");
                covered.extend(u32::from(start)..u32::from(start) + size);
            }
            assert_eq!(covered, (first..=last).collect::<Vec<_>>(), "{first}-{last}");
        }
    }
}
