"""Shared helpers for the process benchmarks: namespace guard, timed driver, output format."""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import os
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from driver import ChinwagProcess, Event  # noqa: E402

__all__ = [
    "REPO",
    "ChinwagProcess",
    "Event",
    "TimedProcess",
    "emit",
    "median",
    "node_args",
    "note",
    "percentile",
    "require_isolated_netns",
    "run",
    "stop",
]

_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1


def require_isolated_netns() -> None:
    """Exit unless this process is in a network namespace whose only interface is an up `lo`."""
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        sys.exit(
            f"refusing to run: network interfaces {names} are visible; run inside a fresh "
            "namespace, e.g. `unshare -n bash -c 'ip link set lo up; bench/run_all.sh'`"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack(
            "16sH", fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack("256s", b"lo"))[:18]
        )
    if not flags[1] & _IFF_UP:
        sys.exit("refusing to run: lo is down; run `ip link set lo up` in the namespace first")


class TimedProcess(ChinwagProcess):
    """A driver process that stamps each event with its arrival time (`_rx`, perf_counter)."""

    async def _read_stdout(self) -> None:
        """Read JSON lines, stamping each with the time the bench process read it."""
        assert self.proc is not None and self.proc.stdout is not None
        clock = time.perf_counter
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            rx = clock()
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "_unparsable", "line": line.decode(errors="replace")}
            ev["_rx"] = rx
            self.events.append(ev)
            self._new.set()
        self._new.set()


def node_args(*, discovery_port: int | None = None) -> list[str]:
    """Arguments that keep a node on loopback (and discovery off unless a port is given)."""
    args = ["--bind", "127.0.0.1", "--port", "0", "--log-level", "warning"]
    if discovery_port is None:
        return [*args, "--no-discovery"]
    return [*args, "--discovery-port", str(discovery_port)]


async def stop(*nodes: ChinwagProcess) -> None:
    """Quit nodes cleanly, killing any that does not exit in time."""
    for n in nodes:
        if n.proc is not None and n.proc.returncode is None:
            try:
                await n.quit(timeout=10)
            except Exception:
                await n.kill()


async def start_pair(workdir: Path) -> tuple[TimedProcess, TimedProcess]:
    """Start A, then B dialling it (loopback, no discovery); return both once connected
    (both stopped if that fails)."""
    a = TimedProcess(workdir / "a", *node_args(), nick="a")
    await a.start()
    b = TimedProcess(workdir / "b", *node_args(), "--peer", f"127.0.0.1:{a.port}", nick="b")
    try:
        await b.start()
        await asyncio.gather(a.wait_for_peers([b.peer_id]), b.wait_for_peers([a.peer_id]))
    except BaseException:
        await stop(a, b)
        raise
    return a, b


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by nearest rank of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return statistics.median(values)


def emit(key: str, value: float | int | str) -> None:
    """Print one figure as `key=value` on stdout (floats with 3 significant decimals)."""
    if isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    else:
        text = str(value)
    print(f"{key}={text}", flush=True)


def note(text: str) -> None:
    """Print a human note on stderr, out of the way of the figures."""
    print(f"# {text}", file=sys.stderr, flush=True)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Check the namespace, then run an async main on uvloop when available."""
    require_isolated_netns()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        import uvloop
    except ImportError:
        note("event loop of the bench process: asyncio")
        asyncio.run(main())
    else:
        note("event loop of the bench process: uvloop")
        uvloop.run(main())
