//! `policyctl ct`: the connections tracked for stateful rules, and their
//! lifetimes.

use std::time::Duration;

use clap::Args;
use ebpfcni::{Connection, CtTimeouts, Protocol};
use serde::Serialize;

use crate::{args, open_maps_for_reading, CmdResult, Common, Failure, Format, Out};

/// `ct timeouts`: the lifetimes to set; none, show them.
#[derive(Args, Debug)]
pub struct TimeoutArgs {
    /// Seconds a TCP connection may wait for its handshake to finish
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds())]
    pub tcp_syn: Option<u32>,
    /// Seconds an established TCP connection may stay idle
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds())]
    pub tcp_established: Option<u32>,
    /// Seconds a TCP connection lives after its first FIN or a RST
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds())]
    pub tcp_closing: Option<u32>,
    /// Seconds a UDP flow may stay idle
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds())]
    pub udp: Option<u32>,
    /// Seconds an ICMP echo (or another protocol's flow) may stay idle
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = args::seconds())]
    pub other: Option<u32>,
}

impl TimeoutArgs {
    fn is_empty(&self) -> bool {
        [
            self.tcp_syn,
            self.tcp_established,
            self.tcp_closing,
            self.udp,
            self.other,
        ]
        .iter()
        .all(Option::is_none)
    }

    fn apply(&self, to: CtTimeouts) -> CtTimeouts {
        CtTimeouts {
            tcp_syn: self.tcp_syn.unwrap_or(to.tcp_syn),
            tcp_established: self.tcp_established.unwrap_or(to.tcp_established),
            tcp_closing: self.tcp_closing.unwrap_or(to.tcp_closing),
            udp: self.udp.unwrap_or(to.udp),
            other: self.other.unwrap_or(to.other),
        }
    }
}

/// A connection as `ct list -o json` prints it.
#[derive(Serialize)]
struct ConnectionJson {
    proto: String,
    opener: String,
    responder: String,
    opener_identity: u32,
    responder_identity: u32,
    state: &'static str,
    seen_reply: bool,
    expires_in_seconds: u64,
}

/// "10.0.0.1:40000" with ports, "10.0.0.1 id 7" for an ICMP echo, the
/// bare address otherwise.
fn end(c: &Connection, opener: bool) -> String {
    let (addr, port) = if opener {
        (c.opener, c.opener_port)
    } else {
        (c.responder, c.dport)
    };
    match Protocol(c.protocol) {
        p if p.has_ports() => format!("{addr}:{port}"),
        Protocol::ICMP => format!("{addr} id {port}"),
        _ => addr.to_string(),
    }
}

fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl From<&Connection> for ConnectionJson {
    fn from(c: &Connection) -> Self {
        Self {
            proto: Protocol(c.protocol).to_string(),
            opener: end(c, true),
            responder: end(c, false),
            opener_identity: c.opener_id,
            responder_identity: c.responder_id,
            state: c.state.name(),
            seen_reply: c.seen_reply,
            expires_in_seconds: seconds(c.expires_in),
        }
    }
}

/// `ct list`: every live connection, opener first.
pub fn list(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let connections = maps
        .conntrack
        .list()
        .map_err(|e| Failure::failed("list the tracked connections", e))?;
    let tracking = maps
        .config
        .conntrack()
        .map_err(|e| Failure::failed("read whether connections are tracked", e))?;
    let mut out = Out::new(common);
    if out.format() == Format::Json {
        let rows: Vec<ConnectionJson> = connections.iter().map(ConnectionJson::from).collect();
        out.json(&rows)?;
    } else {
        let title = format!(
            "tracked connections: {} of {}{}",
            connections.len(),
            maps.conntrack.capacity(),
            if tracking {
                ""
            } else {
                " (no rule is stateful: nothing is tracked)"
            }
        );
        let rows = connections
            .iter()
            .map(|c| {
                vec![
                    Protocol(c.protocol).to_string(),
                    end(c, true),
                    end(c, false),
                    format!("{} -> {}", c.opener_id, c.responder_id),
                    c.state.name().to_owned(),
                    if c.seen_reply { "yes" } else { "no" }.to_owned(),
                    format!("{}s", seconds(c.expires_in)),
                ]
            })
            .collect();
        out.note(title)?;
        out.table(
            &[
                "PROTO",
                "OPENER",
                "RESPONDER",
                "IDENTITIES",
                "STATE",
                "REPLIED",
                "EXPIRES IN",
            ],
            rows,
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `ct flush`: forget every connection.
pub fn flush(common: &Common) -> CmdResult {
    crate::change(
        common,
        |maps| {
            let n = maps
                .conntrack
                .clear()
                .map_err(|e| Failure::failed("flush the tracked connections", e))?;
            Ok(vec![format!(
                "forgot {n} tracked connections (their replies are dropped unless a rule allows them)"
            )])
        },
        |_, _| Ok(()),
    )
}

#[derive(Serialize)]
struct TimeoutsJson {
    tcp_syn: u32,
    tcp_established: u32,
    tcp_closing: u32,
    udp: u32,
    other: u32,
}

fn print_timeouts(out: &mut Out, t: CtTimeouts) -> CmdResult {
    match out.format() {
        Format::Json => out.json(&TimeoutsJson {
            tcp_syn: t.tcp_syn,
            tcp_established: t.tcp_established,
            tcp_closing: t.tcp_closing,
            udp: t.udp,
            other: t.other,
        })?,
        Format::Table | Format::Prometheus => {
            let d = CtTimeouts::DEFAULT;
            let row = |name: &str, v: u32, default: u32| {
                vec![
                    name.to_owned(),
                    format!("{v}s"),
                    if v == default {
                        String::new()
                    } else {
                        format!("{default}s")
                    },
                ]
            };
            out.note("connection lifetimes (idle seconds before a connection is forgotten):")?;
            out.table(
                &["STATE", "TIMEOUT", "DEFAULT"],
                vec![
                    row("tcp-syn", t.tcp_syn, d.tcp_syn),
                    row("tcp-established", t.tcp_established, d.tcp_established),
                    row("tcp-closing", t.tcp_closing, d.tcp_closing),
                    row("udp", t.udp, d.udp),
                    row("other", t.other, d.other),
                ],
            )?
        }
    }
    Ok(())
}

/// `ct timeouts`: show the lifetimes, or change the ones given.
pub fn timeouts(common: &Common, args: &TimeoutArgs) -> CmdResult {
    if args.is_empty() {
        let maps = open_maps_for_reading(common)?;
        let current = maps
            .config
            .ct_timeouts()
            .map_err(|e| Failure::failed("read the connection lifetimes", e))?;
        let mut out = Out::new(common);
        print_timeouts(&mut out, current)?;
        out.flush()?;
        return Ok(());
    }
    let new = std::cell::Cell::new(CtTimeouts::DEFAULT);
    crate::change(
        common,
        |maps| {
            let current = maps
                .config
                .ct_timeouts()
                .map_err(|e| Failure::failed("read the connection lifetimes", e))?;
            new.set(args.apply(current));
            maps.config
                .set_ct_timeouts(new.get())
                .map_err(|e| Failure::failed("set the connection lifetimes", e))?;
            Ok(vec![if new.get() == current {
                "connection lifetimes unchanged".to_owned()
            } else {
                "connection lifetimes set (connections take them as they are next refreshed)".to_owned()
            }])
        },
        |_, out| {
            if !common.quiet || out.format() == Format::Json {
                print_timeouts(out, new.get())?;
            }
            Ok(())
        },
    )
}
