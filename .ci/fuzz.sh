#!/usr/bin/env bash
# Runs every cargo fuzz target for 30 s (fuzz/run.sh; targets, seeds and the long-run
# figures are in fuzz/README.md). cargo-fuzz is installed only when missing; the targets
# build on the machine's nightly toolchain, outside the main workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "ci: fuzz needs the nightly toolchain (rustup toolchain list shows none)" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "ci: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
# The fuzz build (nightly, coverage instrumentation, ~390 crates) takes minutes from cold; a
# target directory outside the clone lets runs on the same machine reuse it, so only
# stepgate's own crates rebuild. A new machine pays the cold build once (fuzz/README.md).
export CARGO_TARGET_DIR="${STEPGATE_FUZZ_TARGET_DIR:-$HOME/.cache/stepgate/fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR"
start=$SECONDS
fuzz/run.sh 30
echo "ci: fuzz took $((SECONDS - start))s"
