"""Hole punching in the NAT lab: success rate and time from relayed to direct, cone x cone.

Builds tests/lab/punchlab.py's lab (a public relay host, two homes behind port-restricted
cone NATs) inside this process's network namespace, then runs `--tries` tries: each starts a
fresh pair of nodes (new identities, a new port, so no mapping or TIME_WAIT of an earlier
try helps), which connect relayed through the splice, punch, and move to the direct path.

- punch_success: tries whose pair reported the `path` event (direct) on both sides within
  `--limit` seconds of the relayed connection being up.
- punch_ms_*: the initiator's `peer_joined` for the other (relayed up) to the later of the
  two `path` events, on this process's clock (events stamped as they arrive).

Issue 14's target: 100% of 20 tries, median at most 1 s. Needs root and nftables.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from _bench_common import REPO, TimedProcess, emit, median, note, percentile, run, stop

sys.path.insert(0, str(REPO / "tests" / "lab"))

from punch_support import LabNode, RelayHost, pair_node
from punchlab import PunchLab, unavailable_reason


class TimedLabNode(LabNode, TimedProcess):
    """A lab node whose events carry their arrival time (`_rx`)."""


async def one_try(
    lab: PunchLab, relay: RelayHost, work: Path, i: int, limit: float
) -> float | None:
    """Run one try; return milliseconds from relayed up to direct, or None if not direct."""
    port = 47500 + i
    a = pair_node(lab, relay, work / f"t{i}", "a", f"t{i}", True, port, TimedLabNode)
    b = pair_node(lab, relay, work / f"t{i}", "b", f"t{i}", False, port, TimedLabNode)
    try:
        await asyncio.gather(a.start(), b.start())
        await asyncio.gather(
            a.wait_for("ready", from_start=True), b.wait_for("ready", from_start=True)
        )
        joined = await a.wait_for("peer_joined", peer_id=b.peer_id, timeout=20, from_start=True)
        try:
            paths = await asyncio.gather(
                a.wait_for("path", peer_id=b.peer_id, timeout=limit, from_start=True),
                b.wait_for("path", peer_id=a.peer_id, timeout=limit, from_start=True),
            )
        except TimeoutError:
            return None
        if any(p.get("path") != "direct" for p in paths):
            return None
        return (max(p["_rx"] for p in paths) - joined["_rx"]) * 1000
    finally:
        await asyncio.gather(stop(a), stop(b))


async def measure(tries: int, limit: float, work: Path) -> None:
    with PunchLab() as lab:
        relay = RelayHost(lab, work)
        lab.add_home("a", "cone")
        lab.add_home("b", "cone")
        await relay.start()
        times: list[float] = []
        try:
            for i in range(tries):
                ms = await one_try(lab, relay, work, i, limit)
                note(f"try {i + 1}: {'not direct' if ms is None else f'{ms:.1f} ms'}")
                if ms is not None:
                    times.append(ms)
        finally:
            await relay.stop()
    emit("punch_tries", tries)
    emit("punch_success", len(times))
    emit("punch_success_pct", 100.0 * len(times) / tries)
    if times:
        emit("punch_ms_median", median(times))
        emit("punch_ms_p90", percentile(times, 90))
        emit("punch_ms_min", min(times))
        emit("punch_ms_max", max(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tries", type=int, default=20, help="tries (20)")
    ap.add_argument("--limit", type=float, default=10.0, help="seconds a try may take (10)")
    opts = ap.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"cannot run: {reason}")
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-punch-") as tmp:
        run(lambda: measure(opts.tries, opts.limit, Path(tmp)))


if __name__ == "__main__":
    main()
