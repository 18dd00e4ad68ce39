/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * verdict.h: how every packet ends. Each drop is counted per reason (exact,
 * per CPU), reported as an event and traced when the levels ask for it
 * (notify.h); a pass is reported at level "all", and a new or changed
 * tracked connection at level "flows". A pass sets flow->pass_kind, which
 * the from-pod entry point reads (frag.h, deliver.h).
 *
 * Map:  drop_counters (per-CPU array)  enum ebpfcni_drop_reason -> packets
 * API:  ebpfcni_drop(ctx, reason, flow)  Returns: TC_ACT_SHOT
 *       ebpfcni_pass(ctx, kind, flow)    Returns: TC_ACT_OK
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

/* Drops per reason, per CPU: touched only on the drop path. */
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

/* Every drop goes through here: count it, report and trace it when asked
 * to. Returns: TC_ACT_SHOT. */
static __always_inline int ebpfcni_drop(struct __sk_buff *ctx, enum ebpfcni_drop_reason reason,
					const struct ebpfcni_flow *flow)
{
	const struct ebpfcni_config *cfg = ebpfcni_config();
	__u32 key = reason;
	struct ebpfcni_drop_count *count = bpf_map_lookup_elem(&drop_counters, &key);

	if (count)
		count->packets++; /* per-CPU slot: no atomics needed */
	if (cfg->event_level >= EBPFCNI_EVENTS_DROPS)
		ebpfcni_event(ctx, flow, EBPFCNI_VERDICT_DROP, reason);
	if (cfg->trace_level >= EBPFCNI_TRACE_DROPS)
		ebpfcni_trace(ctx, "DROP", ebpfcni_drop_reason_name(reason), flow);
	return TC_ACT_SHOT;
}

/* Every pass goes through here: reported at event level "all", or at
 * "flows" when it opened or changed a tracked connection; traced at trace
 * level "all". Returns: TC_ACT_OK. */
static __always_inline int ebpfcni_pass(struct __sk_buff *ctx, enum ebpfcni_pass_kind kind,
					struct ebpfcni_flow *flow)
{
	const struct ebpfcni_config *cfg = ebpfcni_config();

	flow->pass_kind = kind;
	if (cfg->event_level >= EBPFCNI_EVENTS_ALL ||
	    (cfg->event_level >= EBPFCNI_EVENTS_FLOWS && flow->ct_changed))
		ebpfcni_event(ctx, flow, EBPFCNI_VERDICT_PASS, 0);
	if (cfg->trace_level >= EBPFCNI_TRACE_ALL)
		ebpfcni_trace(ctx, "PASS", "allowed", flow);
	return TC_ACT_OK;
}

#endif /* EBPFCNI_LIB_VERDICT_H */
