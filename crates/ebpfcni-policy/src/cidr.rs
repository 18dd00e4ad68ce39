//! IPv4 prefixes: parsing as the Kubernetes API does (host bits refused),
//! containment, and the difference `cidr - except` as disjoint prefixes (what
//! an LPM map holds).

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 prefix without host bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    addr: u32,
    len: u8,
}

impl Ipv4Net {
    /// A prefix; `None` when `len > 32` or `addr` has host bits.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        let addr = u32::from(addr);
        (addr & mask(len) == addr).then_some(Self { addr, len })
    }

    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == self.addr
    }

    /// Whether `other` lies inside this prefix.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        other.len >= self.len && other.addr & mask(self.len) == self.addr
    }

    /// `self` without every prefix of `except`, as disjoint prefixes.
    pub fn without(&self, except: &[Ipv4Net]) -> Vec<Ipv4Net> {
        let mut out = Vec::new();
        self.split_into(except, &mut out);
        out
    }

    fn split_into(&self, except: &[Ipv4Net], out: &mut Vec<Ipv4Net>) {
        if except.iter().any(|e| e.covers(self)) {
            return;
        }
        if !except.iter().any(|e| self.covers(e)) {
            out.push(*self);
            return;
        }
        // Some except lies strictly inside: split in halves (len < 32 here,
        // since a /32 inside self would cover it).
        let len = self.len + 1;
        let low = Ipv4Net { addr: self.addr, len };
        let high = Ipv4Net {
            addr: self.addr | (1u32 << (32 - len)),
            len,
        };
        low.split_into(except, out);
        high.split_into(except, out);
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 CIDR (ADDRESS/LENGTH)")]
    Syntax(String),
    #[error("{0:?} has host bits set (the network is {1}); the Kubernetes API refuses it")]
    HostBits(String, String),
}

impl std::str::FromStr for Ipv4Net {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let len: u8 = len.parse().map_err(|_| syntax())?;
        if len > 32 {
            return Err(syntax());
        }
        Ipv4Net::new(addr, len).ok_or_else(|| {
            let net = Ipv4Net {
                addr: u32::from(addr) & mask(len),
                len,
            };
            CidrError::HostBits(s.to_string(), net.to_string())
        })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn host_bits_are_refused_naming_the_network() {
        assert_eq!(
            "10.0.0.1/24".parse::<Ipv4Net>(),
            Err(CidrError::HostBits("10.0.0.1/24".into(), "10.0.0.0/24".into()))
        );
        assert!("10.0.0.1/32".parse::<Ipv4Net>().is_ok());
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn difference_is_disjoint_prefixes_covering_exactly_the_rest() {
        let parts = net("10.0.0.0/16").without(&[net("10.0.1.7/32"), net("10.0.128.0/17")]);
        for i in 0..=u16::MAX {
            let ip = Ipv4Addr::from(0x0a00_0000 | u32::from(i));
            let inside = parts.iter().filter(|p| p.contains(ip)).count();
            let want = ip != Ipv4Addr::new(10, 0, 1, 7) && i < 0x8000;
            assert_eq!(inside, usize::from(want), "{ip}");
        }
        assert_eq!(net("10.0.0.0/16").without(&[net("10.0.0.0/8")]), vec![]);
        assert_eq!(net("10.0.0.0/16").without(&[]), vec![net("10.0.0.0/16")]);
    }
}
