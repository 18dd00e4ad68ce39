// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ebpfcni.bpf.c: identity-based policy for pod traffic.
 *
 * Two entry points share one body: ebpfcni_frompod runs on tc ingress of
 * every pod's host-side veth (what the pod sends), ebpfcni_topod on its tc
 * egress (what the pod receives); each knows its hook by construction. The
 * body checks that a pod sends from its own address (from-pod only), lets the
 * replies of tracked connections (and the later fragments of a datagram
 * whose first fragment passed) through, maps both addresses of an
 * IPv4 packet to security identities and lets the packet through only when
 * a rule allows the identity pair (for its protocol and port). From-pod
 * delivers what it passes to a pod of the node straight into that pod
 * (deliver.h), so that such a packet is judged once. The steps and their
 * order are the numbered "Policy precedence" list in ebpfcni.h; code cites
 * them. The concerns live in bpf/lib/, one header each.
 *
 * A third entry point, ebpfcni_fabric, runs on tc ingress of the node's
 * fabric interface in cluster mode: it only checks that a packet whose
 * source address has an identity comes from the node that holds it
 * (fabric.h, precedence step F); the receiving pod's to-pod hook judges it.
 *
 * Maps are pinned by the userspace library (not by this object) so that the
 * pin directory can be chosen at run time; they outlive this program.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "flow.h"
#include "config.h"
#include "parse.h"
#include "trust.h"
#include "frag.h"
#include "ct.h"
#include "identity.h"
#include "policy.h"
#include "labels.h"
#include "deliver.h"
#include "fabric.h"
#include "verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keeps the shared types in the object's BTF, from which the Rust types are
 * generated: clang emits BTF only for types reachable from a global. Never
 * read; a few bytes of .rodata. */
const volatile enum ebpfcni_drop_reason ebpfcni_btf_drop_reason;
const volatile enum ebpfcni_hook ebpfcni_btf_hook;
const volatile enum ebpfcni_capacity ebpfcni_btf_capacity;
const volatile enum ebpfcni_notify ebpfcni_btf_notify;
const volatile struct ebpfcni_notify_state ebpfcni_btf_notify_state;
const volatile enum ebpfcni_ct_timeout ebpfcni_btf_ct_timeout;
const volatile struct ebpfcni_event ebpfcni_btf_event;
const volatile enum ebpfcni_default ebpfcni_btf_default;
const volatile enum ebpfcni_label_flags ebpfcni_btf_label_flags;
const volatile enum ebpfcni_label_policy_flags ebpfcni_btf_label_policy_flags;
const volatile enum ebpfcni_label_decision ebpfcni_btf_label_decision;

/* Step 4b, for a flow whose connection is tracked: a reply (or an ICMP
 * error about it) passes; the opener's packets go on to policy, with the
 * entry to refresh. Returns: the verdict for a reply, -1 to go on. */
static __always_inline int ebpfcni_conntrack(struct __sk_buff *ctx, struct ebpfcni_flow *flow,
					     struct ebpfcni_ct_key *key, bool *sender_is_b,
					     struct ebpfcni_ct_entry **forward, __u64 now)
{
	struct ebpfcni_ct_entry *entry;

	if (ebpfcni_ct_related(ctx, flow, now))
		return ebpfcni_pass(ctx, EBPFCNI_PASS_RELATED, flow);
	*sender_is_b = ebpfcni_ct_key_of(flow, key);
	entry = ebpfcni_ct_find(key, now);
	if (!entry)
		return -1;
	if (!ebpfcni_ct_is_reply(entry, *sender_is_b)) {
		*forward = entry;
		return -1;
	}
	/* A reply must be one: the responder cannot open a connection of its
	 * own under the opener's entry, by pinging back or by a bare SYN
	 * (every answer to a SYN carries ACK). */
	if (flow->protocol == IPPROTO_ICMP && flow->icmp_type != EBPFCNI_ICMP_ECHOREPLY)
		return -1;
	if (flow->protocol == IPPROTO_TCP && (flow->tcp_flags & (EBPFCNI_TCP_SYN | EBPFCNI_TCP_ACK)) == EBPFCNI_TCP_SYN)
		return -1;
	if (!ebpfcni_explaining(ctx))
		ebpfcni_ct_track(entry, flow, true, now);
	flow->src_id = entry->responder_id; /* for the event: no lookup needed */
	flow->dst_id = entry->opener_id;
	return ebpfcni_pass(ctx, EBPFCNI_PASS_REPLY, flow);
}

/* The verdict on one packet seen at `hook` (a constant: each entry point
 * gets its own copy of this body, without the branches of the other).
 * `flow` (its hook set) is the caller's: a pass leaves its kind there
 * (verdict.h), 0 for a frame that is not IPv4. From-pod, while some
 * network delivers locally, also gets the destination's local delivery
 * record in `local` (NULL otherwise): its identity, when it carries one,
 * spares step 6's lookup, and the record is what delivery needs. */
static __always_inline int ebpfcni_judge(struct __sk_buff *ctx, const enum ebpfcni_hook hook,
					 struct ebpfcni_flow *flow, const struct ebpfcni_local **local)
{
	struct ebpfcni_ct_key key = {};
	struct ebpfcni_ct_entry *forward = NULL;
	const struct ebpfcni_config *cfg = ebpfcni_config();
	bool tracking = cfg->conntrack, sender_is_b = false;
	__u32 policy_gen = 0;
	__u64 now = 0;
	__u8 action;
	int ret;

	ret = ebpfcni_parse(ctx, flow);
	if (ret == EBPFCNI_NOT_IPV4)
		return TC_ACT_OK; /* step 1 */
	if (ret < 0)
		return ebpfcni_drop(ctx, -ret, flow); /* step 2 */

	if (hook == EBPFCNI_HOOK_FROM_POD) {
		ret = ebpfcni_source_trusted(ctx, flow);
		if (ret < 0)
			return ebpfcni_drop(ctx, -ret, flow); /* step 3 */
		if (cfg->local_redirect) {
			*local = ebpfcni_local_of(flow->daddr);
			if (*local)
				flow->dst_id = (*local)->identity; /* 0: step 6 looks it up */
		}
	}

	if (ebpfcni_frag_find(flow))
		return ebpfcni_pass(ctx, flow->pass_kind, flow); /* step 4a */

	if (tracking) {
		now = bpf_ktime_get_coarse_ns();
		/* Read before any policy lookup: a verdict is stamped with the
		 * generation whose maps it may have seen. */
		policy_gen = cfg->policy_gen;
		ret = ebpfcni_conntrack(ctx, flow, &key, &sender_is_b, &forward, now);
		if (ret >= 0)
			return ret; /* step 4b */
	}

	if (forward) {
		/* The connection's identities: its entry goes when either changes. */
		flow->src_id = forward->opener_id;
		flow->dst_id = forward->responder_id;
		if (policy_gen && forward->policy_gen == policy_gen) {
			/* Policy passed this connection and nothing it decides
			 * with has changed since: steps 5-9 would say the same. */
			if (!ebpfcni_explaining(ctx))
				ebpfcni_ct_track(forward, flow, false, now);
			return ebpfcni_pass(ctx, EBPFCNI_PASS_TRACKED, flow); /* step 4b */
		}
	} else {
		ret = ebpfcni_lookup_identities(flow);
		if (ret < 0)
			return ebpfcni_drop(ctx, -ret, flow); /* steps 5, 6 */
	}

	action = ebpfcni_policy_of(flow); /* steps 7, 8 */
	if (!action && cfg->label_policy) {
		ret = ebpfcni_label_policy(flow, cfg); /* step 8b */
		if (ret < 0)
			return ebpfcni_policy_drop(ctx, -ret, flow);
		action = ret;
	}
	if (action == EBPFCNI_POLICY_ALLOW_STATEFUL && tracking) {
		/* An explaining test run tracks nothing (verdict.h). */
		bool explaining = ebpfcni_explaining(ctx);

		if (forward) {
			if (!explaining) {
				ebpfcni_ct_track(forward, flow, false, now);
				forward->policy_gen = policy_gen;
			}
			return ebpfcni_pass(ctx, EBPFCNI_PASS_TRACKED, flow);
		}
		ret = explaining ? 0 : ebpfcni_ct_open(flow, &key, sender_is_b, now, policy_gen);
		if (ret < 0)
			return ebpfcni_drop(ctx, -ret, flow); /* step 9 */
		return ebpfcni_pass(ctx, EBPFCNI_PASS_NEW_FLOW, flow);
	}
	if (action)
		return ebpfcni_pass(ctx, EBPFCNI_PASS_POLICY, flow); /* step 9 */

	/* Step 10. Only drops pay for the second lookup, and only while tracking. */
	if (tracking && ebpfcni_policy_of_reverse(flow) == EBPFCNI_POLICY_ALLOW_STATEFUL)
		return ebpfcni_policy_drop(ctx, EBPFCNI_DROP_NO_FLOW, flow);
	return ebpfcni_policy_drop(ctx, EBPFCNI_DROP_NO_POLICY, flow);
}

/* What the pod sends: tc ingress of its host veth. A first fragment's
 * pass is recorded for the rest of its datagram (frag.h); a pass to a pod
 * of the node is delivered into it (deliver.h) while some network
 * delivers locally. */
SEC("tc")
int ebpfcni_frompod(struct __sk_buff *ctx)
{
	struct ebpfcni_flow flow = { .hook = EBPFCNI_HOOK_FROM_POD };
	const struct ebpfcni_local *local = NULL;
	int verdict = ebpfcni_judge(ctx, EBPFCNI_HOOK_FROM_POD, &flow, &local);

	if (!flow.pass_kind)
		return verdict; /* a drop, or a frame that is not IPv4 */
	ebpfcni_frag_passed(&flow);
	if (!local)
		return verdict; /* not to a pod of this node, or none delivers locally */
	return ebpfcni_deliver(ctx, local);
}

/* What the pod receives: tc egress of its host veth. A first fragment's
 * pass is recorded for the rest of its datagram (frag.h). */
SEC("tc")
int ebpfcni_topod(struct __sk_buff *ctx)
{
	struct ebpfcni_flow flow = { .hook = EBPFCNI_HOOK_TO_POD };
	const struct ebpfcni_local *unused = NULL;
	int verdict = ebpfcni_judge(ctx, EBPFCNI_HOOK_TO_POD, &flow, &unused);

	ebpfcni_frag_passed(&flow);
	return verdict;
}

/* What other nodes send: tc ingress of the node's fabric interface (the
 * agent attaches it in cluster mode). Step F alone: a packet whose source
 * address has an exact identity must route back to the interface and MAC
 * it came from (fabric.h); everything else passes untouched, to be judged
 * by to-pod where it is delivered. */
SEC("tc")
int ebpfcni_fabric(struct __sk_buff *ctx)
{
	struct ebpfcni_flow flow = { .hook = EBPFCNI_HOOK_FROM_FABRIC };
	struct ethhdr *eth;
	__u32 key, *id;
	int ret;

	if (ebpfcni_parse(ctx, &flow))
		return TC_ACT_OK; /* not IPv4, or malformed: the stack's (and step 2's) */
	key = bpf_ntohl(flow.saddr); /* endpoint_map keys are host order */
	id = bpf_map_lookup_elem(&endpoint_map, &key);
	if (!id || !*id)
		return TC_ACT_OK; /* no identity: nothing to borrow */
	/* ebpfcni_parse made the Ethernet and IPv4 headers linear. */
	eth = (void *)(long)ctx->data;
	if ((void *)(eth + 1) > (void *)(long)ctx->data_end)
		return TC_ACT_OK; /* never taken */
	ret = ebpfcni_from_its_node(ctx, &flow, eth->h_source);
	if (!ret)
		return TC_ACT_OK;
	flow.src_id = *id;
	return ebpfcni_drop(ctx, -ret, &flow);
}
