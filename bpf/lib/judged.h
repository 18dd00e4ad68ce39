/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * judged.h: a packet between two pods of the node is judged once. Its
 * from-pod hook (on the sender's host veth) judges it; forwarding then
 * takes it, on the same CPU and without letting any other packet in
 * between, to the receiver's host veth, where the to-pod hook would judge
 * the same addresses, protocol and ports against the same maps again, to
 * the same verdict. So from-pod leaves, per CPU, a note of the packet it
 * last judged when it passed it (and clears it when it dropped it), and
 * to-pod passes a packet that matches the note: same
 * addresses, protocol and ports, and received on (ingress_ifindex) the
 * interface whose from-pod hook wrote it. Anything else is judged as
 * always: the node's own packets (ingress_ifindex 0), packets from outside
 * the node, and packets the node rewrote on the way (a DNAT to a pod
 * changes the destination, so it is judged for the real one). Verdict
 * and identities come from the note, for the event.
 *
 * Map:  judged (per-CPU array, one slot, not pinned: it lives and goes
 *       with the program)  0 -> struct ebpfcni_judged
 * API:  ebpfcni_note_pass(ctx, flow)  on a from-pod pass
 *       ebpfcni_forget_pass()         on a from-pod drop
 *       ebpfcni_judged_at_from_pod(ctx, flow)
 *   Returns: whether from-pod has just passed this packet; then the
 *   flow's identities and pass kind are the ones it had there (a new flow
 *   there is a tracked one here: its connection was opened).
 */
#ifndef EBPFCNI_LIB_JUDGED_H
#define EBPFCNI_LIB_JUDGED_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "flow.h"

/* What from-pod last passed on this CPU. */
struct ebpfcni_judged {
	__u32 ifindex; /* the from-pod hook's interface; 0 before the first */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 src_id;
	__u32 dst_id;
	__u8 protocol;
	__u8 pass_kind;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ebpfcni_judged);
} judged SEC(".maps");

static __always_inline struct ebpfcni_judged *ebpfcni_judged_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&judged, &zero); /* inlined by the verifier */
}

static __always_inline void ebpfcni_note_pass(const struct __sk_buff *ctx, const struct ebpfcni_flow *flow)
{
	struct ebpfcni_judged *j = ebpfcni_judged_slot();

	if (!j)
		return;
	j->ifindex = ctx->ifindex;
	j->saddr = flow->saddr;
	j->daddr = flow->daddr;
	j->sport = flow->sport;
	j->dport = flow->dport;
	j->protocol = flow->protocol;
	j->src_id = flow->src_id;
	j->dst_id = flow->dst_id;
	j->pass_kind = flow->pass_kind;
}

/* A from-pod drop: the packet goes no further, and the note no longer
 * describes the last packet from-pod judged on this CPU. */
static __always_inline void ebpfcni_forget_pass(void)
{
	struct ebpfcni_judged *j = ebpfcni_judged_slot();

	if (j)
		j->ifindex = 0;
}

static __always_inline bool ebpfcni_judged_at_from_pod(const struct __sk_buff *ctx, struct ebpfcni_flow *flow)
{
	const struct ebpfcni_judged *j = ebpfcni_judged_slot();
	__u32 from = ctx->ingress_ifindex;

	if (!j || !from || j->ifindex != from || j->saddr != flow->saddr || j->daddr != flow->daddr ||
	    j->sport != flow->sport || j->dport != flow->dport || j->protocol != flow->protocol)
		return false;
	flow->src_id = j->src_id;
	flow->dst_id = j->dst_id;
	/* The connection from-pod opened is tracked by now. */
	flow->pass_kind = j->pass_kind == EBPFCNI_PASS_NEW_FLOW ? EBPFCNI_PASS_TRACKED : j->pass_kind;
	return true;
}

#endif /* EBPFCNI_LIB_JUDGED_H */
