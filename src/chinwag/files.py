"""File sharing: offers, downloads, and serving chunks to peers (docs/files.md).

An offer is a chat message (protocol/transfer.py), so it is signed, stored and
delivered like any message, also to peers who were away. This module keeps a
row per offer or transfer in the store and runs them:

- a download asks connected peers who holds the file whole (`fwho`/`fhave`),
  fetches the chunk digests, then chunks from up to FILE_MAX_SOURCES sources
  at once, each within a window (so memory stays bounded), writing verified
  data into a hidden partial file next to its final place; the partial file
  is renamed only once the whole-file SHA-256 matches, to a name that never
  overwrites anything;
- after a restart or a lost connection the download goes on from the chunks
  in the partial file that still match their digests, without asking again;
- serving reads chunks in a worker thread (a file whose size or modification
  time changed since it was offered is no longer served), and writes file data
  only while the connection's send buffer is below its high-water mark, so chat
  frames never queue behind more than that.

Disk work (hashing, checking and writing chunks, naming) is in store/filedata.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import stat
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.box import FILE_KEY_BYTES
from chinwag.crypto.identity import BadIdentity, public_from_peer_id
from chinwag.errors import UsageError
from chinwag.protocol import messages as m
from chinwag.protocol.names import safe_filename
from chinwag.protocol.transfer import (
    OFFER_MARK,
    Download,
    Offer,
    decode_offer,
    digest_root,
    file_id,
    new_offer,
)
from chinwag.store.db import FileRow, Store, StoreError
from chinwag.store.filedata import (
    ChunkWriter,
    hash_source,
    part_path,
    sealer,
    unique_path,
)
from chinwag.units import human_size

if TYPE_CHECKING:
    from chinwag.net.link import Link, Links

log = logging.getLogger(__name__)

IN, OUT = "in", "out"
#: States of a row. Incoming: offered -> transferring <-> stalled -> done | failed |
#: cancelled | rejected. Outgoing: sharing -> done (a private offer fetched) | cancelled | failed.
OFFERED, TRANSFERRING, STALLED, DONE = "offered", "transferring", "stalled", "done"
FAILED, CANCELLED, REJECTED, SHARING = "failed", "cancelled", "rejected", "sharing"
_ACTIVE = (TRANSFERRING, STALLED)
_offer_encoder = msgspec.json.Encoder()


@dataclass
class _Transfer:
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
    asked_at: float = -1e9
    no_source_since: float | None = None
    hashes_asked: tuple[str, float] | None = None
    served: int = 0
    finishing: bool = False
    #: Background work of this transfer (checking a partial file, the final check).
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def fid(self) -> str:
        return self.row.fid


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
        self.store = store
        self.me = me
        self.manager = manager
        self._emit = emit
        self.downloads = downloads
        self.auto_accept = auto_accept
        self._is_verified = is_verified
        #: in_room(peer_id, room): is that connected peer in our joined room?
        self._in_room = in_room
        #: is_private_room(room): is our joined room `room` (display name) a private one?
        self._is_private_room = is_private_room
        self._loop = asyncio.get_running_loop()
        self.transfers: dict[str, _Transfer] = {}
        self._serve_queues: dict[str, deque[tuple[str, int]]] = {}
        self._serve_tasks: dict[str, asyncio.Task[None]] = {}
        self._read_fds: dict[str, int] = {}
        #: Reads under way per open fd: an fd is only closed when none is.
        self._reading: dict[int, int] = {}
        self._tick: asyncio.TimerHandle | None = None
        self._closing = False

    # --- lifecycle ------------------------------------------------------

    def load(self) -> None:
        """Load rows from the store and resume downloads that were under way."""
        for row in self.store.file_rows():
            offer = decode_offer(OFFER_MARK + row.offer)
            if offer is None:
                log.warning("dropping unreadable file row %s", row.fid[:8])
                continue
            self.transfers[row.fid] = _Transfer(row, offer)
        for t in list(self.transfers.values()):
            if t.row.direction == IN and t.row.state in _ACTIVE:
                self._start_download(t)

    async def close(self) -> None:
        """Stop every transfer task and close files; rows stay as they are for the next start."""
        self._closing = True
        if self._tick is not None:
            self._tick.cancel()
        tasks = list(self._serve_tasks.values())
        for t in self.transfers.values():
            tasks.extend(t.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in self.transfers.values():
            self._close_part(t)
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()

    # --- commands -------------------------------------------------------

    async def prepare(self, path: str, room: str, nick: str) -> Offer:
        """Hash a local file and record our offer of it to `room` (a room name or `@peer_id`).

        An offer to a private room gets a fresh file key: its chunks are served
        sealed with it, and only the room's members can read the offer that carries it.
        """
        me = public_from_peer_id(self.me)
        salt = os.urandom(16)
        private = not room.startswith("@") and self._is_private_room(room)
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
        row = FileRow(
            fid=offer.fid,
            direction=OUT,
            state=SHARING,
            room=room,
            author=self.me,
            nick=nick,
            offer=self._offer_json(offer),
            path=str(source),
            digests=digests,
            mtime_ns=mtime_ns,
            created=time.time(),
        )
        self.store.save_file(row)
        self.transfers[offer.fid] = _Transfer(row, offer)
        return offer

    def forget(self, fid: str) -> None:
        """Drop an offer we prepared but could not post."""
        if self.transfers.pop(fid, None) is not None:
            with contextlib.suppress(StoreError):
                self.store.delete_files([fid])

    def accept(self, ident: str, directory: str | None = None) -> ev.FileInfo:
        """Start (or restart) fetching an offered file into directory (default: downloads)."""
        t = self._find(ident)
        if t.row.direction != IN:
            raise UsageError("that is your own offer")
        if t.row.state in _ACTIVE:
            raise UsageError(f"{t.offer.name!r} is being fetched already")
        if t.row.state == DONE:
            raise UsageError(f"{t.offer.name!r} is saved already at {t.row.path}")
        target = Path(directory).expanduser() if directory else self.downloads
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use {target}: {exc.strerror or exc}") from None
        if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write to {target}")
        part = part_path(target, t.fid)
        try:
            have = part.lstat().st_size  # (a symlink planted there is not followed)
        except OSError:
            have = 0
        free = shutil.disk_usage(target).free
        if t.offer.size - have > free:
            raise UsageError(
                f"not enough space in {target}: {human_size(t.offer.size)} needed, "
                f"{human_size(free)} free"
            )
        t.row.dir = str(target.resolve())
        t.row.reason = ""
        self._set_state(t, TRANSFERRING)
        self._start_download(t)
        return self.info(t)

    def reject(self, ident: str) -> ev.FileInfo:
        """Decline an offer: nothing is fetched; the sender of a private offer is told."""
        t = self._find(ident)
        if t.row.direction != IN or t.row.state != OFFERED:
            raise UsageError(f"{t.offer.name!r} is not waiting for an answer")
        self._set_state(t, REJECTED)
        self._tell_author(t, "rejected")
        self._emit(ev.FileFailed(id=t.fid, reason="rejected"))
        return self.info(t)

    def cancel(self, ident: str, keep: bool = False) -> ev.FileInfo:
        """Stop a transfer or withdraw our offer; partial data is removed unless `keep`."""
        t = self._find(ident)
        if t.row.direction == OUT:
            if t.row.state not in (SHARING, DONE):
                raise UsageError(f"{t.offer.name!r} is not being shared")
            self._set_state(t, CANCELLED, "cancelled")
            withdrawn = m.encode(m.FileEnd(fid=bytes.fromhex(t.fid), reason="withdrawn"))
            if t.row.room.startswith("@"):
                # A private offer's id is told to its recipient only.
                conn = self.manager.peers.get(t.row.room[1:])
                if conn is not None:
                    conn.send_encoded(withdrawn)
            else:
                for peer_id, conn in self.manager.peers.items():
                    if self._in_room(peer_id, t.row.room):
                        conn.send_encoded(withdrawn)
            self._emit(ev.FileFailed(id=t.fid, reason="cancelled"))
            return self.info(t)
        if t.row.state not in (*_ACTIVE, OFFERED):
            raise UsageError(f"{t.offer.name!r} is not under way")
        if t.finishing and t.dl is not None and t.dl.complete:
            raise UsageError(f"{t.offer.name!r} is complete and being saved")
        self._stop_download(t, "cancelled", remove=not keep)
        self._set_state(t, CANCELLED, "cancelled")
        self._emit(ev.FileFailed(id=t.fid, reason="cancelled"))
        return self.info(t)

    def listing(self) -> ev.FileList:
        """Return every offer and transfer, newest first."""
        rows = sorted(self.transfers.values(), key=lambda t: t.row.created, reverse=True)
        return ev.FileList(files=[self.info(t) for t in rows])

    def info(self, t: _Transfer) -> ev.FileInfo:
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

    # --- offers arriving as messages ---------------------------------------

    def render(self, text: str) -> str:
        """Return the readable form of a message text (offers become one line)."""
        offer = decode_offer(text)
        if offer is None:
            return text
        return f"offers file {offer.name!r} ({human_size(offer.size)}) [file {offer.fid[:8]}]"

    def offer_message(self, event: ev.Message | ev.DirectMessage, room: str) -> ev.FileOffer | None:
        """Record an offer carried by a stored message; return its event (None if not new)."""
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
        if not offer.sealed and not room.startswith("@") and self._is_private_room(room):
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
            row = FileRow(
                fid=offer.fid,
                direction=IN,
                state=OFFERED,
                room=room,
                author=event.peer_id,
                nick=event.nick,
                offer=self._offer_json(offer),
                created=time.time(),
            )
            try:
                self.store.save_file(row)
            except StoreError as exc:
                log.warning("cannot record offer %s: %s", offer.fid[:8], exc)
                return None
            known = _Transfer(row, offer)
            self.transfers[offer.fid] = known
        result = ev.FileOffer(
            id=offer.fid,
            peer_id=event.peer_id,
            nick=event.nick,
            name=offer.name,
            size=offer.size,
            sha256=offer.sha256,
            room="" if room.startswith("@") else room,
            own=event.own,
        )
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
            self._emit(ev.Error(message=f"cannot auto-accept file {fid[:8]}: {exc}"))

    # --- peers ----------------------------------------------------------

    def ask_peer(self, conn: Link) -> None:
        """Ask a peer that just connected, or announced its rooms, for the files we fetch."""
        peer_id = conn.peer_id or ""
        for t in self.transfers.values():
            if t.dl is not None and peer_id not in t.dl.sources and self._may_source(t, peer_id):
                conn.send_frame(m.FileWho(fid=bytes.fromhex(t.fid)))

    def peer_left(self, peer_id: str) -> None:
        """Forget what a departed peer was sending us or asking of us."""
        self._serve_queues.pop(peer_id, None)
        task = self._serve_tasks.pop(peer_id, None)
        if task is not None:
            task.cancel()
        for t in self.transfers.values():
            if t.dl is not None and peer_id in t.dl.sources:
                t.dl.drop(peer_id)
                self._pump(t)

    # --- frames ---------------------------------------------------------

    def frame(self, conn: Link, frame: m.FileFrame) -> None:
        """Handle one file frame from a peer."""
        peer_id = conn.peer_id or ""
        fid = frame.fid.hex()
        t = self.transfers.get(fid)
        if t is None:
            if isinstance(frame, m.FileGet):
                conn.send_frame(m.FileNak(fid=frame.fid, idx=frame.idx, reason="unknown"))
            return
        if isinstance(frame, m.FileData):
            self._data(t, peer_id, frame)
        elif isinstance(frame, m.FileGet):
            self._queue_serve(conn, t, peer_id, frame)
        elif isinstance(frame, m.FileWho):
            if self._serves(t, peer_id):
                conn.send_frame(m.FileHave(fid=frame.fid))
        elif isinstance(frame, m.FileHave):
            if t.dl is not None and self._may_source(t, peer_id):
                t.dl.add_source(peer_id, self._loop.time())
                self._pump(t)
        elif isinstance(frame, m.FileHashesReq):
            if self._serves(t, peer_id) and t.row.digests is not None:
                lo = frame.lo * 32
                page = t.row.digests[lo : lo + 32 * limits.FILE_HASHES_PER_FRAME]
                conn.send_frame(m.FileHashes(fid=frame.fid, lo=frame.lo, hashes=page))
        elif isinstance(frame, m.FileHashes):
            self._hashes(t, peer_id, frame)
        elif isinstance(frame, m.FileNak):
            if t.dl is not None:
                log.info("%s will not send %s: %s", peer_id[:8], t.offer.name, frame.reason)
                t.dl.nak(peer_id, frame.idx)
                self._pump(t)
        elif isinstance(frame, m.FileEnd):
            self._end(t, peer_id, frame.reason)

    def _serves(self, t: _Transfer, peer_id: str) -> bool:
        """Return whether we hold t whole and may give it to peer_id."""
        row = t.row
        if row.room.startswith("@"):
            # A private offer's file goes to its recipient only, from its sender only.
            return row.direction == OUT and row.state in (SHARING, DONE) and row.room[1:] == peer_id
        # A room's file goes to the room's members, from its sender and whoever fetched it.
        held = row.state in (SHARING, DONE) if row.direction == OUT else row.state == DONE
        if held and not t.offer.sealed and self._is_private_room(row.room):
            # (a row from before files were sealed): membership cannot be proven, so never.
            return False
        return held and self._in_room(peer_id, row.room)

    def _may_source(self, t: _Transfer, peer_id: str) -> bool:
        """Return whether we may ask peer_id for t (and so tell it the file id)."""
        if t.row.room.startswith("@"):
            return peer_id == t.row.author
        return self._in_room(peer_id, t.row.room)

    def _end(self, t: _Transfer, peer_id: str, reason: str) -> None:
        row = t.row
        if reason != "withdrawn":
            # A downloader is done with us (also when we serve a room file we fetched).
            self._drop_queued(peer_id, t.fid)
        if row.direction == OUT and row.room.startswith("@") and peer_id == row.room[1:]:
            # The one recipient of a private offer tells us how it went.
            who = t.row.room[1:9]
            if reason == "done" and row.state == SHARING:
                self._set_state(t, DONE)
                self._emit(ev.FileDone(id=t.fid, path=row.path, sha256=t.offer.sha256))
            elif reason in ("rejected", "cancelled") and row.state == SHARING:
                self._emit(ev.FileFailed(id=t.fid, reason=f"{reason} by {who}"))
        elif (
            row.direction == IN
            and peer_id == row.author
            and reason == "withdrawn"
            and row.state in (*_ACTIVE, OFFERED)
        ):
            if t.dl is not None:
                self._stop_download(t, "cancelled", remove=True)
            self._set_state(t, FAILED, "withdrawn by the sender")
            self._emit(ev.FileFailed(id=t.fid, reason="withdrawn by the sender"))

    # --- downloading ----------------------------------------------------

    def _start_download(self, t: _Transfer) -> None:
        directory = Path(t.row.dir or self.downloads)
        t.part = part_path(directory, t.fid)
        t.dl = Download(t.offer)
        t.rate, t.rate_mark = 0.0, (self._loop.time(), 0)
        t.no_source_since = self._loop.time()
        t.asked_at = -1e9
        if t.offer.chunks == 0:
            t.dl.digests = []
        elif (
            t.row.digests is not None
            and len(t.row.digests) == 32 * t.offer.chunks
            and digest_root(t.row.digests) == t.offer.root
        ):
            t.dl.digests = [t.row.digests[i : i + 32] for i in range(0, len(t.row.digests), 32)]
        try:
            # O_NOFOLLOW: a symlink planted at the partial file's name must not lead
            # our writes (and the final rename) to a file elsewhere.
            fd = os.open(t.part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            self._fail(t, f"cannot write {t.part}: {exc.strerror or exc}")
            return
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            self._fail(t, f"cannot write {t.part}: not a regular file")
            return
        t.writer = ChunkWriter(fd, t.offer)
        resumed = os.fstat(fd).st_size > 0
        t.writer.submit(t.writer.reserve).add_done_callback(
            functools.partial(self._reserved, t, t.dl)
        )
        if t.dl.digests and resumed:
            t.finishing = True  # no data until the partial file is checked
            self._spawn(t, self._resume(t))
        elif t.dl.complete:
            self._finish(t)  # an empty file: nothing to fetch
        else:
            self._ask(t)
            self._pump(t)
        self._arm_tick()

    def _reserved(self, t: _Transfer, dl: Download, fut: asyncio.Future[None]) -> None:
        if t.dl is not dl or fut.cancelled() or fut.exception() is None:
            return
        directory = t.row.dir or str(self.downloads)
        self._fail(t, f"not enough space in {directory} for {human_size(t.offer.size)}")

    async def _resume(self, t: _Transfer) -> None:
        dl, writer = t.dl, t.writer
        assert dl is not None and writer is not None and dl.digests is not None
        good = await writer.submit(writer.scan, dl.digests)
        if t.dl is not dl:
            return
        dl.restore(good)
        t.rate_mark = (self._loop.time(), dl.verified_bytes)  # the rate counts new data only
        t.finishing = False
        log.info("resuming %s: %d of %d chunks already here", t.offer.name, len(good), dl.n)
        self._progress(t, force=True)
        if dl.complete:
            self._finish(t)
            return
        self._ask(t)
        self._pump(t)

    def _ask(self, t: _Transfer) -> None:
        """Ask connected peers who may hold the file whole."""
        t.asked_at = self._loop.time()
        frame = m.encode(m.FileWho(fid=bytes.fromhex(t.fid)))
        for peer_id, conn in self.manager.peers.items():
            if self._may_source(t, peer_id) and (t.dl is None or peer_id not in t.dl.sources):
                conn.send_encoded(frame)

    def _pump(self, t: _Transfer) -> None:
        """Send the requests the download wants now."""
        dl = t.dl
        if dl is None or t.finishing:
            return
        now = self._loop.time()
        if dl.sources:
            t.no_source_since = None
            if t.row.state == STALLED:
                self._set_state(t, TRANSFERRING)
        elif t.no_source_since is None:
            t.no_source_since = now
        fid = bytes.fromhex(t.fid)
        lo = dl.hashes_wanted()
        if lo is not None:
            if dl.sources and (t.hashes_asked is None or t.hashes_asked[0] not in dl.sources):
                peer_id = next(iter(dl.sources))
                conn = self.manager.peers.get(peer_id)
                if conn is not None:
                    t.hashes_asked = (peer_id, now)
                    conn.send_frame(m.FileHashesReq(fid=fid, lo=lo))
            return
        for peer_id, idx in dl.requests(now):
            conn = self.manager.peers.get(peer_id)
            if conn is None:
                dl.drop(peer_id)
                continue
            conn.send_frame(m.FileGet(fid=fid, idx=idx))

    def _hashes(self, t: _Transfer, peer_id: str, frame: m.FileHashes) -> None:
        dl = t.dl
        if dl is None or dl.digests is not None:
            return
        ok = dl.hashes_received(peer_id, frame.lo, frame.hashes)
        t.hashes_asked = None
        if not ok:
            log.warning("%s sent a wrong chunk list for %s; not a source", peer_id[:8], t.fid[:8])
        elif dl.digests is not None:
            t.row.digests = b"".join(dl.digests)
            with contextlib.suppress(StoreError):
                self.store.save_file(t.row)
        self._pump(t)

    def _data(self, t: _Transfer, peer_id: str, frame: m.FileData) -> None:
        dl, writer = t.dl, t.writer
        if dl is None or writer is None or t.finishing:
            return
        out = dl.piece(peer_id, frame.idx, frame.off, frame.data, self._loop.time())
        if out.dropped:
            log.warning("dropping %s as a source of %s: bad data", peer_id[:8], t.offer.name)
            self._pump(t)
        if not out.pieces:
            return
        fut = writer.submit(writer.check_and_write, frame.idx, out.pieces, out.digest)
        fut.add_done_callback(functools.partial(self._checked, t, dl, peer_id, frame.idx))
        self._pump(t)

    def _checked(
        self, t: _Transfer, dl: Download, peer_id: str, idx: int, fut: asyncio.Future[bool]
    ) -> None:
        if t.dl is not dl or fut.cancelled():
            return  # stopped meanwhile
        exc = fut.exception()
        if exc is not None:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._fail(t, f"cannot write {t.row.dir}: {reason}")
            return
        out = dl.checked(peer_id, idx, fut.result())
        if out.corrupt is not None:
            log.warning("chunk %d of %s from %s is corrupt", idx, t.fid[:8], peer_id[:8])
        if out.dropped:
            log.warning("dropping %s as a source of %s: corrupt data", peer_id[:8], t.offer.name)
        if dl.complete:
            self._finish(t)
            return
        self._progress(t)
        self._pump(t)

    def _progress(self, t: _Transfer, force: bool = False) -> None:
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
        self._emit(
            ev.FileProgress(
                id=t.fid,
                bytes=done,
                total=t.offer.size,
                rate=round(t.rate, 1),
                sources=len(dl.sources) if dl is not None else 0,
            )
        )

    def _finish(self, t: _Transfer) -> None:
        t.finishing = True
        self._spawn(t, self._finalise(t))

    async def _finalise(self, t: _Transfer) -> None:
        dl, writer, part = t.dl, t.writer, t.part
        assert dl is not None and writer is not None and part is not None
        directory = Path(t.row.dir or self.downloads)

        def check_and_place() -> Path | None:
            if writer.whole_digest() != dl.offer.sha256:
                return None
            os.ftruncate(writer.fd, dl.offer.size)
            # No fsync: like the message store, we survive a killed process, and a
            # power cut may lose the last writes (docs/files.md).
            final = unique_path(directory, safe_filename(dl.offer.name))
            try:
                os.replace(part, final)
            except OSError:
                # (e.g. the partial file was removed): no empty file under the final name.
                final.unlink(missing_ok=True)
                raise
            return final

        try:
            final = await writer.submit(check_and_place)
        except OSError as exc:
            self._fail(t, f"cannot save {t.offer.name!r} in {directory}: {exc.strerror or exc}")
            return
        if final is None:
            self._fail(t, "the file does not match its SHA-256: the offer is wrong")
            return
        sources = list(dl.sources)
        self._close_part(t)
        t.dl = None
        t.finishing = False
        t.row.path = str(final)
        with contextlib.suppress(OSError):
            t.row.mtime_ns = final.stat().st_mtime_ns
        self._progress(t, force=True)
        self._set_state(t, DONE)
        for peer_id in sources:
            conn = self.manager.peers.get(peer_id)
            if conn is not None:
                conn.send_frame(m.FileEnd(fid=bytes.fromhex(t.fid), reason="done"))
        if t.row.author not in sources:
            self._tell_author(t, "done")
        log.info("saved %s (%d bytes) at %s", t.offer.name, t.offer.size, final)
        self._emit(ev.FileDone(id=t.fid, path=str(final), sha256=t.offer.sha256))

    def _fail(self, t: _Transfer, reason: str) -> None:
        self._stop_download(t, "cancelled", remove=True)
        self._set_state(t, FAILED, reason)
        self._emit(ev.FileFailed(id=t.fid, reason=reason))

    def _stop_download(self, t: _Transfer, tell: str, remove: bool) -> None:
        dl = t.dl
        if dl is not None:
            for peer_id in dl.sources:
                conn = self.manager.peers.get(peer_id)
                if conn is not None:
                    conn.send_frame(m.FileEnd(fid=bytes.fromhex(t.fid), reason=tell))
        for task in t.tasks:
            task.cancel()
        part = t.part
        self._close_part(t)
        t.dl = None
        t.finishing = False
        if remove and part is not None:
            with contextlib.suppress(OSError):
                part.unlink()
        if tell == "cancelled" and (dl is None or t.row.author not in dl.sources):
            self._tell_author(t, tell)

    def _close_part(self, t: _Transfer) -> None:
        if t.writer is not None:
            t.writer.close()
            t.writer = None

    def _tell_author(self, t: _Transfer, reason: str) -> None:
        """Tell the sender of a private offer how it went (if connected)."""
        if t.row.room.startswith("@"):
            conn = self.manager.peers.get(t.row.author)
            if conn is not None:
                conn.send_frame(m.FileEnd(fid=bytes.fromhex(t.fid), reason=reason))

    # --- the periodic check ---------------------------------------------

    def _arm_tick(self) -> None:
        if self._tick is None and not self._closing:
            self._tick = self._loop.call_later(limits.FILE_TICK_S, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        now = self._loop.time()
        active = False
        for t in list(self.transfers.values()):
            dl = t.dl
            if dl is None:
                continue
            active = True
            if t.finishing:
                continue
            for peer_id in dl.expired(now):
                log.info("%s stopped sending %s; asking others", peer_id[:8], t.offer.name)
                dl.drop(peer_id)
            if (
                t.hashes_asked is not None
                and now - t.hashes_asked[1] > limits.FILE_HASHES_TIMEOUT_S
            ):
                dl.drop(t.hashes_asked[0])
                t.hashes_asked = None
            if len(dl.sources) < limits.FILE_MAX_SOURCES and (
                now - t.asked_at >= limits.FILE_ASK_INTERVAL_S
            ):
                if not dl.sources:
                    # Nobody to fetch from: dial the offer's author if we know where it is,
                    # rather than wait for the reconnect back-off.
                    self.manager.want(t.row.author)
                self._ask(t)
            self._pump(t)
            if (
                not dl.sources
                and t.no_source_since is not None
                and now - t.no_source_since >= limits.FILE_STALL_S
                and t.row.state != STALLED
            ):
                self._set_state(t, STALLED)
                self._emit(
                    ev.FileStalled(
                        id=t.fid,
                        reason=f"no peer holding {t.offer.name!r} has been reachable for "
                        f"{limits.FILE_STALL_S:.0f} s; still trying",
                    )
                )
            elif dl.sources:
                self._progress(t)
        if active:
            self._arm_tick()

    # --- serving --------------------------------------------------------

    def _queue_serve(self, conn: Link, t: _Transfer, peer_id: str, frame: m.FileGet) -> None:
        if not self._serves(t, peer_id) or frame.idx >= t.offer.chunks:
            conn.send_frame(m.FileNak(fid=frame.fid, idx=frame.idx, reason="unavailable"))
            return
        queue = self._serve_queues.setdefault(peer_id, deque())
        if len(queue) >= limits.FILE_MAX_QUEUED:
            conn.send_frame(m.FileNak(fid=frame.fid, idx=frame.idx, reason="busy"))
            return
        queue.append((t.fid, frame.idx))
        task = self._serve_tasks.get(peer_id)
        # A task that has just returned may not have run its done callback yet.
        if task is None or task.done():
            task = self._loop.create_task(self._serve(conn, peer_id, queue))
            self._serve_tasks[peer_id] = task
            task.add_done_callback(functools.partial(self._serve_done, peer_id))

    def _serve_done(self, peer_id: str, task: asyncio.Task[None]) -> None:
        if self._serve_tasks.get(peer_id) is task:
            del self._serve_tasks[peer_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("serving %s failed", peer_id[:8], exc_info=task.exception())

    def _drop_queued(self, peer_id: str, fid: str) -> None:
        queue = self._serve_queues.get(peer_id)
        if queue:
            kept = [item for item in queue if item[0] != fid]
            queue.clear()
            queue.extend(kept)

    async def _serve(self, conn: Link, peer_id: str, queue: deque[tuple[str, int]]) -> None:
        """Send the chunks a peer asked for, in order, one read ahead."""
        ahead: asyncio.Future[bytes | str] | None = None
        ahead_item: tuple[str, int] | None = None
        while conn.is_open:
            if ahead is None:
                if not queue:
                    return
                ahead_item = queue.popleft()
                ahead = self._read_chunk(*ahead_item)
            assert ahead_item is not None
            data = await ahead
            fid, idx = ahead_item
            ahead = None
            if queue:
                ahead_item = queue.popleft()
                ahead = self._read_chunk(*ahead_item)
            t = self.transfers.get(fid)
            if t is None:
                continue
            raw_fid = bytes.fromhex(fid)
            if isinstance(data, str):
                conn.send_frame(m.FileNak(fid=raw_fid, idx=idx, reason=data))
                continue
            view = memoryview(data)
            for off in range(0, len(data), limits.FILE_PIECE):
                if not await conn.wait_drained(limits.SEND_DRAIN_TIMEOUT_S) or not conn.is_open:
                    return
                if not self._serves(t, peer_id):
                    break
                piece = m.FileData(
                    fid=raw_fid, idx=idx, off=off, data=view[off : off + limits.FILE_PIECE]
                )
                conn.send_encoded(m.encode(piece))
            t.served += len(data) - t.offer.overhead
            if t.row.room.startswith("@"):
                self._progress(t)  # a private offer has one recipient: show how far it got
        if ahead is not None:
            ahead.cancel()

    def _read_chunk(self, fid: str, idx: int) -> asyncio.Future[bytes | str]:
        """Read one chunk in a worker thread; resolve to its bytes or a refusal code."""
        t = self.transfers.get(fid)
        if t is None or t.row.digests is None:
            fut: asyncio.Future[bytes | str] = self._loop.create_future()
            fut.set_result("unavailable")
            return fut
        fd = self._read_fds.pop(fid, None)
        if fd is None:
            if not self._close_idle_read_fd():
                fut = self._loop.create_future()
                fut.set_result("busy")
                return fut
            try:
                fd = os.open(t.row.path, os.O_RDONLY)
            except OSError as exc:
                self._source_gone(t, f"cannot read {t.row.path}: {exc.strerror or exc}")
                fut = self._loop.create_future()
                fut.set_result("unavailable")
                return fut
        self._read_fds[fid] = fd  # (re-inserted: the dict is in order of last use)
        chunk = t.offer.chunk
        length = min(chunk, t.offer.size - idx * chunk)
        size, mtime_ns = t.offer.size, t.row.mtime_ns
        seal = sealer(t.offer.key, fid)
        digest = t.row.digests[32 * idx : 32 * idx + 32]

        def read() -> bytes | str:
            # A changed size or modification time means the file is no longer the
            # one offered (receivers check every chunk's digest anyway).
            st = os.fstat(fd)
            if st.st_size != size or st.st_mtime_ns != mtime_ns:
                return "changed"
            data = os.pread(fd, length, idx * chunk)
            if len(data) != length:
                return "changed"
            if seal is None:
                return data
            sealed = seal(idx, data)
            # Sealing is deterministic (the nonce is the chunk index): a chunk that no
            # longer matches its digest would reuse a nonce on another plaintext.
            return sealed if hashlib.sha256(sealed).digest() == digest else "changed"

        async def run() -> bytes | str:
            try:
                result = await asyncio.to_thread(read)
            except OSError as exc:
                self._source_gone(t, f"cannot read {t.row.path}: {exc.strerror or exc}")
                return "unavailable"
            if result == "changed":
                self._source_gone(t, f"{t.row.path} changed since it was offered")
            return result

        # Counted from now (not when the task starts) until it ends, even cancelled
        # before it started: the fd must not be closed meanwhile.
        self._reading[fd] = self._reading.get(fd, 0) + 1
        task = asyncio.ensure_future(run())
        task.add_done_callback(lambda _task: self._read_done(fd))
        return task

    def _read_done(self, fd: int) -> None:
        self._reading[fd] -= 1
        if not self._reading[fd]:
            del self._reading[fd]

    def _close_idle_read_fd(self) -> bool:
        """Make room for one more open file to serve; False if every open one is being read."""
        if len(self._read_fds) < limits.FILE_MAX_OPEN:
            return True
        for fid, fd in self._read_fds.items():  # least recently used first
            if fd not in self._reading:
                del self._read_fds[fid]
                os.close(fd)
                return True
        return False

    def _source_gone(self, t: _Transfer, reason: str) -> None:
        """Stop sharing a file we can no longer serve as offered."""
        # Its read fd stays open until close(): a read ahead may still be using it,
        # and a closed fd number could be reused by another file meanwhile.
        if t.row.direction == OUT and t.row.state == SHARING:
            log.warning("stop sharing %s: %s", t.offer.name, reason)
            self._set_state(t, FAILED, reason)
            self._emit(ev.FileFailed(id=t.fid, reason=reason))
        elif t.row.direction == IN and t.row.state == DONE:
            log.warning("no longer sharing %s: %s", t.offer.name, reason)
            t.row.state = FAILED
            t.row.reason = reason
            with contextlib.suppress(StoreError):
                self.store.save_file(t.row)

    # --- internals ------------------------------------------------------

    def _find(self, ident: str) -> _Transfer:
        key = ident.strip().lower()
        if len(key) < 4:
            raise UsageError("give at least 4 characters of the file id (see /files)")
        matches = [t for fid, t in self.transfers.items() if fid.startswith(key)]
        if not matches:
            raise UsageError(f"no file with id {ident[:40]!r} (see /files)")
        if len(matches) > 1:
            raise UsageError(f"several files match {ident[:40]!r}; give more of the id")
        return matches[0]

    def _set_state(self, t: _Transfer, state: str, reason: str = "") -> None:
        t.row.state = state
        t.row.reason = reason
        try:
            self.store.save_file(t.row)
        except StoreError as exc:
            log.warning("cannot save the state of %s: %s", t.fid[:8], exc)

    def _forget_oldest(self) -> None:
        finished = [
            t for t in self.transfers.values() if t.row.state not in (*_ACTIVE, SHARING, OFFERED)
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

    def _spawn(self, t: _Transfer, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        t.tasks.add(task)
        task.add_done_callback(t.tasks.discard)
        task.add_done_callback(_log_failure)

    @staticmethod
    def _offer_json(offer: Offer) -> str:
        return _offer_encoder.encode(offer).decode()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("file task failed", exc_info=task.exception())
