"""The TUI with a second real node: chat both ways, the peer list, file offers and transfers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tui_support import BOB, AppFactory, feed, make_node, shown, started, texts, until

from chinwag import events as ev
from chinwag.node import Node
from chinwag.ui.tui import ChinwagApp


@pytest.fixture
async def bob(tmp_path: Path) -> AsyncIterator[list[Node]]:
    """Holder for a second node started by the test (stopped at teardown)."""
    made: list[Node] = []
    yield made
    for node in made:
        await node.stop()


async def start_bob(app: ChinwagApp, tmp_path: Path, made: list[Node]) -> tuple[Node, list]:
    node = make_node(tmp_path / "bob", "bob", peers=[("127.0.0.1", app.node.port)])
    seen: list[ev.NodeEvent] = []
    node.subscribe(seen.append)
    made.append(node)
    await node.start()
    return node, seen


async def test_chat_with_a_real_peer(app: AppFactory, tmp_path: Path, bob: list[Node]) -> None:
    a = app()
    async with a.run_test(size=(100, 30)) as pilot:
        await started(pilot)
        b, seen = await start_bob(a, tmp_path, bob)
        pid = b.identity.peer_id
        await until(pilot, lambda: pid in a.peers and a.peers[pid].online)
        await b.send("hello from bob")
        await until(pilot, lambda: shown(a, "bob: hello from bob"))
        a.query_one("#input").value = "hi bob"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: any(getattr(e, "text", "") == "hi bob" for e in seen))
        # Our message gets its delivery mark once bob holds it.
        await until(pilot, lambda: shown(a, "me: hi bob ✓1/1"))
        # The peer list says how bob is reached; the status line counts him.
        await until(pilot, lambda: a.peers[pid].rtt_ms is not None, timeout=10)
        peers = str(a._w_peers.render())
        assert "bob" in peers and "ms\n  127.0.0.1:" in peers
        assert "· 1 peer ·" in str(a._w_status.render())
        # A private message from bob opens a conversation, counted as a mention.
        await b.dm(a.node.identity.peer_id, "just for you")
        name = "@" + pid[:8]
        await until(pilot, lambda: name in a.rooms and a.rooms[name].mentions == 1)
        await pilot.press("ctrl+o")
        assert a.current == name and shown(a, "bob: just for you")
        a.query_one("#input").value = "thanks"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(
            pilot, lambda: any(isinstance(e, ev.DirectMessage) and e.text == "thanks" for e in seen)
        )
        await b.stop()
        await until(pilot, lambda: not a.peers[pid].online)
        await until(pilot, lambda: any(t.startswith("* bob (") and " left" in t for t in texts(a)))


async def test_peer_reached_through_another_is_listed_via_it(
    app: AppFactory, tmp_path: Path, bob: list[Node]
) -> None:
    """In me - bob - carol, carol's messages reach me through bob: the list says so."""
    a = app()
    async with a.run_test(size=(100, 30)) as pilot:
        await started(pilot)
        b, _ = await start_bob(a, tmp_path, bob)
        await until(pilot, lambda: b.identity.peer_id in a.peers)
        carol = make_node(tmp_path / "carol", "carol", peers=[("127.0.0.1", b.port)])
        carol_saw: list[ev.NodeEvent] = []
        carol.subscribe(carol_saw.append)
        bob.append(carol)
        await carol.start()
        cid = carol.identity.peer_id
        await until(pilot, lambda: any(isinstance(e, ev.PeerJoined) for e in carol_saw))
        await carol.send("hello via bob")
        await until(pilot, lambda: shown(a, "carol: hello via bob"))
        await until(pilot, lambda: cid in a.peers and a.peers[cid].via, timeout=10)
        assert not a.peers[cid].online
        peers = str(a._w_peers.render())
        assert "carol\n  via bob\n" in peers, peers


async def test_a_silent_member_beyond_a_peer_is_listed_and_completed(
    app: AppFactory, tmp_path: Path, bob: list[Node]
) -> None:
    """In me - bob - carol, carol never speaks: its presence record lists it (dimmed)."""
    a = app()
    async with a.run_test(size=(100, 30)) as pilot:
        await started(pilot)
        b, _ = await start_bob(a, tmp_path, bob)
        await until(pilot, lambda: b.identity.peer_id in a.peers)
        carol = make_node(tmp_path / "carol", "carol", peers=[("127.0.0.1", b.port)])
        bob.append(carol)
        await carol.start()
        cid = carol.identity.peer_id
        await until(pilot, lambda: cid in a.peers and a.peers[cid].member, timeout=10)
        assert not a.peers[cid].online
        peers = str(a._w_peers.render())
        assert "carol\n  member, through others\n" in peers, peers
        assert a._complete("hi car", 6) == (3, ["carol"])


async def test_file_offer_accept_and_progress(
    app: AppFactory, tmp_path: Path, bob: list[Node]
) -> None:
    a = app()
    async with a.run_test(size=(100, 30)) as pilot:
        await started(pilot)
        b, _seen = await start_bob(a, tmp_path, bob)
        pid = b.identity.peer_id
        await until(pilot, lambda: pid in a.peers and a.peers[pid].online)
        data = os.urandom(300_000)
        path = tmp_path / "report.bin"
        path.write_bytes(data)
        offer = await b.send_file(a.node.identity.peer_id, str(path))
        await until(pilot, lambda: offer.id in a.transfers, timeout=10)
        assert "report.bin" in str(a._w_files.render())
        assert "[accept]" in str(a._w_files.render())
        await pilot.press("f6")
        await until(pilot, lambda: a.transfers[offer.id].state == "done", timeout=20)
        saved = tmp_path / "me" / "downloads" / "report.bin"
        assert saved.read_bytes() == data
        assert any("report.bin received" in t for t in texts(a))


async def test_file_panel_shows_progress_rate_and_time_left(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        offer = ev.FileOffer(
            id="f" * 64, peer_id=BOB, nick="bob", name="big.iso", size=10_000_000, sha256="0" * 64
        )
        other = ev.FileOffer(
            id="e" * 64, peer_id=BOB, nick="bob", name="x.txt", size=10, sha256="0" * 64
        )
        feed(a, offer, other)
        await until(pilot, lambda: "big.iso" in str(a._w_files.render()))
        assert shown(a, "bob offers big.iso (10.0 MB)")
        # Pretend the node accepted it and reports progress.
        a.transfers[offer.id].state = "accepted"
        feed(a, ev.FileProgress(id=offer.id, bytes=2_500_000, total=10_000_000, rate=500_000))
        await until(pilot, lambda: "25%" in str(a._w_files.render()))
        panel = str(a._w_files.render())
        assert "500.0 kB/s" in panel and "0:15 left" in panel
        # Rejecting an offer the node does not know is an error line, not a traceback.
        await pilot.press("f7")
        await until(pilot, lambda: any(t.startswith("error:") for t in texts(a)))
        feed(a, ev.FileFailed(id=offer.id, reason="disk full"))
        await until(pilot, lambda: shown(a, "big.iso: transfer failed: disk full"))
        assert "big.iso" not in str(a._w_files.render())
