/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * notify.h: telling userspace what happened to a packet: flow events into a
 * ring buffer (policyctl monitor) and trace lines (bpf_printk, trace_pipe),
 * each behind a per-CPU token bucket so that a flood costs little. What the
 * buckets or a full ring keep from being written is counted; the drop
 * counters (verdict.h) stay exact whatever happens here.
 *
 * Maps: event_ring (ring buffer)       struct ebpfcni_event records
 *       event_counters (per-CPU array) enum ebpfcni_counter -> __u64
 *       rate_limit (per-CPU array)     0 events, 1 trace lines -> struct ebpfcni_bucket
 * API:  ebpfcni_event(ctx, flow, verdict, reason)
 *       ebpfcni_trace(ctx, verdict, reason_name, flow)
 */
#ifndef EBPFCNI_LIB_NOTIFY_H
#define EBPFCNI_LIB_NOTIFY_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"
#include "config.h"
#include "flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EBPFCNI_EVENT_RING_BYTES);
} event_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EBPFCNI_COUNTERS);
	__type(key, __u32); /* enum ebpfcni_counter */
	__type(value, __u64);
} event_counters SEC(".maps");

#define EBPFCNI_BUCKET_EVENTS 0
#define EBPFCNI_BUCKET_TRACES 1

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct ebpfcni_bucket);
} rate_limit SEC(".maps");

#define EBPFCNI_TOKEN 1000000000ULL /* a bucket counts billionths of a token */

static __always_inline void ebpfcni_count(enum ebpfcni_counter counter)
{
	__u32 key = counter;
	__u64 *n = bpf_map_lookup_elem(&event_counters, &key);

	if (n)
		(*n)++; /* per-CPU slot: no atomics needed */
}

/* Takes a token from this CPU's bucket `which`. Returns: false when the
 * bucket is empty (the caller counts what it did not write). */
static __always_inline bool ebpfcni_take_token(__u32 which)
{
	const struct ebpfcni_config *cfg = ebpfcni_config();
	struct ebpfcni_bucket *b = bpf_map_lookup_elem(&rate_limit, &which);
	__u64 rate = cfg->notify_rate ?: EBPFCNI_NOTIFY_DEFAULT_RATE;
	__u64 burst = (cfg->notify_burst ?: rate) * EBPFCNI_TOKEN;
	__u64 now = bpf_ktime_get_coarse_ns();

	if (!b)
		return false;
	/* Refill for the time since the last take, up to the burst: once the
	 * time to fill an empty bucket has passed it is full (which also
	 * keeps the product below burst, in range). A fresh bucket (last_ns
	 * 0) is full. */
	__u64 elapsed = now - b->last_ns;

	if (!b->last_ns || elapsed >= burst / rate)
		b->tokens = burst;
	else if (b->tokens + elapsed * rate < burst)
		b->tokens += elapsed * rate;
	else
		b->tokens = burst;
	b->last_ns = now;
	if (b->tokens < EBPFCNI_TOKEN)
		return false;
	b->tokens -= EBPFCNI_TOKEN;
	return true;
}

/* Writes the flow's event (rate limited). */
static __always_inline void ebpfcni_event(struct __sk_buff *ctx, const struct ebpfcni_flow *flow,
					  enum ebpfcni_verdict verdict, __u8 reason)
{
	struct ebpfcni_event *e;

	if (!ebpfcni_take_token(EBPFCNI_BUCKET_EVENTS)) {
		ebpfcni_count(EBPFCNI_COUNT_EVENTS_SUPPRESSED);
		return;
	}
	e = bpf_ringbuf_reserve(&event_ring, sizeof(*e), 0);
	if (!e) {
		ebpfcni_count(EBPFCNI_COUNT_EVENTS_LOST);
		return;
	}
	e->time_ns = bpf_ktime_get_ns();
	e->ifindex = ctx->ifindex;
	e->src_id = flow->src_id;
	e->dst_id = flow->dst_id;
	e->saddr = flow->saddr;
	e->daddr = flow->daddr;
	e->sport = flow->has_ports ? flow->sport : flow->echo_id;
	e->dport = flow->has_ports ? flow->dport : flow->echo_id;
	e->protocol = flow->protocol;
	e->tcp_flags = flow->tcp_flags;
	e->verdict = verdict;
	e->reason = reason;
	e->hook = flow->hook;
	e->pass_kind = flow->pass_kind;
	e->ct_state = flow->ct_state;
	e->ct_changed = flow->ct_changed;
	bpf_ringbuf_submit(e, 0);
	ebpfcni_count(EBPFCNI_COUNT_EVENTS);
}

/* "ingress" is tc ingress of the host veth (what the pod sends), "egress"
 * tc egress (what it receives). */
static __always_inline const char *ebpfcni_hook_name(const struct ebpfcni_flow *flow)
{
	return flow->hook == EBPFCNI_HOOK_FROM_POD ? "ingress" : "egress";
}

/* Writes the flow's trace line (rate limited). */
static __always_inline void ebpfcni_trace(struct __sk_buff *ctx, const char *verdict, const volatile char *reason,
					  const struct ebpfcni_flow *flow)
{
	if (!ebpfcni_take_token(EBPFCNI_BUCKET_TRACES)) {
		ebpfcni_count(EBPFCNI_COUNT_TRACES_SUPPRESSED);
		return;
	}
	bpf_printk("ebpfcni: %s %s %pI4 -> %pI4 id %u -> %u ifindex %u %s", verdict, reason, &flow->saddr,
		   &flow->daddr, flow->src_id, flow->dst_id, ctx->ifindex, ebpfcni_hook_name(flow));
	ebpfcni_count(EBPFCNI_COUNT_TRACES);
}

#endif /* EBPFCNI_LIB_NOTIFY_H */
