//! Delegation to the IPAM plugin named in `ipam.type`, found on CNI_PATH,
//! per the spec: same stdin config, same environment, CNI_COMMAND set to
//! the operation.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::{Error, Result, INCOMPATIBLE_VERSION, IPAM};
use crate::result::IpamResult;
use crate::versions::SUPPORTED_VERSIONS;

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

/// The newest of our versions among `theirs`.
fn best_of(theirs: &[String]) -> Option<String> {
    SUPPORTED_VERSIONS
        .iter()
        .rev()
        .find(|v| theirs.iter().any(|t| t == *v))
        .map(|v| v.to_string())
}

/// What an IPAM plugin binary said it supports, remembered in
/// /run/ebpfcni (a file named after the binary's path, size and mtime, so
/// that an upgraded plugin is asked again). Best effort: when the file
/// cannot be read or written, the plugin is asked.
struct VersionCache {
    path: PathBuf,
}

impl VersionCache {
    const DIR: &'static str = ebpfcni::RUN_DIR;

    fn of(binary: &std::path::Path) -> Option<Self> {
        ebpfcni::ipam_versions_file(binary).map(|path| Self { path })
    }

    fn read(&self) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let versions: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        (!versions.is_empty()).then_some(versions)
    }

    /// Writes through a temporary file and a rename: a concurrent reader
    /// sees the old file or the new one, never half of one.
    fn write(&self, versions: &[String]) {
        if versions.is_empty() || std::fs::create_dir_all(Self::DIR).is_err() {
            return;
        }
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, versions.join(" ")).is_ok() && std::fs::rename(&tmp, &self.path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
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

    /// ADD. The outer error: the plugin failed (it holds nothing for this
    /// attachment). The inner one: the plugin succeeded, so it holds a
    /// lease, but its result cannot be decoded; the caller gives the lease
    /// back (DEL).
    pub fn add(&self, env: &CallEnv) -> Result<Result<IpamResult>> {
        let out = self.call("ADD", env)?;
        Ok(serde_json::from_slice(&out).map_err(|e| Error::Ipam {
            code: IPAM,
            msg: format!("failed to decode the result of IPAM plugin {}: {e}", self.plugin),
            details: String::from_utf8_lossy(&out).into_owned(),
        }))
    }

    pub fn del(&self, env: &CallEnv) -> Result<()> {
        self.call("DEL", env).map(drop)
    }

    pub fn check(&self, env: &CallEnv) -> Result<()> {
        self.call("CHECK", env).map(drop)
    }

    /// Runs `command`; when the plugin says our cniVersion is too new for it,
    /// asks it for its versions and retries once with the newest it supports
    /// among ours (1.0.0 and 1.1.0 results have the same shape). What the
    /// plugin supports is remembered (see [`VersionCache`]), so that later
    /// calls go straight to a version it speaks: one exec, not three.
    fn call(&self, command: &str, env: &CallEnv) -> Result<Vec<u8>> {
        let binary = self.binary()?;
        let ours = serde_json::from_slice::<Value>(self.stdin)
            .ok()
            .and_then(|c| c["cniVersion"].as_str().map(str::to_owned));
        let cache = VersionCache::of(&binary);
        if let (Some(ours), Some(theirs)) = (&ours, cache.as_ref().and_then(VersionCache::read)) {
            if !theirs.iter().any(|v| v == ours) {
                if let Some(version) = best_of(&theirs) {
                    return self.exec(&binary, command, env, &self.with_version(&version)?);
                }
            }
        }
        match self.exec(&binary, command, env, self.stdin) {
            Err(e) if e.code() == INCOMPATIBLE_VERSION => {
                let theirs = self.versions(&binary)?;
                if let Some(cache) = &cache {
                    cache.write(&theirs);
                }
                let Some(version) = best_of(&theirs) else {
                    return Err(e);
                };
                log::info!(
                    "IPAM plugin {} does not speak our version; retrying with {version}",
                    self.plugin
                );
                self.exec(&binary, command, env, &self.with_version(&version)?)
            }
            other => other,
        }
    }

    /// Our config with `version` as its cniVersion (and its prevResult's).
    fn with_version(&self, version: &str) -> Result<Vec<u8>> {
        let mut config: Value = serde_json::from_slice(self.stdin)
            .map_err(|e| Error::ipam(format!("re-encode config for IPAM: {e}")))?;
        config["cniVersion"] = Value::String(version.to_owned());
        if let Some(prev) = config.get_mut("prevResult").and_then(Value::as_object_mut) {
            prev.insert("cniVersion".into(), Value::String(version.to_owned()));
        }
        Ok(serde_json::to_vec(&config).expect("a Value serialises"))
    }

    /// The versions the plugin says it supports (CNI_COMMAND=VERSION).
    fn versions(&self, binary: &PathBuf) -> Result<Vec<String>> {
        let out = self.exec(
            binary,
            "VERSION",
            &CallEnv::default(),
            b"{\"cniVersion\":\"0.4.0\"}",
        )?;
        let reply: Value = serde_json::from_slice(&out).unwrap_or_default();
        Ok(reply["supportedVersions"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default())
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
