#!/usr/bin/env bash
# Builds the binaries (ebpfcni, endpointctl, policyctl, ebpfcni-agent) in release mode
# into bin/. On Debian/Ubuntu as root it first installs missing build
# dependencies; elsewhere it says exactly what to install.
set -euo pipefail
cd "$(dirname "$0")"
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-deps.sh build
cargo build --release --locked -p ebpfcni-cni -p ebpfcni-ctl -p ebpfcni-agent --bins
mkdir -p bin
for b in ebpfcni endpointctl policyctl ebpfcni-agent; do
  install -m 0755 "target/release/$b" "bin/$b"
done
echo "built: $(printf 'bin/%s ' ebpfcni endpointctl policyctl ebpfcni-agent)"
