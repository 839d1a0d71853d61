"""Serving: answering who holds a file, its digest list, and the chunks peers ask for.

Chunks are read in a worker thread, one ahead (a file whose size or
modification time changed since it was offered is no longer served), and file
data is written to a connection only while its send buffer is below its
high-water mark, so chat frames never queue behind more than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
from collections import deque
from typing import TYPE_CHECKING

from chinwag import events as ev
from chinwag import limits
from chinwag.files.offers import DONE, FAILED, IN, OUT, SHARING, Offers, Transfer
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import FileRefusal
from chinwag.protocol.transfer import move
from chinwag.store.db import StoreError
from chinwag.store.filedata import sealer

if TYPE_CHECKING:
    from chinwag.net.link import Link

log = logging.getLogger(__name__)


class Server:
    """The chunks we send: a queue and a task per peer, and the files open for reading."""

    def __init__(self, offers: Offers) -> None:
        self.offers = offers
        self._loop = asyncio.get_running_loop()
        self.queues: dict[str, deque[tuple[str, int]]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._read_fds: dict[str, int] = {}
        #: Reads under way per open fd: an fd is only closed when none is.
        self._reading: dict[int, int] = {}

    async def close(self) -> None:
        """Stop serving and close the files open for reading."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()

    def peer_left(self, peer_id: str) -> None:
        """Forget what a departed peer asked of us."""
        self.queues.pop(peer_id, None)
        task = self.tasks.pop(peer_id, None)
        if task is not None:
            task.cancel()

    # --- answers ------------------------------------------------------------

    def who(self, conn: Link, t: Transfer, peer_id: str, frame: m.FileWho) -> None:
        """Answer `fwho`: `fhave` if we hold the file whole and may give it to the peer."""
        if self.offers.serves(t, peer_id):
            conn.send_frame(m.FileHave(fid=frame.fid))

    def hashes(self, conn: Link, t: Transfer, peer_id: str, frame: m.FileHashesReq) -> None:
        """Answer `fhreq` with a page of the chunk digests (if we serve the file to the peer)."""
        if self.offers.serves(t, peer_id) and t.row.digests is not None:
            lo = frame.lo * 32
            page = t.row.digests[lo : lo + 32 * limits.FILE_HASHES_PER_FRAME]
            conn.send_frame(m.FileHashes(fid=frame.fid, lo=frame.lo, hashes=page))

    def queue(self, conn: Link, t: Transfer, peer_id: str, frame: m.FileGet) -> None:
        """Queue a chunk a peer asked for (`fget`), or refuse it with `fnak`."""
        if not self.offers.serves(t, peer_id) or frame.idx >= t.offer.chunks:
            conn.send_frame(m.FileNak(fid=frame.fid, idx=frame.idx, reason=FileRefusal.UNAVAILABLE))
            return
        queue = self.queues.setdefault(peer_id, deque())
        if len(queue) >= limits.FILE_MAX_QUEUED:
            conn.send_frame(m.FileNak(fid=frame.fid, idx=frame.idx, reason=FileRefusal.BUSY))
            return
        queue.append((t.fid, frame.idx))
        task = self.tasks.get(peer_id)
        # A task that has just returned may not have run its done callback yet.
        if task is None or task.done():
            task = self._loop.create_task(self._serve(conn, peer_id, queue))
            self.tasks[peer_id] = task
            task.add_done_callback(functools.partial(self._serve_done, peer_id))

    def drop_queued(self, peer_id: str, fid: str) -> None:
        """Forget the chunks of fid a peer asked for (it is done with us)."""
        queue = self.queues.get(peer_id)
        if queue:
            kept = [item for item in queue if item[0] != fid]
            queue.clear()
            queue.extend(kept)

    # --- sending ------------------------------------------------------------

    def _serve_done(self, peer_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(peer_id) is task:
            del self.tasks[peer_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("serving %s failed", peer_id[:8], exc_info=task.exception())

    async def _serve(self, conn: Link, peer_id: str, queue: deque[tuple[str, int]]) -> None:
        """Send the chunks a peer asked for, in order, one read ahead."""
        ahead: asyncio.Future[bytes | FileRefusal] | None = None
        ahead_item: tuple[str, int] | None = None
        while conn.is_open:
            if ahead is None:
                if not queue:
                    return
                ahead_item = queue.popleft()
                ahead = self.read_chunk(*ahead_item)
            assert ahead_item is not None
            data = await ahead
            fid, idx = ahead_item
            ahead = None
            if queue:
                ahead_item = queue.popleft()
                ahead = self.read_chunk(*ahead_item)
            t = self.offers.transfers.get(fid)
            if t is None:
                continue
            raw_fid = bytes.fromhex(fid)
            if isinstance(data, FileRefusal):
                conn.send_frame(m.FileNak(fid=raw_fid, idx=idx, reason=data))
                continue
            view = memoryview(data)
            for off in range(0, len(data), limits.FILE_PIECE):
                if not await conn.wait_drained(limits.SEND_DRAIN_TIMEOUT_S) or not conn.is_open:
                    return
                if not self.offers.serves(t, peer_id):
                    break
                piece = m.FileData(
                    fid=raw_fid, idx=idx, off=off, data=view[off : off + limits.FILE_PIECE]
                )
                conn.send_encoded(m.encode(piece))
            t.served += len(data) - t.offer.overhead
            if t.private:
                self.offers.progress(t)  # a private offer has one recipient: show how far it got
        if ahead is not None:
            ahead.cancel()

    def read_chunk(self, fid: str, idx: int) -> asyncio.Future[bytes | FileRefusal]:
        """Read one chunk in a worker thread; resolve to its bytes or a refusal code."""
        t = self.offers.transfers.get(fid)
        if t is None or t.row.digests is None:
            fut: asyncio.Future[bytes | FileRefusal] = self._loop.create_future()
            fut.set_result(FileRefusal.UNAVAILABLE)
            return fut
        fd = self._read_fds.pop(fid, None)
        if fd is None:
            if not self._close_idle_read_fd():
                fut = self._loop.create_future()
                fut.set_result(FileRefusal.BUSY)
                return fut
            try:
                fd = os.open(t.row.path, os.O_RDONLY)
            except OSError as exc:
                self._source_gone(t, f"cannot read {t.row.path}: {exc.strerror or exc}")
                fut = self._loop.create_future()
                fut.set_result(FileRefusal.UNAVAILABLE)
                return fut
        self._read_fds[fid] = fd  # (re-inserted: the dict is in order of last use)
        chunk = t.offer.chunk
        length = min(chunk, t.offer.size - idx * chunk)
        size, mtime_ns = t.offer.size, t.row.mtime_ns
        seal = sealer(t.offer.key, fid)
        digest = t.row.digests[32 * idx : 32 * idx + 32]

        def read() -> bytes | FileRefusal:
            # A changed size or modification time means the file is no longer the
            # one offered (receivers check every chunk's digest anyway).
            st = os.fstat(fd)
            if st.st_size != size or st.st_mtime_ns != mtime_ns:
                return FileRefusal.CHANGED
            data = os.pread(fd, length, idx * chunk)
            if len(data) != length:
                return FileRefusal.CHANGED
            if seal is None:
                return data
            sealed = seal(idx, data)
            # Sealing is deterministic (the nonce is the chunk index): a chunk that no
            # longer matches its digest would reuse a nonce on another plaintext.
            return sealed if hashlib.sha256(sealed).digest() == digest else FileRefusal.CHANGED

        async def run() -> bytes | FileRefusal:
            try:
                result = await asyncio.to_thread(read)
            except OSError as exc:
                self._source_gone(t, f"cannot read {t.row.path}: {exc.strerror or exc}")
                return FileRefusal.UNAVAILABLE
            if result == FileRefusal.CHANGED:
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

    def _source_gone(self, t: Transfer, reason: str) -> None:
        """Stop sharing a file we can no longer serve as offered."""
        # Its read fd stays open until close(): a read ahead may still be using it,
        # and a closed fd number could be reused by another file meanwhile.
        if t.row.direction == OUT and t.row.state == SHARING:
            log.warning("stop sharing %s: %s", t.offer.name, reason)
            self.offers.set_state(t, FAILED, reason)
            self.offers.emit(ev.FileFailed(id=t.fid, reason=reason))
        elif t.row.direction == IN and t.row.state == DONE:
            log.warning("no longer sharing %s: %s", t.offer.name, reason)
            t.row.state = move(t.row.direction, t.row.state, FAILED)
            t.row.reason = reason
            with contextlib.suppress(StoreError):
                self.offers.store.save_file(t.row)
