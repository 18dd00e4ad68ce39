#!/bin/sh
# Installs what bench/run.sh needs beyond the build toolchain, on Debian 12:
# iperf3 (TCP throughput), nftables (the comparison filters), ping, nsenter,
# sysctl, and clang-19 (builds the BPF programs, including the bench's no-op).
set -eu
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    iperf3 nftables iputils-ping util-linux procps iproute2 clang-19
