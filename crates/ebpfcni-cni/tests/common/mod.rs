//! A runtime's-eye harness for the `ebpfcni` binary: it runs the real
//! plugin with CNI_* variables and a config on stdin, from inside a "node"
//! namespace the test created (`nsenter --net`, which keeps the real
//! /sys/fs/bpf visible), against pod namespaces the test created.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ebpfcni::{Identity, Maps, Stored};
use ebpfcni_testutil::{output_with_stdin, text, unique_name, AgentProcess, Netns, TestPinDir};
use serde_json::{json, Value};
use tempfile::TempDir;

pub const CNI_PATH: &str = "/usr/lib/cni";

/// One test per spec version, as the reference plugins have:
/// `for_each_version!(scenario);` makes the tests `scenario::v1_0_0` and
/// `scenario::v1_1_0`, each calling `scenario(version)`, so that one
/// version's failure does not hide another's.
#[allow(unused_macros)] // not every test file has per-version tests
macro_rules! for_each_version {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn v1_0_0() {
                super::$scenario("1.0.0")
            }

            #[test]
            fn v1_1_0() {
                super::$scenario("1.1.0")
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use for_each_version;

/// What one plugin run printed and returned.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// stdout as JSON (panics with the whole outcome if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Asserts success and returns the JSON result (Null when stdout is empty).
    pub fn ok(self) -> Value {
        assert!(self.success, "plugin failed: {self:#?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts a CNI error with `code` and returns its message.
    pub fn err(self, code: u64) -> String {
        assert!(!self.success, "plugin succeeded, expected code {code}: {self:#?}");
        let reply = self.json();
        assert_eq!(reply["code"].as_u64(), Some(code), "wrong error code: {self:#?}");
        assert!(reply["cniVersion"].is_string(), "error lacks cniVersion: {reply}");
        let msg = reply["msg"].as_str().expect("error has msg").to_string();
        assert!(!msg.is_empty());
        msg
    }
}

/// A "node": its own namespace as the host side, its own pin directory,
/// host-local data directory and network name.
pub struct Node {
    pub ns: Netns,
    pub pins: TestPinDir,
    /// host-local's data directory and other files of the test; removed on drop.
    pub data_dir: PathBuf,
    _data: TempDir,
    pub network: String,
    pub subnet: String,
}

impl Node {
    pub fn new(tag: &str) -> Self {
        let data = tempfile::Builder::new()
            .prefix(&format!("ebpfcni-cni-{tag}-"))
            .tempdir()
            .expect("create IPAM data dir");
        Self {
            ns: Netns::new(&format!("{tag}-node")),
            pins: TestPinDir::new(tag),
            data_dir: data.path().to_owned(),
            _data: data,
            network: unique_name("net"),
            subnet: "10.13.1.0/24".into(),
        }
    }

    /// A config for `version` with host-local IPAM in our data dir.
    pub fn config(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": self.network,
            "type": "ebpfcni",
            "pinDir": self.pins.path(),
            "ipam": {
                "type": "host-local",
                "dataDir": self.data_dir,
                "ranges": [[{ "subnet": self.subnet }]],
            },
        })
    }

    /// A config for `version` with Debian's static IPAM giving `address`
    /// (and `gateway`).
    pub fn static_config(&self, version: &str, address: &str, gateway: Option<&str>) -> Value {
        let mut conf = self.config(version);
        let mut entry = json!({ "address": address });
        if let Some(gw) = gateway {
            entry["gateway"] = json!(gw);
        }
        conf["ipam"] = json!({ "type": "static", "addresses": [entry] });
        conf
    }

    /// Runs the plugin in the node namespace with `env` and `stdin`.
    pub fn exec(&self, env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
        run_plugin(Some(&self.ns), env, stdin)
    }

    pub fn call(
        &self,
        command: &str,
        conf: &Value,
        container_id: &str,
        netns: &str,
        ifname: &str,
    ) -> Outcome {
        self.exec(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container_id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", CNI_PATH),
            ],
            conf.to_string().as_bytes(),
        )
    }

    pub fn add(&self, conf: &Value, pod: &Pod) -> Outcome {
        self.call("ADD", conf, &pod.id, &pod.ns.path_string(), "eth0")
    }

    pub fn del(&self, conf: &Value, pod: &Pod) -> Outcome {
        self.call("DEL", conf, &pod.id, &pod.ns.path_string(), "eth0")
    }

    /// CHECK with `prev` as prevResult.
    pub fn check(&self, conf: &Value, pod: &Pod, prev: &Value) -> Outcome {
        let mut conf = conf.clone();
        conf["prevResult"] = prev.clone();
        self.call("CHECK", &conf, &pod.id, &pod.ns.path_string(), "eth0")
    }

    /// Whether host-local holds an allocation for `ip`.
    pub fn allocated(&self, ip: &str) -> bool {
        self.data_dir.join(&self.network).join(ip).exists()
    }

    /// Addresses host-local has handed out on this network.
    pub fn allocations(&self) -> Vec<String> {
        let dir = self.data_dir.join(&self.network);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
            .collect()
    }

    /// Names of the node's links.
    pub fn links(&self) -> Vec<String> {
        self.ns.links()
    }

    /// Output of a command run in the node namespace (nsenter).
    pub fn output(&self, program: &str, args: &[&str]) -> String {
        let out = self.ns.command(program).args(args).output().expect("spawn");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What runs on `dev`'s `hook` in the node.
    pub fn hook_programs(&self, dev: &str, hook: ebpfcni::Hook) -> ebpfcni_testutil::HookPrograms {
        ebpfcni_testutil::hook_programs(&self.ns, dev, hook)
    }
}

/// A pod: a namespace and a container id.
pub struct Pod {
    pub ns: Netns,
    pub id: String,
}

impl Pod {
    pub fn new(tag: &str) -> Self {
        Self {
            ns: Netns::new(tag),
            id: unique_name("ctr"),
        }
    }
}

/// The CNI_* variables ADD cannot do without.
pub const REQUIRED_CNI_ENV: [&str; 5] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_PATH",
];

/// Runs the plugin binary, in `node` when given (else where the test runs:
/// only for commands that touch no network, like VERSION).
pub fn run_plugin(node: Option<&Netns>, env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    let bin = env!("CARGO_BIN_EXE_ebpfcni");
    let mut cmd = match node {
        Some(ns) => ns.command(bin),
        None => Command::new(bin),
    };
    for var in REQUIRED_CNI_ENV.iter().chain(&["CNI_ARGS"]) {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = output_with_stdin(&mut cmd, stdin);
    Outcome {
        success: out.status.success(),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    }
}

/// The pod's IPv4 address (without prefix) from an ADD result.
pub fn pod_ip(result: &Value) -> String {
    let cidr = result["ips"][0]["address"].as_str().expect("ips[0].address");
    cidr.split('/').next().unwrap().to_string()
}

/// The host veth's name from an ADD result.
pub fn host_veth(result: &Value) -> String {
    result["interfaces"][0]["name"]
        .as_str()
        .expect("interfaces[0].name")
        .to_string()
}

/// Runs `bin` (endpointctl or policyctl) on the node's pin directory with
/// the agent's socket: (exit code, stdout, stderr).
pub fn cli(node: &Node, socket: &std::path::Path, bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(ebpfcni_testutil::workspace_bin("ebpfcni-ctl", bin))
        .arg("--pin-dir")
        .arg(node.pins.path())
        .arg("--agent")
        .arg(socket)
        .args(args)
        .output()
        .expect("run the CLI");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The identity `ip`'s endpoint_map entry holds, if a valid one.
pub fn identity_of(maps: &Maps, ip: &str) -> Option<u32> {
    maps.endpoints
        .get(ip.parse().unwrap())
        .unwrap()
        .and_then(Stored::valid)
        .map(Identity::get)
}

/// Waits (at most 10 s) until `done`.
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    wait_until_within(what, Duration::from_secs(10), done)
}

pub fn wait_until_within(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A network of `node` through its (cluster) agent, for pods labelled
/// `app`.
pub fn cluster_agent_config(node: &Node, agent: &AgentProcess, app: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": node.network,
        "type": "ebpfcni",
        "pinDir": node.pins.path(),
        "agent": agent.socket,
        "args": { "cni": { "labels": [{ "key": "app", "value": app }] } },
    })
}

/// `node`'s agent in cluster mode: etcd at `url`, `node_ip`, pod CIDRs
/// from 10.20.0.0/16, no runtime, then `extra` flags.
pub fn start_cluster_agent(
    node: &Node,
    dir: &Path,
    url: &str,
    node_ip: &str,
    extra: &[&str],
) -> AgentProcess {
    let mut flags = vec![
        "--runtime",
        "none",
        "--etcd",
        url,
        "--node-ip",
        node_ip,
        "--cluster-cidr",
        "10.20.0.0/16",
    ];
    flags.extend_from_slice(extra);
    AgentProcess::start(&node.ns, node.pins.path(), dir, &flags)
}
