"""Helpers shared by the integration tests (imported by the test modules and conftest)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driver import ChinwagProcess, Event

__all__ = [
    "PROMPT_S",
    "ChinwagProcess",
    "Event",
    "NodeFactory",
    "chat_works",
    "connected",
    "count",
    "free_tcp_port",
    "stderr_has_traceback",
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
        *["--no-discovery", "--bind", "127.0.0.1", "--port", "0"],
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
