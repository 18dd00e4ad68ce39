//! The agent's IPAM: addresses of the node's pod CIDR, the first one kept
//! as the gateway every host veth holds (as the reference ptp plugin with
//! host-local gives it), handed out round-robin from where the last one
//! was taken, so that an address just released is the last to come back.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The pod CIDR and what in it is never a pod's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub cidr: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("--pod-cidr {0}: a pod CIDR needs host bits zero and a prefix of /8 to /30")]
    Unusable(String),
}

impl Pool {
    pub fn new(cidr: Ipv4Net) -> Result<Self, PoolError> {
        if cidr.trunc() != cidr || !(8..=30).contains(&cidr.prefix_len()) {
            return Err(PoolError::Unusable(cidr.to_string()));
        }
        Ok(Self { cidr })
    }

    /// The gateway of every pod: the CIDR's first address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    fn first(&self) -> u32 {
        u32::from(self.cidr.network()) + 2
    }

    fn last(&self) -> u32 {
        u32::from(self.cidr.broadcast()) - 1
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        (self.first()..=self.last()).contains(&n)
    }

    /// The first address from `next` on (wrapping) that `taken` does not
    /// refuse, and the cursor after it; `None` when every one is taken.
    pub fn allocate(
        &self,
        next: Option<u32>,
        mut taken: impl FnMut(Ipv4Addr) -> bool,
    ) -> Option<(Ipv4Addr, u32)> {
        let (first, last) = (self.first(), self.last());
        let start = next.filter(|n| (first..=last).contains(n)).unwrap_or(first);
        let size = last - first + 1;
        (0..size)
            .map(|i| first + (start - first + i) % size)
            .map(Ipv4Addr::from)
            .find(|ip| !taken(*ip))
            .map(|ip| {
                let after = u32::from(ip) + 1;
                (ip, if after > last { first } else { after })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Pool {
        Pool::new(s.parse().unwrap()).unwrap()
    }

    #[test]
    fn the_first_address_is_the_gateway_and_the_last_is_broadcast() {
        let p = pool("10.13.0.0/29");
        assert_eq!(p.gateway(), Ipv4Addr::new(10, 13, 0, 1));
        let mut next = None;
        let mut got = Vec::new();
        while let Some((ip, after)) = p.allocate(next, |ip| got.contains(&ip)) {
            got.push(ip);
            next = Some(after);
        }
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 13, 0, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 13, 0, 6)));
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn a_released_address_comes_back_last() {
        let p = pool("10.13.0.0/29");
        let (a, next) = p.allocate(None, |_| false).unwrap();
        // a released: the next allocation moves on.
        let (b, _) = p.allocate(Some(next), |_| false).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn unusable_pod_cidrs_are_refused() {
        assert!(Pool::new("10.13.0.1/24".parse().unwrap()).is_err());
        assert!(Pool::new("10.13.0.0/31".parse().unwrap()).is_err());
    }
}
