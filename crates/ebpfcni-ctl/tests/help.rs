//! `--help` works for every command of both binaries and shows examples.
//! Needs no privilege: nothing here touches a map.

mod common;

use std::process::Command;

use common::{ok, ENDPOINTCTL, POLICYCTL};

/// The subcommands a binary lists under "Commands:" in its help.
fn subcommands(bin: &str) -> Vec<String> {
    let help = ok(Command::new(bin).arg("--help").output().unwrap());
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   ")) // wrapped descriptions
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

fn check(bin: &str, expected: &[&str]) {
    let name = std::path::Path::new(bin).file_name().unwrap().to_str().unwrap();
    assert_eq!(
        subcommands(bin),
        expected,
        "{name}: subcommands changed; update this test"
    );
    let top = ok(Command::new(bin).arg("--help").output().unwrap());
    assert!(top.contains("Examples:") && top.contains("Exit status:"), "{top}");
    for sub in expected {
        for args in [vec![*sub, "--help"], vec!["help", *sub], vec![*sub, "-h"]] {
            let help = ok(Command::new(bin).args(&args).output().unwrap());
            assert!(
                help.contains("Examples:"),
                "{name} {args:?} shows no examples:\n{help}"
            );
            assert!(
                help.contains(&format!("{name} {sub}")),
                "{name} {args:?}: examples do not use the command:\n{help}"
            );
            assert!(
                help.contains("--pin-dir"),
                "{name} {args:?}: common flags missing:\n{help}"
            );
        }
    }
}

#[test]
fn endpointctl_help_shows_examples_for_every_command() {
    check(
        ENDPOINTCTL,
        &["add", "del", "get", "list", "apply", "flush", "completions"],
    );
}

#[test]
fn policyctl_help_shows_examples_for_every_command() {
    check(
        POLICYCTL,
        &[
            "allow",
            "deny",
            "list",
            "flush",
            "apply",
            "get",
            "delete",
            "ct",
            "monitor",
            "explain",
            "audit",
            "stats",
            "graph",
            "events",
            "rate-limit",
            "trace",
            "reattach",
            "pins",
            "completions",
        ],
    );
}

#[test]
fn version_is_printed() {
    for bin in [ENDPOINTCTL, POLICYCTL] {
        let out = ok(Command::new(bin).arg("--version").output().unwrap());
        assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    }
}
