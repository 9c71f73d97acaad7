#!/usr/bin/env bash
# Runs every cargo fuzz target briefly (filled in with fuzz/, issue 16).
set -euo pipefail
