"""FileShare: the node's one entry to file sharing (commands, offers, peers and frames).

It routes: offers and their states are in offers.py, fetching in
downloading.py, sending chunks in serving.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from chinwag import events as ev
from chinwag.errors import UsageError
from chinwag.files.downloading import Downloader
from chinwag.files.offers import (
    DONE,
    FAILED,
    IN,
    OFFERED,
    OUT,
    REJECTED,
    SHARING,
    Offers,
    Transfer,
)
from chinwag.files.serving import Server
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import FileEndReason, FileRefusal
from chinwag.protocol.transfer import ACTIVE, Offer
from chinwag.store.db import Store

if TYPE_CHECKING:
    from chinwag.net.link import Link, Links


class FileShare:
    """Every file offer and transfer of a node."""

    def __init__(
        self,
        store: Store,
        me: str,
        manager: Links,
        emit: Callable[[ev.NodeEvent], None],
        downloads: Path,
        auto_accept: int,
        is_verified: Callable[[str], bool],
        in_room: Callable[[str, str], bool],
        is_private_room: Callable[[str], bool],
    ) -> None:
        self.auto_accept = auto_accept
        self._is_verified = is_verified
        self._loop = asyncio.get_running_loop()
        self.offers = Offers(store, me, manager, emit, in_room, is_private_room)
        self.downloader = Downloader(self.offers, downloads)
        self.server = Server(self.offers)

    @property
    def transfers(self) -> dict[str, Transfer]:
        """Every offer and transfer, by file id."""
        return self.offers.transfers

    # --- lifecycle ------------------------------------------------------

    def load(self) -> None:
        """Load rows from the store and resume downloads that were under way."""
        for t in self.offers.load():
            self.downloader.start(t)

    async def close(self) -> None:
        """Stop every transfer task and close files; rows stay as they are for the next start."""
        await self.downloader.close()
        await self.server.close()

    # --- commands -------------------------------------------------------

    async def prepare(self, path: str, room: str, nick: str) -> Offer:
        """Hash a local file and record our offer of it to `room` (a room name or `@peer_id`)."""
        return await self.offers.prepare(path, room, nick)

    def forget(self, fid: str) -> None:
        """Drop an offer we prepared but could not post."""
        self.offers.forget(fid)

    def accept(self, ident: str, directory: str | None = None) -> ev.FileInfo:
        """Start (or restart) fetching an offered file into directory (default: downloads)."""
        t = self.offers.find(ident)
        self.downloader.accept(t, directory)
        return self.offers.info(t)

    def reject(self, ident: str) -> ev.FileInfo:
        """Decline an offer: nothing is fetched; the sender of a private offer is told."""
        t = self.offers.find(ident)
        if t.row.direction != IN or t.row.state != OFFERED:
            raise UsageError(f"{t.offer.name!r} is not waiting for an answer")
        self.offers.set_state(t, REJECTED)
        self.offers.tell_author(t, FileEndReason.REJECTED)
        self.offers.emit(ev.FileFailed(id=t.fid, reason="rejected"))
        return self.offers.info(t)

    def cancel(self, ident: str, keep: bool = False) -> ev.FileInfo:
        """Stop a transfer or withdraw our offer; partial data is removed unless `keep`."""
        t = self.offers.find(ident)
        if t.row.direction == OUT:
            self.offers.withdraw(t)
        else:
            self.downloader.cancel(t, keep)
        return self.offers.info(t)

    def listing(self) -> ev.FileList:
        """Return every offer and transfer, newest first."""
        return self.offers.listing()

    def info(self, t: Transfer) -> ev.FileInfo:
        """Return the public view of one transfer."""
        return self.offers.info(t)

    # --- offers arriving as messages ---------------------------------------

    def render(self, text: str) -> str:
        """Return the readable form of a message text (offers become one line)."""
        return self.offers.render(text)

    def offer_message(self, event: ev.Message | ev.DirectMessage, room: str) -> ev.FileOffer | None:
        """Record an offer carried by a stored message; return its event (None if not new)."""
        recorded = self.offers.record(event, room)
        if recorded is None:
            return None
        offer, result = recorded
        if (
            not event.own
            and self.auto_accept
            and offer.size <= self.auto_accept
            and self._is_verified(event.peer_id)
        ):
            self._loop.call_soon(self._auto_accept, offer.fid)
        return result

    def _auto_accept(self, fid: str) -> None:
        try:
            self.accept(fid)
        except UsageError as exc:
            self.offers.emit(ev.Error(message=f"cannot auto-accept file {fid[:8]}: {exc}"))

    # --- peers ----------------------------------------------------------

    def ask_peer(self, conn: Link) -> None:
        """Ask a peer that just connected, or announced its rooms, for the files we fetch."""
        peer_id = conn.peer_id or ""
        for t in self.offers.transfers.values():
            if (
                t.dl is not None
                and peer_id not in t.dl.sources
                and self.offers.may_source(t, peer_id)
            ):
                conn.send_frame(m.FileWho(fid=bytes.fromhex(t.fid)))

    def peer_left(self, peer_id: str) -> None:
        """Forget what a departed peer was sending us or asking of us."""
        self.server.peer_left(peer_id)
        self.downloader.peer_left(peer_id)

    # --- frames ---------------------------------------------------------

    def frame(self, conn: Link, frame: m.FileFrame) -> None:
        """Handle one file frame from a peer."""
        peer_id = conn.peer_id or ""
        t = self.offers.transfers.get(frame.fid.hex())
        if t is None:
            if isinstance(frame, m.FileGet):
                conn.send_frame(m.FileNak(fid=frame.fid, idx=frame.idx, reason=FileRefusal.UNKNOWN))
            return
        if getattr(conn, "limited", False) and isinstance(frame, m.FileWho | m.FileGet):
            # A byte-limited relay circuit would be used up (and closed) by a file: the
            # asker learns why nothing comes; the file goes once a better path is up.
            if self.offers.serves(t, peer_id):
                idx = frame.idx if isinstance(frame, m.FileGet) else 0
                conn.send_frame(m.FileNak(fid=frame.fid, idx=idx, reason=FileRefusal.RELAY_LIMITED))
            return
        if isinstance(frame, m.FileData):
            self.downloader.data(t, peer_id, frame)
        elif isinstance(frame, m.FileGet):
            self.server.queue(conn, t, peer_id, frame)
        elif isinstance(frame, m.FileWho):
            self.server.who(conn, t, peer_id, frame)
        elif isinstance(frame, m.FileHave):
            self.downloader.have(t, peer_id)
        elif isinstance(frame, m.FileHashesReq):
            self.server.hashes(conn, t, peer_id, frame)
        elif isinstance(frame, m.FileHashes):
            self.downloader.hashes(t, peer_id, frame)
        elif isinstance(frame, m.FileNak):
            self.downloader.nak(t, peer_id, frame)
        elif isinstance(frame, m.FileEnd):
            self._end(t, peer_id, frame.reason)

    def _end(self, t: Transfer, peer_id: str, reason: str) -> None:
        """A peer stops a transfer (`fend`); reason is its code, maybe one we do not know."""
        row = t.row
        if reason != FileEndReason.WITHDRAWN:
            # A downloader is done with us (also when we serve a room file we fetched).
            self.server.drop_queued(peer_id, t.fid)
        if row.direction == OUT and t.private and peer_id == row.room[1:]:
            # The one recipient of a private offer tells us how it went.
            who = t.row.room[1:9]
            if reason == FileEndReason.DONE and row.state == SHARING:
                self.offers.set_state(t, DONE)
                self.offers.emit(ev.FileDone(id=t.fid, path=row.path, sha256=t.offer.sha256))
            elif (
                reason in (FileEndReason.REJECTED, FileEndReason.CANCELLED) and row.state == SHARING
            ):
                self.offers.emit(ev.FileFailed(id=t.fid, reason=f"{reason} by {who}"))
        elif (
            row.direction == IN
            and peer_id == row.author
            and reason == FileEndReason.WITHDRAWN
            and row.state in (*ACTIVE, OFFERED)
        ):
            if t.dl is not None:
                self.downloader.stop(t, FileEndReason.CANCELLED, remove=True)
            self.offers.set_state(t, FAILED, "withdrawn by the sender")
            self.offers.emit(ev.FileFailed(id=t.fid, reason="withdrawn by the sender"))
