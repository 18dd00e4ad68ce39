//! What the CLIs print: tables for people, JSON for programs, and the
//! one-line notes that say what a command did.

use std::fmt::{self, Display};
use std::io::{self, BufWriter, StdoutLock, Write};
use std::net::Ipv4Addr;

use clap::ValueEnum;
use ebpfcni::{IdentityAddr, PinnedMap, PolicyIndex, Rule, Selector, Stored, StoredIdentity, StoredRule};
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
    /// The Prometheus text format (`policyctl stats` only)
    Prometheus,
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
            Format::Table | Format::Prometheus => writeln!(self.stdout, "{note}"),
            Format::Json => {
                self.stdout.flush()?;
                writeln!(io::stderr(), "{note}")
            }
        }
    }

    /// Prints `text` as it is.
    pub fn raw(&mut self, text: &str) -> io::Result<()> {
        self.stdout.write_all(text.as_bytes())
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

    /// Prints the rules (sorted by source, destination, selector) as a
    /// table or a JSON array of `{"src", "dst", "proto"?, "port"?,
    /// "stateful"?, "reverse"}` that `apply` takes back. `reverse` says
    /// whether the replies pass (see [`reverse_of`]), so that a one-way rule
    /// stands out. The PROTO, PORT and STATEFUL columns appear once some
    /// rule needs them: the plan's rules print the plan's table. Invalid
    /// entries are shown, marked, and counted (`"invalid"` in JSON).
    pub fn policy(&mut self, rules: &[StoredRule], usage: PolicyUsage, view: View) -> io::Result<()> {
        if self.skips(view) {
            return Ok(());
        }
        let valid: Vec<Rule> = rules.iter().filter_map(|r| r.clone().valid()).collect();
        let index = PolicyIndex::of(valid.iter().copied());
        let reverse = |r: &Rule| reverse_of(r, &index);
        if self.format == Format::Json {
            let rows: Vec<RuleRow> = rules
                .iter()
                .map(|stored| match stored {
                    Stored::Valid(r) => RuleRow::of(r, reverse(r) != Reverse::Missing),
                    Stored::Invalid { raw, problem } => RuleRow {
                        src: raw.src,
                        dst: raw.dst,
                        proto: None,
                        port: raw.selector.clone(),
                        stateful: None,
                        reverse: None,
                        invalid: Some(format!("{problem} (action {})", raw.action)),
                    },
                })
                .collect();
            return self.json(&rows);
        }
        let invalid = rules.len() - valid.len();
        let pair_rules = valid.iter().filter(|r| r.selector == Selector::Any).count();
        let port_rules = valid.len() - pair_rules;
        let plan_only = port_rules == 0 && !valid.iter().any(|r| r.stateful) && invalid == 0;
        let ports = if port_rules == 0 && usage.port_entries == 0 {
            String::new()
        } else {
            format!(
                "; {port_rules} port or protocol rules ({}: {} of {} entries)",
                PinnedMap::PortPolicy,
                usage.port_entries,
                usage.port_capacity
            )
        };
        writeln!(
            self.stdout,
            "{}: {} of {} rules{ports}{} (anything not listed is denied)",
            PinnedMap::Policy,
            rules.len() - port_rules,
            usage.pair_capacity,
            invalid_count(invalid)
        )?;
        let rows = rules.iter().map(|stored| {
            let mut row = match stored {
                Stored::Valid(r) => vec![r.pair.src.to_string(), r.pair.dst.to_string()],
                Stored::Invalid { raw, .. } => vec![raw.src.to_string(), raw.dst.to_string()],
            };
            if !plan_only {
                row.extend(match stored {
                    Stored::Valid(r) => {
                        let (proto, port) = selector_columns(r.selector);
                        [proto, port, if r.stateful { "yes" } else { "no" }.to_owned()]
                    }
                    Stored::Invalid { raw, .. } => [
                        raw.selector.clone().unwrap_or_else(|| "any".into()),
                        "-".into(),
                        "-".into(),
                    ],
                });
            }
            row.push(match stored {
                Stored::Valid(r) => reverse(r).to_string(),
                Stored::Invalid { raw, problem } => format!("INVALID: {problem} (action {})", raw.action),
            });
            row
        });
        let headers: &[&str] = if plan_only {
            &["SRC", "DST", "REVERSE"]
        } else {
            &["SRC", "DST", "PROTO", "PORT", "STATEFUL", "REVERSE"]
        };
        write_table(
            &mut self.stdout,
            headers,
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

/// How full the policy maps are, for the title of the rules table.
#[derive(Debug, Clone, Copy)]
pub struct PolicyUsage {
    pub pair_capacity: u32,
    pub port_capacity: u32,
    /// Entries of port_policy_map (a port range may take several).
    pub port_entries: usize,
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

/// One rule in JSON output, the shape JSON apply files take (where
/// `reverse` is ignored).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    pub src: u32,
    pub dst: u32,
    /// A whole protocol: its name or number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Ports: "8080/tcp", "8000-8080/tcp".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stateful: Option<bool>,
    /// Whether the replies pass (see [`reverse_of`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
    /// Why an entry the tools never write is invalid (absent for valid rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

impl RuleRow {
    fn of(r: &Rule, reverse: bool) -> Self {
        let (proto, port) = match r.selector {
            Selector::Any => (None, None),
            Selector::Protocol(p) => (Some(p.to_string()), None),
            s @ Selector::Ports { .. } => (None, Some(s.to_string())),
        };
        Self {
            src: r.pair.src.get(),
            dst: r.pair.dst.get(),
            proto,
            port,
            stateful: r.stateful.then_some(true),
            reverse: Some(reverse),
            invalid: None,
        }
    }
}

/// The PROTO and PORT columns of a rule.
fn selector_columns(selector: Selector) -> (String, String) {
    match selector {
        Selector::Any => ("any".into(), "any".into()),
        Selector::Protocol(p) => (p.to_string(), "any".into()),
        Selector::Ports {
            protocol,
            first,
            last,
        } if first == last => (protocol.to_string(), first.to_string()),
        Selector::Ports {
            protocol,
            first,
            last,
        } => (protocol.to_string(), format!("{first}-{last}")),
    }
}

/// How the replies of a rule pass (the REVERSE column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reverse {
    /// The rule is stateful: replies of the connections it allowed pass.
    Tracked,
    /// Source and destination are one identity.
    Same,
    /// The rules of the reverse pair allow them, whatever the opener's
    /// port: its pair rule, a rule for the whole protocol, or port rules
    /// covering every port ([`PolicyIndex::replies_allowed`]).
    Allowed,
    /// No rule allows them (a one-way rule; for a stateless port rule,
    /// `--stateful` is what lets its replies back).
    Missing,
}

impl fmt::Display for Reverse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reverse::Tracked => "tracked",
            Reverse::Same => "self",
            Reverse::Allowed => "yes",
            Reverse::Missing => "MISSING",
        })
    }
}

/// How the replies of `rule` pass, given every valid rule (as the
/// datapath judges them: [`PolicyIndex`]).
pub fn reverse_of(rule: &Rule, rules: &PolicyIndex) -> Reverse {
    if rule.stateful {
        return Reverse::Tracked;
    }
    if rule.pair.src == rule.pair.dst {
        return Reverse::Same;
    }
    if rules.replies_allowed(rule) {
        Reverse::Allowed
    } else {
        Reverse::Missing
    }
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

    use ebpfcni::{Identity, PolicyRule};

    fn rule(src: u32, dst: u32, selector: &str) -> Rule {
        let selector = match selector {
            "any" => Selector::Any,
            s if s.contains('/') => Selector::parse_ports(s).unwrap(),
            s => Selector::Protocol(s.parse().unwrap()),
        };
        Rule {
            pair: PolicyRule::new(Identity::new(src).unwrap(), Identity::new(dst).unwrap()),
            selector,
            stateful: false,
        }
    }

    /// The REVERSE column of the first rule, given all of them.
    fn reverse(rules: &[Rule]) -> Reverse {
        reverse_of(&rules[0], &PolicyIndex::of(rules.iter().copied()))
    }

    #[test]
    fn a_port_rule_whose_replies_a_whole_protocol_rule_allows_is_not_missing() {
        // The case: the replies of 8080/tcp come from port 8080 to
        // any port, and `2 -> 1 tcp` allows them all.
        assert_eq!(
            reverse(&[rule(1, 2, "8080/tcp"), rule(2, 1, "tcp")]),
            Reverse::Allowed
        );
    }

    #[test]
    fn reverse_says_whether_every_reply_passes() {
        let cases: &[(&[Rule], Reverse)] = &[
            (&[rule(1, 2, "any")], Reverse::Missing),
            (&[rule(1, 2, "any"), rule(2, 1, "any")], Reverse::Allowed),
            (&[rule(1, 2, "any"), rule(2, 1, "udp")], Reverse::Missing),
            (&[rule(1, 2, "53/udp"), rule(2, 1, "any")], Reverse::Allowed),
            (&[rule(1, 2, "53/udp"), rule(2, 1, "tcp")], Reverse::Missing),
            (&[rule(1, 2, "icmp"), rule(2, 1, "icmp")], Reverse::Allowed),
            (&[rule(1, 2, "tcp"), rule(2, 1, "8080/tcp")], Reverse::Missing),
            (
                &[rule(1, 2, "8080/tcp"), rule(2, 1, "8080/tcp")],
                Reverse::Missing,
            ),
            (
                &[
                    rule(1, 2, "8080/tcp"),
                    rule(2, 1, "1-30000/tcp"),
                    rule(2, 1, "30001-65535/tcp"),
                ],
                Reverse::Allowed,
            ),
            (
                &[
                    rule(1, 2, "8080/tcp"),
                    rule(2, 1, "1-30000/tcp"),
                    rule(2, 1, "30002-65535/tcp"),
                ],
                Reverse::Missing,
            ),
            (&[rule(1, 1, "8080/tcp")], Reverse::Same),
        ];
        for (rules, expected) in cases {
            assert_eq!(reverse(rules), *expected, "{rules:?}");
        }
        let stateful = Rule {
            stateful: true,
            ..rule(1, 2, "8080/tcp")
        };
        assert_eq!(reverse(&[stateful]), Reverse::Tracked);
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
