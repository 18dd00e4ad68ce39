#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine (as root) and runs every test:
# unit tests, the datapath tests (BPF_PROG_TEST_RUN, pinned maps, real
# veths), the CLI tests, the CNI plugin tests (real netns, podman) and the
# end-to-end demo. Under CI=true, tests that cannot get root or BPF fail
# instead of skipping.
set -euo pipefail
cd "$(dirname "$0")"
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-deps.sh test
cargo test --workspace --locked "$@"
