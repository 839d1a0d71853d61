"""Drive real `chinwag --json` processes from tests and benchmarks.

A `ChinwagProcess` starts `python -m chinwag --json ...` (optionally inside a
named network namespace), writes JSON commands to its stdin and collects the
JSON events it prints on stdout. Waiting is always for an event with a timeout,
never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Event = dict[str, Any]


class ProcessExited(AssertionError):
    """The process ended while a test was waiting for one of its events."""


class ReadyFacts:
    """What a node's `ready` event tells (shared by ChinwagProcess and web_support.WebNode)."""

    ready: Event

    @property
    def peer_id(self) -> str:
        return str(self.ready["peer_id"])

    @property
    def port(self) -> int:
        return int(self.ready["port"])


#: The flags by which a test decides about the DHT node itself (exact names: a prefix match
#: would take `--no-dht-private` for `--no-dht` and start a node with the DHT on).
DHT_FLAGS = ("--no-dht", "--dht-port", "--dht-bootstrap")


def names_dht(args: list[str]) -> bool:
    """Return whether args hold one of DHT_FLAGS (alone or as `--flag=value`); if not, a
    node must be given `--no-dht` (outside pytest its default bootstrap is the public DHT)."""
    return any(a.split("=", 1)[0] in DHT_FLAGS for a in args)


class ChinwagProcess(ReadyFacts):
    """One running `chinwag --json` node."""

    def __init__(
        self,
        data_dir: Path | str,
        *args: str,
        netns: str | None = None,
        nick: str | None = None,
        env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        #: argv prefix the node runs under (e.g. `unshare -m sh -c ...`), inside any netns.
        self.wrapper = list(wrapper)
        self.args = list(args)
        self.netns = netns
        self.nick = nick
        self.env = env
        self.events: list[Event] = []
        self.ready: Event = {}
        self.proc: asyncio.subprocess.Process | None = None
        self._cursor = 0
        self._new = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.stderr_path = self.data_dir.with_name(self.data_dir.name + ".stderr.log")

    def command(self) -> list[str]:
        """The argv this process runs with."""
        argv = [sys.executable, "-m", "chinwag", "--json", "--data-dir", str(self.data_dir)]
        if self.nick is not None:
            argv += ["--nick", self.nick]
        argv += self.args
        if not names_dht(self.args):
            argv.append("--no-dht")  # a DHT node only where a test builds a DHT for it
        argv = [*self.wrapper, *argv]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    async def start(self, timeout: float = 15.0) -> Event:
        """Start the process and return its `ready` event."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.env:
            env.update(self.env)
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - closed in _cleanup
        self.proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            limit=16 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read_stdout())
        self.ready = await self.wait_for("ready", timeout=timeout, from_start=True)
        return self.ready

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "_unparsable", "line": line.decode(errors="replace")})
            self._new.set()
        self._new.set()

    async def send(self, cmd: Event) -> None:
        """Write one JSON command line to the node's stdin."""
        await self.send_raw(json.dumps(cmd).encode() + b"\n")

    async def send_raw(self, data: bytes) -> None:
        """Write raw bytes to the node's stdin."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def say(self, text: str, room: str | None = None) -> None:
        cmd: Event = {"cmd": "send", "text": text}
        if room is not None:
            cmd["room"] = room
        await self.send(cmd)

    def _matches(
        self,
        ev: Event,
        name: str | None,
        pred: Callable[[Event], bool] | None,
        match: dict[str, Any],
    ) -> bool:
        if name is not None and ev.get("event") != name:
            return False
        if any(ev.get(k) != v for k, v in match.items()):
            return False
        return pred is None or pred(ev)

    async def wait_for(
        self,
        name: str | None = None,
        pred: Callable[[Event], bool] | None = None,
        timeout: float = 10.0,
        from_start: bool = False,
        **match: Any,
    ) -> Event:
        """Return the next event (after earlier waits) matching name/pred/fields.

        With from_start=True the search covers every event seen so far.
        Raises TimeoutError (with the recent events) or ProcessExited.
        """
        pos = 0 if from_start else self._cursor
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while pos < len(self.events):
                ev = self.events[pos]
                pos += 1
                if self._matches(ev, name, pred, match):
                    if not from_start:
                        self._cursor = pos
                    return ev
            if self._reader is not None and self._reader.done():
                raise ProcessExited(
                    f"process exited ({self.returncode}) while waiting for {name} {match}; "
                    f"stderr tail: {self.stderr_tail()}"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"no {name or 'event'} {match} within {timeout}s; last events: "
                    f"{self.events[-5:]}; stderr tail: {self.stderr_tail()}"
                )
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    async def wait_for_message(self, text: str, timeout: float = 10.0) -> Event:
        """Wait for a `message` event (from any time) carrying exactly this text."""
        return await self.wait_for("message", timeout=timeout, from_start=True, text=text)

    async def wait_for_peers(self, peer_ids: Sequence[str], timeout: float = 10.0) -> None:
        """Wait until every peer id has joined and not left since."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if set(peer_ids) <= self.connected_peers():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"peers {set(peer_ids) - self.connected_peers()} not joined within {timeout}s;"
                    f" stderr tail: {self.stderr_tail()}"
                )
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    def connected_peers(self) -> set[str]:
        """Peer ids currently joined, per the peer_joined / peer_left events seen."""
        peers: set[str] = set()
        for ev in self.events:
            if ev.get("event") == "peer_joined":
                peers.add(ev["peer_id"])
            elif ev.get("event") == "peer_left":
                peers.discard(ev["peer_id"])
        return peers

    def messages(self) -> list[Event]:
        return [ev for ev in self.events if ev.get("event") == "message"]

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def stderr_tail(self, n: int = 2000) -> str:
        try:
            return self.stderr_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    async def quit(self, timeout: float = 10.0) -> int:
        """Send the quit command and wait for the process to exit."""
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self.send({"cmd": "quit"})
        return await self.wait_exit(timeout)

    async def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        self._cleanup()
        return rc

    async def kill(self) -> None:
        """SIGKILL the process (and its `ip netns exec` wrapper's child)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        await self.wait_exit()

    def _cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self._stderr.close()


@contextlib.asynccontextmanager
async def running(*nodes: ChinwagProcess) -> Any:
    """Start nodes, yield them, and always stop them (quit, then kill)."""
    try:
        for node in nodes:
            await node.start()
        yield nodes
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.returncode is None:
                try:
                    await node.quit(timeout=5)
                except Exception:
                    await node.kill()
