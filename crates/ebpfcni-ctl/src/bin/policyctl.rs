//! policyctl: which identity may talk to which, in the pinned policy_map the
//! datapath reads on every packet, and the datapath's trace level.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use ebpfcni::{Identity, Maps, PinnedMap, PolicyRule, Stored, TraceLevel};
use ebpfcni_ctl::{
    args, exit_status_help, input, open_maps_for_reading, open_maps_for_writing, parse_rules, report_change,
    CmdResult, Common, Failure, Format, Out, View,
};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "policyctl",
    version,
    about = "Manage ebpfcni policy: which source identity may send to which destination identity",
    long_about = "Manage ebpfcni policy: which source identity may send to which destination identity.\n\n\
                  Policy is default deny: a packet passes only when the rule SRC -> DST of its endpoints' \
                  identities is allowed. Replies need the reverse rule too (see --symmetric). Rules live \
                  in the pinned policy_map under --pin-dir, which is created (with the other maps) when \
                  missing, so policy can be loaded before the first pod. Changes take effect on the next \
                  packet. After every change the map's state is printed, sorted, with a REVERSE column \
                  that shows MISSING for one-way rules (--quiet to skip it).",
    after_help = concat!(
        "Examples:\n  \
         policyctl allow --src 100 --dst 200 --symmetric\n  \
         policyctl deny --src 100 --dst 200\n  \
         policyctl apply -f rules.txt\n  \
         policyctl list -o json > rules.json && policyctl flush && policyctl apply -f rules.json\n  \
         policyctl trace drops\n\n",
        exit_status_help!()
    )
)]
struct Cli {
    #[command(flatten)]
    common: Common,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Allow SRC -> DST (and DST -> SRC with --symmetric: both or neither)
    #[command(after_help = "Examples:\n  \
                            policyctl allow --src 100 --dst 200               # one way: replies are dropped\n  \
                            policyctl allow --src 100 --dst 200 --symmetric   # both ways\n  \
                            policyctl allow --src 100 --dst 100               # within one identity")]
    Allow(Pair),

    /// Remove the allow rule(s), so the traffic is denied
    ///
    /// Remove the allow rule SRC -> DST (and DST -> SRC with --symmetric). Policy is default deny,
    /// so the traffic is then dropped. Removing a rule that is not there is not an error. An
    /// identity may be 0 here, to remove an entry `list` shows as INVALID.
    #[command(after_help = "Examples:\n  \
                            policyctl deny --src 100 --dst 200\n  \
                            policyctl deny --src 100 --dst 200 --symmetric   # both directions\n  \
                            policyctl deny --src 0 --dst 200                 # an invalid entry")]
    Deny(StoredPair),

    /// List every allow rule, sorted by source then destination
    #[command(after_help = "Examples:\n  \
                            policyctl list\n  \
                            policyctl list -o json   # [{\"src\": 100, \"dst\": 200, \"reverse\": true}, ...]")]
    List,

    /// Remove every rule (all traffic between endpoints is then dropped)
    #[command(after_help = "Examples:\n  \
                            policyctl flush\n  \
                            policyctl flush --quiet")]
    Flush,

    /// Allow many rules at once from a file (all or none)
    ///
    /// Allow every rule of FILE in one batch: all of them, or none when a line is bad (exit 2) or
    /// the map has no room for them (exit 1).
    #[command(after_help = "File formats:\n  \
                            text: one \"SRC DST\" pair of identities a line, separated by spaces or tabs;\n        \
                            '#' starts a comment; blank lines are ignored.\n  \
                            JSON: when the first character is '[': [{\"src\": 100, \"dst\": 200}, ...],\n        \
                            as printed by `policyctl list -o json` (\"reverse\" is ignored).\n\
                            Rules add to those already allowed; run `policyctl flush` first to replace them.\n\n\
                            Examples:\n  \
                            printf '# web <-> db\\n100 200\\n200 100\\n' | policyctl apply -f -\n  \
                            policyctl apply -f rules.txt --quiet\n  \
                            policyctl apply -f rules.json")]
    Apply {
        /// Rules file, or '-' for stdin
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
    },

    /// Show the datapath's trace level, or set it (takes effect on the next packet)
    #[command(after_help = "Traces go to /sys/kernel/debug/tracing/trace_pipe.\n\n\
                            Examples:\n  \
                            policyctl trace           # show the level\n  \
                            policyctl trace all       # one line per IPv4 packet, while debugging\n  \
                            policyctl trace drops     # back to the default")]
    Trace {
        /// New level; without it, show the current one
        #[arg(value_parser = trace_level_parser())]
        level: Option<TraceLevel>,
    },

    /// List the datapath's pinned objects under --pin-dir, one path a line (creates nothing)
    #[command(after_help = "Examples:\n  \
                            policyctl pins\n  \
                            policyctl --pin-dir /sys/fs/bpf/test pins | xargs -r rm   # remove everything ebpfcni pinned there")]
    Pins,

    /// Print a shell completion script on stdout
    #[command(after_help = "Examples:\n  \
                            policyctl completions bash > /etc/bash_completion.d/policyctl\n  \
                            policyctl completions fish > ~/.config/fish/completions/policyctl.fish")]
    Completions {
        /// Shell to complete for
        shell: clap_complete::Shell,
    },
}

/// The identities of a rule, and whether it goes both ways.
#[derive(clap::Args, Debug)]
struct Pair {
    /// Source identity, a decimal integer from 1 to 4294967295
    #[arg(long, value_name = "ID", allow_negative_numbers = true, value_parser = args::identity())]
    src: Identity,
    /// Destination identity, a decimal integer from 1 to 4294967295
    #[arg(long, value_name = "ID", allow_negative_numbers = true, value_parser = args::identity())]
    dst: Identity,
    /// Also the reverse rule DST -> SRC (needed for replies)
    #[arg(long)]
    symmetric: bool,
}

impl Pair {
    fn rules(&self) -> Vec<PolicyRule> {
        let rule = PolicyRule::new(self.src, self.dst);
        if self.symmetric && rule.reverse() != rule {
            vec![rule, rule.reverse()]
        } else {
            vec![rule]
        }
    }
}

/// The identities of entries to remove, as stored: 0 names an invalid entry.
#[derive(clap::Args, Debug)]
struct StoredPair {
    /// Source identity, a decimal integer from 0 to 4294967295
    #[arg(long, value_name = "ID", allow_negative_numbers = true, value_parser = args::stored_identity())]
    src: u32,
    /// Destination identity, a decimal integer from 0 to 4294967295
    #[arg(long, value_name = "ID", allow_negative_numbers = true, value_parser = args::stored_identity())]
    dst: u32,
    /// Also the reverse rule DST -> SRC
    #[arg(long)]
    symmetric: bool,
}

impl StoredPair {
    fn keys(&self) -> Vec<(u32, u32)> {
        if self.symmetric && self.src != self.dst {
            vec![(self.src, self.dst), (self.dst, self.src)]
        } else {
            vec![(self.src, self.dst)]
        }
    }
}

fn trace_level_parser() -> impl TypedValueParser<Value = TraceLevel> {
    let values = TraceLevel::ALL_LEVELS.map(|level| {
        PossibleValue::new(level.name()).help(match level {
            TraceLevel::Off => "nothing",
            TraceLevel::Drops => "one line per dropped packet (the default)",
            TraceLevel::All => "one line per IPv4 packet; slow, for debugging",
        })
    });
    PossibleValuesParser::new(values).map(|name| name.parse::<TraceLevel>().expect("a listed level"))
}

#[derive(Serialize)]
struct TraceJson {
    trace_level: String,
}

fn main() -> ExitCode {
    ebpfcni_ctl::init();
    ebpfcni_ctl::finish("policyctl", run(Cli::parse()))
}

fn run(cli: Cli) -> CmdResult {
    let common = &cli.common;
    match cli.command {
        Command::Completions { shell } => ebpfcni_ctl::print_completions::<Cli>(shell),
        Command::Pins => print_pins(&common.pin_dir),
        Command::List => list(common),
        Command::Trace { level: None } => show_trace_level(common),
        Command::Trace { level: Some(level) } => set_trace_level(common, level),
        Command::Allow(pair) => change(common, |maps| allow(maps, &pair.rules())),
        Command::Deny(pair) => change(common, |maps| deny(maps, &pair.keys())),
        Command::Flush => change(common, flush),
        Command::Apply { file } => {
            // Read and checked before the maps are opened (which may create them).
            let rules = input::read_file(&file, parse_rules)?;
            change(common, |maps| apply(maps, &rules, &input::source_name(&file)))
        }
    }
}

/// Opens the maps, makes a change with `make` (which returns what it did,
/// one note a line), then reports it and the policy's state (exit 3 when
/// that fails: the change stands).
fn change(common: &Common, make: impl FnOnce(&Maps) -> Result<Vec<String>, Failure>) -> CmdResult {
    let maps = open_maps_for_writing(common)?;
    let notes = make(&maps)?;
    let mut out = Out::new(common);
    report_change(&mut out, &notes, |out| {
        let rules = maps.policy.list().map_err(|e| Failure::failed("list rules", e))?;
        out.policy(&rules, maps.policy.capacity(), View::State)?;
        Ok(())
    })
}

fn allow(maps: &Maps, rules: &[PolicyRule]) -> Result<Vec<String>, Failure> {
    let already = rules
        .iter()
        .map(|&r| maps.policy.contains(r))
        .collect::<Result<Vec<bool>, _>>()
        .map_err(|e| Failure::failed("read policy_map", e))?;
    maps.policy
        .allow_all(rules)
        .map_err(|e| Failure::failed(format_args!("allow {}", describe(rules)), e))?;
    Ok(rules
        .iter()
        .zip(already)
        .map(|(rule, already)| {
            if already {
                format!("{rule} was already allowed")
            } else {
                format!("allowed {rule}")
            }
        })
        .collect())
}

fn deny(maps: &Maps, keys: &[(u32, u32)]) -> Result<Vec<String>, Failure> {
    let mut notes = Vec::new();
    for &(src, dst) in keys {
        let removed = maps
            .policy
            .revoke_raw(src, dst)
            .map_err(|e| Failure::failed(format_args!("deny {src} -> {dst}"), e))?;
        notes.push(if removed {
            format!("denied {src} -> {dst} (allow rule removed)")
        } else {
            format!("{src} -> {dst} was not allowed; nothing to remove")
        });
    }
    Ok(notes)
}

fn flush(maps: &Maps) -> Result<Vec<String>, Failure> {
    let n = maps
        .policy
        .clear()
        .map_err(|e| Failure::failed("flush rules", e))?;
    Ok(vec![format!("removed {n} rules")])
}

fn apply(maps: &Maps, rules: &[PolicyRule], source: &str) -> Result<Vec<String>, Failure> {
    let new = maps
        .policy
        .allow_all(rules)
        .map_err(|e| Failure::failed(format_args!("apply {} rules from {source}", rules.len()), e))?;
    let distinct = rules.iter().collect::<HashSet<_>>().len();
    let repeated = match rules.len() - distinct {
        0 => String::new(),
        n => format!(" ({n} listed more than once)"),
    };
    Ok(vec![format!(
        "applied {} rules from {source}{repeated}: {new} new, {} already allowed",
        rules.len(),
        distinct - new
    )])
}

fn list(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let rules = maps.policy.list().map_err(|e| Failure::failed("list rules", e))?;
    let mut out = Out::new(common);
    out.policy(&rules, maps.policy.capacity(), View::Full)?;
    out.flush()?;
    Ok(())
}

/// The trace level, "invalid (N)" for a value this build does not know.
fn level_name(level: Stored<TraceLevel, u32>) -> String {
    match level {
        Stored::Valid(level) => level.name().to_owned(),
        Stored::Invalid { raw, .. } => format!("invalid ({raw}, traces as all)"),
    }
}

fn show_trace_level(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let current = maps
        .config
        .trace_level()
        .map_err(|e| Failure::failed("read the trace level", e))?;
    let mut out = Out::new(common);
    match out.format() {
        Format::Table => out.note(format_args!("trace level: {}", level_name(current)))?,
        Format::Json => out.json(&TraceJson {
            trace_level: level_name(current),
        })?,
    }
    out.flush()?;
    Ok(())
}

/// Sets the level; a current value that is invalid is overwritten.
fn set_trace_level(common: &Common, level: TraceLevel) -> CmdResult {
    let maps = open_maps_for_writing(common)?;
    let current = maps
        .config
        .trace_level()
        .map_err(|e| Failure::failed("read the trace level", e))?;
    maps.config
        .set_trace_level(level)
        .map_err(|e| Failure::failed(format_args!("set the trace level to {level}"), e))?;
    let note = if current == Stored::Valid(level) {
        format!("trace level: {level} (unchanged)")
    } else {
        format!("trace level: {} -> {level}", level_name(current))
    };
    let mut out = Out::new(common);
    report_change(&mut out, &[note], |out| {
        if out.format() == Format::Json {
            out.json(&TraceJson {
                trace_level: level.name().to_owned(),
            })?;
        }
        Ok(())
    })
}

/// Prints the paths of the pins that exist under `pin_dir`.
fn print_pins(pin_dir: &std::path::Path) -> CmdResult {
    let mut out = std::io::stdout().lock();
    for map in PinnedMap::ALL {
        let path = map.path(pin_dir);
        if path.exists() {
            writeln!(out, "{}", path.display())?;
        }
    }
    out.flush()?;
    Ok(())
}

/// "1 -> 2" or "1 -> 2 and 2 -> 1".
fn describe(rules: &[PolicyRule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}
