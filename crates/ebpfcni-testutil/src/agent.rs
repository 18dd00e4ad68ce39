//! A real `ebpfcni-agent` process for a test: started inside the test's
//! node namespace (nsenter --net, so the real bpffs stays visible) with its
//! own socket, state directory and pin directory; killed by pid on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ebpfcni_api::Client;

use crate::netns::Netns;

/// The path of a binary of this workspace, built when missing (a test of
/// one package needs another package's binary: cargo builds only its own).
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/<bin>
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(bin);
    // Built when missing (one test run alone); ./test.sh builds every
    // binary first, so that none is older than the tree.
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", package, "--bin", bin]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} --bin {bin} failed");
    }
    path
}

/// An agent of the test's own. Its files live in `dir` (which the test
/// owns and removes).
pub struct AgentProcess {
    child: Option<Child>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    netns: PathBuf,
    /// The agent's lock on its pin directory (`/run/ebpfcni/agent-*.lock`):
    /// an agent removes it when it ends normally, not when killed, which is
    /// how tests end theirs.
    lock_file: PathBuf,
}

impl AgentProcess {
    /// Starts an agent in `node` over `pin_dir`, its socket and state under
    /// `dir`, with `extra` flags (e.g. `--pod-cidr 10.13.7.0/24`); waits
    /// until it answers.
    pub fn start(node: &Netns, pin_dir: &Path, dir: &Path, extra: &[&str]) -> Self {
        let mut agent = Self::new(node, pin_dir, dir, extra);
        agent.spawn();
        agent.wait_ready();
        agent
    }

    /// Runs an agent in `node` over `pin_dir` that is expected to refuse
    /// to start; returns how it ended.
    pub fn start_unchecked(node: &Netns, pin_dir: &Path, dir: &Path) -> std::process::Output {
        Self::new(node, pin_dir, dir, &[]).run_once(&[])
    }

    /// Runs an agent in `node` over `pin_dir` with `extra` flags that is
    /// expected to refuse to start; returns how it ended.
    pub fn run_unchecked(node: &Netns, pin_dir: &Path, dir: &Path, extra: &[&str]) -> std::process::Output {
        Self::new(node, pin_dir, dir, extra).run_once(&[])
    }

    /// The agent's flags and files, not started.
    fn new(node: &Netns, pin_dir: &Path, dir: &Path, extra: &[&str]) -> Self {
        let socket = dir.join("agent.sock");
        let state_dir = dir.join("state");
        let mut args: Vec<String> = vec![
            "--pin-dir".into(),
            pin_dir.display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--node".into(),
            node.name().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        // As the agent names it (its main.rs, lock_pin_dir).
        let canonical = std::fs::canonicalize(pin_dir).unwrap_or_else(|_| pin_dir.to_path_buf());
        let lock_file = Path::new(ebpfcni::RUN_DIR).join(format!(
            "agent-{:016x}.lock",
            ebpfcni::fnv1a(canonical.as_os_str().as_encoded_bytes())
        ));
        Self {
            child: None,
            socket,
            state_dir,
            log: dir.join("agent.log"),
            args,
            netns: node.path(),
            lock_file,
        }
    }

    /// Removes the pin directory's lock file if no agent holds it (this
    /// one was killed; another one started on the same pin directory keeps
    /// its file).
    fn remove_unheld_lock_file(&self) {
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::MetadataExt;
        let Ok(file) = std::fs::File::open(&self.lock_file) else {
            return;
        };
        let Ok(held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            return; // an agent runs on it
        };
        let same = match (held.metadata(), std::fs::metadata(&self.lock_file)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            let _ = std::fs::remove_file(&self.lock_file);
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(workspace_bin("ebpfcni-agent", "ebpfcni-agent"))
            .args(&self.args)
            .env("RUST_LOG", "info");
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the agent's log");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start ebpfcni-agent");
        self.child = Some(child);
    }

    /// Runs the agent binary with this agent's flags (and `extra`) to its
    /// end, without keeping it: for flags and start-up failures.
    pub fn run_once(&self, extra: &[&str]) -> std::process::Output {
        self.command().args(extra).output().expect("run ebpfcni-agent")
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket).with_timeout(Duration::from_secs(10))
    }

    /// Waits (at most 30 s) until the agent answers /v1/healthz.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = self.client();
        loop {
            if client.health().is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "ebpfcni-agent exited ({status}) before it was ready:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ebpfcni-agent not ready after 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits (at most 10 s) for a clean stop; returns whether
    /// it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // nsenter execs the agent: the child's pid is the agent's.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the agent again with the same flags, and waits until ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped agent");
        self.spawn();
        self.wait_ready();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.socket);
        self.remove_unheld_lock_file();
    }
}
