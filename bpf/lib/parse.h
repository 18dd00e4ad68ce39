/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parse.h: a frame into a flow tuple (addresses, protocol, L4 ports and TCP
 * flags, ICMP type and echo identifier, which part of a datagram it is).
 * Precedence steps 1 and 2 of ebpfcni.h. Also reads the packet an ICMP
 * error quotes (for ct.h).
 *
 * API:  ebpfcni_parse(ctx, flow)
 *   Returns: 0 for a well-formed IPv4 packet, EBPFCNI_NOT_IPV4 for any other
 *   frame (step 1), or -EBPFCNI_DROP_MALFORMED (step 2).
 */
#ifndef EBPFCNI_LIB_PARSE_H
#define EBPFCNI_LIB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ebpfcni.h"
#include "flow.h"

/* ICMP types the program reads (RFC 792; linux/icmp.h drags in libc). */
#define EBPFCNI_ICMP_ECHOREPLY 0
#define EBPFCNI_ICMP_DEST_UNREACH 3
#define EBPFCNI_ICMP_ECHO 8
#define EBPFCNI_ICMP_TIME_EXCEEDED 11

/* ebpfcni_parse() result for frames that are not IPv4 (step 1). */
#define EBPFCNI_NOT_IPV4 1

/* The IPv4 header's fragment field (network order on the wire). */
#define EBPFCNI_IP_MF 0x2000     /* more fragments */
#define EBPFCNI_IP_OFFSET 0x1fff /* the fragment's offset, in 8 bytes */

/* The part of a TCP or UDP header the program reads: the ports, and for
 * TCP the flags byte (offset 13). */
struct ebpfcni_l4_head {
	__be16 sport;
	__be16 dport;
	__u8 unused[9];
	__u8 tcp_flags;
};

/* Reads the start of the L4 header at `off` into `head`: directly when it
 * is in the linear part (always so for veth traffic), else by copying.
 * Returns: 0, or < 0 when the packet is too short to hold it. */
static __always_inline int ebpfcni_load_l4(struct __sk_buff *ctx, __u32 off, struct ebpfcni_l4_head *head,
					   __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (len > sizeof(*head))
		return -1;
	if (data + off + sizeof(*head) <= data_end) {
		__builtin_memcpy(head, data + off, sizeof(*head));
		return 0;
	}
	return bpf_skb_load_bytes(ctx, off, head, len);
}

/* Fills in the protocol, and the ports and TCP flags of a TCP or UDP packet
 * that carries its header, or the type (and echo identifier) of an ICMP
 * message. A later fragment, or a packet cut short in its L4 header, has no
 * ports: it is judged by addresses only. */
static __always_inline void ebpfcni_parse_l4(struct __sk_buff *ctx, const struct iphdr *ip, __u32 l4_off,
					     struct ebpfcni_flow *flow)
{
	struct ebpfcni_l4_head head;
	__u32 need;

	flow->protocol = ip->protocol;
	/* The one test a packet that is not a fragment pays (frag.h). */
	if (ip->frag_off & bpf_htons(EBPFCNI_IP_MF | EBPFCNI_IP_OFFSET)) {
		flow->ip_id = ip->id;
		if (ip->frag_off & bpf_htons(EBPFCNI_IP_OFFSET)) {
			flow->fragment = EBPFCNI_FRAG_LATER; /* no L4 header */
			return;
		}
		flow->fragment = EBPFCNI_FRAG_FIRST;
	}
	if (ip->protocol == IPPROTO_TCP)
		need = 14;
	else if (ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_SCTP)
		need = 4; /* SCTP's common header starts with the ports, as UDP's does */
	else if (ip->protocol == IPPROTO_ICMP)
		need = 6; /* type, code, checksum, identifier */
	else
		return;
	if (ebpfcni_load_l4(ctx, l4_off, &head, need))
		return;
	if (ip->protocol == IPPROTO_ICMP) {
		/* Type and code, checksum, then an echo's identifier. */
		flow->icmp_type = ((__u8 *)&head)[0];
		flow->is_echo = flow->icmp_type == EBPFCNI_ICMP_ECHO || flow->icmp_type == EBPFCNI_ICMP_ECHOREPLY;
		__builtin_memcpy(&flow->echo_id, head.unused, sizeof(flow->echo_id));
		return;
	}
	flow->sport = head.sport;
	flow->dport = head.dport;
	flow->has_ports = 1;
	if (ip->protocol == IPPROTO_TCP)
		flow->tcp_flags = head.tcp_flags;
}

/* The packet an ICMP error quotes: its addresses, protocol and ports. */
struct ebpfcni_quoted {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 protocol;
};

/* Reads the IPv4 header and the first 8 bytes of L4 an ICMP error quotes
 * (RFC 792), after the 8 bytes of the ICMP header at `l4_off`.
 * Returns: 0, or < 0 when the packet is too short to hold them. */
static __always_inline int ebpfcni_parse_quoted(struct __sk_buff *ctx, __u32 l4_off, struct ebpfcni_quoted *q)
{
	struct iphdr inner;
	__be16 ports[2];

	if (bpf_skb_load_bytes(ctx, l4_off + 8, &inner, sizeof(inner)))
		return -1;
	if (inner.version != 4 || inner.ihl < 5)
		return -1;
	if (bpf_skb_load_bytes(ctx, l4_off + 8 + inner.ihl * 4, ports, sizeof(ports)))
		return -1;
	q->saddr = inner.saddr;
	q->daddr = inner.daddr;
	q->protocol = inner.protocol;
	if (inner.protocol == IPPROTO_TCP || inner.protocol == IPPROTO_UDP || inner.protocol == IPPROTO_SCTP) {
		q->sport = ports[0];
		q->dport = ports[1];
	} else if (inner.protocol == IPPROTO_ICMP) {
		/* A quoted echo: its identifier (at both ends of the key, as
		 * ct.h keys echoes) follows type, code and checksum. */
		__u8 type = ((__u8 *)ports)[0];

		if (type == EBPFCNI_ICMP_ECHO || type == EBPFCNI_ICMP_ECHOREPLY) {
			if (bpf_skb_load_bytes(ctx, l4_off + 8 + inner.ihl * 4 + 4, &ports[1], sizeof(ports[1])))
				return -1;
			q->sport = q->dport = ports[1];
		}
	}
	return 0;
}

static __always_inline int ebpfcni_parse(struct __sk_buff *ctx, struct ebpfcni_flow *flow)
{
	const __u32 l3_off = sizeof(struct ethhdr);
	const __u32 need = l3_off + sizeof(struct iphdr);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if (data + sizeof(*eth) > data_end)
		return -EBPFCNI_DROP_MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return EBPFCNI_NOT_IPV4;

	if (data + need > data_end) {
		/* The header may lie beyond the linear part: pull it in once.
		 * Never taken for ordinary veth traffic. */
		if (ctx->len < need || bpf_skb_pull_data(ctx, need))
			return -EBPFCNI_DROP_MALFORMED;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (data + need > data_end)
			return -EBPFCNI_DROP_MALFORMED;
	}

	ip = data + l3_off;
	if (ip->version != 4 || ip->ihl < 5)
		return -EBPFCNI_DROP_MALFORMED;
	/* Options need not be linear; the packet must merely hold them. */
	if (ctx->len < l3_off + ip->ihl * 4)
		return -EBPFCNI_DROP_MALFORMED;

	flow->saddr = ip->saddr;
	flow->daddr = ip->daddr;
	ebpfcni_parse_l4(ctx, ip, l3_off + ip->ihl * 4, flow);
	return 0;
}

/* Where the L4 header of an IPv4 packet (parsed by ebpfcni_parse) starts. */
static __always_inline __u32 ebpfcni_l4_offset(struct __sk_buff *ctx)
{
	__u8 vihl;

	if (bpf_skb_load_bytes(ctx, sizeof(struct ethhdr), &vihl, 1))
		return 0;
	return sizeof(struct ethhdr) + (vihl & 0x0f) * 4;
}

#endif /* EBPFCNI_LIB_PARSE_H */
