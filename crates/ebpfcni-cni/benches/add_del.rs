//! ADD+DEL latency of `ebpfcni` beside the reference ptp plugin
//! (/usr/lib/cni/ptp), both with host-local IPAM, in one run, interleaved.
//!
//! `cargo bench -p ebpfcni-cni --bench add_del [-- ROUNDS]` (root; default 50
//! rounds). Both plugins run from a throwaway node namespace that this
//! process enters (setns), against one throwaway pod namespace; the time of
//! one round is spawn-to-exit of ADD plus spawn-to-exit of DEL.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use ebpfcni_testutil::{output_with_stdin, unique_name, Netns, TestPinDir};
use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};

struct Plugin {
    label: &'static str,
    binary: String,
    config: Value,
}

fn call(plugin: &Plugin, command: &str, pod: &Netns, id: &str) -> Duration {
    let mut cmd = Command::new(&plugin.binary);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni");
    let stdin = plugin.config.to_string();
    let start = Instant::now();
    let out = output_with_stdin(&mut cmd, stdin.as_bytes());
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{} {command} failed: {}{}",
        plugin.label,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn median(v: &[Duration]) -> Duration {
    let secs: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
    Duration::from_secs_f64(ebpfcni_testutil::median(&secs))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("add_del bench needs root; skipped");
        return;
    }
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let node = Netns::new("bench-node");
    let pod = Netns::new("bench-pod");
    let pins = TestPinDir::new("bench");
    let data = std::env::temp_dir().join(unique_name("ebpfcni-bench-"));
    let ipam = |subnet: &str, dir: &str| json!({ "type": "host-local", "dataDir": data.join(dir), "ranges": [[{ "subnet": subnet }]] });
    let plugins = [
        Plugin {
            label: "ebpfcni",
            binary: env!("CARGO_BIN_EXE_ebpfcni").to_string(),
            config: json!({
                "cniVersion": "1.0.0", "name": "benchebpfcni", "type": "ebpfcni",
                "pinDir": pins.path(), "ipam": ipam("10.13.7.0/24", "ebpfcni"),
                "logFile": data.join("ebpfcni.log"),
            }),
        },
        Plugin {
            label: "ptp",
            binary: "/usr/lib/cni/ptp".to_string(),
            config: json!({
                "cniVersion": "1.0.0", "name": "benchptp", "type": "ptp",
                "ipam": ipam("10.13.8.0/24", "ptp"),
            }),
        },
    ];
    // Children inherit this thread's network namespace: the node's.
    let netns = File::open(node.path()).unwrap();
    setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).expect("enter the node namespace");

    let mut add = [Vec::new(), Vec::new()];
    let mut del = [Vec::new(), Vec::new()];
    let mut total = [Vec::new(), Vec::new()];
    for round in 0..rounds + 3 {
        for (i, plugin) in plugins.iter().enumerate() {
            let id = format!("bench{round}");
            let a = call(plugin, "ADD", &pod, &id);
            let d = call(plugin, "DEL", &pod, &id);
            if round >= 3 {
                add[i].push(a);
                del[i].push(d);
                total[i].push(a + d);
            }
        }
    }
    println!("ADD+DEL latency, median of {rounds} rounds (after 3 warm-up), host-local IPAM, interleaved:");
    for (i, plugin) in plugins.iter().enumerate() {
        println!(
            "  {:8} ADD {:>9}  DEL {:>9}  ADD+DEL {:>9}",
            plugin.label,
            ms(median(&add[i])),
            ms(median(&del[i])),
            ms(median(&total[i]))
        );
    }
    let (ours, theirs) = (median(&total[0]), median(&total[1]));
    println!(
        "  ebpfcni / ptp = {:.2}",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    print_breakdown(&data.join("ebpfcni.log"));
    let _ = std::fs::remove_dir_all(&data);
}

/// Medians of the steps the plugin logged ("timing: T ms: step t, ...")
/// for ADD and DEL (warm-up rounds included: medians do not mind).
fn print_breakdown(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for command in ["ADD", "DEL"] {
        let mut steps: Vec<(String, Vec<f64>)> = Vec::new();
        for line in text
            .lines()
            .filter(|l| l.contains(&format!("] {command} ")) && l.contains("timing: "))
        {
            let timing = &line[line.find("timing: ").unwrap() + 8..];
            let (total, rest) = timing.split_once(" ms:").unwrap_or((timing, ""));
            let mut add = |name: &str, ms: f64| match steps.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(ms),
                None => steps.push((name.to_owned(), vec![ms])),
            };
            add("total (in the plugin)", total.parse().unwrap_or(0.0));
            for part in rest.split(',') {
                if let Some((name, ms)) = part.trim().rsplit_once(' ') {
                    add(name, ms.parse().unwrap_or(0.0));
                }
            }
        }
        let parts: Vec<String> = steps
            .iter()
            .map(|(name, v)| format!("{name} {:.2}", ebpfcni_testutil::median(v)))
            .collect();
        println!("  ebpfcni {command} steps (median ms): {}", parts.join(", "));
    }
}
