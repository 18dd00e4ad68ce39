#!/bin/sh
# The ebpfcni benchmark suite (see BENCHMARKS.md). Needs root; installs what is
# missing through scripts/install-deps.sh bench. Run it on an idle
# machine if you can; it takes about 10 minutes. Arguments go to ebpfcni-bench
# (e.g. --rounds 5 --seconds 10; --help lists them).
#
#   1. per-packet cost through BPF_PROG_TEST_RUN  (cargo bench -p ebpfcni --bench packet_path)
#   2. control plane: endpointctl / policyctl      (cargo bench -p ebpfcni-ctl --bench cli_latency)
#      and CNI ADD+DEL beside the reference ptp     (cargo bench -p ebpfcni-cni --bench add_del)
#   3. pod-to-pod traffic and map memory           (ebpfcni-bench)
#
# Everything runs in namespaces and pin directories the suite creates and
# removes; the root network namespace is left alone.
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

cargo build --release -p ebpfcni-bench

echo "== 1. per-packet cost"
cargo bench -p ebpfcni --bench packet_path

echo "== 2. control plane"
if [ -f crates/ebpfcni-ctl/benches/cli_latency.rs ]; then
    cargo bench -p ebpfcni-ctl --bench cli_latency || echo "(control-plane bench failed; skipped)"
else
    echo "(endpointctl/policyctl not in this tree; skipped)"
fi
if [ -f crates/ebpfcni-cni/benches/add_del.rs ]; then
    cargo bench -p ebpfcni-cni --bench add_del || echo "(CNI ADD+DEL bench failed; skipped)"
else
    echo "(CNI plugin not in this tree; skipped)"
fi

echo "== 3. pod-to-pod traffic, map memory"
bin="${CARGO_TARGET_DIR:-target}/release/ebpfcni-bench"
"$bin" "$@" &
pid=$!
# ebpfcni-bench cleans up after itself on SIGINT/SIGTERM; pass them on.
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM
status=0
wait "$pid" || status=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid" || status=$?; done

# Should it have been killed outright: its namespaces and pin directories
# carry its pid ("...-<pid>x<n>").
for ns in $(ip netns list | awk '{print $1}' | grep -E "^ebpfcni-bench-.*-${pid}x[0-9]+\$" || true); do
    echo "removing leftover netns $ns" >&2
    ip netns del "$ns" || true
done
for dir in /sys/fs/bpf/ebpfcni_test_bench_*_"${pid}"x*; do
    [ -d "$dir" ] || continue
    echo "removing leftover pin directory $dir" >&2
    rm -rf "$dir"
done
exit "$status"
