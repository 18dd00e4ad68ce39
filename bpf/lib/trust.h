/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * trust.h: a pod sends only from its own addresses. Precedence step 3 of
 * ebpfcni.h, on the from-pod hook only, before any identity lookup: an
 * identity is only as good as the binding between an address and the pod
 * that holds it.
 *
 * Map:  interface_map (hash)  host veth ifindex -> struct ebpfcni_interface
 *       (written by the CNI plugin at ADD, removed at DEL)
 * API:  ebpfcni_source_trusted(ctx, flow)
 *   Returns: 0, or -EBPFCNI_DROP_UNKNOWN_INTERFACE (3a: no record, fail
 *   closed) or -EBPFCNI_DROP_INVALID_SOURCE (3b). On 0, flow->src_id is the
 *   identity the record carries (0 when it carries none: step 5 looks it
 *   up), which saves step 5 a lookup for the agent's pods.
 */
#ifndef EBPFCNI_LIB_TRUST_H
#define EBPFCNI_LIB_TRUST_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EBPFCNI_INTERFACE_MAP_CAPACITY);
	__type(key, __u32);
	__type(value, struct ebpfcni_interface);
} interface_map SEC(".maps");

static __always_inline int ebpfcni_source_trusted(const struct __sk_buff *ctx, struct ebpfcni_flow *flow)
{
	__u32 ifindex = ctx->ifindex;
	const struct ebpfcni_interface *iface = bpf_map_lookup_elem(&interface_map, &ifindex);

	if (!iface)
		return -EBPFCNI_DROP_UNKNOWN_INTERFACE; /* step 3a */
	/* 0.0.0.0 is never a pod's address, so empty slots match nothing a
	 * pod may send from (0.0.0.0 itself included). */
#pragma unroll
	for (int i = 0; i < EBPFCNI_INTERFACE_ADDRS; i++)
		if (iface->addrs[i] && iface->addrs[i] == flow->saddr) {
			flow->src_id = iface->identity;
			return 0;
		}
	return -EBPFCNI_DROP_INVALID_SOURCE; /* step 3b */
}

#endif /* EBPFCNI_LIB_TRUST_H */
