"""Mailbox delivery: 1,000 private messages wait at a third peer for their reader.

Line a - c - b on loopback (`--peer c`, no discovery). b quits; a writes N private
messages to b (c holds them: a waits for N `mailed` events), then a quits. b starts
again and the bench times b's `ready` to b having printed N `dm` events from a.
Prints mailbox_* figures (target: 1,000 delivered within 2 s, none lost or duplicated),
and the time until a, started again while b is gone, has every message `delivered`
through the receipt b mailed back via c.

With `--met`, a and b meet first (b also dials a; one private message sets their Olm
session up), so every item travels inside their ratchet (docs/protocol.md 24.1);
without it they never meet and the items are sealed only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from _bench_common import TimedProcess, emit, node_args, note, run, stop

#: Seconds without a new event before giving up.
IDLE_GIVE_UP_S = 15.0


async def measure(n: int, workdir: Path, met: bool = False) -> None:
    """Run the scenario with n messages and print its figures."""
    c = TimedProcess(workdir / "c", *node_args(), nick="c")
    await c.start()
    hub = ("--peer", f"127.0.0.1:{c.port}")
    a = TimedProcess(workdir / "a", *node_args(), *hub, nick="a")
    await a.start()
    meet = ("--peer", f"127.0.0.1:{a.port}") if met else ()
    b = TimedProcess(workdir / "b", *node_args(), *hub, *meet, nick="b")
    procs: list[TimedProcess] = [c, a, b]
    try:
        await b.start()
        await asyncio.gather(a.wait_for_peers([c.peer_id]), b.wait_for_peers([c.peer_id]))
        b_id = b.peer_id
        if met:
            await a.send({"cmd": "dm", "to": b_id, "text": "hello"})
            await b.wait_for("dm", timeout=IDLE_GIVE_UP_S, text="hello")
        await b.quit()
        await c.wait_for("peer_left", timeout=IDLE_GIVE_UP_S, from_start=True, peer_id=b_id)

        texts = [f"m{i:06d}" for i in range(n)]
        cmds = (json.dumps({"cmd": "dm", "to": b_id, "text": t}).encode() + b"\n" for t in texts)
        start = time.perf_counter()
        await a.send_raw(b"".join(cmds))
        mailed: set[str] = set()
        while len(mailed) < n:
            try:
                ev = await a.wait_for("mailed", timeout=IDLE_GIVE_UP_S)
            except TimeoutError:
                note(f"only {len(mailed)} of {n} messages were taken by a holder")
                raise
            mailed.add(str(ev["id"]))
        emit("mailbox_mailed_s", time.perf_counter() - start)
        await a.quit()

        b2 = TimedProcess(b.data_dir, *node_args(), *hub, nick="b")
        procs.append(b2)
        await b2.start(timeout=30)
        ready_rx = float(b2.ready["_rx"])
        got: list[dict[str, object]] = []
        while len(set(str(e["id"]) for e in got)) < n:
            try:
                got.append(await b2.wait_for("dm", timeout=IDLE_GIVE_UP_S, peer_id=a.peer_id))
            except TimeoutError:
                note(f"gave up after {IDLE_GIVE_UP_S}s without a new message at b")
                break
        last_rx = float(got[-1]["_rx"]) if got else ready_rx
        ids = [str(e["id"]) for e in got]
        emit("mailbox_msgs", n)
        emit("mailbox_delivered_s", last_rx - ready_rx)
        emit("mailbox_lost", len(mailed - set(ids)))
        emit("mailbox_duplicates", len(ids) - len(set(ids)))
        emit("mailbox_text_ok", int(sorted(str(e["text"]) for e in got) == texts))
        # b mails its receipt through c, then goes; a returns and learns it from c.
        await held_for(c, a.peer_id)
        await b2.quit()
        a2 = TimedProcess(a.data_dir, *node_args(), *hub, nick="a")
        procs.append(a2)
        await a2.start(timeout=30)
        a_ready = float(a2.ready["_rx"])
        seen: set[str] = set()
        while len(seen) < n:
            try:
                ev = await a2.wait_for("delivered", timeout=IDLE_GIVE_UP_S)
            except TimeoutError:
                note(f"only {len(seen)} of {n} receipts reached a")
                break
            if int(ev["count"]) >= 1 and ev["id"] in mailed:  # type: ignore[call-overload]
                seen.add(str(ev["id"]))
        last = a2.events[-1]["_rx"] if seen else a_ready
        emit("mailbox_receipts", len(seen))
        emit("mailbox_receipts_s", float(last) - a_ready)  # type: ignore[arg-type]
    finally:
        await stop(*reversed(procs))


async def held_for(holder: TimedProcess, reader: str) -> None:
    """Wait until holder's store keeps an item for reader."""
    db = f"file:{holder.data_dir / 'chinwag.db'}?mode=ro"
    deadline = time.perf_counter() + IDLE_GIVE_UP_S
    while time.perf_counter() < deadline:
        with contextlib.closing(sqlite3.connect(db, uri=True)) as conn:
            query = "SELECT count(*) FROM mailbox WHERE recipient=?"
            if conn.execute(query, (reader,)).fetchone()[0]:
                return
        await asyncio.sleep(0.05)
    note("no receipt was held for a")


def main() -> None:
    """Parse options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=1_000, help="waiting messages (default 1000)")
    ap.add_argument("--met", action="store_true", help="a and b meet first (Olm items)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
        run(lambda: measure(opts.n, Path(tmp), opts.met))


if __name__ == "__main__":
    main()
