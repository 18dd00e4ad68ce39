#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine (as root) and runs every test:
# unit tests, the datapath tests (BPF_PROG_TEST_RUN, pinned maps, real
# veths), the CLI tests, the CNI plugin tests (real netns, podman) and the
# end-to-end demo. Under CI=true, tests that cannot get root or BPF fail
# instead of skipping. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-deps.sh test

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Every binary a test runs (the agent, the plugin, the CLIs) from this tree:
# `cargo test` builds a package's binaries only for its own tests.
cargo build --workspace --locked --bins
cargo test --workspace --locked --no-fail-fast --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
sum() { grep "^test result:" "$log" | grep -Eo "[0-9]+ $1" | awk '{ n += $1 } END { print n + 0 }'; }
echo "tests: $(sum passed) passed, $(sum failed) failed"
exit "$status"
