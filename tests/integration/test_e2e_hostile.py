"""Hostile network input: garbage, silence and huge lengths on TCP, garbage datagrams on UDP.

After each attack the node must still run, log no traceback, and chat with a good peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from pathlib import Path

from hostile_peer import HostilePeer
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    NodeFactory,
    chat_works,
    connected,
    count,
    start_pair,
    stderr_has_traceback,
)

from chinwag.crypto.identity import Identity

#: Seconds within which the node must drop a connection that never completes a handshake
#: (the node's handshake timeout is 5 s; the rest is slack for a loaded machine).
DROP_S = 12.0
#: Seconds a good peer may take to connect while attackers hold connections open (a
#: generous bound: that it was not held up is checked by order, below, not by the clock).
GOOD_PEER_S = 10.0


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc."""
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1])
    raise AssertionError("no VmRSS")


async def wait_closed_by_peer(reader: asyncio.StreamReader, within: float) -> float:
    """Read until the node closes the connection; return the seconds it took."""
    start = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            try:
                if not await reader.read(65536):
                    break
            except (ConnectionError, OSError):
                break
    return time.monotonic() - start


async def assert_healthy(a: ChinwagProcess, b: ChinwagProcess, text: str) -> None:
    """Both nodes run, log no traceback, and chat both ways."""
    assert a.returncode is None and b.returncode is None, a.stderr_tail()
    await chat_works(a, b, text=text + " a->b")
    await chat_works(b, a, text=text + " b->a")
    for n in (a, b):
        assert not stderr_has_traceback(n), n.stderr_tail()


async def test_garbage_bytes_on_tcp(node: NodeFactory) -> None:
    """Random bytes, zeros and a fake text protocol on the TCP port do not hurt the node."""
    a, b = await start_pair(node)
    rng = random.Random(1234)
    payloads = [
        rng.randbytes(4096),
        b"\x00" * 1000,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x05hello",  # a short well-framed message that is no handshake
        b"\x00\x20" + rng.randbytes(32) + b"\x00\x40" + rng.randbytes(64),
        rng.randbytes(200_000),
    ]
    for data in payloads:
        _, writer = await asyncio.open_connection("127.0.0.1", a.port)
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    await assert_healthy(a, b, "after garbage")
    assert count(a, "peer_joined") == 1, a.events

    c = node("carol", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await c.start()
    await connected(a, c)
    await chat_works(c, a, b, text="new peer after garbage")


async def test_half_open_connections_do_not_stall_a_good_peer(node: NodeFactory) -> None:
    """Silent and stalled connections neither block a new good peer nor live forever."""
    a = node("alice", discovery=False)
    await a.start()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for i in range(6):
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
        if i % 2:
            writer.write(b"\x00\x30" + b"\x01" * 10)  # a first frame that never completes
            await writer.drain()
        conns.append((reader, writer))
    opened = time.monotonic()

    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b, within=GOOD_PEER_S)
    # Not stalled: the good peer got in while the node still held every half-open
    # connection (it drops them only at its handshake timeout).
    assert not [r for r, _ in conns if r.at_eof()], "the good peer waited for the timeouts"
    await chat_works(a, b, text="not stalled")

    remaining = DROP_S - (time.monotonic() - opened)
    await asyncio.gather(*(wait_closed_by_peer(r, remaining) for r, _ in conns))
    for _, w in conns:
        w.close()
    await assert_healthy(a, b, "after half-open")
    assert count(a, "peer_joined") == 1, a.events


async def test_huge_length_prefix(node: NodeFactory) -> None:
    """Length prefixes at and beyond every limit are refused without buffering the body."""
    a, b = await start_pair(node)
    assert a.proc is not None
    rss_before = rss_kb(a.proc.pid)
    prefixes = [b"\xff\xff", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00"]
    chunk = b"\xab" * 65536

    async def attack(prefix: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
        try:
            async with asyncio.timeout(DROP_S):
                with contextlib.suppress(ConnectionError, OSError):
                    writer.write(prefix)
                    for _ in range(128):  # up to 8 MiB of body, unless the node hangs up first
                        writer.write(chunk)
                        await writer.drain()
                await wait_closed_by_peer(reader, DROP_S)
        finally:
            writer.close()

    await asyncio.gather(*(attack(p) for p in prefixes))
    grown_mb = (rss_kb(a.proc.pid) - rss_before) / 1024
    assert grown_mb < 16, f"node grew by {grown_mb:.1f} MB while being fed huge frames"
    await assert_healthy(a, b, "after huge prefix")


async def test_garbage_datagrams_on_discovery_port(node: NodeFactory, discovery_port: int) -> None:
    """Garbage datagrams on the discovery port leave discovery and chat working."""
    a, b = node("alice"), node("bob")
    await asyncio.gather(a.start(), b.start())
    await connected(a, b)
    rng = random.Random(99)
    datagrams = [
        b"",
        b"\x00",
        rng.randbytes(100),
        b"\x00" * 512,
        rng.randbytes(513),
        rng.randbytes(65000),
        b'{"peer_id": "not-a-peer", "port": -1}',
        b'{"peer_id": 5, "port": 99999, "nick": null}',
        b"\x82\xa1a\x01\xa1b\xc0",  # msgpack-looking
        "\u00e9\u00e9\u00e9 beacon?".encode(),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for _ in range(20):
            for d in datagrams:
                for target in ("127.0.0.1", "127.255.255.255"):
                    s.sendto(d, (target, discovery_port))
    await assert_healthy(a, b, "after udp garbage")

    c = node("carol")
    await c.start()
    await asyncio.gather(
        c.wait_for_peers([a.peer_id, b.peer_id]), a.wait_for_peers([c.peer_id], timeout=PROMPT_S)
    )
    await chat_works(c, a, b, text="discovery still works")
    for n in (a, b, c):
        assert not stderr_has_traceback(n), n.stderr_tail()
    assert count(a, "peer_joined") == 2 and count(b, "peer_joined") == 2


async def test_impossible_and_future_timestamps(node: NodeFactory) -> None:
    """A chat dated outside the accepted range closes its author's connection
    (`bad_timestamp`) and is dropped when relayed; one dated more than a day ahead is not
    accepted yet, without closing; none is ever shown."""
    a, b = await start_pair(node)
    h = HostilePeer()
    await h.connect(a.port, timeout=PROMPT_S)
    await a.wait_for_peers([h.peer_id], timeout=PROMPT_S)
    await a.send({"cmd": "join", "room": "dev"})
    await a.wait_for("joined", timeout=PROMPT_S, room="dev")
    now = int(time.time() * 1000)
    h.send_chat(h.message(1, "dated in two days", ts_ms=now + 2 * 86_400_000))
    h.send_chat(h.message(1, "on time", room="dev"))  # the same connection, later
    await a.wait_for_message("on time", timeout=PROMPT_S)
    assert h.closed is None
    assert count(a, "message", text="dated in two days") == 0

    # Out of range, relayed (or pushed by an older peer that stored it): dropped, no close.
    victim = Identity.generate()
    h.send_chat(h.message(1, "relayed from year 146140482", ts_ms=2**62, author=victim))
    h.send_chat(h.message(2, "still on time", room="dev"))
    await a.wait_for_message("still on time", timeout=PROMPT_S)
    assert h.closed is None
    # Out of range from its author: the author is disconnected.
    h.send_chat(h.message(3, "in year 146140482", room="dev", ts_ms=2**62))
    closed = await h.wait_closed(PROMPT_S)
    assert h.reset or closed.code == "bad_timestamp", closed
    await h.close()
    assert count(a, "message", text="in year 146140482") == 0
    assert count(a, "message", text="relayed from year 146140482") == 0
    await assert_healthy(a, b, "after impossible timestamps")


def dial_first_id(node_id: str) -> Identity:
    """An identity the node dials at once when it hears it (a higher peer id than the node's)."""
    while True:
        ident = Identity.generate()
        if ident.peer_id > node_id:
            return ident


async def test_beacons_not_from_the_discovery_port_make_no_dial(
    node: NodeFactory, discovery_port: int
) -> None:
    """A beacon sent from another UDP port is spoofed: the node dials nobody for it."""
    from chinwag.protocol.discovery import encode_beacon

    a = node("alice")
    await a.start()
    spoof_target = socket.create_server(("127.0.0.1", 0))
    real_target = socket.create_server(("127.0.0.1", 0))
    spoof_target.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        spoofed = encode_beacon(
            dial_first_id(a.peer_id).peer_id, spoof_target.getsockname()[1], "x"
        )
        genuine = encode_beacon(dial_first_id(a.peer_id).peer_id, real_target.getsockname()[1], "y")
        # Broadcast, as nodes do (a unicast to a shared port may reach only one socket).
        target = ("127.255.255.255", discovery_port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_port:
            other_port.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            other_port.sendto(spoofed, target)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as same_port:
            same_port.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            same_port.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            same_port.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            same_port.bind(("", discovery_port))
            same_port.sendto(genuine, target)
        # The genuine beacon, sent after the spoofed one, is dialled: a barrier.
        real_target.setblocking(False)
        conn, _ = await asyncio.wait_for(loop.sock_accept(real_target), PROMPT_S)
        conn.close()
        # A dial for the spoofed beacon would have connected before that one.
        with contextlib.suppress(BlockingIOError):
            spoof_target.accept()
            raise AssertionError("the node dialled the address of a spoofed beacon")
    finally:
        spoof_target.close()
        real_target.close()
    assert not stderr_has_traceback(a), a.stderr_tail()


async def test_a_peer_closed_while_still_sending_gets_the_reason(node: NodeFactory) -> None:
    """The node closes a connection whose peer goes on sending: the peer still reads the
    goodbye with its reason. A closed socket would answer the peer's data with a reset that
    fails the peer's socket before it reads the goodbye; the node half-closes and drains."""
    a = node("a", discovery=False)
    await a.start()
    h = HostilePeer()
    await h.connect(a.port, timeout=PROMPT_S)
    await a.wait_for_peers([h.peer_id], timeout=PROMPT_S)
    assert h._writer is not None
    # Read nothing until the node has closed, so its goodbye waits in our socket's buffer.
    h._writer.transport.pause_reading()  # type: ignore[attr-defined]
    # A frame that does not decrypt, then a megabyte the node will never read.
    h._writer.write(b"\x00\x20" + bytes(32) + bytes(1_000_000))
    await a.wait_for("peer_left", timeout=PROMPT_S, peer_id=h.peer_id)
    # Still sending after the close, as a flooding peer does: a reset in answer would
    # make our socket fail before the goodbye it holds is read.
    for _ in range(20):
        if h._writer.is_closing():
            break
        h._writer.write(bytes(65536))
        await h.drain()
    h._writer.transport.resume_reading()  # type: ignore[attr-defined]
    closed = await h.wait_closed(timeout=PROMPT_S)
    assert closed.code == "decrypt_failed", closed
    assert not h.reset
    assert not stderr_has_traceback(a)
