//! Measures (does not assert) what an operator waits for: one
//! `endpointctl add`, and `policyctl apply` of a full policy map (65,536
//! rules; the goal is under 2 s). Each run is a whole process: exec, open the
//! pinned maps, change them, print the state.
//!
//!     sudo cargo bench -p ebpfcni-ctl --bench cli_latency
//!
//! Needs root; prints a note and does nothing otherwise.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ENDPOINTCTL: &str = env!("CARGO_BIN_EXE_endpointctl");
const POLICYCTL: &str = env!("CARGO_BIN_EXE_policyctl");

fn run(bin: &str, args: &[&str], stdin: Option<&[u8]>) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name}: n={} min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(samples[samples.len() - 1])
    );
}

fn main() {
    if !ebpfcni_testutil::privileged("cli_latency") {
        return;
    }
    // Private pin directory; removed at the end (also its pins).
    let pin = ebpfcni_testutil::TestPinDir::new("bench_cli");
    let pin_dir = pin.path().to_str().expect("UTF-8").to_owned();
    let common = ["--pin-dir", pin_dir.as_str()];

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

    let mut text = String::new();
    for i in 0..65_536u32 {
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
    summary("policyctl apply of 65,536 rules into an empty map", applies);
}
