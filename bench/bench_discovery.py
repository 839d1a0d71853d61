"""Benchmark LAN discovery: time from two nodes being ready until each has joined the other.

Builds a LAN of network namespaces (tests/lan/netlab.py; two hosts by default,
`--hosts N` for more), starts one `chinwag --json` per host at the same moment,
and measures, per round, the time from the last `ready` event until every node
has printed `peer_joined` for every other one. Every round uses fresh data
directories (cold discovery: no stored peers). Prints one line per round, then:

    discovery_ms median=<ms> worst=<ms> rounds=<n> hosts=<N>

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


async def meshed_timed(node: ChinwagProcess, others: list[ChinwagProcess]) -> float:
    """Wait until node has joined every other node; return the monotonic time that was seen."""
    await node.wait_for_peers([o.peer_id for o in others], FIND_S)
    return time.monotonic()


async def stop(node: ChinwagProcess) -> None:
    """Quit a node, killing it if it does not go."""
    if node.proc is None or node.proc.returncode is not None:
        return
    try:
        await node.quit(5)
    except Exception:
        await node.kill()


async def one_round(
    hosts: list[Host], workdir: Path, n: int, extra: list[str]
) -> tuple[float, float]:
    """Run one discovery round in fresh data dirs; return (discovery, ready skew) in ms."""
    args = ["--port", "0", "--log-level", "warning", *extra]
    nodes = [
        ChinwagProcess(workdir / f"r{n}-{h.name}", *args, netns=h.netns, nick=f"{h.name}{n}")
        for h in hosts
    ]
    try:
        ready_at = await asyncio.gather(*(start_timed(p) for p in nodes))
        joined_at = await asyncio.gather(
            *(meshed_timed(p, [o for o in nodes if o is not p]) for p in nodes)
        )
    finally:
        await asyncio.gather(*(stop(p) for p in nodes))
    discovery = max(0.0, max(joined_at) - max(ready_at))
    return discovery * 1000.0, (max(ready_at) - min(ready_at)) * 1000.0


async def bench(rounds: int, n_hosts: int, extra: list[str]) -> list[float]:
    """Build the lab, run the rounds, always tear the lab down."""
    with NetLab() as lab, tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
        hosts = [lab.add_host(f"h{i}") for i in range(1, n_hosts + 1)]
        results: list[float] = []
        for n in range(rounds):
            ms, skew = await one_round(hosts, Path(tmp), n, extra)
            results.append(ms)
            print(f"round {n + 1:2d}: {ms:8.1f} ms  (ready skew {skew:6.1f} ms)", flush=True)
        return results


def main() -> int:
    """Parse arguments, check we may build namespaces, run and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds to run (default 10)")
    parser.add_argument(
        "--hosts", type=int, default=2, help="hosts on the bridge, one node each (default 2)"
    )
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
    results = asyncio.run(bench(opts.rounds, opts.hosts, opts.node_args))
    print(
        f"discovery_ms median={statistics.median(results):.1f} worst={max(results):.1f} "
        f"rounds={len(results)} hosts={opts.hosts}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
