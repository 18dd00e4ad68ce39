/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * policy.h: whether the identity pair of a flow may talk. Precedence step 6
 * of ebpfcni.h (step 7, default deny, is the caller's drop).
 *
 * Map:  policy_map (hash)  struct policy_key -> enum ebpfcni_policy_action
 * API:  ebpfcni_policy_allows(flow)
 *   Returns: true when policy_map allows the flow's identity pair.
 */
#ifndef EBPFCNI_LIB_POLICY_H
#define EBPFCNI_LIB_POLICY_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EBPFCNI_POLICY_MAP_CAPACITY);
	__type(key, struct policy_key);
	__type(value, enum ebpfcni_policy_action);
} policy_map SEC(".maps");

static __always_inline bool ebpfcni_policy_allows(const struct ebpfcni_flow *flow)
{
	struct policy_key key = { .src_id = flow->src_id, .dst_id = flow->dst_id };
	enum ebpfcni_policy_action *action = bpf_map_lookup_elem(&policy_map, &key);

	return action && *action == EBPFCNI_POLICY_ALLOW; /* step 6 */
}

#endif /* EBPFCNI_LIB_POLICY_H */
