//! endpointctl against real pinned maps in a private pin directory.

mod common;

use std::process::Command;

use common::{fails, json, ok, stderr, Ctl, ENDPOINTCTL};
use ebpfcni_testutil::require_root;
use serde_json::json;

#[test]
fn add_get_del_list_round_trip() {
    require_root!();
    let ctl = Ctl::new("ep_round_trip");
    let added = ok(ctl.endpointctl(&["add", "--ip", "10.13.0.2", "--identity", "100"]));
    assert!(added.contains("added 10.13.0.2 with identity 100"), "{added}");
    assert!(added.contains("10.13.0.2  100"), "state table missing: {added}");

    let got = json(&ok(ctl.endpointctl(&["get", "--ip", "10.13.0.2", "-o", "json"])));
    assert_eq!(
        got,
        json!({"ip": "10.13.0.2", "identity": 100, "from": "endpoint"})
    );
    assert_eq!(ctl.endpoints(), json!([{"ip": "10.13.0.2", "identity": 100}]));

    let deleted = ok(ctl.endpointctl(&["del", "--ip", "10.13.0.2"]));
    assert!(deleted.contains("deleted 10.13.0.2 (identity 100)"), "{deleted}");
    assert_eq!(ctl.endpoints(), json!([]));
    let err = fails(ctl.endpointctl(&["get", "--ip", "10.13.0.2"]), 1);
    assert!(
        err.contains("10.13.0.2 has no identity: it is not an endpoint and no prefix holds it"),
        "{err}"
    );
}

#[test]
fn add_of_a_present_address_replaces_its_identity_and_says_so() {
    require_root!();
    let ctl = Ctl::new("ep_upsert");
    ok(ctl.endpointctl(&["add", "--ip", "10.13.0.2", "--identity", "100"]));
    let out = ok(ctl.endpointctl(&["add", "--ip", "10.13.0.2", "--identity", "200"]));
    assert!(out.contains("10.13.0.2: replaced identity 100 with 200"), "{out}");
    let same = ok(ctl.endpointctl(&["add", "--ip", "10.13.0.2", "--identity", "200"]));
    assert!(same.contains("10.13.0.2 already had identity 200"), "{same}");
    assert_eq!(ctl.endpoints(), json!([{"ip": "10.13.0.2", "identity": 200}]));
}

#[test]
fn del_of_an_absent_address_succeeds_and_says_not_present() {
    require_root!();
    let ctl = Ctl::new("ep_del_absent");
    ok(ctl.endpointctl(&["add", "--ip", "10.13.0.3", "--identity", "7"]));
    let out = ok(ctl.endpointctl(&["del", "--ip", "10.13.0.2"]));
    assert!(out.contains("10.13.0.2 was not present"), "{out}");
    assert_eq!(ctl.endpoints(), json!([{"ip": "10.13.0.3", "identity": 7}]));
}

#[test]
fn flush_removes_every_endpoint() {
    require_root!();
    let ctl = Ctl::new("ep_flush");
    for ip in ["10.13.0.2", "10.13.0.3", "10.13.0.4"] {
        ok(ctl.endpointctl(&["add", "-q", "--ip", ip, "--identity", "5"]));
    }
    let out = ok(ctl.endpointctl(&["flush"]));
    assert!(out.contains("removed 3 endpoints and 0 prefixes"), "{out}");
    assert_eq!(ctl.endpoints(), json!([]));
}

#[test]
fn state_after_a_change_is_sorted_capped_and_quiet_hides_it() {
    require_root!();
    let ctl = Ctl::new("ep_state");
    // Added out of order, and with .10 after .9 to catch a textual sort.
    for host in (1..=25).rev() {
        let ip = format!("10.13.0.{host}");
        let quiet = ok(ctl.endpointctl(&["add", "--quiet", "--ip", &ip, "--identity", "9"]));
        assert_eq!(quiet.lines().count(), 1, "--quiet printed the state: {quiet}");
    }
    let out = ok(ctl.endpointctl(&["add", "--ip", "10.13.0.26", "--identity", "9"]));
    let rows: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim().strip_suffix("  9"))
        .map(str::trim)
        .collect();
    let expected: Vec<String> = (1..=20).map(|h| format!("10.13.0.{h}")).collect();
    assert_eq!(rows, expected, "{out}");
    let cap = ebpfcni::PinnedMap::Endpoints.capacity();
    assert!(
        out.contains(&format!("endpoint_map: 26 of {cap} entries")),
        "{out}"
    );
    assert!(out.contains("... and 6 more; see `endpointctl list`"), "{out}");

    let listed = ok(ctl.endpointctl(&["list"]));
    assert_eq!(
        listed.lines().filter(|l| l.ends_with("  9")).count(),
        26,
        "{listed}"
    );

    let state = json(&ok(ctl.endpointctl(&["del", "--ip", "10.13.0.26", "-o", "json"])));
    assert_eq!(
        state.as_array().map(Vec::len),
        Some(25),
        "JSON state is not capped"
    );
    assert_eq!(state[0], json!({"ip": "10.13.0.1", "identity": 9}));
    assert_eq!(state[24], json!({"ip": "10.13.0.25", "identity": 9}));
}

/// Every bad address and identity from the issue: exit 2, the message names
/// the value, and the map is as it was.
#[test]
fn bad_input_exits_2_names_the_value_and_changes_nothing() {
    require_root!();
    let ctl = Ctl::new("ep_bad_input");
    ok(ctl.endpointctl(&["add", "--ip", "10.13.0.2", "--identity", "100"]));
    let before = ctl.endpoints();

    let bad_ips = [
        "10.13.0.256",
        "1.2.3",
        "::1",
        "localhost",
        "10.13.0.0/24",
        "",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
    ];
    for ip in bad_ips {
        for args in [
            vec!["add", "--ip", ip, "--identity", "5"],
            vec!["del", "--ip", ip],
            vec!["get", "--ip", ip],
        ] {
            let err = fails(ctl.endpointctl(&args), 2);
            assert!(
                err.contains(&format!("invalid endpoint address {ip:?}")),
                "{args:?}: {err}"
            );
        }
    }
    let bad_ids = ["0", "-1", "1e3", "0x10", "4294967296", "", " 5"];
    for id in bad_ids {
        let err = fails(
            ctl.endpointctl(&["add", "--ip", "10.13.0.2", "--identity", id]),
            2,
        );
        assert!(err.contains(&format!("invalid identity {id:?}")), "{id:?}: {err}");
        let joined = format!("--identity={id}");
        let err = fails(ctl.endpointctl(&["add", "--ip", "10.13.0.2", &joined]), 2);
        assert!(
            err.contains(&format!("invalid identity {id:?}")),
            "{joined:?}: {err}"
        );
    }
    for (args, names) in [
        (vec!["add", "--ip", "10.13.0.2"], "--identity"),
        (vec!["add", "--identity", "5"], "--ip"),
        (
            vec!["add", "--ip", "10.13.0.2", "--identity", "5", "--bogus"],
            "--bogus",
        ),
        (vec!["del"], "--ip"),
        (vec!["frobnicate"], "frobnicate"),
        (vec!["list", "-o", "yaml"], "yaml"),
    ] {
        let err = fails(ctl.endpointctl(&args), 2);
        assert!(err.contains(names), "{args:?}: {err}");
    }
    assert_eq!(ctl.endpoints(), before);
}

#[test]
fn pin_dir_off_bpffs_fails_with_exit_1_and_says_so() {
    require_root!();
    let dir = std::env::temp_dir().join(ebpfcni_testutil::unique_name("ebpfcni_ctl_notbpf_"));
    let out = Command::new(ENDPOINTCTL)
        .args([
            "--pin-dir",
            dir.to_str().unwrap(),
            "add",
            "--ip",
            "10.13.0.2",
            "--identity",
            "5",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&dir);
    let err = fails(out, 1);
    assert!(err.contains("is not on a bpf filesystem"), "{err}");
    assert!(err.contains("mount -t bpf"), "no remedy given: {err}");
}

#[test]
fn incompatible_pinned_map_fails_with_exit_1_and_is_kept() {
    require_root!();
    let ctl = Ctl::new("ep_incompatible");
    let pin = ctl.pin.path().join("endpoint_map");
    let pin = pin.to_str().unwrap();
    ebpfcni_testutil::run(&[
        "bpftool",
        "map",
        "create",
        pin,
        "type",
        "hash",
        "key",
        "4",
        "value",
        "8",
        "entries",
        "16",
        "name",
        "endpoint_map",
    ]);
    let err = fails(
        ctl.endpointctl(&["add", "--ip", "10.13.0.2", "--identity", "5"]),
        1,
    );
    assert!(err.contains("is incompatible with this build"), "{err}");
    assert!(err.contains("value size is 8, expected 4"), "{err}");
    assert!(
        std::path::Path::new(pin).exists(),
        "the incompatible pin was replaced"
    );
}

#[test]
fn unprivileged_caller_fails_with_exit_1_and_says_not_permitted() {
    require_root!();
    let ctl = Ctl::new("ep_unprivileged");
    ok(ctl.endpointctl(&["add", "--ip", "10.13.0.2", "--identity", "100"]));
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", ENDPOINTCTL])
        .args([
            "--pin-dir",
            ctl.pin_dir(),
            "add",
            "--ip",
            "10.13.0.3",
            "--identity",
            "5",
        ])
        .output()
        .unwrap();
    let err = fails(out, 1);
    assert!(err.contains("operation not permitted (run as root"), "{err}");
    assert_eq!(ctl.endpoints(), json!([{"ip": "10.13.0.2", "identity": 100}]));
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(ENDPOINTCTL)
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = ok(out);
        assert!(script.contains("endpointctl"), "{shell}: {script}");
        assert!(script.contains("identity"), "{shell}: no flags in {script}");
    }
    let err = stderr(
        &Command::new(ENDPOINTCTL)
            .args(["completions", "cmd"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("invalid value 'cmd'"), "{err}");
}

/// CIDR identities: addresses that are not pods get theirs from the
/// longest prefix holding them; `get` says which entry decides.
#[test]
fn prefixes_give_identities_to_addresses_that_are_not_endpoints() {
    require_root!();
    let ctl = Ctl::new("ep_cidr");
    ok(ctl.endpointctl(&["add", "-q", "--ip", "10.255.7.9", "--identity", "100"]));
    let out = ok(ctl.endpointctl(&["add", "--cidr", "10.255.0.0/16", "--identity", "2"]));
    assert!(out.contains("added 10.255.0.0/16 with identity 2"), "{out}");
    assert!(out.contains("prefix_map: 1 of 16384 entries"), "{out}");
    ok(ctl.endpointctl(&["add", "-q", "--cidr", "10.255.7.0/24", "--identity", "3"]));

    let got = json(&ok(ctl.endpointctl(&[
        "get",
        "--ip",
        "10.255.7.53",
        "-o",
        "json",
    ])));
    assert_eq!(
        got,
        json!({"ip": "10.255.7.53", "identity": 3, "from": "10.255.7.0/24"})
    );
    let got = json(&ok(ctl.endpointctl(&["get", "--ip", "10.255.1.1", "-o", "json"])));
    assert_eq!(got["from"], "10.255.0.0/16");
    let got = ok(ctl.endpointctl(&["get", "--ip", "10.255.7.9"]));
    assert!(
        got.contains("10.255.7.9  100       endpoint"),
        "an endpoint beats the prefixes: {got}"
    );

    assert_eq!(
        ctl.endpoints(),
        json!([
            {"ip": "10.255.7.9", "identity": 100},
            {"cidr": "10.255.0.0/16", "identity": 2},
            {"cidr": "10.255.7.0/24", "identity": 3}
        ])
    );
    let out = ok(ctl.endpointctl(&["del", "--cidr", "10.255.7.0/24"]));
    assert!(out.contains("deleted 10.255.7.0/24 (identity 3)"), "{out}");
    let out = ok(ctl.endpointctl(&["del", "--cidr", "10.255.7.0/24"]));
    assert!(out.contains("was not present"), "{out}");
}

/// Bad prefixes and missing values: exit 2, the message says what is wrong,
/// nothing changes.
#[test]
fn bad_prefixes_exit_2_and_change_nothing() {
    require_root!();
    let ctl = Ctl::new("ep_cidr_bad");
    ok(ctl.endpointctl(&["add", "-q", "--cidr", "10.255.0.0/16", "--identity", "2"]));
    let before = ctl.endpoints();
    for (args, why) in [
        (
            vec!["add", "--cidr", "10.255.0.1/16", "--identity", "5"],
            "host bits are set (0.0.0.1); the prefix is 10.255.0.0/16",
        ),
        (
            vec!["add", "--cidr", "10.0.0.0/33", "--identity", "5"],
            "length 33 is not from 0 to 32",
        ),
        (vec!["add", "--cidr", "10.0.0.0/8"], "--identity"),
        (
            vec![
                "add",
                "--ip",
                "10.13.0.2",
                "--cidr",
                "10.0.0.0/8",
                "--identity",
                "5",
            ],
            "cannot be used with",
        ),
        (vec!["del"], "--ip"),
    ] {
        let err = fails(ctl.endpointctl(&args), 2);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(ctl.endpoints(), before);
}

#[test]
fn apply_sets_addresses_and_prefixes_all_or_nothing() {
    require_root!();
    let ctl = Ctl::new("ep_apply");
    let out = ok(ctl.endpointctl_stdin(
        &["apply", "-f", "-", "-q"],
        "# pods\n10.13.0.2 100\n10.13.0.3 101\n\n10.255.0.0/16 2  # resolvers\n",
    ));
    assert!(out.contains("applied 3 identities from stdin: 3 new"), "{out}");
    let listed = ok(ctl.endpointctl(&["list", "-o", "json"]));

    // A bad line: exit 2, line named, nothing written.
    let err = fails(
        ctl.endpointctl_stdin(&["apply", "-f", "-"], "10.13.0.4 5\n10.255.9.1/24 3\n"),
        2,
    );
    assert!(
        err.contains("line 2") && err.contains("host bits are set"),
        "{err}"
    );
    assert_eq!(ok(ctl.endpointctl(&["list", "-o", "json"])), listed);

    // The JSON listing applies back onto empty maps.
    ok(ctl.endpointctl(&["flush", "-q"]));
    ok(ctl.endpointctl_stdin(&["apply", "-f", "-", "-q"], &listed));
    assert_eq!(ok(ctl.endpointctl(&["list", "-o", "json"])), listed);
}

#[test]
fn apply_that_does_not_fit_writes_nothing_in_either_map() {
    require_root!();
    let ctl = Ctl::new("ep_apply_full");
    ok(ctl.endpointctl(&["add", "-q", "--ip", "10.13.0.9", "--identity", "9"]));
    let before = ctl.endpoints();
    let capacity = ebpfcni::PinnedMap::Prefixes.capacity();
    let mut text = String::from("10.13.0.2 100\n10.13.0.9 10\n");
    for i in 0..=capacity {
        text += &format!("11.{}.{}.0/24 7\n", i / 256, i % 256);
    }
    let err = fails(ctl.endpointctl_stdin(&["apply", "-f", "-"], &text), 1);
    assert!(
        err.contains(&format!("prefix_map is full: capacity {capacity} entries")),
        "{err}"
    );
    assert_eq!(
        ctl.endpoints(),
        before,
        "the endpoints of a refused apply were written"
    );
}
