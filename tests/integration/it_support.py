"""Helpers shared by the integration tests (imported by the test modules and conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driver import ChinwagProcess, Event

__all__ = [
    "PROMPT_S",
    "ChinwagProcess",
    "Event",
    "NodeFactory",
    "ask",
    "ask_until",
    "chat_works",
    "connected",
    "count",
    "free_tcp_port",
    "private_rooms_stored",
    "stderr_has_traceback",
    "store_leaks",
    "until",
]

#: Seconds to wait for anything that should happen "at once" on loopback.
PROMPT_S = 10.0


class NodeFactory(Protocol):
    """Signature of the `node` fixture."""

    def __call__(
        self,
        name: str,
        *args: str,
        nick: str | None = None,
        discovery: bool = True,
        data_dir: Path | None = None,
    ) -> ChinwagProcess: ...


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count(node: ChinwagProcess, name: str, **fields: Any) -> int:
    """How many events of this name with these field values the node has printed."""
    return sum(
        1
        for ev in node.events
        if ev.get("event") == name and all(ev.get(k) == v for k, v in fields.items())
    )


def stderr_has_traceback(node: ChinwagProcess) -> bool:
    """True if the node's stderr log contains a Python traceback."""
    try:
        return b"Traceback" in node.stderr_path.read_bytes()
    except OSError:
        return False


async def connected(a: ChinwagProcess, b: ChinwagProcess, within: float = PROMPT_S) -> None:
    """Wait until a and b each report the other as joined."""
    await asyncio.gather(
        a.wait_for_peers([b.peer_id], timeout=within),
        b.wait_for_peers([a.peer_id], timeout=within),
    )


async def chat_works(sender: ChinwagProcess, *receivers: ChinwagProcess, text: str) -> Event:
    """Send text from sender; wait until it is echoed (own) and delivered to every receiver."""
    await sender.say(text)
    own = await sender.wait_for("message", timeout=PROMPT_S, from_start=True, text=text)
    assert own["own"] is True, own
    for r in receivers:
        got = await r.wait_for_message(text, timeout=PROMPT_S)
        assert got["own"] is False, got
        assert got["id"] == own["id"], (got, own)
    return own


async def start_fails(data_dir: Path) -> str:
    """Start a node on data_dir expecting it to exit nonzero before `ready`; return its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "chinwag", "--json", "--data-dir", str(data_dir)],
        *["--no-discovery", "--no-dht", "--bind", "127.0.0.1", "--port", "0"],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PROMPT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode not in (0, None), (proc.returncode, out, err)
    assert b'"ready"' not in out, out
    text = err.decode(errors="replace")
    assert "traceback" not in text.lower(), text
    assert 0 < len(text.strip().splitlines()) <= 5, f"expected a short message, not a dump: {text}"
    return text


async def ask(node: ChinwagProcess, cmd: Event, answer: str, timeout: float = PROMPT_S) -> Event:
    """Send a command and return the first `answer` event printed after it."""
    before = {id(ev) for ev in node.events}
    await node.send(cmd)
    return await node.wait_for(
        answer, pred=lambda ev: id(ev) not in before, timeout=timeout, from_start=True
    )


async def ask_until(
    node: ChinwagProcess,
    cmd: Event,
    answer: str,
    cond: Callable[[Event], bool],
    timeout: float = PROMPT_S,
) -> Event:
    """Repeat a query command until its answer satisfies cond; return that answer.

    For state that no event announces (e.g. which rooms peers announced): the
    node is polled, each answer awaited, with a short pause between queries.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        reply = await ask(node, cmd, answer, timeout=max(deadline - loop.time(), 0.1))
        if cond(reply):
            return reply
        if loop.time() >= deadline:
            raise TimeoutError(f"{node.nick}: {cmd} never answered as expected; last: {reply}")
        await asyncio.sleep(0.05)


def store_leaks(data_dir: Path, needle: str) -> list[str]:
    """Where a stopped node's store holds needle: every table's cells and the raw files.

    Reads the raw bytes of chinwag.db and of its -wal and -shm files if present,
    then every cell (text or blob) of every table of chinwag.db with sqlite3.
    """
    raw = needle.encode()
    db = data_dir / "chinwag.db"
    assert db.is_file(), f"no store at {db}"
    # The raw files first: opening the database may checkpoint or remove the -wal.
    found = [
        f"file {path.name}"
        for path in sorted(data_dir.glob("chinwag.db*"))
        if raw in path.read_bytes()
    ]
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert "messages" in tables, tables
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    data = cell.encode() if isinstance(cell, str) else cell
                    if isinstance(data, bytes) and raw in data:
                        found.append(f"table {table}: {row!r}"[:300])
    return found


def private_rooms_stored(data_dir: Path) -> set[str]:
    """The private rooms (`p.`) and conversations (`dm.`) a stopped node stores messages of."""
    db = data_dir / "chinwag.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rooms = {r[0] for r in conn.execute("SELECT DISTINCT room FROM messages")}
    return {r for r in rooms if r.startswith(("p.", "dm."))}


async def until(cond: Callable[[], object], what: str, timeout: float = PROMPT_S) -> None:
    """Wait (polling every 20 ms) until cond() holds; fail naming `what` after timeout.

    For in-process state or what only the node's log tells: no event to wait on.
    """
    try:
        async with asyncio.timeout(timeout):
            while not cond():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


async def start_pair(node: NodeFactory) -> tuple[ChinwagProcess, ChinwagProcess]:
    """Node a listening, node b connected to it by --peer."""
    a = node("alice", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    return a, b


async def start_triangle(
    node: NodeFactory,
) -> tuple[ChinwagProcess, ChinwagProcess, ChinwagProcess]:
    """A - B - C (B listening, A and C dialling it), and A dials C too (--peer): with the
    gossip mesh only a room's members carry it, so B, if not one of them, is a bystander
    (docs/mesh.md)."""
    b = node("bob", discovery=False)
    await b.start()
    c = node("carol", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    await c.start()
    a = node(
        "alice", "--peer", f"127.0.0.1:{b.port}", "--peer", f"127.0.0.1:{c.port}", discovery=False
    )
    await a.start()
    await asyncio.gather(connected(a, b), connected(c, b), connected(a, c))
    return a, b, c
