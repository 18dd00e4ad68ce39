//! Which CNI attachment a host veth belongs to: the alias the CNI plugin
//! gives it ([`PodAttachment::alias`], read back by the plugin's DEL and GC
//! and by `policyctl monitor`), and attachment_map, where ADD records the
//! attachment of each interface record (interface_map) by the same
//! ifindex. GC knows from it whose record each is, and which lease to
//! give back, even after the veth is gone or renamed.

use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::{Error, Result};
use crate::local_maps::LocalMap;

/// Prefix of a host veth's alias: "ebpfcni/<network>/<container id>/<ifname>".
pub const ALIAS_PREFIX: &str = "ebpfcni/";

/// The longest alias the kernel keeps (IFALIASZ - 1).
pub const ALIAS_MAX: usize = 255;

/// attachment_map's value: the alias, NUL-padded.
pub(crate) const ATTACHMENT_SIZE: usize = ALIAS_MAX + 1;

/// A CNI attachment: the network, the container and its interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodAttachment {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl PodAttachment {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Self {
        Self {
            network: network.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// The host veth's alias that records this attachment.
    pub fn alias(&self) -> String {
        format!(
            "{ALIAS_PREFIX}{}/{}/{}",
            self.network, self.container_id, self.ifname
        )
    }

    /// The attachment an alias records; `None` for aliases we did not write.
    /// Network names and container ids cannot hold '/', so the split is exact.
    pub fn from_alias(alias: &str) -> Option<Self> {
        let mut parts = alias.strip_prefix(ALIAS_PREFIX)?.splitn(3, '/');
        let (network, container_id, ifname) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Self::new(network, container_id, ifname))
    }

    /// "CONTAINER_ID/IFNAME": the pod, for people.
    pub fn pod(&self) -> String {
        format!("{}/{}", self.container_id, self.ifname)
    }
}

/// attachment_map: host veth ifindex -> its [`PodAttachment`], written by
/// the CNI plugin beside each interface record.
#[derive(Debug)]
pub struct AttachmentMap {
    map: MapHandle,
}

impl AttachmentMap {
    /// Opens the map, `None` when it is not pinned under `pin_dir`
    /// (nothing recorded yet, or pins of a release without it).
    pub fn open(pin_dir: &Path) -> Result<Option<Self>> {
        Ok(LocalMap::Attachments.open(pin_dir)?.map(|map| Self { map }))
    }

    /// Opens the map, creating it when missing.
    pub fn open_or_create(pin_dir: &Path) -> Result<Self> {
        LocalMap::Attachments
            .open_or_create(pin_dir)
            .map(|map| Self { map })
    }

    /// Records that the host veth `ifindex` is `attachment`'s.
    pub fn set(&self, ifindex: u32, attachment: &PodAttachment) -> Result<()> {
        let alias = attachment.alias();
        if alias.len() > ALIAS_MAX {
            return Err(Error::io(
                format!("record the attachment of ifindex {ifindex}: {alias:?} is over {ALIAS_MAX} bytes"),
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        let mut value = [0u8; ATTACHMENT_SIZE];
        value[..alias.len()].copy_from_slice(alias.as_bytes());
        self.map
            .update(&ifindex.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(|e| {
                Error::bpf(
                    format!("record ifindex {ifindex} in {}", LocalMap::Attachments),
                    e,
                )
            })
    }

    /// The attachment recorded for `ifindex`, if any.
    pub fn get(&self, ifindex: u32) -> Result<Option<PodAttachment>> {
        Ok(self
            .map
            .lookup(&ifindex.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| {
                Error::bpf(
                    format!("look up ifindex {ifindex} in {}", LocalMap::Attachments),
                    e,
                )
            })?
            .and_then(|v| decode(&v)))
    }

    /// Removes the record of `ifindex`. Returns false when there was none.
    pub fn remove(&self, ifindex: u32) -> Result<bool> {
        match self.map.delete(&ifindex.to_ne_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::bpf(
                format!("remove ifindex {ifindex} from {}", LocalMap::Attachments),
                e,
            )),
        }
    }

    /// Every record, by ifindex (entries that do not decode are left out).
    pub fn list(&self) -> Result<Vec<(u32, PodAttachment)>> {
        let mut records = Vec::new();
        for key in self.map.keys() {
            let ifindex = u32::from_ne_bytes(key.as_slice().try_into().expect("4-byte key"));
            if let Some(attachment) = self.get(ifindex)? {
                records.push((ifindex, attachment));
            }
        }
        records.sort_unstable_by_key(|(i, _)| *i);
        Ok(records)
    }
}

fn decode(value: &[u8]) -> Option<PodAttachment> {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    PodAttachment::from_alias(std::str::from_utf8(&value[..end]).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_round_trip_their_attachment() {
        let a = PodAttachment::new("net-1.a", "ctr_9", "eth0");
        assert_eq!(a.alias(), "ebpfcni/net-1.a/ctr_9/eth0");
        assert_eq!(PodAttachment::from_alias(&a.alias()), Some(a.clone()));
        assert_eq!(a.pod(), "ctr_9/eth0");
        assert_eq!(PodAttachment::from_alias("someone else's"), None);
        assert_eq!(PodAttachment::from_alias("ebpfcni/net/ctr"), None);
        let mut value = [0u8; ATTACHMENT_SIZE];
        value[..a.alias().len()].copy_from_slice(a.alias().as_bytes());
        assert_eq!(decode(&value), Some(a));
    }
}
