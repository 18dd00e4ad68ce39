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
 *   3. Source trust, on the hook that sees what a pod sends (from-pod) only:
 *      a. a host veth with no record in interface_map drops all IPv4 from
 *         its pod (fail closed: unknown-interface);
 *      b. a source address that is not one of the record's addresses is
 *         dropped (invalid-source): a pod cannot borrow another's identity.
 *      What the node sends to a pod (to-pod) is not checked.
 *   4. An address's identity is its endpoint_map entry; an address with none
 *      takes the identity of the longest prefix in prefix_map that holds it
 *      (an exact endpoint always beats a prefix). A source address with
 *      neither is dropped (unknown-source),
 *   5. then a destination address with neither (unknown-destination).
 *   6. A (source identity, destination identity) pair with an allow entry in
 *      policy_map passes.
 *   7. Everything else is dropped (default deny: no-policy).
 *
 * Entries the tools never write (by hand, or from a broken tool) count as
 * absent: an endpoint_map or prefix_map entry with identity 0 is no identity
 * (4, 5); a policy_map entry whose action is not EBPFCNI_POLICY_ALLOW, or with
 * an identity 0, allows nothing (no packet has identity 0); an interface_map
 * record's 0.0.0.0 slots hold no address. A trace level above
 * EBPFCNI_TRACE_ALL traces as EBPFCNI_TRACE_ALL.
 */
#ifndef EBPFCNI_H
#define EBPFCNI_H

/* Capacities of the pinned maps. Changing one makes existing pins
 * incompatible (the library refuses them rather than losing policy). */
enum ebpfcni_capacity {
	EBPFCNI_ENDPOINT_MAP_CAPACITY = 16384,
	EBPFCNI_POLICY_MAP_CAPACITY = 65536,
	EBPFCNI_PREFIX_MAP_CAPACITY = 16384,
	EBPFCNI_INTERFACE_MAP_CAPACITY = 16384, /* host veths: pods on the node */
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

/* prefix_map key (an LPM trie): an IPv4 prefix, address in network byte
 * order as on the wire (the trie matches bits from the first byte). The
 * value is the prefix's security identity (__u32, as endpoint_map's). */
struct ebpfcni_prefix_key {
	__u32 prefixlen; /* 0..=32 */
	__be32 addr;     /* host bits zero */
};

/* interface_map value, keyed by a host veth's ifindex (__u32): the pod
 * addresses behind it, as the CNI plugin recorded them at ADD from the IPAM
 * result (network byte order). Unused slots are 0.0.0.0. This is plumbing,
 * not policy: the plugin writes it, never identities or rules. */
#define EBPFCNI_INTERFACE_ADDRS 4
struct ebpfcni_interface {
	__be32 addrs[EBPFCNI_INTERFACE_ADDRS];
};

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
#define EBPFCNI_DROP_REASONS(X)                                                               \
	X(MALFORMED, 1, "malformed", "step 2: truncated or invalid IPv4 header")              \
	X(UNKNOWN_SRC, 2, "unknown-source", "step 4: source address has no identity")         \
	X(UNKNOWN_DST, 3, "unknown-destination", "step 5: destination address has no identity") \
	X(NO_POLICY, 4, "no-policy", "step 7: no allow entry for the pair")                   \
	X(INVALID_SOURCE, 5, "invalid-source", "step 3b: the pod sent from an address not its own") \
	X(UNKNOWN_INTERFACE, 6, "unknown-interface", "step 3a: no record of the pod's addresses")

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
