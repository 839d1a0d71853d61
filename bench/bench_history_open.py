"""Opening a big history: the last 100 of 1,000,000 stored messages.

Builds (once, cached under bench/results/) a data directory whose chinwag.db holds N
messages in room "general" from 5 authors, written straight through
chinwag.store.db.Store.insert_messages in batches (real bodies and ids, fake signatures:
the store does not verify). Then measures
  (a) Store.history("general", 100) in-process, and
  (b) end to end: `chinwag --json` on that data dir, from writing {"cmd":"history",...}
      to reading the history event; plus the time from spawning the process to `ready`,
      on the big database and on an empty one.
Prints db_*, history_* and ready_* figures (target: the last 100 shown in <= 50 ms).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from _bench_common import REPO, TimedProcess, emit, median, node_args, note, run, stop
from chinwag.crypto.identity import Identity
from chinwag.protocol.chat import message_id
from chinwag.protocol.messages import ChatBody, encode
from chinwag.protocol.names import DEFAULT_ROOM
from chinwag.store.db import SCHEMA_VERSION, NewMessage, Store

#: Bump when the generated content changes, so a cached database is rebuilt.
GENERATOR_VERSION = 1
AUTHORS = 5
BATCH = 10_000
LIMIT = 100
QUERY_RUNS = 20
API_RUNS = 10
READY_RUNS = 3

_VOCABULARY = (
    "the a to and of is it in that you for on with this be are have was not but we what "
    "lunch meeting build test deploy coffee later today tomorrow friday ok thanks yes no "
    "maybe done fixed broken branch merge review printer wifi kitchen release ticket bug"
)
_WORDS = _VOCABULARY.split()


def fake_text(rng: random.Random) -> str:
    """A chat-like line: mostly short, sometimes long (median 35 characters, mean 50)."""
    words = max(1, min(120, int(rng.lognormvariate(2.0, 0.8))))
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def build(path: Path, n: int, seed: int = 1) -> None:
    """Create a chinwag.db at path holding n messages of AUTHORS authors in DEFAULT_ROOM."""
    rng = random.Random(seed)
    authors = [
        (Identity.from_seed(hashlib.sha256(f"author{i}".encode()).digest()), f"user{i}")
        for i in range(AUTHORS)
    ]
    seqs = [0] * AUTHORS
    ts = int(time.time() * 1000) - n * 2_000  # about one message every 2 s, ending now
    store = Store(path)
    try:
        for lo in range(0, n, BATCH):
            rows = []
            for _ in range(min(BATCH, n - lo)):
                k = rng.randrange(AUTHORS)
                ident, nick = authors[k]
                seqs[k] += 1
                ts += rng.randint(1, 3_999)
                body = ChatBody(
                    room=DEFAULT_ROOM,
                    author=ident.public,
                    nick=nick,
                    ts=ts,
                    seq=seqs[k],
                    text=fake_text(rng),
                )
                raw = encode(body)
                rows.append(
                    NewMessage(
                        id=message_id(raw),
                        room=DEFAULT_ROOM,
                        author=ident.peer_id,
                        seq=seqs[k],
                        ts=ts,
                        nick=nick,
                        text=body.text,
                        body=raw,
                        sig=rng.randbytes(64),
                        late=False,
                        verified=True,
                    )
                )
            store.insert_messages(rows)
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        db.close()


def cached_data_dir(n: int, rebuild: bool, tmp: Path | None) -> tuple[Path, float | None]:
    """Return a data dir holding an n-message database and its build time (None if cached)."""
    name = f"history-db-g{GENERATOR_VERSION}-s{SCHEMA_VERSION}-{n}"
    base = tmp if tmp is not None else REPO / "bench" / "results"
    final = base / name
    if (final / "chinwag.db").exists() and not rebuild:
        note(f"using the cached database {final}")
        return final, None
    shutil.rmtree(final, ignore_errors=True)
    building = base / f"{name}.building"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    note(f"building {n} messages into {final} (once)")
    start = time.perf_counter()
    build(building / "chinwag.db", n)
    elapsed = time.perf_counter() - start
    building.rename(final)
    return final, elapsed


def query_times(db_path: Path, n: int) -> tuple[list[float], list[str]]:
    """Time Store.history in-process; return the times (ms, the first one cold) and last ids."""
    store = Store(db_path)
    try:
        count = store.db.execute("SELECT count(*) FROM messages").fetchone()[0]
        if count != n:
            raise SystemExit(f"{db_path} holds {count} messages, expected {n}; use --rebuild")
        times = []
        rows = []
        for _ in range(QUERY_RUNS + 1):
            start = time.perf_counter()
            rows = store.history(DEFAULT_ROOM, LIMIT)
            times.append((time.perf_counter() - start) * 1000)
        newest = store.db.execute(
            "SELECT id FROM messages ORDER BY ts DESC, author DESC, seq DESC LIMIT ?", (LIMIT,)
        ).fetchall()
    finally:
        store.close()
    ids = [r.id for r in rows]
    if len(ids) != LIMIT or ids != [r[0] for r in reversed(newest)]:
        raise SystemExit("Store.history did not return the newest messages in display order")
    return times, ids


async def time_ready(data_dir: Path, nick: str) -> tuple[float, TimedProcess]:
    """Start a node on data_dir; return seconds from spawn to its `ready` and the process."""
    p = TimedProcess(data_dir, *node_args(), nick=nick)
    start = time.perf_counter()
    await p.start(timeout=120)
    return float(p.ready["_rx"]) - start, p


async def measure(n: int, rebuild: bool, tmp: Path | None, workdir: Path) -> None:
    """Build or reuse the database, then print the query, API and ready figures."""
    data_dir, build_s = cached_data_dir(n, rebuild, tmp)
    db_path = data_dir / "chinwag.db"
    emit("db_messages", n)
    emit("db_build_s", build_s if build_s is not None else "cached")
    emit("db_file_mb", db_path.stat().st_size / 1e6)

    times, ids = query_times(db_path, n)
    emit("history_query_ms_first", times[0])
    emit("history_query_ms_median", median(times[1:]))
    emit("history_query_ms_max", max(times[1:]))

    ready_big: list[float] = []
    api: list[float] = []
    for run_no in range(READY_RUNS):
        ready_s, p = await time_ready(data_dir, "bench")
        ready_big.append(ready_s)
        try:
            if run_no == 0:
                for _ in range(API_RUNS):
                    start = time.perf_counter()
                    await p.send({"cmd": "history", "limit": LIMIT})
                    ev = await p.wait_for("history", timeout=30)
                    api.append((float(ev["_rx"]) - start) * 1000)
                    got = [m["id"] for m in ev["messages"]]
                    if got != ids:
                        raise SystemExit("the history event is not the newest 100 messages")
        finally:
            await stop(p)
    emit("history_api_ms_first", api[0])
    emit("history_api_ms_median", median(api))
    emit("history_api_ms_max", max(api))
    emit("ready_s_bigdb_first", ready_big[0])
    emit("ready_s_bigdb", median(ready_big))

    ready_empty: list[float] = []
    for run_no in range(READY_RUNS):
        ready_s, p = await time_ready(workdir / f"empty{run_no}", "bench")
        ready_empty.append(ready_s)
        await stop(p)
    emit("ready_s_emptydb", median(ready_empty))


def main() -> None:
    """Parse options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "-n", type=int, default=1_000_000, help="messages in the database (default 1000000)"
    )
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    ap.add_argument(
        "--tmp",
        action="store_true",
        help="build under a temporary directory (deleted afterwards) instead of bench/results/",
    )
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
        build_base = Path(tmp) / "db" if opts.tmp else None
        run(lambda: measure(opts.n, opts.rebuild, build_base, Path(tmp)))


if __name__ == "__main__":
    main()
