//! Identities: one number per label set across the cluster (see the
//! crate's documentation for the keys and the rules).

use std::collections::BTreeSet;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};

use crate::{padded, Error, Labels, Result, Store, FIRST_LABEL_IDENTITY};

/// How often an allocation retries when it loses to concurrent writers.
const TRIES: usize = 64;

/// A label set as it appears in keys and values: JSON with sorted keys
/// (a `BTreeMap` serializes in key order, so equal sets give equal text).
pub(crate) fn labels_text(labels: &Labels) -> String {
    serde_json::to_string(labels).expect("labels serialize")
}

impl Store {
    fn id_key(&self, id: u32) -> String {
        self.key(&format!("identities/id/{}", padded(id)))
    }

    fn labels_key(&self, labels: &Labels) -> String {
        self.key(&format!("identities/labels/{}", labels_text(labels)))
    }

    fn users_prefix(&self, id: u32) -> String {
        self.key(&format!("identities/users/{}/", padded(id)))
    }

    pub(crate) fn user_key(&self, id: u32, node: &str) -> String {
        format!("{}{node}", self.users_prefix(id))
    }

    /// The number of a label set, when the cluster has one.
    pub async fn identity_of(&self, labels: &Labels) -> Result<Option<u32>> {
        let key = self.labels_key(labels);
        let resp = self.client.kv_client().get(key.clone(), None).await?;
        resp.kvs()
            .first()
            .map(|kv| parse_id(&key, kv.value()))
            .transpose()
    }

    /// The label set of a number, when it is allocated.
    pub async fn labels_of(&self, id: u32) -> Result<Option<Labels>> {
        let key = self.id_key(id);
        let resp = self.client.kv_client().get(key.clone(), None).await?;
        resp.kvs()
            .first()
            .map(|kv| parse_labels(&key, kv.value()))
            .transpose()
    }

    /// The nodes that use a number.
    pub async fn identity_users(&self, id: u32) -> Result<Vec<String>> {
        let prefix = self.users_prefix(id);
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let resp = self.client.kv_client().get(prefix.clone(), Some(opts)).await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned())
            .collect())
    }

    /// Every allocated number and its label set.
    pub async fn identities(&self) -> Result<Vec<(u32, Labels)>> {
        let prefix = self.key("identities/id/");
        let opts = GetOptions::new().with_prefix();
        let resp = self.client.kv_client().get(prefix.clone(), Some(opts)).await?;
        resp.kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                Ok((
                    parse_id(&key, &kv.key()[prefix.len()..])?,
                    parse_labels(&key, kv.value())?,
                ))
            })
            .collect()
    }

    /// The number of `labels` for `node`, allocating it when the cluster
    /// has none, and marking `node` as a user (its key under `lease`).
    pub(crate) async fn acquire_identity(&self, labels: &Labels, node: &str, lease: i64) -> Result<u32> {
        let text = labels_text(labels);
        let lkey = self.labels_key(labels);
        let mut kv = self.client.kv_client();
        for _ in 0..TRIES {
            let resp = kv.get(lkey.clone(), None).await?;
            if let Some(held) = resp.kvs().first() {
                // Known: add our user key while the set still has that
                // number (a GC between our read and this write fails it).
                let id = parse_id(&lkey, held.value())?;
                let txn = Txn::new()
                    .when([
                        Compare::mod_revision(lkey.clone(), CompareOp::Equal, held.mod_revision()),
                        Compare::version(self.id_key(id), CompareOp::Greater, 0),
                    ])
                    .and_then([TxnOp::put(
                        self.user_key(id, node),
                        "",
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                if kv.txn(txn).await?.succeeded() {
                    return Ok(id);
                }
                continue;
            }
            // New: take the next free number, if nobody took the set or the
            // number meanwhile.
            let id = self.free_identity().await?;
            let ikey = self.id_key(id);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(lkey.clone(), CompareOp::Equal, 0),
                    Compare::create_revision(ikey.clone(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(lkey.clone(), id.to_string(), None),
                    TxnOp::put(ikey, text.clone(), None),
                    TxnOp::put(
                        self.user_key(id, node),
                        "",
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                ]);
            if kv.txn(txn).await?.succeeded() {
                return Ok(id);
            }
        }
        Err(Error::Contention("identity allocation"))
    }

    /// Removes `node`'s user key of `id`.
    pub(crate) async fn drop_identity_user(&self, id: u32, node: &str) -> Result<()> {
        self.client
            .kv_client()
            .delete(self.user_key(id, node), None)
            .await?;
        Ok(())
    }

    /// A number above every allocated one (or the lowest free one when the
    /// top is taken). Numbers are not reused soon after they are freed, so
    /// a stale cache meets a freed number rarely.
    async fn free_identity(&self) -> Result<u32> {
        let prefix = self.key("identities/id/");
        let opts = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(1);
        let resp = self.client.kv_client().get(prefix.clone(), Some(opts)).await?;
        let Some(top) = resp.kvs().first() else {
            return Ok(FIRST_LABEL_IDENTITY);
        };
        let top = parse_id(&prefix, &top.key()[prefix.len()..])?;
        if let Some(next) = top.checked_add(1) {
            return Ok(next.max(FIRST_LABEL_IDENTITY));
        }
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let resp = self.client.kv_client().get(prefix.clone(), Some(opts)).await?;
        let used: BTreeSet<u32> = resp
            .kvs()
            .iter()
            .filter_map(|kv| parse_id(&prefix, &kv.key()[prefix.len()..]).ok())
            .collect();
        (FIRST_LABEL_IDENTITY..=u32::MAX)
            .find(|id| !used.contains(id))
            .ok_or(Error::IdentitiesExhausted)
    }

    /// Frees every number no node uses; returns the freed ones. Each is
    /// deleted in a transaction that checks it has no user key and has not
    /// changed, so a node that starts using it concurrently either adds its
    /// key first (and the number stays) or finds it gone (and allocates
    /// anew).
    pub async fn gc_identities(&self) -> Result<Vec<u32>> {
        let users = self.key("identities/users/");
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let resp = self.client.kv_client().get(users.clone(), Some(opts)).await?;
        let used: BTreeSet<u32> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let rest = std::str::from_utf8(&kv.key()[users.len()..]).ok()?;
                rest.split('/').next()?.parse().ok()
            })
            .collect();
        let prefix = self.key("identities/id/");
        let resp = self
            .client
            .kv_client()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut freed = Vec::new();
        let mut kv = self.client.kv_client();
        for held in resp.kvs() {
            let key = String::from_utf8_lossy(held.key()).into_owned();
            let Ok(id) = parse_id(&key, &held.key()[prefix.len()..]) else {
                continue;
            };
            if used.contains(&id) {
                continue;
            }
            let lkey = self.key(&format!(
                "identities/labels/{}",
                String::from_utf8_lossy(held.value())
            ));
            let txn = Txn::new()
                .when([
                    // No key under users/<id>/: a create revision of 0 over
                    // the whole range holds only when the range is empty.
                    Compare::create_revision(self.users_prefix(id), CompareOp::Equal, 0).with_prefix(),
                    Compare::mod_revision(key.clone(), CompareOp::Equal, held.mod_revision()),
                    Compare::value(lkey.clone(), CompareOp::Equal, id.to_string()),
                ])
                .and_then([TxnOp::delete(key, None), TxnOp::delete(lkey, None)]);
            if kv.txn(txn).await?.succeeded() {
                freed.push(id);
            }
        }
        Ok(freed)
    }
}

pub(crate) fn parse_id(key: &str, bytes: &[u8]) -> Result<u32> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Corrupt {
            key: key.to_string(),
            why: format!("{:?} is not an identity number", String::from_utf8_lossy(bytes)),
        })
}

pub(crate) fn parse_labels(key: &str, bytes: &[u8]) -> Result<Labels> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: key.to_string(),
        why: format!("not a label set: {e}"),
    })
}
