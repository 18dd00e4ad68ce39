//! The network configuration (stdin) and the CNI_* environment.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, CniResult, DECODE, INCOMPATIBLE_VERSION, INVALID_CONFIG, INVALID_ENV};
use crate::result::{Dns, IpamResult};
use crate::SUPPORTED_VERSIONS;

/// The `type` this plugin answers to.
pub const PLUGIN_TYPE: &str = "ebpfcni";

/// Our network configuration: the standard fields plus `pinDir`, `mtu`, `logFile`.
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

impl NetConf {
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(ebpfcni::DEFAULT_PIN_DIR))
    }

    /// The IPAM section, which every command but VERSION needs.
    pub fn ipam(&self) -> CniResult<&IpamConf> {
        self.ipam
            .as_ref()
            .ok_or_else(|| CniError::new(INVALID_CONFIG, "invalid network config: missing \"ipam\" section"))
    }
}

/// The `cniVersion` of a config, if it has a usable one (for error replies).
pub fn version_of(stdin: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    let version = value.get("cniVersion")?.as_str()?;
    SUPPORTED_VERSIONS.contains(&version).then(|| version.to_string())
}

/// Parses and validates a network configuration.
pub fn parse(stdin: &[u8]) -> CniResult<NetConf> {
    let value: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(DECODE, format!("failed to decode network config: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(CniError::new(
            DECODE,
            "failed to decode network config: not a JSON object",
        ));
    };
    let field = |name: &str| -> CniResult<&str> {
        match object.get(name) {
            None => Err(CniError::new(
                INVALID_CONFIG,
                format!("invalid network config: missing \"{name}\""),
            )),
            Some(v) => v.as_str().ok_or_else(|| {
                CniError::new(
                    INVALID_CONFIG,
                    format!("invalid network config: \"{name}\" must be a string"),
                )
            }),
        }
    };
    let version = field("cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("incompatible CNI version {version:?}"),
        )
        .with_details(format!("supported versions: {}", SUPPORTED_VERSIONS.join(", "))));
    }
    let name = field("name")?;
    if !valid_network_name(name) {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("invalid network config: invalid network name {name:?}"),
        )
        .with_details(
            "a network name starts with a letter or digit and has only letters, digits, '_', '.', '-'",
        ));
    }
    let plugin_type = field("type")?;
    if plugin_type != PLUGIN_TYPE {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("invalid network config: type is {plugin_type:?}, this plugin is {PLUGIN_TYPE:?}"),
        ));
    }
    let conf: NetConf = serde_json::from_value(value)
        .map_err(|e| CniError::new(INVALID_CONFIG, format!("invalid network config: {e}")))?;
    if let Some(ipam) = &conf.ipam {
        if ipam.plugin_type.is_empty() || ipam.plugin_type.contains('/') || ipam.plugin_type.starts_with('.')
        {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!("invalid network config: bad ipam type {:?}", ipam.plugin_type),
            ));
        }
    }
    if let Some(mtu) = conf.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!("invalid network config: mtu {mtu} outside 68..=65535"),
            ));
        }
    }
    Ok(conf)
}

fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The CNI_* environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub path: String,
}

/// Which variables a command requires.
pub struct Needs {
    pub container_id: bool,
    pub netns: bool,
    pub ifname: bool,
    pub path: bool,
}

impl Env {
    /// Reads CNI_COMMAND only (everything else depends on it).
    pub fn command() -> CniResult<String> {
        match std::env::var("CNI_COMMAND") {
            Ok(c) if !c.is_empty() => Ok(c),
            _ => Err(CniError::new(
                INVALID_ENV,
                "required environment variable CNI_COMMAND is missing",
            )),
        }
    }

    /// Reads and validates the variables `needs` asks for.
    pub fn read(command: String, needs: Needs) -> CniResult<Self> {
        let var = |name: &str, required: bool| -> CniResult<String> {
            let value = std::env::var(name).unwrap_or_default();
            if required && value.is_empty() {
                return Err(CniError::new(
                    INVALID_ENV,
                    format!("required environment variable {name} is missing"),
                ));
            }
            Ok(value)
        };
        let env = Self {
            container_id: var("CNI_CONTAINERID", needs.container_id)?,
            netns: var("CNI_NETNS", needs.netns)?,
            ifname: var("CNI_IFNAME", needs.ifname)?,
            path: var("CNI_PATH", needs.path)?,
            command,
        };
        if needs.container_id {
            validate_container_id(&env.container_id)?;
        }
        if needs.ifname {
            validate_ifname(&env.ifname)?;
        }
        validate_args(&std::env::var("CNI_ARGS").unwrap_or_default())?;
        Ok(env)
    }
}

/// The spec's container id rule: alphanumerics, then also '_', '.', '-'.
pub fn validate_container_id(id: &str) -> CniResult<()> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            INVALID_ENV,
            format!("invalid CNI_CONTAINERID {id:?}"),
        ))
    }
}

/// The spec's interface name rule: 1..=15 bytes, not "." or "..", no '/',
/// ':' or whitespace.
pub fn validate_ifname(name: &str) -> CniResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CniError::new(INVALID_ENV, format!("invalid CNI_IFNAME {name:?}")))
    }
}

/// CNI_ARGS is "K=V;K=V". We use no keys, so every key is accepted (as with
/// IgnoreUnknown=1), but the shape must be right.
fn validate_args(args: &str) -> CniResult<()> {
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => {
                return Err(CniError::new(
                    INVALID_ENV,
                    format!("invalid CNI_ARGS pair {pair:?}"),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(stdin: &str) -> u32 {
        parse(stdin.as_bytes()).unwrap_err().code
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
    fn names_and_args_follow_the_spec() {
        assert!(validate_container_id("abc-1.2_3").is_ok());
        assert!(validate_container_id("-abc").is_err());
        assert!(validate_container_id("").is_err());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("0123456789abcdef").is_err());
        assert!(validate_ifname("..").is_err());
        assert!(validate_ifname("a:b").is_err());
        assert!(validate_args("IgnoreUnknown=1;K8S_POD_NAME=web;").is_ok());
        assert!(validate_args("=1").is_err());
    }
}
