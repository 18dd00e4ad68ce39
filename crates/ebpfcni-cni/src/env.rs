//! The CNI_* environment of one invocation, and the command it names.

use std::fmt;

use crate::error::{Error, Result};

/// The operations of the CNI spec (CNI_COMMAND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Status,
        Command::Gc,
        Command::Version,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Reads CNI_COMMAND (everything else depends on it).
    pub fn from_env() -> Result<Self> {
        let value = std::env::var("CNI_COMMAND").unwrap_or_default();
        if value.is_empty() {
            return Err(Error::InvalidEnv(
                "required environment variable CNI_COMMAND is missing".into(),
            ));
        }
        Self::ALL.into_iter().find(|c| c.name() == value).ok_or_else(|| {
            Error::InvalidEnv(format!(
                "unknown CNI_COMMAND {value:?} (known: ADD, DEL, CHECK, VERSION, STATUS, GC)"
            ))
        })
    }

    /// Which variables the command requires.
    fn needs(self) -> Needs {
        let attachment = |netns| Needs {
            container_id: true,
            netns,
            ifname: true,
        };
        match self {
            Command::Add | Command::Check => attachment(true),
            // DEL must work when the namespace is already gone (empty CNI_NETNS).
            Command::Del => attachment(false),
            Command::Status | Command::Gc | Command::Version => Needs::default(),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which attachment variables a command requires (CNI_PATH: all but VERSION).
#[derive(Default)]
struct Needs {
    container_id: bool,
    netns: bool,
    ifname: bool,
}

/// The CNI_* environment of one invocation.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub path: String,
}

impl Env {
    /// Reads and validates the variables `command` requires.
    pub fn read(command: Command) -> Result<Self> {
        let needs = command.needs();
        let var = |name: &str, required: bool| -> Result<String> {
            let value = std::env::var(name).unwrap_or_default();
            if required && value.is_empty() {
                return Err(Error::InvalidEnv(format!(
                    "required environment variable {name} is missing"
                )));
            }
            Ok(value)
        };
        let env = Self {
            command,
            container_id: var("CNI_CONTAINERID", needs.container_id)?,
            netns: var("CNI_NETNS", needs.netns)?,
            ifname: var("CNI_IFNAME", needs.ifname)?,
            path: var("CNI_PATH", command != Command::Version)?,
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
pub fn validate_container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnv(format!("invalid CNI_CONTAINERID {id:?}")))
    }
}

/// The spec's interface name rule: 1..=15 bytes, not "." or "..", no '/',
/// ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnv(format!("invalid CNI_IFNAME {name:?}")))
    }
}

/// The value of `key` in CNI_ARGS ("K=V;K=V"), if given and not empty:
/// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` in agent mode.
pub fn cni_arg(key: &str) -> Option<String> {
    std::env::var("CNI_ARGS")
        .unwrap_or_default()
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, v)| *k == key && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

/// CNI_ARGS is "K=V;K=V". Every key is accepted (as with IgnoreUnknown=1;
/// agent mode reads K8S_POD_NAMESPACE and K8S_POD_NAME), but the shape
/// must be right.
fn validate_args(args: &str) -> Result<()> {
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(Error::InvalidEnv(format!("invalid CNI_ARGS pair {pair:?}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn every_command_round_trips_its_name() {
        for command in Command::ALL {
            assert_eq!(
                Command::ALL.iter().find(|c| c.name() == command.name()),
                Some(&command)
            );
        }
    }
}
