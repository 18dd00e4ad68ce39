#!/bin/sh
# The ebpfcni benchmark suite (see BENCHMARKS.md). Needs root; installs what is
# missing through scripts/install-deps.sh bench. Run it on an idle
# machine if you can; it takes about 10 minutes. Arguments go to the traffic
# bench (e.g. --rounds 5 --seconds 10; --help lists them).
#
#   1. per-packet cost through BPF_PROG_TEST_RUN  (cargo bench -p ebpfcni-bench --bench packet_path)
#   2. control plane: endpointctl / policyctl      (cargo bench -p ebpfcni-ctl --bench cli_latency)
#      and CNI ADD+DEL beside the reference ptp     (cargo bench -p ebpfcni-cni --bench add_del)
#   3. pod-to-pod traffic and map memory           (cargo bench -p ebpfcni-bench --bench traffic)
#      and across two nodes, policy against none    (cargo bench -p ebpfcni-bench --bench cluster_traffic)
#
# Everything runs in namespaces and pin directories the suite creates and
# removes; the root network namespace is left alone. A bench that fails fails
# the run (exit status non-zero), after the others have run.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/run.sh: needs root (BPF, network namespaces, nftables)" >&2
    exit 2
fi
# Installs only what is missing (iperf3, nftables, clang-19, ...).
scripts/install-deps.sh bench
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

failed=""
bench() { # bench NAME COMMAND...: runs one bench, remembering a failure
    name=$1
    shift
    if ! "$@"; then
        echo "bench/run.sh: $name FAILED" >&2
        failed="$failed $name"
    fi
}

cargo bench --no-run --workspace --locked

echo "== 1. per-packet cost"
bench packet_path cargo bench --locked -p ebpfcni-bench --bench packet_path

echo "== 2. control plane"
bench cli_latency cargo bench --locked -p ebpfcni-ctl --bench cli_latency
bench add_del cargo bench --locked -p ebpfcni-cni --bench add_del
bench agent cargo bench --locked -p ebpfcni-agent --bench agent
bench etcd cargo bench --locked -p ebpfcni-kvstore --bench etcd
bench cluster cargo bench --locked -p ebpfcni-agent --bench cluster

echo "== 3. pod-to-pod traffic, map memory"
# The bench cleans up after itself on SIGINT/SIGTERM; the shell passes them on.
bench traffic cargo bench --locked -p ebpfcni-bench --bench traffic -- "$@"
bench cluster_traffic cargo bench --locked -p ebpfcni-bench --bench cluster_traffic

if [ -n "$failed" ]; then
    echo "bench/run.sh: failed:$failed" >&2
    exit 1
fi
