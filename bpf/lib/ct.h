/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ct.h: connection tracking for stateful rules. Precedence steps 4b and 9 of
 * ebpfcni.h. One entry per connection, the same key for both directions
 * (the two ends ordered), so one lookup serves any packet. An entry whose
 * expiry has passed counts as absent: correctness never waits for a
 * cleaner. The table is an LRU hash: when it is full, the least recently
 * used connections make room.
 *
 * Map:  ct_map (LRU hash)  struct ebpfcni_ct_key -> struct ebpfcni_ct_entry
 * API:  ebpfcni_ct_key_of(flow, key)             the flow's key; true when the sender is the key's b end
 *       ebpfcni_ct_find(key, now)                the live entry, or NULL
 *       ebpfcni_ct_is_reply(entry, sender_is_b)  the packet goes from responder to opener
 *       ebpfcni_ct_track(entry, flow, reply, now) advances state and lifetime
 *       ebpfcni_ct_open(flow, key, sender_is_b, now, policy_gen)
 *         Returns: 0, or -EBPFCNI_DROP_CT_FULL when the entry cannot be made.
 *       ebpfcni_ct_related(ctx, flow, now)       an ICMP error about a live connection
 */
#ifndef EBPFCNI_LIB_CT_H
#define EBPFCNI_LIB_CT_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ebpfcni.h"
#include "config.h"
#include "flow.h"
#include "parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, EBPFCNI_CT_MAP_CAPACITY);
	__type(key, struct ebpfcni_ct_key);
	__type(value, struct ebpfcni_ct_entry);
} ct_map SEC(".maps");

#define EBPFCNI_NS_PER_SEC 1000000000ULL

/* TCP flags (the byte at offset 13 of the header). */
#define EBPFCNI_TCP_FIN 0x01
#define EBPFCNI_TCP_SYN 0x02
#define EBPFCNI_TCP_RST 0x04
#define EBPFCNI_TCP_ACK 0x10

/* An entry's lifetime in its state, from the settings (0: the default). */
static __always_inline __u64 ebpfcni_ct_lifetime(__u8 protocol, enum ebpfcni_ct_state state)
{
	const struct ebpfcni_config *cfg = ebpfcni_config();
	__u32 seconds;

	if (protocol == IPPROTO_TCP) {
		if (state == EBPFCNI_CT_ESTABLISHED)
			seconds = cfg->ct_timeout[EBPFCNI_CT_TIMEOUT_ESTABLISHED] ?: EBPFCNI_CT_DEFAULT_ESTABLISHED;
		else if (state == EBPFCNI_CT_CLOSING)
			seconds = cfg->ct_timeout[EBPFCNI_CT_TIMEOUT_CLOSING] ?: EBPFCNI_CT_DEFAULT_CLOSING;
		else
			seconds = cfg->ct_timeout[EBPFCNI_CT_TIMEOUT_SYN] ?: EBPFCNI_CT_DEFAULT_SYN;
	} else if (protocol == IPPROTO_UDP) {
		seconds = cfg->ct_timeout[EBPFCNI_CT_TIMEOUT_UDP] ?: EBPFCNI_CT_DEFAULT_UDP;
	} else {
		seconds = cfg->ct_timeout[EBPFCNI_CT_TIMEOUT_ICMP] ?: EBPFCNI_CT_DEFAULT_ICMP;
	}
	return seconds * EBPFCNI_NS_PER_SEC;
}

/* The key of a connection between (saddr, sport) and (daddr, dport), ends
 * ordered. Returns: true when the first end is the key's b end. */
static __always_inline bool ebpfcni_ct_key_from(__be32 saddr, __be16 sport, __be32 daddr, __be16 dport,
						__u8 protocol, struct ebpfcni_ct_key *key)
{
	__u32 s = bpf_ntohl(saddr), d = bpf_ntohl(daddr);
	bool swap = s > d || (s == d && bpf_ntohs(sport) > bpf_ntohs(dport));

	key->addr_a = swap ? daddr : saddr;
	key->addr_b = swap ? saddr : daddr;
	key->port_a = swap ? dport : sport;
	key->port_b = swap ? sport : dport;
	key->protocol = protocol;
	return swap;
}

/* The flow's connection key: ports for TCP and UDP, the identifier at both
 * ends for ICMP echo, none otherwise. Returns: true when the packet's
 * sender is the key's b end. */
static __always_inline bool ebpfcni_ct_key_of(const struct ebpfcni_flow *flow, struct ebpfcni_ct_key *key)
{
	__be16 sport = flow->has_ports ? flow->sport : flow->echo_id;
	__be16 dport = flow->has_ports ? flow->dport : flow->echo_id;

	return ebpfcni_ct_key_from(flow->saddr, sport, flow->daddr, dport, flow->protocol, key);
}

static __always_inline struct ebpfcni_ct_entry *ebpfcni_ct_find(const struct ebpfcni_ct_key *key, __u64 now)
{
	struct ebpfcni_ct_entry *entry = bpf_map_lookup_elem(&ct_map, key);

	return entry && entry->expires_ns > now ? entry : NULL;
}

static __always_inline bool ebpfcni_ct_is_reply(const struct ebpfcni_ct_entry *entry, bool sender_is_b)
{
	return sender_is_b != !!(entry->flags & EBPFCNI_CT_OPENER_IS_B);
}

/* The state a TCP connection moves to with this packet. */
static __always_inline enum ebpfcni_ct_state ebpfcni_ct_tcp_next(const struct ebpfcni_ct_entry *e, __u8 flags,
								  __u8 tcp_flags, bool reply)
{
	if (tcp_flags & EBPFCNI_TCP_RST)
		return EBPFCNI_CT_CLOSING;
	if ((flags & EBPFCNI_CT_FIN_OPENER) && (flags & EBPFCNI_CT_FIN_RESPONDER))
		return EBPFCNI_CT_CLOSING;
	/* The opener's first ACK after the responder answered its SYN. */
	if (e->state == EBPFCNI_CT_SYN && !reply && (flags & EBPFCNI_CT_SEEN_REPLY) &&
	    (tcp_flags & (EBPFCNI_TCP_ACK | EBPFCNI_TCP_SYN)) == EBPFCNI_TCP_ACK)
		return EBPFCNI_CT_ESTABLISHED;
	return e->state;
}

/* Advances the connection with a packet: its state, and its lifetime (a
 * write only when the state changed, or once a second: entries are shared
 * by the CPUs of both directions). Sets the flow's ct_state, ct_changed. */
static __always_inline void ebpfcni_ct_track(struct ebpfcni_ct_entry *entry, struct ebpfcni_flow *flow,
					     bool reply, __u64 now)
{
	__u8 flags = entry->flags | (reply ? EBPFCNI_CT_SEEN_REPLY : 0);
	enum ebpfcni_ct_state state = entry->state;

	if (flow->protocol == IPPROTO_TCP) {
		if (flow->tcp_flags & EBPFCNI_TCP_FIN)
			flags |= reply ? EBPFCNI_CT_FIN_RESPONDER : EBPFCNI_CT_FIN_OPENER;
		state = ebpfcni_ct_tcp_next(entry, flags, flow->tcp_flags, reply);
	}
	__u64 lifetime = ebpfcni_ct_lifetime(flow->protocol, state);

	flow->ct_state = state;
	flow->ct_changed = state != entry->state;
	if (flags != entry->flags || flow->ct_changed) {
		entry->flags = flags;
		entry->state = state;
		entry->expires_ns = now + lifetime;
	} else if (entry->expires_ns < now + lifetime - EBPFCNI_NS_PER_SEC) {
		entry->expires_ns = now + lifetime;
	}
}

/* Tracks a new connection, opened by this packet's sender (step 9). A TCP
 * packet other than a SYN (the connection was under way before it was
 * tracked, or its entry expired or was evicted) opens it established.
 * Returns: 0, or -EBPFCNI_DROP_CT_FULL. */
static __always_inline int ebpfcni_ct_open(struct ebpfcni_flow *flow, const struct ebpfcni_ct_key *key,
					   bool sender_is_b, __u64 now, __u32 policy_gen)
{
	enum ebpfcni_ct_state state = EBPFCNI_CT_OPEN;

	if (flow->protocol == IPPROTO_TCP)
		state = (flow->tcp_flags & (EBPFCNI_TCP_SYN | EBPFCNI_TCP_ACK)) == EBPFCNI_TCP_SYN ?
				EBPFCNI_CT_SYN :
				EBPFCNI_CT_ESTABLISHED;
	struct ebpfcni_ct_entry entry = {
		.expires_ns = now + ebpfcni_ct_lifetime(flow->protocol, state),
		.opener_id = flow->src_id,
		.responder_id = flow->dst_id,
		.state = state,
		.flags = sender_is_b ? EBPFCNI_CT_OPENER_IS_B : 0,
		.dport = flow->has_ports ? flow->dport : flow->echo_id,
		.policy_gen = policy_gen,
	};

	if (bpf_map_update_elem(&ct_map, key, &entry, BPF_ANY))
		return -EBPFCNI_DROP_CT_FULL;
	flow->ct_state = state;
	flow->ct_changed = 1;
	return 0;
}

/* Whether the flow is an ICMP error (destination unreachable, which says
 * "fragmentation needed" too, or time exceeded) about a live connection,
 * sent to the end that sent the packet it quotes (step 4b). */
static __always_inline bool ebpfcni_ct_related(struct __sk_buff *ctx, const struct ebpfcni_flow *flow, __u64 now)
{
	struct ebpfcni_quoted q = {};
	struct ebpfcni_ct_key key = {};

	if (flow->protocol != IPPROTO_ICMP ||
	    (flow->icmp_type != EBPFCNI_ICMP_DEST_UNREACH && flow->icmp_type != EBPFCNI_ICMP_TIME_EXCEEDED))
		return false;
	if (ebpfcni_parse_quoted(ctx, ebpfcni_l4_offset(ctx), &q) || q.saddr != flow->daddr)
		return false;
	ebpfcni_ct_key_from(q.saddr, q.sport, q.daddr, q.dport, q.protocol, &key);
	return ebpfcni_ct_find(&key, now) != NULL;
}

#endif /* EBPFCNI_LIB_CT_H */
