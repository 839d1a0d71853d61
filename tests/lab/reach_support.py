"""Helpers of the reach tests and bench/reach.py: relays, invites and paths in the NAT lab.

The contract's commands (docs/reach.md): `chinwag relay` (headless; prints its peer id and
address), `--relay-peer HOST:PORT`, `{"cmd":"invite"}`, `{"cmd":"add","code":..}`,
`peers` entries and `path` events with "path" and "via".
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(2, str(Path(__file__).resolve().parents[1] / "integration"))

from it_support import ask, ask_until
from nat_support import PROMPT_S, START_S
from natlab import Site

from driver import ChinwagProcess, Event

#: Paths that do not go through a relay ("lan": the lab's public hosts share one /24).
DIRECT = ("direct", "lan")
#: Seconds a relayed pair may take to punch through (3 attempts, RTT/2 apart, in the lab).
PUNCH_S = 15.0


class LabRelay:
    """`chinwag relay` in a lab site; its peer id and "host:port" are read from stdout."""

    def __init__(self, site: Site, data_dir: Path, *args: str) -> None:
        self.site = site
        self.data_dir = data_dir
        self.args = args
        self.stderr_path = data_dir.with_name(data_dir.name + ".stderr.log")
        self.proc: asyncio.subprocess.Process | None = None
        self.peer_id = ""
        self.addr = ""

    async def start(self, timeout: float = START_S) -> LabRelay:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - closed in stop
        argv = [sys.executable, "-m", "chinwag", "relay", "--data-dir", str(self.data_dir),
                "--port", "0", "--no-discovery", "--no-upnp", "--log-level", "info",
                *self.args]  # fmt: skip
        self.proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.site.netns, *argv,
            stdout=asyncio.subprocess.PIPE, stderr=self._stderr,
        )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while not (self.peer_id and self.addr):
                line = (await self.proc.stdout.readline()).decode()
                assert line, f"relay exited: {self.log()[-2000:]}"
                if found := re.search(r"peer id (\S+)", line):
                    self.peer_id = found.group(1)
                if (found := re.search(r"address (\S+)", line)) and found.group(1).startswith(
                    self.site.addr + ":"
                ):
                    self.addr = found.group(1)
        return self

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    async def kill(self) -> None:
        """SIGKILL the relay (a crash: no goodbye to anyone)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), PROMPT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if hasattr(self, "_stderr"):
            self._stderr.close()


async def invite_code(node: ChinwagProcess, relays: int = 1) -> Event:
    """The node's invite once it names at least `relays` relays (reservations held)."""
    return await ask_until(
        node, {"cmd": "invite"}, "invite", lambda e: len(e["relays"]) >= relays, START_S
    )


async def add(node: ChinwagProcess, code: str) -> Event:
    """`add` an invite code; return contact_added."""
    return await ask(node, {"cmd": "add", "code": code}, "contact_added", PROMPT_S)


def path_of(node: ChinwagProcess, peer_id: str) -> tuple[str | None, str | None]:
    """(path, via) of peer_id as the node's events last said (peer_joined, then path)."""
    path: tuple[str | None, str | None] = (None, None)
    for ev in node.events:
        if ev.get("peer_id") != peer_id:
            continue
        if ev.get("event") == "peer_joined" or ev.get("event") == "path":
            path = (ev.get("path"), ev.get("via"))
        elif ev.get("event") == "peer_left":
            path = (None, None)
    return path


async def wait_path(
    node: ChinwagProcess, peer_id: str, paths: tuple[str, ...], timeout: float
) -> tuple[str | None, str | None]:
    """Wait until the node reaches peer_id by one of `paths`; return (path, via)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while path_of(node, peer_id)[0] not in paths:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(
                f"{node.nick}: {peer_id[:8]} reached {path_of(node, peer_id)}, not {paths}"
            )
        try:
            await node.wait_for(timeout=remaining)
        except TimeoutError:
            continue
    return path_of(node, peer_id)


async def peers_entry(node: ChinwagProcess, peer_id: str) -> dict[str, Any]:
    """The node's `peers` entry for peer_id."""
    reply = await ask(node, {"cmd": "peers"}, "peers")
    by_id = {p["peer_id"]: p for p in reply["peers"]}
    return dict(by_id[peer_id])


async def send_file(
    sender: ChinwagProcess, receiver: ChinwagProcess, path: Path, into: Path
) -> Event:
    """Offer a file; the receiver accepts it; return file_done or the refusal warning."""
    await sender.send({"cmd": "send_file", "to": receiver.peer_id, "path": str(path)})
    offer = await receiver.wait_for("file_offer", from_start=True, timeout=PROMPT_S)
    await receiver.send({"cmd": "accept_file", "id": offer["id"], "dir": str(into)})
    return await receiver.wait_for(
        pred=lambda e: (
            e.get("event") == "file_done"
            or (e.get("event") == "warning" and "relay" in e.get("message", ""))
        ),
        timeout=PROMPT_S * 3,
        from_start=True,
    )
