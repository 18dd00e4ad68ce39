/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * policy.h: which rule, if any, lets a flow's identity pair talk.
 * Precedence steps 7 and 8 of ebpfcni.h: the pair rule first (any protocol
 * and port), then the longest port rule (one port, a range, the protocol).
 *
 * Maps: policy_map (hash)           struct policy_key -> enum ebpfcni_policy_action
 *       port_policy_map (LPM trie)  struct ebpfcni_port_key -> struct ebpfcni_port_rule
 * API:  ebpfcni_policy_action(src_id, dst_id, protocol, dport)
 *       ebpfcni_policy_of(flow)   (and flow->port_rule: step 8 allowed it)
 *   Returns: EBPFCNI_POLICY_ALLOW or EBPFCNI_POLICY_ALLOW_STATEFUL for the
 *   rule that allows, 0 when none does (step 10 is the caller's drop).
 */
#ifndef EBPFCNI_LIB_POLICY_H
#define EBPFCNI_LIB_POLICY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "config.h"
#include "flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EBPFCNI_POLICY_MAP_CAPACITY);
	__type(key, struct policy_key);
	__type(value, enum ebpfcni_policy_action);
} policy_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, EBPFCNI_PORT_POLICY_MAP_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct ebpfcni_port_key);
	__type(value, struct ebpfcni_port_rule);
} port_policy_map SEC(".maps");

/* An action the tools write; anything else allows nothing. */
static __always_inline __u8 ebpfcni_valid_action(__u8 action)
{
	return action == EBPFCNI_POLICY_ALLOW || action == EBPFCNI_POLICY_ALLOW_STATEFUL ? action : 0;
}

/* Step 7: the pair rule's action, 0 when there is none. */
static __always_inline __u8 ebpfcni_pair_action(__u32 src_id, __u32 dst_id)
{
	struct policy_key pair = { .src_id = src_id, .dst_id = dst_id };
	__u8 *action = bpf_map_lookup_elem(&policy_map, &pair);

	return action ? ebpfcni_valid_action(*action) : 0;
}

/* Step 8: the longest port rule's action, 0 when there is none. `dport`
 * is 0 for a packet without ports: only a whole-protocol rule can match
 * it, as no port rule covers port 0. */
static __always_inline __u8 ebpfcni_port_action(__u32 src_id, __u32 dst_id, __u8 protocol, __be16 dport)
{
	if (!ebpfcni_config()->port_rules)
		return 0;

	struct ebpfcni_port_key key = {
		.prefixlen = EBPFCNI_PORT_PREFIX_ONE_PORT,
		.src_id = src_id,
		.dst_id = dst_id,
		.protocol = protocol,
		.dport = dport,
	};
	struct ebpfcni_port_rule *rule = bpf_map_lookup_elem(&port_policy_map, &key);

	return rule ? ebpfcni_valid_action(rule->action) : 0;
}

static __always_inline __u8 ebpfcni_policy_action(__u32 src_id, __u32 dst_id, __u8 protocol, __be16 dport)
{
	return ebpfcni_pair_action(src_id, dst_id) ?: ebpfcni_port_action(src_id, dst_id, protocol, dport);
}

/* Also notes in the flow whether a port rule (not the pair rule) allowed
 * it (for frag.h). */
static __always_inline __u8 ebpfcni_policy_of(struct ebpfcni_flow *flow)
{
	__u8 action = ebpfcni_pair_action(flow->src_id, flow->dst_id);

	if (action)
		return action; /* step 7 */
	action = ebpfcni_port_action(flow->src_id, flow->dst_id, flow->protocol, flow->has_ports ? flow->dport : 0);
	flow->port_rule = action != 0;
	return action; /* step 8 */
}

/* The rule the reverse direction would have (a reply's view: the packet's
 * source port is the connection's destination port). */
static __always_inline __u8 ebpfcni_policy_of_reverse(const struct ebpfcni_flow *flow)
{
	return ebpfcni_policy_action(flow->dst_id, flow->src_id, flow->protocol,
				     flow->has_ports ? flow->sport : 0);
}

#endif /* EBPFCNI_LIB_POLICY_H */
