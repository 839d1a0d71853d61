"""Files on disk for file sharing: hashing, the partial file's writer, final names.

Blocking functions, meant for worker threads; the ChunkWriter runs its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from chinwag import limits
from chinwag.crypto.box import BadCiphertext, open_chunk, seal_chunk
from chinwag.errors import UsageError
from chinwag.protocol.transfer import Offer, Piece

log = logging.getLogger(__name__)
_T = TypeVar("_T")
#: Seals chunk idx of a file as it travels (seal_chunk with the file's key and id).
Sealer = Callable[[int, bytes], bytes]


def part_path(directory: Path, fid: str) -> Path:
    """Return the hidden partial file of download fid in directory."""
    # The whole fid: a peer may offer a fid sharing any prefix with another offer's.
    return directory / f".chinwag-{fid}.part"


def sealer(key: str, fid: str) -> Sealer | None:
    """Return how the chunks of file fid (hex) are sealed on the wire with its key (hex),
    or None if there is no key: they travel as they are."""
    if not key:
        return None
    raw_key, raw_fid = bytes.fromhex(key), bytes.fromhex(fid)
    return lambda idx, data: seal_chunk(raw_key, raw_fid, idx, data)


def hash_file(
    path: Path, chunk: int = limits.FILE_CHUNK, seal: Sealer | None = None
) -> tuple[int, str, bytes, int]:
    """Return (size, whole-file SHA-256 hex, concatenated chunk digests, mtime_ns) of a file.

    With `seal`, the chunk digests are those of the sealed chunks (what travels).
    """
    whole = hashlib.sha256()
    digests = bytearray()
    with path.open("rb") as f:
        st = os.fstat(f.fileno())
        size = 0
        idx = 0
        while block := f.read(chunk):
            whole.update(block)
            digests += hashlib.sha256(block if seal is None else seal(idx, block)).digest()
            size += len(block)
            idx += 1
    return size, whole.hexdigest(), bytes(digests), st.st_mtime_ns


def hash_source(
    path: str, chunk: int = limits.FILE_CHUNK, seal: Sealer | None = None
) -> tuple[Path, tuple[int, str, bytes, int]]:
    """Check that path names a readable regular file; return it resolved, with hash_file()."""
    source = Path(path).expanduser()
    try:
        source = source.resolve(strict=True)
    except (OSError, RuntimeError):
        raise UsageError(f"no such file: {path}") from None
    if source.is_dir():
        raise UsageError(f"{path} is a directory; send files one by one")
    if not source.is_file():
        raise UsageError(f"{path} is not a regular file")
    if not os.access(source, os.R_OK):
        raise UsageError(f"{path} is not readable")
    return source, hash_file(source, chunk, seal)


def unique_path(directory: Path, name: str) -> Path:
    """Create and return a new empty file `name` in directory, `name (1).ext` if taken, etc."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for n in range(10_000):
        candidate = directory / (name if n == 0 else f"{stem} ({n}){suffix}")
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise OSError(f"too many files called {name!r} in {directory}")


class ChunkWriter:
    """Checks and writes the chunks of one download in a thread of its own, in arrival order.

    A second thread keeps the SHA-256 of the chunks written in order from the
    start of the file, so the final whole-file check re-reads only what arrived
    out of order, and the two hashes of each byte run on two cores.
    """

    def __init__(self, fd: int, offer: Offer) -> None:
        self.fd = fd
        self.offer = offer
        #: A sealed offer's chunks arrive sealed; the file on disk holds them opened.
        self._key = bytes.fromhex(offer.key) if offer.sealed else b""
        self._fid = bytes.fromhex(offer.fid)
        self._seal = sealer(offer.key, offer.fid)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chinwag-file")
        self._whole = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chinwag-sha")
        self._prefix = hashlib.sha256()
        #: Chunks [0, _prefix_n) are handed to the whole-file hash (used in the io thread).
        self._prefix_n = 0
        #: Set by close(): work still queued in the io thread skips the file.
        self._closed = False

    def submit(self, fn: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        """Run fn(*args) in the io thread, after everything submitted before."""
        return asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def close(self) -> None:
        """Stop writing; the file is closed in the io thread, after any write under way.

        (Closing it here could let a write still running land in whatever file
        is opened next under the same descriptor number.)
        """
        if self._closed:
            return
        self._closed = True
        self._io.submit(self._release)
        self._io.shutdown(wait=False)

    def _release(self) -> None:
        self._whole.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _extend(self, idx: int, pieces: Sequence[Piece | bytearray]) -> None:
        if idx == self._prefix_n:
            self._prefix_n += 1
            self._whole.submit(self._hash_more, pieces)

    def _hash_more(self, pieces: Sequence[Piece | bytearray]) -> None:
        for piece in pieces:
            self._prefix.update(piece)

    def reserve(self) -> None:
        """Allocate the whole file on disk at once: a full disk shows now, not half-way,
        and writes into allocated space are cheaper than growing the file."""
        if os.fstat(self.fd).st_size >= self.offer.size or self.offer.size == 0:
            return
        try:
            os.posix_fallocate(self.fd, 0, self.offer.size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            # Not supported by this filesystem: the file grows as chunks arrive.
            log.debug("no preallocation for %s: %s", self.offer.name, exc)

    def check_and_write(
        self, idx: int, data: Sequence[Piece] | bytearray | bytes, digest: bytes
    ) -> bool:
        """Write chunk idx (one buffer, or its pieces in order) if it matches digest.

        A sealed offer's chunk is checked as it travelled, then opened, and its
        plaintext written. Return whether it was written.
        """
        if self._closed:
            return False
        pieces = data if isinstance(data, list | tuple) else (data,)
        hasher = hashlib.sha256()
        for piece in pieces:
            hasher.update(piece)
        if hasher.digest() != digest:
            return False
        if self._key:
            try:
                pieces = (open_chunk(self._key, self._fid, idx, b"".join(pieces)),)
            except BadCiphertext:
                # Only the author could seal a chunk with the right digest that does not
                # open (a bad offer): corrupt, like a wrong digest.
                return False
        size = sum(len(piece) for piece in pieces)
        if os.pwritev(self.fd, pieces, idx * self.offer.chunk) != size:
            raise OSError(errno.EIO, "short write")
        self._extend(idx, pieces)
        return True

    def scan(self, digests: list[bytes]) -> list[int]:
        """Return the chunks of the partial file that match their digests."""
        good: list[int] = []
        size = os.fstat(self.fd).st_size
        chunk = self.offer.chunk
        for idx, digest in enumerate(digests):
            length = min(chunk, self.offer.size - idx * chunk)
            if self._closed or idx * chunk + length > size:
                break
            data = os.pread(self.fd, length, idx * chunk)
            travelled = data if self._seal is None else self._seal(idx, data)
            if hashlib.sha256(travelled).digest() == digest:
                good.append(idx)
                self._extend(idx, (data,))
        return good

    def whole_digest(self) -> str:
        """Return the SHA-256 (hex) of the whole file as written (call in the io thread)."""
        whole = self._whole.submit(self._prefix.copy).result()
        pos = self._prefix_n * self.offer.chunk
        while pos < self.offer.size:
            block = os.pread(self.fd, min(limits.FILE_CHUNK, self.offer.size - pos), pos)
            if not block:
                break
            whole.update(block)
            pos += len(block)
        return whole.hexdigest()
