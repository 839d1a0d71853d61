"""File offers and the receiver's bookkeeping of one download, without I/O.

A file travels in chunks of `chunk` bytes. Its offer (a chat message, so it is
signed, stored and synced like any other) carries the SHA-256 of the whole
file and `root`, the SHA-256 of the concatenated chunk digests. A Download
fetches the digest list in pages and checks it against `root`, then asks its
sources for chunks within a window per source, assembles each chunk from its
pieces and hands it to the I/O layer to check against its digest and write.
An offer to a private room carries a file key: its chunks travel sealed (16
bytes longer each) and the digests are those of the sealed chunks.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Final

import msgspec

from chinwag import limits
from chinwag.crypto.box import CHUNK_TAG_BYTES, FILE_KEY_BYTES
from chinwag.errors import LocalProtocolError

#: Starts the text of a chat message that offers a file (cannot be typed: a control char).
OFFER_MARK: Final = "\x1ffile:"
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
EMPTY_ROOT: Final = hashlib.sha256(b"").hexdigest()
#: Domain separation of file ids.
FILE_ID_CONTEXT: Final = b"chinwag/1 file-id\x00"


# --- states of a transfer, as data (docs/files.md, "States") ------------------


class Direction(StrEnum):
    """Whose offer a transfer is: `in` (a peer's, we may fetch it) or `out` (ours)."""

    IN = "in"
    OUT = "out"


class FileState(StrEnum):
    """The state of one offer or transfer (stored in its row, shown in /files)."""

    OFFERED = "offered"
    TRANSFERRING = "transferring"
    STALLED = "stalled"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    SHARING = "sharing"


_IN, _OUT = Direction.IN, Direction.OUT
_S = FileState

#: The state a new row of each direction starts in.
INITIAL: Final[dict[Direction, FileState]] = {_IN: _S.OFFERED, _OUT: _S.SHARING}

#: Every allowed move: (direction, from) -> the states it may go to. A state missing
#: as a key (or as a value) is not one a row of that direction can be in.
TRANSITIONS: Final[dict[tuple[Direction, FileState], frozenset[FileState]]] = {
    # accept, reject, cancel; withdrawn by the sender
    (_IN, _S.OFFERED): frozenset({_S.TRANSFERRING, _S.REJECTED, _S.CANCELLED, _S.FAILED}),
    # no source for FILE_STALL_S; saved; cancel; an error or withdrawn by the sender
    (_IN, _S.TRANSFERRING): frozenset({_S.STALLED, _S.DONE, _S.CANCELLED, _S.FAILED}),
    # a source again; saved (a complete partial file resumed); cancel; failed
    (_IN, _S.STALLED): frozenset({_S.TRANSFERRING, _S.DONE, _S.CANCELLED, _S.FAILED}),
    # the saved file changed or disappeared: no longer served
    (_IN, _S.DONE): frozenset({_S.FAILED}),
    # accepted again
    (_IN, _S.FAILED): frozenset({_S.TRANSFERRING}),
    (_IN, _S.CANCELLED): frozenset({_S.TRANSFERRING}),
    (_IN, _S.REJECTED): frozenset({_S.TRANSFERRING}),
    # a private offer fetched by its recipient; withdrawn; the file changed or disappeared
    (_OUT, _S.SHARING): frozenset({_S.DONE, _S.CANCELLED, _S.FAILED}),
    # withdrawn after a private offer was fetched
    (_OUT, _S.DONE): frozenset({_S.CANCELLED}),
    (_OUT, _S.FAILED): frozenset(),
    (_OUT, _S.CANCELLED): frozenset(),
}

#: The states a row of each direction can be in.
STATES: Final[dict[Direction, frozenset[FileState]]] = {
    d: frozenset(s for (dd, s) in TRANSITIONS if dd == d) for d in Direction
}

#: States in which a download is under way (it has a Download and timers).
ACTIVE: Final = frozenset({_S.TRANSFERRING, _S.STALLED})


def move(direction: str, old: str, new: str) -> FileState:
    """Return `new` as a FileState if a row of `direction` may go from `old` to it.

    Raises LocalProtocolError for an unknown direction or state or a move the
    table does not allow: a bug of ours, never something a peer can cause.
    """
    try:
        key = (Direction(direction), FileState(old))
        target = FileState(new)
    except ValueError:
        raise LocalProtocolError(f"no file state {direction}/{old} -> {new}") from None
    if target not in TRANSITIONS.get(key, frozenset()):
        raise LocalProtocolError(f"a file {direction} cannot go from {old} to {new}")
    return target


def row_state(direction: str, state: str) -> tuple[Direction, FileState]:
    """Return a stored row's direction and state; LocalProtocolError if not a known pair."""
    try:
        d, s = Direction(direction), FileState(state)
    except ValueError:
        raise LocalProtocolError(f"no file state {direction}/{state}") from None
    if s not in STATES[d]:
        raise LocalProtocolError(f"a file {direction} cannot be {state}")
    return d, s


class Offer(msgspec.Struct, frozen=True, forbid_unknown_fields=False, omit_defaults=True):
    """What a file offer says: id, name, size, whole-file SHA-256, chunk size, digest-list root.

    `fid` is bound to the offer's author: file_id(author, salt). Another peer
    cannot make an offer with the same id, so it cannot stand in for the author's file.
    `key` (hex, only in offers to a private room) is the file key: chunks travel
    sealed with it (crypto/box.py: seal_chunk) and `root` covers the sealed chunks.
    """

    fid: str
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    size: Annotated[int, msgspec.Meta(ge=0, le=limits.FILE_MAX_SIZE)]
    sha256: str
    chunk: Annotated[int, msgspec.Meta(ge=4096, le=limits.FILE_CHUNK)]
    root: str
    salt: str = ""
    key: str = ""

    @property
    def chunks(self) -> int:
        """The number of chunks of the file (the last one may be short)."""
        return -(-self.size // self.chunk)

    @property
    def sealed(self) -> bool:
        """Whether the chunks travel sealed with the offer's file key."""
        return bool(self.key)

    @property
    def overhead(self) -> int:
        """Bytes a chunk on the wire has beyond its plaintext (the AEAD tag, if sealed)."""
        return CHUNK_TAG_BYTES if self.key else 0


_offer_decoder = msgspec.json.Decoder(Offer)
_encoder = msgspec.json.Encoder()


def encode_offer(offer: Offer) -> str:
    """Return the message text that carries an offer."""
    return OFFER_MARK + _encoder.encode(offer).decode()


def decode_offer(text: str) -> Offer | None:
    """Return the offer carried by a message text, or None if it carries none (or a bad one)."""
    if not text.startswith(OFFER_MARK):
        return None
    try:
        offer = _offer_decoder.decode(text[len(OFFER_MARK) :])
    except msgspec.DecodeError:
        return None
    ok = (
        _HEX32.fullmatch(offer.fid)
        and _HEX32.fullmatch(offer.salt)
        and _HEX64.fullmatch(offer.sha256)
        and _HEX64.fullmatch(offer.root)
        and (not offer.key or _HEX64.fullmatch(offer.key))
        # Bounds the receiver's chunk bookkeeping and digest list (32 MiB at most).
        and offer.chunks <= limits.FILE_MAX_CHUNKS
    )
    return offer if ok else None


def file_id(author: bytes, salt: str) -> str:
    """Return the file id of an offer by `author` (public key) with `salt` (32 hex digits)."""
    return hashlib.sha256(FILE_ID_CONTEXT + author + bytes.fromhex(salt)).hexdigest()[:32]


def new_offer(
    author: bytes,
    salt: bytes,
    name: str,
    size: int,
    sha256: str,
    root: str,
    chunk: int = limits.FILE_CHUNK,
    key: bytes = b"",
) -> Offer:
    """Return a new offer by `author` (public key) with a fresh 16-byte `salt`.

    Its id is bound to both (file_id); the caller brings the randomness, also
    for `key` (a fresh file key for a private room's offer; empty otherwise),
    and for a sealed offer computes `root` over the sealed chunks.
    """
    if len(salt) != 16:
        raise ValueError("the salt is 16 bytes")
    if key and len(key) != FILE_KEY_BYTES:
        raise ValueError(f"a file key is {FILE_KEY_BYTES} bytes")
    return Offer(
        fid=file_id(author, salt.hex()),
        name=name,
        size=size,
        sha256=sha256,
        chunk=chunk,
        root=root,
        salt=salt.hex(),
        key=key.hex(),
    )


def digest_root(digests: bytes) -> str:
    """Return the root over concatenated chunk digests (hex)."""
    return hashlib.sha256(digests).hexdigest()


# --- the receiver's state machine ---------------------------------------------

#: One piece of a chunk as received: a view into its decrypted frame, or bytes.
Piece = bytes | memoryview


@dataclass(slots=True)
class Source:
    """One peer we fetch from: its chunks in flight (served in request order) and faults."""

    peer_id: str
    inflight: deque[int] = field(default_factory=deque)
    bad: int = 0
    received: int = 0
    last_progress: float = 0.0


@dataclass(slots=True)
class _Partial:
    source: str
    pieces: list[Piece] = field(default_factory=list)
    got: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a piece or a chunk check means for the I/O layer."""

    #: A whole chunk arrived, as its pieces in order (not copied into one buffer):
    #: check them against `digest` and write them, then call checked().
    pieces: tuple[Piece, ...] = ()
    digest: bytes = b""
    verified: int | None = None
    corrupt: int | None = None
    #: The source was dropped (broke the protocol or sent too many corrupt chunks).
    dropped: bool = False

    @property
    def chunk(self) -> bytearray | None:
        """The whole chunk in one buffer (a copy), or None if no chunk completed."""
        return bytearray(b"".join(self.pieces)) if self.pieces else None


@dataclass(frozen=True, slots=True)
class AskHolders:
    """Send `fwho` to every connected peer that may hold the file and is not a source."""

    #: Nobody to fetch from: also dial the offer's author (on demand, if its address is known).
    dial_author: bool = False


@dataclass(frozen=True, slots=True)
class RequestHashes:
    """Send `fhreq` for the page of chunk digests starting at chunk `lo` to `peer_id`."""

    peer_id: str
    lo: int


@dataclass(frozen=True, slots=True)
class RequestChunk:
    """Send `fget` for chunk `idx` to `peer_id` (if it is gone: drop it as a source)."""

    peer_id: str
    idx: int


@dataclass(frozen=True, slots=True)
class SourceExpired:
    """`peer_id` owed chunks or digests and sent nothing in time: dropped (not banned)."""

    peer_id: str


@dataclass(frozen=True, slots=True)
class Stalled:
    """No source for FILE_STALL_S: report the download stalled (it keeps trying)."""


@dataclass(frozen=True, slots=True)
class Unstalled:
    """A stalled download has a source again: it is transferring."""


@dataclass(frozen=True, slots=True)
class Refresh:
    """Show the download's progress again (its rate falls while no data comes)."""


#: What a download asks of the I/O layer, in order.
DownloadAction = (
    AskHolders | RequestHashes | RequestChunk | SourceExpired | Stalled | Unstalled | Refresh
)


class Download:
    """Which chunks of one file we have, want, and expect from whom; and its timers.

    The adapter feeds it frames and `now`, runs the actions that pump(), ask() and
    handle_timer() return, and arms one timer at get_timer().
    """

    def __init__(self, offer: Offer, window: int = limits.FILE_WINDOW) -> None:
        self.offer = offer
        self.window = window
        self.n = offer.chunks
        self.digests: list[bytes] | None = [] if self.n == 0 else None
        self._pages: dict[int, bytes] = {}
        self._page_from: set[str] = set()
        self.have = bytearray(self.n)
        self.verified_count = 0
        self.verified_bytes = 0
        self.sources: dict[str, Source] = {}
        #: Peers dropped for corrupt data or protocol faults: never asked again.
        self.banned: set[str] = set()
        self._partial: dict[int, _Partial] = {}
        self._bad: dict[str, int] = {}
        #: Chunks received whole and being checked by the I/O layer.
        self._checking: set[int] = set()
        self._next_missing = 0
        #: The I/O layer is checking the partial file or the whole file: no requests, no timers.
        self.paused = False
        #: When we last asked peers who holds the file.
        self.asked_at = float("-inf")
        #: Since when no source is known (None while there is one).
        self.no_source_since: float | None = None
        #: The source asked for a page of digests, and when.
        self.hashes_asked: tuple[str, float] | None = None
        #: Whether the download is reported stalled.
        self.stalled = False
        self.refreshed_at = float("-inf")

    # --- timers and what to send ------------------------------------------

    def start(self, now: float, stalled: bool = False) -> None:
        """Start (or resume) at `now`, with no source yet; `stalled` as reported before."""
        self.no_source_since = now
        self.asked_at = float("-inf")
        self.refreshed_at = now
        self.stalled = stalled

    def ask(self, now: float) -> AskHolders:
        """Ask connected peers who holds the file, now."""
        self.asked_at = now
        return AskHolders()

    def pump(self, now: float) -> list[DownloadAction]:
        """Return the requests the download wants now (and whether it is stalled no more)."""
        if self.paused:
            return []
        out: list[DownloadAction] = []
        if self.sources:
            self.no_source_since = None
            if self.stalled:
                self.stalled = False
                out.append(Unstalled())
        elif self.no_source_since is None:
            self.no_source_since = now
        lo = self.hashes_wanted()
        if lo is not None:
            if self.sources and (
                self.hashes_asked is None or self.hashes_asked[0] not in self.sources
            ):
                peer_id = next(iter(self.sources))
                self.hashes_asked = (peer_id, now)
                out.append(RequestHashes(peer_id, lo))
            return out
        out.extend(RequestChunk(peer_id, idx) for peer_id, idx in self.requests(now))
        return out

    def get_timer(self) -> float | None:
        """Return when handle_timer() has something to do next (None: nothing while paused)."""
        if self.paused:
            return None
        # The same sums as handle_timer() compares `now` with, so each deadline has work;
        # past a strict timeout means the next float after it.
        due: list[float] = [
            math.nextafter(s.last_progress + limits.FILE_REQUEST_TIMEOUT_S, math.inf)
            for s in self.sources.values()
            if s.inflight
        ]
        if self.hashes_asked is not None:
            due.append(
                math.nextafter(self.hashes_asked[1] + limits.FILE_HASHES_TIMEOUT_S, math.inf)
            )
        if len(self.sources) < limits.FILE_MAX_SOURCES:
            due.append(self.asked_at + limits.FILE_ASK_INTERVAL_S)
        if self.sources:
            due.append(self.refreshed_at + limits.FILE_TICK_S)
        elif self.no_source_since is not None and not self.stalled:
            due.append(self.no_source_since + limits.FILE_STALL_S)
        return min(due) if due else None

    def handle_timer(self, now: float) -> list[DownloadAction]:
        """Drop silent sources, ask for more, report a stall; return what to do (in order)."""
        if self.paused:
            return []
        out: list[DownloadAction] = []
        for peer_id in self.expired(now):
            self.drop(peer_id)
            out.append(SourceExpired(peer_id))
        asked = self.hashes_asked
        if asked is not None and now > asked[1] + limits.FILE_HASHES_TIMEOUT_S:
            self.drop(asked[0])  # (not banned: it may be slow rather than lying)
            self.hashes_asked = None
            out.append(SourceExpired(asked[0]))
        if (
            len(self.sources) < limits.FILE_MAX_SOURCES
            and now >= self.asked_at + limits.FILE_ASK_INTERVAL_S
        ):
            self.asked_at = now
            # Nobody to fetch from: dial the author rather than wait for the reconnect back-off.
            out.append(AskHolders(dial_author=not self.sources))
        out.extend(self.pump(now))
        if (
            not self.sources
            and self.no_source_since is not None
            and now >= self.no_source_since + limits.FILE_STALL_S
            and not self.stalled
        ):
            self.stalled = True
            out.append(Stalled())
        elif self.sources and now >= self.refreshed_at + limits.FILE_TICK_S:
            self.refreshed_at = now
            out.append(Refresh())
        return out

    # --- chunks ----------------------------------------------------------

    def chunk_len(self, idx: int) -> int:
        """Return the length in bytes of chunk idx (of the file, so unsealed)."""
        return min(self.offer.chunk, self.offer.size - idx * self.offer.chunk)

    def wire_len(self, idx: int) -> int:
        """Return the length in bytes of chunk idx as it travels (sealed, if the offer is)."""
        return self.chunk_len(idx) + self.offer.overhead

    @property
    def complete(self) -> bool:
        """Whether the digest list is known and every chunk is verified."""
        return self.digests is not None and self.verified_count == self.n

    def restore(self, verified: list[int]) -> None:
        """Mark chunks found intact in a partial file (after a restart)."""
        for idx in verified:
            if 0 <= idx < self.n and not self.have[idx]:
                self.have[idx] = 1
                self.verified_count += 1
                self.verified_bytes += self.chunk_len(idx)

    # --- the digest list -------------------------------------------------

    def hashes_wanted(self) -> int | None:
        """Return the first chunk whose digest we still need, or None if we have them all."""
        if self.digests is not None:
            return None
        lo = 0
        while lo in self._pages:
            lo += len(self._pages[lo]) // 32
        return lo

    def hashes_received(self, peer_id: str, lo: int, data: bytes) -> bool:
        """Take a page of digests; return False (and drop the peer) if it is bad."""
        if self.digests is None:
            self.hashes_asked = None  # an answer: the next pump may ask (again)
        if self.digests is not None or lo != self.hashes_wanted():
            return True  # a late or repeated page: harmless
        if peer_id not in self.sources:
            return True  # not asked (or banned): its page could get honest sources banned
        if self._page_from and peer_id not in self._page_from:
            # The whole list comes from one source, so a mismatch bans only the liar;
            # a new source starts the list again (this page is then a late one).
            self._pages.clear()
            self._page_from.clear()
            if lo != 0:
                return True
        count = len(data) // 32
        if len(data) % 32 or count == 0 or lo + count > self.n:
            self.drop(peer_id, ban=True)
            return False
        self._pages[lo] = data
        self._page_from.add(peer_id)
        if lo + count < self.n:
            return True
        joined = b"".join(self._pages[k] for k in sorted(self._pages))
        if digest_root(joined) != self.offer.root:
            # The list does not match the signed offer: whoever sent it lied.
            for peer in list(self._page_from):
                self.drop(peer, ban=True)
            self._pages.clear()
            self._page_from.clear()
            return False
        self.digests = [joined[i : i + 32] for i in range(0, len(joined), 32)]
        return True

    # --- sources ---------------------------------------------------------

    def add_source(self, peer_id: str, now: float) -> bool:
        """Add a peer that holds the file; return False if it is banned or already a source."""
        if peer_id in self.banned or peer_id in self.sources:
            return False
        if len(self.sources) >= limits.FILE_MAX_SOURCES:
            return False
        self.sources[peer_id] = Source(peer_id, last_progress=now)
        return True

    def drop(self, peer_id: str, ban: bool = False) -> None:
        """Stop using a source; its chunks in flight are wanted again."""
        if ban:
            self.banned.add(peer_id)
        source = self.sources.pop(peer_id, None)
        if source is None:
            return
        for idx in source.inflight:
            self._partial.pop(idx, None)
            self._next_missing = min(self._next_missing, idx)

    def requests(self, now: float) -> list[tuple[str, int]]:
        """Return (peer, chunk) requests that fill every source's window, lowest chunks first."""
        if (
            self.digests is None
            or not self.sources
            or len(self._checking) >= limits.FILE_MAX_CHECKING
        ):
            return []  # (waiting for checks bounds the chunks held in memory)
        out: list[tuple[str, int]] = []
        # Round-robin, one chunk per source per pass, so parallel sources share the work.
        progress = True
        while progress:
            progress = False
            for source in self.sources.values():
                if len(source.inflight) >= self.window:
                    continue
                idx = self._take_missing()
                if idx is None:
                    return out
                if not source.inflight:
                    source.last_progress = now
                source.inflight.append(idx)
                self._partial[idx] = _Partial(source.peer_id)
                out.append((source.peer_id, idx))
                progress = True
        return out

    def _take_missing(self) -> int | None:
        i = self._next_missing
        while i < self.n and (self.have[i] or i in self._partial or i in self._checking):
            i += 1
        if i >= self.n:
            self._next_missing = self.n
            return None
        self._next_missing = i + 1
        return i

    def expired(self, now: float) -> list[str]:
        """Return sources that owe us chunks and sent nothing for FILE_REQUEST_TIMEOUT_S."""
        return [
            s.peer_id
            for s in self.sources.values()
            if s.inflight and now > s.last_progress + limits.FILE_REQUEST_TIMEOUT_S
        ]

    # --- data ------------------------------------------------------------

    def piece(
        self, peer_id: str, idx: int, off: int, data: bytes | memoryview, now: float
    ) -> Outcome:
        """Take a piece of a chunk from a source; return the whole chunk once it is complete.

        The I/O layer checks the chunk against `Outcome.digest` (off the event
        loop), writes it if it matches, and reports with checked().
        """
        part = self._partial.get(idx)
        source = self.sources.get(peer_id)
        if source is None or part is None or part.source != peer_id:
            return Outcome()  # not asked of this peer (any more): ignore
        length = self.wire_len(idx)
        if off != part.got or not data or off + len(data) > length:
            self.drop(peer_id, ban=True)
            return Outcome(dropped=True)
        part.pieces.append(data)
        part.got += len(data)
        source.last_progress = now
        if part.got < length:
            return Outcome()
        del self._partial[idx]
        with_removed(source.inflight, idx)
        self._checking.add(idx)
        assert self.digests is not None
        return Outcome(pieces=tuple(part.pieces), digest=self.digests[idx])

    def checked(self, peer_id: str, idx: int, ok: bool) -> Outcome:
        """Record the check of a chunk from peer_id: verified, or corrupt (asked again)."""
        self._checking.discard(idx)
        source = self.sources.get(peer_id)
        if ok:
            if not self.have[idx]:
                self.have[idx] = 1
                self.verified_count += 1
                self.verified_bytes += self.chunk_len(idx)
                if source is not None:
                    source.received += self.chunk_len(idx)
            return Outcome(verified=idx)
        self._next_missing = min(self._next_missing, idx)
        # Counted per download, not per Source: a drop (nak, timeout) and re-add
        # must not reset it, nor a drop before the check came back.
        bad = self._bad[peer_id] = self._bad.get(peer_id, 0) + 1
        if source is not None:
            source.bad = bad
        if bad >= limits.FILE_MAX_BAD_CHUNKS and peer_id not in self.banned:
            self.drop(peer_id, ban=True)
            return Outcome(corrupt=idx, dropped=True)
        return Outcome(corrupt=idx)

    def nak(self, peer_id: str, idx: int) -> None:
        """The source will not send chunk idx: stop using it for this file."""
        source = self.sources.get(peer_id)
        if source is not None and idx in source.inflight:
            self.drop(peer_id)


def with_removed(items: deque[int], value: int) -> None:
    """Remove value from items if present (the common case: it is the first)."""
    if items and items[0] == value:
        items.popleft()
    elif value in items:
        items.remove(value)
