//! The pod's layer-3 layout, the reference ptp plugin's: the pod's address
//! without a prefix route, a scope-link route to the gateway and the routes
//! (a default one at least) via it; the host end holds the gateway address
//! (/32) and the host a /32 route to the pod.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use crate::result::{IpConfig, RouteEntry};

/// The gateway when IPAM names none: a link-local address every host veth
/// holds (as Calico does), so any pod address works.
pub const FALLBACK_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The pod's IPv4 allocation out of an IPAM (or previous) result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address with its prefix ("10.13.1.2/24").
    pub net: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// Why the addresses of a result cannot be used. Callers say whose result
/// it is: the IPAM plugin's (ADD) or prevResult (CHECK).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("no IPv4 address")]
    NoIpv4,
    #[error("address {0:?} is not an IP address with a prefix length")]
    BadAddress(String),
    #[error("gateway {0:?} is not an IPv4 address")]
    BadGateway(String),
    #[error("the gateway {0} is also the pod's address")]
    GatewayIsPod(Ipv4Addr),
    #[error("pod address {net} is {why}")]
    PodAddress { net: Ipv4Net, why: String },
    #[error("gateway {gateway} is {why}")]
    Gateway { gateway: Ipv4Addr, why: &'static str },
}

impl Allocation {
    pub fn ip(&self) -> Ipv4Addr {
        self.net.addr()
    }

    /// The first IPv4 address of `ips` (of `interface`, when given), with
    /// its gateway, when a pod and its gateway can have them.
    pub fn from_ips(ips: &[IpConfig], interface: Option<usize>) -> Result<Self, Unusable> {
        let (config, net) = first_ipv4(ips, interface)?.ok_or(Unusable::NoIpv4)?;
        let gateway = match &config.gateway {
            None => FALLBACK_GATEWAY,
            Some(gw) => gw.parse().map_err(|_| Unusable::BadGateway(gw.clone()))?,
        };
        if let Some(why) = unusable_pod_address(net) {
            return Err(Unusable::PodAddress { net, why });
        }
        if let Some(why) = unusable_gateway(gateway) {
            return Err(Unusable::Gateway { gateway, why });
        }
        if gateway == net.addr() {
            return Err(Unusable::GatewayIsPod(gateway));
        }
        Ok(Self { net, gateway })
    }
}

/// The first IPv4 entry of `ips` (of `interface`, when given). IPv6 entries
/// are passed over (the pod gets IPv4 only); an address that is neither is
/// an error.
fn first_ipv4(ips: &[IpConfig], interface: Option<usize>) -> Result<Option<(&IpConfig, Ipv4Net)>, Unusable> {
    for config in ips
        .iter()
        .filter(|c| interface.is_none() || c.interface == interface)
    {
        match config.address.parse::<IpNet>() {
            Ok(IpNet::V4(net)) => return Ok(Some((config, net))),
            Ok(IpNet::V6(_)) => {}
            Err(_) => return Err(Unusable::BadAddress(config.address.clone())),
        }
    }
    Ok(None)
}

/// Why a pod cannot have `net`'s address, if it cannot: the kernel would
/// take it for loopback, "any", a group or a whole subnet's broadcast, and
/// routing to it would not reach the pod.
fn unusable_pod_address(net: Ipv4Net) -> Option<String> {
    let ip = net.addr();
    if let Some(why) = unusable_gateway(ip) {
        return Some(why.to_string());
    }
    // /31 and /32 have no network or broadcast address (RFC 3021).
    if net.prefix_len() < 31 {
        if ip == net.network() {
            return Some(format!("the network address of {}", net.trunc()));
        }
        if ip == net.broadcast() {
            return Some(format!("the broadcast address of {}", net.trunc()));
        }
    }
    None
}

/// Why no host can hold `ip` as a unicast address, if it cannot.
fn unusable_gateway(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

/// A route the pod gets via its gateway, and the result entry that reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRoute {
    pub dst: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub entry: RouteEntry,
}

/// The routes the pod gets (besides the scope-link one to the gateway):
/// the IPAM routes via the gateway, plus a default route when IPAM has none.
pub fn pod_routes(ipam_routes: &[RouteEntry], gateway: Ipv4Addr) -> Vec<PodRoute> {
    let mut routes: Vec<PodRoute> = ipam_routes
        .iter()
        .filter_map(|r| {
            let dst = r.dst.parse::<Ipv4Net>().ok()?.trunc();
            let gw = r.gw.as_deref().and_then(|g| g.parse().ok()).unwrap_or(gateway);
            let entry = RouteEntry {
                gw: Some(gw.to_string()),
                ..r.clone()
            };
            Some(PodRoute {
                dst,
                gateway: gw,
                entry,
            })
        })
        .collect();
    if !routes.iter().any(|r| r.dst.prefix_len() == 0) {
        routes.push(PodRoute {
            dst: Ipv4Net::default(),
            gateway,
            entry: RouteEntry {
                dst: "0.0.0.0/0".into(),
                gw: Some(gateway.to_string()),
                ..Default::default()
            },
        });
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_routes_add_a_default_route_unless_ipam_has_one() {
        let gw = Ipv4Addr::new(10, 13, 1, 1);
        let routes = pod_routes(&[], gw);
        assert_eq!(routes.len(), 1);
        assert_eq!((routes[0].dst, routes[0].gateway), (Ipv4Net::default(), gw));

        let ipam = [RouteEntry {
            dst: "10.99.0.7/16".into(),
            ..Default::default()
        }];
        let routes = pod_routes(&ipam, gw);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].dst, "10.99.0.0/16".parse::<Ipv4Net>().unwrap());
        assert_eq!(routes[0].entry.gw.as_deref(), Some("10.13.1.1"));

        let ipam = [RouteEntry {
            dst: "0.0.0.0/0".into(),
            gw: Some("10.13.1.254".into()),
            ..Default::default()
        }];
        let routes = pod_routes(&ipam, gw);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].gateway, Ipv4Addr::new(10, 13, 1, 254));
    }

    fn ip(address: &str, gateway: Option<&str>) -> IpConfig {
        IpConfig {
            address: address.into(),
            gateway: gateway.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn allocation_takes_the_ipam_gateway_or_the_link_local_one() {
        let lease = Allocation::from_ips(&[ip("10.13.1.5/24", Some("10.13.1.1"))], None).unwrap();
        assert_eq!(
            (lease.ip(), lease.net.prefix_len(), lease.gateway),
            ("10.13.1.5".parse().unwrap(), 24, "10.13.1.1".parse().unwrap())
        );
        let lease = Allocation::from_ips(&[ip("fd00::5/64", None), ip("10.13.1.5/32", None)], None).unwrap();
        assert_eq!(lease.gateway, FALLBACK_GATEWAY);
        let why = |ips: &[IpConfig]| Allocation::from_ips(ips, None).unwrap_err();
        assert_eq!(
            why(&[ip("10.13.1.1/24", Some("10.13.1.1"))]),
            Unusable::GatewayIsPod("10.13.1.1".parse().unwrap())
        );
        assert_eq!(why(&[]), Unusable::NoIpv4);
        assert_eq!(why(&[ip("fd00::5/64", None)]), Unusable::NoIpv4);
        assert_eq!(
            why(&[ip("garbage", None)]),
            Unusable::BadAddress("garbage".into())
        );
        assert_eq!(
            why(&[ip("10.13.1.5", None)]),
            Unusable::BadAddress("10.13.1.5".into())
        );
        assert_eq!(
            why(&[ip("10.13.1.5/24", Some("x"))]),
            Unusable::BadGateway("x".into())
        );
    }

    #[test]
    fn allocation_refuses_addresses_a_pod_or_gateway_cannot_have() {
        let refused = |address: &str, gateway: Option<&str>| {
            Allocation::from_ips(&[ip(address, gateway)], None)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused("127.0.0.5/8", Some("127.0.0.1")),
            "pod address 127.0.0.5/8 is a loopback address"
        );
        assert_eq!(
            refused("10.13.0.0/24", None),
            "pod address 10.13.0.0/24 is the network address of 10.13.0.0/24"
        );
        assert_eq!(
            refused("10.13.0.255/24", None),
            "pod address 10.13.0.255/24 is the broadcast address of 10.13.0.0/24"
        );
        assert!(refused("0.0.0.0/0", None).contains("unspecified"));
        assert!(refused("239.1.2.3/32", None).contains("multicast"));
        assert!(refused("255.255.255.255/32", None).contains("broadcast"));
        assert_eq!(
            refused("10.13.0.5/24", Some("224.0.0.1")),
            "gateway 224.0.0.1 is a multicast address"
        );
        assert!(refused("10.13.0.5/24", Some("0.0.0.0")).contains("unspecified"));
        assert!(refused("10.13.0.5/24", Some("127.0.0.1")).contains("loopback"));
        assert!(refused("10.13.0.5/24", Some("255.255.255.255")).contains("broadcast"));
        // /31 and /32 have no network or broadcast address to avoid.
        for ok in ["10.13.0.0/31", "10.13.0.1/31", "10.13.0.0/32", "10.13.0.255/32"] {
            assert!(Allocation::from_ips(&[ip(ok, None)], None).is_ok(), "{ok}");
        }
    }
}
