"""Drive the NAT lab: a relay host (a chinwag node and the splice), homes with nodes in them."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from punchlab import PunchLab  # noqa: E402

from driver import ChinwagProcess, Event  # noqa: E402

#: The chat room the pair uses (the relay node is not in it, so it cannot pass messages on).
ROOM = "pair"
SPLICE_PORT = 9000


class LabNode(ChinwagProcess):
    """A node in a lab namespace run by tests/lab/punch_node.py (JSON-lines API)."""

    def command(self) -> list[str]:
        argv = [sys.executable, str(HERE / "punch_node.py"), "--data-dir", str(self.data_dir)]
        if self.nick is not None:
            argv += ["--nick", self.nick]
        argv += self.args
        assert self.netns is not None
        return ["ip", "netns", "exec", self.netns, *argv]


class RelayHost:
    """The public host: a chinwag node (peers learn their observed address from it) and
    the splice server standing in for relay circuits."""

    def __init__(self, lab: PunchLab, data_dir: Path) -> None:
        self.lab = lab
        self.addr = lab.add_public_host("relay")
        self.node = LabNode(data_dir / "relay", netns=lab.ns_of("relay"), nick="relay")
        self.splice: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        await self.node.start()
        self.splice = await asyncio.create_subprocess_exec(
            *self.lab.exec_argv("relay", sys.executable, str(HERE / "splice.py"), self.addr,
                                str(SPLICE_PORT)),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.splice.stdout is not None
        line = await asyncio.wait_for(self.splice.stdout.readline(), 10)
        assert line.strip() == b"ready", line

    async def stop(self) -> None:
        if self.splice is not None and self.splice.returncode is None:
            self.splice.kill()
            await self.splice.wait()
        await stop(self.node)


async def stop(node: ChinwagProcess) -> None:
    """Quit a node if it runs, killing it if it does not go."""
    if node.proc is None or node.proc.returncode is not None:
        return
    try:
        await node.quit(5)
    except Exception:
        with contextlib.suppress(Exception):
            await node.kill()


def pair_node(
    lab: PunchLab,
    relay: RelayHost,
    data_dir: Path,
    home: str,
    token: str,
    initiator: bool,
    port: int = 47475,
    cls: type[LabNode] = LabNode,
) -> LabNode:
    """A node in `home` that reaches the other through the relay (token pairs the two)."""
    role = "initiator" if initiator else "responder"
    return cls(
        data_dir / home,
        "--port", str(port),
        "--peer", f"{relay.addr}:47475",
        "--join", ROOM,
        "--splice", f"{relay.addr}:{SPLICE_PORT}:{token}:{role}:{relay.node.peer_id}",
        netns=lab.ns_of(home),
        nick=home,
    )  # fmt: skip


def texts(node: ChinwagProcess, author: str) -> list[str]:
    return [
        str(e["text"])
        for e in node.events
        if e.get("event") == "message" and e.get("peer_id") == author and e.get("room") == ROOM
    ]


def path_events(node: ChinwagProcess) -> list[Event]:
    return [e for e in node.events if e.get("event") == "path"]
