"""Sustained one-way group messages between two nodes on loopback.

N send commands are piped into node A as fast as its stdin takes them; the bench counts
the message events (own=false) node B prints until all have arrived or none came for a
while. Prints throughput_* figures (target: >= 8,000 msg/s with nothing lost).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

from _bench_common import emit, note, run, start_pair, stop

#: Seconds without a new message at B after which the rest count as lost.
IDLE_GIVE_UP_S = 10.0


async def measure(n: int, workdir: Path) -> None:
    """Start A and B, pipe n sends into A, count arrivals at B, print figures."""
    a, b = await start_pair(workdir)
    try:
        await a.say("warm-up")
        await b.wait_for("message", text="warm-up")  # also moves B's cursor past it

        texts = [f"t{i:07d}" for i in range(n)]
        blob = b"".join(json.dumps({"cmd": "send", "text": t}).encode() + b"\n" for t in texts)
        start = time.perf_counter()
        await a.send_raw(blob)
        written = time.perf_counter()

        received: list[str] = []
        last_rx = start
        while len(received) < n:
            try:
                ev = await b.wait_for("message", timeout=IDLE_GIVE_UP_S, own=False)
            except TimeoutError:
                note(f"gave up after {IDLE_GIVE_UP_S}s without a new message")
                break
            received.append(ev["text"])
            last_rx = ev["_rx"]
        elapsed = last_rx - start
        unique = set(received)
        emit("throughput_n", n)
        emit("throughput_msgs_per_s", len(unique) / elapsed if elapsed > 0 else 0.0)
        emit("throughput_elapsed_s", elapsed)
        emit("throughput_stdin_write_s", written - start)
        emit("throughput_lost", n - len(unique & set(texts)))
        emit("throughput_duplicates", len(received) - len(unique))
        emit("throughput_out_of_order", sum(1 for x, y in itertools.pairwise(received) if x > y))
        emit("throughput_sender_errors", sum(1 for ev in a.events if ev.get("event") == "error"))
    finally:
        await stop(b, a)


def main() -> None:
    """Parse options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=20_000, help="messages to send (default 20000)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
        run(lambda: measure(opts.n, Path(tmp)))


if __name__ == "__main__":
    main()
