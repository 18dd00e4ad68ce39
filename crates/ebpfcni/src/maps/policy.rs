//! policy_map: (source identity, destination identity) -> allow.

use std::collections::HashSet;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

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

const ALLOW: [u8; 1] = [types::ebpfcni_policy_action::EBPFCNI_POLICY_ALLOW.0];

/// A policy_map entry as its bytes say: source, destination, action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawRule {
    pub src: u32,
    pub dst: u32,
    pub action: u8,
}

/// A rule as stored: identity 0 on either side, or an action other than
/// allow, is invalid.
pub type StoredRule = Stored<PolicyRule, RawRule>;

fn rule_from(key: &[u8], value: &[u8]) -> StoredRule {
    let key: types::policy_key = bytemuck::pod_read_unaligned(key);
    let raw = RawRule {
        src: key.src_id,
        dst: key.dst_id,
        action: value[0],
    };
    match (Identity::new(raw.src), Identity::new(raw.dst)) {
        _ if value != ALLOW => Stored::Invalid {
            raw,
            problem: "unknown action (allow is 1)",
        },
        (Some(src), Some(dst)) => Stored::Valid(PolicyRule::new(src, dst)),
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

    /// Allows `rule`. Returns false when it was already allowed.
    pub fn allow(&self, rule: PolicyRule) -> Result<bool> {
        Ok(self.allow_all(&[rule])? == 1)
    }

    /// Allows every rule, or none of them when the map lacks room (or the
    /// kernel refuses part of the batch: what was added is taken back).
    /// Returns how many were not already allowed.
    pub fn allow_all(&self, rules: &[PolicyRule]) -> Result<usize> {
        let mut new: Vec<PolicyRule> = Vec::with_capacity(rules.len());
        let mut seen = HashSet::with_capacity(rules.len());
        for &rule in rules {
            if seen.insert(rule) && !self.contains(rule)? {
                new.push(rule);
            }
        }
        if new.is_empty() {
            return Ok(0);
        }
        let needed = self.len()? + new.len();
        if needed > self.capacity() as usize {
            return Err(Error::MapFull {
                map: MAP,
                capacity: self.capacity(),
                needed,
            });
        }
        let keys: Vec<u8> = new
            .iter()
            .flat_map(|r| bytemuck::bytes_of(&key(*r)).to_vec())
            .collect();
        let values: Vec<u8> = ALLOW.repeat(new.len());
        if let Err(e) = self
            .map
            .update_batch(&keys, &values, new.len() as u32, MapFlags::ANY, MapFlags::ANY)
        {
            // A concurrent writer filled the map: take back our part.
            let _ = self
                .map
                .delete_batch(&keys, new.len() as u32, MapFlags::ANY, MapFlags::ANY);
            return Err(insert_error(MAP, self.capacity(), needed, e));
        }
        Ok(new.len())
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

    pub fn contains(&self, rule: PolicyRule) -> Result<bool> {
        let value = self
            .map
            .lookup(bytemuck::bytes_of(&key(rule)), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("look up {rule} in {MAP}"), e))?;
        Ok(value.as_deref() == Some(&ALLOW[..]))
    }

    /// Number of rules (counted by walking the map).
    pub fn len(&self) -> Result<usize> {
        Ok(dump(&self.map, MAP)?.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.map.keys().next().is_none())
    }

    /// Every entry, invalid ones included, sorted by (source, destination).
    pub fn list(&self) -> Result<Vec<StoredRule>> {
        let mut rules: Vec<StoredRule> = dump(&self.map, MAP)?
            .into_iter()
            .map(|(k, v)| rule_from(&k, &v))
            .collect();
        rules.sort_unstable_by_key(|r| match r {
            Stored::Valid(rule) => (rule.src.get(), rule.dst.get()),
            Stored::Invalid { raw, .. } => (raw.src, raw.dst),
        });
        Ok(rules)
    }

    /// Removes every rule. Returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        super::clear(&self.map, MAP)
    }
}
