//! Links: looking them up, creating veth pairs, keeping IPv6 addresses off
//! them, bringing them up, deleting.

use std::os::fd::RawFd;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{Netlink, NlError, NlResult};

/// The link attribute holding the alias (linux/if_link.h).
const IFLA_IFALIAS: u16 = 20;

/// A link as the kernel reports it.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
    /// IFLA_INFO_KIND, e.g. "veth".
    pub kind: Option<String>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in `link_netnsid`'s namespace).
    pub peer_index: Option<u32>,
    /// IFLA_LINK_NETNSID: id, in the querying namespace, of the peer's namespace.
    pub link_netnsid: Option<i32>,
    pub alias: Option<String>,
}

impl Link {
    /// The MAC as "aa:bb:cc:dd:ee:ff".
    pub fn mac_string(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl Netlink {
    fn get_link(&mut self, msg: LinkMessage) -> NlResult<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(parse_link(m)),
                _ => None,
            })),
            Err(e) if e.is(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link called `name`, if any.
    pub fn link_by_name(&mut self, name: &str) -> NlResult<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg)
    }

    /// The link with ifindex `index`, if any.
    pub fn link_by_index(&mut self, index: u32) -> NlResult<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg)
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> NlResult<Vec<Link>> {
        let replies = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(parse_link(m)),
                _ => None,
            })
            .collect())
    }

    /// Creates a veth pair: `name` here, `peer` in the namespace `peer_netns`
    /// (an open namespace file), both with `mtu` when given. Returns the
    /// ifindex of `name`, so that the creator can later delete exactly the
    /// link it made, whatever bears the name by then.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: RawFd,
        mtu: Option<u32>,
    ) -> NlResult<u32> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        let replies = self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
        )?;
        // Linux 6.3+ echoes the new link; before, look it up straight away.
        let echoed = replies.into_iter().find_map(|r| match r {
            RouteNetlinkMessage::NewLink(m) => Some(m.header.index),
            _ => None,
        });
        match echoed {
            Some(index) => Ok(index),
            None => self
                .link_by_name(name)?
                .map(|l| l.index)
                .ok_or_else(|| NlError::Io(std::io::Error::from_raw_os_error(nix::libc::ENODEV))),
        }
    }

    /// Brings link `index` up, setting its alias when given.
    pub fn set_up(&mut self, index: u32, alias: Option<&str>) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(alias) = alias {
            // Without the NUL that LinkAttribute::IfAlias appends (as
            // iproute2 sends it): the kernel counts a NUL against the
            // alias's IFALIASZ - 1 = 255 bytes (ERANGE at 255).
            msg.attributes.push(LinkAttribute::Other(DefaultNla::new(
                IFLA_IFALIAS,
                alias.as_bytes().to_vec(),
            )));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0)?;
        Ok(())
    }

    /// Stops the kernel from giving link `index` IPv6 addresses of its own
    /// (addr_gen_mode none: not even a link-local one when it comes up).
    /// Must come before the link is first up. Without IPv6 in the kernel
    /// or on the link there is nothing to stop.
    pub fn set_no_ipv6_addresses(&mut self, index: u32) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
                AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
            ])]));
        match self.request(RouteNetlinkMessage::SetLink(msg), 0) {
            Err(e) if e.is(nix::libc::EAFNOSUPPORT) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Deletes link `index`; returns false when it was already gone.
    pub fn delete_link(&mut self, index: u32) -> NlResult<bool> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is(nix::libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn parse_link(m: LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(mac) => link.mac = mac,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Link(peer) => link.peer_index = Some(peer),
            LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(id),
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}
