//! policyctl's output: the rules, and how each one's replies pass (the
//! REVERSE column, from the library's decision).

use std::fmt;
use std::io::{self, Write};

use ebpfcni::{PinnedMap, PolicyIndex, Rule, Selector, Stored, StoredRule};
use serde::Serialize;

use super::table::{invalid_count, write_table};
use super::{Format, Out, View};

impl Out {
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
}

/// How full the policy maps are, for the title of the rules table.
#[derive(Debug, Clone, Copy)]
pub struct PolicyUsage {
    pub pair_capacity: u32,
    pub port_capacity: u32,
    /// Entries of port_policy_map (a port range may take several).
    pub port_entries: usize,
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
}
