//! Value parsers for the command line whose errors are ours: clap would
//! echo a rejected value in full before our message (which names it too),
//! so a 100,000-character `--ip` came back twice. Here the value is named
//! once, shortened ([`ebpfcni::quote_input`]).

use std::ffi::OsStr;
use std::fmt::Display;
use std::net::Ipv4Addr;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use ebpfcni::{quote_input, Identity};

/// A clap value parser from a parse function whose error names the value.
#[derive(Clone, Copy)]
pub struct Parser<T>(fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Parser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let flag = arg.map_or_else(|| "a value".to_owned(), |a| a.to_string());
        let fail = |message: String| {
            clap::Error::raw(ErrorKind::ValueValidation, format!("{flag}: {message}\n")).with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| fail(format!("{} is not UTF-8", quote_input(&value.to_string_lossy()))))?;
        (self.0)(text).map_err(fail)
    }
}

fn with_display<T, E: Display>(result: Result<T, E>) -> Result<T, String> {
    result.map_err(|e| e.to_string())
}

/// A security identity, 1..=4294967295.
pub fn identity() -> Parser<Identity> {
    Parser(|s| with_display(s.parse::<Identity>()))
}

/// An identity as stored, 0 included: `policyctl deny` takes 0 so that an
/// invalid entry (which no valid identity can name) can be removed.
pub fn stored_identity() -> Parser<u32> {
    Parser(|s| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = s.parse::<u32>() {
                return Ok(n);
            }
        }
        Err(format!(
            "invalid identity {}: expected a decimal integer from 0 to 4294967295",
            quote_input(s)
        ))
    })
}

/// `--src`/`--dst` of `allow` and `deny`: an identity (the plan's pair
/// rules), or a label selector `KEY=VALUE[,KEY=VALUE...]` (a selector rule
/// of the node agent's label policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Identity(u32),
    Labels(ebpfcni_api::Labels),
}

fn who_of(s: &str, number: fn(&str) -> Result<u32, String>) -> Result<Who, String> {
    if s.contains('=') {
        return crate::label_policy::parse_labels(s)
            .map(Who::Labels)
            .map_err(|e| format!("invalid selector {}: {e}", quote_input(s)));
    }
    number(s).map(Who::Identity)
}

/// An identity from 1, or a label selector.
pub fn who() -> Parser<Who> {
    Parser(|s| who_of(s, |s| with_display(s.parse::<Identity>()).map(Identity::get)))
}

/// An identity from 0 (as stored), or a label selector.
pub fn stored_who() -> Parser<Who> {
    Parser(|s| who_of(s, |s| (stored_identity().0)(s)))
}

/// An endpoint address: dotted IPv4 unicast.
pub fn endpoint_ip() -> Parser<Ipv4Addr> {
    Parser(|s| with_display(ebpfcni::parse_endpoint_ip(s)))
}

/// An IPv4 prefix with its host bits clear.
pub fn prefix() -> Parser<ipnet::Ipv4Net> {
    Parser(|s| with_display(ebpfcni::parse_prefix(s)))
}

/// A port rule's selector: `8080`, `53/udp`, `8000-8080/tcp`.
pub fn ports() -> Parser<ebpfcni::Selector> {
    Parser(ebpfcni::Selector::parse_ports)
}

/// A whole protocol: `tcp`, `udp`, `icmp` or a number from 1 to 255.
pub fn protocol() -> Parser<ebpfcni::Selector> {
    Parser(|s| s.parse::<ebpfcni::Protocol>().map(ebpfcni::Selector::Protocol))
}

/// A lifetime in seconds, from 1 to 4294967295 (0 would mean "the
/// default" in the map, so it is refused rather than silently reinterpreted).
pub fn seconds() -> Parser<u32> {
    Parser(|s| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n @ 1..) = s.parse::<u32>() {
                return Ok(n);
            }
        }
        Err(format!(
            "invalid number of seconds {}: expected a decimal integer from 1 to 4294967295",
            quote_input(s)
        ))
    })
}

/// A rate limit: events (or trace lines) a second per CPU, from 1 to
/// [`ebpfcni::RateLimit::MAX_RATE`].
pub fn rate() -> Parser<u32> {
    Parser(|s| {
        let max = ebpfcni::RateLimit::MAX_RATE;
        match s.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(format!(
                "invalid rate {}: expected a decimal integer from 1 to {max}",
                quote_input(s)
            )),
        }
    })
}

/// A count, from 1 to 4294967295.
pub fn count() -> Parser<u32> {
    Parser(|s| match s.parse::<u32>() {
        Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "invalid number {}: expected a decimal integer from 1 to 4294967295",
            quote_input(s)
        )),
    })
}
