//! `ebpfcni-agent`: the node agent. One per node, as root.
//!
//! At start it opens (or creates) the pinned maps and its store, finishes
//! what a crash interrupted, applies the store's difference to the maps,
//! carries out deletions the CNI plugin queued while it was down, and only
//! then listens. SIGTERM or SIGINT stop it cleanly; the datapath keeps
//! enforcing what the maps hold while it is down.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ebpfcni_agent::agent::{Agent, Config};
use ebpfcni_agent::cluster::{Cluster, ClusterConfig, JoinError};
use ebpfcni_agent::fabric::FabricError;
use ebpfcni_agent::ipam::Pool;
use ebpfcni_agent::labels::{LabelFilter, DEFAULT_EXCLUDED};
use ebpfcni_agent::runtime::{Containerd, Podman, Runtime};
use ebpfcni_agent::store::Store;
use ebpfcni_agent::{queue, server};
use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};

/// Exit codes: 0 stopped cleanly, 2 bad arguments, 3 the store is refused,
/// 4 the maps cannot be opened, 5 another agent runs (socket or pin
/// directory taken, or the node name held in etcd by another live agent),
/// 6 the socket cannot be served, 7 etcd unreachable with no cached pod
/// CIDR, or it refuses the node (its pod CIDR taken).
const EXIT_STORE: u8 = 3;
const EXIT_MAPS: u8 = 4;
const EXIT_TAKEN: u8 = 5;
const EXIT_SOCKET: u8 = 6;
const EXIT_ETCD: u8 = 7;

#[derive(Parser, Debug)]
#[command(
    name = "ebpfcni-agent",
    version,
    about = "The ebpfcni node agent: identities from container labels, its own IPAM, an API socket",
    long_about = "The ebpfcni node agent. Gives every container that the CNI plugin registers \
                  (networks with \"agent\" in their config) an identity derived from its labels, \
                  for exactly the container's lifetime, and leases its address from --pod-cidr \
                  when the network has no \"ipam\" section. Its state lives in an embedded store \
                  under --state-dir; a restart applies only differences to the maps.",
    after_help = "Examples:\n  \
                  ebpfcni-agent --pod-cidr 10.13.0.0/24\n  \
                  ebpfcni-agent --pod-cidr 10.13.0.0/24 --policy-enforcement always\n  \
                  RUST_LOG=debug ebpfcni-agent --pin-dir /sys/fs/bpf/tc/globals --socket /run/ebpfcni/agent.sock\n  \
                  curl --unix-socket /run/ebpfcni/agent.sock http://agent/v1/endpoints"
)]
struct Args {
    /// Where the datapath's maps are pinned.
    #[arg(long, default_value = ebpfcni::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// The API socket (root only, mode 0600).
    #[arg(long, default_value = ebpfcni_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where the agent keeps its store.
    #[arg(long, default_value = "/var/lib/ebpfcni")]
    state_dir: PathBuf,
    /// This node's name (default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// The node's pod addresses, for the agent's IPAM (e.g. 10.13.0.0/24;
    /// the first address is every pod's gateway).
    #[arg(long)]
    pod_cidr: Option<Ipv4Net>,
    /// Leave the label KEY out of identities; a KEY ending in '.', '/' or
    /// '*' leaves out every key starting with it (repeat for more; added to
    /// the default filter).
    #[arg(long = "exclude-label", value_name = "KEY")]
    exclude_label: Vec<String>,
    /// Use only --exclude-label, not the default filter (runtime and image
    /// metadata, pod names and hashes).
    #[arg(long)]
    no_default_label_filter: bool,
    /// Where containers' labels come from besides the CNI request: podman
    /// (its API socket, --podman-socket), containerd (--containerd-socket),
    /// none, or auto (podman when its socket exists at start, else
    /// containerd when its socket does).
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    runtime: RuntimeChoice,
    /// Podman's API socket (`podman system service`, or podman.socket).
    #[arg(long, default_value = "/run/podman/podman.sock")]
    podman_socket: PathBuf,
    /// containerd's socket (its gRPC API).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// The containerd namespace whose containers the agent knows (`ctr`'s
    /// default is `default`; Kubernetes' is `k8s.io`).
    #[arg(long, default_value = "default", value_name = "NAMESPACE")]
    containerd_namespace: String,
    /// How often the runtime's container list is compared with the
    /// endpoints (containers gone without a DEL lose theirs).
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    resync_seconds: u64,
    /// Policy by labels, as Cilium's policy-enforcement: default (Kubernetes:
    /// an endpoint selected by no policy is unrestricted), always (every
    /// endpoint is isolated both ways: only what a rule allows passes), never
    /// (no policy is enforced; policies are kept). Traffic with the node
    /// (identity 1) is always allowed.
    #[arg(long, value_name = "MODE", default_value = "default", value_parser = ["default", "always", "never"])]
    policy_enforcement: String,
    /// etcd's client URL (e.g. http://10.0.0.1:2379; repeat for more):
    /// share identities, endpoints and nodes with the other nodes' agents.
    #[arg(long = "etcd", value_name = "URL")]
    etcd: Vec<String>,
    /// With --etcd: this node's address between nodes (the others route
    /// this node's pod CIDR via it).
    #[arg(long, value_name = "IP")]
    node_ip: Option<std::net::IpAddr>,
    /// With --etcd: where pod CIDRs come from (e.g. 10.20.0.0/16); each
    /// node gets a /--node-cidr-size of it, the same across restarts.
    #[arg(long, value_name = "CIDR")]
    cluster_cidr: Option<Ipv4Net>,
    #[arg(long, default_value_t = 24, value_name = "LEN")]
    node_cidr_size: u8,
    /// With --etcd: the node's lease, how long its endpoints outlive it.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    lease_seconds: i64,
    /// With --etcd: how often the agent frees the identities no node uses
    /// any more (a node's use ends with its last pod of the identity, or
    /// with its lease). Every agent runs it; each number is freed in a
    /// transaction that checks no node uses it.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    identity_gc_seconds: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RuntimeChoice {
    Auto,
    Podman,
    Containerd,
    None,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    ebpfcni::set_libbpf_log(Some(|msg| log::info!("libbpf: {msg}")));
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            log::error!("{message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn run(args: Args) -> Result<(), Failure> {
    let node = match args.node.clone() {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .map_err(|e| (2, format!("no --node and no host name: {e}")))?
            .to_string_lossy()
            .into_owned(),
    };
    let pod_cidr = args
        .pod_cidr
        .map(Pool::new)
        .transpose()
        .map_err(|e| (2, e.to_string()))?;
    let mut excluded: Vec<String> = if args.no_default_label_filter {
        Vec::new()
    } else {
        DEFAULT_EXCLUDED.iter().map(|s| s.to_string()).collect()
    };
    excluded.extend(args.exclude_label.iter().cloned());

    let podman = || Runtime::Podman(Podman::new(&args.podman_socket));
    let containerd = || {
        Containerd::new(&args.containerd_socket, &args.containerd_namespace)
            .map(Runtime::Containerd)
            .map_err(|e| (2, e))
    };
    let container_runtime = match args.runtime {
        RuntimeChoice::None => None,
        RuntimeChoice::Podman => Some(podman()),
        RuntimeChoice::Containerd => Some(containerd()?),
        RuntimeChoice::Auto if args.podman_socket.exists() => Some(podman()),
        RuntimeChoice::Auto if args.containerd_socket.exists() => Some(containerd()?),
        RuntimeChoice::Auto => None,
    };
    match &container_runtime {
        Some(r) => log::info!(
            "labels from the CNI request and {} at {}",
            r.name(),
            r.socket().display()
        ),
        None => log::info!("labels from the CNI request only (no runtime)"),
    }
    let _pin_lock = lock_pin_dir(&args.pin_dir)?;
    // The interface records it writes name host veths by index: of this
    // namespace only (a pin dir serves one).
    ebpfcni::bind_netns(&args.pin_dir).map_err(|e| (EXIT_MAPS, format!("{e}")))?;
    let maps = ebpfcni::Maps::open_or_create(&args.pin_dir).map_err(|e| {
        (
            EXIT_MAPS,
            format!("open the maps in {}: {e}", args.pin_dir.display()),
        )
    })?;
    std::fs::create_dir_all(&args.state_dir)
        .map_err(|e| (EXIT_STORE, format!("create {}: {e}", args.state_dir.display())))?;
    let store = Store::open(&args.state_dir, &node).map_err(|e| (EXIT_STORE, e.to_string()))?;
    let cluster = join_cluster(&args, &node)?;
    let mut neighbours = None;
    if let (Some(_), Some(node_ip)) = (&cluster, args.node_ip) {
        // Before any other node's pod can have an identity here.
        let (ifname, ifindex) =
            ebpfcni_agent::fabric::attach(&args.pin_dir, node_ip).map_err(|e| match e {
                FabricError::NoInterface(m) => (2, m),
                FabricError::Attach(m) => (EXIT_MAPS, m),
            })?;
        log::info!(
            "source check (from-fabric) attached to {ifname} (ifindex {ifindex}), which holds {node_ip}"
        );
        neighbours = Some(ebpfcni_agent::fabric::Neighbours::new(ifindex, &node));
    }
    let pod_cidr = match &cluster {
        Some(c) => Some(Pool::new(c.pod_cidr()).map_err(|e| (2, e.to_string()))?),
        None => pod_cidr,
    };
    let config = Config {
        node,
        pin_dir: args.pin_dir.clone(),
        state_dir: args.state_dir.clone(),
        pod_cidr,
        filter: LabelFilter::new(excluded),
        runtime: container_runtime.as_ref().map(|r| r.name().to_string()),
        enforcement: args.policy_enforcement.parse().map_err(|e| (2, e))?,
    };
    let mut agent = Agent::new(config, store, maps).map_err(|e| (EXIT_STORE, e.to_string()))?;
    if let Some(cluster) = &cluster {
        agent = agent.with_cluster(cluster.clone());
    }
    let start = std::time::Instant::now();
    let reconciled = agent
        .reconcile(|e| nix::net::if_::if_nametoindex(e.host_veth.as_str()).ok() == Some(e.host_ifindex))
        .map_err(|e| (EXIT_MAPS, format!("apply the store to the maps: {e}")))?;
    let queued = queue::drain(&agent, &ebpfcni_api::delete_queue_dir(&args.socket))
        .map_err(|e| (EXIT_MAPS, format!("carry out queued deletions: {e}")))?;
    log::info!(
        "node {}: {} endpoints, {} map writes, {} gone while down, {queued} queued deletions, in {:.1} ms",
        agent.config().node,
        reconciled.endpoints,
        reconciled.map_writes,
        reconciled.gone,
        start.elapsed().as_secs_f64() * 1e3
    );

    let listener = bind(&args.socket)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| (EXIT_SOCKET, format!("start the runtime: {e}")))?;
    let agent = Arc::new(agent);
    if let Some(cluster) = &cluster {
        // The other nodes' endpoints and routes; the cluster's identities
        // for label policy (a remote pod's identity named as a peer).
        let learner = Arc::downgrade(&agent);
        cluster
            .start_remote(&args.pin_dir, move |event| {
                if let Some(neighbours) = neighbours.as_mut() {
                    neighbours.apply(event);
                }
                if let Some(agent) = learner.upgrade() {
                    agent.cluster_event(event);
                }
            })
            .map_err(|e| (EXIT_MAPS, format!("apply the other nodes: {e}")))?;
    }
    let socket = args.socket.clone();
    let resync = Duration::from_secs(args.resync_seconds.max(1));
    let served = runtime.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        if cluster.is_some() && container_runtime.is_none() {
            ebpfcni_agent::cluster::retry_waiting(agent.clone());
        }
        if let Some(container_runtime) = &container_runtime {
            for endpoint in agent.waiting() {
                tokio::spawn(container_runtime.clone().resolve(agent.clone(), endpoint));
            }
            container_runtime.watch(agent.clone(), resync);
        }
        log::info!("ready: serving {}", socket.display());
        let shared = server::Shared {
            agent,
            runtime: container_runtime,
        };
        axum::serve(listener, server::router(shared))
            .with_graceful_shutdown(stopped())
            .await
    });
    let _ = std::fs::remove_file(&args.socket);
    served.map_err(|e| (EXIT_SOCKET, format!("serve {}: {e}", args.socket.display())))?;
    log::info!("stopped");
    Ok(())
}

/// With --etcd: joins the cluster (exit 5 when another live agent holds
/// the node name).
fn join_cluster(args: &Args, node: &str) -> Result<Option<Arc<Cluster>>, Failure> {
    if args.etcd.is_empty() {
        return Ok(None);
    }
    let node_ip = args.node_ip.ok_or_else(|| {
        (
            2,
            "--etcd needs --node-ip (this node's address between nodes)".to_string(),
        )
    })?;
    if args.cluster_cidr.is_none() && args.pod_cidr.is_none() {
        return Err((2, "--etcd needs --cluster-cidr (or --pod-cidr)".into()));
    }
    let config = ClusterConfig {
        etcd: args.etcd.clone(),
        node: node.to_string(),
        node_ip,
        pod_cidr: args.pod_cidr,
        cluster_cidr: args.cluster_cidr,
        node_cidr_len: args.node_cidr_size,
        ttl: args.lease_seconds,
        gc_interval: std::time::Duration::from_secs(args.identity_gc_seconds),
        state_dir: args.state_dir.clone(),
    };
    match Cluster::join(config) {
        Ok(c) => Ok(Some(Arc::new(c))),
        Err(e @ JoinError::Taken(_)) => Err((EXIT_TAKEN, e.to_string())),
        Err(e @ (JoinError::Unreachable(_) | JoinError::Refused(_))) => Err((EXIT_ETCD, e.to_string())),
    }
}

/// One agent per pin directory: a lock in the run directory, held for the
/// agent's life (the kernel drops it when the process ends, kill -9 too).
/// The file goes when the agent ends normally ([`PinDirLock`]'s drop).
fn lock_pin_dir(pin_dir: &Path) -> Result<PinDirLock, Failure> {
    std::fs::create_dir_all(ebpfcni::RUN_DIR)
        .map_err(|e| (EXIT_TAKEN, format!("create {}: {e}", ebpfcni::RUN_DIR)))?;
    let canonical = std::fs::canonicalize(pin_dir).unwrap_or_else(|_| pin_dir.to_path_buf());
    let path = Path::new(ebpfcni::RUN_DIR).join(format!(
        "agent-{:016x}.lock",
        ebpfcni::fnv1a(canonical.as_os_str().as_encoded_bytes())
    ));
    loop {
        let file = File::create(&path).map_err(|e| (EXIT_TAKEN, format!("open {}: {e}", path.display())))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            (
                EXIT_TAKEN,
                format!(
                    "another ebpfcni-agent manages the maps in {} (it holds {})",
                    pin_dir.display(),
                    path.display()
                ),
            )
        })?;
        // An agent that ended removed the file after we opened it: our lock
        // is on a file nobody else will open. Take the one at the path.
        let same = |held: &File| {
            use std::os::unix::fs::MetadataExt;
            match (held.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            }
        };
        if same(&lock) {
            return Ok(PinDirLock { path, _lock: lock });
        }
    }
}

/// The pin directory's lock; its file is removed when the agent ends
/// normally, while the lock is still held (an agent starting meanwhile
/// sees the file gone and takes a new one: see [`lock_pin_dir`]).
struct PinDirLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for PinDirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the API socket, mode 0600. A socket file nobody answers on is a
/// dead agent's and is replaced; one that answers is refused.
fn bind(socket: &Path) -> Result<std::os::unix::net::UnixListener, Failure> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| (EXIT_SOCKET, format!("create {}: {e}", dir.display())))?;
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err((
            EXIT_TAKEN,
            format!("another agent answers on {}", socket.display()),
        ));
    }
    match std::fs::remove_file(socket) {
        Ok(()) => log::info!("replaced the stale socket {}", socket.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err((EXIT_SOCKET, format!("remove {}: {e}", socket.display()))),
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| (EXIT_SOCKET, format!("listen on {}: {e}", socket.display())))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| (EXIT_SOCKET, format!("chmod {}: {e}", socket.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| (EXIT_SOCKET, format!("set {} non-blocking: {e}", socket.display())))?;
    Ok(listener)
}

/// Resolves at SIGTERM or SIGINT.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: stopping"),
        _ = int.recv() => log::info!("SIGINT: stopping"),
    }
}
