"""FileShare's bookkeeping of offers under hostile input, on a real store, with no network.

The node's connection manager is replaced by an object with no peers; offers
arrive as the message events the node would hand to FileShare.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.files import FileShare
from chinwag.protocol.transfer import digest_root, encode_offer, new_offer
from chinwag.store.db import Store

MALLORY = Identity.generate()


def offer_event(seq: int) -> ev.Message:
    data = seq.to_bytes(8, "big")
    offer = new_offer(
        MALLORY.public,
        os.urandom(16),
        f"spam{seq}.bin",
        len(data),
        hashlib.sha256(data).hexdigest(),
        digest_root(hashlib.sha256(data).digest()),
    )
    return ev.Message(
        id=os.urandom(16).hex(),
        room="general",
        peer_id=MALLORY.peer_id,
        nick="mallory",
        ts=0.0,
        text=encode_offer(offer),
        own=False,
        seq=seq,
    )


def make_share(
    store: Store, tmp_path: Path, emitted: list[Any], manager: Any, in_room: bool
) -> FileShare:
    """A FileShare over a real store with a stand-in manager; nobody is verified."""
    return FileShare(
        store,
        "me" * 26,
        manager,
        emitted.append,
        tmp_path / "dl",
        0,
        lambda _: False,
        lambda _peer, _room: in_room,
        lambda _room: False,
    )


async def test_a_flood_of_unanswered_offers_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offers nobody answers are forgotten oldest first beyond FILE_MAX_KNOWN."""
    monkeypatch.setattr(limits, "FILE_MAX_KNOWN", 50)
    store = Store(tmp_path / "chinwag.db")
    emitted: list[Any] = []
    share = make_share(store, tmp_path, emitted, SimpleNamespace(peers={}), in_room=False)
    try:
        events = [offer_event(seq) for seq in range(1, 201)]
        for event in events:
            assert share.offer_message(event, "general") is not None
        assert len(share.transfers) <= 50
        assert len(store.file_rows()) <= 50
        newest = share.listing().files[0]
        assert newest.name == "spam200.bin" and newest.state == "offered"
    finally:
        await share.close()
        store.close()


async def test_a_download_with_no_source_is_reported_stalled_and_keeps_trying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No holder reachable for FILE_STALL_S: one file_stalled, state stalled, the author
    is dialled on demand and asked again; the partial file stays for later."""
    monkeypatch.setattr(limits, "FILE_STALL_S", 0.0)
    monkeypatch.setattr(limits, "FILE_ASK_INTERVAL_S", 0.0)
    store = Store(tmp_path / "chinwag.db")
    emitted: list[Any] = []
    wanted: list[str] = []
    manager = SimpleNamespace(peers={}, want=wanted.append)
    share = make_share(store, tmp_path, emitted, manager, in_room=True)
    try:
        event = offer_event(1)
        offer = share.offer_message(event, "general")
        assert offer is not None
        share.accept(offer.id)
        share._on_tick()
        share._on_tick()
        stalled = [e for e in emitted if isinstance(e, ev.FileStalled)]
        assert [e.id for e in stalled] == [offer.id], emitted
        assert "still trying" in stalled[0].reason
        assert share.listing().files[0].state == "stalled"
        assert wanted and set(wanted) == {MALLORY.peer_id}
        assert (tmp_path / "dl" / f".chinwag-{offer.id}.part").exists()
    finally:
        await share.close()
        store.close()
