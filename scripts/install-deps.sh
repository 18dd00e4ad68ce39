#!/usr/bin/env bash
# Installs what ebpfcni needs on a Debian/Ubuntu machine, as root, and mounts
# the bpf filesystem when it is missing. Installs only what is missing.
#
#   scripts/install-deps.sh build   # to build: clang-19, libelf, zlib, pkg-config, kernel headers, protoc and its well-known .proto files
#   scripts/install-deps.sh demo    # build + what demo.sh and demo-cluster.sh use (etcd too)
#   scripts/install-deps.sh test    # demo + what the tests use (podman, containerd)
#   scripts/install-deps.sh bench   # test + what the benchmarks use
#
# Elsewhere (or not root) it prints exactly what to install and exits 1.
set -euo pipefail

what=${1:-test}
build_pkgs=(clang-19 llvm-19 libelf-dev zlib1g-dev pkg-config linux-libc-dev libbpf-dev gcc make protobuf-compiler libprotobuf-dev)
demo_pkgs=(iproute2 iputils-ping curl busybox-static containernetworking-plugins util-linux procps etcd-server)
test_pkgs=(bpftool podman runc graphviz containerd)
bench_pkgs=(iperf3 nftables iptables)

case "$what" in
  build) pkgs=("${build_pkgs[@]}") ;;
  demo) pkgs=("${build_pkgs[@]}" "${demo_pkgs[@]}") ;;
  test) pkgs=("${build_pkgs[@]}" "${demo_pkgs[@]}" "${test_pkgs[@]}") ;;
  bench) pkgs=("${build_pkgs[@]}" "${demo_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 build|demo|test|bench" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $EUID -ne 0 || ! -x /usr/bin/apt-get ]]; then
    echo "ebpfcni needs these packages (Debian/Ubuntu names): ${missing[*]}" >&2
    echo "install them as root: apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "ebpfcni needs a Rust toolchain (stable >= 1.82): https://rustup.rs" >&2
  exit 1
fi

# The bpf filesystem (ebpfcni mounts it itself too, as Cilium's agent does).
if [[ $what != build && $EUID -eq 0 ]] && ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
  echo "mounted bpffs at /sys/fs/bpf"
fi
