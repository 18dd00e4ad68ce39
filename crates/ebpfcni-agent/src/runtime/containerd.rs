//! containerd (1.6 and later): its gRPC API on its socket
//! (`--containerd-socket`), in one namespace (`--containerd-namespace`,
//! `default` as `ctr` uses).
//!
//! Labels: the container's own (`ctr run --label app=web`, the Containers
//! API's Get), asked beside the ADD as with podman: the endpoint waits with
//! the reserved `init` identity until containerd has answered. `ctr run
//! --cni` names the CNI attachment `<namespace>-<container>`; the agent
//! looks the container up by both that and the bare id.
//!
//! Gone: a container loses its endpoint as soon as its task is not running
//! any more (it exited, was killed, or was deleted), not only when the
//! container is deleted. That is what a user expects: the network
//! namespace the CNI ADD was given is the task's, and it goes with the
//! task, so the address must not keep the container's identity for the
//! next one that gets it. A container that is started again gets a new
//! task, a new namespace and a new ADD. Two ways tell it:
//! - containerd's events (Events.Subscribe): `/tasks/exit` of a
//!   container's first process, `/tasks/delete` and `/containers/delete`;
//! - a periodic resync (`--resync-seconds`, and each time the event stream
//!   is subscribed again): every endpoint whose container has a stopped
//!   task goes, and one whose container has no task at all (removed, or
//!   its task deleted) once it has been without one for 30 s (a runtime
//!   that runs the ADD while it creates the task, as nerdctl's OCI hook
//!   does, has a container without a task for a moment). This catches
//!   what happened while the agent was down or not subscribed.
//!
//! Paused tasks, and tasks whose state containerd cannot tell (`UNKNOWN`:
//! an unresponsive shim), keep their endpoint. An endpoint whose container
//! containerd did not know when asked (another namespace, an attachment
//! made by another tool) keeps the CNI request's labels and is left to DEL
//! and GC.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use containerd_client::events::{ContainerDelete, TaskDelete, TaskExit};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{GetContainerRequest, GetRequest, ListTasksRequest, SubscribeRequest};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::{Channel, Endpoint as GrpcEndpoint};
use containerd_client::tonic::{Code, Request};
use containerd_client::types::v1::{Process, Status};
use containerd_client::types::Envelope;
use ebpfcni_api::{Endpoint, Labels};
use prost::Message;

use crate::agent::Agent;

/// How long one question to containerd may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How long a container given its labels may have no task before its
/// endpoint goes: a runtime that runs the CNI ADD while it creates the
/// task (nerdctl's OCI hook) has a container without one for a moment.
const NO_TASK_GRACE: Duration = Duration::from_secs(30);

/// containerd as the agent's runtime. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Containerd {
    socket: PathBuf,
    namespace: String,
    channel: Arc<OnceLock<Channel>>,
    /// When each container (by its CNI id) was last given containerd's
    /// labels: a check that started before that instant knew nothing of
    /// the endpoint it would remove (see [`Containerd::forget`]).
    resolved: Arc<Mutex<HashMap<String, Instant>>>,
}

impl fmt::Debug for Containerd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Containerd")
            .field("socket", &self.socket)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// Whether a task in `status` still has its network namespace.
fn running(status: i32) -> bool {
    status != Status::Stopped as i32
}

impl Containerd {
    pub const NAME: &'static str = "containerd";

    /// containerd at `socket`, its containers in `namespace` (checked as
    /// containerd checks namespace names).
    pub fn new(socket: &Path, namespace: &str) -> Result<Self, String> {
        let valid = !namespace.is_empty()
            && namespace.len() <= 76
            && namespace
                .split(['.', '_', '-'])
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !valid {
            return Err(format!(
                "--containerd-namespace {namespace:?}: not a containerd namespace (letters and digits, \
                 with single '.', '_' or '-' between them)"
            ));
        }
        Ok(Self {
            socket: socket.to_path_buf(),
            namespace: namespace.to_string(),
            channel: Arc::new(OnceLock::new()),
            resolved: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// One gRPC channel, connected at its first use and again after
    /// containerd restarts (tonic reconnects a lazy channel by itself).
    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| {
                let socket = self.socket.clone();
                GrpcEndpoint::from_static("http://containerd")
                    .connect_timeout(TIMEOUT)
                    .connect_with_connector_lazy(tower::service_fn(move |_| {
                        let socket = socket.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(socket).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }))
            })
            .clone()
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let namespace = MetadataValue::try_from(self.namespace.as_str()).expect("checked in new()");
        request.metadata_mut().insert("containerd-namespace", namespace);
        request
    }

    /// The containerd ids a CNI container id can name: `ctr run --cni`
    /// passes `<namespace>-<id>`, other tools the id itself.
    fn ids<'a>(&self, cni_id: &'a str) -> impl Iterator<Item = &'a str> {
        let bare = cni_id
            .strip_prefix(self.namespace.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .filter(|rest| !rest.is_empty());
        bare.into_iter().chain(std::iter::once(cni_id))
    }

    /// The labels of the container the CNI id `cni_id` names, or `None`
    /// when containerd has no such container in the namespace.
    pub async fn labels(&self, cni_id: &str) -> Result<Option<Labels>, String> {
        for id in self.ids(cni_id) {
            let mut client = ContainersClient::new(self.channel());
            let request = self.request(GetContainerRequest { id: id.to_string() });
            match timed(client.get(request)).await? {
                Ok(reply) => {
                    let container = reply.into_inner().container.unwrap_or_default();
                    return Ok(Some(container.labels.into_iter().collect()));
                }
                Err(status) if status.code() == Code::NotFound => continue,
                Err(status) => return Err(format!("get container {id}: {}", status.message())),
            }
        }
        Ok(None)
    }

    /// The task of container `id` (its first process), if it has one.
    pub async fn task(&self, id: &str) -> Result<Option<Process>, String> {
        let mut client = TasksClient::new(self.channel());
        let request = self.request(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        });
        match timed(client.get(request)).await? {
            Ok(reply) => Ok(reply.into_inner().process),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(format!("get task {id}: {}", status.message())),
        }
    }

    /// Every task of the namespace: its container's id, and whether it is
    /// not stopped (it has a network namespace).
    pub async fn tasks(&self) -> Result<HashMap<String, bool>, String> {
        let mut client = TasksClient::new(self.channel());
        let request = self.request(ListTasksRequest::default());
        let reply = timed(client.list(request))
            .await?
            .map_err(|status| format!("list tasks: {}", status.message()))?;
        Ok(reply
            .into_inner()
            .tasks
            .into_iter()
            .map(|task| (task.id, running(task.status)))
            .collect())
    }

    /// Removes the endpoints of containerd's containers for which `exists`
    /// is false, except those given their labels after `since` (a check
    /// that started before knew nothing of them). Returns how many went.
    async fn forget(
        &self,
        agent: &Arc<Agent>,
        since: Instant,
        exists: impl Fn(&str) -> bool + Send + 'static,
    ) -> usize {
        let (agent, resolved) = (agent.clone(), self.resolved.clone());
        let swept = tokio::task::spawn_blocking(move || {
            agent.forget_gone(Containerd::NAME, |cni_id| {
                exists(cni_id) || lock(&resolved).get(cni_id).is_some_and(|at| *at > since)
            })
        })
        .await;
        match swept {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                log::error!("containerd: removing endpoints failed: {e}");
                0
            }
            Err(e) => {
                log::error!("containerd: the removal's worker failed: {e}");
                0
            }
        }
    }

    /// Asks containerd for `endpoint`'s labels (retrying while containerd
    /// cannot answer) and gives them to the agent. A task that stopped
    /// before the answer came takes the endpoint with it.
    pub async fn resolve(self, agent: Arc<Agent>, endpoint: Endpoint) {
        let cni_id = endpoint.container_id.clone();
        let mut delay = Duration::from_millis(50);
        let labels = loop {
            match self.labels(&cni_id).await {
                Ok(labels) => break labels,
                Err(e) => {
                    log::warn!("containerd: labels of {cni_id}: {e}; asking again in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let known = labels.is_some();
        if known {
            // Before the endpoint is containerd's: a check that started
            // earlier must leave it alone.
            lock(&self.resolved).insert(cni_id.clone(), Instant::now());
        }
        let worker = agent.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            worker.runtime_labels(
                &endpoint.container_id,
                &endpoint.ifname,
                endpoint.host_ifindex,
                Containerd::NAME,
                labels,
            )
        })
        .await;
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::error!("containerd: applying labels failed: {e}"),
            Err(e) => log::error!("containerd: the labels' worker failed: {e}"),
        }
        if known && self.stopped(&cni_id).await {
            // An exit seen while the endpoint was not containerd's yet
            // removed nothing: look again now that it is.
            self.gone(&agent, &cni_id, None).await;
        }
    }

    /// Whether the container `cni_id` names has a task that stopped.
    async fn stopped(&self, cni_id: &str) -> bool {
        for id in self.ids(cni_id) {
            if let Ok(Some(task)) = self.task(id).await {
                return !running(task.status);
            }
        }
        false
    }

    /// A task of container `cni_id` ended (its first process's `pid`), or
    /// the container was deleted (`None`): its endpoints go unless a newer
    /// task of the same container runs.
    async fn gone(&self, agent: &Arc<Agent>, cni_id: &str, pid: Option<u32>) {
        let since = Instant::now();
        let mut newer = false;
        for id in self.ids(cni_id) {
            match self.task(id).await {
                Ok(Some(task)) if running(task.status) && Some(task.pid) != pid => newer = true,
                Ok(_) => {}
                Err(e) => log::warn!("containerd: {e}; taking the event as it is"),
            }
        }
        if newer {
            log::debug!("containerd: {cni_id} runs again: its endpoints stay");
            return;
        }
        let all = self.clone();
        let gone = cni_id.to_string();
        let n = self
            .forget(agent, since, move |other| {
                all.ids(other).all(|id| id != gone) && all.ids(&gone).all(|id| id != other)
            })
            .await;
        if n > 0 {
            log::info!("containerd: {n} endpoints of {cni_id} removed (its task is gone)");
        }
    }

    /// Every endpoint of containerd's whose container has a stopped task
    /// goes, and so does one whose container has had no task for
    /// [`NO_TASK_GRACE`] (removed, or its task deleted).
    async fn sweep(&self, agent: &Arc<Agent>) -> Result<usize, String> {
        let since = Instant::now();
        let tasks = Arc::new(self.tasks().await?);
        let (all, known) = (self.clone(), tasks.clone());
        let n = self
            .forget(agent, since, move |cni_id| {
                let resolved = lock(&all.resolved).get(cni_id).copied();
                keeps(all.ids(cni_id), &known, resolved, since)
            })
            .await;
        lock(&self.resolved).retain(|cni_id, at| {
            *at + NO_TASK_GRACE > since || self.ids(cni_id).any(|id| tasks.get(id) == Some(&true))
        });
        Ok(n)
    }

    /// Notices containers that go: containerd's events, and a resync every
    /// `interval` (and at each new subscription).
    pub fn watch(&self, agent: Arc<Agent>, interval: Duration) {
        tokio::spawn(self.clone().events(agent.clone()));
        tokio::spawn(self.clone().resync(agent, interval));
    }

    async fn resync(self, agent: Arc<Agent>, interval: Duration) {
        loop {
            self.resync_once(&agent).await;
            tokio::time::sleep(interval).await;
        }
    }

    async fn resync_once(&self, agent: &Arc<Agent>) {
        match self.sweep(agent).await {
            Ok(0) => {}
            Ok(n) => log::info!("containerd: resync: {n} endpoints of stopped or removed containers removed"),
            Err(e) => log::warn!("containerd: resync at {}: {e}", self.socket.display()),
        }
    }

    async fn events(self, agent: Arc<Agent>) {
        let mut delay = Duration::from_millis(100);
        loop {
            let mut client = EventsClient::new(self.channel());
            match client.subscribe(SubscribeRequest::default()).await {
                Ok(stream) => {
                    log::info!(
                        "containerd: subscribed to the events of namespace {} at {}",
                        self.namespace,
                        self.socket.display()
                    );
                    delay = Duration::from_millis(100);
                    // What went while nobody listened.
                    self.resync_once(&agent).await;
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(envelope)) => self.event(&agent, envelope).await,
                            Ok(None) => {
                                log::warn!("containerd: the event stream ended");
                                break;
                            }
                            Err(status) => {
                                log::warn!("containerd: the event stream failed: {}", status.message());
                                break;
                            }
                        }
                    }
                }
                Err(status) => log::warn!(
                    "containerd: subscribe to events at {}: {}; again in {delay:?}",
                    self.socket.display(),
                    status.message()
                ),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn event(&self, agent: &Arc<Agent>, envelope: Envelope) {
        if envelope.namespace != self.namespace {
            return;
        }
        let payload = envelope.event.map(|any| any.value).unwrap_or_default();
        let decoded = match envelope.topic.as_str() {
            "/tasks/exit" => TaskExit::decode(payload.as_slice()).map(|e| {
                // An exec'd process's exit is not the task's.
                (e.id.is_empty() || e.id == e.container_id).then_some((e.container_id, Some(e.pid)))
            }),
            "/tasks/delete" => {
                TaskDelete::decode(payload.as_slice()).map(|e| Some((e.container_id, Some(e.pid))))
            }
            "/containers/delete" => ContainerDelete::decode(payload.as_slice()).map(|e| Some((e.id, None))),
            _ => return,
        };
        match decoded {
            Ok(Some((id, pid))) => {
                log::debug!("containerd: {} {id}", envelope.topic);
                self.gone(agent, &id, pid).await;
            }
            Ok(None) => {}
            Err(e) => log::warn!(
                "containerd: an event {} that does not decode: {e}",
                envelope.topic
            ),
        }
    }
}

/// Whether the sweep that started at `since` keeps the endpoint of the
/// container `ids` name: its task runs, or it has no task yet and was
/// given its labels less than [`NO_TASK_GRACE`] before.
fn keeps<'a>(
    ids: impl Iterator<Item = &'a str>,
    tasks: &HashMap<String, bool>,
    resolved: Option<Instant>,
    since: Instant,
) -> bool {
    let mut states = ids.filter_map(|id| tasks.get(id).copied()).peekable();
    if states.peek().is_some() {
        return states.any(|running| running);
    }
    resolved.is_some_and(|at| at + NO_TASK_GRACE > since)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `call`, or an error when containerd takes longer than [`TIMEOUT`].
async fn timed<T>(call: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(TIMEOUT, call)
        .await
        .map_err(|_| format!("containerd did not answer within {TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_checked() {
        for good in ["default", "k8s.io", "a-b_c.d", "x1"] {
            assert!(Containerd::new(Path::new("/s"), good).is_ok(), "{good}");
        }
        for bad in ["", "a..b", "-a", "a-", "a/b", "a b"] {
            let e = Containerd::new(Path::new("/s"), bad).unwrap_err();
            assert!(e.contains("--containerd-namespace"), "{e}");
        }
    }

    #[test]
    fn a_sweep_keeps_running_tasks_and_briefly_containers_without_one() {
        let c = Containerd::new(Path::new("/s"), "default").unwrap();
        let tasks = HashMap::from([("up".to_string(), true), ("ended".to_string(), false)]);
        let now = Instant::now();
        let keeps = |id: &str, resolved: Option<Instant>| keeps(c.ids(id), &tasks, resolved, now);
        assert!(keeps("default-up", None), "a running task");
        assert!(keeps("up", None), "a running task, by its bare id");
        assert!(
            !keeps("default-ended", Some(now)),
            "a stopped task, however recent"
        );
        assert!(
            keeps("default-new", Some(now - Duration::from_secs(1))),
            "no task yet"
        );
        assert!(
            !keeps("default-new", Some(now - NO_TASK_GRACE)),
            "no task for too long"
        );
        assert!(
            !keeps("default-gone", None),
            "no task, labels from before a restart"
        );
    }

    #[test]
    fn ctr_cni_ids_name_the_container() {
        let c = Containerd::new(Path::new("/s"), "default").unwrap();
        assert_eq!(c.ids("default-web").collect::<Vec<_>>(), ["web", "default-web"]);
        assert_eq!(c.ids("web").collect::<Vec<_>>(), ["web"]);
        assert_eq!(c.ids("default-").collect::<Vec<_>>(), ["default-"]);
        assert_eq!(c.ids("defaultweb").collect::<Vec<_>>(), ["defaultweb"]);
    }
}
