//! policyctl against real pinned maps in a private pin directory.

mod common;

use std::fmt::Write as _;

use common::{fails, json, ok, Ctl};
use ebpfcni::PinnedMap;
use ebpfcni_testutil::require_root;
use serde_json::{json, Value};

/// The policy map's capacity in this build.
fn capacity() -> usize {
    PinnedMap::Policy.capacity() as usize
}

/// A rules file in the temp directory, removed on drop.
fn rules_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("create rules file");
    std::io::Write::write_all(&mut file, contents.as_bytes()).expect("write rules file");
    file
}

fn path(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().expect("UTF-8 temp path")
}

/// `count` distinct rules in the text format: 1 1, 1 2, ..., 256 256, then 257 1, ...
fn rules_text(count: usize) -> String {
    let mut text = String::with_capacity(count * 8);
    for i in 0..count {
        writeln!(text, "{} {}", i / 256 + 1, i % 256 + 1).unwrap();
    }
    text
}

fn rule(src: u32, dst: u32, reverse: bool) -> Value {
    json!({"src": src, "dst": dst, "reverse": reverse})
}

fn count(rules: &Value) -> usize {
    rules.as_array().expect("a JSON array").len()
}

#[test]
fn one_way_allow_shows_the_missing_reverse_rule() {
    require_root!();
    let ctl = Ctl::new("pol_one_way");
    let out = ok(ctl.policyctl(&["allow", "--src", "100", "--dst", "200"]));
    assert!(out.contains("allowed 100 -> 200"), "{out}");
    assert!(out.contains("100  200  MISSING"), "{out}");
    assert_eq!(ctl.rules(), json!([rule(100, 200, false)]));

    let out = ok(ctl.policyctl(&["allow", "--src", "200", "--dst", "100"]));
    assert!(
        out.contains("100  200  yes") && out.contains("200  100  yes"),
        "{out}"
    );
    let again = ok(ctl.policyctl(&["allow", "--src", "200", "--dst", "100"]));
    assert!(again.contains("200 -> 100 was already allowed"), "{again}");
}

#[test]
fn symmetric_allow_and_deny_write_and_remove_both_rules() {
    require_root!();
    let ctl = Ctl::new("pol_symmetric");
    ok(ctl.policyctl(&["allow", "--src", "7", "--dst", "8"]));
    let out = ok(ctl.policyctl(&["allow", "--src", "100", "--dst", "200", "--symmetric"]));
    assert!(
        out.contains("allowed 100 -> 200") && out.contains("allowed 200 -> 100"),
        "{out}"
    );
    assert_eq!(
        ctl.rules(),
        json!([rule(7, 8, false), rule(100, 200, true), rule(200, 100, true)])
    );

    let out = ok(ctl.policyctl(&["deny", "--src", "200", "--dst", "100", "--symmetric"]));
    assert!(
        out.contains("denied 200 -> 100") && out.contains("denied 100 -> 200"),
        "{out}"
    );
    assert_eq!(ctl.rules(), json!([rule(7, 8, false)]));

    // A rule from an identity to itself is one entry, with or without --symmetric.
    ok(ctl.policyctl(&["allow", "--src", "9", "--dst", "9", "--symmetric"]));
    assert_eq!(ctl.rules(), json!([rule(7, 8, false), rule(9, 9, true)]));
}

#[test]
fn deny_of_an_absent_rule_succeeds_and_says_so() {
    require_root!();
    let ctl = Ctl::new("pol_deny_absent");
    ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2"]));
    let out = ok(ctl.policyctl(&["deny", "--src", "2", "--dst", "1"]));
    assert!(out.contains("2 -> 1 was not allowed; nothing to remove"), "{out}");
    let out = ok(ctl.policyctl(&["deny", "--src", "1", "--dst", "2", "--symmetric"]));
    assert!(
        out.contains("denied 1 -> 2") && out.contains("2 -> 1 was not allowed"),
        "{out}"
    );
    ok(ctl.policyctl(&["deny", "--src", "1", "--dst", "2"]));
    assert_eq!(ctl.rules(), json!([]));
}

#[test]
fn flush_removes_every_rule() {
    require_root!();
    let ctl = Ctl::new("pol_flush");
    ok(ctl.policyctl_stdin(&["apply", "-f", "-"], &rules_text(300)));
    let out = ok(ctl.policyctl(&["flush"]));
    assert!(out.contains("removed 300 rules"), "{out}");
    assert_eq!(ctl.rules(), json!([]));
}

#[test]
fn apply_reads_text_and_json_from_files_and_stdin() {
    require_root!();
    let ctl = Ctl::new("pol_apply_formats");
    let text = "# web <-> db\n100 200\n\n200\t100   # replies\n  300 400\n";
    let file = rules_file(text);
    let out = ok(ctl.policyctl(&["apply", "-f", path(&file)]));
    assert!(
        out.contains(&format!(
            "applied 3 rules from {}: 3 new, 0 already allowed",
            path(&file)
        )),
        "{out}"
    );
    assert!(out.contains("300  400  MISSING"), "{out}");
    let rules = ctl.rules();
    assert_eq!(
        rules,
        json!([rule(100, 200, true), rule(200, 100, true), rule(300, 400, false)])
    );

    // `list -o json` output applies again (its "reverse" fields are ignored).
    ok(ctl.policyctl(&["flush", "-q"]));
    let out = ok(ctl.policyctl_stdin(&["apply", "-f", "-"], &rules.to_string()));
    assert!(out.contains("applied 3 rules from stdin: 3 new"), "{out}");
    assert_eq!(ctl.rules(), rules);

    let out = ok(ctl.policyctl_stdin(
        &["apply", "-f", "-"],
        r#" [{"src": 100, "dst": 200}, {"src": 5, "dst": 6}]"#,
    ));
    assert!(
        out.contains("applied 2 rules from stdin: 1 new, 1 already allowed"),
        "{out}"
    );
    assert_eq!(count(&ctl.rules()), 4);
}

#[test]
fn apply_with_a_bad_line_names_it_and_writes_nothing() {
    require_root!();
    let ctl = Ctl::new("pol_apply_bad");
    ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2"]));
    let before = ctl.rules();
    let good = rules_text(1000);
    for (input, expected) in [
        (
            format!("{good}7 0\n"),
            r#"stdin: line 1001: invalid identity "0""#,
        ),
        (
            format!("# header\n\n5 6\n5\n{good}"),
            "line 4: missing the destination identity",
        ),
        (
            format!("{good}1 2 3\n"),
            r#"line 1001: expected "SRC DST [port=PORT|proto=PROTO] [stateful]", found "1 2 3""#,
        ),
        (
            format!("{good}1 2 port=0\n"),
            r#"line 1001: invalid port "0": 0 is not from 1 to 65535"#,
        ),
        ("1 2 port=65536\n".to_owned(), r#"line 1: invalid port "65536""#),
        ("1 2 port=8080/icmp\n".to_owned(), "icmp has no ports"),
        ("1 2 proto=sctpx\n".to_owned(), r#"unknown protocol "sctpx""#),
        (
            "1 2 port=80 proto=tcp\n".to_owned(),
            "give one of port and proto, not both",
        ),
        ("1 2 port=90-80\n".to_owned(), "the range 90-80 is empty"),
        (format!("{good}1 -2\n"), r#"line 1001: invalid identity "-2""#),
        ("1 0x10\n".to_owned(), r#"line 1: invalid identity "0x10""#),
        (
            "5 4294967296\n".to_owned(),
            r#"line 1: invalid identity "4294967296""#,
        ),
        (
            "[\n{\"src\": 1, \"dst\": 3},\n{\"src\": 0, \"dst\": 2}\n]".to_owned(),
            "line 3: invalid JSON",
        ),
        (
            "[\n{\"src\": 1, \"dst\": 3}\n{\"src\": 4, \"dst\": 2}\n]".to_owned(),
            "line 3: invalid JSON",
        ),
        ("[{\"src\": 1, \"dest\": 3}]".to_owned(), "unknown field `dest`"),
    ] {
        let err = fails(ctl.policyctl_stdin(&["apply", "-f", "-"], &input), 2);
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
        assert!(err.contains("nothing was written"), "{err}");
        assert_eq!(ctl.rules(), before, "a refused file changed the map: {err}");
    }
    let file = rules_file("1 3\n3 x\n");
    let err = fails(ctl.policyctl(&["apply", "-f", path(&file)]), 2);
    assert!(
        err.contains(&format!("{}: line 2: invalid identity \"x\"", path(&file))),
        "{err}"
    );

    let missing = format!("{}_missing", path(&file));
    let err = fails(ctl.policyctl(&["apply", "-f", &missing]), 1);
    assert!(err.contains(&format!("failed to read {missing}")), "{err}");
    assert_eq!(ctl.rules(), before);
}

/// Fills the map to capacity with one apply; one more rule then fails
/// with exit 1 and a message naming the map and its capacity, and nothing
/// changes. A file that does not fit is refused whole.
#[test]
fn apply_fills_the_policy_map_and_the_next_rule_fails_cleanly() {
    require_root!();
    let ctl = Ctl::new("pol_full");
    let cap = capacity();
    let err = fails(
        ctl.policyctl_stdin(&["apply", "-f", "-"], &rules_text(cap + 1)),
        1,
    );
    let more = cap + 1;
    assert!(
        err.contains(&format!(
            "failed to apply {more} rules from stdin: policy_map is full: capacity {cap} entries, {more} needed"
        )),
        "{err}"
    );
    assert_eq!(
        ctl.rules(),
        json!([]),
        "a file that does not fit was partly written"
    );

    let out = ok(ctl.policyctl_stdin(&["apply", "-f", "-", "--quiet"], &rules_text(cap)));
    assert!(
        out.contains(&format!("applied {cap} rules from stdin: {cap} new")),
        "{out}"
    );
    let full = ctl.rules();
    assert_eq!(count(&full), cap);
    assert_eq!(full[0], rule(1, 1, true));
    assert_eq!(full[cap - 1], rule(256, 256, true));

    let err = fails(ctl.policyctl(&["allow", "--src", "1000", "--dst", "1"]), 1);
    assert!(
        err.contains(&format!(
            "failed to allow 1000 -> 1: policy_map is full: capacity {cap} entries, {more} needed"
        )),
        "{err}"
    );
    assert!(
        err.contains("nothing was written (make room with `policyctl deny`"),
        "{err}"
    );
    let err = fails(ctl.policyctl_stdin(&["apply", "-f", "-"], "1 2\n999 999\n"), 1);
    assert!(err.contains("policy_map is full"), "{err}");
    assert_eq!(ctl.rules(), full, "a failed allow changed the map");

    // Rules already present need no room.
    let out = ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2", "--symmetric", "-q"]));
    assert!(out.contains("1 -> 2 was already allowed"), "{out}");
}

/// With one free entry, a symmetric allow needs two: it writes neither.
#[test]
fn symmetric_allow_that_does_not_fit_writes_neither_rule() {
    require_root!();
    let ctl = Ctl::new("pol_half");
    let cap = capacity();
    ok(ctl.policyctl_stdin(&["apply", "-f", "-", "-q"], &rules_text(cap - 1)));
    let err = fails(
        ctl.policyctl(&["allow", "--src", "1000", "--dst", "2000", "--symmetric"]),
        1,
    );
    assert!(
        err.contains("failed to allow 1000 -> 2000 and 2000 -> 1000"),
        "{err}"
    );
    assert!(
        err.contains(&format!("capacity {cap} entries, {} needed", cap + 1)),
        "{err}"
    );
    let rules = ctl.rules();
    assert_eq!(count(&rules), cap - 1);
    assert!(!rules
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["src"] == 1000 || r["src"] == 2000));

    ok(ctl.policyctl(&["allow", "--src", "1000", "--dst", "2000", "-q"]));
    assert_eq!(count(&ctl.rules()), cap);
}

#[test]
fn json_state_after_a_change_parses_and_notes_go_to_stderr() {
    require_root!();
    let ctl = Ctl::new("pol_json");
    let out = ctl.policyctl(&["allow", "--src", "3", "--dst", "4", "-o", "json"]);
    let note = common::stderr(&out);
    assert!(note.contains("allowed 3 -> 4"), "{note}");
    assert_eq!(json(&ok(out)), json!([rule(3, 4, false)]));
    let state = json(&ok(
        ctl.policyctl(&["deny", "--src", "3", "--dst", "4", "-o", "json"])
    ));
    assert_eq!(state, json!([]));
    let quiet = ok(ctl.policyctl(&["allow", "--src", "3", "--dst", "4", "-o", "json", "-q"]));
    assert_eq!(quiet, "", "--quiet printed the state");
}

#[test]
fn trace_level_round_trip() {
    require_root!();
    let ctl = Ctl::new("pol_trace");
    ok(ctl.policyctl(&["flush", "-q"])); // creates the maps
    let shown = ok(ctl.policyctl(&["trace"]));
    assert_eq!(shown.trim(), "trace level: drops");
    let set = ok(ctl.policyctl(&["trace", "all"]));
    assert!(set.contains("trace level: drops -> all"), "{set}");
    assert_eq!(
        json(&ok(ctl.policyctl(&["trace", "-o", "json"]))),
        json!({"trace_level": "all"})
    );
    ok(ctl.policyctl(&["trace", "off"]));
    assert_eq!(ok(ctl.policyctl(&["trace"])).trim(), "trace level: off");
    let same = ok(ctl.policyctl(&["trace", "off"]));
    assert!(same.contains("trace level: off (unchanged)"), "{same}");

    for bad in ["verbose", "ALL", "", "1"] {
        let err = fails(ctl.policyctl(&["trace", bad]), 2);
        // clap words the empty value as "a value is required".
        let named = if bad.is_empty() {
            "a value is required".to_owned()
        } else {
            format!("invalid value '{bad}'")
        };
        assert!(err.contains(&named), "{err}");
        assert!(err.contains("possible values: off, drops, all"), "{err}");
    }
    assert_eq!(ok(ctl.policyctl(&["trace"])).trim(), "trace level: off");
}

/// Every bad identity from the issue and the usage mistakes: exit 2, the
/// message names the value, and the map is as it was.
#[test]
fn bad_input_exits_2_names_the_value_and_changes_nothing() {
    require_root!();
    let ctl = Ctl::new("pol_bad_input");
    ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2", "--symmetric"]));
    let before = ctl.rules();
    for id in ["0", "-1", "1e3", "0x10", "4294967296", "", " 5"] {
        // deny takes 0, to remove invalid entries.
        let commands: &[&str] = if id == "0" { &["allow"] } else { &["allow", "deny"] };
        for &cmd in commands {
            for args in [
                vec![cmd, "--src", id, "--dst", "2", "--symmetric"],
                vec![cmd, "--src", "1", "--dst", id, "--symmetric"],
            ] {
                let err = fails(ctl.policyctl(&args), 2);
                assert!(
                    err.contains(&format!("invalid identity {id:?}")),
                    "{args:?}: {err}"
                );
            }
        }
    }
    for (args, names) in [
        (vec!["allow", "--src", "1"], "--dst"),
        (vec!["deny", "--dst", "1"], "--src"),
        (vec!["allow", "--src", "1", "--dst", "3", "--both"], "--both"),
        (vec!["apply"], "--file"),
        (vec!["list", "--output", "xml"], "xml"),
        (vec!["permit", "--src", "1", "--dst", "3"], "permit"),
        (
            vec!["allow", "--src", "1", "--dst", "3", "--port", "0"],
            r#"invalid port "0""#,
        ),
        (
            vec!["allow", "--src", "1", "--dst", "3", "--port", "65536"],
            "65536 is not from 1 to 65535",
        ),
        (
            vec!["allow", "--src", "1", "--dst", "3", "--port", "http"],
            r#""http" is not a port number"#,
        ),
        (
            vec!["allow", "--src", "1", "--dst", "3", "--port", "8080/icmp"],
            "icmp has no ports",
        ),
        (
            vec!["allow", "--src", "1", "--dst", "3", "--port", "8080/sctpx"],
            r#"unknown protocol "sctpx""#,
        ),
        (
            vec!["allow", "--src", "1", "--dst", "3", "--proto", "foo"],
            r#"unknown protocol "foo""#,
        ),
        (
            vec!["allow", "--src", "1", "--dst", "3", "--proto", "0"],
            "not from 1 to 255",
        ),
        (
            vec!["allow", "--src", "1", "--dst", "3", "--proto", "256"],
            "not from 1 to 255",
        ),
        (
            vec![
                "allow", "--src", "1", "--dst", "3", "--port", "80", "--proto", "tcp",
            ],
            "cannot be used with",
        ),
        (
            vec!["deny", "--src", "1", "--dst", "3", "--port", "80-70"],
            "the range 80-70 is empty",
        ),
        (
            vec!["ct", "timeouts", "--udp", "0"],
            r#"invalid number of seconds "0""#,
        ),
        (
            vec!["ct", "timeouts", "--tcp-syn", "-5"],
            r#"invalid number of seconds "-5""#,
        ),
    ] {
        let err = fails(ctl.policyctl(&args), 2);
        assert!(err.contains(names), "{args:?}: {err}");
    }
    assert_eq!(ctl.rules(), before);
}

/// `pins` lists exactly the pinned maps, one path a line, and creates
/// nothing where there are none (it says so, exit 1).
#[test]
fn pins_lists_the_pinned_maps_and_creates_nothing() {
    require_root!();
    let ctl = Ctl::new("pol_pins");
    let err = fails(ctl.policyctl(&["pins"]), 1);
    assert!(
        err.contains("nothing of ebpfcni's is pinned in"),
        "no maps yet: {err}"
    );
    assert_eq!(
        std::fs::read_dir(ctl.pin.path()).unwrap().count(),
        0,
        "pins created something"
    );
    ok(ctl.policyctl(&["flush", "-q"]));
    let listed = ok(ctl.policyctl(&["pins"]));
    let expected: Vec<String> = PinnedMap::ALL
        .iter()
        .map(|m| m.path(ctl.pin.path()))
        .chain(ebpfcni::LocalMap::ALL.iter().map(|m| m.path(ctl.pin.path())))
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), expected);
}

/// Port and protocol rules: allowed, listed with their columns, taken back
/// by `apply` from `list -o json`, denied by their exact selector; an
/// overlapping range is refused (exit 1) and changes nothing.
#[test]
fn port_and_protocol_rules_round_trip() {
    require_root!();
    let ctl = Ctl::new("pol_ports");
    ok(ctl.policyctl(&[
        "allow",
        "--src",
        "1",
        "--dst",
        "2",
        "--port",
        "8080",
        "--stateful",
    ]));
    ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2", "--port", "53/udp"]));
    ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2", "--port", "9000-9100/tcp"]));
    let out = ok(ctl.policyctl(&[
        "allow",
        "--src",
        "1",
        "--dst",
        "2",
        "--proto",
        "icmp",
        "--stateful",
    ]));
    assert!(out.contains("SRC  DST  PROTO  PORT"), "{out}");
    assert!(out.contains("tcp    8080       yes       tracked"), "{out}");
    assert!(out.contains("udp    53         no        MISSING"), "{out}");
    assert!(out.contains("tcp    9000-9100  no        MISSING"), "{out}");
    let listed = ctl.rules();
    assert_eq!(
        listed,
        json!([
            {"src": 1, "dst": 2, "proto": "icmp", "stateful": true, "reverse": true},
            {"src": 1, "dst": 2, "port": "8080/tcp", "stateful": true, "reverse": true},
            {"src": 1, "dst": 2, "port": "9000-9100/tcp", "reverse": false},
            {"src": 1, "dst": 2, "port": "53/udp", "reverse": false},
        ])
    );

    // Within one protocol, port ranges of a pair must not overlap.
    for port in ["9100", "8000-8080", "9050-9200/tcp"] {
        let err = fails(
            ctl.policyctl(&["allow", "--src", "1", "--dst", "2", "--port", port]),
            1,
        );
        assert!(err.contains("overlaps the rule"), "{port}: {err}");
    }
    ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2", "--port", "9100/udp"]));
    ok(ctl.policyctl(&["deny", "--src", "1", "--dst", "2", "--port", "9100/udp"]));
    assert_eq!(ctl.rules(), listed);

    // Allowing the same rule again is no change; making it stateful is one.
    let out = ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2", "--port", "53/udp"]));
    assert!(out.contains("1 -> 2 53/udp was already allowed"), "{out}");
    let out = ok(ctl.policyctl(&[
        "allow",
        "--src",
        "1",
        "--dst",
        "2",
        "--port",
        "53/udp",
        "--stateful",
    ]));
    assert!(out.contains("1 -> 2 53/udp: now stateful"), "{out}");
    ok(ctl.policyctl(&["allow", "--src", "1", "--dst", "2", "--port", "53/udp"]));

    // A part of a range is not the rule: deny names a rule exactly.
    let out = ok(ctl.policyctl(&["deny", "--src", "1", "--dst", "2", "--port", "9000"]));
    assert!(out.contains("was not allowed"), "{out}");
    assert_eq!(ctl.rules(), listed);

    // What `list -o json` prints, `apply` takes back.
    let saved = serde_json::to_string(&listed).unwrap();
    ok(ctl.policyctl(&["flush"]));
    assert_eq!(ctl.rules(), json!([]));
    let out = ok(ctl.policyctl_stdin(&["apply", "-f", "-"], &saved));
    assert!(out.contains("applied 4 rules from stdin: 4 new"), "{out}");
    assert_eq!(ctl.rules(), listed);

    let out = ok(ctl.policyctl(&["deny", "--src", "1", "--dst", "2", "--port", "9000-9100"]));
    assert!(
        out.contains("denied 1 -> 2 9000-9100/tcp (rule removed)"),
        "{out}"
    );
    let out = ok(ctl.policyctl(&["deny", "--src", "1", "--dst", "2", "--proto", "icmp"]));
    assert!(out.contains("denied 1 -> 2 icmp (rule removed)"), "{out}");
    assert_eq!(count(&ctl.rules()), 2);
}

/// The text format's options, and connection lifetimes: shown with their
/// defaults, set one at a time, kept by the others.
#[test]
fn text_rules_with_ports_and_connection_timeouts() {
    require_root!();
    let ctl = Ctl::new("pol_ct_timeouts");
    let text = "src=10 dst=20 port=443 stateful\n10 30 proto=udp\n10 40 port=5000-5010/udp\n";
    let out = ok(ctl.policyctl_stdin(&["apply", "-f", "-"], text));
    assert!(out.contains("applied 3 rules from stdin: 3 new"), "{out}");
    assert_eq!(
        ctl.rules(),
        json!([
            {"src": 10, "dst": 20, "port": "443/tcp", "stateful": true, "reverse": true},
            {"src": 10, "dst": 30, "proto": "udp", "reverse": false},
            {"src": 10, "dst": 40, "port": "5000-5010/udp", "reverse": false},
        ])
    );

    let defaults = json(&ok(ctl.policyctl(&["ct", "timeouts", "-o", "json"])));
    assert_eq!(
        defaults,
        json!({"tcp_syn": 60, "tcp_established": 8000, "tcp_closing": 10, "udp": 60, "other": 60})
    );
    let out = ok(ctl.policyctl(&["ct", "timeouts", "--udp", "30", "--tcp-established", "3600"]));
    assert!(out.contains("connection lifetimes set"), "{out}");
    assert!(out.contains("udp              30s      60s"), "{out}");
    let out = ok(ctl.policyctl(&["ct", "timeouts", "--other", "5"]));
    assert!(out.contains("tcp-established  3600s    8000s"), "{out}");
    assert_eq!(
        json(&ok(ctl.policyctl(&["ct", "timeouts", "-o", "json"]))),
        json!({"tcp_syn": 60, "tcp_established": 3600, "tcp_closing": 10, "udp": 30, "other": 5})
    );
    let out = ok(ctl.policyctl(&["ct", "list"]));
    assert!(out.contains("tracked connections: 0 of 131072"), "{out}");
    assert_eq!(json(&ok(ctl.policyctl(&["ct", "list", "-o", "json"]))), json!([]));
}
