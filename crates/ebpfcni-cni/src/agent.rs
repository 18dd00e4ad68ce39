//! Agent mode (`"agent": "<socket>"` in the network config): the node
//! agent gives the pod its identity from its labels and, when the network
//! has no "ipam" section, its address. The plugin registers the endpoint
//! once the veth exists (the agent writes its identity and its interface
//! record, and is the only writer of both), unregisters it at DEL, and
//! queues the deletion on disk when the agent cannot be reached then.

use std::net::Ipv4Addr;
use std::path::Path;

use ebpfcni_api::{Client, ClientError, Deletion, Endpoint, EndpointRequest};

use crate::config::NetConf;
use crate::env::{cni_arg, Env};
use crate::error::{Error, Result};
use crate::netlink::Link;
use crate::result::{IpConfig, IpamResult, RouteEntry};

/// The agent's client, in agent mode.
pub fn client(conf: &NetConf) -> Option<Client> {
    conf.agent.as_deref().map(Client::new)
}

fn failed(what: &str) -> impl FnOnce(ClientError) -> Error + '_ {
    move |source| Error::Agent {
        context: what.to_string(),
        source,
    }
}

/// ADD's first step: an agent that does not answer fails the ADD before
/// anything is created.
pub fn ensure_reachable(client: &Client) -> Result<()> {
    client.listening().map_err(failed("reach the agent"))
}

/// Registers the pod's interface; returns the endpoint with its identity
/// (and its address when `ips` is empty: the agent's lease).
pub fn register(
    client: &Client,
    conf: &NetConf,
    env: &Env,
    host_end: &Link,
    ips: Vec<Ipv4Addr>,
) -> Result<Endpoint> {
    let request = EndpointRequest {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        network: conf.name.clone(),
        netns: env.netns.clone(),
        host_veth: host_end.name.clone(),
        host_ifindex: host_end.index,
        ips,
        labels: conf.labels()?,
        pod_namespace: cni_arg("K8S_POD_NAMESPACE"),
        pod_name: cni_arg("K8S_POD_NAME"),
    };
    client
        .create_endpoint(&request)
        .map_err(failed("register the endpoint"))
}

/// The agent's lease as an IPAM result: the address in the pod CIDR, the
/// CIDR's gateway, a default route via it.
pub fn lease_result(endpoint: &Endpoint) -> Option<IpamResult> {
    let (ip, prefix, gateway) = (endpoint.ips.first()?, endpoint.prefix_len?, endpoint.gateway?);
    Some(IpamResult {
        ips: vec![IpConfig {
            version: None,
            address: format!("{ip}/{prefix}"),
            gateway: Some(gateway.to_string()),
            interface: None,
        }],
        routes: vec![RouteEntry {
            dst: "0.0.0.0/0".into(),
            gw: None,
            extra: Default::default(),
        }],
        ..Default::default()
    })
}

/// DEL: unregisters the endpoint. An agent that cannot be reached gets the
/// deletion queued on disk: it carries it out when it is back, before it
/// hands out any address.
pub fn unregister(client: &Client, env: &Env) -> Result<()> {
    match client.delete_endpoint(&env.container_id, &env.ifname) {
        Ok(deleted) => {
            log::info!(
                "agent: endpoint {} (existed: {})",
                env.container_id,
                deleted.existed
            );
            Ok(())
        }
        // No answer: carried out or not, the agent does it (again) from
        // its queue when it is back.
        Err(e) if e.is_unanswered() => {
            log::warn!("{e}");
            queue(client.socket(), env)
        }
        Err(e) => Err(failed("unregister the endpoint")(e)),
    }
}

/// Writes the deletion into the agent's queue (write, then rename: the
/// agent never reads half a file).
fn queue(socket: &Path, env: &Env) -> Result<()> {
    let dir = ebpfcni_api::delete_queue_dir(socket);
    let io = |what: String| {
        move |source| Error::Queue {
            context: what,
            source,
        }
    };
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let deletion = Deletion {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    };
    let name = format!("{}-{}.json", env.container_id, env.ifname);
    let path = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(
        &partial,
        serde_json::to_vec(&deletion).expect("deletions serialise"),
    )
    .map_err(io(format!("write {}", partial.display())))?;
    std::fs::rename(&partial, &path).map_err(io(format!("rename to {}", path.display())))?;
    log::warn!(
        "the agent at {} is unreachable: deletion queued in {}",
        socket.display(),
        path.display()
    );
    Ok(())
}

/// CHECK: the agent knows this attachment, behind this host veth.
pub fn check(client: &Client, env: &Env, host_end: &Link) -> Result<()> {
    let endpoint = match client.endpoint(&env.container_id, &env.ifname) {
        Ok(e) => e,
        Err(e) if e.is_not_found() => {
            return Err(Error::CheckFailed(format!(
                "the agent has no endpoint {}/{}",
                env.container_id, env.ifname
            )))
        }
        Err(e) => return Err(failed("look up the endpoint")(e)),
    };
    if endpoint.host_ifindex != host_end.index {
        return Err(Error::CheckFailed(format!(
            "the agent has endpoint {}/{} behind ifindex {}, not {} ({})",
            env.container_id, env.ifname, endpoint.host_ifindex, host_end.index, host_end.name
        )));
    }
    Ok(())
}

/// GC: the agent forgets every endpoint of this network not in `valid`.
pub fn gc(client: &Client, conf: &NetConf, valid: Vec<Deletion>) -> Result<()> {
    let reply = client
        .gc(&ebpfcni_api::GcRequest {
            network: conf.name.clone(),
            valid,
        })
        .map_err(failed("collect garbage"))?;
    for d in reply.removed {
        log::info!("GC: the agent removed endpoint {}/{}", d.container_id, d.ifname);
    }
    Ok(())
}
