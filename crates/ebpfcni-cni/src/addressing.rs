//! The pod's layer-3 layout, the reference ptp plugin's: the pod's address
//! without a prefix route, a scope-link route to the gateway and the routes
//! (a default one at least) via it; the host end holds the gateway address
//! (/32) and the host a /32 route to the pod.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
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

impl Allocation {
    pub fn ip(&self) -> Ipv4Addr {
        self.net.addr()
    }

    /// The first IPv4 address of `ips` (of `interface`, when given).
    pub fn from_ips(ips: &[IpConfig], interface: Option<usize>) -> Result<Self> {
        let found = ips
            .iter()
            .filter(|c| interface.is_none() || c.interface == interface)
            .find_map(|c| c.address.parse::<Ipv4Net>().ok().map(|net| (c, net)));
        let Some((config, net)) = found else {
            return Err(Error::ipam("no IPv4 address in the IPAM result"));
        };
        let gateway = match &config.gateway {
            None => FALLBACK_GATEWAY,
            Some(gw) => gw
                .parse()
                .map_err(|_| Error::ipam(format!("IPAM gateway {gw:?} is not an IPv4 address")))?,
        };
        if gateway == net.addr() {
            return Err(Error::ipam(format!(
                "IPAM gave the gateway {gateway} as the pod's address"
            )));
        }
        Ok(Self { net, gateway })
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

    #[test]
    fn allocation_takes_the_ipam_gateway_or_the_link_local_one() {
        let ip = |address: &str, gateway: Option<&str>| IpConfig {
            address: address.into(),
            gateway: gateway.map(str::to_string),
            ..Default::default()
        };
        let lease = Allocation::from_ips(&[ip("10.13.1.5/24", Some("10.13.1.1"))], None).unwrap();
        assert_eq!(
            (lease.ip(), lease.net.prefix_len(), lease.gateway),
            ("10.13.1.5".parse().unwrap(), 24, "10.13.1.1".parse().unwrap())
        );
        let lease = Allocation::from_ips(&[ip("fd00::5/64", None), ip("10.13.1.5/32", None)], None).unwrap();
        assert_eq!(lease.gateway, FALLBACK_GATEWAY);
        let code = |ips: &[IpConfig]| Allocation::from_ips(ips, None).unwrap_err().code();
        assert_eq!(code(&[ip("10.13.1.1/24", Some("10.13.1.1"))]), crate::error::IPAM);
        assert_eq!(code(&[]), crate::error::IPAM);
    }
}
