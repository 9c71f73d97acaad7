#!/usr/bin/env bash
# Installs the real Traefik and Envoy binaries the forward-auth tests run (filled in with
# those tests, issue 16).
set -euo pipefail
