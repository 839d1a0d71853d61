"""Hole punching in the NAT lab: success rate and time from relayed to direct, cone x cone.

Builds natlab's lab (tests/lab/natlab.py) inside this process's network namespace: a public
site running `chinwag relay`, two homes behind port-restricted cone NATs. Each of `--tries`
tries starts a fresh pair of nodes (new identities, new ports: no mapping or TIME_WAIT of
an earlier try helps); both hold a reservation at the relay, the first dials the second
through it (`connect`), and the pair punches and moves to the direct path.

- punch_success: tries whose pair reported the `path` event (direct) on both sides within
  `--limit` seconds of the relayed connection being up.
- punch_ms_*: the dialler's `peer_joined` for the other (relayed up) to the later of the
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

from natlab import NatLab, built, unavailable_reason
from punch_support import join_relayed
from reach_support import LabRelay

NODE_ARGS = ("--port", "0", "--log-level", "warning", "--no-upnp")
#: Tries per relay process (below limits.RELAY_MAX_RESERVATIONS_PER_IP = 8 per home).
RELAY_TRIES = 5


async def one_try(lab: NatLab, relay: LabRelay, work: Path, i: int, limit: float) -> float | None:
    """Run one try; return milliseconds from relayed up to direct, or None if not direct."""
    args = (*NODE_ARGS, "--relay-peer", relay.addr)
    a = TimedProcess(work / f"a{i}", *args, netns=lab.sites["cone1"].netns, nick=f"a{i}")
    b = TimedProcess(work / f"b{i}", *args, netns=lab.sites["cone2"].netns, nick=f"b{i}")
    try:
        await asyncio.gather(a.start(20), b.start(20))
        await join_relayed(a, b, relay)
        joined = await a.wait_for("peer_joined", peer_id=b.peer_id, from_start=True)
        try:
            paths = await asyncio.gather(
                a.wait_for("path", peer_id=b.peer_id, timeout=limit, from_start=True),
                b.wait_for("path", peer_id=a.peer_id, timeout=limit, from_start=True),
            )
        except TimeoutError:
            return None
        if any(p.get("path") == "relayed" for p in paths):
            return None
        return (max(p["_rx"] for p in paths) - joined["_rx"]) * 1000
    finally:
        await asyncio.gather(stop(a), stop(b))


async def measure(tries: int, limit: float, work: Path) -> None:
    with built(("relay", "public"), ("cone1", "cone"), ("cone2", "cone")) as lab:
        times: list[float] = []
        relay: LabRelay | None = None
        try:
            for i in range(tries):
                # A fresh relay every few tries: the reservations of finished tries stay
                # until they expire, and a relay grants one public address only a few.
                if i % RELAY_TRIES == 0:
                    if relay is not None:
                        await relay.stop()
                    relay = await LabRelay(lab.sites["relay"], work / f"relay{i}").start()
                ms = await one_try(lab, relay, work, i, limit)
                note(f"try {i + 1}: {'not direct' if ms is None else f'{ms:.1f} ms'}")
                if ms is not None:
                    times.append(ms)
        finally:
            if relay is not None:
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
