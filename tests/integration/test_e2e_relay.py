"""Relays end to end (docs/reach.md "Relays"): three real processes on loopback.

R is `chinwag relay` (headless); A and B start with `--relay-peer R` and no discovery,
so A and B know no address of each other. B holds a reservation at R; A asks R for a
circuit to B by peer id (`{"cmd":"connect",...}`), then they chat end to end through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    NodeFactory,
    ask,
    chat_works,
    connected,
    count,
    free_tcp_port,
    until,
)

from chinwag.crypto.identity import Identity
from chinwag.protocol.invite import read_invite

pytestmark = pytest.mark.timeout(90)


class RelayProcess:
    """One `chinwag relay` process: its peer id and address are read from its stdout."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir
        self.port = port
        self.stderr_path = data_dir.with_name(data_dir.name + ".stderr.log")
        self.proc: asyncio.subprocess.Process | None = None
        self.peer_id = ""
        self.addr = ""
        self.invite = ""

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop
        self.proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "chinwag", "relay", "--data-dir", str(self.data_dir)],
            *["--bind", "127.0.0.1", "--port", str(self.port), "--no-discovery"],
            *["--log-level", "debug"],
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.proc.stdout is not None
        while not (self.peer_id and self.addr and self.invite):
            line = (await asyncio.wait_for(self.proc.stdout.readline(), PROMPT_S)).decode()
            assert line, f"relay exited: {self.log()}"
            if found := re.search(r"peer id (\S+)", line):
                self.peer_id = found.group(1)
            if found := re.search(r"address (\S+)", line):
                self.addr = found.group(1)
            if found := re.search(r"invite (\S+)", line):
                self.invite = found.group(1)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_log(self, pattern: str, timeout: float = PROMPT_S) -> None:
        """Wait until the relay's log matches pattern (polled: the log is a file)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not re.search(pattern, self.log()):
            if loop.time() > deadline:
                raise TimeoutError(f"relay log never matched {pattern!r}:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.terminate()
        rc = await asyncio.wait_for(self.proc.wait(), PROMPT_S)
        self._stderr.close()
        return rc


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    r = RelayProcess(tmp_path / "relay")
    await r.start()
    yield r
    if r.proc is not None and r.proc.returncode is None:
        with contextlib.suppress(Exception):
            await r.stop()


async def _pair(node: NodeFactory, relay: RelayProcess) -> tuple[ChinwagProcess, ChinwagProcess]:
    """Start A and B with --relay-peer R; wait until B holds its reservation at R.

    --no-punch: on loopback a punch would always move them to a direct connection.
    """
    a = node("alice", "--relay-peer", relay.addr, "--no-punch", discovery=False)
    b = node("bob", "--relay-peer", relay.addr, "--no-punch", discovery=False)
    await a.start()
    await b.start()
    await relay.wait_log(f"reservation for {b.peer_id[:8]} granted")
    await relay.wait_log(f"reservation for {a.peer_id[:8]} granted")
    return a, b


async def _connect_via(
    a: ChinwagProcess, b: ChinwagProcess, relay: RelayProcess, **extra: str
) -> None:
    await a.send({"cmd": "connect", "peer_id": b.peer_id, "via": relay.peer_id, **extra})


def _stored_bytes(data_dir: Path) -> bytes:
    """Every byte of the node's SQLite database files (main, WAL)."""
    return b"".join(p.read_bytes() for p in data_dir.glob("chinwag.db*") if p.is_file())


async def test_chat_through_a_relay_both_ways_and_the_relay_sees_no_text(
    node: NodeFactory, relay: RelayProcess
) -> None:
    a, b = await _pair(node, relay)
    await _connect_via(a, b, relay)
    await connected(a, b)
    secret_ab, secret_ba = "pineapple-7f3a through the relay", "mango-91c2 back again"
    await chat_works(a, b, text=secret_ab)
    await chat_works(b, a, text=secret_ba)

    peers = (await ask(a, {"cmd": "peers"}, "peers"))["peers"]
    by_id = {p["peer_id"]: p for p in peers}
    assert by_id[b.peer_id]["path"] == "relayed" and by_id[b.peer_id]["via"] == relay.peer_id
    # R is reached on loopback, which is one of our interfaces' subnets.
    assert by_id[relay.peer_id]["path"] == "lan" and by_id[relay.peer_id]["via"] is None
    joined = await b.wait_for("peer_joined", from_start=True, peer_id=a.peer_id)
    assert joined["path"] == "relayed" and joined["via"] == relay.peer_id

    assert await relay.stop() == 0
    stored = _stored_bytes(relay.data_dir)
    assert stored, "the relay has a database"
    for secret in (secret_ab, secret_ba):
        assert secret.encode() not in stored
        assert secret not in relay.log()
    assert "Traceback" not in relay.log()


async def test_a_headless_relay_passes_no_chat_between_its_clients(
    node: NodeFactory, relay: RelayProcess
) -> None:
    """Clients of one relay that never dialled each other do not hear each other through it
    (its chat flood was free bandwidth for strangers, and delayed its circuits), nor learn
    of each other from it (it passes no presence record on: no direct connection either)."""
    a, b = await _pair(node, relay)
    secret = "durian-5e1d said to the relay only"
    await a.say(secret)
    await a.wait_for("message", timeout=PROMPT_S, from_start=True, text=secret)
    # The relay is in no room, so A's mesh does not push room traffic to it, and what reaches
    # it anyway (a message posted before its empty rooms frame came) it drops: B never gets
    # it. A relayed copy would take milliseconds; this negative check waits a bounded second.
    await asyncio.sleep(1.0)
    assert not [e for e in b.events if e.get("event") == "message"], b.events
    assert not [
        e for e in b.events if e.get("event") == "peer_joined" and e.get("peer_id") == a.peer_id
    ]
    assert secret not in relay.log()


async def test_a_limited_circuit_refuses_files_and_closes_at_its_byte_limit(
    node: NodeFactory, relay: RelayProcess, tmp_path: Path
) -> None:
    a, b = await _pair(node, relay)
    await _connect_via(a, b, relay)
    await connected(a, b)

    path = tmp_path / "photo.bin"
    path.write_bytes(bytes(range(256)) * 1024)  # 256 KiB: more than the circuit carries
    await a.send({"cmd": "send_file", "to": b.peer_id, "path": str(path)})
    offer = await b.wait_for("file_offer", from_start=True, timeout=PROMPT_S)
    await b.send({"cmd": "accept_file", "id": offer["id"], "dir": str(tmp_path / "in")})
    warning = await b.wait_for("warning", from_start=True, timeout=PROMPT_S)
    assert "byte-limited relay" in warning["message"], warning
    assert count(b, "file_done") == 0

    # 128 KiB each way: about 40 messages of 4 KB of text use it up; then R closes it.
    for i in range(60):
        await a.say(f"{i:03d} " + "x" * 3_900)
        if count(a, "peer_left", peer_id=b.peer_id):
            break
    await a.wait_for("peer_left", from_start=True, timeout=PROMPT_S, peer_id=b.peer_id)
    await b.wait_for("peer_left", from_start=True, timeout=PROMPT_S, peer_id=a.peer_id)
    await relay.wait_log(r"closing circuit \d+: its byte limit")


class AlteringProxy:
    """A hostile relay hop: forwards A<->R, and from the 4th frame R->A on (after the
    relay's own handshake frame, `cok` and the far end's handshake answer, i.e. inside
    the end-to-end session) flips one byte in every frame's ciphertext."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server: asyncio.Server | None = None
        self.altered = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        t1 = asyncio.create_task(self._copy(reader, up_writer, alter=False))
        t2 = asyncio.create_task(self._copy(up_reader, writer, alter=True))
        self._tasks |= {t1, t2}
        await asyncio.gather(t1, t2, return_exceptions=True)

    async def _copy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, alter: bool
    ) -> None:
        frames = 0
        try:
            while True:
                head = await reader.readexactly(2)
                body = bytearray(await reader.readexactly(int.from_bytes(head, "big")))
                frames += 1
                if alter and frames >= 4 and body:
                    body[len(body) // 2] ^= 0x01
                    self.altered += 1
                writer.write(head + bytes(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()


async def test_a_relay_that_alters_a_byte_breaks_the_session_and_nothing_forged_is_shown(
    node: NodeFactory, relay: RelayProcess
) -> None:
    a, b = await _pair(node, relay)
    host, _, port = relay.addr.rpartition(":")
    proxy = AlteringProxy((host, int(port)))
    addr = await proxy.start()
    try:
        await _connect_via(a, b, relay, addr=addr)
        # B's first frames after the handshake reach A altered: A's Noise session refuses
        # them and closes; B hears the goodbye (or the end of the circuit).
        left = await a.wait_for("peer_left", from_start=True, timeout=PROMPT_S, peer_id=b.peer_id)
        assert "authentication" in left["reason"], left
        assert proxy.altered >= 1
        await b.wait_for("peer_left", from_start=True, timeout=PROMPT_S, peer_id=a.peer_id)
        assert not [e for e in a.events if e.get("event") == "message" and not e.get("own")]
    finally:
        await proxy.stop()


async def test_clients_reserve_again_when_their_relay_comes_back(
    node: NodeFactory, tmp_path: Path
) -> None:
    relay = RelayProcess(tmp_path / "relay", port=free_tcp_port())
    await relay.start()
    try:
        a, b = await _pair(node, relay)
        first_id = relay.peer_id
        assert await relay.stop() == 0
        await a.wait_for("peer_left", from_start=True, peer_id=first_id)
        await relay.start()  # the same identity and port, a new process
        assert relay.peer_id == first_id
        # The clients redial it and reserve again (after their back-off: 2 s at first).
        await relay.wait_log(f"reservation for {b.peer_id[:8]} granted", timeout=20)
        await _connect_via(a, b, relay)
        await connected(a, b)
        await chat_works(a, b, text="through the relay again")
    finally:
        if relay.proc is not None and relay.proc.returncode is None:
            await relay.stop()


async def test_the_relay_prints_an_invite_that_adds_it_as_a_contact(
    node: NodeFactory, relay: RelayProcess
) -> None:
    invite = read_invite(relay.invite, time.time())
    assert invite.id == relay.peer_id
    assert relay.addr in invite.addrs
    a = node("alice", discovery=False)
    await a.start()
    await a.send({"cmd": "add", "code": relay.invite})
    await a.wait_for("contact_added", peer_id=relay.peer_id)
    await a.wait_for("peer_joined", from_start=True, peer_id=relay.peer_id)


async def test_a_connect_through_a_silent_relay_holds_up_nothing_and_ends_in_a_clear_error(
    node: NodeFactory,
) -> None:
    # A "relay" that accepts TCP and never says a word: the circuit dial waits it out.
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    a = node("alice", discovery=False)
    await a.start()
    target, relay_id = Identity.generate().peer_id, Identity.generate().peer_id
    try:
        await a.send(
            {"cmd": "connect", "peer_id": target, "via": relay_id, "addr": f"127.0.0.1:{port}"}
        )
        # The commands behind it are answered at once, not after the relay's time-out.
        await ask(a, {"cmd": "peers"}, "peers", timeout=2.0)
        error = await a.wait_for("error", from_start=True, timeout=PROMPT_S * 2)
        assert re.search(r"relay .*(timed out|in time)", error["message"]), error
        for bad, says in (
            ({"via": relay_id, "addr": "127.0.0.1"}, "HOST:PORT"),
            ({"via": relay_id}, "no known address for relay"),
            ({"via": target}, "its own relay"),
        ):
            before = count(a, "error")
            await a.send({"cmd": "connect", "peer_id": target, **bad})
            await until(lambda b=before: count(a, "error") > b, "an error")
            errors = [e for e in a.events if e.get("event") == "error"]
            assert says in errors[-1]["message"], errors[-1]
    finally:
        server.close()
