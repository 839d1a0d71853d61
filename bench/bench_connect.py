"""Connection set-up time between two nodes on loopback.

Node B listens with --no-discovery. Each round starts a fresh node A with
`--no-discovery --peer 127.0.0.1:B` and takes, on the bench's perf_counter clock:

- connect_ms: A's peer_joined event minus A's ready event (both read from A's stdout, so
  the pipe delay cancels). It covers A dialling after ready, TCP connect, the Noise XX
  handshake (3 messages, identity signatures checked), the hello exchange, and printing
  the event. If A dialled before printing ready it undercounts; then connect_b_ms helps.
- connect_b_ms: B's peer_joined for A minus A's ready (two pipes, same clock).

The node does not report its own handshake time, so the figure is measured from outside.
Target: <= 5 ms.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _bench_common import TimedProcess, emit, median, node_args, percentile, run, stop


async def measure(rounds: int, workdir: Path) -> None:
    """Start B once, then connect `rounds` fresh A nodes to it one after another."""
    b = TimedProcess(workdir / "b", *node_args(), nick="b")
    await b.start()
    a_side: list[float] = []
    b_side: list[float] = []
    try:
        for i in range(rounds + 1):
            a = TimedProcess(
                workdir / f"a{i}", *node_args(), "--peer", f"127.0.0.1:{b.port}", nick=f"a{i}"
            )
            try:
                ready = await a.start()
                joined_a = await a.wait_for("peer_joined", peer_id=b.peer_id)
                joined_b = await b.wait_for("peer_joined", from_start=True, peer_id=a.peer_id)
            finally:
                await stop(a)
            if i == 0:
                continue  # the first round warms B up (imports, caches); not counted
            a_side.append((joined_a["_rx"] - ready["_rx"]) * 1000)
            b_side.append((joined_b["_rx"] - ready["_rx"]) * 1000)
        emit("connect_rounds", rounds)
        emit("connect_ms_median", median(a_side))
        emit("connect_ms_p90", percentile(a_side, 90))
        emit("connect_ms_min", min(a_side))
        emit("connect_ms_max", max(a_side))
        emit("connect_b_ms_median", median(b_side))
        emit("connect_b_ms_max", max(b_side))
    finally:
        await stop(b)


def main() -> None:
    """Parse options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=10, help="measured connections (10)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
        run(lambda: measure(opts.rounds, Path(tmp)))


if __name__ == "__main__":
    main()
