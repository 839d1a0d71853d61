"""Helpers for the browser tests, the web benchmark and the screenshot script.

`WebNode` runs a real `chinwag --json --web` process on loopback (discovery off),
reads its JSON-lines events in a thread and hands out the page's login URL.
`launch_chromium` starts the distribution's Chromium through Playwright. Waiting is
always for an event or a page condition with a timeout, never a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# tests/ for driver.py, also when a benchmark or script imports this module directly.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driver import Event, ReadyFacts, names_dht

#: Where Debian's chromium package puts the browser (`apt-get install chromium`).
CHROMIUM = os.environ.get("CHINWAG_CHROMIUM", "/usr/lib/chromium/chromium")
#: Chromium switches that keep it from reaching out on its own (updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
#: Seconds to wait for anything that should happen at once on loopback.
PROMPT_S = 10.0
#: Text a hostile peer puts in every field it controls.
XSS = "<img src=x onerror=window.__pwned=1>"


def isolated_network() -> bool:
    """Return True if this process sees no network interface but loopback."""
    return all(name == "lo" for _, name in socket.if_nameindex())


def chromium_missing() -> str | None:
    """Return why the browser tests cannot run here, or None if they can."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


def launch_chromium(playwright: Any) -> Any:
    """Launch the distribution's headless Chromium."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


class WebNode(ReadyFacts):
    """One running `chinwag --json --web` process on 127.0.0.1."""

    def __init__(self, data_dir: Path, nick: str, *args: str) -> None:
        self.data_dir = data_dir
        self.nick = nick
        self.args = list(args)
        self.events: list[Event] = []
        self.url = ""
        self.ready: Event = {}
        self._cond = threading.Condition()
        #: Called (in the reader thread) with each event as it is read, before it is stored.
        self.on_event: Callable[[Event], object] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = data_dir.with_name(data_dir.name + ".stderr.log")

    def command(self) -> list[str]:
        """The argv this node runs with: `--no-dht` unless the args decide about the DHT (a
        benchmark runs outside pytest, where the default bootstrap is the public DHT)."""
        argv = [
            sys.executable, "-m", "chinwag", "--json", "--web", "--web-port", "0",
            "--no-browser", "--no-discovery", "--bind", "127.0.0.1", "--port", "0",
            "--data-dir", str(self.data_dir), "--nick", self.nick,
            "--downloads", str(self.data_dir / "downloads"), *self.args,
        ]  # fmt: skip
        return argv if names_dht(self.args) else [*argv, "--no-dht"]

    def start(self, timeout: float = 20.0) -> WebNode:
        """Start the process; return once its `ready` and `web` events are in."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = self.command()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env
            )
        threading.Thread(target=self._read, name=f"read-{self.nick}", daemon=True).start()
        self.ready = self.wait_for(lambda e: e.get("event") == "ready", timeout)
        self.url = str(self.wait_for(lambda e: e.get("event") == "web", timeout)["url"])
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "_unparsable", "line": line.decode(errors="replace")}
            hook = self.on_event
            if hook is not None:
                hook(event)
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def origin(self) -> str:
        """The page's origin: http://127.0.0.1:PORT."""
        return self.url.split("/?", 1)[0]

    def send(self, **cmd: Any) -> None:
        """Write one JSON-lines command to the node's stdin."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, pred: Callable[[Event], bool], timeout: float = PROMPT_S) -> Event:
        """Return the first event (from the start) matching pred; raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            pos = 0
            while True:
                while pos < len(self.events):
                    event = self.events[pos]
                    pos += 1
                    if pred(event):
                        return event
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"{self.nick} exited; stderr: {self.stderr_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self.nick}: no matching event in {timeout}s; last: {self.events[-5:]}"
                    )
                self._cond.wait(min(left, 0.5))

    def connected(self, other: WebNode, timeout: float = PROMPT_S) -> None:
        """Wait until this node reports `other` as joined."""
        self.wait_for(
            lambda e: e.get("event") == "peer_joined" and e.get("peer_id") == other.peer_id,
            timeout,
        )

    def stderr_tail(self, n: int = 2000) -> str:
        try:
            return self.stderr_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Quit cleanly (stdin closed); kill it if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.send(cmd="quit")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


@contextlib.contextmanager
def two_nodes(base: Path, a: str = "alice", b: str = "bob") -> Iterator[tuple[WebNode, WebNode]]:
    """Start two connected web nodes (b dials a); stop both at the end."""
    first = WebNode(base / a, a)
    second: WebNode | None = None
    try:
        first.start()
        second = WebNode(base / b, b, "--peer", f"127.0.0.1:{first.port}")
        second.start()
        first.connected(second)
        second.connected(first)
        yield first, second
    finally:
        if second is not None:
            second.stop()
        first.stop()


def open_page(context: Any, node: WebNode, errors: list[str] | None = None) -> Any:
    """Open a node's page through its login URL; return it once it is live.

    Live: the WebSocket is connected and the first history page of the open room is
    shown. Page errors (uncaught exceptions) are appended to `errors`.
    """
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(node.url)
    page.wait_for_selector("[data-testid=status][data-state=online]", timeout=PROMPT_S * 1000)
    page.wait_for_function(
        "() => { const r = window.chinwag.state.rooms.get(window.chinwag.state.current);"
        " return r && r.loaded; }",
        timeout=PROMPT_S * 1000,
    )
    return page


def message(page: Any, text: str) -> Any:
    """The locator of the message whose text is exactly `text`."""
    return page.locator("[data-testid=message]").filter(
        has=page.locator("[data-testid=message-text]", has_text=text)
    )
