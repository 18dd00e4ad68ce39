// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * noop.bpf.c: the baseline of the packet_path bench. A tc program that does
 * nothing, run through the same BPF_PROG_TEST_RUN harness as process_tc, so
 * that the harness's own cost (context setup, the run loop, the timer) can be
 * subtracted. Compiled by benches/packet_path.rs with clang-19 at run time.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int noop(struct __sk_buff *ctx)
{
	return TC_ACT_OK;
}

/* The trace-level check process_tc makes on its allow path, alone: an
 * inlined lookup in a one-entry array and a compare (level 0: off). Its cost
 * over noop is what tracing costs an allowed packet when it is off. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} trace_level SEC(".maps");

SEC("tc")
int trace_check(struct __sk_buff *ctx)
{
	__u32 zero = 0;
	__u32 *level = bpf_map_lookup_elem(&trace_level, &zero);

	if (level && *level >= 2)
		bpf_printk("traced");
	return TC_ACT_OK;
}
