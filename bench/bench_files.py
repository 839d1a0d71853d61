"""File transfer between two nodes on loopback: throughput, memory, chat latency meanwhile.

A offers a file (default 1 GiB of random bytes) to B, B accepts it into a fresh
downloads directory. Throughput is the file size over the time from B's accept
to B's `file_done` (which comes after the whole-file SHA-256 check and the
rename). While the file flows, the bench sends a chat message from A every 20 ms
and measures its latency to B's message event. Peak RSS (VmHWM) of both nodes
is read from /proc just before they quit.
Targets: >= 300 MB/s for 1 GiB; RSS < 120 MB on both sides; chat p99 < 20 ms.
With --private-room both nodes join a private room and A offers the file there,
so its chunks travel sealed with the file key (AES-256-GCM, docs/files.md); the
figures are then named files_private_*.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from _bench_common import TimedProcess, emit, node_args, note, percentile, run, stop

#: Seconds between two chat messages sent during the transfer.
CHAT_INTERVAL_S = 0.02


def make_file(path: Path, size: int) -> str:
    """Write size random bytes to path; return their SHA-256."""
    sha = hashlib.sha256()
    block = 16 << 20
    with path.open("wb") as f:
        left = size
        while left:
            data = os.urandom(min(block, left))
            sha.update(data)
            f.write(data)
            left -= len(data)
    return sha.hexdigest()


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident set size of a process in MB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def chat_during(a: TimedProcess, b: TimedProcess, done: asyncio.Event) -> list[float]:
    """Send a message from A every CHAT_INTERVAL_S until done; return latencies in ms."""
    assert a.proc is not None and a.proc.stdin is not None
    sent: dict[str, float] = {}
    i = 0
    while not done.is_set():
        text = f"during{i:06d}"
        sent[text] = time.perf_counter()
        a.proc.stdin.write(json.dumps({"cmd": "send", "text": text}).encode() + b"\n")
        await a.proc.stdin.drain()
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), CHAT_INTERVAL_S)
    if sent:
        await b.wait_for_message(max(sent), timeout=10)
    arrived = {
        e["text"]: e["_rx"] for e in b.events if e.get("event") == "message" and e["text"] in sent
    }
    return [(arrived[t] - sent[t]) * 1000 for t in arrived]


async def measure(size: int, workdir: Path, private_room: bool = False) -> None:
    """Run one transfer and print its figures (offered to a private room if asked)."""
    prefix = "files_private_" if private_room else "files_"
    source = workdir / "payload.bin"
    note(f"writing {size} random bytes")
    digest = make_file(source, size)
    downloads = workdir / "downloads"
    a = TimedProcess(workdir / "a", *node_args(), nick="a")
    await a.start()
    b = TimedProcess(
        workdir / "b",
        *node_args(),
        "--peer",
        f"127.0.0.1:{a.port}",
        "--downloads",
        str(downloads),
        nick="b",
    )
    await b.start()
    try:
        await asyncio.gather(a.wait_for_peers([b.peer_id]), b.wait_for_peers([a.peer_id]))
        to = b.peer_id
        if private_room:
            for n in (a, b):
                await n.send({"cmd": "join", "room": "bench", "passphrase": "bench only"})
                await n.wait_for("joined", timeout=30)
            to = "#bench"
        t0 = time.perf_counter()
        await a.send({"cmd": "send_file", "to": to, "path": str(source)})
        offer = await b.wait_for("file_offer", timeout=120)
        emit(prefix + "offer_s", time.perf_counter() - t0)
        done = asyncio.Event()
        chat = asyncio.ensure_future(chat_during(a, b, done))
        assert a.proc is not None and b.proc is not None
        cpu_a, cpu_b = cpu_seconds(a.proc.pid), cpu_seconds(b.proc.pid)
        start = time.perf_counter()
        await b.send({"cmd": "accept_file", "id": offer["id"]})
        finished = await b.wait_for("file_done", timeout=600)
        elapsed = finished["_rx"] - start
        emit(prefix + "sender_cpu_s", cpu_seconds(a.proc.pid) - cpu_a)
        emit(prefix + "receiver_cpu_s", cpu_seconds(b.proc.pid) - cpu_b)
        done.set()
        latencies = await chat
        if finished["sha256"] != digest:
            note("the received file's sha256 differs from the source's!")
        emit(prefix + "size_bytes", size)
        emit(prefix + "seconds", elapsed)
        emit(prefix + "mb_per_s", size / elapsed / 1e6)
        emit(prefix + "sender_peak_rss_mb", peak_rss_mb(a.proc.pid))
        emit(prefix + "receiver_peak_rss_mb", peak_rss_mb(b.proc.pid))
        if latencies:
            emit(prefix + "chat_n", len(latencies))
            emit(prefix + "chat_p50_ms", percentile(latencies, 50))
            emit(prefix + "chat_p99_ms", percentile(latencies, 99))
            emit(prefix + "chat_max_ms", max(latencies))
        os.unlink(finished["path"])
    finally:
        await stop(b, a)


def main() -> None:
    """Parse options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (1024)")
    ap.add_argument(
        "--private-room", action="store_true", help="offer the file to a private room (sealed)"
    )
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-", dir="/var/tmp") as tmp:
        run(lambda: measure(opts.size_mb << 20, Path(tmp), opts.private_room))


if __name__ == "__main__":
    main()
