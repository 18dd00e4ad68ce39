// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ebpfcni.bpf.c: identity-based policy for pod traffic.
 *
 * Two entry points share one body: ebpfcni_frompod runs on tc ingress of
 * every pod's host-side veth (what the pod sends), ebpfcni_topod on its tc
 * egress (what the pod receives); each knows its hook by construction. The
 * body checks that a pod sends from its own address (from-pod only), maps
 * both addresses of an IPv4 packet to security identities and lets the
 * packet through only when the identity pair is allowed. The steps and their
 * order are the numbered "Policy precedence" list in ebpfcni.h; code cites
 * them. The concerns live in bpf/lib/, one header each.
 *
 * Maps are pinned by the userspace library (not by this object) so that the
 * pin directory can be chosen at run time; they outlive this program.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "flow.h"
#include "parse.h"
#include "trust.h"
#include "identity.h"
#include "policy.h"
#include "verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keeps the shared enums in the object's BTF, from which the Rust types are
 * generated: clang emits BTF only for types reachable from a global. Never
 * read; a few bytes of .rodata. */
const volatile enum ebpfcni_drop_reason ebpfcni_btf_drop_reason;
const volatile enum ebpfcni_hook ebpfcni_btf_hook;
const volatile enum ebpfcni_capacity ebpfcni_btf_capacity;

/* The verdict on one packet seen at `hook` (a constant: each entry point
 * gets its own copy of this body, without the branches of the other). */
static __always_inline int ebpfcni_judge(struct __sk_buff *ctx, const enum ebpfcni_hook hook)
{
	struct ebpfcni_flow flow = { .hook = hook };
	int ret;

	ret = ebpfcni_parse(ctx, &flow);
	if (ret == EBPFCNI_NOT_IPV4)
		return TC_ACT_OK; /* step 1 */
	if (ret < 0)
		return ebpfcni_drop(ctx, -ret, &flow); /* step 2 */

	if (hook == EBPFCNI_HOOK_FROM_POD) {
		ret = ebpfcni_source_trusted(ctx, &flow);
		if (ret < 0)
			return ebpfcni_drop(ctx, -ret, &flow); /* step 3 */
	}

	ret = ebpfcni_lookup_identities(&flow);
	if (ret < 0)
		return ebpfcni_drop(ctx, -ret, &flow); /* steps 4, 5 */

	if (ebpfcni_policy_allows(&flow))
		return ebpfcni_pass(ctx, &flow); /* step 6 */
	return ebpfcni_drop(ctx, EBPFCNI_DROP_NO_POLICY, &flow); /* step 7 */
}

/* What the pod sends: tc ingress of its host veth. */
SEC("tc")
int ebpfcni_frompod(struct __sk_buff *ctx)
{
	return ebpfcni_judge(ctx, EBPFCNI_HOOK_FROM_POD);
}

/* What the pod receives: tc egress of its host veth. */
SEC("tc")
int ebpfcni_topod(struct __sk_buff *ctx)
{
	return ebpfcni_judge(ctx, EBPFCNI_HOOK_TO_POD);
}
