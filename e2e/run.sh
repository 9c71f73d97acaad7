#!/usr/bin/env bash
# Runs the browser end-to-end suite against `stepgate demo`:
#   builds the stepgate binary (a no-op after `cargo test`), installs the npm packages if
#   missing, then runs node's test runner (TAP, so CI reads "# pass N" / "# fail N").
# Screenshots and the demo's console log land in e2e/artifacts/ (emptied first).
# Exits non-zero when a test fails. Needs /usr/bin/chromium (Debian's `chromium`) and node.
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${STEPGATE_BIN:-}" ]; then
  (cd .. && cargo build --quiet --bin stepgate)
fi
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/axe-core ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
rm -rf artifacts
mkdir -p artifacts

exec node --test --test-reporter=tap "$@" tests/*.test.mjs
