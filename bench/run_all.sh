#!/usr/bin/env bash
# Run every chinwag benchmark; figures go to stdout as `key=value` lines, notes to stderr.
#
# Usage: bench/run_all.sh            (as root: re-runs itself inside `unshare -n`)
#        unshare -n bash -c 'ip link set lo up; bench/run_all.sh'
#
# The benchmarks start real nodes, so they only ever run in a network namespace whose
# one interface is loopback; the script refuses to run anywhere else.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-$root/.venv/bin/python}"

# Interfaces of this network namespace (/proc/net/dev is per namespace; /sys/class/net is not).
interfaces() { awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }' /proc/net/dev; }

if [[ "$(interfaces | tr '\n' ' ')" != "lo " ]]; then
    if [[ -z "${CHINWAG_BENCH_IN_NETNS:-}" ]] && unshare -n true 2>/dev/null; then
        echo "# not isolated: re-running inside a fresh network namespace (unshare -n)" >&2
        exec unshare -n env CHINWAG_BENCH_IN_NETNS=1 \
            bash -c 'ip link set lo up && exec bash "$0" "$@"' "${BASH_SOURCE[0]}" "$@"
    fi
    echo "refusing to run: interfaces $(interfaces | tr '\n' ' ')are visible;" \
        "run inside 'unshare -n' (as root)" >&2
    exit 2
fi
ip link set lo up 2>/dev/null || true

cd "$root"
status=0
for bench in throughput latency connect startup discovery catchup history_open tui_scrollback files web; do
    script="$here/bench_$bench.py"
    [[ -f "$script" ]] || continue
    echo "# bench_$bench" >&2
    "$py" "$script" || { echo "# bench_$bench failed with status $?" >&2; status=1; }
done
# Mail that waits for its reader (docs/dht.md "Mailboxes").
echo "# mailbox" >&2
"$py" "$here/mailbox.py" || { echo "# mailbox failed with status $?" >&2; status=1; }
# The NAT lab's reach figures (docs/reach.md "Figures") need root and nftables.
if [[ $EUID -eq 0 ]] && command -v nft >/dev/null 2>&1; then
    echo "# reach" >&2
    "$py" "$here/reach.py" || { echo "# reach failed with status $?" >&2; status=1; }
else
    echo "# reach skipped: the NAT lab needs root and nftables" >&2
fi
exit "$status"
