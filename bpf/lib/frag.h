/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * frag.h: the later fragments of a datagram pass as its first did.
 * Precedence step 4a of ebpfcni.h, as Cilium does it. Only the first
 * fragment (offset 0, MF set) carries the L4 header, so only it can match
 * a port rule or a tracked connection. When it passes by one of those, its
 * verdict and identities are recorded under (source, destination,
 * protocol, IP ID); a later fragment (offset != 0) of the same datagram
 * passes with them while the record lives (EBPFCNI_FRAG_LIFETIME seconds;
 * an expired record counts as absent). A packet that is not a fragment
 * pays one test of its fragment field, in parse.h, and one of
 * flow->fragment in each of the two calls below.
 *
 * Map:  frag_map (LRU hash)  struct ebpfcni_frag_key -> struct ebpfcni_frag_entry
 * API:  ebpfcni_frag_find(flow)       a later fragment whose datagram's first fragment passed:
 *                                     fills in its identities and pass kind; false for any other
 *       ebpfcni_frag_passed(flow)     after a verdict: a first fragment that passed by a port
 *                                     rule or as a reply records it
 */
#ifndef EBPFCNI_LIB_FRAG_H
#define EBPFCNI_LIB_FRAG_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, EBPFCNI_FRAG_MAP_CAPACITY);
	__type(key, struct ebpfcni_frag_key);
	__type(value, struct ebpfcni_frag_entry);
} frag_map SEC(".maps");

static __always_inline void ebpfcni_frag_key_of(const struct ebpfcni_flow *flow, struct ebpfcni_frag_key *key)
{
	key->saddr = flow->saddr;
	key->daddr = flow->daddr;
	key->id = flow->ip_id;
	key->protocol = flow->protocol;
}

static __always_inline bool ebpfcni_frag_find(struct ebpfcni_flow *flow)
{
	struct ebpfcni_frag_key key = {};
	const struct ebpfcni_frag_entry *entry;

	if (flow->fragment != EBPFCNI_FRAG_LATER)
		return false;
	ebpfcni_frag_key_of(flow, &key);
	entry = bpf_map_lookup_elem(&frag_map, &key);
	if (!entry || entry->expires_ns <= bpf_ktime_get_coarse_ns())
		return false;
	flow->src_id = entry->src_id;
	flow->dst_id = entry->dst_id;
	/* The connection the first fragment opened is tracked by now. */
	flow->pass_kind = entry->pass_kind == EBPFCNI_PASS_NEW_FLOW ? EBPFCNI_PASS_TRACKED : entry->pass_kind;
	return true;
}

static __always_inline void ebpfcni_frag_passed(const struct ebpfcni_flow *flow)
{
	struct ebpfcni_frag_key key = {};

	if (flow->fragment != EBPFCNI_FRAG_FIRST)
		return;
	/* An explaining test run records nothing (its verdict is given). */
	if (flow->explained)
		return;
	/* Passed (a pass sets its kind), by what a later fragment cannot
	 * match by itself: a port rule, or as a reply. (A pair rule matches
	 * it by itself. At to-pod, a reply from-pod has just passed and
	 * recorded is recorded again, the same.) */
	if (!flow->pass_kind || (!flow->port_rule && flow->pass_kind != EBPFCNI_PASS_REPLY))
		return;
	ebpfcni_frag_key_of(flow, &key);
	struct ebpfcni_frag_entry entry = {
		.expires_ns = bpf_ktime_get_coarse_ns() + EBPFCNI_FRAG_LIFETIME * 1000000000ULL,
		.src_id = flow->src_id,
		.dst_id = flow->dst_id,
		.pass_kind = flow->pass_kind,
	};
	/* Full: the LRU makes room. A failure leaves the later fragments to
	 * be judged by themselves (step 4a's fallback). */
	bpf_map_update_elem(&frag_map, &key, &entry, BPF_ANY);
}

#endif /* EBPFCNI_LIB_FRAG_H */
