"""History catch-up: a newcomer fetches 10,000 stored messages from a peer.

Node A runs alone (no discovery) and is fed N send commands; once it has printed all N
own message events they are stored. Then node B starts with `--peer A` and the bench times
B's `ready` (and B's peer_joined for A) to B having printed N message events from A.
Prints catchup_* figures (target: 10,000 messages in <= 3 s, none lost or duplicated).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

from _bench_common import TimedProcess, emit, node_args, note, run, stop
from chinwag import limits

#: Seconds without a new message (at A while storing, at B while catching up) before giving up.
IDLE_GIVE_UP_S = 15.0


async def measure(n: int, workdir: Path) -> None:
    """Fill A with n messages, start B against it, time B's catch-up, print figures."""
    a = TimedProcess(workdir / "a", *node_args(), nick="a")
    b: TimedProcess | None = None
    await a.start()
    try:
        texts = [f"c{i:07d}" for i in range(n)]
        blob = b"".join(json.dumps({"cmd": "send", "text": t}).encode() + b"\n" for t in texts)
        start = time.perf_counter()
        await a.send_raw(blob)
        own: list[dict[str, object]] = []
        while len(own) < n:
            try:
                own.append(await a.wait_for("message", timeout=IDLE_GIVE_UP_S, own=True))
            except TimeoutError:
                note(f"A stored only {len(own)} of {n} messages")
                raise
        stored_s = float(own[-1]["_rx"]) - start  # type: ignore[arg-type]
        emit("catchup_store_s", stored_s)
        emit("catchup_store_msgs_per_s", n / stored_s if stored_s > 0 else 0.0)
        ids = {str(ev["id"]) for ev in own}
        expected = min(n, limits.HISTORY_OFFER)
        if expected < n:
            note(f"A offers a newcomer only its last {expected} messages (HISTORY_OFFER)")

        b = TimedProcess(workdir / "b", *node_args(), "--peer", f"127.0.0.1:{a.port}", nick="b")
        spawned = time.perf_counter()
        await b.start(timeout=30)
        ready_rx = float(b.ready["_rx"])
        joined = await b.wait_for("peer_joined", timeout=30, from_start=True, peer_id=a.peer_id)
        received: list[dict[str, object]] = []
        while len(received) < expected:
            try:
                received.append(
                    await b.wait_for("message", timeout=IDLE_GIVE_UP_S, peer_id=a.peer_id)
                )
            except TimeoutError:
                note(f"gave up after {IDLE_GIVE_UP_S}s without a new message at B")
                break
        last_rx = float(received[-1]["_rx"]) if received else ready_rx
        elapsed = last_rx - ready_rx
        got = [str(ev["id"]) for ev in received]
        unique = set(got)
        seqs = [int(ev["seq"]) for ev in received]  # type: ignore[call-overload]

        # A's receipt for its newest message: B's vector says it holds everything.
        last_id = str(own[-1]["id"])
        try:
            receipt = await a.wait_for("delivered", timeout=IDLE_GIVE_UP_S, id=last_id)
            receipt_s: float | str = float(receipt["_rx"]) - ready_rx
        except TimeoutError:
            receipt_s = "none"

        emit("catchup_msgs", len(unique))
        emit("catchup_expected", expected)
        emit("catchup_s", elapsed)
        emit("catchup_from_join_s", last_rx - float(joined["_rx"]))
        emit("catchup_msgs_per_s", len(unique) / elapsed if elapsed > 0 else 0.0)
        emit("catchup_b_start_s", ready_rx - spawned)
        emit("catchup_join_after_ready_s", float(joined["_rx"]) - ready_rx)
        emit("catchup_receipt_s", receipt_s)
        emit("catchup_lost", expected - len(unique & ids))
        emit("catchup_duplicates", len(got) - len(unique))
        emit("catchup_foreign", len(unique - ids))
        emit("catchup_out_of_order", sum(1 for x, y in itertools.pairwise(seqs) if x > y))
        emit("catchup_late_marked", sum(1 for ev in received if ev.get("late")))
        emit(
            "catchup_errors",
            sum(1 for p in (a, b) for ev in p.events if ev.get("event") == "error"),
        )
    finally:
        await stop(*(p for p in (b, a) if p is not None))


def main() -> None:
    """Parse options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=10_000, help="messages A holds (default 10000)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
        run(lambda: measure(opts.n, Path(tmp)))


if __name__ == "__main__":
    main()
