"""Security rules of the web server, each checked over a real socket against a real node."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yarl
from test_web_server_support import (
    base,
    login,
    open_tab,
    web_fixture,
)

from chinwag.ui.web.auth import COOKIE, TOKEN_FILE, Sessions, load_or_create_token
from chinwag.ui.web.server import WebServer

EXPECTED_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[WebServer]:
    async for server in web_fixture(tmp_path):
        yield server


async def test_token_sets_a_strict_httponly_cookie_and_redirects_to_root(web: WebServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base(web)}/?token={web.token}", allow_redirects=False) as r,
    ):
        assert r.status == 302
        assert r.headers["Location"] == "/"
        cookie = r.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Path=/" in cookie
        assert web.token not in cookie
    http = await login(web)
    async with http:
        async with http.get(f"{base(web)}/") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/html")
        async with http.get(f"{base(web)}/static/no/such.js") as r:
            assert r.status == 404


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/ws", "/?token=wrong"])
async def test_without_a_valid_token_or_cookie_401_and_a_page_saying_what_to_open(
    web: WebServer, path: str
) -> None:
    headers = {"Cookie": f"{COOKIE}=forged-session-id"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base(web)}{path}", headers=headers, allow_redirects=False) as r,
    ):
        assert r.status == 401
        assert "Set-Cookie" not in r.headers
        assert "link printed in the terminal" in await r.text()


async def test_bearer_token_works_for_scripts_and_a_wrong_one_does_not(web: WebServer) -> None:
    async with aiohttp.ClientSession() as http:
        good = {"Authorization": f"Bearer {web.token}"}
        async with http.get(f"{base(web)}/", headers=good) as r:
            assert r.status == 200
        bad = {"Authorization": f"Bearer {web.token[:-1]}x"}
        async with http.get(f"{base(web)}/", headers=bad) as r:
            assert r.status == 401
        ws = await http.ws_connect(f"{base(web)}/ws", headers=good)
        await ws.send_json({"cmd": "resume", "since": 0})
        hello = await ws.receive_json(timeout=5)
        assert hello["event"] == "hello"
        assert hello["peer_id"] == web.node.identity.peer_id
        await ws.close()


@pytest.mark.parametrize(
    "host", ["evil.example:{port}", "127.0.0.1:1", "localhost", "127.0.0.2:{port}", ""]
)
async def test_a_foreign_host_header_is_refused_even_with_the_token(
    web: WebServer, host: str
) -> None:
    # DNS rebinding: evil.example resolves to 127.0.0.1, the browser still says evil.example.
    headers = {"Host": host.format(port=web.port), "Authorization": f"Bearer {web.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base(web)}/?token={web.token}", headers=headers, allow_redirects=False) as r,
    ):
        assert r.status == 403
        assert "Set-Cookie" not in r.headers


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
async def test_loopback_host_names_with_our_port_are_served(web: WebServer, host: str) -> None:
    headers = {"Host": host.format(port=web.port), "Authorization": f"Bearer {web.token}"}
    async with aiohttp.ClientSession() as http, http.get(f"{base(web)}/", headers=headers) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    "origin",
    # 127.0.0.1:1 is same-SITE (SameSite cookies go there) but not same-origin: refused.
    ["http://evil.example", "null", "https://127.0.0.1:{port}", "http://127.0.0.1:1"],
)
async def test_a_cross_origin_websocket_upgrade_is_refused(web: WebServer, origin: str) -> None:
    http = await login(web)
    async with http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{base(web)}/ws", origin=origin.format(port=web.port))
        assert info.value.status == 403
        # The page's own origin gets in with the same cookie.
        tab = await open_tab(http, web)
        await tab.close()


async def test_a_websocket_upgrade_without_origin_needs_the_bearer_token(web: WebServer) -> None:
    http = await login(web)
    async with http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{base(web)}/ws")
        assert info.value.status == 403


@pytest.mark.parametrize("path", ["/upload?to=%23general&name=x.txt", "/open-folder"])
async def test_a_cross_origin_post_is_refused(web: WebServer, path: str) -> None:
    http = await login(web)
    async with http:
        for origin in ("http://evil.example", "http://127.0.0.1:1"):
            headers = {"Origin": origin}
            async with http.post(f"{base(web)}{path}", data=b"{}", headers=headers) as r:
                assert r.status == 403
        async with http.post(f"{base(web)}{path}", data=b"{}") as r:  # no Origin, cookie only
            assert r.status == 403
    uploads = web.node.config.data_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


@pytest.mark.parametrize("path", ["/", "/?token=wrong", "/static/nothing", "/ws"])
async def test_security_headers_on_every_response_and_no_cors(web: WebServer, path: str) -> None:
    http = await login(web)
    async with (
        http,
        http.get(f"{base(web)}{path}", headers={"Origin": "http://evil.example"}) as r,
    ):
        assert r.headers["Content-Security-Policy"] == EXPECTED_CSP
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]


def test_token_file_is_owner_only_random_and_rotates(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    path = tmp_path / TOKEN_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(token) >= 43  # 32 bytes of randomness, base64url: 256 bits
    assert load_or_create_token(tmp_path) == token
    rotated = load_or_create_token(tmp_path, rotate=True)
    assert rotated != token
    assert load_or_create_token(tmp_path) == rotated
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_sessions_are_bounded_and_expire() -> None:
    sessions = Sessions(ttl=0.0)
    sid = sessions.new()
    assert not sessions.valid(sid)  # ttl 0: already expired
    sessions = Sessions()
    first = sessions.new()
    for _ in range(200):
        sessions.new()
    assert len(sessions) <= 64
    assert not sessions.valid(first)


HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"


async def test_no_response_reflects_request_input_as_html(web: WebServer) -> None:
    http = await login(web)
    async with http:
        for path, params in [
            ("/", {"token": HOSTILE}),
            (f"/static/{HOSTILE}", {}),
            ("/nothing", {"x": HOSTILE}),
        ]:
            async with (
                aiohttp.ClientSession() as anon,
                anon.get(f"{base(web)}{path}", params=params, allow_redirects=False) as r,
            ):
                assert "<img" not in await r.text() and "<script>" not in await r.text()
            async with http.get(f"{base(web)}{path}", params=params) as r:
                assert "<img" not in await r.text() and "<script>" not in await r.text()
        async with http.post(
            f"{base(web)}/upload",
            params={"to": HOSTILE, "name": HOSTILE},
            data=b"x",
            headers={"Origin": base(web)},
        ) as r:
            assert r.headers["Content-Type"].startswith("application/json")
            assert r.status == 400


async def test_hostile_peer_text_travels_as_json_text_never_markup(web: WebServer) -> None:
    # The server passes peer text through as JSON strings; the page inserts it as text
    # (browser tests). Here: what the WebSocket carries is exactly the text, nothing added.
    http = await login(web)
    async with http:
        tab = await open_tab(http, web)
        await tab.send({"cmd": "send", "text": HOSTILE})
        got = await tab.wait_for("message", lambda e: e["text"] == HOSTILE)
        assert got["text"] == HOSTILE
        await tab.close()


@pytest.mark.parametrize(
    "path", ["/static/..%2fauth.py", "/static/%2e%2e/auth.py", "/static/../auth.py"]
)
async def test_static_files_never_escape_the_static_folder(web: WebServer, path: str) -> None:
    http = await login(web)
    async with http, http.get(yarl.URL(f"{base(web)}{path}", encoded=True)) as r:
        assert r.status in (403, 404)
        assert "load_or_create_token" not in await r.text()
