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
