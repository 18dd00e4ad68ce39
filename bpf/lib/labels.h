/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * labels.h: label policy (precedence 8b of ebpfcni.h), the node agent's
 * NetworkPolicy and CiliumNetworkPolicy compiled per direction: the
 * sender's egress and the receiver's ingress, each judged by the rules of
 * its own identity, so that entries grow with rules times the identities
 * they select, never with identities squared (an identity selected by no
 * policy has its MANAGED flag and no rule at all).
 *
 * Maps: label_isolation_map (hash)  identity -> enum ebpfcni_label_flags
 *       label_exact_map (hash)      struct ebpfcni_label_exact_key -> struct ebpfcni_label_rule
 *                                   (rules of one port, or of everything)
 *       label_rule_map (LPM trie)   struct ebpfcni_label_key -> struct ebpfcni_label_rule
 *                                   (port ranges, whole protocols)
 * API:  ebpfcni_label_policy(flow, cfg)
 *   Returns: EBPFCNI_POLICY_ALLOW_STATEFUL when label policy allows the
 *   flow (flow->label and the policy numbers say which rules did), 0 when it has no say (neither identity under it: the caller's
 *   step 10), or a negative drop reason (policy-denied, policy-isolated,
 *   no-policy for a pair with one identity outside label policy).
 */
#ifndef EBPFCNI_LIB_LABELS_H
#define EBPFCNI_LIB_LABELS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "config.h"
#include "flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EBPFCNI_LABEL_ISOLATION_MAP_CAPACITY);
	__type(key, __u32);
	__type(value, __u32);
} label_isolation_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EBPFCNI_LABEL_EXACT_MAP_CAPACITY);
	__type(key, struct ebpfcni_label_exact_key);
	__type(value, struct ebpfcni_label_rule);
} label_exact_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, EBPFCNI_LABEL_RULE_MAP_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct ebpfcni_label_key);
	__type(value, struct ebpfcni_label_rule);
} label_rule_map SEC(".maps");

/* The rule of `subject` of `kind` for `peer`, or for every peer
 * (EBPFCNI_LABEL_ANY_PEER), that covers the flow's protocol and destination
 * port (0 for packets without ports); NULL when none does. Most specific
 * first: the one port, then every protocol and port, each for the peer
 * then for every peer (hash lookups), then ranges and whole protocols (the
 * trie). `shapes` (config label_policy) skips the lookups no rule on the
 * node can answer: a rule of the commonest shape costs one lookup. */
static __always_inline const struct ebpfcni_label_rule *
ebpfcni_label_rule(__u32 subject, __u32 peer, enum ebpfcni_label_kind kind, const struct ebpfcni_flow *flow,
		   __u32 shapes)
{
	__be16 dport = flow->has_ports ? flow->dport : 0;
	struct ebpfcni_label_exact_key exact = {
		.subject = subject,
		.peer = peer,
		.kind = kind,
		.protocol = flow->protocol,
		.dport = dport,
	};
	const struct ebpfcni_label_rule *rule = bpf_map_lookup_elem(&label_exact_map, &exact);

	if (rule)
		return rule;
	if (shapes & EBPFCNI_LABEL_HAS_PEER_ALL) {
		exact.protocol = 0;
		exact.dport = 0;
		rule = bpf_map_lookup_elem(&label_exact_map, &exact);
		if (rule)
			return rule;
	}
	exact.peer = EBPFCNI_LABEL_ANY_PEER;
	if (shapes & EBPFCNI_LABEL_HAS_ANY_PORT) {
		exact.protocol = flow->protocol;
		exact.dport = dport;
		rule = bpf_map_lookup_elem(&label_exact_map, &exact);
		if (rule)
			return rule;
	}
	if (shapes & EBPFCNI_LABEL_HAS_ANY_ALL) {
		exact.protocol = 0;
		exact.dport = 0;
		rule = bpf_map_lookup_elem(&label_exact_map, &exact);
		if (rule)
			return rule;
	}
	if (!(shapes & EBPFCNI_LABEL_HAS_WIDE))
		return NULL;

	struct ebpfcni_label_key key = {
		.prefixlen = EBPFCNI_LABEL_PREFIX_ONE_PORT,
		.subject = subject,
		.peer = peer,
		.kind = kind,
		.protocol = flow->protocol,
		.dport = dport,
	};

	rule = bpf_map_lookup_elem(&label_rule_map, &key);
	if (rule)
		return rule;
	key.peer = EBPFCNI_LABEL_ANY_PEER;
	return bpf_map_lookup_elem(&label_rule_map, &key);
}

/* Also notes in the flow what decided (flow->label, and the policy
 * numbers of the rules: for events and explain). */
static __always_inline int ebpfcni_label_policy(struct ebpfcni_flow *flow, const struct ebpfcni_config *cfg)
{
	__u32 *src = bpf_map_lookup_elem(&label_isolation_map, &flow->src_id);
	__u32 *dst = bpf_map_lookup_elem(&label_isolation_map, &flow->dst_id);
	const struct ebpfcni_label_rule *rule;

	/* Tested one at a time: the verifier refuses pointer arithmetic that
	 * `!src && !dst` compiles to. */
	if (!src)
		return dst ? -EBPFCNI_DROP_NO_POLICY : 0; /* neither: no say; one: 7, 8 said no */
	if (!dst)
		return -EBPFCNI_DROP_NO_POLICY;
	__u32 shapes = cfg->label_policy;

	flow->label = EBPFCNI_DECIDED_LABELS;
	if (cfg->label_deny) {
		rule = ebpfcni_label_rule(flow->src_id, flow->dst_id, EBPFCNI_LABEL_EGRESS_DENY, flow, shapes);
		if (rule) {
			flow->egress_policy = rule->policy;
			flow->label |= EBPFCNI_DECIDED_EGRESS_RULE;
			return -EBPFCNI_DROP_POLICY_DENIED; /* step 8b a */
		}
		rule = ebpfcni_label_rule(flow->dst_id, flow->src_id, EBPFCNI_LABEL_INGRESS_DENY, flow, shapes);
		if (rule) {
			flow->ingress_policy = rule->policy;
			flow->label |= EBPFCNI_DECIDED_INGRESS_RULE;
			return -EBPFCNI_DROP_POLICY_DENIED; /* step 8b a */
		}
	}
	if (*src & EBPFCNI_LABEL_ISOLATED_EGRESS) {
		rule = ebpfcni_label_rule(flow->src_id, flow->dst_id, EBPFCNI_LABEL_EGRESS_ALLOW, flow, shapes);
		if (!rule) {
			flow->label |= EBPFCNI_DECIDED_EGRESS_ISOLATED;
			return -EBPFCNI_DROP_ISOLATED; /* step 8b b, the sender's egress */
		}
		flow->egress_policy = rule->policy;
		flow->label |= EBPFCNI_DECIDED_EGRESS_RULE;
	}
	if (*dst & EBPFCNI_LABEL_ISOLATED_INGRESS) {
		rule = ebpfcni_label_rule(flow->dst_id, flow->src_id, EBPFCNI_LABEL_INGRESS_ALLOW, flow, shapes);
		if (!rule) {
			flow->label |= EBPFCNI_DECIDED_INGRESS_ISOLATED;
			return -EBPFCNI_DROP_ISOLATED; /* step 8b b, the receiver's ingress */
		}
		flow->ingress_policy = rule->policy;
		flow->label |= EBPFCNI_DECIDED_INGRESS_RULE;
	}
	return EBPFCNI_POLICY_ALLOW_STATEFUL;
}

#endif /* EBPFCNI_LIB_LABELS_H */
