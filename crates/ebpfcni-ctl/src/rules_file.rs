//! The format of `policyctl apply` files (and the shared parts of apply
//! files: the line error, comment handling).

use std::fmt::{self, Display};

use ebpfcni::{Identity, PolicyRule, Protocol, Rule, Selector};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Why an apply file was refused; names the line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

impl Display for FileError {
    /// "line N: ..."; a message that names its places itself (line 0: two
    /// entries that contradict each other) stands alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => f.write_str(&self.message),
            line => write!(f, "line {line}: {}", self.message),
        }
    }
}

/// Where an entry of an apply file is: a text line, or the n-th element
/// of a JSON list (both from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Line(usize),
    Entry(usize),
}

impl Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Entry(n) => write!(f, "entry {n} of the list"),
        }
    }
}

/// Refuses an apply file in which two entries give one key (an address, a
/// rule's pair and selector) different values (an identity, stateful or
/// not): which was meant is not for us to guess, so both are named and
/// nothing is written. Exact repeats are fine. Returns the entries, each
/// key once (its first place), and how many were repeats.
pub fn without_repeats<K, V>(
    entries: Vec<(Place, K, V)>,
    conflict: impl Fn(&K, &V, &V) -> String,
) -> Result<(Vec<(K, V)>, usize), FileError>
where
    K: std::hash::Hash + Eq + Clone,
    V: PartialEq,
{
    let mut first: std::collections::HashMap<K, (Place, usize)> = std::collections::HashMap::new();
    let mut kept: Vec<(K, V)> = Vec::with_capacity(entries.len());
    let mut repeats = 0;
    for (place, key, value) in entries {
        match first.get(&key) {
            Some(&(_, i)) if kept[i].1 == value => repeats += 1,
            Some(&(was, i)) => {
                // The message names both places itself.
                return Err(FileError {
                    line: 0,
                    message: format!(
                        "{} ({was} and {place}): say which is meant",
                        conflict(&key, &kept[i].1, &value)
                    ),
                });
            }
            None => {
                first.insert(key.clone(), (place, kept.len()));
                kept.push((key, value));
            }
        }
    }
    Ok((kept, repeats))
}

/// The lines of a text apply file that hold something: (1-based number,
/// content), with `#` comments and surrounding white space removed.
pub fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let content = line.split('#').next().unwrap_or_default().trim();
        (!content.is_empty()).then_some((i + 1, content))
    })
}

/// Parses a `policyctl apply` file, all of it or nothing.
///
/// Two formats, told apart by the first character that is not white space:
/// - text: one rule a line: `SRC DST`, then optionally `port=PORT[-LAST][/tcp|/udp]`
///   or `proto=tcp|udp|icmp|N`, and `stateful`; `src=` and `dst=` may name
///   the identities too. `#` starts a comment; blank lines are ignored;
/// - JSON (starts with `[`): what `policyctl list -o json` prints,
///   `[{"src": 1, "dst": 2, "port": "8080/tcp", "stateful": true}, ...]`
///   (its `reverse` fields are ignored).
///
/// A rule listed twice with the same selector, once stateful and once not,
/// is refused with both places named; a rule listed twice alike is taken
/// once. Returns the rules and how many lines were such repeats.
pub fn parse_rules(text: &str) -> Result<(Vec<Rule>, usize), FileError> {
    let placed: Vec<(Place, Rule)> = if text.trim_start().starts_with('[') {
        parse_json_rules(text)?
            .into_iter()
            .enumerate()
            .map(|(i, rule)| (Place::Entry(i + 1), rule))
            .collect()
    } else {
        content_lines(text)
            .map(|(line, content)| {
                parse_rule_line(content)
                    .map(|rule| (Place::Line(line), rule))
                    .map_err(|message| FileError { line, message })
            })
            .collect::<Result<_, _>>()?
    };
    let keyed = placed
        .into_iter()
        .map(|(place, rule)| (place, (rule.pair, rule.selector), rule.stateful))
        .collect();
    let (kept, repeats) = without_repeats(keyed, |&(pair, selector), _, _| {
        let what = match selector {
            Selector::Any => pair.to_string(),
            s => format!("{pair} {s}"),
        };
        format!("the rule {what} is listed both stateful and not")
    })?;
    let rules = kept
        .into_iter()
        .map(|((pair, selector), stateful)| Rule {
            pair,
            selector,
            stateful,
        })
        .collect();
    Ok((rules, repeats))
}

/// The parts of a rule, as any format gives them.
#[derive(Default)]
struct Parts {
    src: Option<Identity>,
    dst: Option<Identity>,
    selector: Option<Selector>,
    stateful: bool,
}

impl Parts {
    fn set_selector(&mut self, selector: Selector) -> Result<(), String> {
        if self.selector.replace(selector).is_some() {
            return Err("give one of port and proto, not both".into());
        }
        Ok(())
    }

    fn rule(self) -> Result<Rule, String> {
        let src = self.src.ok_or("missing the source identity")?;
        let dst = self.dst.ok_or("missing the destination identity")?;
        Ok(Rule {
            pair: PolicyRule::new(src, dst),
            selector: self.selector.unwrap_or(Selector::Any),
            stateful: self.stateful,
        })
    }
}

/// `--proto`: a protocol's name or number (ports are `--port`'s).
pub fn parse_proto(s: &str) -> Result<Selector, String> {
    s.parse::<Protocol>().map(Selector::Protocol)
}

fn parse_rule_line(content: &str) -> Result<Rule, String> {
    let mut parts = Parts::default();
    let mut positional = 0;
    let id = |s: &str| s.parse::<Identity>().map_err(|e| e.to_string());
    // Each identity once: `src=31 32 33` names three sources, not one.
    let once = |slot: &mut Option<Identity>, which: &str, value: Identity| match slot.replace(value) {
        Some(was) => Err(format!(
            "the {which} identity is given twice ({was} and {value}) in {}",
            ebpfcni::quote_input(content)
        )),
        None => Ok(()),
    };
    for field in content.split_whitespace() {
        match field.split_once('=') {
            Some(("src", v)) => once(&mut parts.src, "source", id(v)?)?,
            Some(("dst", v)) => once(&mut parts.dst, "destination", id(v)?)?,
            Some(("port", v)) => parts.set_selector(Selector::parse_ports(v)?)?,
            Some(("proto", v)) => parts.set_selector(parse_proto(v)?)?,
            Some((name, _)) => {
                return Err(format!(
                    "unknown field {}: expected src=, dst=, port=, proto= or stateful",
                    ebpfcni::quote_input(name)
                ))
            }
            None if field == "stateful" => parts.stateful = true,
            None if positional == 0 => {
                once(&mut parts.src, "source", id(field)?)?;
                positional += 1;
            }
            None if positional == 1 => {
                once(&mut parts.dst, "destination", id(field)?)?;
                positional += 1;
            }
            None => {
                return Err(format!(
                    "expected \"SRC DST [port=PORT|proto=PROTO] [stateful]\", found {}",
                    ebpfcni::quote_input(content)
                ))
            }
        }
    }
    parts.rule()
}

fn parse_json_rules(text: &str) -> Result<Vec<Rule>, FileError> {
    let rules: Vec<JsonRule> = serde_json::from_str(text).map_err(|e| FileError {
        line: e.line(),
        message: format!("invalid JSON rule list: {e}"),
    })?;
    Ok(rules.into_iter().map(|r| r.0).collect())
}

/// One element of a JSON rule list: an object with "src", "dst", and
/// optionally "port" (a string: "8080", "8000-8080/tcp", "53/udp") or
/// "proto" (a name or number) and "stateful"; "reverse" (as `list -o json`
/// prints it) is ignored. Deserialized by hand so that only objects are
/// taken (serde's derive would also take `[5, 6]`) and errors say what is
/// expected in our words.
struct JsonRule(Rule);

const FIELDS: &[&str] = &["src", "dst", "port", "proto", "stateful", "reverse"];

impl<'de> Deserialize<'de> for JsonRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RuleVisitor)
    }
}

struct RuleVisitor;

impl<'de> Visitor<'de> for RuleVisitor {
    type Value = JsonRule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a rule object such as {"src": 100, "dst": 200}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRule, A::Error> {
        // Read every field first: an entry `list` marked invalid is refused
        // as such, whatever its other fields hold.
        let mut fields: Vec<(String, serde_json::Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key != "invalid" && !FIELDS.contains(&key.as_str()) {
                return Err(de::Error::unknown_field(&key, FIELDS));
            }
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("the field \"{key}\" is given twice")));
            }
            fields.push((key, map.next_value()?));
        }
        if let Some((_, why)) = fields.iter().find(|(k, _)| k == "invalid") {
            let why = why.as_str().map_or_else(|| why.to_string(), str::to_owned);
            return Err(de::Error::custom(format!(
                "this entry is listed as invalid ({why}) and cannot be applied"
            )));
        }
        let mut parts = Parts::default();
        for (key, value) in fields {
            match key.as_str() {
                "src" => parts.src = Some(identity(&value)?),
                "dst" => parts.dst = Some(identity(&value)?),
                "port" => {
                    let text = value.as_str().ok_or_else(|| {
                        de::Error::custom(format!(
                            "invalid port {value}: expected a string such as \"8080/tcp\""
                        ))
                    })?;
                    let selector = Selector::parse_ports(text).map_err(de::Error::custom)?;
                    parts.set_selector(selector).map_err(de::Error::custom)?;
                }
                "proto" => {
                    let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                    let selector = parse_proto(&text).map_err(de::Error::custom)?;
                    parts.set_selector(selector).map_err(de::Error::custom)?;
                }
                "stateful" => {
                    parts.stateful = value.as_bool().ok_or_else(|| {
                        de::Error::custom(format!("invalid stateful {value}: expected true or false"))
                    })?
                }
                _ => {} // "reverse", as `list -o json` prints it
            }
        }
        parts.rule().map(JsonRule).map_err(|e| match e.as_str() {
            "missing the source identity" => de::Error::missing_field("src"),
            "missing the destination identity" => de::Error::missing_field("dst"),
            _ => de::Error::custom(e),
        })
    }
}

fn identity<E: de::Error>(value: &serde_json::Value) -> Result<Identity, E> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .and_then(Identity::new)
        .ok_or_else(|| E::custom(format!("invalid identity {value}: expected 1 to 4294967295")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(src: u32, dst: u32) -> Rule {
        Rule::pair(
            PolicyRule::new(Identity::new(src).unwrap(), Identity::new(dst).unwrap()),
            false,
        )
    }

    #[test]
    fn text_rules_allow_comments_and_blank_lines() {
        let text = "# web may reach db\n100 200\n\n  200\t100  # replies\n";
        assert_eq!(parse_rules(text).unwrap().0, [rule(100, 200), rule(200, 100)]);
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
        assert_eq!(parse_rules(text).unwrap().0, [rule(1, 2), rule(2, 3)]);
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
    fn json_rules_must_be_objects_and_errors_say_so() {
        for text in ["[[5, 6]]", "[[5, 6, true]]", "[[5]]", "[5]", "[\"5 6\"]"] {
            let err = parse_rules(text).unwrap_err();
            assert!(
                err.message
                    .contains(r#"expected a rule object such as {"src": 100, "dst": 200}"#),
                "{text}: {err}"
            );
            assert!(
                !err.message.contains("JsonRule"),
                "{text}: internal name in {err}"
            );
        }
        let err = parse_rules(r#"[{"src": 1, "dst": 2, "invalid": "identity 0"}]"#).unwrap_err();
        assert!(err.message.contains("listed as invalid"), "{err}");
        let err = parse_rules(r#"[{"src": 1}]"#).unwrap_err();
        assert!(err.message.contains("missing field `dst`"), "{err}");
    }

    #[test]
    fn text_and_json_take_ports_protocols_and_stateful() {
        let id = |n| Identity::new(n).unwrap();
        let pair = PolicyRule::new(id(1001), id(1002));
        let text = "1001 1002 port=8080 stateful\nsrc=1001 dst=1002 proto=icmp\n1001 1002 port=53/udp\n1001 1002 port=8000-8080/tcp\n";
        let rules = parse_rules(text).unwrap().0;
        assert_eq!(
            rules,
            [
                Rule {
                    pair,
                    selector: Selector::Ports {
                        protocol: Protocol::TCP,
                        first: 8080,
                        last: 8080
                    },
                    stateful: true
                },
                Rule {
                    pair,
                    selector: Selector::Protocol(Protocol::ICMP),
                    stateful: false
                },
                Rule {
                    pair,
                    selector: Selector::Ports {
                        protocol: Protocol::UDP,
                        first: 53,
                        last: 53
                    },
                    stateful: false
                },
                Rule {
                    pair,
                    selector: Selector::Ports {
                        protocol: Protocol::TCP,
                        first: 8000,
                        last: 8080
                    },
                    stateful: false
                },
            ]
        );
        let json = r#"[{"src": 1001, "dst": 1002, "port": "8080/tcp", "stateful": true},
                       {"src": 1001, "dst": 1002, "proto": "icmp", "reverse": false},
                       {"src": 1001, "dst": 1002, "proto": 132}]"#;
        let rules = parse_rules(json).unwrap().0;
        assert_eq!(
            rules[0],
            parse_rules("1001 1002 port=8080 stateful").unwrap().0[0]
        );
        assert_eq!(rules[2].selector, Selector::Protocol(Protocol(132)));
    }

    #[test]
    fn bad_ports_and_protocols_are_named() {
        for (text, why) in [
            ("1 2 port=0", "0 is not from 1 to 65535"),
            ("1 2 port=65536", "65536 is not from 1 to 65535"),
            ("1 2 port=80/icmp", "icmp has no ports"),
            ("1 2 proto=sctpx", "unknown protocol"),
            ("1 2 port=80 proto=udp", "not both"),
            ("1 2 port=90-80", "is empty"),
            ("1 2 colour=red", "unknown field"),
            ("src=31 32 33", "source identity is given twice (31 and 32)"),
            ("1 2 dst=3", "destination identity is given twice (2 and 3)"),
            (r#"[{"src": 1, "dst": 2, "dst": 3}]"#, "\"dst\" is given twice"),
        ] {
            let err = parse_rules(text).unwrap_err();
            assert!(err.message.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn contradicting_repeats_are_refused_with_both_places_and_exact_ones_taken_once() {
        let err = parse_rules("# x\n51 52\n1 2\n51 52 stateful\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the rule 51 -> 52 is listed both stateful and not (line 2 and line 4): say which is meant"
        );
        let err = parse_rules(
            r#"[{"src": 1, "dst": 2, "port": "80"}, {"src": 1, "dst": 2, "port": "80", "stateful": true}]"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("entry 1 of the list and entry 2 of the list"),
            "{err}"
        );
        let (rules, repeats) = parse_rules("1 2\n1 2 port=80\n1 2\n").unwrap();
        assert_eq!((rules.len(), repeats), (2, 1));
    }
}
