"""End-to-end latency between two nodes on loopback at a paced rate.

Sends `rate` messages per second into node A for `duration` seconds. A message's latency is
the time from the bench writing its send command to A's stdin until the bench reads B's
message event (both with time.perf_counter in this process), so it includes both pipes,
A's command handling, persistence and encryption, the TCP hop, and B's side.
Prints latency_* figures (target at 500 msg/s: p50 <= 0.5 ms, p99 <= 2 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from _bench_common import TimedProcess, emit, note, percentile, run, start_pair, stop

#: Seconds to wait for the last messages after pacing ends.
DRAIN_S = 10.0


async def paced_send(a: TimedProcess, prefix: str, count: int, rate: float) -> dict[str, float]:
    """Write count send commands to A at rate per second; return text -> write time."""
    assert a.proc is not None and a.proc.stdin is not None
    stdin = a.proc.stdin
    sent: dict[str, float] = {}
    interval = 1.0 / rate
    begin = time.perf_counter()
    for i in range(count):
        due = begin + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        text = f"{prefix}{i:07d}"
        line = json.dumps({"cmd": "send", "text": text}).encode() + b"\n"
        sent[text] = time.perf_counter()
        stdin.write(line)
        await stdin.drain()
    return sent


async def measure(rate: float, duration: float, workdir: Path) -> None:
    """Start A and B, run a warm-up and a measured paced phase, print figures."""
    a, b = await start_pair(workdir)
    try:
        warm = await paced_send(a, "w", int(rate), rate)
        await b.wait_for_message(max(warm), timeout=DRAIN_S)

        count = int(rate * duration)
        sent = await paced_send(a, "L", count, rate)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_S
        arrived: dict[str, float] = {}
        while len(arrived) < count and loop.time() < deadline:
            try:
                ev = await b.wait_for(
                    "message", timeout=max(0.01, deadline - loop.time()), own=False
                )
            except TimeoutError:
                break
            if ev["text"] in sent:
                arrived.setdefault(ev["text"], ev["_rx"])
        lat_ms = [(arrived[t] - sent[t]) * 1000 for t in arrived]
        if len(arrived) < count:
            note(f"{count - len(arrived)} messages did not arrive within {DRAIN_S}s")
        span = max(sent.values()) - min(sent.values())
        emit("latency_rate_msgs_per_s", (count - 1) / span if span > 0 else 0.0)
        emit("latency_n", count)
        emit("latency_lost", count - len(arrived))
        if lat_ms:
            emit("latency_p50_ms", percentile(lat_ms, 50))
            emit("latency_p90_ms", percentile(lat_ms, 90))
            emit("latency_p99_ms", percentile(lat_ms, 99))
            emit("latency_max_ms", max(lat_ms))
            emit("latency_min_ms", min(lat_ms))
    finally:
        await stop(b, a)


def main() -> None:
    """Parse options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=500.0, help="messages per second (500)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of measurement (5)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
        run(lambda: measure(opts.rate, opts.duration, Path(tmp)))


if __name__ == "__main__":
    main()
