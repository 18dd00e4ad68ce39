/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * fabric.h: a packet from another node carries a source address that is
 * that node's to send from. Precedence step F of ebpfcni.h, on the
 * from-fabric hook only (tc ingress of the node's fabric interface): the
 * identity of a remote pod's address is only as good as the binding
 * between the address and the node that holds it, as trust.h binds a local
 * pod's address to its host veth.
 *
 * The binding is the node's own routing: a strict reverse path at L2. The
 * agent routes each other node's pod CIDR via that node's node IP
 * (cluster.rs), so the route back to a genuine source leaves by the
 * interface the packet came in on, towards the MAC of the node that sent
 * it. A host on the fabric that forges another node's pod address sends
 * from its own MAC (dmac differs); one that forges a local pod's address is
 * routed to that pod's host veth (ifindex differs); a local address of the
 * node is not routed at all (NOT_FWDED).
 *
 * Maps: endpoint_map (identity.h): only addresses with an exact entry
 *       are checked, so the world's traffic pays one hash lookup.
 * API:  ebpfcni_from_its_node(ctx, flow, smac)
 *   Returns: 0, or -EBPFCNI_DROP_NOT_FROM_NODE.
 */
#ifndef EBPFCNI_LIB_FABRIC_H
#define EBPFCNI_LIB_FABRIC_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "flow.h"

#define EBPFCNI_AF_INET 2 /* <sys/socket.h> drags in libc */

/* Whether the route back to flow->saddr leaves by the interface the packet
 * arrived on (ctx->ifindex), towards `smac`, the packet's Ethernet source.
 * Any other answer of the lookup fails closed: no route, an unreachable or
 * local one, and no valid neighbour entry for the next hop (NO_NEIGH; the
 * agent keeps the other nodes' node IPs as managed entries, which the
 * kernel keeps resolved; a STALE entry is valid, and a sender has just
 * resolved this node's address, which leaves its entry here). */
static __always_inline int ebpfcni_from_its_node(struct __sk_buff *ctx, const struct ebpfcni_flow *flow,
						 const __u8 *smac)
{
	struct bpf_fib_lookup fib = {
		.family = EBPFCNI_AF_INET,
		/* A header's length, for the MTU check alone: never above it. */
		.tot_len = sizeof(struct iphdr),
		.ipv4_src = flow->daddr,
		.ipv4_dst = flow->saddr,
		/* As the input device: the lookup the node's stack makes for
		 * a packet to forward (iif rules, forwarding on). */
		.ifindex = ctx->ifindex,
	};
	long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);

	if (rc != BPF_FIB_LKUP_RET_SUCCESS || fib.ifindex != ctx->ifindex)
		return -EBPFCNI_DROP_NOT_FROM_NODE;
	/* Six bytes as three half-words (dmac sits at an offset of 58 in
	 * the struct: the stack allows no wider aligned load). */
	const __u16 *want = (const __u16 *)fib.dmac, *got = (const __u16 *)smac;

	if ((want[0] ^ got[0]) | (want[1] ^ got[1]) | (want[2] ^ got[2]))
		return -EBPFCNI_DROP_NOT_FROM_NODE;
	return 0;
}

#endif /* EBPFCNI_LIB_FABRIC_H */
