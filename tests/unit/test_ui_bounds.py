"""The text interfaces' leftovers: bounded per-run memory, one report per failed send,
and a stdin thread that outlives the event loop quietly."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import warnings
from typing import Any

import pytest

from chinwag import events as ev
from chinwag import limits
from chinwag.store.db import StoreError
from chinwag.ui import jsonl
from chinwag.ui.jsonl import JsonLinesUI
from chinwag.ui.line import LineUI
from chinwag.ui.stdio import _pump


class _Node:
    """Just what the UIs call outside commands: events in, errors out."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def subscribe(self, callback: object) -> None:
        pass

    def congested(self) -> bool:
        return False

    def error(self, message: str) -> None:
        self.errors.append(message)


def _offer(n: int, own: bool = False) -> ev.FileOffer:
    return ev.FileOffer(
        id=f"{n:064x}", peer_id="p" * 52, nick="bob", name=f"f{n}.txt", size=1, sha256="0" * 64,
        own=own,
    )  # fmt: skip


async def test_the_line_ui_remembers_a_bounded_number_of_file_names_most_recent_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "LINE_MAX_FILE_NAMES", 3)
    lines: list[str] = []
    node: Any = _Node()
    ui = LineUI(node, sink=lines.append)
    ui.on_event(_offer(0))
    for n in range(1, 50):
        ui.on_event(_offer(n, own=True))
        # Progress of file 0 keeps its name the most recently used one.
        ui.on_event(ev.FileProgress(id=_offer(0).id, bytes=0, total=10))
    assert len(ui._file_names) == 3 and len(ui._own_files) == 2
    assert ui.toolbar().startswith("f0.txt")  # the transfer under way kept its name
    ui.on_event(ev.FileDone(id=_offer(49).id, path="", sha256="0" * 64))
    assert "'f49.txt'" in lines[-1]  # the recent own offer is still named and still ours
    ui.on_event(ev.FileDone(id=_offer(1).id, path="/x", sha256="0" * 64))
    assert "f1.txt" not in lines[-1]  # the oldest one was forgotten


async def test_a_failed_send_popped_at_the_in_flight_bound_is_reported_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jsonl, "MAX_IN_FLIGHT", 2)
    node: Any = _Node()
    ui = JsonLinesUI(node, out=io.BytesIO())
    loop = asyncio.get_running_loop()
    oldest: asyncio.Future[ev.NodeEvent] = loop.create_future()
    await ui.sent(oldest, True)
    await ui.sent(loop.create_future(), True)

    def fail() -> None:
        # History reports a store failure as an error event and fails the send's future.
        node.error("cannot store messages: disk full")
        oldest.set_exception(StoreError("disk full"))

    # The third send waits for the oldest (the bound); it fails meanwhile (call_soon runs
    # after the task's first step): that must not raise into the command, a second report.
    third = asyncio.ensure_future(ui.sent(loop.create_future(), True))
    loop.call_soon(fail)
    await asyncio.wait_for(third, 5.0)
    assert node.errors == ["cannot store messages: disk full"]


def test_the_stdin_thread_ends_quietly_when_the_loop_is_already_closed() -> None:
    loop = asyncio.new_event_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    loop.close()
    r, w = os.pipe()
    os.write(w, b"typed after the loop closed\n")
    os.close(w)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _pump(loop, queue, r)  # raised RuntimeError (a traceback from the thread)
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)]
    finally:
        os.close(r)
