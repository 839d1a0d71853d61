#!/usr/bin/env bash
# Install chinwag with its dev tools in .venv, then run lint, types and the
# whole test suite inside a fresh network namespace (nothing leaves the machine).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'

echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy"
.venv/bin/mypy

echo "== pytest (in a fresh network namespace)"
# Ephemeral ports start above chinwag's fixed defaults (47474-47480) in the test namespace:
# otherwise a test's outgoing connection now and then takes one of them, and a test of what
# happens when a default port is taken by us finds it taken by that connection already.
ports='{ echo "49152 60999" > /proc/sys/net/ipv4/ip_local_port_range; } 2>/dev/null || true'
inner="ip link set lo up && { $ports; } && exec .venv/bin/python -m pytest -q -p no:cacheprovider \"\$@\""
if [ "$(id -u)" = 0 ]; then
    exec unshare -n bash -c "$inner" bash "$@"
elif unshare -rn true 2>/dev/null; then
    # Not root: a user namespace gives a private network; LAN tests will skip.
    exec unshare -rn bash -c "$inner" bash "$@"
else
    echo "cannot create a network namespace; run as root or enable user namespaces" >&2
    exit 1
fi
