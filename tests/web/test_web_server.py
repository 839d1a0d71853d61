"""The web server's WebSocket bridge, uploads and folder opening, against real nodes."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_web_server_support import (
    PROMPT_S,
    Opened,
    Tab,
    base,
    login,
    make_node,
    open_tab,
    require_isolation,
    start_web,
    stop_web,
    web_fixture,
)

from chinwag import events as ev
from chinwag import limits
from chinwag.node import Node
from chinwag.ui.web.bridge import RESYNC, Bridge, Client
from chinwag.ui.web.server import WebServer


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[WebServer]:
    async for server in web_fixture(tmp_path):
        yield server


@pytest.fixture
async def tab(web: WebServer) -> AsyncIterator[Tab]:
    http = await login(web)
    tab = await open_tab(http, web)
    yield tab
    await tab.close()
    await http.close()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[WebServer, Node]]:
    """A node with the web UI ("me") connected to a plain node ("bob")."""
    require_isolation()
    bob = make_node(tmp_path / "bob", "bob")
    await bob.start()
    server = await start_web(tmp_path / "me", peers=[("127.0.0.1", bob.port)])
    joined = asyncio.Event()
    if not bob.peers().peers:
        bob.subscribe(lambda e: joined.set() if isinstance(e, ev.PeerJoined) else None)
        await asyncio.wait_for(joined.wait(), PROMPT_S)
    try:
        yield server, bob
    finally:
        await stop_web(server)
        await bob.stop()


def of(tab: Tab, name: str) -> list[dict[str, Any]]:
    return [e for e in tab.events if e.get("event") == name]


async def test_a_command_gets_its_answer_and_node_events_carry_increasing_seq(
    web: WebServer, tab: Tab
) -> None:
    hello = of(tab, "hello")[0]
    assert hello["peer_id"] == web.node.identity.peer_id
    assert hello["nick"] == "me"
    assert hello["server_run"] == web.bridge.server_run
    await tab.send({"cmd": "send", "text": "hello web"})
    msg = await tab.wait_for("message", lambda e: e["text"] == "hello web")
    assert msg["own"] is True
    assert msg["author_seq"] == 1  # the author's number, renamed: `seq` numbers the stream
    assert msg["seq"] == web.bridge.seq
    await tab.send({"cmd": "peers"})
    peers = await tab.wait_for("peers")
    assert peers["peers"] == []
    assert peers["seq"] == msg["seq"]  # an answer takes no new number
    await tab.send({"cmd": "history", "room": "general", "limit": 10})
    history = await tab.wait_for("history")
    assert [m["text"] for m in history["messages"]] == ["hello web"]
    stream = [e["seq"] for e in tab.events if e["event"] not in ("hello", "peers", "history")]
    assert stream == sorted(stream)


async def test_a_bad_command_gets_an_error_and_the_socket_stays(tab: Tab) -> None:
    await tab.send({"cmd": "no_such"})
    err = await tab.wait_for("error")
    assert "unknown command" in err["message"]
    await tab.ws.send_str("{not json")
    await tab.wait_for("error", lambda e: e["message"] == "invalid JSON")
    await tab.send({"cmd": "quit"})
    await tab.wait_for("error", lambda e: "quit" in e["message"])
    await tab.send({"cmd": "rooms"})
    await tab.wait_for("rooms")


async def test_line_commands_run_through_the_line_ui_command_layer(
    web: WebServer, tab: Tab
) -> None:
    await tab.send({"cmd": "line", "text": "/help"})
    await tab.wait_for("line", lambda e: e["text"].startswith("commands:"))
    await tab.wait_for("line", lambda e: "/join ROOM" in e["text"])
    await tab.send({"cmd": "line", "text": "/join kitchen"})
    await tab.wait_for("joined", lambda e: e["room"] == "kitchen")
    await tab.send({"cmd": "line", "text": "in the kitchen", "room": "kitchen"})
    await tab.wait_for(
        "message", lambda e: e["text"] == "in the kitchen" and e["room"] == "kitchen"
    )
    await tab.send({"cmd": "line", "text": "//slash first", "room": "kitchen"})
    await tab.wait_for("message", lambda e: e["text"] == "/slash first")
    await tab.send({"cmd": "line", "text": "/nosuch"})
    await tab.wait_for("error", lambda e: "unknown command /nosuch" in e["message"])
    await tab.send({"cmd": "line", "text": "/quit"})
    await tab.wait_for("error", lambda e: "/quit" in e["message"])
    assert not web.node.stopped.is_set()


async def test_two_people_chat_and_a_private_message_reaches_the_tab(
    pair: tuple[WebServer, Node],
) -> None:
    web, bob = pair
    http = await login(web)
    async with http:
        tab = await open_tab(http, web)
        await bob.send("hi from bob")
        got = await tab.wait_for("message", lambda e: e["text"] == "hi from bob")
        assert got["nick"] == "bob"
        assert got["own"] is False
        await bob.dm("me", "psst")
        dm = await tab.wait_for("dm", lambda e: e["text"] == "psst")
        assert dm["to"] == web.node.identity.peer_id
        seen: list[ev.NodeEvent] = []
        bob.subscribe(seen.append)
        arrived = asyncio.Event()
        bob.subscribe(lambda e: arrived.set() if isinstance(e, ev.DirectMessage) else None)
        await tab.send({"cmd": "line", "text": "psst back", "room": "@bob"})
        await asyncio.wait_for(arrived.wait(), PROMPT_S)
        assert any(isinstance(e, ev.DirectMessage) and e.text == "psst back" for e in seen)
        await tab.close()


async def test_hello_lists_a_conversation_that_began_while_no_page_was_open(
    pair: tuple[WebServer, Node],
) -> None:
    web, bob = pair
    got = asyncio.Event()
    web.node.subscribe(lambda e: got.set() if isinstance(e, ev.DirectMessage) else None)
    await bob.dm("me", "while you were away")
    await asyncio.wait_for(got.wait(), PROMPT_S)
    http = await login(web)
    async with http:
        tab = await open_tab(http, web)
        hello = of(tab, "hello")[0]
        assert [c["peer_id"] for c in hello["conversations"]] == [bob.identity.peer_id]
        await tab.close()


async def test_resume_replays_what_a_tab_missed_without_duplicates(web: WebServer) -> None:
    http = await login(web)
    async with http:
        tab = await open_tab(http, web)
        await tab.send({"cmd": "send", "text": "one"})
        first = await tab.wait_for("message", lambda e: e["text"] == "one")
        await tab.close()
        for text in ("two", "three"):
            await web.node.post(text)
        again = await open_tab(http, web, since=first["seq"], server_run=web.bridge.server_run)
        await again.send({"cmd": "send", "text": "four"})
        await again.wait_for("message", lambda e: e["text"] == "four")
        texts = [e["text"] for e in of(again, "message")]
        assert texts == ["two", "three", "four"]
        seqs = [e["seq"] for e in again.events if e["event"] != "hello"]
        assert seqs == list(range(first["seq"] + 1, first["seq"] + 1 + len(seqs)))
        assert not of(again, "resync")
        await again.close()


async def test_a_seq_older_than_the_ring_or_from_another_run_gets_resync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_isolation()
    monkeypatch.setattr(limits, "WEB_REPLAY_EVENTS", 3)
    web = await start_web(tmp_path / "me")
    try:
        http = await login(web)
        async with http:
            for i in range(6):
                await web.node.post(f"m{i}")
            old = await open_tab(http, web, since=1)
            await old.wait_for("resync")
            assert not of(old, "message")
            other = await open_tab(http, web, since=web.bridge.seq, server_run="0123456789abcdef")
            await other.wait_for("resync")
            future = await open_tab(http, web, since=web.bridge.seq + 5)
            await future.wait_for("resync")
            fine = await open_tab(http, web, since=web.bridge.seq - 2)
            await fine.send({"cmd": "rooms"})
            await fine.wait_for("rooms")
            assert [e["text"] for e in of(fine, "message")] == ["m4", "m5"]
            assert not of(fine, "resync")
            for t in (old, other, future, fine):
                await t.close()
    finally:
        await stop_web(web)


class _StuckSocket:
    """A socket whose send never completes: a tab that stopped reading."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: int | None = None
        self.block = asyncio.Event()

    async def send_str(self, data: str) -> None:
        self.sent.append(data)
        await self.block.wait()

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        self.closed_with = code


class _DeafSocket(_StuckSocket):
    """A socket whose close never completes either: a tab gone silent."""

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        self.closed_with = code
        await self.block.wait()


async def test_stopping_waits_for_stuck_tabs_together_not_one_after_another(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review: each tab's close was awaited in turn, so 16 silent tabs held stop() for
    # 16 close timeouts.
    monkeypatch.setattr(limits, "WEB_CLOSE_TIMEOUT_S", 0.2)
    socks = [_DeafSocket() for _ in range(5)]
    for sock in socks:
        client = Client(web.bridge, sock)  # type: ignore[arg-type]
        client.resumed = True
        web.bridge.resume(client, web.bridge.seq, None)
    # Together: one timeout (0.2 s); one after another it would take five (1 s).
    await asyncio.wait_for(web.bridge.close(), 0.6)
    assert all(s.closed_with == aiohttp.WSCloseCode.GOING_AWAY for s in socks)
    assert not web.bridge.clients


async def _stuck_client(web: WebServer) -> tuple[Client, _StuckSocket, asyncio.Future[None]]:
    """A resumed tab on a _StuckSocket whose writer has taken hello and blocks on it."""
    sock = _StuckSocket()
    client = Client(web.bridge, sock)  # type: ignore[arg-type]
    writer = asyncio.ensure_future(client._writer())
    client.resumed = True
    web.bridge.resume(client, web.bridge.seq, None)
    await asyncio.sleep(0)  # one loop turn: the writer takes hello and blocks on it
    return client, sock, writer


async def test_a_stuck_tab_gets_resync_then_is_closed_and_never_holds_the_node(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "WEB_CLIENT_QUEUE", 5)
    client, sock, writer = await _stuck_client(web)
    for i in range(6):  # five fill the queue, the sixth finds it full
        await web.node.post(f"burst {i}")
    assert client._queue[0] == RESYNC and len(client._queue) == 1
    assert not client.closed
    for i in range(6):
        await web.node.post(f"more {i}")
    for _ in range(3):
        await asyncio.sleep(0)
    assert client.closed
    assert client not in web.bridge.clients
    assert sock.closed_with == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    await web.node.post("the node goes on")  # nothing queued for the dead tab any more
    assert not client._queue
    writer.cancel()


async def test_an_oversized_message_closes_that_socket_only(web: WebServer, tab: Tab) -> None:
    http = await login(web)
    async with http:
        big = await open_tab(http, web)
        await big.ws.send_str(json.dumps({"cmd": "send", "text": "x" * limits.WEB_MAX_WS_MESSAGE}))
        await asyncio.wait_for(big._reader, PROMPT_S)
        assert big.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await tab.send({"cmd": "send", "text": "still here"})
        await tab.wait_for("message", lambda e: e["text"] == "still here")
        assert not of(tab, "message")[0]["text"].startswith("x")


async def test_too_many_tabs_are_refused(web: WebServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "WEB_MAX_CLIENTS", 2)
    http = await login(web)
    async with http:
        tabs = [await open_tab(http, web) for _ in range(2)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{base(web)}/ws", origin=base(web))
        assert info.value.status == 503
        for t in tabs:
            await t.close()


async def test_an_upload_is_offered_to_the_peer_and_its_folder_can_be_opened(
    pair: tuple[WebServer, Node],
) -> None:
    web, bob = pair
    offers: list[ev.FileOffer] = []
    offered = asyncio.Event()

    def on_bob(event: ev.NodeEvent) -> None:
        if isinstance(event, ev.FileOffer):
            offers.append(event)
            offered.set()

    bob.subscribe(on_bob)
    http = await login(web)
    async with http:
        tab = await open_tab(http, web)
        body = b"dropped on the page\n" * 1000
        name = "../../<img src=x onerror=alert(1)>.txt"
        async with http.post(
            f"{base(web)}/upload",
            params={"to": "#general", "name": name},
            data=body,
            headers={"Origin": base(web)},
        ) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        assert answer["ok"] is True
        own = await tab.wait_for("file_offer", lambda e: e["id"] == answer["id"])
        assert own["own"] is True and own["size"] == len(body)
        assert "/" not in own["name"] and ".." not in own["name"]
        await asyncio.wait_for(offered.wait(), PROMPT_S)
        assert offers[0].id == answer["id"] and offers[0].name == own["name"]
        stored = list((web.node.config.data_dir / "uploads").glob("*/*"))
        assert len(stored) == 1 and stored[0].read_bytes() == body
        async with http.post(
            f"{base(web)}/open-folder", json={"id": answer["id"]}, headers={"Origin": base(web)}
        ) as r:
            opened = await r.json()
        assert opened == {"ok": True, "path": str(stored[0]), "opened": True}
        opener = web.opener
        assert isinstance(opener, Opened) and opener.folders == [stored[0].parent]
        async with http.post(
            f"{base(web)}/open-folder", json={"id": "zzzz"}, headers={"Origin": base(web)}
        ) as r:
            assert r.status == 404
        await tab.close()


async def test_an_upload_over_the_limit_or_to_nobody_leaves_nothing_behind(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "WEB_MAX_UPLOAD", 1000)
    http = await login(web)
    uploads = web.node.config.data_dir / "uploads"
    async with http:
        headers = {"Origin": base(web)}
        url = f"{base(web)}/upload?to=%23general&name=big.bin"
        async with http.post(url, data=b"x" * 1001, headers=headers) as r:
            assert r.status == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the stream is counted
            for _ in range(3):
                yield b"y" * 600

        async with http.post(url, data=chunks(), headers=headers) as r:
            assert r.status == 413
        async with http.post(
            f"{base(web)}/upload?to=nobody&name=a.txt", data=b"hi", headers=headers
        ) as r:
            assert r.status == 400
            assert (await r.json())["ok"] is False
    assert not uploads.exists() or not any(uploads.iterdir())


def test_a_bridge_renames_the_authors_seq_and_numbers_the_stream() -> None:
    class _Node:
        def subscribe(self, cb: object) -> None:
            self.cb = cb

    node = _Node()
    bridge = Bridge(node)  # type: ignore[arg-type]
    msg = ev.Message(
        id="i", room="general", peer_id="p", nick="n", ts=1.0, text="t", own=False, seq=7
    )
    node.cb(msg)
    node.cb(ev.Error(message="e"))
    frames = [json.loads(f) for _, f in bridge._ring]
    assert frames[0]["seq"] == 1 and frames[0]["author_seq"] == 7
    assert frames[1] == {"event": "error", "message": "e", "seq": 2}


async def test_a_file_offered_by_a_peer_is_accepted_from_the_tab_with_progress_to_done(
    pair: tuple[WebServer, Node], tmp_path: Path
) -> None:
    web, bob = pair
    src = tmp_path / "from_bob.bin"
    src.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: a few chunks
    http = await login(web)
    async with http:
        tab = await open_tab(http, web)
        offer = await bob.send_file("me", str(src))
        got = await tab.wait_for("file_offer", lambda e: e["id"] == offer.id)
        assert got["own"] is False and got["name"] == "from_bob.bin"
        await tab.send({"cmd": "accept_file", "id": offer.id[:6]})
        done = await tab.wait_for("file_done", lambda e: e["id"] == offer.id)
        with open(done["path"], "rb") as saved:
            assert saved.read() == src.read_bytes()
        progress = [e for e in of(tab, "file_progress") if e["id"] == offer.id]
        assert progress and progress[-1]["total"] == src.stat().st_size
        await tab.send({"cmd": "files"})
        listing = await tab.wait_for("files")
        assert any(f["id"] == offer.id and f["state"] == "done" for f in listing["files"])
        async with http.post(
            f"{base(web)}/open-folder", json={"id": offer.id}, headers={"Origin": base(web)}
        ) as r:
            assert (await r.json())["path"] == done["path"]
        await tab.close()


def _masked_text_frame(text: str) -> bytes:
    """One client-to-server WebSocket text frame (clients must mask; the mask may be zero)."""
    data = text.encode()
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data)]) + b"\0\0\0\0" + data


async def _stuck_tab(web: WebServer) -> asyncio.StreamWriter:
    """Open /ws with a tiny receive buffer, resume, and never read again."""
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(
        (
            "GET /ws HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{web.port}\r\n"
            f"Authorization: Bearer {web.token}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        + _masked_text_frame('{"cmd":"resume","since":0}')
    )
    await writer.drain()
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    await _until(lambda: len(web.bridge.clients) == 1)
    return writer


async def test_a_tab_that_stopped_reading_is_dropped_while_the_node_keeps_going(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "WEB_CLIENT_QUEUE", 20)
    writer = await _stuck_tab(web)
    # From now on this "tab" reads nothing: its socket buffers fill, then its queue.
    text = "y" * 4000
    posted = 0
    loop = asyncio.get_running_loop()
    slowest = 0.0
    while web.bridge.clients and posted < 5_000:
        start = loop.time()
        await web.node.post(f"{posted} {text}")
        slowest = max(slowest, loop.time() - start)
        posted += 1
    assert not web.bridge.clients, f"a tab that reads nothing still served after {posted} posts"
    assert slowest < 1.0  # never held up by the tab
    writer.close()


async def test_stopping_the_server_does_not_wait_for_ever_on_a_stuck_tab(
    tmp_path: Path,
) -> None:
    require_isolation()
    web = await start_web(tmp_path / "me")
    try:
        writer = await _stuck_tab(web)
        client = next(iter(web.bridge.clients))
        for i in range(3000):  # enough to fill the socket buffers, not the tab's queue
            await web.node.post(f"{i} " + "z" * 4000)
            if client._queue:
                break
        assert client._queue, "the socket buffers never filled"
        await asyncio.wait_for(web.stop(), limits.WEB_CLOSE_TIMEOUT_S + 5)
        writer.close()
    finally:
        await web.node.stop()


async def _until(cond: Callable[[], object], timeout: float = PROMPT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def _partial_upload(web: WebServer) -> asyncio.StreamWriter:
    """Start an upload of 1 MB, send 1,000 bytes of it and stall."""
    _, writer = await asyncio.open_connection("127.0.0.1", web.port)
    writer.write(
        (
            "POST /upload?to=%23general&name=partial.bin HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{web.port}\r\n"
            f"Authorization: Bearer {web.token}\r\n"
            "Content-Length: 1000000\r\n\r\n"
        ).encode()
        + b"p" * 1000
    )
    await writer.drain()
    await _until(lambda: any((web.node.config.data_dir / "uploads").glob("*/partial.bin")))
    return writer


async def test_an_upload_cut_off_or_stalled_at_stop_leaves_no_partial_file(
    tmp_path: Path,
) -> None:
    require_isolation()
    web = await start_web(tmp_path / "me")
    uploads = web.node.config.data_dir / "uploads"
    try:
        cut = await _partial_upload(web)
        cut.transport.abort()  # the tab is closed mid-upload
        await _until(lambda: not any(uploads.iterdir()))
        stalled = await _partial_upload(web)
        await asyncio.wait_for(web.stop(), limits.WEB_CLOSE_TIMEOUT_S + 5)
        assert not any(uploads.iterdir())
        stalled.close()
    finally:
        await web.node.stop()


async def test_the_ring_and_a_tabs_queue_are_bounded_in_size_too(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "WEB_REPLAY_CHARS", 2500)
    monkeypatch.setattr(limits, "WEB_CLIENT_QUEUE_CHARS", 2500)
    client, _, writer = await _stuck_client(web)
    for i in range(2):
        await web.node.post(f"{i} " + "q" * 1000)
    assert len(client._queue) == 2 and not client._resync_queued
    await web.node.post("2 " + "q" * 1000)  # a third would pass 2,500 characters
    assert list(client._queue) == [RESYNC]
    assert sum(len(f) for _, f in web.bridge._ring) <= 2500
    assert len(web.bridge._ring) == 2  # the oldest of three was dropped for size
    writer.cancel()


async def test_a_fresh_page_gets_no_replay_but_a_reconnecting_one_from_zero_does(
    web: WebServer,
) -> None:
    for text in ("old one", "old two"):
        await web.node.post(text)
    http = await login(web)
    async with http:
        fresh = await open_tab(http, web)  # since 0, no server_run: a page just opened
        await fresh.send({"cmd": "rooms"})
        await fresh.wait_for("rooms")
        assert not of(fresh, "message") and not of(fresh, "resync")
        back = await open_tab(http, web, since=0, server_run=web.bridge.server_run)
        await back.wait_for("message", lambda e: e["text"] == "old two")
        assert [e["text"] for e in of(back, "message")] == ["old one", "old two"]
        await fresh.close()
        await back.close()
