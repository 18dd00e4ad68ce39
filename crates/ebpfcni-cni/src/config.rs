//! The network configuration, as the runtime passes it on stdin.

use std::path::PathBuf;

use ebpfcni::AttachMode;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::result::{Dns, IpamResult};
use crate::versions::SUPPORTED_VERSIONS;

/// The `type` this plugin answers to.
pub const PLUGIN_TYPE: &str = "ebpfcni";

/// Our network configuration: the standard fields plus `pinDir`, `mtu`, `logFile`, `attach`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    /// Where the maps are pinned (default [`ebpfcni::DEFAULT_PIN_DIR`]).
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
    /// MTU of both veth ends; the kernel default (1500) when absent.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Diagnostics go here (appended) instead of stderr.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// How the program is attached to the host veth: "clsact" (the
    /// default) or "tcx"; see [`NetConf::attach_mode`].
    #[serde(default)]
    pub attach: Option<String>,
    /// How a packet between two pods of the node reaches the receiving pod:
    /// "redirect" (the default: straight from the sender's hook, past the
    /// node's stack and netfilter) or "stack" (forwarded by the node); see
    /// [`NetConf::local_redirect`]. The receiving pod's network decides.
    #[serde(default)]
    pub local_delivery: Option<String>,
    /// Agent mode: the node agent's socket. The agent gives the pod its
    /// identity from its labels (and its address when there is no "ipam").
    #[serde(default)]
    pub agent: Option<PathBuf>,
    /// The CNI conventions' `args`: `args.cni.labels` are the container's labels.
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub dns: Option<Dns>,
    /// The result of the previous plugin in a chain (CHECK: ours).
    #[serde(default)]
    pub prev_result: Option<IpamResult>,
    /// GC: the attachments the runtime still knows about.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type")]
    pub plugin_type: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The values of `localDelivery`: whether the pods of the network are
/// delivered to by redirect.
const LOCAL_DELIVERY: [(&str, bool); 2] = [("redirect", true), ("stack", false)];
/// Redirect since issue 22's figures (BENCHMARKS.md, section 9).
const LOCAL_DELIVERY_DEFAULT: &str = "redirect";

/// The values of `attach`.
const ATTACH_MODES: [(&str, AttachMode); 2] = [("clsact", AttachMode::Clsact), ("tcx", AttachMode::Tcx)];

impl NetConf {
    /// `attach` (checked by [`parse`]): clsact filters unless it says "tcx".
    pub fn attach_mode(&self) -> AttachMode {
        ATTACH_MODES
            .iter()
            .find(|(name, _)| Some(*name) == self.attach.as_deref())
            .map_or(AttachMode::Clsact, |(_, mode)| *mode)
    }

    /// `localDelivery` (checked by [`parse`]): redirect unless it says
    /// "stack" (for a node firewall that must see pod-to-pod packets).
    pub fn local_redirect(&self) -> bool {
        LOCAL_DELIVERY
            .iter()
            .find(|(name, _)| *name == self.local_delivery.as_deref().unwrap_or(LOCAL_DELIVERY_DEFAULT))
            .is_some_and(|(_, redirect)| *redirect)
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(ebpfcni::DEFAULT_PIN_DIR))
    }

    /// The container's labels from `args.cni.labels` (the CNI conventions'
    /// `[{"key": .., "value": ..}]`), checked by [`parse`].
    pub fn labels(&self) -> Result<ebpfcni_api::Labels> {
        let Some(list) = self.args.as_ref().and_then(|a| a.pointer("/cni/labels")) else {
            return Ok(Default::default());
        };
        let bad = |why: &str| Error::config(format!("args.cni.labels: {why}"));
        let list = list
            .as_array()
            .ok_or_else(|| bad("must be a list of {\"key\", \"value\"} objects"))?;
        let mut labels = ebpfcni_api::Labels::new();
        for (i, item) in list.iter().enumerate() {
            let field = |name: &str| {
                item.get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&format!("entry {i} needs a string \"{name}\"")))
            };
            let (key, value) = (field("key")?, field("value")?);
            if labels
                .insert(key.to_string(), value.to_string())
                .is_some_and(|v| v != value)
            {
                return Err(bad(&format!(
                    "label {key:?} is given twice with different values"
                )));
            }
        }
        Ok(labels)
    }

    /// The IPAM section, which every command but VERSION needs (in agent
    /// mode, none: the agent leases addresses).
    pub fn ipam(&self) -> Result<&IpamConf> {
        self.ipam
            .as_ref()
            .ok_or_else(|| Error::config("missing \"ipam\" section"))
    }
}

/// The `cniVersion` of a config, if it has a usable one (for error replies).
pub fn version_of(stdin: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    let version = value.get("cniVersion")?.as_str()?;
    SUPPORTED_VERSIONS.contains(&version).then(|| version.to_string())
}

/// The smallest `mtu`: IPv6's minimum (see [`parse`]).
const MIN_MTU: u32 = 1280;

/// Parses and validates a network configuration.
pub fn parse(stdin: &[u8]) -> Result<NetConf> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| Error::Decode(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(Error::Decode("not a JSON object".into()));
    };
    let field = |name: &str| -> Result<&str> {
        match object.get(name) {
            None => Err(Error::config(format!("missing \"{name}\""))),
            Some(v) => v
                .as_str()
                .ok_or_else(|| Error::config(format!("\"{name}\" must be a string"))),
        }
    };
    let version = field("cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(Error::IncompatibleVersion {
            version: version.to_string(),
        });
    }
    let name = field("name")?;
    if !valid_network_name(name) {
        return Err(Error::InvalidConfig {
            msg: format!("invalid network name {name:?}"),
            details:
                "a network name starts with a letter or digit and has only letters, digits, '_', '.', '-'"
                    .into(),
        });
    }
    let plugin_type = field("type")?;
    if plugin_type != PLUGIN_TYPE {
        return Err(Error::config(format!(
            "type is {plugin_type:?}, this plugin is {PLUGIN_TYPE:?}"
        )));
    }
    let conf: NetConf = serde_json::from_value(value).map_err(|e| Error::config(e.to_string()))?;
    if let Some(ipam) = &conf.ipam {
        if ipam.plugin_type.is_empty() || ipam.plugin_type.contains('/') || ipam.plugin_type.starts_with('.')
        {
            return Err(Error::config(format!("bad ipam type {:?}", ipam.plugin_type)));
        }
    }
    if let Some(mtu) = conf.mtu {
        if !(MIN_MTU..=65535).contains(&mtu) {
            return Err(Error::config(format!(
                "mtu {mtu} outside {MIN_MTU}..=65535{}",
                if mtu >= 68 {
                    ": below 1280, IPv6's minimum, the kernel takes IPv6 off an interface by itself \
                     and puts it back (link-local address and all) when the MTU is raised, so the \
                     plugin could not keep IPv6 off the pod's veth (the program judges IPv4 only)"
                } else {
                    ""
                }
            )));
        }
    }
    if let Some(attach) = &conf.attach {
        if !ATTACH_MODES.iter().any(|(name, _)| name == attach) {
            return Err(Error::config(format!(
                "attach is {attach:?}: \"clsact\" or \"tcx\""
            )));
        }
    }
    if let Some(delivery) = &conf.local_delivery {
        if !LOCAL_DELIVERY.iter().any(|(name, _)| name == delivery) {
            return Err(Error::config(format!(
                "localDelivery is {delivery:?}: \"redirect\" or \"stack\""
            )));
        }
    }
    if let Some(agent) = &conf.agent {
        if !agent.is_absolute() {
            return Err(Error::config(format!(
                "agent is {:?}: the agent's socket as an absolute path (e.g. {:?})",
                agent.display().to_string(),
                ebpfcni_api::DEFAULT_SOCKET
            )));
        }
    }
    conf.labels()?;
    Ok(conf)
}

fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{DECODE, INCOMPATIBLE_VERSION, INVALID_CONFIG};

    fn code(stdin: &str) -> u32 {
        parse(stdin.as_bytes()).unwrap_err().code()
    }

    #[test]
    fn an_mtu_below_ipv6s_minimum_is_refused_with_the_reason() {
        let with = |mtu: u32| format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"ebpfcni","mtu":{mtu}}}"#);
        for mtu in [68, 1279] {
            let msg = parse(with(mtu).as_bytes()).unwrap_err().to_string();
            assert!(
                msg.contains("IPv6's minimum") && msg.contains(&mtu.to_string()),
                "{msg}"
            );
        }
        assert_eq!(parse(with(1280).as_bytes()).unwrap().mtu, Some(1280));
    }

    #[test]
    fn config_errors_have_the_spec_codes() {
        let ok = r#"{"cniVersion":"1.0.0","name":"n","type":"ebpfcni","ipam":{"type":"host-local"}}"#;
        let conf = parse(ok.as_bytes()).unwrap();
        assert_eq!(conf.pin_dir(), PathBuf::from(ebpfcni::DEFAULT_PIN_DIR));
        assert_eq!(code("{"), DECODE);
        assert_eq!(code("42"), DECODE);
        assert_eq!(
            code(r#"{"cniVersion":"2.0.0","name":"n","type":"ebpfcni"}"#),
            INCOMPATIBLE_VERSION
        );
        assert_eq!(code(r#"{"cniVersion":"1.0.0","type":"ebpfcni"}"#), INVALID_CONFIG);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n"}"#), INVALID_CONFIG);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"-n","type":"ebpfcni"}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","type":"ebpfcni","mtu":20}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","type":"ebpfcni","ipam":{"type":"../x"}}"#),
            INVALID_CONFIG
        );
    }

    #[test]
    fn local_delivery_is_redirect_unless_it_says_stack() {
        let with = |value: &str| {
            let extra = if value.is_empty() {
                String::new()
            } else {
                format!(r#","localDelivery":{value}"#)
            };
            parse(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"ebpfcni"{extra}}}"#).as_bytes())
        };
        assert!(with("").unwrap().local_redirect());
        assert!(with(r#""redirect""#).unwrap().local_redirect());
        assert!(!with(r#""stack""#).unwrap().local_redirect());
        for bad in [r#""Stack""#, r#""bypass""#, r#""""#] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.code(), INVALID_CONFIG, "{bad}");
            assert!(err.to_string().contains("localDelivery"), "{bad}: {err}");
        }
    }

    #[test]
    fn attach_is_clsact_unless_it_says_tcx() {
        let with = |attach: &str| {
            let extra = if attach.is_empty() {
                String::new()
            } else {
                format!(r#","attach":{attach}"#)
            };
            parse(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"ebpfcni"{extra}}}"#).as_bytes())
        };
        assert_eq!(with("").unwrap().attach_mode(), AttachMode::Clsact);
        assert_eq!(with(r#""clsact""#).unwrap().attach_mode(), AttachMode::Clsact);
        assert_eq!(with(r#""tcx""#).unwrap().attach_mode(), AttachMode::Tcx);
        for bad in [r#""TCX""#, r#""xdp""#, r#""""#, "1"] {
            assert_eq!(with(bad).unwrap_err().code(), INVALID_CONFIG, "{bad}");
        }
    }
}
