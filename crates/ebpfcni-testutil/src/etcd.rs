//! A real etcd (Debian's `etcd-server`, 3.4) of the test's own: on
//! loopback, on free ports, with a private data directory; killed by pid
//! and its directory removed on drop. It can be killed with SIGKILL and
//! started again on the same data directory and ports, for failure tests.
//! Tests that need it gate on `tools_present(name, &[ETCD_BIN])`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where Debian's `etcd-server` puts the server.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// An etcd process of the test's own.
pub struct EtcdProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The network namespace it runs in (None: the test's own).
    netns: Option<PathBuf>,
    ip: Ipv4Addr,
    client_port: u16,
    peer_port: u16,
}

impl EtcdProcess {
    /// Starts an etcd on 127.0.0.1 and waits until it answers.
    pub fn start() -> Self {
        Self::start_on(None, Ipv4Addr::LOCALHOST)
    }

    /// Starts an etcd inside the network namespace at `netns` (e.g. a
    /// test's fabric namespace, which the test's node namespaces reach) on
    /// `ip`, ports 2379 and 2380; waits until it answers there.
    pub fn start_in(netns: &Path, ip: Ipv4Addr) -> Self {
        Self::start_on(Some(netns.to_path_buf()), ip)
    }

    fn start_on(netns: Option<PathBuf>, ip: Ipv4Addr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ebpfcni-etcd")
            .tempdir()
            .expect("etcd's temporary directory");
        // A port another test grabs between our probe and etcd's bind
        // makes etcd exit at once: try again on new ports and a fresh
        // data directory (the first start writes the ports into it).
        let mut etcd = Self {
            child: None,
            dir,
            netns,
            ip,
            client_port: 0,
            peer_port: 0,
        };
        for _ in 0..5 {
            // A namespace of the test's own has every port free.
            (etcd.client_port, etcd.peer_port) = match etcd.netns {
                Some(_) => (2379, 2380),
                None => (free_port(), free_port()),
            };
            if etcd.spawn_and_wait() {
                return etcd;
            }
            etcd.kill9();
            let _ = std::fs::remove_dir_all(etcd.data_dir());
        }
        panic!("etcd did not start after 5 tries; its log:\n{}", etcd.log())
    }

    /// The client URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// The process id of the running etcd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory (kept across [`kill9`](Self::kill9) and
    /// [`restart`](Self::restart)).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What etcd wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kills etcd with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data directory and ports; waits until
    /// it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running etcd");
        assert!(
            self.spawn_and_wait(),
            "etcd did not come back on {}; its log:\n{}",
            self.url(),
            self.log()
        );
    }

    fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd's log file");
        let client = self.url();
        let peer = format!("http://{}:{}", self.ip, self.peer_port);
        let mut cmd = match &self.netns {
            // nsenter execs etcd: the child's pid is etcd's.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(ETCD_BIN);
                c
            }
            None => Command::new(ETCD_BIN),
        };
        let child = cmd
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            // The tests of one machine share 2 cores: do not let a slow
            // fsync or a busy scheduler start an election of one member.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {ETCD_BIN}: {e} (install etcd-server)"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if self.healthy() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// GET /health answers `"health":"true"` once etcd has a leader and
    /// serves requests.
    fn healthy(&self) -> bool {
        let Some(ns) = &self.netns else {
            return self.healthy_here();
        };
        let Ok(file) = std::fs::File::open(ns) else {
            return false;
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                use std::os::fd::AsFd;
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                    && self.healthy_here()
            })
            .join()
            .unwrap_or(false)
        })
    }

    fn healthy_here(&self) -> bool {
        let Ok(mut s) = TcpStream::connect((self.ip, self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A TCP port free on loopback now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
