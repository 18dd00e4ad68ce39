//! Policies: documents by kind, namespace and name
//! (`P/policies/<kind>/<namespace>/<name>`). The store keeps them as given;
//! the agent parses and validates them before it stores them.

use etcd_client::{GetOptions, Txn, TxnOp};

use crate::{check_segment, Error, Result, Store};

/// Where a policy document lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    /// A key, checked: each part is one key segment (no '/').
    pub fn new(kind: &str, namespace: &str, name: &str) -> Result<Self> {
        check_segment("policy kind", kind)?;
        check_segment("policy namespace", namespace)?;
        check_segment("policy name", name)?;
        Ok(Self {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// `kind/namespace/name`, the part of the etcd key after `P/policies/`.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }

    /// Parses `kind/namespace/name`.
    pub fn from_path(path: &str) -> Result<Self> {
        let parts: Vec<&str> = path.split('/').collect();
        match parts[..] {
            [kind, namespace, name] => Self::new(kind, namespace, name),
            _ => Err(Error::Invalid(format!(
                "policy key {path:?} is not kind/namespace/name"
            ))),
        }
    }
}

impl Store {
    fn policy_key(&self, key: &PolicyKey) -> String {
        self.key(&format!("policies/{}", key.path()))
    }

    /// Stores (creates or replaces) a policy document.
    pub async fn put_policy(&self, key: &PolicyKey, document: &[u8]) -> Result<()> {
        self.client
            .kv_client()
            .put(self.policy_key(key), document, None)
            .await?;
        Ok(())
    }

    /// Stores `put` and deletes `delete` in one transaction: all or none.
    pub async fn change_policies(&self, put: &[(PolicyKey, Vec<u8>)], delete: &[PolicyKey]) -> Result<()> {
        let ops: Vec<TxnOp> = put
            .iter()
            .map(|(k, d)| TxnOp::put(self.policy_key(k), d.clone(), None))
            .chain(delete.iter().map(|k| TxnOp::delete(self.policy_key(k), None)))
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        self.client.kv_client().txn(Txn::new().and_then(ops)).await?;
        Ok(())
    }

    /// Deletes a policy; returns whether it existed.
    pub async fn delete_policy(&self, key: &PolicyKey) -> Result<bool> {
        let resp = self.client.kv_client().delete(self.policy_key(key), None).await?;
        Ok(resp.deleted() > 0)
    }

    /// One policy document.
    pub async fn policy(&self, key: &PolicyKey) -> Result<Option<Vec<u8>>> {
        let resp = self.client.kv_client().get(self.policy_key(key), None).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Every policy document, in key order.
    pub async fn policies(&self) -> Result<Vec<(PolicyKey, Vec<u8>)>> {
        let prefix = self.key("policies/");
        let resp = self
            .client
            .kv_client()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        resp.kvs()
            .iter()
            .map(|kv| {
                let path = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
                Ok((PolicyKey::from_path(&path)?, kv.value().to_vec()))
            })
            .collect()
    }
}
