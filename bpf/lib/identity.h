/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * identity.h: the security identities of a packet's two addresses.
 * Precedence steps 3 and 4 of ebpfcni.h.
 *
 * Map:  endpoint_map (hash)  IPv4 address, host byte order -> identity
 * API:  ebpfcni_lookup_identities(flow)
 *   Fills flow->src_id and flow->dst_id.
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

/* The identity of `addr` (network order), 0 when it has none. Identity 0 is
 * never written by the tools: such an entry counts as absent. */
static __always_inline __u32 ebpfcni_identity_of(__be32 addr)
{
	__u32 key = bpf_ntohl(addr); /* endpoint_map keys are host order */
	__u32 *id = bpf_map_lookup_elem(&endpoint_map, &key);

	return id ? *id : 0;
}

static __always_inline int ebpfcni_lookup_identities(struct ebpfcni_flow *flow)
{
	flow->src_id = ebpfcni_identity_of(flow->saddr);
	if (!flow->src_id)
		return -EBPFCNI_DROP_UNKNOWN_SRC; /* step 3 */
	flow->dst_id = ebpfcni_identity_of(flow->daddr);
	if (!flow->dst_id)
		return -EBPFCNI_DROP_UNKNOWN_DST; /* step 4 */
	return 0;
}

#endif /* EBPFCNI_LIB_IDENTITY_H */
