"""Helpers for the web server tests: a real Node on loopback with its WebServer, and clients.

No tests live here (the name only keeps it among the web server's files).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chinwag.ui.web.auth import load_or_create_token
from chinwag.ui.web.server import WebServer
from node_support import make_node as make_node

Event = dict[str, Any]
#: Seconds to wait for anything that should happen at once on loopback.
PROMPT_S = 10.0


def isolated_network() -> bool:
    """Return True if this process sees no network interface but loopback."""
    return all(name == "lo" for _, name in socket.if_nameindex())


def require_isolation() -> None:
    """Refuse to run where a node's traffic could reach a real network."""
    if not isolated_network():
        pytest.exit("web server tests start real nodes: run them inside `unshare -n`", 2)


class Opened:
    """A fake folder opener that records what it was asked to open."""

    def __init__(self) -> None:
        self.folders: list[Path] = []

    async def __call__(self, folder: Path) -> None:
        self.folders.append(folder)


async def start_web(data_dir: Path, nick: str = "me", **kw: Any) -> WebServer:
    """Start a node and its web server on 127.0.0.1, any free port."""
    node = make_node(data_dir, nick, peers=kw.pop("peers", None))
    await node.start()
    token = load_or_create_token(data_dir)
    server = WebServer(node, token, port=0, opener=kw.pop("opener", Opened()), **kw)
    await server.start()
    return server


async def stop_web(server: WebServer) -> None:
    await server.stop()
    await server.node.stop()


def base(server: WebServer) -> str:
    """The server's origin as a browser on this machine would write it."""
    return f"http://127.0.0.1:{server.port}"


async def login(server: WebServer) -> aiohttp.ClientSession:
    """Return a client session logged in through `/?token=` (the cookie is in its jar)."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.get(f"{base(server)}/?token={server.token}", allow_redirects=False) as r:
        assert r.status == 302, r.status
    return http


class Tab:
    """A WebSocket client behaving like the page: resume first, then collect events."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[Event] = []
        self._new = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(msg.data))
                self._new.set()
        self._new.set()

    async def send(self, cmd: Event) -> None:
        await self.ws.send_str(json.dumps(cmd))

    async def wait_for(
        self, name: str, pred: Callable[[Event], bool] = lambda e: True, timeout: float = PROMPT_S
    ) -> Event:
        """Return the first event `name` matching pred (already seen or still to come)."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e.get("event") == name and pred(e):
                    return e
            if self.ws.closed and self._reader.done():
                raise AssertionError(f"socket closed while waiting for {name}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name} event within {timeout} s: {self.events[-5:]}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def open_tab(
    http: aiohttp.ClientSession, server: WebServer, since: int = 0, **resume: Any
) -> Tab:
    """Open /ws with the page's Origin and send resume."""
    ws = await http.ws_connect(f"{base(server)}/ws", origin=base(server))
    tab = Tab(ws)
    await tab.send({"cmd": "resume", "since": since, **resume})
    await tab.wait_for("hello")
    return tab


async def web_fixture(tmp_path: Path) -> AsyncIterator[WebServer]:
    """Body of the `web` fixture: one node with its web server, stopped afterwards."""
    require_isolation()
    server = await start_web(tmp_path / "me")
    try:
        yield server
    finally:
        await stop_web(server)
