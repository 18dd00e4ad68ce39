/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * identity.h: the security identities of a packet's two addresses: the
 * exact endpoint first, the longest CIDR prefix only when there is none.
 * Precedence steps 5 and 6 of ebpfcni.h.
 *
 * Maps: endpoint_map (hash)      IPv4 address, host byte order -> identity
 *       prefix_map (LPM trie)    struct ebpfcni_prefix_key -> identity
 * API:  ebpfcni_lookup_identities(flow)
 *   Fills flow->src_id (unless source trust already took it from the
 *   pod's interface record) and flow->dst_id (unless from-pod took it from
 *   the destination's local delivery record).
 *   Returns: 0, or -EBPFCNI_DROP_UNKNOWN_SRC / -EBPFCNI_DROP_UNKNOWN_DST.
 */
#ifndef EBPFCNI_LIB_IDENTITY_H
#define EBPFCNI_LIB_IDENTITY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ebpfcni.h"
#include "flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EBPFCNI_ENDPOINT_MAP_CAPACITY);
	__type(key, __u32);
	__type(value, __u32);
} endpoint_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, EBPFCNI_PREFIX_MAP_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct ebpfcni_prefix_key);
	__type(value, __u32);
} prefix_map SEC(".maps");

/* The identity of `addr` (network order), 0 when it has none. The trie is
 * only walked when the address is not an endpoint, so an endpoint's lookup
 * costs what it did before prefixes existed. Identity 0 is never written by
 * the tools: such an entry counts as absent. */
static __always_inline __u32 ebpfcni_identity_of(__be32 addr)
{
	__u32 key = bpf_ntohl(addr); /* endpoint_map keys are host order */
	__u32 *id = bpf_map_lookup_elem(&endpoint_map, &key);

	if (id && *id)
		return *id;
	struct ebpfcni_prefix_key prefix = { .prefixlen = 32, .addr = addr };
	id = bpf_map_lookup_elem(&prefix_map, &prefix);
	return id ? *id : 0;
}

static __always_inline int ebpfcni_lookup_identities(struct ebpfcni_flow *flow)
{
	if (!flow->src_id)
		flow->src_id = ebpfcni_identity_of(flow->saddr);
	if (!flow->src_id)
		return -EBPFCNI_DROP_UNKNOWN_SRC; /* step 5 */
	if (!flow->dst_id)
		flow->dst_id = ebpfcni_identity_of(flow->daddr);
	if (!flow->dst_id)
		return -EBPFCNI_DROP_UNKNOWN_DST; /* step 6 */
	return 0;
}

#endif /* EBPFCNI_LIB_IDENTITY_H */
