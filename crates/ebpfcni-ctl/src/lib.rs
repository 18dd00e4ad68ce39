//! What `endpointctl` and `policyctl` share: the common flags, the mapping
//! from failures to exit codes, the table and JSON printers, and the format
//! of `policyctl apply` files.
//!
//! Both binaries parse everything first and touch the maps last, so bad input
//! never changes a map. Exit codes ([`EXIT_FAILURE`], [`EXIT_USAGE`]):
//! - 0: done;
//! - 1: the operation failed and nothing was changed (privilege, bpffs, an
//!   incompatible pinned map, a full map, an unreadable file);
//! - 2: bad input (clap's usage errors, an invalid value, a bad line in an
//!   apply file).

use std::collections::HashSet;
use std::fmt::{self, Display};
use std::io::{self, BufWriter, StdoutLock, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, ValueEnum};
use ebpfcni::{Identity, PolicyRule};
use serde::{Deserialize, Serialize};

/// The operation failed; nothing was changed.
pub const EXIT_FAILURE: u8 = 1;
/// Bad input: nothing was attempted. (clap exits with 2 for its own errors too.)
pub const EXIT_USAGE: u8 = 2;

/// Rows of the state table printed after a change; `list` prints them all.
pub const STATE_ROWS: usize = 20;

/// The exit status paragraph both binaries end their `--help` with.
#[macro_export]
macro_rules! exit_status_help {
    () => {
        "Exit status:\n  \
         0  done\n  \
         1  the operation failed, nothing was changed (not permitted, bpffs, incompatible pinned map,\n     \
            map full, unreadable file)\n  \
         2  bad input, nothing was changed (unknown or missing flag, invalid address or identity,\n     \
            bad line in an apply file)"
    };
}

/// Flags every subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Directory on the bpf filesystem holding the pinned maps; the maps are created there when missing
    #[arg(long, value_name = "DIR", default_value = ebpfcni::DEFAULT_PIN_DIR, global = true, display_order = 100)]
    pub pin_dir: PathBuf,

    /// After a change, print only what changed, not the map's state
    #[arg(short, long, global = true, display_order = 101)]
    pub quiet: bool,

    /// Output format of listings and of the state printed after a change
    #[arg(
        short,
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t = Format::Table,
        global = true,
        display_order = 102
    )]
    pub output: Format,
}

/// How listings and map states are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns, sorted
    Table,
    /// One JSON document on stdout; the one-line notes go to stderr
    Json,
}

/// Why a command failed, which decides its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad input found after the command line was parsed (exit 2).
    Usage(String),
    /// The operation failed; nothing was changed (exit 1).
    Runtime(String),
    /// Whoever read our stdout went away (`| head`): not worth an error.
    StdoutClosed,
}

impl Failure {
    /// "failed to {action}: {error}", with a hint for errors an operator can fix.
    pub fn runtime(action: impl Display, error: ebpfcni::Error) -> Self {
        let hint = match &error {
            ebpfcni::Error::MapFull { map, .. } => {
                let free = match *map {
                    ebpfcni::POLICY_MAP => "`policyctl deny` or `policyctl flush`",
                    ebpfcni::ENDPOINT_MAP => "`endpointctl del` or `endpointctl flush`",
                    _ => "removing entries",
                };
                format!("; nothing was written (make room with {free})")
            }
            _ => String::new(),
        };
        Failure::Runtime(format!("failed to {action}: {error}{hint}"))
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::StdoutClosed
        } else {
            Failure::Runtime(format!("failed to write output: {e}"))
        }
    }
}

pub type CmdResult = Result<(), Failure>;

/// Ends a binary: prints a failure as `{bin}: error: ...` on stderr and
/// turns it into the exit code.
pub fn finish(bin: &str, result: CmdResult) -> ExitCode {
    let (code, message) = match result {
        Ok(()) | Err(Failure::StdoutClosed) => return ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => (EXIT_USAGE, m),
        Err(Failure::Runtime(m)) => (EXIT_FAILURE, m),
    };
    eprintln!("{bin}: error: {message}");
    ExitCode::from(code)
}

/// Opens the maps pinned under `--pin-dir`, creating them when missing so
/// that policy can be loaded before the first pod exists.
pub fn open_maps(common: &Common) -> Result<ebpfcni::Maps, Failure> {
    ebpfcni::Maps::open_or_create(&common.pin_dir).map_err(|e| {
        Failure::runtime(
            format_args!("open the maps under {}", common.pin_dir.display()),
            e,
        )
    })
}

/// Prints a completion script for `C` on stdout.
pub fn print_completions<C: CommandFactory>(shell: clap_complete::Shell) -> CmdResult {
    let mut cmd = C::command();
    let name = cmd.get_name().to_owned();
    let mut stdout = io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, name, &mut stdout);
    stdout.flush()?;
    Ok(())
}

/// Where a command's output goes, honouring `--quiet` and `-o`.
pub struct Out {
    format: Format,
    quiet: bool,
    stdout: BufWriter<StdoutLock<'static>>,
}

/// How much of a map a printer shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The state after a change: at most [`STATE_ROWS`] rows; nothing with `--quiet`.
    State,
    /// A listing: every row.
    Full,
}

impl Out {
    pub fn new(common: &Common) -> Self {
        Self {
            format: common.output,
            quiet: common.quiet,
            stdout: BufWriter::new(io::stdout().lock()),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// A one-line account of what a command did: on stdout with tables, on
    /// stderr with `-o json` so that stdout stays one JSON document.
    pub fn note(&mut self, note: impl Display) -> io::Result<()> {
        match self.format {
            Format::Table => writeln!(self.stdout, "{note}"),
            Format::Json => {
                self.stdout.flush()?;
                writeln!(io::stderr(), "{note}")
            }
        }
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn json(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut self.stdout, value)?;
        writeln!(self.stdout)
    }

    /// Prints the endpoints (sorted by address) as a table or a JSON array
    /// of `{"ip", "identity"}`.
    pub fn endpoints(
        &mut self,
        entries: &[(Ipv4Addr, Identity)],
        capacity: u32,
        view: View,
    ) -> io::Result<()> {
        if self.skips(view) {
            return Ok(());
        }
        if self.format == Format::Json {
            let rows: Vec<EndpointRow> = entries
                .iter()
                .map(|&(ip, id)| EndpointRow {
                    ip,
                    identity: id.get(),
                })
                .collect();
            return self.json(&rows);
        }
        writeln!(
            self.stdout,
            "{}: {} of {capacity} entries",
            ebpfcni::ENDPOINT_MAP,
            entries.len()
        )?;
        let rows = entries
            .iter()
            .map(|(ip, id)| vec![ip.to_string(), id.to_string()]);
        let more = "endpointctl list";
        write_table(
            &mut self.stdout,
            &["IP", "IDENTITY"],
            rows,
            entries.len(),
            view,
            more,
        )
    }

    /// Prints the policy rules (sorted by source, destination) as a table or
    /// a JSON array of `{"src", "dst", "reverse"}`. `reverse` tells whether
    /// `dst -> src` is allowed too, so a one-way rule stands out.
    pub fn policy(&mut self, rules: &[PolicyRule], capacity: u32, view: View) -> io::Result<()> {
        if self.skips(view) {
            return Ok(());
        }
        let present: HashSet<PolicyRule> = rules.iter().copied().collect();
        let reverse = |r: &PolicyRule| present.contains(&r.reverse());
        if self.format == Format::Json {
            let rows: Vec<RuleRow> = rules
                .iter()
                .map(|r| RuleRow {
                    src: r.src.get(),
                    dst: r.dst.get(),
                    reverse: Some(reverse(r)),
                })
                .collect();
            return self.json(&rows);
        }
        writeln!(
            self.stdout,
            "{}: {} of {capacity} rules (anything not listed is denied)",
            ebpfcni::POLICY_MAP,
            rules.len()
        )?;
        let rows = rules.iter().map(|r| {
            let back = if r.src == r.dst {
                "self"
            } else if reverse(r) {
                "yes"
            } else {
                "MISSING"
            };
            vec![r.src.to_string(), r.dst.to_string(), back.to_owned()]
        });
        let more = "policyctl list";
        write_table(
            &mut self.stdout,
            &["SRC", "DST", "REVERSE"],
            rows,
            rules.len(),
            view,
            more,
        )
    }

    /// Prints rows under headers in aligned columns (tables only).
    pub fn table(&mut self, headers: &[&str], rows: Vec<Vec<String>>) -> io::Result<()> {
        let total = rows.len();
        write_table(&mut self.stdout, headers, rows.into_iter(), total, View::Full, "")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()
    }

    fn skips(&self, view: View) -> bool {
        view == View::State && self.quiet
    }
}

/// One endpoint in JSON output.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointRow {
    pub ip: Ipv4Addr,
    pub identity: u32,
}

/// One policy rule in JSON output, and in JSON apply files (where
/// `reverse` may be left out and is ignored, so `list -o json` output can
/// be applied again).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleRow {
    pub src: u32,
    pub dst: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
}

/// Writes aligned columns; a [`View::State`] shows at most [`STATE_ROWS`]
/// rows and then points at the command that lists the rest.
fn write_table(
    w: &mut impl Write,
    headers: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
    total: usize,
    view: View,
    list_command: &str,
) -> io::Result<()> {
    let shown: Vec<Vec<String>> = match view {
        View::State => rows.take(STATE_ROWS).collect(),
        View::Full => rows.collect(),
    };
    if shown.is_empty() {
        return writeln!(w, "  (none)");
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &shown {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |w: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(w, "  {}", text.join("  ").trim_end())
    };
    line(w, &mut headers.iter().copied())?;
    for row in &shown {
        line(w, &mut row.iter().map(String::as_str))?;
    }
    if total > shown.len() {
        writeln!(w, "  ... and {} more; see `{list_command}`", total - shown.len())?;
    }
    Ok(())
}

/// Why an apply file was refused; names the line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    pub line: usize,
    pub message: String,
}

impl Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses a `policyctl apply` file, all of it or nothing.
///
/// Two formats, told apart by the first character that is not white space:
/// - text: one `SRC DST` pair of identities a line, separated by white space;
///   `#` starts a comment; blank lines are ignored;
/// - JSON (starts with `[`): `[{"src": 1, "dst": 2}, ...]`, the output of
///   `policyctl list -o json` (whose `reverse` fields are ignored).
pub fn parse_rules(text: &str) -> Result<Vec<PolicyRule>, RulesError> {
    if text.trim_start().starts_with('[') {
        parse_json_rules(text)
    } else {
        text.lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let content = line.split('#').next().unwrap_or_default().trim();
                (!content.is_empty()).then_some((i + 1, content))
            })
            .map(|(line, content)| parse_rule_line(content).map_err(|message| RulesError { line, message }))
            .collect()
    }
}

fn parse_rule_line(content: &str) -> Result<PolicyRule, String> {
    let fields: Vec<&str> = content.split_whitespace().collect();
    let [src, dst] = fields[..] else {
        return Err(format!("expected two identities \"SRC DST\", found {content:?}"));
    };
    let id = |s: &str| s.parse::<Identity>().map_err(|e| e.to_string());
    Ok(PolicyRule::new(id(src)?, id(dst)?))
}

fn parse_json_rules(text: &str) -> Result<Vec<PolicyRule>, RulesError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct JsonRule {
        #[serde(deserialize_with = "identity")]
        src: Identity,
        #[serde(deserialize_with = "identity")]
        dst: Identity,
        #[serde(default, rename = "reverse")]
        _reverse: Option<bool>,
    }
    fn identity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Identity, D::Error> {
        let raw = u32::deserialize(d)?;
        Identity::new(raw)
            .ok_or_else(|| serde::de::Error::custom("invalid identity 0: expected 1 to 4294967295"))
    }
    let rules: Vec<JsonRule> = serde_json::from_str(text).map_err(|e| RulesError {
        line: e.line(),
        message: format!("invalid JSON rule list: {e}"),
    })?;
    Ok(rules.into_iter().map(|r| PolicyRule::new(r.src, r.dst)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(src: u32, dst: u32) -> PolicyRule {
        PolicyRule::new(Identity::new(src).unwrap(), Identity::new(dst).unwrap())
    }

    #[test]
    fn text_rules_allow_comments_and_blank_lines() {
        let text = "# web may reach db\n100 200\n\n  200\t100  # replies\n";
        assert_eq!(parse_rules(text).unwrap(), [rule(100, 200), rule(200, 100)]);
    }

    #[test]
    fn text_rules_name_the_bad_line() {
        for (text, line) in [
            ("1 2\n# fine\n1 0\n", 3),
            ("1 2\n3\n", 2),
            ("1 2 3\n", 1),
            ("0x10 2\n", 1),
            ("\n\n1 -1\n", 3),
        ] {
            assert_eq!(parse_rules(text).unwrap_err().line, line, "{text:?}");
        }
    }

    #[test]
    fn json_rules_round_trip_list_output() {
        let text = r#"[{"src": 1, "dst": 2, "reverse": false},
                       {"src": 2, "dst": 3}]"#;
        assert_eq!(parse_rules(text).unwrap(), [rule(1, 2), rule(2, 3)]);
    }

    #[test]
    fn json_rules_name_the_bad_line() {
        for (text, line) in [
            ("[\n{\"src\": 1, \"dst\": 2},\n{\"src\": 0, \"dst\": 2}\n]", 3),
            ("[\n{\"src\": 1, \"dst\": 4294967296}\n]", 2),
            ("[\n{\"src\": 1, \"dts\": 2}\n]", 2),
            ("[\n{\"src\": 1, \"dst\": 2},\n", 3),
        ] {
            assert_eq!(parse_rules(text).unwrap_err().line, line, "{text:?}");
        }
    }

    #[test]
    fn state_table_is_capped() {
        let rows = (0..25).map(|i| vec![i.to_string()]);
        let mut buf = Vec::new();
        write_table(&mut buf, &["N"], rows, 25, View::State, "x list").unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 1 + STATE_ROWS + 1);
        assert!(text.ends_with("  ... and 5 more; see `x list`\n"), "{text}");
    }
}
