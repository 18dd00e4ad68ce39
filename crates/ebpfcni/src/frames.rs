//! Frames for BPF_PROG_TEST_RUN (`policyctl explain` crafts its packet
//! here; the tests and benches build theirs) and raw sockets: Ethernet,
//! IPv4 (with options), TCP, UDP, SCTP, ICMP, ARP. Checksums are left zero
//! unless said otherwise: the program does not read them.

use std::net::Ipv4Addr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_LLDP: u16 = 0x88cc;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// TCP flags.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// ICMP types.
pub const ICMP_ECHOREPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// An Ethernet header (locally administered MACs) with EtherType `proto`.
pub fn eth(proto: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    f.extend_from_slice(&proto.to_be_bytes());
    f
}

/// An IPv4 header of `ihl` words (options filled with NOPs) carrying
/// `protocol`, with fragment field `frag`, followed by `payload` zero bytes.
pub fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ihl: u8,
    frag: u16,
    protocol: u8,
    payload: usize,
) -> Vec<u8> {
    let hdr_len = usize::from(ihl.max(5)) * 4;
    let total = (hdr_len + payload) as u16;
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1]); // id
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, protocol, 0, 0]); // ttl, protocol, checksum
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.resize(hdr_len, 1); // options: NOP
    h.resize(hdr_len + payload, 0);
    h
}

/// Ethernet + a 20-byte IPv4 header (ICMP) + 8 bytes of payload.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(ETH_P_IP);
    f.extend(ipv4_header(src, dst, 5, 0, IPPROTO_ICMP, 8));
    f
}

/// A 64-byte Ethernet + IPv4 + UDP frame from `sport` to `dport`.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth(ETH_P_IP);
    let payload = 64 - 14 - 20;
    f.extend(ipv4_header(src, dst, 5, 0, IPPROTO_UDP, payload));
    let udp = &mut f[14 + 20..];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    f
}

/// The IPv4 header's fragment field: more fragments follow.
pub const MF: u16 = 0x2000;

/// The first fragment (offset 0, [`MF`] set) of a UDP datagram with IP ID
/// `ip_id` from `sport` to `dport`: it carries the UDP header.
pub fn udp_first_fragment(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, ip_id: u16) -> Vec<u8> {
    let mut f = ipv4_udp(src, dst, sport, dport);
    f[14 + 4..14 + 6].copy_from_slice(&ip_id.to_be_bytes());
    f[14 + 6..14 + 8].copy_from_slice(&MF.to_be_bytes());
    f
}

/// A later fragment of a datagram of `protocol` with IP ID `ip_id`, at
/// `offset` (in 8-byte units, not 0), with [`MF`] when `more`: data only,
/// no L4 header.
pub fn later_fragment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ip_id: u16,
    offset: u16,
    more: bool,
) -> Vec<u8> {
    assert!(offset != 0 && offset <= 0x1fff, "a later fragment's offset");
    let frag = offset | if more { MF } else { 0 };
    let mut f = eth(ETH_P_IP);
    f.extend(ipv4_header(src, dst, 5, frag, protocol, 32));
    f[14 + 4..14 + 6].copy_from_slice(&ip_id.to_be_bytes());
    f
}

/// Ethernet + IPv4 + a 20-byte TCP header from `sport` to `dport` with
/// `flags` (SYN, ACK, ...).
pub fn ipv4_tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = eth(ETH_P_IP);
    f.extend(ipv4_header(src, dst, 5, 0, IPPROTO_TCP, 20));
    let tcp = &mut f[14 + 20..];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4; // data offset
    tcp[13] = flags;
    f
}

/// Ethernet + IPv4 + an SCTP common header from `sport` to `dport` (its
/// ports where TCP's and UDP's are) and one empty chunk.
pub fn ipv4_sctp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth(ETH_P_IP);
    f.extend(ipv4_header(src, dst, 5, 0, IPPROTO_SCTP, 16));
    let sctp = &mut f[14 + 20..];
    sctp[0..2].copy_from_slice(&sport.to_be_bytes());
    sctp[2..4].copy_from_slice(&dport.to_be_bytes());
    f
}

/// Ethernet + IPv4 + an ICMP echo request ([`ICMP_ECHO`]) or reply
/// ([`ICMP_ECHOREPLY`]) with identifier `id`.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, icmp_type: u8, id: u16) -> Vec<u8> {
    let mut f = eth(ETH_P_IP);
    f.extend(ipv4_header(src, dst, 5, 0, IPPROTO_ICMP, 16));
    let icmp = &mut f[14 + 20..];
    icmp[0] = icmp_type;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&1u16.to_be_bytes()); // sequence
    f
}

/// Ethernet + IPv4 + an ICMP error of `icmp_type`/`code` from `src` to
/// `dst`, quoting the IPv4 header and first 8 bytes of `about` (a frame
/// from this module, Ethernet header included), as RFC 792 says.
pub fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, icmp_type: u8, code: u8, about: &[u8]) -> Vec<u8> {
    let quoted = &about[14..14 + 20 + 8];
    let mut f = eth(ETH_P_IP);
    f.extend(ipv4_header(src, dst, 5, 0, IPPROTO_ICMP, 8 + quoted.len()));
    let icmp = &mut f[14 + 20..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[8..].copy_from_slice(quoted);
    f
}

/// A 60-byte ARP request from `sender` for `target`.
pub fn arp(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    f
}

/// The IPv4 header checksum of `header` (its checksum field zero).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A complete Ethernet + IPv4 + UDP frame that a kernel accepts and routes:
/// correct IPv4 checksum, UDP checksum 0 (none, as IPv4 allows).
pub fn udp_datagram(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let mut ip = ipv4_header(src, dst, 5, 0x4000, IPPROTO_UDP, 8 + payload.len()); // DF
    let sum = ipv4_checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut ip[20..];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp[8..].copy_from_slice(payload);
    f.extend(ip);
    f
}

/// "aa:bb:cc:dd:ee:ff" as bytes.
pub fn parse_mac(mac: &str) -> [u8; 6] {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("MAC {mac:?}")))
        .collect();
    bytes.try_into().unwrap_or_else(|_| panic!("MAC {mac:?}"))
}

/// An ICMPv6 echo request frame (with its mandatory checksum) from `src`
/// to `dst`.
pub fn icmpv6_echo(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
) -> Vec<u8> {
    let icmp_len: u16 = 8;
    let mut icmp = vec![128, 0, 0, 0, 0x12, 0x34, 0, 1]; // echo request, id 0x1234, seq 1
                                                         // The checksum covers a pseudo-header: addresses, length, next header.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&u32::from(icmp_len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let sum = ipv4_checksum(&pseudo); // the same ones' complement sum
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&icmp_len.to_be_bytes());
    f.extend_from_slice(&[58, 255]); // next header ICMPv6, hop limit
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend(icmp);
    f
}
