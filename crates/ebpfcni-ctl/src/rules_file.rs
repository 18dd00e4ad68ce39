//! The format of `policyctl apply` files.

use std::fmt::{self, Display};

use ebpfcni::{Identity, PolicyRule};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Why an apply file was refused; names the line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

impl Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
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
/// - text: one `SRC DST` pair of identities a line, separated by white space;
///   `#` starts a comment; blank lines are ignored;
/// - JSON (starts with `[`): `[{"src": 1, "dst": 2}, ...]`, the output of
///   `policyctl list -o json` (whose `reverse` fields are ignored).
pub fn parse_rules(text: &str) -> Result<Vec<PolicyRule>, FileError> {
    if text.trim_start().starts_with('[') {
        parse_json_rules(text)
    } else {
        content_lines(text)
            .map(|(line, content)| parse_rule_line(content).map_err(|message| FileError { line, message }))
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

fn parse_json_rules(text: &str) -> Result<Vec<PolicyRule>, FileError> {
    let rules: Vec<JsonRule> = serde_json::from_str(text).map_err(|e| FileError {
        line: e.line(),
        message: format!("invalid JSON rule list: {e}"),
    })?;
    Ok(rules.into_iter().map(|r| r.0).collect())
}

/// One element of a JSON rule list: an object `{"src": ID, "dst": ID}`,
/// with `"reverse"` (as `list -o json` prints it) ignored. Deserialized by
/// hand so that only objects are taken (serde's derive would also take
/// `[5, 6]`) and errors say what is expected in our words.
struct JsonRule(PolicyRule);

const FIELDS: &[&str] = &["src", "dst", "reverse"];

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
        let (mut src, mut dst) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "src" => src = Some(identity(map.next_value()?)?),
                "dst" => dst = Some(identity(map.next_value()?)?),
                "reverse" => drop(map.next_value::<Option<bool>>()?),
                "invalid" => {
                    let why: String = map.next_value()?;
                    return Err(de::Error::custom(format!(
                        "this entry is listed as invalid ({why}) and cannot be applied"
                    )));
                }
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        match (src, dst) {
            (Some(src), Some(dst)) => Ok(JsonRule(PolicyRule::new(src, dst))),
            (None, _) => Err(de::Error::missing_field("src")),
            (_, None) => Err(de::Error::missing_field("dst")),
        }
    }
}

fn identity<E: de::Error>(raw: u64) -> Result<Identity, E> {
    u32::try_from(raw)
        .ok()
        .and_then(Identity::new)
        .ok_or_else(|| E::custom(format!("invalid identity {raw}: expected 1 to 4294967295")))
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
}
