"""`chinwag --json --web` as a real process: the web event, the login URL, --new-token."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import aiohttp
from test_web_server_support import require_isolation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chinwag import limits
from chinwag.ui.web.auth import TOKEN_FILE
from driver import ChinwagProcess

ARGS = ("--bind", "127.0.0.1", "--port", "0", "--no-discovery", "--web", "--web-port", "0")


async def logs_in(url: str) -> int:
    """Return the status of opening the login URL (302 when the token is good)."""
    async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False) as r:
        return r.status


async def test_json_web_prints_the_web_event_after_ready_and_its_url_logs_in(
    tmp_path: Path,
) -> None:
    require_isolation()
    node = ChinwagProcess(tmp_path / "a", *ARGS, nick="a")
    await node.start()
    try:
        web = await node.wait_for("web", from_start=True)
        assert [e["event"] for e in node.events[:2]] == ["ready", "web"]
        url = web["url"]
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        token = url.split("token=", 1)[1]
        assert (tmp_path / "a" / TOKEN_FILE).read_text().strip() == token
        assert stat.S_IMODE(os.stat(tmp_path / "a" / TOKEN_FILE).st_mode) == 0o600
        assert await logs_in(url) == 302
        assert await logs_in(url[:-2] + "xx") == 401
        await node.send({"cmd": "peers"})  # the JSON-lines API still answers
        await node.wait_for("peers")
    finally:
        assert await node.quit() == 0

    again = ChinwagProcess(tmp_path / "a", *ARGS, "--new-token", nick="a")
    await again.start()
    try:
        new_url = (await again.wait_for("web", from_start=True))["url"]
        assert new_url.split("token=", 1)[1] != token
        old_url = new_url.split("token=", 1)[0] + "token=" + token
        assert await logs_in(old_url) == 401
        assert await logs_in(new_url) == 302
    finally:
        assert await again.quit() == 0


async def test_chinwag_web_runs_headless_prints_the_url_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    require_isolation()
    data = tmp_path / "h"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chinwag",
        "web",
        "--data-dir",
        str(data),
        "--nick",
        "h",
        *ARGS[:-3],
        "--web-port",
        "0",
        "--no-browser",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "DISPLAY": ""},
    )
    try:
        assert proc.stderr is not None
        url = ""
        while not url:
            line = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
            assert line, "chinwag web exited before printing its URL"
            if "chinwag web UI: open " in line:
                url = line.split("open ", 1)[1].strip()
        assert await logs_in(url) == 302
        assert not (data / "web-open.html").exists()  # --no-browser: nothing opened
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_a_taken_default_port_falls_back_and_a_taken_explicit_port_fails(
    tmp_path: Path,
) -> None:
    require_isolation()
    with socket.socket() as taken:
        # A connection of an earlier test may have left the port in TIME_WAIT; listening
        # still excludes chinwag's bind (scripts/test.sh also keeps ephemeral ports above it).
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", limits.WEB_DEFAULT_PORT))
        taken.listen()
        node = ChinwagProcess(tmp_path / "a", *ARGS[:-2], nick="a")  # default --web-port
        await node.start()
        try:
            url = (await node.wait_for("web", from_start=True))["url"]
            assert f":{limits.WEB_DEFAULT_PORT}/" not in url
            assert await logs_in(url) == 302
        finally:
            assert await node.quit() == 0
        explicit = ChinwagProcess(
            tmp_path / "b", *ARGS[:-1], str(limits.WEB_DEFAULT_PORT), nick="b"
        )
        await explicit.start()
        assert await explicit.wait_exit() == 1
        assert "web UI: cannot listen" in explicit.stderr_tail()
        assert not [e for e in explicit.events if e["event"] == "web"]
