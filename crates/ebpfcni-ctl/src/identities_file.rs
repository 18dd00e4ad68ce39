//! The format of `endpointctl apply` files: identities of addresses and
//! prefixes, all or nothing.
//!
//! Two formats, told apart by the first character that is not white space:
//! - text: one `ADDRESS IDENTITY` or `PREFIX IDENTITY` a line, separated by
//!   white space; `#` starts a comment; blank lines are ignored;
//! - JSON (starts with `[`): what `endpointctl list -o json` prints,
//!   `[{"ip": "10.13.0.2", "identity": 100}, {"cidr": "10.255.0.0/16", "identity": 2}]`.

use std::fmt;

use ebpfcni::{parse_endpoint_ip, parse_prefix, Identity, IdentityAddr};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::rules_file::{content_lines, without_repeats, FileError, Place};

/// The identities of a file, each address once: an address (or prefix)
/// given two identities is refused with both places named; one listed
/// twice alike is taken once. Returns them and how many were repeats.
pub fn parse_identities(text: &str) -> Result<(Vec<(IdentityAddr, Identity)>, usize), FileError> {
    let placed: Vec<(Place, IdentityAddr, Identity)> = if text.trim_start().starts_with('[') {
        let entries: Vec<JsonEntry> = serde_json::from_str(text).map_err(|e| FileError {
            line: e.line(),
            message: format!("invalid JSON identity list: {e}"),
        })?;
        entries
            .into_iter()
            .enumerate()
            .map(|(i, JsonEntry((addr, id)))| (Place::Entry(i + 1), addr, id))
            .collect()
    } else {
        content_lines(text)
            .map(|(line, content)| {
                parse_line(content)
                    .map(|(addr, id)| (Place::Line(line), addr, id))
                    .map_err(|message| FileError { line, message })
            })
            .collect::<Result<_, _>>()?
    };
    without_repeats(placed, |addr, a, b| {
        format!("{addr} is given two identities, {a} and {b}")
    })
}

/// "10.13.0.2 100" or "10.255.0.0/16 2".
fn parse_line(content: &str) -> Result<(IdentityAddr, Identity), String> {
    let fields: Vec<&str> = content.split_whitespace().collect();
    let [addr, id] = fields[..] else {
        return Err(format!(
            "expected \"ADDRESS IDENTITY\" or \"PREFIX IDENTITY\", found {}",
            ebpfcni::quote_input(content)
        ));
    };
    let id = id.parse::<Identity>().map_err(|e| e.to_string())?;
    Ok((parse_addr(addr)?, id))
}

fn parse_addr(s: &str) -> Result<IdentityAddr, String> {
    if s.contains('/') {
        parse_prefix(s).map(IdentityAddr::Cidr).map_err(|e| e.to_string())
    } else {
        parse_endpoint_ip(s)
            .map(IdentityAddr::Ip)
            .map_err(|e| e.to_string())
    }
}

/// One element of a JSON identity list: an object with "ip" or "cidr" and
/// "identity" (an "invalid" entry, as `list` marks one, cannot be applied).
struct JsonEntry((IdentityAddr, Identity));

impl<'de> Deserialize<'de> for JsonEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

const FIELDS: &[&str] = &["ip", "cidr", "identity"];

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = JsonEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object such as {"ip": "10.13.0.2", "identity": 100} or {"cidr": "10.255.0.0/16", "identity": 2}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonEntry, A::Error> {
        let (mut addr, mut raw_id, mut invalid) = (None, None, None::<String>);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "ip" | "cidr" if addr.is_some() => {
                    return Err(de::Error::custom("give one of \"ip\" and \"cidr\", not both"))
                }
                "ip" => {
                    let s: String = map.next_value()?;
                    addr = Some(
                        parse_endpoint_ip(&s)
                            .map(IdentityAddr::Ip)
                            .map_err(de::Error::custom)?,
                    );
                }
                "cidr" => {
                    let s: String = map.next_value()?;
                    addr = Some(
                        parse_prefix(&s)
                            .map(IdentityAddr::Cidr)
                            .map_err(de::Error::custom)?,
                    );
                }
                "identity" if raw_id.is_some() => {
                    return Err(de::Error::custom("the field \"identity\" is given twice"))
                }
                "identity" => raw_id = Some(map.next_value::<u64>()?),
                "invalid" => invalid = Some(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        if let Some(why) = invalid {
            return Err(de::Error::custom(format!(
                "this entry is listed as invalid ({why}) and cannot be applied"
            )));
        }
        let addr = addr.ok_or_else(|| de::Error::custom("missing \"ip\" or \"cidr\""))?;
        let raw = raw_id.ok_or_else(|| de::Error::missing_field("identity"))?;
        let id = u32::try_from(raw)
            .ok()
            .and_then(Identity::new)
            .ok_or_else(|| de::Error::custom(format!("invalid identity {raw}: expected 1 to 4294967295")))?;
        Ok(JsonEntry((addr, id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Identity {
        Identity::new(n).unwrap()
    }

    #[test]
    fn text_takes_addresses_and_prefixes_with_comments() {
        let text = "# pods\n10.13.0.2 100\n\n10.255.0.0/16\t2   # the resolvers\n0.0.0.0/0 9\n";
        assert_eq!(
            parse_identities(text).unwrap().0,
            [
                (IdentityAddr::Ip("10.13.0.2".parse().unwrap()), id(100)),
                (IdentityAddr::Cidr("10.255.0.0/16".parse().unwrap()), id(2)),
                (IdentityAddr::Cidr("0.0.0.0/0".parse().unwrap()), id(9)),
            ]
        );
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line, why) in [
            ("10.13.0.2 1\n10.255.0.1/16 2\n", 2, "host bits are set (0.0.0.1)"),
            ("10.0.0.0/33 2\n", 1, "length 33"),
            ("10.13.0.2\n", 1, "expected \"ADDRESS IDENTITY\""),
            ("10.13.0.2 0\n", 1, "invalid identity"),
            (
                "10.13.0.2 1\n10.13.0.3 1\n10.13.0.2 2\n",
                0,
                "10.13.0.2 is given two identities, 1 and 2 (line 1 and line 3)",
            ),
        ] {
            let err = parse_identities(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn json_round_trips_list_output_and_refuses_other_shapes() {
        let text = r#"[{"ip": "10.13.0.2", "identity": 100},
                       {"cidr": "10.255.0.0/16", "identity": 2}]"#;
        assert_eq!(parse_identities(text).unwrap().0.len(), 2);
        for (bad, why) in [
            (r#"[["10.13.0.2", 1]]"#, "expected an object"),
            (
                r#"[{"ip": "10.13.0.2", "cidr": "10.0.0.0/8", "identity": 1}]"#,
                "not both",
            ),
            (r#"[{"identity": 1}]"#, "missing \"ip\" or \"cidr\""),
            (
                r#"[{"ip": "10.13.0.2", "identity": 1, "identity": 2}]"#,
                "given twice",
            ),
            (
                r#"[{"ip": "10.13.0.2", "identity": 1}, {"ip": "10.13.0.2", "identity": 2}]"#,
                "(entry 1 of the list and entry 2 of the list)",
            ),
            (
                r#"[{"ip": "10.13.0.2", "identity": 0, "invalid": "identity 0"}]"#,
                "listed as invalid",
            ),
        ] {
            let err = parse_identities(bad).unwrap_err();
            assert!(err.message.contains(why), "{bad}: {err}");
        }
    }
}
