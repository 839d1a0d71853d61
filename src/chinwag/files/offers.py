"""Offers and their states: the book of every offer and transfer of a node.

One row per offer or transfer in the store; its state moves only as
protocol/transfer.py's table allows (Offers.set_state). The book also says who
may be given a file and who may be asked for it, and shows progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.box import FILE_KEY_BYTES
from chinwag.crypto.identity import BadIdentity, public_from_peer_id
from chinwag.errors import LocalProtocolError, UsageError
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import FileEndReason
from chinwag.protocol.transfer import (
    ACTIVE,
    INITIAL,
    OFFER_MARK,
    Direction,
    Download,
    FileState,
    Offer,
    decode_offer,
    digest_root,
    file_id,
    move,
    new_offer,
    row_state,
)
from chinwag.store.db import FileRow, Store, StoreError
from chinwag.store.filedata import ChunkWriter, hash_source, sealer
from chinwag.units import human_size

if TYPE_CHECKING:
    from chinwag.net.link import Links

log = logging.getLogger(__name__)

IN, OUT = Direction.IN, Direction.OUT
#: States of a row: the moves allowed are protocol/transfer.py's TRANSITIONS.
OFFERED, TRANSFERRING, STALLED = FileState.OFFERED, FileState.TRANSFERRING, FileState.STALLED
DONE, FAILED, CANCELLED = FileState.DONE, FileState.FAILED, FileState.CANCELLED
REJECTED, SHARING = FileState.REJECTED, FileState.SHARING
_offer_encoder = msgspec.json.Encoder()


@dataclass
class Transfer:
    """Runtime state of one row."""

    row: FileRow
    offer: Offer
    dl: Download | None = None
    writer: ChunkWriter | None = None
    part: Path | None = None
    #: The smoothed rate in bytes/s, and (time, bytes) where its current window started.
    rate: float = 0.0
    rate_mark: tuple[float, int] = (0.0, 0)
    progress_at: float = 0.0
    served: int = 0
    #: Background work of this transfer (checking a partial file, the final check).
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def fid(self) -> str:
        return self.row.fid

    @property
    def private(self) -> bool:
        """Whether this is a private offer (to one peer, `@peer_id`), not a room's."""
        return self.row.room.startswith("@")


class Offers:
    """Every offer and transfer of a node, by file id, with their rows in the store."""

    def __init__(
        self,
        store: Store,
        me: str,
        manager: Links,
        emit: Callable[[ev.NodeEvent], None],
        in_room: Callable[[str, str], bool],
        is_private_room: Callable[[str], bool],
    ) -> None:
        self.store = store
        self.me = me
        self.manager = manager
        self.emit = emit
        #: in_room(peer_id, room): is that connected peer in our joined room?
        self.in_room = in_room
        #: is_private_room(room): is our joined room `room` (display name) a private one?
        self.is_private_room = is_private_room
        self._loop = asyncio.get_running_loop()
        self.transfers: dict[str, Transfer] = {}

    def load(self) -> list[Transfer]:
        """Load rows from the store; return the downloads that were under way."""
        for row in self.store.file_rows():
            offer = decode_offer(OFFER_MARK + row.offer)
            if offer is None:
                log.warning("dropping unreadable file row %s", row.fid[:8])
                continue
            try:
                row.direction, row.state = row_state(row.direction, row.state)
            except LocalProtocolError as exc:
                log.warning("dropping file row %s: %s", row.fid[:8], exc)
                continue
            self.transfers[row.fid] = Transfer(row, offer)
        return [
            t for t in self.transfers.values() if t.row.direction == IN and t.row.state in ACTIVE
        ]

    # --- our offers -------------------------------------------------------

    async def prepare(self, path: str, room: str, nick: str) -> Offer:
        """Hash a local file and record our offer of it to `room` (a room name or `@peer_id`).

        An offer to a private room gets a fresh file key: its chunks are served
        sealed with it, and only the room's members can read the offer that carries it.
        """
        me = public_from_peer_id(self.me)
        salt = os.urandom(16)
        private = not room.startswith("@") and self.is_private_room(room)
        key = os.urandom(FILE_KEY_BYTES) if private else b""
        # The digests of a sealed offer are over the sealed chunks, which need the id.
        seal = sealer(key.hex(), file_id(me, salt.hex()))
        try:
            source, (size, sha, digests, mtime_ns) = await asyncio.to_thread(
                hash_source, path, limits.FILE_CHUNK, seal
            )
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        if size > limits.FILE_MAX_SIZE:
            raise UsageError(f"{path} is larger than {human_size(limits.FILE_MAX_SIZE)}")
        offer = new_offer(
            me,
            salt,
            source.name[: limits.FILE_MAX_NAME_CHARS],
            size,
            sha,
            digest_root(digests),
            key=key,
        )
        row = new_row(offer, OUT, room, self.me, nick)
        row.path, row.digests, row.mtime_ns = str(source), digests, mtime_ns
        self.store.save_file(row)
        self.transfers[offer.fid] = Transfer(row, offer)
        return offer

    def forget(self, fid: str) -> None:
        """Drop an offer we prepared but could not post."""
        if self.transfers.pop(fid, None) is not None:
            with contextlib.suppress(StoreError):
                self.store.delete_files([fid])

    def withdraw(self, t: Transfer) -> None:
        """Withdraw our offer: cancelled, and the peers that may fetch it are told."""
        if t.row.state not in (SHARING, DONE):
            raise UsageError(f"{t.offer.name!r} is not being shared")
        self.set_state(t, CANCELLED, "cancelled")
        withdrawn = m.encode(m.FileEnd(fid=bytes.fromhex(t.fid), reason=FileEndReason.WITHDRAWN))
        if t.private:
            # A private offer's id is told to its recipient only.
            conn = self.manager.peers.get(t.row.room[1:])
            if conn is not None:
                conn.send_encoded(withdrawn)
        else:
            for peer_id, conn in self.manager.peers.items():
                if self.in_room(peer_id, t.row.room):
                    conn.send_encoded(withdrawn)
        self.emit(ev.FileFailed(id=t.fid, reason="cancelled"))

    # --- offers arriving as messages ---------------------------------------

    def render(self, text: str) -> str:
        """Return the readable form of a message text (offers become one line)."""
        offer = decode_offer(text)
        if offer is None:
            return text
        return f"offers file {offer.name!r} ({human_size(offer.size)}) [file {offer.fid[:8]}]"

    def record(
        self, event: ev.Message | ev.DirectMessage, room: str
    ) -> tuple[Offer, ev.FileOffer] | None:
        """Record an offer carried by a stored message; return it and its event (None: not new)."""
        offer = decode_offer(event.text)
        if offer is None:
            return None
        try:
            author = public_from_peer_id(event.peer_id)
        except BadIdentity:
            return None
        if offer.fid != file_id(author, offer.salt):
            # Only its author can make an offer with this id: anyone else's is a forgery.
            log.warning("ignoring an offer by %s with a file id not its own", event.peer_id[:8])
            return None
        if not offer.sealed and not room.startswith("@") and self.is_private_room(room):
            # Its chunks would travel in clear to anyone replaying a member's room
            # announcement: a private room's file must be sealed (an older or hostile author).
            log.warning("ignoring an unsealed file offer in private room by %s", event.peer_id[:8])
            return None
        known = self.transfers.get(offer.fid)
        if known is not None:
            if not event.own or known.row.direction != OUT:
                return None
        elif event.own:
            return None  # an offer of ours from an earlier data dir: nothing to serve
        else:
            if len(self.transfers) >= limits.FILE_MAX_KNOWN:
                self._forget_oldest()
            row = new_row(offer, IN, room, event.peer_id, event.nick)
            try:
                self.store.save_file(row)
            except StoreError as exc:
                log.warning("cannot record offer %s: %s", offer.fid[:8], exc)
                return None
            known = Transfer(row, offer)
            self.transfers[offer.fid] = known
        return offer, ev.FileOffer(
            id=offer.fid,
            peer_id=event.peer_id,
            nick=event.nick,
            name=offer.name,
            size=offer.size,
            sha256=offer.sha256,
            room="" if room.startswith("@") else room,
            own=event.own,
        )

    # --- who may have what --------------------------------------------------

    def serves(self, t: Transfer, peer_id: str) -> bool:
        """Return whether we hold t whole and may give it to peer_id."""
        row = t.row
        if t.private:
            # A private offer's file goes to its recipient only, from its sender only.
            return row.direction == OUT and row.state in (SHARING, DONE) and row.room[1:] == peer_id
        # A room's file goes to the room's members, from its sender and whoever fetched it.
        held = row.state in (SHARING, DONE) if row.direction == OUT else row.state == DONE
        if held and not t.offer.sealed and self.is_private_room(row.room):
            # (a row from before files were sealed): membership cannot be proven, so never.
            return False
        return held and self.in_room(peer_id, row.room)

    def may_source(self, t: Transfer, peer_id: str) -> bool:
        """Return whether we may ask peer_id for t (and so tell it the file id)."""
        if t.private:
            return peer_id == t.row.author
        return self.in_room(peer_id, t.row.room)

    def tell_author(self, t: Transfer, reason: FileEndReason) -> None:
        """Tell the sender of a private offer how it went (if connected)."""
        if t.private:
            conn = self.manager.peers.get(t.row.author)
            if conn is not None:
                conn.send_frame(m.FileEnd(fid=bytes.fromhex(t.fid), reason=reason))

    # --- states and views ---------------------------------------------------

    def find(self, ident: str) -> Transfer:
        """Return the transfer whose file id starts with ident; UsageError if not exactly one."""
        key = ident.strip().lower()
        if len(key) < 4:
            raise UsageError("give at least 4 characters of the file id (see /files)")
        matches = [t for fid, t in self.transfers.items() if fid.startswith(key)]
        if not matches:
            raise UsageError(f"no file with id {ident[:40]!r} (see /files)")
        if len(matches) > 1:
            raise UsageError(f"several files match {ident[:40]!r}; give more of the id")
        return matches[0]

    def set_state(self, t: Transfer, state: FileState, reason: str = "") -> None:
        """Move t to state (LocalProtocolError if the table does not allow it) and save it."""
        t.row.state = move(t.row.direction, t.row.state, state)
        t.row.reason = reason
        try:
            self.store.save_file(t.row)
        except StoreError as exc:
            log.warning("cannot save the state of %s: %s", t.fid[:8], exc)

    def _forget_oldest(self) -> None:
        finished = [
            t for t in self.transfers.values() if t.row.state not in (*ACTIVE, SHARING, OFFERED)
        ]
        if not finished:
            # A flood of offers nobody answers must not grow this without bound either.
            finished = [t for t in self.transfers.values() if t.row.state == OFFERED]
        finished.sort(key=lambda t: t.row.created)
        drop = [t.fid for t in finished[: max(1, len(finished) // 10)]]
        for fid in drop:
            del self.transfers[fid]
        with contextlib.suppress(StoreError):
            self.store.delete_files(drop)

    def listing(self) -> ev.FileList:
        """Return every offer and transfer, newest first."""
        rows = sorted(self.transfers.values(), key=lambda t: t.row.created, reverse=True)
        return ev.FileList(files=[self.info(t) for t in rows])

    def info(self, t: Transfer) -> ev.FileInfo:
        """Return the public view of one transfer."""
        dl = t.dl
        done = t.row.state == DONE or t.row.direction == OUT
        room = t.row.room
        return ev.FileInfo(
            id=t.fid,
            name=t.offer.name,
            size=t.offer.size,
            sha256=t.offer.sha256,
            peer_id=t.row.author if t.row.direction == IN else room[1:] if room[:1] == "@" else "",
            nick=t.row.nick,
            direction=t.row.direction,
            state=t.row.state,
            bytes=t.offer.size if done else dl.verified_bytes if dl is not None else 0,
            room="" if room.startswith("@") else room,
            path=t.row.path,
            sources=len(dl.sources) if dl is not None else 0,
            rate=round(t.rate, 1),
        )

    def progress(self, t: Transfer, force: bool = False) -> None:
        """Emit t's progress and smoothed rate (at most every FILE_PROGRESS_INTERVAL_S)."""
        now = self._loop.time()
        if not force and now - t.progress_at < limits.FILE_PROGRESS_INTERVAL_S:
            return
        dl = t.dl
        if t.row.direction == OUT:
            done = min(t.served, t.offer.size)
        else:
            done = dl.verified_bytes if dl is not None else t.offer.size
        mark_at, mark_bytes = t.rate_mark
        # The rate over the last half second or more, smoothed; marked from the start.
        if mark_at == 0.0:
            t.rate_mark = (now, done)
        elif now - mark_at >= limits.FILE_RATE_WINDOW_S:
            current = (done - mark_bytes) / (now - mark_at)
            t.rate = current if t.rate == 0 else 0.5 * t.rate + 0.5 * current
            t.rate_mark = (now, done)
        t.progress_at = now
        self.emit(
            ev.FileProgress(
                id=t.fid,
                bytes=done,
                total=t.offer.size,
                rate=round(t.rate, 1),
                sources=len(dl.sources) if dl is not None else 0,
            )
        )


def new_row(offer: Offer, direction: Direction, room: str, author: str, nick: str) -> FileRow:
    """Return the row of a new offer or transfer: in its direction's initial state, created now."""
    return FileRow(
        fid=offer.fid,
        direction=direction,
        state=INITIAL[direction],
        room=room,
        author=author,
        nick=nick,
        offer=offer_json(offer),
        created=time.time(),
    )


def offer_json(offer: Offer) -> str:
    """Return the JSON of an offer as a row stores it (the message text less the mark)."""
    return _offer_encoder.encode(offer).decode()
