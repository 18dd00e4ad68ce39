//! Container runtimes the agent asks for labels and listens to for
//! containers that go: podman (here) and [`containerd`]. Podman 4: its REST
//! API on its service socket (`podman system service`, or the
//! podman.socket unit).
//!
//! Podman holds a container's lock while it runs the container's CNI ADD,
//! and its API takes that lock to answer an inspect: so the agent never
//! asks from inside an ADD. The endpoint is registered with `init` and the
//! question is asked beside it; the answer comes once the ADD is done.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ebpfcni_api::hyper::{Method, StatusCode};
use ebpfcni_api::{Endpoint, Labels};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::agent::Agent;

pub mod containerd;
pub use containerd::Containerd;

/// The runtime the agent asks for containers' labels (`--runtime`).
#[derive(Debug, Clone)]
pub enum Runtime {
    Podman(Podman),
    Containerd(Containerd),
}

impl Runtime {
    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Podman(_) => Podman::NAME,
            Runtime::Containerd(_) => Containerd::NAME,
        }
    }

    pub fn socket(&self) -> &Path {
        match self {
            Runtime::Podman(p) => p.socket(),
            Runtime::Containerd(c) => c.socket(),
        }
    }

    /// Asks for the labels of an endpoint that waits for them (beside its
    /// ADD, never inside it) and gives them to the agent.
    pub async fn resolve(self, agent: Arc<Agent>, endpoint: Endpoint) {
        match self {
            Runtime::Podman(p) => resolve(p, agent, endpoint).await,
            Runtime::Containerd(c) => c.resolve(agent, endpoint).await,
        }
    }

    /// Starts what removes the endpoints of containers that go (a resync
    /// every `interval`; containerd's events too).
    pub fn watch(&self, agent: Arc<Agent>, interval: Duration) {
        match self {
            Runtime::Podman(p) => {
                tokio::spawn(resync(p.clone(), agent, interval));
            }
            Runtime::Containerd(c) => c.watch(agent, interval),
        }
    }
}

/// Podman's API version the agent speaks (podman 4).
const API: &str = "/v4.0.0/libpod";

#[derive(Debug, Clone)]
pub struct Podman {
    socket: PathBuf,
}

impl Podman {
    pub const NAME: &'static str = "podman";

    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Value), String> {
        let response = ebpfcni_api::send(&self.socket, Method::GET, &format!("{API}{path}"), Vec::new())
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// The labels of container `id` (and of its pod, e.g. `podman kube
    /// play`'s, under the container's own), or `None` when podman does
    /// not know it.
    pub async fn labels(&self, id: &str) -> Result<Option<Labels>, String> {
        let (status, container) = self.get(&format!("/containers/{id}/json")).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(format!("inspect {id}: {status}: {container}"));
        }
        let mut labels = string_map(&container["Config"]["Labels"]);
        if let Some(pod) = container["Pod"].as_str().filter(|p| !p.is_empty()) {
            let (status, pod) = self.get(&format!("/pods/{pod}/json")).await?;
            if status.is_success() {
                for (k, v) in string_map(&pod["Labels"]) {
                    labels.entry(k).or_insert(v);
                }
            }
        }
        Ok(Some(labels))
    }

    /// The ids of every container podman has (running or not).
    pub async fn containers(&self) -> Result<HashSet<String>, String> {
        let (status, list) = self.get("/containers/json?all=true").await?;
        if !status.is_success() {
            return Err(format!("list containers: {status}"));
        }
        Ok(list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["Id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn string_map(value: &Value) -> Labels {
    value
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Asks podman for `endpoint`'s labels (retrying while podman cannot
/// answer) and gives them to the agent.
pub async fn resolve(podman: Podman, agent: Arc<Agent>, endpoint: Endpoint) {
    let mut delay = Duration::from_millis(50);
    let labels = loop {
        match podman.labels(&endpoint.container_id).await {
            Ok(labels) => break labels,
            Err(e) => {
                log::warn!(
                    "podman: labels of {}: {e}; asking again in {delay:?}",
                    endpoint.container_id
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let outcome = tokio::task::spawn_blocking(move || {
        agent.runtime_labels(
            &endpoint.container_id,
            &endpoint.ifname,
            endpoint.host_ifindex,
            Podman::NAME,
            labels,
        )
    })
    .await;
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => log::error!("podman: applying labels failed: {e}"),
        Err(e) => log::error!("podman: the labels' worker failed: {e}"),
    }
}

/// Every `interval`: containers podman no longer has lose their endpoints
/// (a container removed while no DEL came, or while the agent was down).
pub async fn resync(podman: Podman, agent: Arc<Agent>, interval: Duration) {
    loop {
        match podman.containers().await {
            Ok(existing) => {
                let agent = agent.clone();
                let swept = tokio::task::spawn_blocking(move || {
                    agent.forget_gone(Podman::NAME, |id| existing.contains(id))
                })
                .await;
                match swept {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => log::info!("podman: {n} endpoints of removed containers removed"),
                    Ok(Err(e)) => log::error!("podman: removing endpoints failed: {e}"),
                    Err(e) => log::error!("podman: resync worker failed: {e}"),
                }
            }
            Err(e) => log::warn!("podman: list containers at {}: {e}", podman.socket.display()),
        }
        tokio::time::sleep(interval).await;
    }
}
