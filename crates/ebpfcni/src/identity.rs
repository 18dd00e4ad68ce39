//! The values operators type: security identities, endpoint addresses and
//! policy rules, with the strict parsing the CLIs and the CNI plugin share.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use std::num::NonZeroU32;
use std::str::FromStr;

/// A security identity: a number in 1..=4294967295 shared by every endpoint
/// that policy treats alike. 0 is reserved (never a valid identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity(NonZeroU32);

impl Identity {
    /// `None` for 0.
    pub const fn new(id: u32) -> Option<Self> {
        match NonZeroU32::new(id) {
            Some(id) => Some(Self(id)),
            None => None,
        }
    }

    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `input` quoted for an error message: whole when short, else its first 32
/// characters and its length, so that a huge argument is not echoed back.
pub fn quote_input(input: &str) -> String {
    const SHOWN: usize = 32;
    match input.char_indices().nth(SHOWN) {
        None => format!("{input:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &input[..cut], input.len()),
    }
}

/// Why a string is not an [`Identity`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity {}: expected a decimal integer from 1 to 4294967295", quote_input(.0))]
pub struct ParseIdentityError(String);

impl FromStr for Identity {
    type Err = ParseIdentityError;

    /// Accepts plain decimal digits only: no sign, spaces, hex or exponent.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdentityError(s.to_owned());
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        s.parse::<u32>().ok().and_then(Identity::new).ok_or_else(err)
    }
}

/// Why a string is not an endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint address {}: {reason}", quote_input(input))]
pub struct ParseEndpointIpError {
    input: String,
    reason: &'static str,
}

/// Parses an endpoint address: a dotted-quad IPv4 unicast address (not
/// 0.0.0.0, 255.255.255.255 or multicast; no prefix length, no hostname).
pub fn parse_endpoint_ip(s: &str) -> Result<Ipv4Addr, ParseEndpointIpError> {
    let err = |reason| ParseEndpointIpError {
        input: s.to_owned(),
        reason,
    };
    let ip = Ipv4Addr::from_str(s).map_err(|_| err("expected a dotted IPv4 address such as 10.13.0.2"))?;
    if ip.is_unspecified() {
        Err(err("0.0.0.0 is not an endpoint address"))
    } else if ip.is_broadcast() {
        Err(err("the broadcast address is not an endpoint address"))
    } else if ip.is_multicast() {
        Err(err("multicast addresses are not endpoint addresses"))
    } else {
        Ok(ip)
    }
}

/// Why a string is not a CIDR prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid prefix {}: {reason}", quote_input(input))]
pub struct ParsePrefixError {
    input: String,
    reason: String,
}

/// Parses an IPv4 prefix "a.b.c.d/len" strictly: a dotted address, a
/// length from 0 to 32, and no host bits set (the error names them and the
/// prefix that was probably meant).
pub fn parse_prefix(s: &str) -> Result<Ipv4Net, ParsePrefixError> {
    let err = |reason: String| ParsePrefixError {
        input: s.to_owned(),
        reason,
    };
    let Some((addr, len)) = s.split_once('/') else {
        return Err(err("expected ADDRESS/LENGTH such as 10.255.0.0/16".into()));
    };
    let addr = Ipv4Addr::from_str(addr).map_err(|_| err(format!("{addr:?} is not a dotted IPv4 address")))?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!("length {len:?} is not a number from 0 to 32")));
    }
    let net = len
        .parse::<u8>()
        .ok()
        .and_then(|len| Ipv4Net::new(addr, len).ok())
        .ok_or_else(|| err(format!("length {len} is not from 0 to 32")))?;
    if net.addr() != net.network() {
        let host = Ipv4Addr::from(u32::from(net.addr()) & !u32::from(net.netmask()));
        return Err(err(format!(
            "host bits are set ({host}); the prefix is {}",
            net.trunc()
        )));
    }
    Ok(net)
}

/// One allow rule: packets from identity `src` to identity `dst` pass.
/// Precedence of rules against the other checks: the numbered list in
/// bpf/include/ebpfcni.h (this is step 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRule {
    pub src: Identity,
    pub dst: Identity,
}

impl PolicyRule {
    pub const fn new(src: Identity, dst: Identity) -> Self {
        Self { src, dst }
    }

    /// The rule for the replies: `dst -> src`.
    pub const fn reverse(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
        }
    }
}

impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_accepts_decimal_in_range() {
        assert_eq!("1".parse::<Identity>().unwrap().get(), 1);
        assert_eq!("4294967295".parse::<Identity>().unwrap().get(), u32::MAX);
        assert_eq!("007".parse::<Identity>().unwrap().get(), 7);
    }

    #[test]
    fn identity_rejects_everything_else() {
        for bad in [
            "0",
            "-1",
            "1e3",
            "0x10",
            "4294967296",
            "",
            " 5",
            "5 ",
            "+5",
            "1.0",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn long_input_is_not_echoed_whole() {
        let long = "1".repeat(100_000);
        let msg = parse_endpoint_ip(&long).unwrap_err().to_string();
        assert!(msg.len() < 150 && msg.contains("(100000 bytes)"), "{msg}");
        let msg = long.parse::<Identity>().unwrap_err().to_string();
        assert!(msg.len() < 150 && msg.contains("(100000 bytes)"), "{msg}");
    }

    #[test]
    fn prefixes_are_strict_and_say_what_is_wrong() {
        assert_eq!(
            parse_prefix("10.255.0.0/16").unwrap().to_string(),
            "10.255.0.0/16"
        );
        assert_eq!(parse_prefix("0.0.0.0/0").unwrap().prefix_len(), 0);
        assert_eq!(parse_prefix("10.13.0.7/32").unwrap().prefix_len(), 32);
        for (bad, why) in [
            (
                "10.255.0.1/16",
                "host bits are set (0.0.0.1); the prefix is 10.255.0.0/16",
            ),
            ("10.0.0.0/33", "length 33 is not from 0 to 32"),
            ("10.0.0.0", "expected ADDRESS/LENGTH"),
            ("10.0.0.0/", "is not a number"),
            ("10.0.0.0/+8", "is not a number"),
            ("10.0.0/8", "is not a dotted IPv4 address"),
            ("::/0", "is not a dotted IPv4 address"),
        ] {
            let msg = parse_prefix(bad).unwrap_err().to_string();
            assert!(msg.contains(why), "{bad}: {msg}");
        }
    }

    #[test]
    fn endpoint_ip_accepts_unicast() {
        assert_eq!(
            parse_endpoint_ip("10.13.0.2").unwrap(),
            Ipv4Addr::new(10, 13, 0, 2)
        );
    }

    #[test]
    fn endpoint_ip_rejects_non_unicast_and_non_addresses() {
        for bad in [
            "10.13.0.256",
            "1.2.3",
            "::1",
            "localhost",
            "10.13.0.0/24",
            "",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            " 10.13.0.2",
            "010.13.0.2",
        ] {
            assert!(parse_endpoint_ip(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
