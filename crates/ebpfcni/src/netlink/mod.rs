//! A small synchronous rtnetlink client with typed verbs: the socket and
//! its request/reply loop here, the verbs by object in [`link`],
//! [`route`] (routes and addresses) and [`neighbour`] (managed entries).
//!
//! A [`Netlink`] socket belongs to the network namespace it was opened in
//! and keeps acting on it whichever thread later uses it: the CNI plugin
//! opens one in its own (host) namespace and one inside the container's
//! and drives both from its main thread.

mod link;
mod neighbour;
mod route;

use std::io;
use std::os::fd::RawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

pub use link::Link;
pub use route::Route;

/// What a netlink request failed with: the kernel's errno, or a reply we
/// could not decode.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("undecodable netlink reply: {0}")]
    Decode(String),
}

impl NlError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Io(e) => e.raw_os_error(),
            NlError::Decode(_) => None,
        }
    }

    fn is(&self, errno: i32) -> bool {
        self.errno() == Some(errno)
    }
}

pub type NlResult<T> = Result<T, NlError>;

pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 128 * 1024;

impl Netlink {
    /// Opens a route netlink socket in the calling thread's network namespace.
    pub fn open() -> NlResult<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends one request and collects the replies up to the ACK (or DONE for
    /// a dump); a NACK becomes the kernel's errno.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> NlResult<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0)?;
            let mut offset = 0;
            while offset < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n])
                    .map_err(|e| NlError::Decode(e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(NlError::Decode("zero-length message".into()));
                }
                offset += (len + 3) & !3;
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get()).into()),
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// The id this namespace gives to the namespace open as `netns_fd`
    /// (None when it has none).
    pub fn nsid_of(&mut self, netns_fd: RawFd) -> NlResult<Option<i32>> {
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(netns_fd as u32));
        let replies = self.request(RouteNetlinkMessage::GetNsId(msg), 0)?;
        Ok(replies
            .into_iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewNsId(m) => m.attributes.into_iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(id),
                    _ => None,
                }),
                _ => None,
            })
            .filter(|id| *id >= 0))
    }
}
