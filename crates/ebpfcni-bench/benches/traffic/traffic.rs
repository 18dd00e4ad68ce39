//! Traffic from pod A to pod B: TCP stream throughput with iperf3, a
//! request/response rate with a small TCP ping-pong of our own, and the
//! rate of new TCP connections.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ebpfcni_testutil::Netns;
use nix::sched::{sched_setaffinity, setns, CloneFlags, CpuSet};
use nix::unistd::Pid;

use crate::Result;

pub const IPERF3_PORT: u16 = 5201;
pub const ECHO_PORT: u16 = 7007;
pub const ACCEPT_PORT: u16 = 7008;

/// CPUs the client and the server side are pinned to, so that every run
/// places them alike (run-to-run variance is otherwise dominated by where the
/// scheduler happened to put them). Separate CPUs when there are two.
pub fn client_cpu() -> usize {
    0
}

fn server_cpu() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    usize::from(cpus > 1)
}

/// Pins the calling thread to `cpu`.
fn pin_thread(cpu: usize) -> std::result::Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| format!("cpu {cpu}: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pin to cpu {cpu}: {e}"))
}

/// `iperf3 -s` inside a namespace, killed (by its pid) on drop. It also dies
/// with this process (PR_SET_PDEATHSIG) if we are killed outright.
pub struct Iperf3Server {
    child: Child,
}

impl Iperf3Server {
    pub fn start(ns: &Netns, addr: Ipv4Addr) -> Result<Self> {
        let mut cmd = ns.command("iperf3");
        cmd.args(["-s", "-B", &addr.to_string(), "-p", &IPERF3_PORT.to_string()])
            .args(["-A", &server_cpu().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs before exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(Into::into)
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start iperf3 -s (is iperf3 installed?): {e}"))?;
        Ok(Self { child })
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        // nsenter execs iperf3 in place: this pid is the server's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TCP throughput from `client` to `server`:IPERF3_PORT in bits/s, first
/// second left out (`-O 1`). Retries while the server is starting.
pub fn throughput(client: &Netns, server: Ipv4Addr, seconds: u32) -> Result<f64> {
    let mut last_error = String::new();
    for _ in 0..5 {
        let out = client
            .command("iperf3")
            .args(["-c", &server.to_string(), "-p", &IPERF3_PORT.to_string()])
            .args(["-t", &seconds.to_string(), "-O", "1", "-J"])
            .args(["-A", &client_cpu().to_string()])
            .output()
            .map_err(|e| format!("run iperf3 -c: {e}"))?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "iperf3 printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            if out.status.success() {
                return Ok(bps);
            }
        }
        last_error = report["error"].as_str().unwrap_or("no result").to_owned();
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("iperf3 -c {server}: {last_error}").into())
}

/// Echoes fixed-size messages back, one connection at a time, on a thread
/// that entered the server's namespace. Stopped and joined on drop.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(ns: &Netns, addr: Ipv4Addr, size: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let serving = stop.clone();
        let thread = listen_in(ns, (addr, ECHO_PORT), "echo server", move |listener| {
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(move || serve(&listener, &serving, size))
        })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// Binds `addr` on a thread that entered `ns` and is pinned to the server
/// CPU, lets `prepare` set the listener up, then runs what it returns on
/// that thread. Returns once the listener is ready (or why it is not).
fn listen_in<F, R>(ns: &Netns, addr: (Ipv4Addr, u16), what: &str, prepare: F) -> Result<JoinHandle<()>>
where
    F: FnOnce(TcpListener) -> std::result::Result<R, String> + Send + 'static,
    R: FnOnce(),
{
    let netns = File::open(ns.path()).map_err(|e| format!("open {}: {e}", ns.path().display()))?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let server = setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))
            .and_then(|()| pin_thread(server_cpu()))
            .and_then(|()| TcpListener::bind(addr).map_err(|e| format!("bind {}: {e}", addr.0)))
            .and_then(prepare);
        match server {
            Ok(run) => {
                let _ = ready_tx.send(Ok(()));
                run();
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    ready_rx
        .recv()
        .map_err(|_| format!("{what} thread died"))?
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(thread)
}

fn serve(listener: &TcpListener, stop: &AtomicBool, size: usize) {
    let mut buf = vec![0u8; size];
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_nodelay(true);
                // Until the client hangs up (or anything fails).
                while conn.read_exact(&mut buf).is_ok() && conn.write_all(&buf).is_ok() {}
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Request/response from `client` to the echo server at `server`: one
/// connection, `size`-byte messages, one in flight. Returns transactions per
/// second and the median round trip in ns (each one timed: the median is
/// what a scheduling hiccup, which moves the rate, does not move).
pub fn transactions(client: &Netns, server: Ipv4Addr, size: usize, seconds: u32) -> Result<(f64, f64)> {
    let addr = SocketAddr::from((server, ECHO_PORT));
    let run = move || -> std::result::Result<(f64, f64), String> {
        pin_thread(client_cpu())?;
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        conn.set_nodelay(true).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut msg = vec![0x5a; size];
        let duration = Duration::from_secs(seconds.into());
        let start = Instant::now();
        let mut round_trips: Vec<f64> = Vec::with_capacity(1 << 20);
        let mut sent = start;
        while sent.duration_since(start) < duration {
            conn.write_all(&msg).map_err(|e| format!("send: {e}"))?;
            conn.read_exact(&mut msg).map_err(|e| format!("receive: {e}"))?;
            let back = Instant::now();
            round_trips.push(back.duration_since(sent).as_nanos() as f64);
            sent = back;
        }
        let rate = round_trips.len() as f64 / start.elapsed().as_secs_f64();
        Ok((rate, ebpfcni_testutil::median(&round_trips)))
    };
    client.run_in(run).map_err(Into::into)
}

/// Accepts connections and closes them at once, on a thread that entered
/// the server's namespace. Stopped and joined on drop.
pub struct AcceptServer {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    netns: File,
    thread: Option<JoinHandle<()>>,
}

impl AcceptServer {
    pub fn start(ns: &Netns, addr: Ipv4Addr) -> Result<Self> {
        let netns = File::open(ns.path()).map_err(|e| format!("open {}: {e}", ns.path().display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let serving = stop.clone();
        let thread = listen_in(ns, (addr, ACCEPT_PORT), "accept server", move |listener| {
            // Blocking accepts; drop wakes the last one with a connection.
            // Each accepted connection gets one byte, which its client waits
            // for: a closed loop, so that the client cannot run ahead of this
            // thread, fill the accept queue and measure the kernel's 1 s SYN
            // retransmission instead of the path (it did: see `connections`).
            Ok(move || {
                while !serving.load(Ordering::Relaxed) {
                    if let Ok((mut conn, _)) = listener.accept() {
                        let _ = conn.write_all(b"!");
                    }
                }
            })
        })?;
        Ok(Self {
            stop,
            addr: SocketAddr::from((addr, ACCEPT_PORT)),
            netns,
            thread: Some(thread),
        })
    }
}

impl Drop for AcceptServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocked accept from inside the server's namespace.
        let (addr, netns) = (self.addr, &self.netns);
        std::thread::scope(|s| {
            s.spawn(|| {
                if setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).is_ok() {
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
                }
            });
        });
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// New TCP connections per second from `client` to the accept server at
/// `server`, one at a time (netperf's TCP_CRR without the request): each is
/// opened (the three-way handshake), accepted by the server, which sends one
/// byte, read by the client, and closed with a reset (SO_LINGER 0), so that
/// no TIME_WAIT runs the client out of ports. Waiting for the byte matters:
/// a client that only connected ran ahead of the accepting thread, filled
/// its accept queue, and every overflow cost a 1 s SYN retransmission,
/// under every filter alike (3 per 3 s run, counted with `tcp_ext`).
pub fn connections(client: &Netns, server: Ipv4Addr, seconds: u32) -> Result<f64> {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    let addr = SocketAddr::from((server, ACCEPT_PORT));
    let run = move || -> std::result::Result<f64, String> {
        pin_thread(client_cpu())?;
        let duration = Duration::from_secs(seconds.into());
        let start = Instant::now();
        let mut done = 0u64;
        while start.elapsed() < duration {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| format!("connect to {addr} (after {done} connections): {e}"))?;
            conn.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte)
                .map_err(|e| format!("read the server's byte (after {done} connections): {e}"))?;
            setsockopt(
                &conn,
                Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )
            .map_err(|e| format!("SO_LINGER: {e}"))?;
            drop(conn);
            done += 1;
        }
        Ok(done as f64 / start.elapsed().as_secs_f64())
    };
    client.run_in(run).map_err(Into::into)
}

/// A TcpExt counter of `ns` (as `nstat` names them without the prefix, e.g.
/// "ListenOverflows", "TCPSynRetrans"), read from the namespace's
/// /proc/net/netstat. Tells apart why new connections stall: a SYN dropped
/// because the listener's accept queue was full costs the client a 1 s
/// retransmission, whatever the path in between.
pub fn tcp_ext(ns: &Netns, name: &str) -> Result<u64> {
    let text = ns
        .run_in(|| std::fs::read_to_string("/proc/thread-self/net/netstat"))
        .map_err(|e| format!("read netstat in {}: {e}", ns.path().display()))?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some(("TcpExt", names)), Some(("TcpExt", values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if let Some((_, v)) = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
        {
            return v.parse().map_err(|e| format!("TcpExt {name}: {e}").into());
        }
    }
    Err(format!("no TcpExt counter {name}").into())
}

/// CPU time of the whole machine that was not idle, from /proc/stat (in
/// USER_HZ ticks, converted).
pub fn busy_cpu_time() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("read /proc/stat: {e}"))?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| ![3, 4].contains(i) && *i < 8)
        .map(|(_, t)| t)
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Ok(Duration::from_nanos(busy * 1_000_000_000 / hz))
}

/// The flood's receiver: a UDP socket on port 9 of the server pod, read on
/// a thread pinned to the server CPU, as a real receiver would. Without it
/// the server's stack answers every datagram with an ICMP port unreachable
/// (rate-limited, but the decision costs about a fifth of the path per
/// packet), which measures ICMP, not delivery. Stopped and joined on drop.
pub struct UdpSink {
    stop: Arc<AtomicBool>,
    received: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpSink {
    pub fn start(ns: &Netns, addr: Ipv4Addr) -> Result<Self> {
        let netns = File::open(ns.path()).map_err(|e| format!("open {}: {e}", ns.path().display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stopping, counting) = (stop.clone(), received.clone());
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let socket = setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns: {e}"))
                .and_then(|()| pin_thread(server_cpu()))
                .and_then(|()| {
                    std::net::UdpSocket::bind((addr, 9)).map_err(|e| format!("bind {addr}:9: {e}"))
                })
                .and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_millis(100)))
                        .map(|()| s)
                        .map_err(|e| e.to_string())
                });
            let socket = match socket {
                Ok(socket) => {
                    let _ = ready_tx.send(Ok(()));
                    socket
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 2048];
            while !stopping.load(Ordering::Relaxed) {
                if socket.recv(&mut buf).is_ok() {
                    counting.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        ready_rx
            .recv()
            .map_err(|_| "UDP sink thread died".to_owned())?
            .map_err(|e| format!("UDP sink: {e}"))?;
        Ok(Self {
            stop,
            received,
            thread: Some(thread),
        })
    }

    /// Datagrams read so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a flood of 64-byte UDP frames cost.
pub struct Flood {
    pub packets: u64,
    pub elapsed: Duration,
    /// Non-idle CPU time of the whole machine while it ran.
    pub busy: Duration,
}

/// Sends 64-byte UDP frames (22 bytes of payload) from `client` to
/// `server`:9 as fast as one thread can, for `seconds`.
pub fn flood(client: &Netns, server: Ipv4Addr, seconds: u32) -> Result<Flood> {
    let run = move || -> std::result::Result<Flood, String> {
        pin_thread(client_cpu())?;
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
        socket.connect((server, 9)).map_err(|e| format!("connect: {e}"))?;
        let payload = [0u8; 22];
        let duration = Duration::from_secs(seconds.into());
        let busy_before = busy_cpu_time().map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut packets = 0u64;
        while start.elapsed() < duration {
            for _ in 0..256 {
                // Errors (a full queue, an ICMP error queued on the socket)
                // are not packets sent.
                if socket.send(&payload).is_ok() {
                    packets += 1;
                }
            }
        }
        let elapsed = start.elapsed();
        let busy = busy_cpu_time()
            .map_err(|e| e.to_string())?
            .saturating_sub(busy_before);
        Ok(Flood {
            packets,
            elapsed,
            busy,
        })
    };
    client.run_in(run).map_err(Into::into)
}
