//! ADD+DEL latency of `ebpfcni` (attaching as clsact filters, the default,
//! and with tcx) beside the reference ptp plugin (/usr/lib/cni/ptp), all
//! with host-local IPAM, and of `ebpfcni` in agent mode with the agent's
//! IPAM (no IPAM exec), in one run, interleaved.
//!
//! `cargo bench -p ebpfcni-cni --bench add_del [-- ROUNDS]` (root; default 50
//! rounds). Both plugins run from a throwaway node namespace that this
//! process enters (setns), against one throwaway pod namespace; the time of
//! one round is spawn-to-exit of ADD plus spawn-to-exit of DEL. Beside
//! them, the floors: host-local run alone (what both plugins exec for the
//! lease), and each binary's VERSION (a process's start and exit).

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
    // ebpfcni attached `attach`-wise, on a subnet and log of its own.
    let ebpfcni = |label, attach: &str, subnet: &str| Plugin {
        label,
        binary: env!("CARGO_BIN_EXE_ebpfcni").to_string(),
        config: json!({
            "cniVersion": "1.0.0", "name": format!("bench{attach}"), "type": "ebpfcni",
            "pinDir": pins.path(), "ipam": ipam(subnet, attach),
            "logFile": data.join(format!("ebpfcni-{attach}.log")), "attach": attach,
        }),
    };
    let plugins = [
        ebpfcni("ebpfcni", "clsact", "10.13.7.0/24"),
        Plugin {
            label: "ptp",
            binary: "/usr/lib/cni/ptp".to_string(),
            config: json!({
                "cniVersion": "1.0.0", "name": "benchptp", "type": "ptp",
                "ipam": ipam("10.13.8.0/24", "ptp"),
            }),
        },
        ebpfcni("ebpfcni tcx", "tcx", "10.13.9.0/24"),
        // Agent mode: identities from labels, the address from the agent.
        Plugin {
            label: "ebpfcni agent",
            binary: env!("CARGO_BIN_EXE_ebpfcni").to_string(),
            config: json!({
                "cniVersion": "1.0.0", "name": "benchagent", "type": "ebpfcni",
                "pinDir": pins.path(), "agent": data.join("agent/agent.sock"),
                "logFile": data.join("ebpfcni-agent.log"),
                "args": { "cni": { "labels": [{ "key": "app", "value": "bench" }] } },
            }),
        },
        // The floor of all: the IPAM plugin each of them runs, alone.
        Plugin {
            label: "host-local alone",
            binary: "/usr/lib/cni/host-local".to_string(),
            config: json!({
                "cniVersion": "1.0.0", "name": "benchipam", "type": "host-local",
                "ipam": ipam("10.13.6.0/24", "alone"),
            }),
        },
    ];
    std::fs::create_dir_all(data.join("agent")).unwrap();
    let agent = ebpfcni_testutil::AgentProcess::start(
        &node,
        pins.path(),
        &data.join("agent"),
        &["--pod-cidr", "10.13.10.0/24", "--runtime", "none"],
    );
    // Children inherit this thread's network namespace: the node's.
    let netns = File::open(node.path()).unwrap();
    setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).expect("enter the node namespace");

    let mut add = vec![Vec::new(); plugins.len()];
    let mut add_cpu = vec![Vec::new(); plugins.len()];
    let mut del = vec![Vec::new(); plugins.len()];
    let mut total = vec![Vec::new(); plugins.len()];
    let mut version = vec![Vec::new(); plugins.len()];
    for round in 0..rounds + 3 {
        for (i, plugin) in plugins.iter().enumerate() {
            let id = format!("bench{round}");
            let v = call(plugin, "VERSION", &pod, &id);
            let before = children_cpu();
            let a = call(plugin, "ADD", &pod, &id);
            let a_cpu = children_cpu() - before;
            let d = call(plugin, "DEL", &pod, &id);
            if round >= 3 {
                version[i].push(v);
                add_cpu[i].push(a_cpu);
                add[i].push(a);
                del[i].push(d);
                total[i].push(a + d);
            }
        }
    }
    println!("ADD+DEL latency, median of {rounds} rounds (after 3 warm-up), host-local IPAM, interleaved:");
    for (i, plugin) in plugins.iter().enumerate() {
        println!(
            "  {:16} ADD {:>9}  DEL {:>9}  ADD+DEL {:>9}  CPU per ADD (plugin and IPAM) {:>9}  VERSION {:>9}",
            plugin.label,
            ms(median(&add[i])),
            ms(median(&del[i])),
            ms(median(&total[i])),
            ms(median(&add_cpu[i])),
            ms(median(&version[i]))
        );
    }
    let ratio = |of: &[Vec<Duration>], i: usize| median(&of[i]).as_secs_f64() / median(&of[1]).as_secs_f64();
    for i in [0, 2, 3] {
        println!(
            "  {} / ptp: ADD {:.2}, DEL {:.2}, ADD+DEL {:.2}",
            plugins[i].label,
            ratio(&add, i),
            ratio(&del, i),
            ratio(&total, i)
        );
    }
    println!("  host-local alone / ptp: ADD {:.2}", ratio(&add, 4));
    println!(
        "  (VERSION is each binary's start and exit: a process's floor; host-local alone is the floor of an ADD that runs it)"
    );
    print_breakdown("ebpfcni", &data.join("ebpfcni-clsact.log"));
    print_breakdown("ebpfcni tcx", &data.join("ebpfcni-tcx.log"));
    print_breakdown("ebpfcni agent", &data.join("ebpfcni-agent.log"));
    print_program_memory(pins.path());
    parallel(&plugins[..4], PARALLEL_PODS, 3);
    drop(agent);
    let _ = std::fs::remove_dir_all(&data);
}

/// Pods created (and deleted) at once by `parallel`.
const PARALLEL_PODS: usize = 100;

/// `pods` ADDs at once, then as many DELs, per plugin, `rounds` times
/// (interleaved): the wall time of all ADDs, and of all DELs.
fn parallel(plugins: &[Plugin], pods: usize, rounds: usize) {
    let namespaces: Vec<Netns> = (0..pods).map(|i| Netns::new(&format!("bench-par{i}"))).collect();
    let mut add = vec![Vec::new(); plugins.len()];
    let mut del = vec![Vec::new(); plugins.len()];
    let mut cpu = vec![Vec::new(); plugins.len()];
    for round in 0..rounds {
        for (i, plugin) in plugins.iter().enumerate() {
            let id = |n: usize| format!("par{round}-{n}");
            let cpu_before = children_cpu();
            let start = Instant::now();
            std::thread::scope(|s| {
                for (n, ns) in namespaces.iter().enumerate() {
                    s.spawn(move || call(plugin, "ADD", ns, &id(n)));
                }
            });
            add[i].push(start.elapsed());
            cpu[i].push((children_cpu() - cpu_before) / pods as u32);
            let start = Instant::now();
            std::thread::scope(|s| {
                for (n, ns) in namespaces.iter().enumerate() {
                    s.spawn(move || call(plugin, "DEL", ns, &id(n)));
                }
            });
            del[i].push(start.elapsed());
        }
    }
    println!("{pods} pods at once, median of {rounds} rounds (wall time until the last one is done):");
    for (i, plugin) in plugins.iter().enumerate() {
        println!(
            "  {:11} {pods} ADDs {:>10}  {pods} DELs {:>10}  CPU per ADD (plugin and IPAM, user+sys) {:>9}",
            plugin.label,
            ms(median(&add[i])),
            ms(median(&del[i])),
            ms(median(&cpu[i]))
        );
    }
    for i in (0..plugins.len()).filter(|&i| i != 1) {
        println!(
            "  {} / ptp: ADDs {:.2}, DELs {:.2}",
            plugins[i].label,
            median(&add[i]).as_secs_f64() / median(&add[1]).as_secs_f64(),
            median(&del[i]).as_secs_f64() / median(&del[1]).as_secs_f64()
        );
    }
}

/// CPU time (user + system) of this process's children that have ended,
/// their own children included.
fn children_cpu() -> Duration {
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

/// Kernel memory of the program every pod shares (memlock of both entry
/// points, from fdinfo as bpftool reads it): once per node now, where
/// each ADD used to load its own copy.
fn print_program_memory(pin_dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let mut total = 0u64;
    for hook in ebpfcni::Hook::ALL {
        let pin = ebpfcni::program_pin(pin_dir, hook, ebpfcni::PROGRAM_BUILD_ID);
        let Ok(handle) = libbpf_rs::ProgramHandle::from_pinned_path(&pin) else {
            println!("  program memory: {} is not pinned", pin.display());
            return;
        };
        let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", handle.as_fd().as_raw_fd()))
            .unwrap_or_default();
        total += fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    println!(
        "  program memory (memlock, both entry points): {total} bytes, once per node (loaded per ADD before: {total} bytes per pod)"
    );
}

/// Medians of the steps the plugin logged ("timing: T ms: step t, ...")
/// for ADD and DEL (warm-up rounds included: medians do not mind).
fn print_breakdown(label: &str, log: &std::path::Path) {
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
        println!("  {label} {command} steps (median ms): {}", parts.join(", "));
    }
}
