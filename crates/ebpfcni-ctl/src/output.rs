//! What the CLIs print: tables for people, JSON for programs, and the
//! one-line notes that say what a command did.

use std::collections::HashSet;
use std::fmt::Display;
use std::io::{self, BufWriter, StdoutLock, Write};
use std::net::Ipv4Addr;

use clap::ValueEnum;
use ebpfcni::{IdentityAddr, PinnedMap, PolicyRule, Stored, StoredIdentity, StoredRule};
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::Common;

/// Rows of the state table printed after a change; `list` prints them all.
pub const STATE_ROWS: usize = 20;

/// How listings and map states are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns, sorted
    Table,
    /// One JSON document on stdout; the one-line notes go to stderr
    Json,
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

    /// Prints the identities of addresses (endpoint_map, sorted by address)
    /// and of prefixes (prefix_map), as two tables or one JSON array of
    /// `{"ip", "identity"}` and `{"cidr", "identity"}` objects. Invalid
    /// entries are shown, marked, and counted (`"invalid"` in JSON).
    pub fn identities(&mut self, state: &IdentityState, view: View) -> io::Result<()> {
        if self.skips(view) {
            return Ok(());
        }
        if self.format == Format::Json {
            let rows: Vec<IdentityRow> = state
                .endpoints
                .iter()
                .map(|&(ip, id)| IdentityRow::from(IdentityAddr::Ip(ip), id))
                .chain(
                    state
                        .prefixes
                        .iter()
                        .map(|&(net, id)| IdentityRow::from(IdentityAddr::Cidr(net), id)),
                )
                .collect();
            return self.json(&rows);
        }
        self.identity_table(
            PinnedMap::Endpoints,
            "IP",
            state.endpoints.iter().map(|(ip, id)| (ip.to_string(), *id)),
            state.capacities.0,
            view,
        )?;
        // Prefixes are shown once there are some (most nodes have none).
        if !state.prefixes.is_empty() {
            self.identity_table(
                PinnedMap::Prefixes,
                "PREFIX",
                state.prefixes.iter().map(|(net, id)| (net.to_string(), *id)),
                state.capacities.1,
                view,
            )?;
        }
        Ok(())
    }

    fn identity_table(
        &mut self,
        map: PinnedMap,
        key: &str,
        entries: impl ExactSizeIterator<Item = (String, StoredIdentity)>,
        capacity: u32,
        view: View,
    ) -> io::Result<()> {
        let entries: Vec<_> = entries.collect();
        let invalid = entries.iter().filter(|(_, id)| !id.is_valid()).count();
        writeln!(
            self.stdout,
            "{map}: {} of {capacity} entries{}",
            entries.len(),
            invalid_count(invalid)
        )?;
        let rows = entries.iter().map(|(k, id)| {
            let identity = match id {
                Stored::Valid(id) => id.to_string(),
                Stored::Invalid { raw, problem } => format!("{raw} INVALID: {problem}"),
            };
            vec![k.clone(), identity]
        });
        write_table(
            &mut self.stdout,
            &[key, "IDENTITY"],
            rows,
            entries.len(),
            view,
            "endpointctl list",
        )?;
        if invalid > 0 {
            writeln!(
                self.stdout,
                "  invalid entries count as absent; remove one with `endpointctl del --ip ADDR` (or --cidr)"
            )?;
        }
        Ok(())
    }

    /// Prints the policy rules (sorted by source, destination) as a table or
    /// a JSON array of `{"src", "dst", "reverse"}`. `reverse` tells whether
    /// `dst -> src` is allowed too, so a one-way rule stands out. Invalid
    /// entries are shown, marked, and counted (`"invalid"` in JSON).
    pub fn policy(&mut self, rules: &[StoredRule], capacity: u32, view: View) -> io::Result<()> {
        if self.skips(view) {
            return Ok(());
        }
        let present: HashSet<PolicyRule> = rules.iter().filter_map(|r| r.valid()).collect();
        let reverse = |r: &PolicyRule| present.contains(&r.reverse());
        if self.format == Format::Json {
            let rows: Vec<RuleRow> = rules
                .iter()
                .map(|stored| match *stored {
                    Stored::Valid(r) => RuleRow {
                        src: r.src.get(),
                        dst: r.dst.get(),
                        reverse: Some(reverse(&r)),
                        invalid: None,
                    },
                    Stored::Invalid { raw, problem } => RuleRow {
                        src: raw.src,
                        dst: raw.dst,
                        reverse: None,
                        invalid: Some(format!("{problem} (action {})", raw.action)),
                    },
                })
                .collect();
            return self.json(&rows);
        }
        let invalid = rules.len() - present.len();
        writeln!(
            self.stdout,
            "{}: {} of {capacity} rules{} (anything not listed is denied)",
            PinnedMap::Policy.name(),
            rules.len(),
            invalid_count(invalid)
        )?;
        let rows = rules.iter().map(|stored| match *stored {
            Stored::Valid(r) => {
                let back = if r.src == r.dst {
                    "self"
                } else if reverse(&r) {
                    "yes"
                } else {
                    "MISSING"
                };
                vec![r.src.to_string(), r.dst.to_string(), back.to_owned()]
            }
            Stored::Invalid { raw, problem } => vec![
                raw.src.to_string(),
                raw.dst.to_string(),
                format!("INVALID: {problem} (action {})", raw.action),
            ],
        });
        write_table(
            &mut self.stdout,
            &["SRC", "DST", "REVERSE"],
            rows,
            rules.len(),
            view,
            "policyctl list",
        )?;
        if invalid > 0 {
            writeln!(
                self.stdout,
                "  invalid entries allow nothing; remove one with `policyctl deny --src SRC --dst DST` (0 is accepted there)"
            )?;
        }
        Ok(())
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

/// ", 1 invalid" (nothing when there are none).
fn invalid_count(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} invalid")
    }
}

/// Everything endpointctl shows: endpoints, prefixes, and the capacities
/// of their maps.
pub struct IdentityState {
    pub endpoints: Vec<(Ipv4Addr, StoredIdentity)>,
    pub prefixes: Vec<(Ipv4Net, StoredIdentity)>,
    /// (endpoint_map, prefix_map)
    pub capacities: (u32, u32),
}

/// One identity in JSON output: of an address (`ip`) or of a prefix
/// (`cidr`). `invalid` says why an entry the tools never write is invalid
/// (and is absent for valid entries).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Ipv4Net>,
    pub identity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

impl IdentityRow {
    pub fn from(addr: IdentityAddr, id: StoredIdentity) -> Self {
        let (ip, cidr) = match addr {
            IdentityAddr::Ip(ip) => (Some(ip), None),
            IdentityAddr::Cidr(net) => (None, Some(net)),
        };
        let (identity, invalid) = match id {
            Stored::Valid(id) => (id.get(), None),
            Stored::Invalid { raw, problem } => (raw, Some(problem.to_string())),
        };
        Self {
            ip,
            cidr,
            identity,
            invalid,
        }
    }
}

/// One policy rule in JSON output, and in JSON apply files (where
/// `reverse` may be left out and is ignored, so `list -o json` output can
/// be applied again).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    pub src: u32,
    pub dst: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
    /// Why an entry the tools never write is invalid (absent for valid rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
