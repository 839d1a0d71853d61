"""Benchmark LAN discovery: time from two nodes being ready until each has joined the other.

Builds a two-host LAN of network namespaces (tests/lan/netlab.py), starts one
`chinwag --json` per host at the same moment, and measures, per round, the
time from the later of the two `ready` events until both have printed
`peer_joined` for the other. Every round uses fresh data directories (cold
discovery: no stored peers). Prints one line per round, then:

    discovery_ms median=<ms> worst=<ms> rounds=<n>

Needs root; run it inside a fresh network namespace so nothing leaves the machine:

    unshare -n bash -c 'ip link set lo up; .venv/bin/python bench/bench_discovery.py'
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.driver import ChinwagProcess  # noqa: E402
from tests.lan.netlab import Host, NetLab, unavailable_reason  # noqa: E402

START_S = 20.0  # seconds allowed for a node to print ready
FIND_S = 30.0  # seconds allowed for discovery before a round counts as failed


async def start_timed(node: ChinwagProcess) -> float:
    """Start a node; return the monotonic time its ready event was read."""
    await node.start(START_S)
    return time.monotonic()


async def joined_timed(node: ChinwagProcess, other: ChinwagProcess) -> float:
    """Wait until node has joined other; return the monotonic time that was seen."""
    await node.wait_for_peers([other.peer_id], FIND_S)
    return time.monotonic()


async def stop(node: ChinwagProcess) -> None:
    """Quit a node, killing it if it does not go."""
    if node.proc is None or node.proc.returncode is not None:
        return
    try:
        await node.quit(5)
    except Exception:
        await node.kill()


async def one_round(hosts: list[Host], workdir: Path, n: int, extra: list[str]) -> float:
    """Run one discovery round in fresh data dirs; return milliseconds."""
    args = ["--port", "0", "--log-level", "warning", *extra]
    a, b = (
        ChinwagProcess(workdir / f"r{n}-{h.name}", *args, netns=h.netns, nick=f"{h.name}{n}")
        for h in hosts
    )
    try:
        ready_at = await asyncio.gather(start_timed(a), start_timed(b))
        joined_at = await asyncio.gather(joined_timed(a, b), joined_timed(b, a))
    finally:
        await asyncio.gather(stop(a), stop(b))
    return max(0.0, max(joined_at) - max(ready_at)) * 1000.0


async def bench(rounds: int, extra: list[str]) -> list[float]:
    """Build the lab, run the rounds, always tear the lab down."""
    with NetLab() as lab, tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
        hosts = [lab.add_host("a"), lab.add_host("b")]
        results: list[float] = []
        for n in range(rounds):
            ms = await one_round(hosts, Path(tmp), n, extra)
            results.append(ms)
            print(f"round {n + 1:2d}: {ms:8.1f} ms", flush=True)
        return results


def main() -> int:
    """Parse arguments, check we may build namespaces, run and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds to run (default 10)")
    parser.add_argument(
        "node_args", nargs="*", help="extra chinwag arguments (after --), e.g. -- --log-level info"
    )
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_discovery.py: needs root to build network namespaces; refusing to run.",
              file=sys.stderr)  # fmt: skip
        return 2
    visible = [name for _, name in socket.if_nameindex()]
    if visible != ["lo"]:
        print(f"bench_discovery.py: interfaces {visible} are visible; run inside a fresh "
              "namespace (unshare -n); refusing to run.", file=sys.stderr)  # fmt: skip
        return 2
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench_discovery.py: {reason}; refusing to run.", file=sys.stderr)
        return 2
    results = asyncio.run(bench(opts.rounds, opts.node_args))
    print(
        f"discovery_ms median={statistics.median(results):.1f} worst={max(results):.1f} "
        f"rounds={len(results)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
