/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flow.h: what the program learns about one packet, filled in step by step
 * (parse.h, identity.h, policy.h, ct.h, frag.h) and read by every later step and by
 * the verdict (verdict.h).
 */
#ifndef EBPFCNI_LIB_FLOW_H
#define EBPFCNI_LIB_FLOW_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/types.h>

#include "ebpfcni.h"

struct ebpfcni_flow {
	__be32 saddr; /* as on the wire */
	__be32 daddr;
	__be16 sport; /* 0 when the packet carries no ports (see has_ports) */
	__be16 dport;
	__u8 protocol;  /* IPPROTO_* */
	__u8 has_ports; /* TCP or UDP, not a later fragment, header present */
	__u8 tcp_flags; /* the TCP header's flags byte, else 0 */
	__u8 hook;      /* enum ebpfcni_hook */
	__u8 icmp_type; /* ICMP: the type, else 0 */
	__u8 is_echo;   /* ICMP echo request or reply, with its identifier in echo_id */
	__be16 echo_id;
	__u32 src_id;   /* 0 until looked up (identity.h; from-pod: trust.h) */
	__u32 dst_id;
	__u32 ifindex;
	/* Set by the step that let the packet through, for its event. */
	enum ebpfcni_pass_kind pass_kind;
	enum ebpfcni_ct_state ct_state;
	__u8 ct_changed;
	__u8 fragment;  /* enum ebpfcni_fragment */
	__be16 ip_id;   /* a fragment's IP ID (else 0) */
	__u8 port_rule; /* a port rule (step 8), not a pair rule, allowed it */
	__u8 label;     /* enum ebpfcni_label_decision: what label policy (8b) said */
	__u8 explained; /* an explaining test run's verdict is in cb[] (the marker is gone) */
	/* The agent's policy numbers of the label rules that decided (8b). */
	__u32 egress_policy;
	__u32 ingress_policy;
};

/* Which part of a datagram a packet is (its IPv4 header's fragment field). */
enum ebpfcni_fragment {
	EBPFCNI_FRAG_NONE = 0,  /* the whole datagram */
	EBPFCNI_FRAG_FIRST = 1, /* offset 0, more fragments: it carries the L4 header */
	EBPFCNI_FRAG_LATER = 2, /* offset != 0: no L4 header */
};

/* Whether this is an explaining test run (policyctl explain): the caller
 * put EBPFCNI_EXPLAIN_MAGIC0/1 in cb[0], cb[1]. Read only where a verdict
 * is given (verdict.h) or a state would be written (ct, frag): a load and
 * a compare there. */
static __always_inline bool ebpfcni_explaining(const struct __sk_buff *ctx)
{
	return ctx->cb[0] == EBPFCNI_EXPLAIN_MAGIC0 && ctx->cb[1] == EBPFCNI_EXPLAIN_MAGIC1;
}
/* After the verdict, the marker is replaced by it: flow->explained says. */

#endif /* EBPFCNI_LIB_FLOW_H */
