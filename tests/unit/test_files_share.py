"""FileShare's bookkeeping of offers under hostile input, on a real store, with no network.

The node's connection manager is replaced by an object with no peers; offers
arrive as the message events the node would hand to FileShare.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto import box
from chinwag.crypto.identity import Identity
from chinwag.files import FileShare
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import FileEndReason
from chinwag.protocol.transfer import digest_root, encode_offer, new_offer
from chinwag.store.db import Store

MALLORY = Identity.generate()
ME = Identity.generate()


def offer_event(seq: int, room: str = "general") -> ev.Message:
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
        room=room,
        peer_id=MALLORY.peer_id,
        nick="mallory",
        ts=0.0,
        text=encode_offer(offer),
        own=False,
        seq=seq,
    )


def make_share(
    store: Store,
    tmp_path: Path,
    emitted: list[Any],
    manager: Any,
    in_room: bool,
    private: Callable[[str], bool] = lambda _room: False,
) -> FileShare:
    """A FileShare over a real store with a stand-in manager; nobody is verified.

    `private(room)` says which rooms are private rooms.
    """
    return FileShare(
        store,
        ME.peer_id,
        manager,
        emitted.append,
        tmp_path / "dl",
        0,
        lambda _: False,
        lambda _peer, _room: in_room,
        private,
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
        share.downloader.on_timer()
        share.downloader.on_timer()
        stalled = [e for e in emitted if isinstance(e, ev.FileStalled)]
        assert [e.id for e in stalled] == [offer.id], emitted
        assert "still trying" in stalled[0].reason
        assert share.listing().files[0].state == "stalled"
        assert wanted and set(wanted) == {MALLORY.peer_id}
        assert (tmp_path / "dl" / f".chinwag-{offer.id}.part").exists()
    finally:
        await share.close()
        store.close()


async def test_the_shares_own_timer_reports_a_stall_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody calls the timer by hand: the one loop timer armed at the download's
    get_timer() deadline asks again, dials the author and reports the stall."""
    monkeypatch.setattr(limits, "FILE_STALL_S", 0.3)
    monkeypatch.setattr(limits, "FILE_ASK_INTERVAL_S", 0.1)
    store = Store(tmp_path / "chinwag.db")
    stalled = asyncio.Event()
    emitted: list[Any] = []

    def emit(event: Any) -> None:
        emitted.append(event)
        if isinstance(event, ev.FileStalled):
            stalled.set()

    wanted: list[str] = []
    manager = SimpleNamespace(peers={}, want=wanted.append)
    share = FileShare(
        store,
        ME.peer_id,
        cast(Any, manager),
        emit,
        tmp_path / "dl",
        0,
        lambda _: False,
        lambda _peer, _room: True,
        lambda _room: False,
    )
    try:
        offer = share.offer_message(offer_event(1), "general")
        assert offer is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        share.accept(offer.id)
        async with asyncio.timeout(10):
            await stalled.wait()
        assert loop.time() - began >= 0.3
        assert share.listing().files[0].state == "stalled"
        assert wanted and set(wanted) == {MALLORY.peer_id}
        assert [e.id for e in emitted if isinstance(e, ev.FileStalled)] == [offer.id]
    finally:
        await share.close()
        store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store(tmp_path / "chinwag.db")
    yield db
    db.close()


async def test_a_private_rooms_file_is_served_sealed_and_only_as_its_digests_say(
    tmp_path: Path, store: Store
) -> None:
    """An offer to a private room gets a file key; chunks are served sealed with it. The
    file changed in place (same size, same mtime): the chunk is refused (`changed`)
    rather than another plaintext sealed under the same key and nonce."""
    share = make_share(
        store, tmp_path, [], SimpleNamespace(peers={}), True, {"secret"}.__contains__
    )
    try:
        path = tmp_path / "plans.bin"
        data = os.urandom(limits.FILE_CHUNK + 5000)
        path.write_bytes(data)
        public = await share.prepare(str(path), "general", "me")
        offer = await share.prepare(str(path), "secret", "me")
        assert not public.sealed and offer.sealed
        key, fid = bytes.fromhex(offer.key), bytes.fromhex(offer.fid)
        assert await share.server.read_chunk(public.fid, 1) == data[limits.FILE_CHUNK :]
        assert await share.server.read_chunk(offer.fid, 1) == box.seal_chunk(
            key, fid, 1, data[limits.FILE_CHUNK :]
        )
        st = path.stat()
        with path.open("r+b") as f:
            f.write(b"\xff" * 100)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
        assert await share.server.read_chunk(offer.fid, 0) == "changed"
    finally:
        await share.close()


async def test_a_private_room_takes_and_serves_only_sealed_offers(
    tmp_path: Path, store: Store
) -> None:
    """An unsealed offer in a private room is ignored (its file would be served in clear);
    a row of ours from before files were sealed is not served in a private room."""
    private_rooms: set[str] = set()
    share = make_share(
        store, tmp_path, [], SimpleNamespace(peers={}), True, private_rooms.__contains__
    )
    try:
        private_rooms.add("secret")
        assert share.offer_message(offer_event(1, "secret"), "secret") is None
        assert share.offer_message(offer_event(2, "general"), "general") is not None
        private_rooms.clear()
        path = tmp_path / "old.bin"
        path.write_bytes(b"from before")
        old = await share.prepare(str(path), "secret", "me")
        t = share.transfers[old.fid]
        assert not old.sealed and share.offers.serves(t, MALLORY.peer_id)
        private_rooms.add("secret")
        assert not share.offers.serves(t, MALLORY.peer_id)
    finally:
        await share.close()


@pytest.mark.parametrize("planted", ["symlink", "fifo"])
async def test_a_partial_file_path_planted_is_not_followed(
    tmp_path: Path, store: Store, planted: str
) -> None:
    """A symlink (or a fifo) planted at the partial file's path: the download fails with a
    clear reason, and the file the symlink points to is untouched."""
    emitted: list[Any] = []
    share = make_share(store, tmp_path, emitted, SimpleNamespace(peers={}), True)
    try:
        offer = share.offer_message(offer_event(1), "general")
        assert offer is not None
        victim = tmp_path / "victim.txt"
        victim.write_bytes(b"precious")
        dl = tmp_path / "dl"
        dl.mkdir()
        part = dl / f".chinwag-{offer.id}.part"
        if planted == "symlink":
            part.symlink_to(victim)
        else:
            os.mkfifo(part)
        share.accept(offer.id)
        failed = [e for e in emitted if isinstance(e, ev.FileFailed)]
        assert [e.id for e in failed] == [offer.id], emitted
        assert "cannot write" in failed[0].reason and str(part) in failed[0].reason
        assert share.listing().files[0].state == "failed"
        await share.close()  # (the writer thread, had one been started, is done)
        assert victim.read_bytes() == b"precious"
    finally:
        await share.close()


class StallingConnection:
    """A connection whose peer reads nothing until release(): every byte written stays in
    its send buffer. Its wait_drained is the real one's contract (below the high-water mark)."""

    def __init__(self) -> None:
        self.is_open = True
        self.frames: list[m.FileData] = []
        self.buffered = 0
        self.reading = False
        self.stalled = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()

    def send_encoded(self, plaintext: bytes) -> None:
        frame = m.decode_frame(plaintext)
        assert isinstance(frame, m.FileData), frame
        self.frames.append(frame)
        self.buffered += len(plaintext)
        if self.buffered >= limits.SEND_HIGH_WATER and not self.reading:
            self._drained.clear()

    def send_frame(self, frame: m.Frame) -> None:
        self.send_encoded(m.encode(frame))

    async def wait_drained(self, limit_s: float) -> bool:
        if not self._drained.is_set():
            self.stalled.set()
        async with asyncio.timeout(limit_s):
            await self._drained.wait()
        return True

    def release(self) -> None:
        """The peer reads everything, from now on."""
        self.reading = True
        self.buffered = 0
        self._drained.set()


async def test_file_data_is_written_only_while_the_connection_drains(
    tmp_path: Path, store: Store
) -> None:
    """A peer that asked for 3 chunks and reads nothing gets at most the high-water mark
    (1 MiB) and one piece written for it, not 3 MiB: a chat frame sent meanwhile waits
    behind that much file data at most. Once it reads, the rest follows, in order."""
    share = make_share(store, tmp_path, [], SimpleNamespace(peers={}), True)
    try:
        path = tmp_path / "three.bin"
        data = os.urandom(3 * limits.FILE_CHUNK)
        path.write_bytes(data)
        offer = await share.prepare(str(path), "general", "me")
        conn = StallingConnection()
        t = share.transfers[offer.fid]
        for idx in range(3):
            get = m.FileGet(fid=bytes.fromhex(offer.fid), idx=idx)
            share.server.queue(cast(Any, conn), t, MALLORY.peer_id, get)
        serving = share.server.tasks[MALLORY.peer_id]
        stalled = asyncio.ensure_future(conn.stalled.wait())
        async with asyncio.timeout(10):
            await asyncio.wait([stalled, serving], return_when=asyncio.FIRST_COMPLETED)
        written = sum(len(f.data) for f in conn.frames)
        assert written <= limits.SEND_HIGH_WATER + limits.FILE_PIECE, written
        assert not serving.done()
        conn.release()
        async with asyncio.timeout(10):
            await serving
        got = b"".join(bytes(f.data) for f in conn.frames)
        assert got == data
        assert [(f.idx, f.off) for f in conn.frames] == [
            (idx, off) for idx in range(3) for off in range(0, limits.FILE_CHUNK, limits.FILE_PIECE)
        ]
    finally:
        await share.close()


async def test_a_file_code_the_node_does_not_know_is_no_withdrawal(tmp_path: Path) -> None:
    """An `fend`/`fnak` with an unknown code changes nothing; only `withdrawn` ends the offer."""
    store = Store(tmp_path / "chinwag.db")
    emitted: list[Any] = []
    share = make_share(store, tmp_path, emitted, SimpleNamespace(peers={}), in_room=True)
    sent: list[Any] = []
    mallory = cast(Any, SimpleNamespace(peer_id=MALLORY.peer_id, send_frame=sent.append))
    try:
        assert share.offer_message(offer_event(1), "general") is not None
        (fid,) = share.transfers
        raw = bytes.fromhex(fid)
        share.frame(mallory, m.FileEnd(fid=raw, reason="gone_for_good"))
        share.frame(mallory, m.FileNak(fid=raw, idx=0, reason="some_newer_code"))
        assert share.transfers[fid].row.state == "offered"
        assert not [e for e in emitted if isinstance(e, ev.FileFailed)] and not sent
        share.frame(mallory, m.FileEnd(fid=raw, reason=FileEndReason.WITHDRAWN))
        assert share.transfers[fid].row.state == "failed"
        assert [e.reason for e in emitted if isinstance(e, ev.FileFailed)] == [
            "withdrawn by the sender"
        ]
    finally:
        await share.close()
        store.close()
