"""The web UI served to the LAN (an interface in the test's own namespace), QR, launch."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from test_web_server_support import Opened, login, require_isolation, start_web, stop_web

from chinwag.ui.web.auth import allowed_hosts, origin_ok
from chinwag.ui.web.launch import print_qr, write_open_page

LAN_ADDR = "10.97.0.1"


@pytest.fixture
def lan_address() -> Iterator[str]:
    """Give this (isolated) namespace a non-loopback address (on a veth pair kept inside it)."""
    require_isolation()
    try:
        subprocess.run(
            ["ip", "link", "add", "cwdummy0", "type", "veth", "peer", "name", "cwdummy1"],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot create a veth pair here (needs root in a namespace): {exc}")
    try:
        subprocess.run(["ip", "addr", "add", f"{LAN_ADDR}/24", "dev", "cwdummy0"], check=True)
        subprocess.run(["ip", "link", "set", "cwdummy0", "up"], check=True)
        yield LAN_ADDR
    finally:
        subprocess.run(["ip", "link", "del", "cwdummy0"], check=False)


async def test_a_wildcard_bind_serves_the_lan_address_and_opens_no_folder_there(
    lan_address: str, tmp_path: Path
) -> None:
    opener = Opened()
    web = await start_web(tmp_path / "me", bind="0.0.0.0", opener=opener)
    try:
        assert web.url.startswith(f"http://{lan_address}:{web.port}/?token=")
        assert not web.loopback
        origin = f"http://{lan_address}:{web.port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(f"{origin}/", allow_redirects=False) as r:
                assert r.status == 401  # the LAN needs the token like loopback does
            async with http.get(web.url, allow_redirects=False) as r:
                assert r.status == 302
            async with http.get(f"{origin}/") as r:
                assert r.status == 200
            path = tmp_path / "shared.txt"
            path.write_text("hi")
            offer = await web.node.send_file("#general", str(path))
            async with http.post(
                f"{origin}/open-folder", json={"id": offer.id}, headers={"Origin": origin}
            ) as r:
                assert await r.json() == {"ok": True, "path": str(path), "opened": False}
        assert opener.folders == []
        # Loopback names keep working on a wildcard bind.
        local = await login(web)
        await local.close()
    finally:
        await stop_web(web)


def test_allowed_hosts_and_origins() -> None:
    hosts = allowed_hosts("127.0.0.1", 5000, ["10.0.0.5"])
    assert hosts == {"127.0.0.1:5000", "localhost:5000", "[::1]:5000"}
    lan = allowed_hosts("0.0.0.0", 5000, ["10.0.0.5", "fe80::1", "127.0.0.1"])
    assert "10.0.0.5:5000" in lan and "[fe80::1]:5000" in lan
    assert allowed_hosts("10.0.0.5", 5000, []) >= {"10.0.0.5:5000", "127.0.0.1:5000"}
    assert origin_ok("http://localhost:5000", hosts)
    assert not origin_ok("http://localhost:5001", hosts)
    assert not origin_ok("https://localhost:5000", hosts)
    assert not origin_ok("http://localhost:5000.evil.example", hosts)
    assert not origin_ok("null", hosts)


def test_the_qr_code_and_the_owner_only_forwarding_page(tmp_path: Path) -> None:
    url = "http://10.0.0.5:47480/?token=abc&x=\"'<>"
    out = io.StringIO()
    print_qr(url, out)
    lines = out.getvalue().splitlines()
    assert len(lines) > 10 and all(len(line) == len(lines[0]) for line in lines)
    page = write_open_page(url, tmp_path)
    assert stat.S_IMODE(os.stat(page).st_mode) == 0o600
    body = page.read_text()
    assert "&lt;&gt;" in body and "<>" not in body  # the URL cannot break out of the tag
    assert 'content="0;url=http://10.0.0.5:47480/?token=abc&amp;x=' in body
