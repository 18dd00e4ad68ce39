//! Stateful port rules with real pods made by the plugin: with only
//! "frontend may open TCP 8080 on backend, statefully", an HTTP request
//! from frontend gets its answer, nothing else of either direction passes,
//! and revoking the rule stops a running stream at once. A UDP answer too
//! large for the MTU arrives, fragments and all.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{pod_ip, Node, Pod};
use ebpfcni::{Identity, Maps, PolicyRule, Protocol, Rule, Selector};
use ebpfcni_testutil::require_root;

const FRONTEND_ID: u32 = 1001;
const BACKEND_ID: u32 = 1002;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// Frontend and backend pods with identities 1001 and 1002, and no rule.
struct Pods {
    /// Owns the namespaces and pins the pods live in, removed on drop.
    _node: Node,
    frontend: Pod,
    backend: Pod,
    frontend_ip: Ipv4Addr,
    backend_ip: Ipv4Addr,
    maps: Maps,
}

impl Pods {
    fn new(tag: &str) -> Self {
        let node = Node::new(tag);
        let mut conf = node.config("1.1.0");
        conf["mtu"] = 1500.into();
        let (frontend, backend) = (Pod::new(&format!("{tag}-fe")), Pod::new(&format!("{tag}-be")));
        let frontend_ip = pod_ip(&node.add(&conf, &frontend).ok()).parse().unwrap();
        let backend_ip = pod_ip(&node.add(&conf, &backend).ok()).parse().unwrap();
        let maps = Maps::open(node.pins.path()).unwrap();
        maps.endpoints
            .upsert_batch(&[(frontend_ip, id(FRONTEND_ID)), (backend_ip, id(BACKEND_ID))])
            .unwrap();
        Self {
            _node: node,
            frontend,
            backend,
            frontend_ip,
            backend_ip,
            maps,
        }
    }

    /// `allow --src 1001 --dst 1002 SELECTOR --stateful`.
    fn allow_stateful(&self, selector: Selector) -> Rule {
        let rule = Rule {
            pair: PolicyRule::new(id(FRONTEND_ID), id(BACKEND_ID)),
            selector,
            stateful: true,
        };
        self.maps.allow(&[rule]).unwrap();
        rule
    }

    /// A TCP connection from `from` to `to`:`port`, or the error.
    fn connect(from: &Pod, to: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
        from.ns
            .run_in(|| TcpStream::connect_timeout(&SocketAddr::from((to, port)), CONNECT_TIMEOUT))
    }
}

fn listen(pod: &Pod, ip: Ipv4Addr, port: u16) -> TcpListener {
    pod.ns.run_in(|| TcpListener::bind((ip, port))).expect("listen")
}

/// Answers one HTTP request on each connection with a fixed page, until
/// `stop` (a thread of `scope`).
fn serve_http<'s>(scope: &'s std::thread::Scope<'s, '_>, listener: TcpListener, stop: &'s AtomicBool) {
    listener.set_nonblocking(true).unwrap();
    scope.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut request = [0u8; 1024];
                    let _ = conn.read(&mut request);
                    let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nhello, world\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
}

/// Runs curl in `pod` against `url`: its stdout, or None when it failed.
fn curl(pod: &Pod, url: &str) -> Option<String> {
    let out = pod
        .ns
        .command("curl")
        .args(["--silent", "--show-error", "--max-time", "2", url])
        .output()
        .expect("run curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn only_the_stateful_port_rule_opens_and_only_one_way() {
    require_root!();
    let pods = Pods::new("ct-http");
    pods.allow_stateful(Selector::Ports {
        protocol: Protocol::TCP,
        first: 8080,
        last: 8080,
    });
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        serve_http(s, listen(&pods.backend, pods.backend_ip, 8080), &stop);
        serve_http(s, listen(&pods.backend, pods.backend_ip, 8081), &stop);
        serve_http(s, listen(&pods.frontend, pods.frontend_ip, 9000), &stop);

        let page = curl(&pods.frontend, &format!("http://{}:8080/", pods.backend_ip));
        let refused = curl(&pods.frontend, &format!("http://{}:8081/", pods.backend_ip));
        let back = Pods::connect(&pods.backend, pods.frontend_ip, 9000);
        stop.store(true, Ordering::Relaxed);

        assert_eq!(page.as_deref(), Some("hello, world\n"), "curl to backend:8080");
        assert_eq!(refused, None, "curl to backend:8081 got an answer");
        assert!(back.is_err(), "backend opened a connection to frontend");
    });
    let connections = pods.maps.conntrack.list().unwrap();
    assert!(
        connections
            .iter()
            .all(|c| c.opener == pods.frontend_ip && c.responder == pods.backend_ip && c.dport == 8080),
        "{connections:#?}"
    );
    assert!(!connections.is_empty(), "nothing was tracked");
}

#[test]
fn revoking_the_rule_stops_a_running_stream_within_a_second() {
    require_root!();
    let pods = Pods::new("ct-stream");
    let rule = pods.allow_stateful(Selector::Ports {
        protocol: Protocol::TCP,
        first: 8080,
        last: 8080,
    });
    let listener = listen(&pods.backend, pods.backend_ip, 8080);
    let mut client = Pods::connect(&pods.frontend, pods.backend_ip, 8080).expect("connect");
    let (mut server, _) = listener.accept().unwrap();
    client.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    server
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    let stop = AtomicBool::new(false);
    let last_received = Mutex::new(None::<Instant>);
    let denied_at = std::thread::scope(|s| {
        // The server streams to the client (replies of the connection).
        s.spawn(|| {
            let chunk = [7u8; 16 * 1024];
            while !stop.load(Ordering::Relaxed) {
                let _ = server.write(&chunk);
            }
        });
        s.spawn(|| {
            let mut buf = [0u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n @ 1..) = client.read(&mut buf) {
                    *last_received.lock().unwrap() = Some(Instant::now());
                    let _ = n;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let flowing = last_received
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() < Duration::from_millis(200));
        let denied_at = Instant::now();
        pods.maps.deny(FRONTEND_ID, BACKEND_ID, rule.selector).unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        stop.store(true, Ordering::Relaxed);
        assert!(flowing, "the stream was not flowing before deny");
        denied_at
    });
    let last = last_received.lock().unwrap().expect("received something");
    let after = last.saturating_duration_since(denied_at);
    assert!(
        after < Duration::from_secs(1),
        "data still arrived {after:?} after deny"
    );
    assert!(
        pods.maps.conntrack.list().unwrap().is_empty(),
        "deny left the connection tracked"
    );
}

#[test]
fn ping_passes_one_way_with_a_stateful_icmp_rule() {
    require_root!();
    let pods = Pods::new("ct-ping");
    let (fe, be) = (pods.frontend_ip.to_string(), pods.backend_ip.to_string());
    assert!(!pods.frontend.ns.ping(&be, 1), "ping passed without a rule");
    pods.allow_stateful(Selector::Protocol(Protocol::ICMP));
    assert!(pods.frontend.ns.ping(&be, 3), "frontend could not ping backend");
    assert!(!pods.backend.ns.ping(&fe, 2), "backend could ping frontend");
    let connections = pods.maps.conntrack.list().unwrap();
    assert!(
        !connections.is_empty() && connections.iter().all(|c| c.opener == pods.frontend_ip),
        "{connections:#?}"
    );
}

/// A datagram of `size` bytes from `from` to `to`:`port` and the answer of
/// `answer` bytes that `server` (bound there) sends back: the sizes that
/// arrived at each end (None: nothing within a second).
fn udp_exchange(
    from: &Pod,
    server: &UdpSocket,
    to: Ipv4Addr,
    port: u16,
    size: usize,
    answer: usize,
) -> (Option<usize>, Option<usize>) {
    let client = from
        .ns
        .run_in(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap();
    for socket in [&client, server] {
        socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    }
    client.send_to(&vec![1u8; size], (to, port)).unwrap();
    let mut buf = vec![0u8; 65536];
    let Ok((asked, peer)) = server.recv_from(&mut buf) else {
        return (None, None);
    };
    server.send_to(&vec![2u8; answer], peer).unwrap();
    (Some(asked), client.recv(&mut buf).ok())
}

#[test]
fn a_fragmented_udp_answer_under_a_stateful_port_rule_reaches_the_opener() {
    require_root!();
    let pods = Pods::new("ct-frag");
    pods.allow_stateful(Selector::Ports {
        protocol: Protocol::UDP,
        first: 5353,
        last: 5353,
    });
    let server = pods
        .backend
        .ns
        .run_in(|| UdpSocket::bind((pods.backend_ip, 5353)))
        .unwrap();
    // 3,000 bytes on an MTU of 1,500: three fragments each way.
    assert_eq!(
        udp_exchange(&pods.frontend, &server, pods.backend_ip, 5353, 64, 3000),
        (Some(64), Some(3000)),
        "a small query and its fragmented answer"
    );
    assert_eq!(
        udp_exchange(&pods.frontend, &server, pods.backend_ip, 5353, 3000, 3000),
        (Some(3000), Some(3000)),
        "a fragmented query (the port rule's own direction) and its answer"
    );
    // The first fragments' verdicts were recorded: the query's, by the
    // port rule, and the answers', as replies.
    let records = pods.maps.fragments.list().unwrap();
    assert!(
        records
            .iter()
            .any(|d| d.src == pods.backend_ip && d.dst == pods.frontend_ip)
            && records
                .iter()
                .any(|d| d.src == pods.frontend_ip && d.dst == pods.backend_ip),
        "{records:#?}"
    );
}
