"""End to end: node A runs the TUI in a real terminal (tmux), node B the JSON API; they chat."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driver import ChinwagProcess


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def poll(cond: Callable[[], bool], timeout: float) -> bool:
    """Check cond every 0.1 s until it holds (True) or timeout passes (False).

    A terminal's screen sends no events: polling the pane is the only way to wait for it.
    """
    for _ in range(int(timeout / 0.1)):
        if cond():
            return True
        await asyncio.sleep(0.1)
    return cond()


class Tmux:
    """A private tmux server (its own socket) holding one session."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name]

    def run(self, *args: str) -> str:
        return subprocess.run(
            [*self.base, *args], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "tui")

    async def wait_screen(self, needle: str, timeout: float = 15.0) -> str:
        if not await poll(lambda: needle in self.screen(), timeout):
            raise AssertionError(f"{needle!r} not on screen within {timeout} s:\n{self.screen()}")
        return self.screen()

    def alive(self) -> bool:
        return (
            subprocess.run(
                [*self.base, "has-session", "-t", "tui"], capture_output=True, timeout=10
            ).returncode
            == 0
        )

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing (.ci/run installs it)")
        pytest.skip("tmux is not installed")
    t = Tmux(f"chinwag-test-{os.getpid()}")
    yield t
    t.kill()


async def test_tui_in_tmux_shows_what_another_node_sends(tmp_path: Path, tmux: Tmux) -> None:
    port = free_tcp_port()
    a_dir = tmp_path / "alice"
    argv = [sys.executable, "-m", "chinwag", "--data-dir", str(a_dir), "--nick", "alice"]
    argv += ["--no-discovery", "--no-dht", "--bind", "127.0.0.1", "--port", str(port)]
    tmux.run("new-session", "-d", "-x", "100", "-y", "30", "-s", "tui", shlex.join(argv))
    await tmux.wait_screen(f"127.0.0.1:{port}")

    bob = ChinwagProcess(
        tmp_path / "bob",
        "--no-discovery",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--peer",
        f"127.0.0.1:{port}",
        nick="bob",
    )
    try:
        await bob.start()
        await bob.wait_for("peer_joined", timeout=15)
        await bob.say("greetings from the json side")
        screen = await tmux.wait_screen("bob: greetings from the json side")
        assert "Traceback" not in screen
        # Typing in the TUI reaches bob.
        tmux.run("send-keys", "-t", "tui", "-l", "hello bob")
        tmux.run("send-keys", "-t", "tui", "Enter")
        await bob.wait_for_message("hello bob", timeout=15)
        await tmux.wait_screen("alice: hello bob")
        tmux.run("send-keys", "-t", "tui", "-l", "/quit")
        tmux.run("send-keys", "-t", "tui", "Enter")
        await bob.wait_for("peer_left", timeout=15)
    finally:
        await bob.quit()
    await poll(lambda: not tmux.alive(), 10)
    assert not tmux.alive()
    log = (a_dir / "chinwag.log").read_text()
    assert "Traceback" not in log
