"""Downloading: fetching an offered file from the peers that hold it.

The rules (which source to ask for what, when a source has gone silent, when
to ask holders again, when the download is stalled) are protocol/transfer.py's
sans-IO Download; this runs its actions and arms one timer at the earliest
deadline of all downloads. Data goes into a hidden partial file next to its
final place, verified chunk by chunk in a worker thread (store/filedata.py); the
partial file is renamed only once the whole-file SHA-256 matches, to a name that
never overwrites anything. After a restart or a lost connection a download goes
on from the chunks in the partial file that still match their digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from chinwag import events as ev
from chinwag import limits
from chinwag.errors import UsageError
from chinwag.files.offers import (
    CANCELLED,
    DONE,
    FAILED,
    IN,
    OFFERED,
    STALLED,
    TRANSFERRING,
    Offers,
    Transfer,
)
from chinwag.protocol import messages as m
from chinwag.protocol.names import safe_filename
from chinwag.protocol.reasons import FileEndReason, FileRefusal
from chinwag.protocol.transfer import (
    ACTIVE,
    AskHolders,
    Download,
    DownloadAction,
    Refresh,
    RequestChunk,
    RequestHashes,
    SourceExpired,
    Stalled,
    Unstalled,
    digest_root,
)
from chinwag.store.db import StoreError
from chinwag.store.filedata import ChunkWriter, part_path, unique_path
from chinwag.units import human_size

log = logging.getLogger(__name__)


class Downloader:
    """Every download under way: its partial file, its writer thread and the one timer."""

    def __init__(self, offers: Offers, downloads: Path) -> None:
        self.offers = offers
        self.manager = offers.manager
        self.downloads = downloads
        self._loop = asyncio.get_running_loop()
        #: (file id, peer id) already told "only a byte-limited relay leads there".
        self._limited_told: set[tuple[str, str]] = set()
        #: The one timer of every download under way, and when it fires.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._closing = False

    async def close(self) -> None:
        """Stop every download's work and close its partial file; rows stay as they are."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        tasks = [task for t in self.offers.transfers.values() for task in t.tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in self.offers.transfers.values():
            self._close_part(t)

    # --- commands -------------------------------------------------------------

    def accept(self, t: Transfer, directory: str | None = None) -> None:
        """Start (or restart) fetching an offered file into directory (default: downloads)."""
        if t.row.direction != IN:
            raise UsageError("that is your own offer")
        if t.row.state in ACTIVE:
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
        self.offers.set_state(t, TRANSFERRING)
        self.start(t)

    def cancel(self, t: Transfer, keep: bool = False) -> None:
        """Stop fetching t (or decline it unanswered); partial data is removed unless `keep`."""
        if t.row.state not in (*ACTIVE, OFFERED):
            raise UsageError(f"{t.offer.name!r} is not under way")
        if t.dl is not None and t.dl.paused and t.dl.complete:
            raise UsageError(f"{t.offer.name!r} is complete and being saved")
        self.stop(t, FileEndReason.CANCELLED, remove=not keep)
        self.offers.set_state(t, CANCELLED, "cancelled")
        self.offers.emit(ev.FileFailed(id=t.fid, reason="cancelled"))

    def start(self, t: Transfer) -> None:
        """Open t's partial file and start fetching (or check what a restart left there)."""
        directory = Path(t.row.dir or self.downloads)
        t.part = part_path(directory, t.fid)
        now = self._loop.time()
        t.dl = Download(t.offer)
        t.dl.start(now, stalled=t.row.state == STALLED)
        t.rate, t.rate_mark = 0.0, (now, 0)
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
            self.fail(t, f"cannot write {t.part}: {exc.strerror or exc}")
            return
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            self.fail(t, f"cannot write {t.part}: not a regular file")
            return
        t.writer = ChunkWriter(fd, t.offer)
        resumed = os.fstat(fd).st_size > 0
        t.writer.submit(t.writer.reserve).add_done_callback(
            functools.partial(self._reserved, t, t.dl)
        )
        if t.dl.digests and resumed:
            t.dl.paused = True  # no data until the partial file is checked
            self._spawn(t, self._resume(t))
        elif t.dl.complete:
            self._finish(t)  # an empty file: nothing to fetch
        else:
            self._act(t, [t.dl.ask(now)])
            self.pump(t)

    def _reserved(self, t: Transfer, dl: Download, fut: asyncio.Future[None]) -> None:
        if t.dl is not dl or fut.cancelled() or fut.exception() is None:
            return
        directory = t.row.dir or str(self.downloads)
        self.fail(t, f"not enough space in {directory} for {human_size(t.offer.size)}")

    async def _resume(self, t: Transfer) -> None:
        dl, writer = t.dl, t.writer
        assert dl is not None and writer is not None and dl.digests is not None
        good = await writer.submit(writer.scan, dl.digests)
        if t.dl is not dl:
            return
        dl.restore(good)
        t.rate_mark = (self._loop.time(), dl.verified_bytes)  # the rate counts new data only
        dl.paused = False
        log.info("resuming %s: %d of %d chunks already here", t.offer.name, len(good), dl.n)
        self.offers.progress(t, force=True)
        if dl.complete:
            self._finish(t)
            return
        self._act(t, [dl.ask(self._loop.time())])
        self.pump(t)

    # --- peers and frames -------------------------------------------------------

    def ask(self, t: Transfer) -> None:
        """Ask connected peers who may hold the file whole."""
        frame = m.encode(m.FileWho(fid=bytes.fromhex(t.fid)))
        for peer_id, conn in self.manager.peers.items():
            if self.offers.may_source(t, peer_id) and (t.dl is None or peer_id not in t.dl.sources):
                conn.send_encoded(frame)

    def peer_left(self, peer_id: str) -> None:
        """Forget what a departed peer was sending us."""
        self._limited_told = {told for told in self._limited_told if told[1] != peer_id}
        for t in self.offers.transfers.values():
            if t.dl is not None and peer_id in t.dl.sources:
                t.dl.drop(peer_id)
                self.pump(t)

    def have(self, t: Transfer, peer_id: str) -> None:
        """A peer holds the file whole (`fhave`): fetch from it too, if we may."""
        if t.dl is not None and self.offers.may_source(t, peer_id):
            t.dl.add_source(peer_id, self._loop.time())
            self.pump(t)

    def nak(self, t: Transfer, peer_id: str, frame: m.FileNak) -> None:
        """A source will not send a chunk (`fnak`): it is no longer one."""
        if frame.reason == FileRefusal.RELAY_LIMITED and (t.fid, peer_id) not in self._limited_told:
            self._limited_told.add((t.fid, peer_id))
            self.offers.emit(
                ev.Alert(
                    message=f"{t.offer.name}: {peer_id[:8]} is reached only through a "
                    "byte-limited relay, which does not carry files; it comes once "
                    "there is a direct path",
                    peer_id=peer_id,
                )
            )
        if t.dl is not None:
            log.info("%s will not send %s: %s", peer_id[:8], t.offer.name, frame.reason)
            t.dl.nak(peer_id, frame.idx)
            self.pump(t)

    def hashes(self, t: Transfer, peer_id: str, frame: m.FileHashes) -> None:
        """A page of the chunk digests (`fhash`)."""
        dl = t.dl
        if dl is None or dl.digests is not None:
            return
        ok = dl.hashes_received(peer_id, frame.lo, frame.hashes)
        if not ok:
            log.warning("%s sent a wrong chunk list for %s; not a source", peer_id[:8], t.fid[:8])
        elif dl.digests is not None:
            t.row.digests = b"".join(dl.digests)
            with contextlib.suppress(StoreError):
                self.offers.store.save_file(t.row)
        self.pump(t)

    def data(self, t: Transfer, peer_id: str, frame: m.FileData) -> None:
        """A piece of a chunk (`fdata`): a whole chunk goes to be checked and written."""
        dl, writer = t.dl, t.writer
        if dl is None or writer is None or dl.paused:
            return
        out = dl.piece(peer_id, frame.idx, frame.off, frame.data, self._loop.time())
        if out.dropped:
            log.warning("dropping %s as a source of %s: bad data", peer_id[:8], t.offer.name)
            self.pump(t)
        if not out.pieces:
            return
        fut = writer.submit(writer.check_and_write, frame.idx, out.pieces, out.digest)
        fut.add_done_callback(functools.partial(self._checked, t, dl, peer_id, frame.idx))
        self.pump(t)

    def _checked(
        self, t: Transfer, dl: Download, peer_id: str, idx: int, fut: asyncio.Future[bool]
    ) -> None:
        if fut.cancelled():
            return
        # Taken also when the transfer stopped meanwhile (an earlier write failed): a
        # failure nobody retrieves is logged as an error with its traceback at exit.
        exc = fut.exception()
        if t.dl is not dl:
            return  # stopped meanwhile
        if exc is not None:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.fail(t, f"cannot write {t.row.dir}: {reason}")
            return
        out = dl.checked(peer_id, idx, fut.result())
        if out.corrupt is not None:
            log.warning("chunk %d of %s from %s is corrupt", idx, t.fid[:8], peer_id[:8])
        if out.dropped:
            log.warning("dropping %s as a source of %s: corrupt data", peer_id[:8], t.offer.name)
        if dl.complete:
            self._finish(t)
            return
        self.offers.progress(t)
        self.pump(t)

    # --- what the Download asks -------------------------------------------------

    def pump(self, t: Transfer) -> None:
        """Send the requests the download wants now."""
        if t.dl is not None:
            self._act(t, t.dl.pump(self._loop.time()))

    def _act(self, t: Transfer, actions: list[DownloadAction]) -> None:
        """Do what t's download asks, in order; then see that its timer is armed."""
        dl = t.dl
        if dl is None:
            return
        fid = bytes.fromhex(t.fid)
        for action in actions:
            if isinstance(action, RequestChunk | RequestHashes):
                conn = self.manager.peers.get(action.peer_id)
                if conn is None:
                    dl.drop(action.peer_id)
                elif isinstance(action, RequestChunk):
                    conn.send_frame(m.FileGet(fid=fid, idx=action.idx))
                else:
                    conn.send_frame(m.FileHashesReq(fid=fid, lo=action.lo))
            elif isinstance(action, AskHolders):
                if action.dial_author:
                    self.manager.want(t.row.author)
                self.ask(t)
            elif isinstance(action, SourceExpired):
                log.info("%s stopped sending %s; asking others", action.peer_id[:8], t.offer.name)
            elif isinstance(action, Unstalled):
                self.offers.set_state(t, TRANSFERRING)
            elif isinstance(action, Stalled):
                self.offers.set_state(t, STALLED)
                self.offers.emit(
                    ev.FileStalled(
                        id=t.fid,
                        reason=f"no peer holding {t.offer.name!r} has been reachable for "
                        f"{limits.FILE_STALL_S:.0f} s; still trying",
                    )
                )
            elif isinstance(action, Refresh):
                self.offers.progress(t)
        self._arm_timer(dl.get_timer())

    # --- the end of a download ----------------------------------------------------

    def _finish(self, t: Transfer) -> None:
        if t.dl is not None:
            t.dl.paused = True
        self._spawn(t, self._finalise(t))

    async def _finalise(self, t: Transfer) -> None:
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
            self.fail(t, f"cannot save {t.offer.name!r} in {directory}: {exc.strerror or exc}")
            return
        if final is None:
            self.fail(t, "the file does not match its SHA-256: the offer is wrong")
            return
        sources = list(dl.sources)
        self._close_part(t)
        t.dl = None
        t.row.path = str(final)
        with contextlib.suppress(OSError):
            t.row.mtime_ns = final.stat().st_mtime_ns
        self.offers.progress(t, force=True)
        self.offers.set_state(t, DONE)
        for peer_id in sources:
            conn = self.manager.peers.get(peer_id)
            if conn is not None:
                conn.send_frame(m.FileEnd(fid=bytes.fromhex(t.fid), reason=FileEndReason.DONE))
        if t.row.author not in sources:
            self.offers.tell_author(t, FileEndReason.DONE)
        log.info("saved %s (%d bytes) at %s", t.offer.name, t.offer.size, final)
        self.offers.emit(ev.FileDone(id=t.fid, path=str(final), sha256=t.offer.sha256))

    def fail(self, t: Transfer, reason: str) -> None:
        """Stop t for good (`failed`, with reason); its partial file is removed."""
        self.stop(t, FileEndReason.CANCELLED, remove=True)
        self.offers.set_state(t, FAILED, reason)
        self.offers.emit(ev.FileFailed(id=t.fid, reason=reason))

    def stop(self, t: Transfer, tell: FileEndReason, remove: bool) -> None:
        """Stop fetching t, telling its sources (and a private offer's author) `tell`."""
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
        if remove and part is not None:
            with contextlib.suppress(OSError):
                part.unlink()
        if tell == FileEndReason.CANCELLED and (dl is None or t.row.author not in dl.sources):
            self.offers.tell_author(t, tell)

    def _close_part(self, t: Transfer) -> None:
        if t.writer is not None:
            t.writer.close()
            t.writer = None

    def _spawn(self, t: Transfer, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        t.tasks.add(task)
        task.add_done_callback(t.tasks.discard)
        task.add_done_callback(_log_failure)

    # --- the one timer of the downloads ---------------------------------------------

    def _arm_timer(self, at: float | None) -> None:
        """Fire the downloads' timer at `at` at the latest (earlier if armed earlier)."""
        if at is None or at >= self._timer_at or self._closing:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        # asyncio may run a timer a little early: it is due at the time it was armed for.
        self.on_timer(max(self._loop.time(), self._timer_at))

    def on_timer(self, now: float | None = None) -> None:
        """Run the timer of every download that is due at `now`, then arm the next one."""
        if now is None:
            now = self._loop.time()
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, float("inf")
        for t in list(self.offers.transfers.values()):
            if t.dl is None:
                continue
            due = t.dl.get_timer()
            if due is not None and due <= now:
                self._act(t, t.dl.handle_timer(now))  # (re-arms the timer)
            elif due is not None:
                self._arm_timer(due)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("file task failed", exc_info=task.exception())
