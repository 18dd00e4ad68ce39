/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * deliver.h: a packet from-pod passed, to a pod of this node, goes straight
 * into that pod (as Cilium's eBPF host routing does), with what routing
 * would have done to it: TTL decremented, IPv4 checksum fixed, the
 * Ethernet addresses the receiving pod expects. The node's forwarding path
 * (routing, netfilter, neighbours) and the receiver's host veth egress, so
 * its to-pod hook, are skipped: the packet is judged once, by construction.
 * Everything else goes on through the node (TC_ACT_OK): no record, a record
 * of a "stack" network, a packet whose TTL would run out (the stack sends
 * the ICMP time exceeded), one to the sender's own veth.
 *
 * Map:  local_map (hash)  pod IPv4 address, network order -> struct ebpfcni_local
 *       (written by the CNI plugin at ADD, removed at DEL and GC; in agent
 *       mode carrying the pod's identity, ebpfcni.h says how)
 * API:  ebpfcni_local_of(daddr)         the destination's record, or NULL
 *       ebpfcni_deliver(ctx, local)     after a from-pod pass, with that record
 *   Returns: TC_ACT_REDIRECT (delivered into the pod) or TC_ACT_OK.
 */
#ifndef EBPFCNI_LIB_DELIVER_H
#define EBPFCNI_LIB_DELIVER_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ebpfcni.h"
#include "flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EBPFCNI_LOCAL_MAP_CAPACITY);
	__type(key, __be32);
	__type(value, struct ebpfcni_local);
} local_map SEC(".maps");

/* Looked up once per from-pod packet, before step 6 (its identity may
 * spare that lookup), and only while some network delivers locally. */
static __always_inline const struct ebpfcni_local *ebpfcni_local_of(__be32 daddr)
{
	return bpf_map_lookup_elem(&local_map, &daddr);
}

static __always_inline int ebpfcni_deliver(struct __sk_buff *ctx, const struct ebpfcni_local *local)
{
	const __u32 l3_off = sizeof(struct ethhdr);
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 ifindex;

	if (!local || !(local->flags & EBPFCNI_LOCAL_REDIRECT) || local->ifindex == ctx->ifindex)
		return TC_ACT_OK;
	ifindex = local->ifindex;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ip = data + l3_off;
	if ((void *)(ip + 1) > data_end)
		return TC_ACT_OK; /* parse.h pulled it in; never taken */
	if (ip->ttl <= 1)
		return TC_ACT_OK; /* the stack answers with time exceeded */
	/* The kernel's own ip_decrease_ttl(): the checksum moves by the TTL's
	 * step, with the end-around carry (RFC 1141). Exact, no helper call,
	 * and no failure path after the header is written (which
	 * bpf_l3_csum_replace would add). */
	__u32 check = ip->check;

	check += bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xFFFF));
	ip->ttl--;
	__builtin_memcpy(eth->h_dest, local->pod_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, local->host_mac, ETH_ALEN);
	return bpf_redirect_peer(ifindex, 0);
}

#endif /* EBPFCNI_LIB_DELIVER_H */
