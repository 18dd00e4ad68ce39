//! Measures (does not assert) what an operator waits for: one
//! `endpointctl add`, and `policyctl apply` of a full policy map (65,536
//! rules; the goal is under 2 s). Each run is a whole process: exec, open the
//! pinned maps, change them, print the state.
//!
//!     sudo cargo bench -p ebpfcni-ctl --bench cli_latency
//!
//! Needs root; prints a note and does nothing otherwise.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ebpfcni_testutil::{median, output_with_stdin, quantile};

const ENDPOINTCTL: &str = env!("CARGO_BIN_EXE_endpointctl");
const POLICYCTL: &str = env!("CARGO_BIN_EXE_policyctl");

/// Spawn-to-exit time of one run, which must succeed.
fn run(bin: &str, args: &[&str], stdin: Option<&[u8]>) -> Duration {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdout(Stdio::null());
    let start = Instant::now();
    let out = match stdin {
        Some(input) => output_with_stdin(&mut cmd, input),
        None => cmd.stderr(Stdio::piped()).output().expect("spawn"),
    };
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn summary(name: &str, samples: Vec<Duration>) {
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    println!(
        "{name}: n={} min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms.len(),
        quantile(&ms, 0.0),
        median(&ms),
        quantile(&ms, 0.9),
        quantile(&ms, 1.0)
    );
}

fn main() {
    if !ebpfcni_testutil::privileged("cli_latency") {
        return;
    }
    // Private pin directory; removed at the end (also its pins).
    let pin = ebpfcni_testutil::TestPinDir::new("bench_cli");
    let common = ["--pin-dir", pin.as_str()];

    // First run creates the maps: measured separately.
    let first = run(
        ENDPOINTCTL,
        &[&common[..], &["add", "--ip", "10.13.1.1", "--identity", "1"]].concat(),
        None,
    );
    println!(
        "endpointctl add, creating the maps: {:.1} ms",
        first.as_secs_f64() * 1e3
    );

    let adds: Vec<Duration> = (0..100)
        .map(|i| {
            let ip = format!("10.13.0.{}", i + 1);
            let id = (i + 1).to_string();
            run(
                ENDPOINTCTL,
                &[&common[..], &["add", "--ip", &ip, "--identity", &id]].concat(),
                None,
            )
        })
        .collect();
    summary("endpointctl add (state printed)", adds);

    let capacity = ebpfcni::Maps::open(pin.path()).expect("maps").policy.capacity();
    let mut text = String::new();
    for i in 0..capacity {
        writeln!(text, "{} {}", i / 256 + 1, i % 256 + 1).unwrap();
    }
    let applies: Vec<Duration> = (0..5)
        .map(|_| {
            run(POLICYCTL, &[&common[..], &["flush", "-q"]].concat(), None);
            run(
                POLICYCTL,
                &[&common[..], &["apply", "-f", "-"]].concat(),
                Some(text.as_bytes()),
            )
        })
        .collect();
    summary(
        &format!("policyctl apply of {capacity} rules into an empty map"),
        applies,
    );
}
