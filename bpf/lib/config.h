/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * config.h: the run-time settings (config_map), read on every packet and
 * written by policyctl without reloading the program.
 *
 * Map:  config_map (array, one entry at key 0) -> struct ebpfcni_config
 * API:  ebpfcni_config()  the settings; never NULL
 */
#ifndef EBPFCNI_LIB_CONFIG_H
#define EBPFCNI_LIB_CONFIG_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ebpfcni.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ebpfcni_config);
} config_map SEC(".maps");

/* All zero: what the program uses should key 0 ever be missing. */
static const struct ebpfcni_config ebpfcni_no_config;

/* An array lookup with a constant key is inlined by the verifier, so this
 * costs a few instructions and no helper call. The array always has key 0:
 * the fallback exists for the verifier. */
static __always_inline const struct ebpfcni_config *ebpfcni_config(void)
{
	__u32 zero = 0;
	const struct ebpfcni_config *cfg = bpf_map_lookup_elem(&config_map, &zero);

	return cfg ? cfg : &ebpfcni_no_config;
}

#endif /* EBPFCNI_LIB_CONFIG_H */
