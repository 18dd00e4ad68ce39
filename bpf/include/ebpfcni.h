/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ebpfcni.h: the one place where the datapath's shared layouts are written.
 *
 * The BPF program includes this header; the Rust library gets the same types
 * from the compiled object's BTF (libbpf-cargo's skeleton `types` module), so
 * there is no hand-kept mirror. Every type here is used by a map or a global
 * so that BTF keeps it. Values of the enums are part of the pinned maps'
 * contents and of the trace output: never renumber them, only add.
 *
 * Policy precedence (the program applies these in order; code cites the step):
 *   1. A frame whose EtherType is not IPv4 passes untouched (ARP, IPv6, LLDP...).
 *   2. An IPv4 frame too short for its header, or with a malformed header
 *      (version != 4, ihl < 5, shorter than ihl * 4), is dropped.
 *   3. An unknown source address (not in endpoint_map) is dropped.
 *   4. An unknown destination address is dropped.
 *   5. A (source identity, destination identity) pair with an allow entry in
 *      policy_map passes.
 *   6. Everything else is dropped (default deny).
 *
 * Entries the tools never write (by hand, or from a broken tool) count as
 * absent: an endpoint_map entry with identity 0 is an unknown address (3, 4);
 * a policy_map entry whose action is not EBPFCNI_POLICY_ALLOW, or with an
 * identity 0, allows nothing (no packet has identity 0). A trace level above
 * EBPFCNI_TRACE_ALL traces as EBPFCNI_TRACE_ALL.
 */
#ifndef EBPFCNI_H
#define EBPFCNI_H

/* Capacities of the pinned maps. Changing one makes existing pins
 * incompatible (the library refuses them rather than losing policy). */
enum ebpfcni_capacity {
	EBPFCNI_ENDPOINT_MAP_CAPACITY = 16384,
	EBPFCNI_POLICY_MAP_CAPACITY = 65536,
};

/* Which tc hook a program instance runs on. Each has its own entry point,
 * so a program knows its hook by construction. */
enum ebpfcni_hook {
	/* tc ingress of the host veth: what the pod sends. */
	EBPFCNI_HOOK_FROM_POD = 1,
	/* tc egress of the host veth: what the pod receives. */
	EBPFCNI_HOOK_TO_POD = 2,
};

/* endpoint_map: key is an IPv4 address in host byte order (__u32),
 * value is the endpoint's security identity (__u32, 1..=UINT32_MAX;
 * 0 is never a valid identity). */

/* policy_map key: (source identity, destination identity). */
struct policy_key {
	__u32 src_id; /* identity of the packet's source address */
	__u32 dst_id; /* identity of the packet's destination address */
};
_Static_assert(sizeof(struct policy_key) == 8, "policy_key must be 8 bytes");

/* policy_map value: one byte. Only ALLOW is defined; an absent entry is a deny. */
enum ebpfcni_policy_action : __u8 {
	EBPFCNI_POLICY_ALLOW = 1,
};

/* How much the program writes to the trace pipe (bpf_printk). */
enum ebpfcni_trace_level {
	EBPFCNI_TRACE_OFF = 0,   /* nothing */
	EBPFCNI_TRACE_DROPS = 1, /* one line per dropped packet (default) */
	EBPFCNI_TRACE_ALL = 2,   /* one line per IPv4 packet (cost of a line: BENCHMARKS.md) */
};

/* config_map value (a one-entry array at key 0): run-time settings read by
 * the program on every packet, written by policyctl without reloading.
 * A fresh map, and one migrated from an older layout, starts from the
 * defaults the library writes. Room is reserved so that settings can be
 * added without changing the layout; a setting added there must read 0 as
 * its default. (The first release's layout was the trace level alone, 4
 * bytes; the library migrates such a pin, keeping the level.) */
struct ebpfcni_config {
	enum ebpfcni_trace_level trace_level;
	__u32 reserved[15]; /* zero */
};
_Static_assert(sizeof(struct ebpfcni_config) == 64, "ebpfcni_config is 64 bytes");

/* Why a packet was dropped: the key of drop_counters and the reason printed
 * in traces, each with its name (what traces, counters and the CLIs say).
 * X(NAME, value, "name", "what it means"); 0 is not a drop. The names are
 * written here only: the program keeps them in .rodata
 * (ebpfcni_drop_reason_names), where the Rust library reads them too. */
#define EBPFCNI_DROP_REASONS(X)                                                              \
	X(MALFORMED, 1, "malformed", "step 2: truncated or invalid IPv4 header")             \
	X(UNKNOWN_SRC, 2, "unknown-source", "step 3: source address has no identity")        \
	X(UNKNOWN_DST, 3, "unknown-destination", "step 4: destination address has no identity") \
	X(NO_POLICY, 4, "no-policy", "step 6: no allow entry for the pair")

/* Sized as a __u32 so it can be a map key. */
enum ebpfcni_drop_reason {
#define EBPFCNI_DROP_ENUM(name, value, text, doc) EBPFCNI_DROP_##name = value,
	EBPFCNI_DROP_REASONS(EBPFCNI_DROP_ENUM)
#undef EBPFCNI_DROP_ENUM
	EBPFCNI_DROP_REASON_MAX, /* one past the last reason; keep last */
};

/* Slots of drop_counters: more than there are reasons, so that reasons can
 * be added without changing the map's layout. (The first release's map
 * had 5 slots; the library migrates such a pin, keeping every count.) */
#define EBPFCNI_DROP_COUNTER_SLOTS 64
_Static_assert(EBPFCNI_DROP_REASON_MAX <= EBPFCNI_DROP_COUNTER_SLOTS, "a drop counter per reason");

/* Room for a drop reason's name, with its NUL. */
#define EBPFCNI_NAME_LEN 24

/* drop_counters value (per CPU): packets dropped for the key's reason. */
struct ebpfcni_drop_count {
	__u64 packets;
};

#endif /* EBPFCNI_H */
