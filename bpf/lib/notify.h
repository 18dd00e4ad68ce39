/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * notify.h: telling userspace what happened to a packet: flow events into a
 * ring buffer (policyctl monitor) and trace lines (bpf_printk, trace_pipe),
 * each behind a per-CPU token bucket so that a flood costs little. What the
 * buckets or a full ring keep from being written is counted; the drop
 * counters (verdict.h) stay exact whatever happens here.
 *
 * Maps: event_ring (ring buffer)      struct ebpfcni_event records
 *       notify_state (per-CPU array)  enum ebpfcni_notify -> struct ebpfcni_notify_state
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
	__uint(max_entries, EBPFCNI_NOTIFY_SLOTS);
	__type(key, __u32); /* enum ebpfcni_notify */
	__type(value, struct ebpfcni_notify_state);
} notify_state SEC(".maps");

#define EBPFCNI_TOKEN 1000000000ULL /* a bucket counts billionths of a token */

/* This CPU's state for events or trace lines, a token taken from its
 * bucket when there is one. Returns: the state to count in (NULL only if
 * the map cannot be read), and in *allowed whether to write. */
static __always_inline struct ebpfcni_notify_state *ebpfcni_take_token(__u32 which, bool *allowed)
{
	const struct ebpfcni_config *cfg = ebpfcni_config();
	struct ebpfcni_notify_state *s = bpf_map_lookup_elem(&notify_state, &which);
	__u64 rate = cfg->notify_rate ?: EBPFCNI_NOTIFY_DEFAULT_RATE;
	__u64 burst, now, elapsed;

	*allowed = false;
	if (!s)
		return NULL;
	if (rate > EBPFCNI_NOTIFY_MAX_RATE)
		rate = EBPFCNI_NOTIFY_MAX_RATE;
	burst = (cfg->notify_burst ?: rate) * EBPFCNI_TOKEN;
	now = bpf_ktime_get_coarse_ns();
	elapsed = now - s->last_ns;
	/* Refill for the time since the last take, up to the burst. A fresh
	 * bucket (last_ns 0), or one idle for 10 s, is full: beyond that the
	 * product could leave the range, and any bucket has refilled. */
	if (!s->last_ns || elapsed >= 10 * EBPFCNI_TOKEN || s->tokens + elapsed * rate >= burst)
		s->tokens = burst;
	else
		s->tokens += elapsed * rate;
	s->last_ns = now;
	if (s->tokens < EBPFCNI_TOKEN) {
		s->over_limit++; /* per-CPU slot: no atomics needed */
		return s;
	}
	s->tokens -= EBPFCNI_TOKEN;
	*allowed = true;
	return s;
}

/* Writes the flow's event (rate limited). */
static __always_inline void ebpfcni_event(struct __sk_buff *ctx, const struct ebpfcni_flow *flow,
					  enum ebpfcni_verdict verdict, __u8 reason)
{
	bool allowed;
	struct ebpfcni_notify_state *s = ebpfcni_take_token(EBPFCNI_NOTIFY_EVENTS, &allowed);

	if (!allowed)
		return;
	struct ebpfcni_event e = {
		.time_ns = s->last_ns, /* now, as the bucket just read it */
		.ifindex = ctx->ifindex,
		.src_id = flow->src_id,
		.dst_id = flow->dst_id,
		.saddr = flow->saddr,
		.daddr = flow->daddr,
		.sport = flow->has_ports ? flow->sport : flow->echo_id,
		.dport = flow->has_ports ? flow->dport : flow->echo_id,
		.protocol = flow->protocol,
		.tcp_flags = flow->tcp_flags,
		.verdict = verdict,
		.reason = reason,
		.hook = flow->hook,
		.pass_kind = flow->pass_kind,
		.ct_state = flow->ct_state,
		.ct_changed = flow->ct_changed,
		.egress_policy = flow->egress_policy,
		.ingress_policy = flow->ingress_policy,
		.label = flow->label,
	};
	/* One helper call: copy into the ring and commit. */
	if (bpf_ringbuf_output(&event_ring, &e, sizeof(e), 0))
		s->ring_full++;
	else
		s->written++;
}

/* "ingress" is tc ingress of the host veth (what the pod sends), "egress"
 * tc egress (what it receives), "fabric" tc ingress of the node's fabric
 * interface (what other nodes send). */
static __always_inline const char *ebpfcni_hook_name(const struct ebpfcni_flow *flow)
{
	if (flow->hook == EBPFCNI_HOOK_FROM_FABRIC)
		return "fabric";
	return flow->hook == EBPFCNI_HOOK_FROM_POD ? "ingress" : "egress";
}

/* Writes the flow's trace line (rate limited). */
static __always_inline void ebpfcni_trace(struct __sk_buff *ctx, const char *verdict, const volatile char *reason,
					  const struct ebpfcni_flow *flow)
{
	bool allowed;
	struct ebpfcni_notify_state *s = ebpfcni_take_token(EBPFCNI_NOTIFY_TRACES, &allowed);

	if (!allowed)
		return;
	bpf_printk("ebpfcni: %s %s %pI4 -> %pI4 id %u -> %u ifindex %u %s", verdict, reason, &flow->saddr,
		   &flow->daddr, flow->src_id, flow->dst_id, ctx->ifindex, ebpfcni_hook_name(flow));
	s->written++;
}

#endif /* EBPFCNI_LIB_NOTIFY_H */
