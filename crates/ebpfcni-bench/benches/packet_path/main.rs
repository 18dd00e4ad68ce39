//! Per-packet cost of the program through BPF_PROG_TEST_RUN, beside a no-op tc
//! program and the first release's program run by the same harness (the
//! kernel's own loop and timer), on the same maps.
//!
//! `cargo bench -p ebpfcni-bench --bench packet_path` (root: loads programs,
//! pins maps in private pin directories under /sys/fs/bpf, removed at the end).
//!
//! First table, rules as the plan writes them (stateless; connection
//! tracking off) and port rules. Setups (columns): nearly empty maps (the
//! entries the frames need); full endpoint_map and policy_map (16,384
//! endpoints, 65,536 rules); 1,000 and 16,384 CIDR prefixes.
//!
//! Second table, stateful rules (tracking on): a TCP connection's forward
//! packets and replies, with ct_map nearly empty and with ct_map full
//! (filled by the program itself, from 131,070 SYNs). The frames' entries are written first, so in full
//! maps they sit at the end of their hash bucket's chain (the kernel adds at
//! the head): the worst case, not the average. The machine is shared and
//! noisy, so every measurement is taken ROUNDS times, the rows interleaved
//! within a round, and the median is reported.
//!
//! Third table, label policy (what the node agent compiles NetworkPolicy
//! to, per direction) beside the plan's stateful pair rule, tracking on:
//! a connection's first packet (one run a call on an emptied ct_map, the
//! call's overhead included in every row) and its later packets; with a
//! few rules, and with 10,000 more isolated identities and rules.
//!
//! Fourth table, from-fabric (the source check on a node's fabric
//! interface, cluster mode), in a node namespace with routes and
//! neighbours: a remote pod's address from its node, forged, and an
//! address without an identity (`fabric.rs`; `-- fabric` runs it alone).
//!
//! Environment: `EBPFCNI_BENCH_REPEAT` (default 1,000,000 runs per
//! measurement), `EBPFCNI_BENCH_ROUNDS` (default 9).

mod fabric;
mod report;
mod rows;
mod setup;

use std::path::Path;

use ebpfcni::{Identity, PinnedMap};
use ebpfcni_testutil::median;

use report::{print_table, report_labels, report_notifications, report_plan_rules, report_tracking};
use rows::{label_rows, rows, tracking_rows, Runs, EVENT_REPEAT, TRACED_REPEAT};
use setup::{load_object, run_object, Setup, Table};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).map_or(default, |v| {
        v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

fn id(n: u32) -> Identity {
    Identity::new(n).expect("non-zero identity")
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, and a test run should not spend seconds measuring.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("packet_path: measures only under `cargo bench`");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("packet_path: needs root (loads BPF programs, pins maps); skipped");
        return;
    }
    let repeat = env_u32("EBPFCNI_BENCH_REPEAT", 1_000_000);
    let rounds = env_u32("EBPFCNI_BENCH_ROUNDS", 9).max(1);

    let noop = load_object(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/noop.bpf.c"),
        &[],
    );
    if std::env::args().any(|a| a == "fabric") {
        // `cargo bench -p ebpfcni-bench --bench packet_path -- fabric`:
        // the fourth table alone.
        fabric::measure(&noop, repeat, rounds);
        return;
    }
    let tables = [
        Table {
            setups: vec![
                Setup::new("nearly empty", "bench_empty"),
                Setup::new("full maps", "bench_full").fill(),
                Setup::new("1,000 prefixes", "bench_p1k").with_prefixes(1_000),
                Setup::new("16,384 prefixes", "bench_p16k").with_prefixes(PinnedMap::Prefixes.capacity()),
            ],
            rows: rows(repeat),
        },
        Table {
            setups: vec![
                Setup::new("ct nearly empty", "bench_ct").with_tracking(),
                Setup::new("ct_map full", "bench_ct_full")
                    .with_tracking()
                    .fill_conntrack(),
            ],
            rows: tracking_rows(repeat),
        },
        Table {
            setups: vec![
                Setup::new("few label rules", "bench_labels").with_labels(0),
                Setup::new("+10,000 label rules", "bench_labels_10k").with_labels(10_000),
            ],
            rows: label_rows(repeat),
        },
    ];

    // samples[table][row][setup]; no-op rows use column 0 only. Interleaved by round.
    let mut samples: Vec<Vec<Vec<Vec<f64>>>> = tables
        .iter()
        .map(|t| vec![vec![Vec::new(); t.setups.len()]; t.rows.len()])
        .collect();
    for round in 0..rounds {
        eprintln!("packet_path: round {}/{rounds}", round + 1);
        for (table, samples) in tables.iter().zip(&mut samples) {
            for (row, out) in table.rows.iter().zip(samples) {
                match row.program {
                    Runs::Noop(name) => {
                        out[0].push(run_object(&noop, name, &row.frame, row.repeat, row.verdict))
                    }
                    _ => {
                        for (setup, slot) in table.setups.iter().zip(out.iter_mut()) {
                            slot.push(setup.run(row));
                        }
                    }
                }
            }
        }
    }
    let medians: Vec<Vec<Vec<Option<f64>>>> = samples
        .iter()
        .map(|table| {
            table
                .iter()
                .map(|per_setup| {
                    per_setup
                        .iter()
                        .map(|s| (!s.is_empty()).then(|| median(s)))
                        .collect()
                })
                .collect()
        })
        .collect();
    println!();
    println!(
        "BPF_PROG_TEST_RUN, median of {rounds} interleaved rounds, {repeat} runs each (trace line written: {}, \
         event written: {}), ns per packet",
        TRACED_REPEAT.min(repeat),
        EVENT_REPEAT.min(repeat)
    );
    print_table(&tables[0], &medians[0]);
    report_plan_rules(&tables[0], &medians[0]);
    report_notifications(&tables[0], &medians[0]);
    print_table(&tables[1], &medians[1]);
    report_tracking(&tables, &medians);
    print_table(&tables[2], &medians[2]);
    report_labels(&tables[2], &medians[2]);
    fabric::measure(&noop, repeat, rounds);
}
