"""Private messages over Olm ratchets (issue 12): DM latency next to room latency, and the
first DM to a new peer (session set-up), two nodes on loopback.

- dm_* / room_*: A sends, alternately, a room message and a DM to B at a paced rate; a
  message's latency is from the bench writing its command to A's stdin until it reads B's
  event (both pipes, commit, encryption, the TCP hop, B's side). Interleaved, so both kinds
  see the same load. Target: DM p50 within 0.5 ms of the room p50.
- first_dm_ms: a new node C dials A; as soon as the bench reads C's `peer_joined`, it asks C
  for a DM to A; the time until A shows it includes the `okeys`/`okreq` exchange, the
  pre-key message and both sessions' creation. Target: < 20 ms. Repeated `--firsts` times
  with a fresh C each time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from _bench_common import TimedProcess, emit, node_args, note, percentile, run, start_pair, stop

#: Seconds to wait for the last messages after pacing ends.
DRAIN_S = 10.0


async def paced(a: TimedProcess, to: str, prefix: str, count: int, rate: float) -> dict[str, float]:
    """Write count commands to A at rate per second, room and DM alternately; return
    text -> write time (DM texts start with prefix + "d")."""
    assert a.proc is not None and a.proc.stdin is not None
    stdin = a.proc.stdin
    sent: dict[str, float] = {}
    begin = time.perf_counter()
    for i in range(count):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if i % 2:
            text = f"{prefix}d{i:07d}"
            cmd = {"cmd": "dm", "to": to, "text": text}
        else:
            text = f"{prefix}r{i:07d}"
            cmd = {"cmd": "send", "text": text}
        sent[text] = time.perf_counter()
        stdin.write(json.dumps(cmd).encode() + b"\n")
        await stdin.drain()
    return sent


async def arrivals(b: TimedProcess, sent: dict[str, float]) -> dict[str, float]:
    """Wait for B's events of the texts in sent; return text -> read time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_S
    got: dict[str, float] = {}
    seen = 0
    while len(got) < len(sent) and loop.time() < deadline:
        for ev in b.events[seen:]:
            if ev.get("event") in ("message", "dm") and not ev.get("own") and ev["text"] in sent:
                got.setdefault(ev["text"], ev["_rx"])
        seen = len(b.events)
        b._new.clear()
        try:
            await asyncio.wait_for(b._new.wait(), max(0.01, deadline - loop.time()))
        except TimeoutError:
            break
    return got


async def timed_dm(c: TimedProcess, a: TimedProcess, text: str) -> float:
    """Milliseconds from writing C's dm command to A's `dm` event for it."""
    assert c.proc is not None and c.proc.stdin is not None
    start = time.perf_counter()
    c.proc.stdin.write(json.dumps({"cmd": "dm", "to": a.peer_id, "text": text}).encode() + b"\n")
    await c.proc.stdin.drain()
    ev = await a.wait_for("dm", timeout=DRAIN_S, text=text)
    return float((ev["_rx"] - start) * 1000)


async def latency(rate: float, duration: float, workdir: Path) -> None:
    a, b = await start_pair(workdir)
    try:
        warm = await paced(a, b.peer_id, "w", int(rate), rate)
        await arrivals(b, warm)
        count = int(rate * duration)
        sent = await paced(a, b.peer_id, "L", count, rate)
        got = await arrivals(b, sent)
        for kind, tag in (("room", "Lr"), ("dm", "Ld")):
            lat = [(got[t] - sent[t]) * 1000 for t in got if t.startswith(tag)]
            n = sum(1 for t in sent if t.startswith(tag))
            emit(f"{kind}_n", n)
            emit(f"{kind}_lost", n - len(lat))
            if lat:
                emit(f"{kind}_p50_ms", percentile(lat, 50))
                emit(f"{kind}_p99_ms", percentile(lat, 99))
    finally:
        await stop(b, a)


async def first_dms(firsts: int, workdir: Path) -> None:
    a = TimedProcess(workdir / "fa", *node_args(), nick="a")
    await a.start()
    times: list[float] = []
    seconds: list[float] = []
    try:
        for i in range(firsts):
            c = TimedProcess(
                workdir / f"c{i}", *node_args(), "--peer", f"127.0.0.1:{a.port}", nick=f"c{i}"
            )
            await c.start()
            try:
                await c.wait_for("peer_joined", timeout=DRAIN_S, peer_id=a.peer_id)
                times.append(await timed_dm(c, a, f"first-{i}"))
                # The second DM, on the session the first one set up.
                seconds.append(await timed_dm(c, a, f"second-{i}"))
            finally:
                await stop(c)
    finally:
        await stop(a)
    if times:
        emit("first_dm_n", len(times))
        emit("first_dm_p50_ms", percentile(times, 50))
        emit("first_dm_max_ms", max(times))
        emit("second_dm_p50_ms", percentile(seconds, 50))
    else:
        note("no first DM arrived")


def main() -> None:
    """Parse options and run both measurements."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=400.0, help="messages per second (400)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of measurement (5)")
    ap.add_argument("--firsts", type=int, default=10, help="first DMs to new peers (10)")
    opts = ap.parse_args()

    async def both() -> None:
        with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
            await latency(opts.rate, opts.duration, Path(tmp))
            await first_dms(opts.firsts, Path(tmp))

    run(both)


if __name__ == "__main__":
    main()
