//! How `policyctl monitor` prints an event: one line for people, or one
//! JSON object (a line) for programs.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ebpfcni::events::{monotonic_now, Event, Verdict};
use ebpfcni::{Hook, Protocol};
use serde::Serialize;

use crate::links::Interface;
use crate::names::{LabelVerdict, Names};

/// "SYN-ACK", "FIN-ACK", "RST"; empty without flags.
pub fn tcp_flags(flags: u8) -> String {
    const NAMES: [(u8, &str); 8] = [
        (0x02, "SYN"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x10, "ACK"),
        (0x20, "URG"),
        (0x40, "ECE"),
        (0x80, "CWR"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join("-")
}

pub fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::FromPod => "from-pod",
        Hook::ToPod => "to-pod",
        Hook::FromFabric => "from-fabric",
    }
}

/// Wall-clock time of an event from its CLOCK_MONOTONIC stamp.
pub struct Clock {
    /// Realtime minus monotonic, in ns, when the monitor started.
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            offset_ns: real.as_nanos() as i128 - monotonic_now().as_nanos() as i128,
        }
    }

    /// (seconds since the epoch, milliseconds).
    fn wall(&self, monotonic: Duration) -> (i64, u32) {
        let ns = monotonic.as_nanos() as i128 + self.offset_ns;
        (
            (ns / 1_000_000_000) as i64,
            ((ns % 1_000_000_000) / 1_000_000) as u32,
        )
    }

    /// "12:00:01.123", local time.
    fn time_of_day(&self, monotonic: Duration) -> String {
        let (secs, ms) = self.wall(monotonic);
        let t = secs as nix::libc::time_t;
        // SAFETY: localtime_r writes only into `tm`.
        let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
        unsafe { nix::libc::localtime_r(&t, &mut tm) };
        format!("{:02}:{:02}:{:02}.{ms:03}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    }

    /// "2026-11-27T12:00:01.123Z".
    fn rfc3339(&self, monotonic: Duration) -> String {
        let (secs, ms) = self.wall(monotonic);
        let t = secs as nix::libc::time_t;
        // SAFETY: gmtime_r writes only into `tm`.
        let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
        unsafe { nix::libc::gmtime_r(&t, &mut tm) };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    }
}

/// An event as `-o json` prints it, one object a line.
#[derive(Serialize)]
struct EventJson<'a> {
    time: String,
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'static str>,
    src_ip: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    src_identity: u32,
    dst_ip: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_port: Option<u16>,
    dst_identity: u32,
    proto: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_id: Option<u16>,
    #[serde(skip_serializing_if = "String::is_empty")]
    tcp_flags: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ct_state: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ct_changed: bool,
    hook: &'static str,
    ifindex: u32,
    /// The identities' labels, when the agent knows them.
    #[serde(skip_serializing_if = "Option::is_none")]
    src_labels: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_labels: Option<String>,
    /// What label policy decided: the policies of the rules, or whose
    /// isolation dropped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    label_policy: Option<LabelVerdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
}

fn has_ports(protocol: u8) -> bool {
    Protocol(protocol).has_ports()
}

/// "10.13.0.3:8080 (1002)"; "?" for an identity not known; with the
/// identity's labels when the agent knows them: "(1002 app=backend)".
fn end(addr: Ipv4Addr, port: u16, id: u32, protocol: u8, labels: Option<String>) -> String {
    let mut id = if id == 0 { "?".to_owned() } else { id.to_string() };
    if let Some(labels) = labels.filter(|l| !l.is_empty()) {
        id = format!("{id} {labels}");
    }
    if has_ports(protocol) {
        format!("{addr}:{port} ({id})")
    } else {
        format!("{addr} ({id})")
    }
}

pub fn line(e: &Event, clock: &Clock, iface: Option<&Interface>, names: &mut Names) -> String {
    let what = match e.verdict {
        Verdict::Drop | Verdict::Audit => e.reason.unwrap_or("unknown"),
        Verdict::Pass => e.pass_kind.map_or("allowed", |k| k.name()),
    };
    let mut text = format!(
        "{} {} {what} {} -> {} {}",
        clock.time_of_day(e.time),
        e.verdict.name(),
        end(e.saddr, e.sport, e.src_id, e.protocol, names.labels(e.src_id)),
        end(e.daddr, e.dport, e.dst_id, e.protocol, names.labels(e.dst_id)),
        Protocol(e.protocol),
    );
    if e.protocol == Protocol::ICMP.0 && e.sport != 0 {
        text += &format!(" id {}", e.sport);
    }
    let flags = tcp_flags(e.tcp_flags);
    if e.protocol == Protocol::TCP.0 && !flags.is_empty() {
        text += &format!(" {flags}");
    }
    if let (true, Some(state)) = (e.ct_changed, e.ct_state) {
        text += &format!(" ct:{}", state.name());
    }
    if let Some(label) = e.label {
        let said = LabelVerdict::of(&label, names).text();
        if !said.is_empty() {
            text += &format!(" [{said}]");
        }
    }
    text += &format!(" {}", hook_name(e.hook));
    match iface {
        Some(i) => {
            text += &format!(" {}", i.name);
            if let Some(pod) = &i.pod {
                text += &format!(" pod {pod}");
            }
        }
        None => text += &format!(" ifindex {}", e.ifindex),
    }
    text
}

pub fn json_line(e: &Event, clock: &Clock, iface: Option<&Interface>, names: &mut Names) -> String {
    let ports = has_ports(e.protocol);
    let icmp = e.protocol == Protocol::ICMP.0 && e.sport != 0;
    let json = EventJson {
        time: clock.rfc3339(e.time),
        verdict: match e.verdict {
            Verdict::Drop => "drop",
            Verdict::Pass => "pass",
            Verdict::Audit => "audit",
        },
        reason: e.reason,
        pass: e.pass_kind.map(|k| k.name()),
        src_ip: e.saddr,
        src_port: ports.then_some(e.sport),
        src_identity: e.src_id,
        dst_ip: e.daddr,
        dst_port: ports.then_some(e.dport),
        dst_identity: e.dst_id,
        proto: Protocol(e.protocol).to_string(),
        icmp_id: icmp.then_some(e.sport),
        tcp_flags: if e.protocol == Protocol::TCP.0 {
            tcp_flags(e.tcp_flags)
        } else {
            String::new()
        },
        ct_state: e.ct_state.map(|s| s.name()),
        ct_changed: e.ct_changed,
        hook: hook_name(e.hook),
        ifindex: e.ifindex,
        src_labels: names.labels(e.src_id),
        dst_labels: names.labels(e.dst_id),
        label_policy: e.label.map(|l| LabelVerdict::of(&l, names)),
        interface: iface.map(|i| i.name.as_str()),
        pod: iface.and_then(|i| i.pod.as_deref()),
    };
    serde_json::to_string(&json).expect("an event serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_flags_read_as_tcpdump_users_expect() {
        assert_eq!(tcp_flags(0x12), "SYN-ACK");
        assert_eq!(tcp_flags(0x11), "FIN-ACK");
        assert_eq!(tcp_flags(0x04), "RST");
        assert_eq!(tcp_flags(0), "");
    }
}
