// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * redirector.bpf.c: another tc program, ahead of ebpfcni's on a pod's host
 * veth (tcx runs before clsact filters), that sends every UDP packet of the
 * pod straight to another host veth's egress (bpf_redirect): ebpfcni's
 * from-pod hook never sees those packets. Compiled by
 * tests/local_delivery.rs with TARGET_IFINDEX from redirect_target.h.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "redirect_target.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int redirector(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP)
		return TC_ACT_UNSPEC; /* TCX_NEXT: on to the next program */
	return bpf_redirect(TARGET_IFINDEX, 0);
}
