//! The format of `policyctl apply` files.

use std::fmt::{self, Display};

use ebpfcni::{Identity, PolicyRule};
use serde::Deserialize;

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
}
