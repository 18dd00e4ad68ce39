/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * verdict.h: how every packet ends. Each drop is counted per reason (exact,
 * per CPU), reported as an event and traced when the levels ask for it
 * (notify.h); a pass is reported at level "all", and a new or changed
 * tracked connection at level "flows". A pass sets flow->pass_kind, which
 * the from-pod entry point reads (frag.h, deliver.h).
 *
 * Map:  drop_counters (per-CPU array)  enum ebpfcni_drop_reason -> packets
 * API:  ebpfcni_drop(ctx, reason, flow)         Returns: TC_ACT_SHOT
 *       ebpfcni_policy_drop(ctx, reason, flow)  Returns: TC_ACT_SHOT, TC_ACT_OK in audit mode
 *       ebpfcni_pass(ctx, kind, flow)           Returns: TC_ACT_OK
 *       ebpfcni_explaining(ctx)                 an explaining test run: no state written
 */
#ifndef EBPFCNI_LIB_VERDICT_H
#define EBPFCNI_LIB_VERDICT_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "config.h"
#include "flow.h"
#include "notify.h"

/* Drops per reason, per CPU, and from EBPFCNI_AUDIT_SLOT on what audit
 * mode let pass per reason: touched only on the drop path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EBPFCNI_DROP_COUNTER_SLOTS);
	__type(key, __u32); /* enum ebpfcni_drop_reason: array keys must be ints */
	__type(value, struct ebpfcni_drop_count);
} drop_counters SEC(".maps");

/* The names of the drop reasons, indexed by value, from the one list in
 * ebpfcni.h. In .rodata so that traces print them and the Rust library
 * reads them from the same object (never written; const volatile keeps
 * them, and their type, in the object). */
const volatile char ebpfcni_drop_reason_names[EBPFCNI_DROP_REASON_MAX][EBPFCNI_NAME_LEN] = {
#define EBPFCNI_DROP_NAME(name, value, text, doc) [value] = text,
	EBPFCNI_DROP_REASONS(EBPFCNI_DROP_NAME)
#undef EBPFCNI_DROP_NAME
};

static __always_inline const volatile char *ebpfcni_drop_reason_name(enum ebpfcni_drop_reason reason)
{
	if (reason >= EBPFCNI_DROP_REASON_MAX)
		return "unknown-reason";
	return ebpfcni_drop_reason_names[reason];
}

/* An explaining test run's verdict, into cb[] (ebpfcni.h says how). */
static __always_inline void ebpfcni_explained(struct __sk_buff *ctx, enum ebpfcni_verdict verdict, __u8 reason,
					      struct ebpfcni_flow *flow)
{
	flow->explained = 1;
	ctx->cb[0] = verdict | (__u32)reason << 8 | (__u32)flow->pass_kind << 16 | (__u32)flow->label << 24;
	ctx->cb[1] = flow->src_id;
	ctx->cb[2] = flow->dst_id;
	ctx->cb[3] = flow->egress_policy;
	ctx->cb[4] = flow->ingress_policy;
}

/* Every drop goes through here: count it, report and trace it when asked
 * to. Returns: TC_ACT_SHOT. */
static __always_inline int ebpfcni_drop(struct __sk_buff *ctx, enum ebpfcni_drop_reason reason,
					struct ebpfcni_flow *flow)
{
	const struct ebpfcni_config *cfg = ebpfcni_config();
	__u32 key = reason;
	struct ebpfcni_drop_count *count;

	if (ebpfcni_explaining(ctx)) {
		ebpfcni_explained(ctx, EBPFCNI_VERDICT_DROP, reason, flow);
		return TC_ACT_SHOT;
	}
	count = bpf_map_lookup_elem(&drop_counters, &key);
	if (count)
		count->packets++; /* per-CPU slot: no atomics needed */
	if (cfg->event_level >= EBPFCNI_EVENTS_DROPS)
		ebpfcni_event(ctx, flow, EBPFCNI_VERDICT_DROP, reason);
	if (cfg->trace_level >= EBPFCNI_TRACE_DROPS)
		ebpfcni_trace(ctx, "DROP", ebpfcni_drop_reason_name(reason), flow);
	return TC_ACT_SHOT;
}

/* A drop by policy (steps 8b, 10): in audit mode the packet passes
 * instead, counted in its reason's audit slot, reported (as a drop would
 * be) as an audit event and traced as AUDIT. Audit costs the drop path
 * alone. Returns: TC_ACT_SHOT, or TC_ACT_OK in audit mode (pass kind
 * EBPFCNI_PASS_AUDIT: from-pod delivers it as any pass). */
static __always_inline int ebpfcni_policy_drop(struct __sk_buff *ctx, enum ebpfcni_drop_reason reason,
					       struct ebpfcni_flow *flow)
{
	const struct ebpfcni_config *cfg = ebpfcni_config();
	__u32 key = reason + EBPFCNI_AUDIT_SLOT;
	struct ebpfcni_drop_count *count;

	if (!cfg->audit)
		return ebpfcni_drop(ctx, reason, flow);
	flow->pass_kind = EBPFCNI_PASS_AUDIT;
	if (ebpfcni_explaining(ctx)) {
		ebpfcni_explained(ctx, EBPFCNI_VERDICT_AUDIT, reason, flow);
		return TC_ACT_OK;
	}
	count = bpf_map_lookup_elem(&drop_counters, &key);
	if (count)
		count->packets++;
	if (cfg->event_level >= EBPFCNI_EVENTS_DROPS)
		ebpfcni_event(ctx, flow, EBPFCNI_VERDICT_AUDIT, reason);
	if (cfg->trace_level >= EBPFCNI_TRACE_DROPS)
		ebpfcni_trace(ctx, "AUDIT", ebpfcni_drop_reason_name(reason), flow);
	return TC_ACT_OK;
}

/* Every pass goes through here: reported at event level "all", or at
 * "flows" when it opened or changed a tracked connection; traced at trace
 * level "all". Returns: TC_ACT_OK. */
static __always_inline int ebpfcni_pass(struct __sk_buff *ctx, enum ebpfcni_pass_kind kind,
					struct ebpfcni_flow *flow)
{
	const struct ebpfcni_config *cfg = ebpfcni_config();

	flow->pass_kind = kind;
	if (ebpfcni_explaining(ctx)) {
		ebpfcni_explained(ctx, EBPFCNI_VERDICT_PASS, 0, flow);
		return TC_ACT_OK;
	}
	if (cfg->event_level >= EBPFCNI_EVENTS_ALL ||
	    (cfg->event_level >= EBPFCNI_EVENTS_FLOWS && flow->ct_changed))
		ebpfcni_event(ctx, flow, EBPFCNI_VERDICT_PASS, 0);
	if (cfg->trace_level >= EBPFCNI_TRACE_ALL)
		ebpfcni_trace(ctx, "PASS", "allowed", flow);
	return TC_ACT_OK;
}

#endif /* EBPFCNI_LIB_VERDICT_H */
