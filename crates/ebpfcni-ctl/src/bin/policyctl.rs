//! policyctl: which identity may talk to which, in the pinned policy_map the
//! datapath reads on every packet, and the datapath's trace level.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use ebpfcni::{Identity, PinnedMap, PolicyRule, TraceLevel};
use ebpfcni_ctl::{exit_status_help, open_maps, parse_rules, CmdResult, Common, Failure, Format, Out, View};
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
    /// so the traffic is then dropped. Removing a rule that is not there is not an error.
    #[command(after_help = "Examples:\n  \
                            policyctl deny --src 100 --dst 200\n  \
                            policyctl deny --src 100 --dst 200 --symmetric   # both directions")]
    Deny(Pair),

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
    #[arg(long, value_name = "ID", allow_negative_numbers = true)]
    src: Identity,
    /// Destination identity, a decimal integer from 1 to 4294967295
    #[arg(long, value_name = "ID", allow_negative_numbers = true)]
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
    trace_level: &'static str,
}

fn main() -> ExitCode {
    ebpfcni_ctl::finish("policyctl", run(Cli::parse()))
}

fn run(cli: Cli) -> CmdResult {
    // Everything that can be refused is read and checked before the maps
    // are opened (which may create them).
    let applied = match &cli.command {
        Command::Completions { shell } => return ebpfcni_ctl::print_completions::<Cli>(*shell),
        Command::Pins => return print_pins(&cli.common.pin_dir),
        Command::Apply { file } => Some(read_rules(file)?),
        _ => None,
    };
    let maps = open_maps(&cli.common)?;
    let policy = &maps.policy;
    let mut out = Out::new(&cli.common);
    let changed = match cli.command {
        Command::Allow(pair) => {
            let rules = pair.rules();
            let already = rules
                .iter()
                .map(|&r| policy.contains(r))
                .collect::<Result<Vec<bool>, _>>()
                .map_err(|e| Failure::failed("read policy_map", e))?;
            policy
                .allow_all(&rules)
                .map_err(|e| Failure::failed(format_args!("allow {}", describe(&rules)), e))?;
            for (rule, already) in rules.iter().zip(already) {
                if already {
                    out.note(format_args!("{rule} was already allowed"))?;
                } else {
                    out.note(format_args!("allowed {rule}"))?;
                }
            }
            true
        }
        Command::Deny(pair) => {
            for rule in pair.rules() {
                let removed = policy
                    .revoke(rule)
                    .map_err(|e| Failure::failed(format_args!("deny {rule}"), e))?;
                if removed {
                    out.note(format_args!("denied {rule} (allow rule removed)"))?;
                } else {
                    out.note(format_args!("{rule} was not allowed; nothing to remove"))?;
                }
            }
            true
        }
        Command::List => {
            let rules = policy.list().map_err(|e| Failure::failed("list rules", e))?;
            out.policy(&rules, policy.capacity(), View::Full)?;
            false
        }
        Command::Flush => {
            let n = policy.clear().map_err(|e| Failure::failed("flush rules", e))?;
            out.note(format_args!("removed {n} rules"))?;
            true
        }
        Command::Apply { file } => {
            let rules = applied.expect("read before the maps were opened");
            let new = policy.allow_all(&rules).map_err(|e| {
                Failure::failed(
                    format_args!("apply {} rules from {}", rules.len(), source_name(&file)),
                    e,
                )
            })?;
            out.note(format_args!(
                "applied {} rules from {}: {new} new, {} already allowed",
                rules.len(),
                source_name(&file),
                rules.len() - new
            ))?;
            true
        }
        Command::Trace { level } => {
            let config = &maps.config;
            let current = config
                .trace_level()
                .map_err(|e| Failure::failed("read the trace level", e))?;
            let shown = match level {
                None => {
                    if out.format() == Format::Table {
                        out.note(format_args!("trace level: {current}"))?;
                    }
                    current
                }
                Some(level) => {
                    config
                        .set_trace_level(level)
                        .map_err(|e| Failure::failed(format_args!("set the trace level to {level}"), e))?;
                    if level == current {
                        out.note(format_args!("trace level: {level} (unchanged)"))?;
                    } else {
                        out.note(format_args!("trace level: {current} -> {level}"))?;
                    }
                    level
                }
            };
            if out.format() == Format::Json {
                out.json(&TraceJson {
                    trace_level: shown.name(),
                })?;
            }
            false
        }
        Command::Completions { .. } | Command::Pins => unreachable!("handled before the maps are opened"),
    };
    if changed {
        let rules = policy.list().map_err(|e| Failure::failed("list rules", e))?;
        out.policy(&rules, policy.capacity(), View::State)?;
    }
    out.flush()?;
    Ok(())
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

fn source_name(file: &std::path::Path) -> String {
    if file.as_os_str() == "-" {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    }
}

/// Reads and parses an apply file ('-' is stdin). An unreadable file is a
/// runtime failure (exit 1); a bad line is bad input (exit 2).
fn read_rules(file: &std::path::Path) -> Result<Vec<PolicyRule>, Failure> {
    let name = source_name(file);
    let mut bytes = Vec::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().lock().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| Failure::Runtime(format!("failed to read {name}: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::Usage(format!("{name} is not UTF-8 text; nothing was written")))?;
    parse_rules(&text).map_err(|e| Failure::Usage(format!("{name}: {e}; nothing was written")))
}
