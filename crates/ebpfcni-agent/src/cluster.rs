//! Many nodes: what the agent does locally with the cluster's state
//! (issue 23). [`Remote`] applies the events of the cluster store's watcher
//! ([`ebpfcni_kvstore::Watcher`]) to this node:
//!
//! - another node up: a route to its pod CIDR via its node IP (native
//!   routing, no tunnel; as Cilium's auto-direct-node-routes), and its node
//!   IP in the endpoint map with the reserved `remote-node` identity;
//!   gone: both removed;
//! - another node's endpoint (accepted by the watcher: inside its owner's
//!   pod CIDR): its address in the endpoint map with its identity, for
//!   exactly as long as its key exists;
//! - after the first full list ([`Event::Synced`]): remote entries and
//!   routes left from before a restart that the cluster no longer has are
//!   removed. Nothing is flushed; entries of this node's own pod CIDR are
//!   never touched (they are the agent's).
//!
//! Routes go through the netlink socket given (opened in the node's
//! network namespace), never a shell.
//!
//! Not wired into `ebpfcni-agent` yet (`--etcd` is to come).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ebpfcni::netlink::{Netlink, Route};
use ebpfcni::{Identity as Id, Maps, Stored};
use ebpfcni_kvstore::{Event, NodeRecord};
use ipnet::Ipv4Net;

/// The reserved identity of the other nodes' addresses.
pub const REMOTE_NODE: u32 = 6;

/// This node's view of the other nodes, as applied to its maps and routes.
pub struct Remote {
    node: String,
    own_cidr: Ipv4Net,
    cluster_cidr: Option<Ipv4Net>,
    netlink: Netlink,
    /// Other nodes, as routed.
    nodes: BTreeMap<String, NodeRecord>,
    /// Other nodes' endpoints, as written.
    endpoints: BTreeMap<Ipv4Addr, u32>,
    synced: bool,
}

/// What applying events did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub map_writes: usize,
    pub route_changes: usize,
}

impl Remote {
    /// The view of node `node` (whose pod CIDR is `own_cidr`); stale
    /// entries are looked for inside `cluster_cidr` only.
    pub fn new(node: &str, own_cidr: Ipv4Net, cluster_cidr: Option<Ipv4Net>, netlink: Netlink) -> Self {
        Self {
            node: node.to_string(),
            own_cidr,
            cluster_cidr,
            netlink,
            nodes: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            synced: false,
        }
    }

    /// The other nodes' endpoints as applied.
    pub fn endpoints(&self) -> &BTreeMap<Ipv4Addr, u32> {
        &self.endpoints
    }

    /// Applies one event to `maps` and the routes.
    pub fn apply(&mut self, maps: &Maps, event: &Event) -> Result<Applied, String> {
        let _lock = maps.lock().map_err(|e| e.to_string())?;
        let mut done = Applied::default();
        match event {
            Event::NodeUp(n) if n.name != self.node => self.node_up(maps, n, &mut done)?,
            Event::NodeDown(name) => {
                if let Some(old) = self.nodes.remove(name) {
                    self.unroute(maps, &old, &mut done)?;
                }
            }
            Event::EndpointUpsert(e) if e.node != self.node => {
                let IpAddr::V4(ip) = e.ip else {
                    return Ok(done);
                };
                if self.own_cidr.contains(&ip) {
                    log::warn!("node {} publishes {ip} of this node's pod CIDR: ignored", e.node);
                    return Ok(done);
                }
                let Some(id) = Id::new(e.identity) else {
                    return Ok(done);
                };
                if maps.endpoints.get(ip).map_err(|e| e.to_string())? != Some(Stored::Valid(id)) {
                    maps.endpoints.upsert(ip, id).map_err(|e| e.to_string())?;
                    done.map_writes += 1;
                }
                self.endpoints.insert(ip, e.identity);
            }
            Event::EndpointDelete(IpAddr::V4(ip)) => {
                if let Some(id) = self.endpoints.remove(ip) {
                    done.map_writes += delete_if(maps, *ip, id)?;
                }
            }
            Event::Synced { .. } if !self.synced => {
                self.synced = true;
                self.sweep(maps, &mut done)?;
            }
            _ => {}
        }
        if done.map_writes > 0 {
            maps.after_identity_change().map_err(|e| e.to_string())?;
        }
        Ok(done)
    }

    fn node_up(&mut self, maps: &Maps, n: &NodeRecord, done: &mut Applied) -> Result<(), String> {
        let IpAddr::V4(node_ip) = n.node_ip else {
            return Ok(());
        };
        if let Some(old) = self.nodes.get(&n.name).cloned() {
            if old.pod_cidr != n.pod_cidr || old.node_ip != n.node_ip {
                self.unroute(maps, &old, done)?;
            }
        }
        let route = route_to(n.pod_cidr, node_ip);
        self.netlink
            .replace_route(&route)
            .map_err(|e| format!("route {} via {node_ip}: {e}", n.pod_cidr))?;
        done.route_changes += 1;
        let remote = Id::new(REMOTE_NODE).expect("6");
        if maps.endpoints.get(node_ip).map_err(|e| e.to_string())? != Some(Stored::Valid(remote)) {
            maps.endpoints
                .upsert(node_ip, remote)
                .map_err(|e| e.to_string())?;
            done.map_writes += 1;
        }
        log::info!("node {} up: {} via {node_ip}", n.name, n.pod_cidr);
        self.nodes.insert(n.name.clone(), n.clone());
        Ok(())
    }

    fn unroute(&mut self, maps: &Maps, n: &NodeRecord, done: &mut Applied) -> Result<(), String> {
        let IpAddr::V4(node_ip) = n.node_ip else {
            return Ok(());
        };
        if self
            .netlink
            .delete_route(&route_to(n.pod_cidr, node_ip))
            .map_err(|e| format!("delete route {}: {e}", n.pod_cidr))?
        {
            done.route_changes += 1;
        }
        done.map_writes += delete_if(maps, node_ip, REMOTE_NODE)?;
        log::info!("node {} down: route to {} removed", n.name, n.pod_cidr);
        Ok(())
    }

    /// After the first full list: entries of the cluster CIDR outside this
    /// node's pod CIDR, and routes into the cluster CIDR via a gateway,
    /// that the cluster does not have (left from before a restart).
    fn sweep(&mut self, maps: &Maps, done: &mut Applied) -> Result<(), String> {
        let Some(cluster) = self.cluster_cidr else {
            return Ok(());
        };
        for (ip, _) in maps.endpoints.list().map_err(|e| e.to_string())? {
            if cluster.contains(&ip) && !self.own_cidr.contains(&ip) && !self.endpoints.contains_key(&ip) {
                maps.endpoints.delete(ip).map_err(|e| e.to_string())?;
                done.map_writes += 1;
            }
        }
        let wanted: Vec<Route> = self
            .nodes
            .values()
            .filter_map(|n| match n.node_ip {
                IpAddr::V4(ip) => Some(route_to(n.pod_cidr, ip)),
                IpAddr::V6(_) => None,
            })
            .collect();
        for route in self.netlink.routes().map_err(|e| e.to_string())? {
            let Ok(dst) = Ipv4Net::new(route.dst, route.prefix) else {
                continue;
            };
            if route.gateway.is_some()
                && route.prefix > 0
                && cluster.contains(&dst)
                && !wanted
                    .iter()
                    .any(|w| w.dst == route.dst && w.prefix == route.prefix)
            {
                self.netlink.delete_route(&route).map_err(|e| e.to_string())?;
                done.route_changes += 1;
            }
        }
        Ok(())
    }
}

/// `cidr via node_ip` in the main table.
fn route_to(cidr: Ipv4Net, node_ip: Ipv4Addr) -> Route {
    Route::via_gateway(cidr.network(), cidr.prefix_len(), node_ip)
}

/// Deletes `ip`'s entry if it still holds `id`.
fn delete_if(maps: &Maps, ip: Ipv4Addr, id: u32) -> Result<usize, String> {
    let Some(id) = Id::new(id) else {
        return Ok(0);
    };
    if maps.endpoints.get(ip).map_err(|e| e.to_string())? == Some(Stored::Valid(id)) {
        maps.endpoints.delete(ip).map_err(|e| e.to_string())?;
        return Ok(1);
    }
    Ok(0)
}
