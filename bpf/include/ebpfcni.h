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
 *      What the node sends to a pod (to-pod) is not checked. Every
 *      packet that reaches to-pod is judged there by the steps below: a
 *      packet between two pods of the node is judged once because from-pod
 *      delivers what it passes straight into the receiving pod (local_map,
 *      struct ebpfcni_local), past the receiver's to-pod hook; on a
 *      "stack" network it goes through the node and is judged on both
 *      hooks, to the same verdict.
 *   4. What was already allowed:
 *      a. a later fragment (fragment offset != 0: it carries no L4 header)
 *         of a datagram whose first fragment (offset 0, MF set) passed by a
 *         port rule (8) or as a reply (4b) passes as that one did, with its
 *         identities: frag_map holds the first fragment's verdict, keyed by
 *         (source, destination, protocol, IP ID), for EBPFCNI_FRAG_LIFETIME
 *         seconds (an LRU hash; as Cilium does). A later fragment without
 *         a record (its first was dropped, allowed by a pair rule, not seen
 *         yet, or the record went) goes on, judged by the steps below,
 *         where only a pair rule or a whole-protocol rule can match it;
 *      b. connection tracking, only while some rule is stateful
 *         (config conntrack != 0): a packet of a tracked connection (ct_map, an
 *         entry not expired) that goes from the responder to the opener is a
 *         reply and passes; an ICMP error (destination unreachable, time
 *         exceeded) about a tracked connection, sent to the connection's side
 *         that sent the packet it quotes, passes as related. A packet from the
 *         opener goes on to policy (7, 8, 8b), judged like any other, for the
 *         identities the connection was opened with (a change of either
 *         identity ends the connection: the tools remove its entry); once
 *         policy has passed it, the opener's packets pass as tracked without
 *         steps 5-9 for as long as config policy_gen stays what it was (the
 *         tools bump it after every change of what policy decides with).
 *   5. An address's identity is its endpoint_map entry (on from-pod, the
 *      source's is the one its interface record carries, when it carries
 *      one, and a destination's the one its local delivery record carries,
 *      when some network delivers locally and the record carries one: the
 *      same number, written by the agent beside it); an address with none
 *      takes the identity of the longest prefix in prefix_map that holds it
 *      (an exact endpoint always beats a prefix). A source address with
 *      neither is dropped (unknown-source),
 *   6. then a destination address with neither (unknown-destination).
 *   7. A pair rule (policy_map: source identity, destination identity; any
 *      protocol and port) allows the packet.
 *   8. Else a port rule (port_policy_map, longest match, looked up only
 *      while config port_rules != 0): one destination port, then a range
 *      of ports, then the whole protocol. A packet
 *      without ports (a later fragment not passed by 4a, a protocol
 *      without ports) can only match a whole-protocol rule.
 *  8b. Else label policy (the node agent's, compiled from NetworkPolicy and
 *      CiliumNetworkPolicy; looked up only while config label_policy != 0),
 *      for identities with an entry in label_isolation_map (identities
 *      without one are the plan's alone: 7 and 8 decide for them, and a
 *      pair with one of them is dropped here as no-policy):
 *      a. a deny rule (label_exact_map, label_rule_map: kind EGRESS_DENY for the source,
 *         INGRESS_DENY for the destination; only while config label_deny
 *         != 0) drops the packet (policy-denied): deny wins over allow;
 *         a rule's peer is an identity, or EBPFCNI_LABEL_ANY_PEER for
 *         every peer (looked up when the exact peer has no rule);
 *      b. a source isolated for egress needs an EGRESS_ALLOW rule of its
 *         own for the destination, a destination isolated for ingress an
 *         INGRESS_ALLOW rule for the source (one port, or every protocol
 *         and port: label_exact_map, a hash; ranges and whole protocols:
 *         label_rule_map, an LPM trie as in 8, looked up only while some
 *         such rule exists: config label_policy's shape flags); a side that is
 *         not isolated allows everything (an endpoint selected by no policy
 *         is unrestricted). Both sides must allow (policy-isolated names
 *         the one that did not). What passes is stateful (9): NetworkPolicy
 *         lets an allowed connection's replies back.
 *   9. A packet allowed by a stateful rule (7, 8 or 8b) creates or refreshes its
 *      connection's entry (the sender is the opener), so that replies pass
 *      (4b) without a reverse rule; a packet allowed by a stateless rule is
 *      not tracked. Everything allowed passes; a first fragment that passed
 *      by a port rule (8) or as a reply (4b) records its verdict for the
 *      rest of its datagram (4a). On from-pod, a passed packet to a pod of
 *      the node with a local delivery record goes straight into that pod
 *      (struct ebpfcni_local); the rest goes on through the node.
 *  10. Everything else is dropped: while tracking (4b), no-flow when the
 *      reverse direction has a stateful rule (a reply whose connection is
 *      not tracked, or no longer is); else no-policy (default deny).
 *      In audit mode (config audit) the drops of policy, those of 8b and
 *      10, pass instead, counted and reported as audit (verdict.h); every
 *      other drop stays.
 *
 * On the node's fabric interface (the one holding its node IP; the agent
 * attaches from-fabric there in cluster mode), before the node's stack:
 *   F. An IPv4 packet whose source address has an identity of its own
 *      (an exact endpoint_map entry: this node's pods, other nodes' pods,
 *      node IPs with remote-node; prefix_map is not looked at) must come
 *      back the way it would be answered: the node's route to that
 *      address (bpf_fib_lookup, the source as destination) must leave by
 *      the interface it arrived on, towards the Ethernet address it came
 *      from (the neighbour entry of the route's gateway, i.e. the owner
 *      node's node IP, or of the address itself when on-link). Else it is
 *      dropped (source-not-from-node): a host on the fabric cannot borrow
 *      a remote pod's identity (sent from another MAC), nor a local pod's
 *      (routed to its host veth). Fail closed: no route, no neighbour
 *      entry (NO_NEIGH: the agent keeps the other nodes' node IPs as
 *      managed entries, and a sender has just resolved this node's
 *      address, which leaves its entry here; STALE counts), a local
 *      address, all drop. Everything else passes untouched (no identity: the world;
 *      not IPv4; ARP), as do frames our parser calls malformed (the stack
 *      drops them, and to-pod would: step 2). Nothing else is judged there:
 *      the packet goes on to to-pod, steps 1-10.
 *
 * Entries the tools never write (by hand, or from a broken tool) count as
 * absent: an endpoint_map or prefix_map entry with identity 0 is no identity
 * (5, 6); a policy rule whose action is not one of enum ebpfcni_policy_action,
 * or with an identity 0, allows nothing (no packet has identity 0); an
 * interface_map record's 0.0.0.0 slots hold no address. A trace level above
 * EBPFCNI_TRACE_ALL traces as EBPFCNI_TRACE_ALL, an event level above
 * EBPFCNI_EVENTS_ALL reports as EBPFCNI_EVENTS_ALL.
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
	EBPFCNI_PORT_POLICY_MAP_CAPACITY = 65536, /* entries: a port range takes several */
	EBPFCNI_CT_MAP_CAPACITY = 131072,         /* connections (LRU: the oldest go) */
	EBPFCNI_FRAG_MAP_CAPACITY = 8192,         /* fragmented datagrams (LRU: the oldest go) */
	EBPFCNI_LABEL_ISOLATION_MAP_CAPACITY = 16384, /* identities under label policy */
	EBPFCNI_LABEL_RULE_MAP_CAPACITY = 65536,  /* entries: a port range takes several */
	EBPFCNI_LABEL_EXACT_MAP_CAPACITY = 65536, /* label rules of one port, or of everything */
	EBPFCNI_LOCAL_MAP_CAPACITY = 16384,       /* pod addresses on the node (local delivery) */
	EBPFCNI_EVENT_RING_BYTES = 1 << 20,       /* about 21,000 events */
};

/* Which tc hook a program instance runs on. Each has its own entry point,
 * so a program knows its hook by construction. */
enum ebpfcni_hook {
	/* tc ingress of the host veth: what the pod sends. */
	EBPFCNI_HOOK_FROM_POD = 1,
	/* tc egress of the host veth: what the pod receives. */
	EBPFCNI_HOOK_TO_POD = 2,
	/* tc ingress of the node's fabric interface (the one holding its
	 * node IP, in cluster mode): what other nodes send (step F). */
	EBPFCNI_HOOK_FROM_FABRIC = 3,
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
 * not policy: the plugin writes it, never identities or rules (identity 0).
 * The node agent, which writes both a pod's record and its addresses'
 * endpoint_map entries, also carries the pod's identity here: from-pod then
 * takes the source's identity from the record it read for source trust
 * (step 3) instead of looking it up (step 5). The agent keeps the two
 * equal; an operator cannot write an agent's address (endpointctl refuses
 * it). 0: not carried, step 5 looks it up. */
#define EBPFCNI_INTERFACE_ADDRS 4
struct ebpfcni_interface {
	__be32 addrs[EBPFCNI_INTERFACE_ADDRS];
	__u32 identity; /* the pod's, or 0 */
};
_Static_assert(sizeof(struct ebpfcni_interface) == 20, "ebpfcni_interface is 20 bytes");

/* local_map value, keyed by a pod address on this node (__be32, network
 * byte order as on the wire): where the pod lives, for local delivery.
 * Plumbing, not policy: the CNI plugin writes it at ADD (before the pod has
 * its address) and removes it at DEL and GC. A packet that from-pod passes
 * (every step below, unchanged) to an address with a record whose flags
 * hold EBPFCNI_LOCAL_REDIRECT (the receiving pod's network says
 * "localDelivery": "redirect") is handed straight into that pod: TTL
 * decremented (a packet whose TTL would run out is left to the node's stack,
 * which answers it with its ICMP error), IPv4 checksum fixed, Ethernet
 * addresses rewritten to what the pod expects (source: its gateway, the
 * host veth; destination: its eth0), then bpf_redirect_peer() to the host
 * veth `ifindex`, which lands in the pod (the host veth's egress, and so
 * the to-pod hook, is not run). Everything else takes the node's stack.
 * A record without the flag (a "stack" network) delivers nothing.
 * In agent mode the record also carries the pod's identity, copied from
 * its endpoint_map entry by whoever writes either (the agent after each
 * change of the entry, the CNI plugin when it writes the record; under the
 * pin directory's lock, so the last copy is of the entry's latest value):
 * while some network delivers locally, from-pod looks the destination's
 * record up before step 6 and takes the identity from it instead of
 * looking it up. 0 (the CNI plugin's records in plan mode, where the
 * operator owns identities; records of older builds): not carried. */
struct ebpfcni_local {
	__u32 ifindex;       /* the pod's host veth */
	__u8 pod_mac[6];     /* the pod's eth0: the destination */
	__u8 host_mac[6];    /* the host veth (the pod's gateway): the source */
	__u32 flags;         /* EBPFCNI_LOCAL_* */
	__u32 identity;      /* the pod's, or 0 (see below) */
};
_Static_assert(sizeof(struct ebpfcni_local) == 24, "ebpfcni_local is 24 bytes");
#define EBPFCNI_LOCAL_REDIRECT 0x1 /* deliver into the pod (else: the stack) */

/* policy_map key: (source identity, destination identity). */
struct policy_key {
	__u32 src_id; /* identity of the packet's source address */
	__u32 dst_id; /* identity of the packet's destination address */
};
_Static_assert(sizeof(struct policy_key) == 8, "policy_key must be 8 bytes");

/* policy_map value (one byte), and the action of a port rule. An absent
 * entry is a deny. A stateful rule's connections are tracked, so that their
 * replies pass without a reverse rule (precedence 4b, 9). */
enum ebpfcni_policy_action : __u8 {
	EBPFCNI_POLICY_ALLOW = 1,
	EBPFCNI_POLICY_ALLOW_STATEFUL = 3,
};

/* port_policy_map key (an LPM trie): the rule's identities, protocol and
 * destination port. prefixlen counts the bits that must match, from src_id
 * on: EBPFCNI_PORT_PREFIX_PROTOCOL for every port of the protocol,
 * EBPFCNI_PORT_PREFIX_ANY_PORT + n for a block of ports sharing their top n
 * bits (a range is a few such blocks), EBPFCNI_PORT_PREFIX_ONE_PORT for one
 * port. The longest match wins: one port, then a range, then the protocol. */
struct ebpfcni_port_key {
	__u32 prefixlen;
	__u32 src_id;
	__u32 dst_id;
	__u8 protocol; /* IPPROTO_* */
	__u8 pad;      /* zero */
	__be16 dport;  /* network byte order: the trie matches the high bits first */
};
_Static_assert(sizeof(struct ebpfcni_port_key) == 16, "ebpfcni_port_key is 16 bytes");
#define EBPFCNI_PORT_PREFIX_PROTOCOL 72  /* src_id, dst_id, protocol */
#define EBPFCNI_PORT_PREFIX_ANY_PORT 80  /* ... and pad */
#define EBPFCNI_PORT_PREFIX_ONE_PORT 96  /* ... and all of dport */

/* port_policy_map value: the action, and the rule the entry belongs to (a
 * range is stored as several entries, each naming the whole range, so that
 * the tools can list and remove the rule as it was written). */
struct ebpfcni_port_rule {
	enum ebpfcni_policy_action action;
	__u8 pad;
	__u16 first_port; /* host byte order; 0 and 0 for a whole-protocol rule */
	__u16 last_port;
	__u16 pad2;
};

/* label_isolation_map: identity (__u32) -> these flags (__u32). An identity
 * with an entry is under label policy (precedence 8b); MANAGED alone means
 * selected by no policy: unrestricted. */
enum ebpfcni_label_flags {
	EBPFCNI_LABEL_MANAGED = 1,
	EBPFCNI_LABEL_ISOLATED_INGRESS = 2,
	EBPFCNI_LABEL_ISOLATED_EGRESS = 4,
};

/* What a label_rule_map entry says of its subject and peer. */
enum ebpfcni_label_kind : __u8 {
	EBPFCNI_LABEL_EGRESS_ALLOW = 1,  /* the subject may send to the peer */
	EBPFCNI_LABEL_INGRESS_ALLOW = 2, /* the subject may receive from the peer */
	EBPFCNI_LABEL_EGRESS_DENY = 3,
	EBPFCNI_LABEL_INGRESS_DENY = 4,
};

/* label_exact_map key (a hash): a rule of one port (protocol, dport), or of
 * every protocol and port (protocol 0, dport 0). The rules NetworkPolicy
 * writes most (a port, or no ports) cost one hash lookup each. */
struct ebpfcni_label_exact_key {
	__u32 subject;
	__u32 peer;
	enum ebpfcni_label_kind kind;
	__u8 protocol; /* IPPROTO_*, 0: every protocol */
	__be16 dport;  /* network byte order; 0 with protocol 0 */
};
_Static_assert(sizeof(struct ebpfcni_label_exact_key) == 12, "ebpfcni_label_exact_key is 12 bytes");

/* config label_policy: nonzero while label policy is on, with the shapes of
 * rules that exist on the node, so that the program looks up only what can
 * match (the library keeps them from the maps). */
enum ebpfcni_label_policy_flags {
	EBPFCNI_LABEL_POLICY_ON = 1,
	EBPFCNI_LABEL_HAS_PEER_ALL = 2, /* a rule for a peer, every protocol and port */
	EBPFCNI_LABEL_HAS_ANY_PORT = 4, /* a rule for every peer, one port */
	EBPFCNI_LABEL_HAS_ANY_ALL = 8,  /* a rule for every peer, every protocol and port */
	EBPFCNI_LABEL_HAS_WIDE = 16,    /* label_rule_map has an entry (ranges, whole protocols) */
};

/* label_rule_map key (an LPM trie): subject identity (whose policy), peer
 * identity, kind, then protocol and destination port as in
 * ebpfcni_port_key. prefixlen counts the bits that must match:
 * EBPFCNI_LABEL_PREFIX_ANY for every protocol and port,
 * EBPFCNI_LABEL_PREFIX_PROTOCOL for every port of one protocol, up to
 * EBPFCNI_LABEL_PREFIX_ONE_PORT for one port (ranges are blocks between). */
struct ebpfcni_label_key {
	__u32 prefixlen;
	__u32 subject;
	__u32 peer;
	enum ebpfcni_label_kind kind;
	__u8 protocol; /* IPPROTO_* */
	__be16 dport;  /* network byte order */
};
_Static_assert(sizeof(struct ebpfcni_label_key) == 16, "ebpfcni_label_key is 16 bytes");
/* The peer of a rule for every peer (`ingress: [{ports: ...}]`, Cilium's
 * `toPorts` alone): 0 is no identity, so no exact rule has it. */
#define EBPFCNI_LABEL_ANY_PEER 0
#define EBPFCNI_LABEL_PREFIX_ANY 72      /* subject, peer, kind */
#define EBPFCNI_LABEL_PREFIX_PROTOCOL 80 /* ... and protocol */
#define EBPFCNI_LABEL_PREFIX_ONE_PORT 96 /* ... and all of dport */

/* label_rule_map and label_exact_map value: the policy the entry comes from (the agent's
 * number for it, for explain and events) and the range as written. */
struct ebpfcni_label_rule {
	__u32 policy;
	__u16 first_port; /* host byte order; 0 and 0: every port */
	__u16 last_port;
};

/* ct_map key: a connection, the same for both of its directions: the two
 * (address, port) ends ordered, lower first (address, then port, compared
 * in network byte order). For ICMP echo both ports are the identifier. */
struct ebpfcni_ct_key {
	__be32 addr_a;
	__be32 addr_b;
	__be16 port_a;
	__be16 port_b;
	__u8 protocol;
	__u8 pad[3]; /* zero */
};
_Static_assert(sizeof(struct ebpfcni_ct_key) == 16, "ebpfcni_ct_key is 16 bytes");

/* The life of a tracked connection. */
enum ebpfcni_ct_state : __u8 {
	EBPFCNI_CT_SYN = 1,         /* TCP: the opener's SYN, until its first ACK */
	EBPFCNI_CT_ESTABLISHED = 2, /* TCP */
	EBPFCNI_CT_CLOSING = 3,     /* TCP: both sides sent FIN, or one RST */
	EBPFCNI_CT_OPEN = 4,        /* UDP, ICMP echo, any other protocol */
};

/* ebpfcni_ct_entry flags. */
#define EBPFCNI_CT_OPENER_IS_B 0x01 /* the opener is the key's b end */
#define EBPFCNI_CT_SEEN_REPLY 0x02
#define EBPFCNI_CT_FIN_OPENER 0x04
#define EBPFCNI_CT_FIN_RESPONDER 0x08

/* ct_map value. An entry whose expiry has passed counts as absent, so no
 * cleaner needs to run for correctness; the table is an LRU hash, so a full
 * table drops its least recently used connections to make room. */
struct ebpfcni_ct_entry {
	__u64 expires_ns; /* CLOCK_MONOTONIC_COARSE, as bpf_ktime_get_coarse_ns */
	__u32 opener_id;  /* identities when the connection was opened (for the tools) */
	__u32 responder_id;
	enum ebpfcni_ct_state state;
	__u8 flags;       /* EBPFCNI_CT_* */
	__be16 dport;     /* the opener's destination port (ICMP: the echo identifier) */
	/* config policy_gen when policy last passed the opener's packets
	 * (0: never, as in entries of a build without it): while it is
	 * current, the opener's later packets pass without the policy
	 * lookups (steps 5-9), which nothing since could have changed. */
	__u32 policy_gen;
};
_Static_assert(sizeof(struct ebpfcni_ct_entry) == 24, "ebpfcni_ct_entry is 24 bytes");

/* Indexes of config_map's ct_timeout, and their defaults in seconds (the
 * values of Cilium's), used while the setting is 0. */
enum ebpfcni_ct_timeout {
	EBPFCNI_CT_TIMEOUT_SYN = 0,
	EBPFCNI_CT_TIMEOUT_ESTABLISHED = 1,
	EBPFCNI_CT_TIMEOUT_CLOSING = 2,
	EBPFCNI_CT_TIMEOUT_UDP = 3,
	EBPFCNI_CT_TIMEOUT_ICMP = 4, /* and other protocols */
	EBPFCNI_CT_TIMEOUTS,
};
enum ebpfcni_default {
	EBPFCNI_CT_DEFAULT_SYN = 60,
	EBPFCNI_CT_DEFAULT_ESTABLISHED = 8000,
	EBPFCNI_CT_DEFAULT_CLOSING = 10,
	EBPFCNI_CT_DEFAULT_UDP = 60,
	EBPFCNI_CT_DEFAULT_ICMP = 60,
	/* Seconds a first fragment's verdict holds for the rest of its
	 * datagram (frag_map; precedence 4a): its fragments follow it within
	 * microseconds, and an IP ID comes round again only after 65,536
	 * datagrams between the same two addresses. */
	EBPFCNI_FRAG_LIFETIME = 10,
	/* The rate limit (see ebpfcni_config.notify_rate). */
	EBPFCNI_NOTIFY_DEFAULT_RATE = 1000,
	/* The highest rate the datapath takes (a higher notify_rate counts as
	 * it): a refill's arithmetic stays in range. */
	EBPFCNI_NOTIFY_MAX_RATE = 1000000000,
};

/* How much the program writes to the trace pipe (bpf_printk). */
enum ebpfcni_trace_level {
	EBPFCNI_TRACE_OFF = 0,   /* nothing */
	EBPFCNI_TRACE_DROPS = 1, /* one line per dropped packet (default) */
	EBPFCNI_TRACE_ALL = 2,   /* one line per IPv4 packet (cost of a line: BENCHMARKS.md) */
};

/* Which flow events the program writes to event_ring (policyctl monitor). */
enum ebpfcni_event_level {
	EBPFCNI_EVENTS_OFF = 0,   /* none */
	EBPFCNI_EVENTS_DROPS = 1, /* every drop (default) */
	EBPFCNI_EVENTS_FLOWS = 2, /* drops, new tracked connections and their state changes */
	EBPFCNI_EVENTS_ALL = 3,   /* every IPv4 packet */
};

/* config_map value (a one-entry array at key 0): run-time settings read by
 * the program on every packet, written by policyctl without reloading.
 * A fresh map, and one migrated from an older layout, starts from the
 * defaults the library writes. Room is reserved so that settings can be
 * added without changing the layout; a setting added there must read 0 as
 * its default, as the settings below marked so do. (The first release's
 * layout was the trace level alone, 4 bytes; the library migrates such a
 * pin, keeping the level.) */
struct ebpfcni_config {
	enum ebpfcni_trace_level trace_level;
	enum ebpfcni_event_level event_level;
	/* Nonzero while some rule is stateful (policyctl keeps it so): only
	 * then does the program look connections up (precedence 4b). */
	__u32 conntrack;
	/* Seconds, by enum ebpfcni_ct_timeout; 0: the default. */
	__u32 ct_timeout[EBPFCNI_CT_TIMEOUTS];
	/* The rate limit of events, and separately of trace lines: per CPU,
	 * this many a second (0: EBPFCNI_NOTIFY_DEFAULT_RATE), in bursts of
	 * up to notify_burst (0: as many as the rate). */
	__u32 notify_rate;
	__u32 notify_burst;
	/* Nonzero while port_policy_map holds a rule (policyctl keeps it so):
	 * only then does the program look port rules up (precedence 8). */
	__u32 port_rules;
	/* Nonzero while label_isolation_map has an entry (the library keeps
	 * it so): only then is label policy looked at (precedence 8b); its
	 * bits are enum ebpfcni_label_policy_flags. label_deny: nonzero while
	 * a deny rule exists (8b a). */
	__u32 label_policy;
	__u32 label_deny;
	/* Not read by the program: bumped by every change the tools make
	 * through the library's undo record (endpointctl, policyctl), so that
	 * the node agent knows when entries it did not write may have changed. */
	__u32 generation;
	/* Nonzero while local_map has a record of a network that delivers
	 * locally ("localDelivery": "redirect"; the library keeps it so):
	 * only then does from-pod look local_map up, so that networks on the
	 * node's stack pay nothing for it. */
	__u32 local_redirect;
	/* Bumped (never to 0) by the library after every change of what
	 * policy decides with (rules, label policy, identities): a tracked
	 * connection judged at this generation needs no new judgement (see
	 * ebpfcni_ct_entry policy_gen). 0: every packet is judged. */
	__u32 policy_gen;
	/* Nonzero: audit mode (policyctl audit on). A packet that policy
	 * would drop (no-policy, no-flow, policy-isolated, policy-denied:
	 * steps 8b and 10) passes instead, counted in its reason's audit slot
	 * of drop_counters (EBPFCNI_AUDIT_SLOT) and reported as an audit
	 * event. Every other drop (malformed, source trust, unknown
	 * addresses, ct-insert-failed) stays a drop. Read on the drop path
	 * only. 0 (enforce) is the default. */
	__u32 audit;
	__u32 reserved[15]; /* zero */
};
_Static_assert(sizeof(struct ebpfcni_config) == 128, "ebpfcni_config is 128 bytes");

/* Why a packet was dropped: the key of drop_counters and the reason printed
 * in traces, each with its name (what traces, counters and the CLIs say).
 * X(NAME, value, "name", "what it means"); 0 is not a drop. The names are
 * written here only: the program keeps them in .rodata
 * (ebpfcni_drop_reason_names), where the Rust library reads them too. */
#define EBPFCNI_DROP_REASONS(X)                                                                    \
	X(MALFORMED, 1, "malformed", "step 2: truncated or invalid IPv4 header")                   \
	X(UNKNOWN_SRC, 2, "unknown-source", "step 5: source address has no identity")              \
	X(UNKNOWN_DST, 3, "unknown-destination", "step 6: destination address has no identity")    \
	X(NO_POLICY, 4, "no-policy", "step 10: no rule allows it")                                 \
	X(INVALID_SOURCE, 5, "invalid-source", "step 3b: the pod sent from an address not its own") \
	X(UNKNOWN_INTERFACE, 6, "unknown-interface", "step 3a: no record of the pod's addresses")  \
	X(NO_FLOW, 7, "no-flow", "step 10: a reply of a stateful rule's connection that is not tracked") \
	X(CT_FULL, 8, "ct-insert-failed", "step 9: the connection could not be tracked")             \
	X(ISOLATED, 9, "policy-isolated", "step 8b: a label policy isolates the sender or receiver and none of its rules allows it") \
	X(POLICY_DENIED, 10, "policy-denied", "step 8b a: a deny rule of a label policy") \
	X(NOT_FROM_NODE, 11, "source-not-from-node", "step F: from the fabric, a source address with an identity that does not route back to the sending interface and MAC")

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
/* The slots from EBPFCNI_AUDIT_SLOT on count, per reason, the packets that
 * policy would have dropped and audit mode let pass: slot
 * EBPFCNI_AUDIT_SLOT + reason (the map's layout is unchanged). */
#define EBPFCNI_AUDIT_SLOT 32
_Static_assert(EBPFCNI_DROP_REASON_MAX <= EBPFCNI_AUDIT_SLOT, "a drop counter per reason");
_Static_assert(EBPFCNI_AUDIT_SLOT + EBPFCNI_DROP_REASON_MAX <= EBPFCNI_DROP_COUNTER_SLOTS,
	       "an audit counter per reason");

/* Room for a drop reason's name, with its NUL. */
#define EBPFCNI_NAME_LEN 24

/* drop_counters value (per CPU): packets dropped for the key's reason. */
struct ebpfcni_drop_count {
	__u64 packets;
};

/* What happened to a packet, in a flow event. */
enum ebpfcni_verdict : __u8 {
	EBPFCNI_VERDICT_PASS = 1,
	EBPFCNI_VERDICT_DROP = 2,
	/* Policy would have dropped it (reason says why); audit mode let it
	 * pass (config audit). */
	EBPFCNI_VERDICT_AUDIT = 3,
};

/* Why a passing packet passed, in a flow event (0 for drops). */
enum ebpfcni_pass_kind : __u8 {
	EBPFCNI_PASS_POLICY = 1,      /* a rule allowed it (7, 8); not tracked */
	EBPFCNI_PASS_NEW_FLOW = 2,    /* a stateful rule allowed it and its connection is new (9) */
	EBPFCNI_PASS_TRACKED = 3,     /* a stateful rule allowed it; the connection was tracked */
	EBPFCNI_PASS_REPLY = 4,       /* a reply of a tracked connection (4b) */
	EBPFCNI_PASS_RELATED = 5,     /* an ICMP error about a tracked connection (4b) */
	EBPFCNI_PASS_AUDIT = 6,       /* policy would have dropped it: audit mode (config audit) */
};

/* What label policy (8b) said of a flow, in its event (label) and in an
 * explained test run: which of the flow's policy numbers are set, and
 * which side's isolation dropped it. */
enum ebpfcni_label_decision {
	EBPFCNI_DECIDED_EGRESS_RULE = 0x1,     /* egress_policy: the sender's egress rule (allow or deny) */
	EBPFCNI_DECIDED_INGRESS_RULE = 0x2,    /* ingress_policy: the receiver's ingress rule */
	EBPFCNI_DECIDED_EGRESS_ISOLATED = 0x4, /* the sender is isolated for egress, no rule of its allows */
	EBPFCNI_DECIDED_INGRESS_ISOLATED = 0x8, /* the receiver is isolated for ingress, no rule allows */
	EBPFCNI_DECIDED_LABELS = 0x10,         /* label policy judged it (both identities under it) */
};

/* event_ring record: one per event, fixed size. */
struct ebpfcni_event {
	__u64 time_ns;    /* CLOCK_MONOTONIC_COARSE (a tick's resolution, 1-4 ms: the
			   * precise clock would cost an event a third more) */
	__u32 ifindex;    /* the host veth */
	__u32 src_id;     /* 0 when not (yet) known */
	__u32 dst_id;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;     /* 0 without ports; ICMP echo: the identifier */
	__be16 dport;
	__u8 protocol;
	__u8 tcp_flags;
	enum ebpfcni_verdict verdict;
	__u8 reason;      /* enum ebpfcni_drop_reason; 0 for passes */
	__u8 hook;        /* enum ebpfcni_hook */
	enum ebpfcni_pass_kind pass_kind; /* 0 for drops */
	enum ebpfcni_ct_state ct_state;   /* the connection's state after the packet; 0: not tracked */
	__u8 ct_changed;  /* the packet created the connection or changed its state */
	/* Added in the release with audit mode (the record grew from 40
	 * bytes; readers take both sizes): which label policy decided. */
	__u32 egress_policy;  /* the agent's policy number, when label says so */
	__u32 ingress_policy;
	__u8 label;           /* enum ebpfcni_label_decision bits; 0: label policy had no say */
	__u8 pad[7];          /* zero */
};
_Static_assert(sizeof(struct ebpfcni_event) == 56, "ebpfcni_event is 56 bytes");
#define EBPFCNI_EVENT_V1_SIZE 40 /* the record before egress_policy (older programs write it) */

/* Explain (policyctl explain): a test run (BPF_PROG_TEST_RUN) whose
 * __sk_buff cb[0], cb[1] hold these values is judged as any packet, but
 * the program writes no state (no connection tracked or refreshed, no
 * fragment recorded, no counter, event or trace line) and reports its
 * verdict in cb[] instead (ctx_out): cb[0] = verdict | reason << 8 |
 * pass_kind << 16 | label << 24, cb[1] = src_id, cb[2] = dst_id,
 * cb[3] = egress_policy, cb[4] = ingress_policy. Real packets never carry
 * them (the kernel's own use of cb holds small values there); the check
 * is on the verdict's path only (verdict.h). */
#define EBPFCNI_EXPLAIN_MAGIC0 0xeb9fc0deU
#define EBPFCNI_EXPLAIN_MAGIC1 0x3e7a1a1bU

/* frag_map key: a datagram being fragmented, as its fragments' IPv4
 * headers say (precedence 4a). */
struct ebpfcni_frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;     /* the IP ID */
	__u8 protocol; /* IPPROTO_* */
	__u8 pad;      /* zero */
};
_Static_assert(sizeof(struct ebpfcni_frag_key) == 12, "ebpfcni_frag_key is 12 bytes");

/* frag_map value: the verdict of the datagram's first fragment, which its
 * later fragments pass with. An entry whose expiry has passed counts as
 * absent. */
struct ebpfcni_frag_entry {
	__u64 expires_ns; /* CLOCK_MONOTONIC_COARSE, as bpf_ktime_get_coarse_ns */
	__u32 src_id;     /* the first fragment's identities (for events) */
	__u32 dst_id;
	enum ebpfcni_pass_kind pass_kind; /* how the first fragment passed */
	__u8 pad[7];
};
_Static_assert(sizeof(struct ebpfcni_frag_entry) == 24, "ebpfcni_frag_entry is 24 bytes");

/* Slots of notify_state (per CPU): flow events and trace lines each have
 * their own rate limit and counts. */
enum ebpfcni_notify {
	EBPFCNI_NOTIFY_EVENTS = 0,
	EBPFCNI_NOTIFY_TRACES = 1,
	EBPFCNI_NOTIFY_SLOTS = 2,
};

/* notify_state value (per CPU, per slot): a token bucket, and what it let
 * through or held back. The drop counters stay exact whatever these say. */
struct ebpfcni_notify_state {
	__u64 tokens;     /* in billionths of a token */
	__u64 last_ns;    /* when it was last refilled (CLOCK_MONOTONIC_COARSE) */
	__u64 written;    /* events or trace lines written */
	__u64 over_limit; /* held back by the rate limit */
	__u64 ring_full;  /* events that found the ring full */
};
_Static_assert(sizeof(struct ebpfcni_notify_state) == 40, "ebpfcni_notify_state is 40 bytes");

#endif /* EBPFCNI_H */
