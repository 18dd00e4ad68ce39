//! Delegation to the IPAM plugin named in `ipam.type`, found on CNI_PATH,
//! per the spec: same stdin config, same environment, CNI_COMMAND set to
//! the operation.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::{Error, Result, INCOMPATIBLE_VERSION, IPAM};
use crate::result::IpamResult;
use crate::SUPPORTED_VERSIONS;

/// Overrides of the inherited CNI_* environment for one call.
#[derive(Debug, Default, Clone)]
pub struct CallEnv {
    pub container_id: Option<String>,
    pub ifname: Option<String>,
    pub netns: Option<String>,
}

pub struct Ipam<'a> {
    pub plugin: &'a str,
    pub cni_path: &'a str,
    /// The network config exactly as we received it.
    pub stdin: &'a [u8],
}

impl Ipam<'_> {
    /// The plugin binary, if CNI_PATH has it.
    pub fn find(&self) -> Option<PathBuf> {
        self.cni_path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join(self.plugin))
            .find(|p| p.is_file())
    }

    fn binary(&self) -> Result<PathBuf> {
        self.find().ok_or_else(|| Error::InvalidConfig {
            msg: format!("IPAM plugin {:?} not found on CNI_PATH", self.plugin),
            details: format!("CNI_PATH={}", self.cni_path),
        })
    }

    pub fn add(&self, env: &CallEnv) -> Result<IpamResult> {
        let out = self.call("ADD", env)?;
        serde_json::from_slice(&out).map_err(|e| Error::Ipam {
            code: IPAM,
            msg: format!("failed to decode the result of IPAM plugin {}: {e}", self.plugin),
            details: String::from_utf8_lossy(&out).into_owned(),
        })
    }

    pub fn del(&self, env: &CallEnv) -> Result<()> {
        self.call("DEL", env).map(drop)
    }

    pub fn check(&self, env: &CallEnv) -> Result<()> {
        self.call("CHECK", env).map(drop)
    }

    /// Runs `command`; when the plugin says our cniVersion is too new for it,
    /// asks it for its versions and retries once with the newest it supports
    /// among ours (1.0.0 and 1.1.0 results have the same shape).
    fn call(&self, command: &str, env: &CallEnv) -> Result<Vec<u8>> {
        let binary = self.binary()?;
        match self.exec(&binary, command, env, self.stdin) {
            Err(e) if e.code() == INCOMPATIBLE_VERSION => {
                let Some(version) = self.best_version(&binary)? else {
                    return Err(e);
                };
                let mut config: Value = serde_json::from_slice(self.stdin)
                    .map_err(|e| Error::ipam(format!("re-encode config for IPAM: {e}")))?;
                config["cniVersion"] = Value::String(version.clone());
                if let Some(prev) = config.get_mut("prevResult").and_then(Value::as_object_mut) {
                    prev.insert("cniVersion".into(), Value::String(version.clone()));
                }
                log::info!(
                    "IPAM plugin {} does not speak our version; retrying with {version}",
                    self.plugin
                );
                let stdin = serde_json::to_vec(&config).expect("a Value serialises");
                self.exec(&binary, command, env, &stdin)
            }
            other => other,
        }
    }

    fn best_version(&self, binary: &PathBuf) -> Result<Option<String>> {
        let out = self.exec(
            binary,
            "VERSION",
            &CallEnv::default(),
            b"{\"cniVersion\":\"0.4.0\"}",
        )?;
        let reply: Value = serde_json::from_slice(&out).unwrap_or_default();
        let theirs: Vec<&str> = reply["supportedVersions"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        Ok(SUPPORTED_VERSIONS
            .iter()
            .rev()
            .find(|v| theirs.contains(v))
            .map(|v| v.to_string()))
    }

    fn exec(&self, binary: &PathBuf, command: &str, env: &CallEnv, stdin: &[u8]) -> Result<Vec<u8>> {
        let mut cmd = Command::new(binary);
        cmd.env("CNI_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(id) = &env.container_id {
            cmd.env("CNI_CONTAINERID", id);
        }
        if let Some(ifname) = &env.ifname {
            cmd.env("CNI_IFNAME", ifname);
        }
        if let Some(netns) = &env.netns {
            cmd.env("CNI_NETNS", netns);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::ipam(format!("failed to run IPAM plugin {}: {e}", binary.display())))?;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A plugin may exit before reading its input; its verdict matters, not EPIPE.
        let _ = pipe.write_all(stdin);
        drop(pipe);
        let out = child
            .wait_with_output()
            .map_err(|e| Error::ipam(format!("failed to wait for IPAM plugin {}: {e}", self.plugin)))?;
        if !out.stderr.is_empty() {
            log::info!(
                "IPAM {} {command} stderr: {}",
                self.plugin,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if out.status.success() {
            return Ok(out.stdout);
        }
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let code = reply["code"].as_u64().unwrap_or(0);
        let msg = reply["msg"].as_str().unwrap_or("").to_string();
        let details = reply["details"].as_str().unwrap_or("").to_string();
        // Spec codes (< 100) keep their meaning for the runtime (e.g. 11
        // "try again later"); the plugin's private codes become ours.
        let code = match u32::try_from(code) {
            Ok(c @ 1..=99) => c,
            _ => IPAM,
        };
        let msg = if msg.is_empty() {
            format!(
                "IPAM plugin {} {command} failed ({}): {}",
                self.plugin,
                out.status,
                String::from_utf8_lossy(&out.stdout).trim()
            )
        } else {
            format!("IPAM plugin {} {command} failed: {msg}", self.plugin)
        };
        Err(Error::Ipam { code, msg, details })
    }
}
