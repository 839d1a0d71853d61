"""The web server's bounds over time: uploaded copies go, sockets that never resume go,
and a stopped server's bridge stops following the node. Against a real node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from test_web_server_support import PROMPT_S, base, login, open_tab, web_fixture

from chinwag import limits
from chinwag.ui.web.server import WebServer


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[WebServer]:
    async for server in web_fixture(tmp_path):
        yield server


async def _until(cond: Callable[[], object], timeout: float = PROMPT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def _upload(http: aiohttp.ClientSession, web: WebServer, name: str) -> str:
    async with http.post(
        f"{base(web)}/upload",
        params={"to": "#general", "name": name},
        data=name.encode(),
        headers={"Origin": base(web)},
    ) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["id"])


async def test_an_uploaded_copy_goes_when_no_offer_can_serve_it(web: WebServer) -> None:
    uploads = web.node.config.data_dir / "uploads"
    http = await login(web)
    async with http:
        first = await _upload(http, web, "first.txt")
        second = await _upload(http, web, "second.txt")
        assert {p.name for p in uploads.glob("*/*")} == {"first.txt", "second.txt"}
        # Withdrawing the offer frees its copy at once; the other offer keeps its own.
        web.node.cancel_file(first)
        assert {p.name for p in uploads.glob("*/*")} == {"second.txt"}
        # A copy no offer refers to (an earlier run's, a forgotten offer's) goes too.
        stale = uploads / "0123456789abcdef"
        stale.mkdir()
        (stale / "stale.txt").write_bytes(b"old")
        await _upload(http, web, "third.txt")
        assert {p.name for p in uploads.glob("*/*")} == {"second.txt", "third.txt"}
        assert second in {f.id for f in web.node.files().files}


async def test_a_restarted_server_sweeps_copies_left_behind(web: WebServer) -> None:
    uploads = web.node.config.data_dir / "uploads"
    http = await login(web)
    async with http:
        await _upload(http, web, "kept.txt")
    left = uploads / "fedcba9876543210"
    left.mkdir()
    (left / "left.txt").write_bytes(b"old")
    await web.stop()
    await web.start()
    assert {p.name for p in uploads.glob("*/*")} == {"kept.txt"}


async def test_sockets_count_from_the_upgrade_not_from_resume(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "WEB_MAX_CLIENTS", 2)
    http = await login(web)
    async with http:
        silent = [await http.ws_connect(f"{base(web)}/ws", origin=base(web)) for _ in range(2)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{base(web)}/ws", origin=base(web))
        assert info.value.status == 503
        for ws in silent:
            await ws.close()
        # Their slots are free again once they are closed.
        await _until(lambda: not web.bridge.sockets)
        tab = await open_tab(http, web)
        await tab.close()


async def test_a_socket_that_sends_no_resume_in_time_is_closed(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "WEB_RESUME_TIMEOUT_S", 0.2)
    http = await login(web)
    async with http:
        tab = await open_tab(http, web)
        silent = await http.ws_connect(f"{base(web)}/ws", origin=base(web))
        msg = await asyncio.wait_for(silent.receive(), PROMPT_S)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert silent.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
        # The tab that did resume stays, past the same time.
        await tab.send({"cmd": "rooms"})
        await tab.wait_for("rooms")
        assert not tab.ws.closed
        await tab.close()


async def test_a_stopped_server_no_longer_follows_the_node(web: WebServer) -> None:
    await web.stop()
    seq = web.bridge.seq
    web.node.error("after the web UI stopped")
    assert web.bridge.seq == seq


async def test_a_restarted_server_follows_the_node_again(web: WebServer) -> None:
    await web.stop()
    await web.start()
    http = await login(web)
    async with http:
        tab = await open_tab(http, web)
        web.node.error("after a restart")
        await tab.wait_for("error", lambda e: e["message"] == "after a restart")
        await tab.close()
