/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ebpfcni.h: the one place where the datapath's shared layouts are written.
 *
 * The BPF program includes this header; the Rust library gets the same types
 * from the compiled object's BTF (libbpf-cargo's skeleton `types` module), so
 * there is no hand-kept mirror. Every type here is used by a map so that BTF
 * keeps it. Values of the enums are part of the pinned maps' contents and of
 * the trace output: never renumber them, only add.
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
 */
#ifndef EBPFCNI_H
#define EBPFCNI_H

/* Capacities of the pinned maps. Changing one makes existing pins
 * incompatible (the library refuses them rather than losing policy). */
enum ebpfcni_capacity {
	EBPFCNI_ENDPOINT_MAP_CAPACITY = 16384,
	EBPFCNI_POLICY_MAP_CAPACITY = 65536,
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
	EBPFCNI_TRACE_ALL = 2,   /* one line per IPv4 packet: ~0.4 us each */
};

/* config_map value (a one-entry array at key 0): run-time settings read by
 * the program on every packet, written by policyctl without reloading. */
struct ebpfcni_config {
	enum ebpfcni_trace_level trace_level;
};

/* Why a packet was dropped: the key of drop_counters and the reason printed
 * in traces. 0 is not a drop. Userspace mirror: none; Rust reads these
 * values from BTF and a test checks every variant has a name. Sized as a
 * __u32 so it can be a map key. */
enum ebpfcni_drop_reason {
	EBPFCNI_DROP_MALFORMED = 1,   /* step 2: truncated or invalid IPv4 header */
	EBPFCNI_DROP_UNKNOWN_SRC = 2, /* step 3: source address has no identity */
	EBPFCNI_DROP_UNKNOWN_DST = 3, /* step 4: destination address has no identity */
	EBPFCNI_DROP_NO_POLICY = 4,   /* step 6: no allow entry for the pair */
	EBPFCNI_DROP_REASON_MAX,      /* size of drop_counters; keep last */
};

/* drop_counters value (per CPU): packets dropped for the key's reason. */
struct ebpfcni_drop_count {
	__u64 packets;
};

#endif /* EBPFCNI_H */
