//! Frames for BPF_PROG_TEST_RUN and raw sockets: the builders are the
//! library's ([`ebpfcni::frames`], which `policyctl explain` uses too);
//! sending one out of an interface is the tests' own.

pub use ebpfcni::frames::*;

/// Sends one raw Ethernet frame out of `ifname` (in the calling thread's
/// namespace) through an AF_PACKET socket: how a pod with NET_RAW can put
/// any frame on its veth.
pub fn send_raw_frame(ifname: &str, frame: &[u8]) -> std::io::Result<()> {
    use nix::sys::socket::{
        sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike,
    };
    use std::os::fd::AsRawFd;

    let ifindex = nix::net::if_::if_nametoindex(ifname)?;
    let fd = socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: sockaddr_ll is a plain C struct; all-zero is valid.
    let mut ll: nix::libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    ll.sll_family = nix::libc::AF_PACKET as u16;
    ll.sll_ifindex = ifindex as i32;
    ll.sll_halen = 6;
    // SAFETY: ll is a valid, fully initialised sockaddr_ll of the given length.
    let addr = unsafe {
        LinkAddr::from_raw(
            (&ll as *const nix::libc::sockaddr_ll).cast(),
            Some(std::mem::size_of::<nix::libc::sockaddr_ll>() as u32),
        )
    }
    .ok_or_else(|| std::io::Error::other("sockaddr_ll"))?;
    let sent = sendto(fd.as_raw_fd(), frame, &addr, MsgFlags::empty())?;
    if sent != frame.len() {
        return Err(std::io::Error::other(format!(
            "sent {sent} of {} bytes",
            frame.len()
        )));
    }
    Ok(())
}
