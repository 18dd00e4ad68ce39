//! policy_map: (source identity, destination identity) -> allow, or allow
//! statefully: the pair rules, any protocol and port (precedence step 7).

use std::collections::HashMap;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::rule::{RawRule, StoredRule};
use super::{dump, insert_error, Stored};
use crate::error::{Error, Result};
use crate::identity::{Identity, PolicyRule};
use crate::object::PinnedMap;
use crate::skel::types;

const MAP: PinnedMap = PinnedMap::Policy;

#[derive(Debug)]
pub struct PolicyMap {
    pub(super) map: MapHandle,
}

fn key(rule: PolicyRule) -> types::policy_key {
    types::policy_key {
        src_id: rule.src.get(),
        dst_id: rule.dst.get(),
    }
}

/// The bytes of the key of `src -> dst` (either may be 0).
pub(super) fn key_bytes(src: u32, dst: u32) -> Vec<u8> {
    bytemuck::bytes_of(&types::policy_key {
        src_id: src,
        dst_id: dst,
    })
    .to_vec()
}

/// The action byte of an allow rule, stateful or not.
pub(super) fn action(stateful: bool) -> u8 {
    if stateful {
        types::ebpfcni_policy_action::EBPFCNI_POLICY_ALLOW_STATEFUL.0
    } else {
        types::ebpfcni_policy_action::EBPFCNI_POLICY_ALLOW.0
    }
}

/// Whether `action` is one the tools write; `Some(stateful)` when it is.
pub(super) fn stateful_of(action: u8) -> Option<bool> {
    match types::ebpfcni_policy_action(action) {
        types::ebpfcni_policy_action::EBPFCNI_POLICY_ALLOW => Some(false),
        types::ebpfcni_policy_action::EBPFCNI_POLICY_ALLOW_STATEFUL => Some(true),
        _ => None,
    }
}

fn pair_from(key: &[u8], value: &[u8]) -> StoredRule {
    let key: types::policy_key = bytemuck::pod_read_unaligned(key);
    let raw = RawRule {
        src: key.src_id,
        dst: key.dst_id,
        action: value[0],
        selector: None,
    };
    match (
        Identity::new(raw.src),
        Identity::new(raw.dst),
        stateful_of(raw.action),
    ) {
        (_, _, None) => Stored::Invalid {
            raw,
            problem: "unknown action (allow is 1, allow statefully 3)",
        },
        (Some(src), Some(dst), Some(stateful)) => {
            Stored::Valid(super::rule::Rule::pair(PolicyRule::new(src, dst), stateful))
        }
        _ => Stored::Invalid {
            raw,
            problem: "identity 0 is not an identity",
        },
    }
}

impl PolicyMap {
    pub(super) fn new(map: MapHandle) -> Self {
        Self { map }
    }

    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// The rule of `pair`: `Some(stateful)`, or `None` when the pair has no
    /// (valid) rule.
    pub fn get(&self, pair: PolicyRule) -> Result<Option<bool>> {
        let value = self
            .map
            .lookup(bytemuck::bytes_of(&key(pair)), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("look up {pair} in {MAP}"), e))?;
        Ok(value.and_then(|v| stateful_of(v[0])))
    }

    /// Whether `pair` is allowed (statefully or not).
    pub fn contains(&self, pair: PolicyRule) -> Result<bool> {
        Ok(self.get(pair)?.is_some())
    }

    /// Allows `pair`, stateless: the plan's rule. Returns false when it was
    /// already allowed so.
    pub fn allow(&self, pair: PolicyRule) -> Result<bool> {
        let before = self.get(pair)?;
        self.set_all(&[(pair, false)])?;
        Ok(before != Some(false))
    }

    /// Allows every pair, stateless (the plan's rules), all or none.
    /// Returns how many were not allowed so before.
    pub fn allow_all(&self, pairs: &[PolicyRule]) -> Result<usize> {
        let rules: Vec<(PolicyRule, bool)> = pairs.iter().map(|p| (*p, false)).collect();
        Ok(self
            .set_all(&rules)?
            .into_iter()
            .filter(|b| *b != Some(false))
            .count())
    }

    /// Allows every pair (statefully or not), or none of them when the map
    /// lacks room for the new ones (what a failed batch wrote is undone).
    /// Returns the rules each pair had before (`None`: none).
    pub fn set_all(&self, rules: &[(PolicyRule, bool)]) -> Result<Vec<Option<bool>>> {
        let present: HashMap<Vec<u8>, Vec<u8>> = dump(&self.map, MAP)?.into_iter().collect();
        let before: Vec<Option<bool>> = rules
            .iter()
            .map(|(pair, _)| {
                present
                    .get(bytemuck::bytes_of(&key(*pair)))
                    .and_then(|v| stateful_of(v[0]))
            })
            .collect();
        let mut wanted: HashMap<Vec<u8>, u8> = HashMap::with_capacity(rules.len());
        for (pair, stateful) in rules {
            wanted.insert(bytemuck::bytes_of(&key(*pair)).to_vec(), action(*stateful));
        }
        wanted.retain(|k, a| present.get(k).map(|v| v[0]) != Some(*a));
        if wanted.is_empty() {
            return Ok(before);
        }
        let new = wanted.keys().filter(|k| !present.contains_key(*k)).count();
        let needed = present.len() + new;
        super::check_room(MAP, self.capacity(), needed)?;
        let keys: Vec<u8> = wanted.keys().flatten().copied().collect();
        let values: Vec<u8> = wanted.values().copied().collect();
        if let Err(e) =
            self.map
                .update_batch(&keys, &values, wanted.len() as u32, MapFlags::ANY, MapFlags::ANY)
        {
            // A concurrent writer filled the map: put back what was there.
            self.restore(&wanted, &present);
            return Err(insert_error(MAP, self.capacity(), needed, e));
        }
        Ok(before)
    }

    /// Puts the keys of `written` back as `present` had them.
    pub(super) fn restore(&self, written: &HashMap<Vec<u8>, u8>, present: &HashMap<Vec<u8>, Vec<u8>>) {
        for k in written.keys() {
            let _ = match present.get(k) {
                Some(v) => self.map.update(k, v, MapFlags::ANY),
                None => self.map.delete(k),
            };
        }
    }

    /// Removes `rule`. Returns false when it was not there.
    pub fn revoke(&self, rule: PolicyRule) -> Result<bool> {
        self.revoke_raw(rule.src.get(), rule.dst.get())
    }

    /// Removes the entry with this key, valid or not (an identity may be 0
    /// here, to remove an invalid entry). Returns false when it was not there.
    pub fn revoke_raw(&self, src: u32, dst: u32) -> Result<bool> {
        let key = types::policy_key {
            src_id: src,
            dst_id: dst,
        };
        match self.map.delete(bytemuck::bytes_of(&key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::bpf(format!("remove {src} -> {dst} from {MAP}"), e)),
        }
    }

    /// Number of rules (counted by walking the map).
    pub fn len(&self) -> Result<usize> {
        Ok(dump(&self.map, MAP)?.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.map.keys().next().is_none())
    }

    /// Every pair rule, invalid ones included, in no particular order.
    pub fn list(&self) -> Result<Vec<StoredRule>> {
        Ok(dump(&self.map, MAP)?
            .into_iter()
            .map(|(k, v)| pair_from(&k, &v))
            .collect())
    }

    /// Removes every rule. Returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        super::clear(&self.map, MAP)
    }
}
