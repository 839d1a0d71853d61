"""History and delivery: store every message, catch peers up, show where messages arrived.

The I/O side of section 3 of DESIGN.md. `protocol/sync.py` decides (vectors,
gaps, push plans); `store/db.py` persists; this module runs them:

- every message, ours or received, is committed (group commit: one
  transaction per event-loop turn) before it is shown, relayed or receipted;
- when a connection opens, periodically, and shortly after new messages were
  stored, we send our vector of each room; a peer's vector both tells us what
  to push it (oldest first, in bounded batches, waiting for the socket between
  batches) and serves as its delivery receipt;
- a gap (a held seq above a missing one) is reported and, if a push does not
  fill it soon, asked for with a Want;
- bad input (a forged signature, a sync-request flood, an author's own
  equivocation) closes that peer's connection and stores nothing of it; a
  relayed second version of a message is dropped and its author flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.identity import Identity, public_from_peer_id, verify
from chinwag.errors import RemoteProtocolError, UsageError
from chinwag.protocol import messages as m
from chinwag.protocol.chat import ChatMessage, SeenSet, open_message
from chinwag.protocol.sync import PushRange, SyncState
from chinwag.rooms import DM, RoomBook
from chinwag.store.db import Insert, NewMessage, Row, Store, StoreError

if TYPE_CHECKING:
    from chinwag.net.link import Link, Links

log = logging.getLogger(__name__)

Key = tuple[int, str, int]


@dataclass(slots=True)
class _Pending:
    """A message waiting for the next group commit."""

    msg: ChatMessage
    conn: Link | None  # None: our own
    live: bool
    verified: bool
    done: asyncio.Future[ev.NodeEvent] | None
    #: The readable text (decrypted for private rooms and conversations).
    text: str


class _Bucket:
    """Token bucket limiting one peer's sync requests (or our wants to one peer)."""

    def __init__(
        self,
        now: float,
        burst: float = limits.SYNC_REQUESTS_BURST,
        rate: float = limits.SYNC_REQUESTS_PER_S,
    ) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = burst
        self.stamp = now
        #: Takes refused so far (to log the first only).
        self.refused = 0

    def take(self, now: float, cost: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


def _chain(outer: asyncio.Future[ev.NodeEvent], inner: asyncio.Future[ev.NodeEvent]) -> None:
    """Resolve outer like inner."""
    if outer.done():
        return
    if inner.cancelled():
        outer.cancel()
    elif (exc := inner.exception()) is not None:
        outer.set_exception(exc)
    else:
        outer.set_result(inner.result())


class History:
    """Persistence, anti-entropy, gaps and receipts for one node."""

    def __init__(
        self,
        store: Store,
        identity: Identity,
        manager: Links,
        emit: Callable[[ev.NodeEvent], None],
        book: RoomBook,
    ) -> None:
        self.book = book
        self.store = store
        self.identity = identity
        self.me = identity.peer_id
        self.manager = manager
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self.sync = SyncState()
        self._seen = SeenSet()
        self._pending: list[_Pending] = []
        self._pending_ids: set[str] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._last_key: dict[str, Key | None] = {}
        self._next_seq: dict[str, int] = {}
        self._dirty_rooms: set[str] = set()
        self._vector_handle: asyncio.TimerHandle | None = None
        self._periodic: asyncio.TimerHandle | None = None
        self._peer_vectors: dict[str, dict[str, dict[str, int]]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._jobs: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._rerun: dict[tuple[str, str], list[PushRange]] = {}
        # (peer, room, author) -> seq up to which this connection has carried the
        # author's messages to the peer without a hole (live or pushed), so a
        # push does not resend what is still in flight.
        self._sent: dict[tuple[str, str, str], int] = {}
        self._gaps: dict[tuple[str, str], tuple[int, int]] = {}
        # Times the current gap of (room, author) was asked for (we give up at GAP_MAX_ASKS).
        self._asks: dict[tuple[str, str], int] = {}
        self._want_budget: dict[str, _Bucket] = {}
        #: Authors seen signing two messages with one seq (flagged once each).
        self.equivocators: set[str] = set()
        self._want_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._unsaved: dict[tuple[str, str], dict[str, int]] = {}
        self._vector_sent: dict[tuple[str, str], float] = {}
        self._author_nicks: dict[str, str] = store.peer_nicks()
        #: Peers met in an earlier run or verified: a larger store budget (known before we start,
        #: so a fresh identity cannot make itself known by connecting).
        self._known = store.known_peers()
        self._store_budget: dict[str, _Bucket] = {}
        #: Authors heard live through another peer: author -> (that peer, time.time()).
        self.relayed: dict[str, tuple[str, float]] = {}
        self._save_handle: asyncio.TimerHandle | None = None
        self._store_problem: str | None = None
        # While our own numbering may be behind what we sent before (see set_unsure): the
        # loop time we stop waiting, the rooms already settled, the highest own seq each
        # room's peers showed us, and the own messages waiting to be numbered.
        self._unsure_until: float | None = None
        self._unsure_timer: asyncio.TimerHandle | None = None
        self._settled: set[str] = set()
        self._own_claims: dict[str, int] = {}
        self._held_own: list[
            tuple[str, Callable[[int], ChatMessage], str, asyncio.Future[ev.NodeEvent]]
        ] = []
        self._closed = False

    # --- lifecycle ------------------------------------------------------

    def load(self) -> None:
        """Rebuild the in-memory vectors from the store."""
        floors = self.store.floors()
        for room, author, lo, hi, count in self.store.author_stats():
            base = floors.get((room, author), 1)
            if base > 1 and not self.store.ids_in_range(room, author, base, base):
                # A floor takes effect only at a message we hold (older stores saved
                # peers' claims as they came): never claim what the store lacks.
                base = 1
            if lo <= base <= hi + 1 and count == hi - lo + 1:
                self.sync.load_contiguous(room, author, base, hi)
            else:
                self.sync.load(room, author, base, self.store.seqs(room, author, base))
        self._periodic = self._loop.call_later(limits.SYNC_INTERVAL_S, self._periodic_sync)

    async def close(self) -> None:
        """Commit what is pending and stop background work."""
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        for handle in (
            self._vector_handle,
            self._periodic,
            self._save_handle,
            self._unsure_timer,
            *self._want_timers.values(),
        ):
            if handle is not None:
                handle.cancel()
        self._save_vectors()
        for _room, _make, _text, done in self._held_own:
            if not done.done():
                done.set_exception(UsageError("not sent: chinwag stopped before peers answered"))
        self._held_own = []
        for task in list(self._jobs.values()):
            task.cancel()
        if self._jobs:
            await asyncio.gather(*self._jobs.values(), return_exceptions=True)

    # --- our own messages -----------------------------------------------

    def set_unsure(self, why: str) -> None:
        """Hold our new messages until peers gave back those we may have lost (or a timeout).

        After a power cut (the last commits may be gone) or with a new store but an old
        identity, our store may lack messages we sent: numbering from it would reuse
        their seqs. A room is settled once a peer's vector for it arrived and we hold
        all of our own messages that every vector so far showed; its held messages are
        then numbered after them. After UNSURE_MAX_WAIT_S we number anyway (a peer
        claiming more of ours than it gives back cannot stop us from talking).
        """
        log.info("own messages wait for peers to give back what we sent: %s", why)
        self._unsure_until = self._loop.time() + limits.UNSURE_MAX_WAIT_S
        self._unsure_timer = self._loop.call_later(limits.UNSURE_MAX_WAIT_S, self._stop_waiting)

    def post_own(
        self, room: str, make: Callable[[int], ChatMessage], text: str
    ) -> asyncio.Future[ev.NodeEvent]:
        """Number (make(seq) signs it) and queue our new message, or hold it while unsure."""
        if self._unsure_until is None or room in self._settled:
            return self.submit_own(make(self.next_seq(room)), text)
        if len(self._held_own) >= limits.MAX_HELD_OWN:
            raise UsageError("too many messages waiting for peers; try again in a few seconds")
        done: asyncio.Future[ev.NodeEvent] = self._loop.create_future()
        self._held_own.append((room, make, text, done))
        return done

    def _stop_waiting(self) -> None:
        self._unsure_timer = None
        self._unsure_until = None
        self._release_held()

    def _maybe_settle(self, room: str) -> None:
        if self._unsure_until is None or room in self._settled:
            return
        claim = self._own_claims.get(room)
        if claim is not None and self.sync.author(room, self.me).have >= claim:
            log.info("own messages in %s: got back what peers hold (up to #%d)", room, claim)
            self._settled.add(room)
            self._release_held()

    def _release_held(self) -> None:
        keep = []
        for room, make, text, done in self._held_own:
            if done.done():
                continue
            if self._unsure_until is not None and room not in self._settled:
                keep.append((room, make, text, done))
                continue
            try:
                inner = self.submit_own(make(self.next_seq(room)), text)
            except Exception as exc:  # e.g. the room was left meanwhile
                done.set_exception(exc)
                continue
            inner.add_done_callback(functools.partial(_chain, done))
        self._held_own = keep

    def next_seq(self, room: str) -> int:
        """Reserve the next seq of our own messages in room."""
        seq = max(self._next_seq.get(room, 0), self.sync.author(room, self.me).have) + 1
        self._next_seq[room] = seq
        return seq

    def submit_own(self, msg: ChatMessage, text: str) -> asyncio.Future[ev.NodeEvent]:
        """Queue our new message (readable text: text); resolves once committed and sent."""
        done: asyncio.Future[ev.NodeEvent] = self._loop.create_future()
        self._queue(_Pending(msg, None, True, True, done, text))
        return done

    # --- frames from peers ----------------------------------------------

    def chat_received(self, conn: Link, frame: m.Chat) -> None:
        """Check a received message and queue it for the next commit."""
        from_id = conn.peer_id or ""
        try:
            msg = open_message(frame.body, frame.sig, check_signature=False)
            body = msg.body
            if msg.id in self._pending_ids:
                return
            author = msg.author_id
            if msg.id in self._seen and self.sync.holds(body.room, author, body.seq):
                return
            if self.sync.holds(body.room, author, body.seq):
                stored = self.store.ids_in_range(body.room, author, body.seq, body.seq)
                if not stored or stored[0][1] == msg.id:
                    self._seen.add(msg.id)
                    return
                if author == from_id:
                    raise RemoteProtocolError(
                        f"equivocation: {author[:8]} #{body.seq} in {body.room} has two contents",
                        "equivocation",
                    )
                # A relay passes on what the author signed: check that the author did
                # sign it (else the relay forged it), then blame the author alone.
                msg = open_message(frame.body, frame.sig, check_signature=True)
                self._seen.add(msg.id)
                self._equivocated(author, body.room, body.seq)
                return
            if author in self.book.blocked:
                self._seen.add(msg.id)
                return
            room = self.book.holds(body.room, author)
            if room is None and msg.id in self._seen:
                return  # relayed once already: never again (no storms)
            # Straight from its author the channel already proves it; verify the
            # rest, private messages, and whatever we will relay, so we never
            # pass on a forgery.
            relay = not frame.hist and len(self.manager.peers) > 1
            verified = False
            if author != from_id or relay or body.enc:
                msg = open_message(frame.body, frame.sig, check_signature=True)
                verified = True
        except RemoteProtocolError as exc:
            log.warning("disconnecting %s: %s", from_id[:8], exc)
            conn.close(exc.code)
            return
        if room is None:
            # Not ours to store or show; pass live traffic on for those who hold it.
            self._seen.add(msg.id)
            if relay:
                exclude = frozenset({from_id, author})
                self.manager.broadcast(m.encode(m.Chat(body=msg.raw_body, sig=msg.sig)), exclude)
            return
        text = self.book.plaintext(room, msg)
        if text is None or not self.book.remember(room):
            self._seen.add(msg.id)
            return
        if not self._store_budget_allows(from_id, len(frame.body) + len(frame.sig)):
            return  # not marked seen: sync fetches it again once the budget refills
        if not self.sync.admits(body.room, author, body.seq, from_id):
            # Not stored, not relayed, not marked seen: sync brings it again once its
            # author's earlier messages are here.
            log.info(
                "refusing %s #%d in %s from %s: too many authors with holes",
                author[:8],
                body.seq,
                body.room,
                from_id[:8],
            )
            return
        self._queue(_Pending(msg, conn, not frame.hist, verified, None, text))

    def _store_budget_allows(self, peer_id: str, size: int) -> bool:
        """Take size bytes from the peer's store budget; False (and a log line) if spent."""
        budget = self._store_budget.get(peer_id)
        if budget is None:
            factor = limits.KNOWN_PEER_STORE_FACTOR if peer_id in self._known else 1
            budget = self._store_budget[peer_id] = _Bucket(
                self._loop.time(),
                limits.STORE_BYTES_BURST * factor,
                limits.STORE_BYTES_PER_S * factor,
            )
        if budget.take(self._loop.time(), size):
            return True
        if budget.refused == 0:
            log.warning("refusing messages from %s: over its store budget", peer_id[:8])
        budget.refused += 1
        return False

    def sync_frame(self, conn: Link, frame: m.SyncFrame) -> None:
        """Handle a vector, want or floor from a peer."""
        peer_id = conn.peer_id or ""
        bucket = self._buckets.setdefault(peer_id, _Bucket(self._loop.time()))
        if not bucket.take(self._loop.time()):
            log.warning("disconnecting %s: too many sync requests", peer_id[:8])
            conn.close("sync_flood")
            return
        try:
            if isinstance(frame, m.Rooms):
                for name in self.book.set_announced(peer_id, frame):
                    self._emit(
                        ev.Alert(
                            message=f"peer {peer_id[:8]} is in private room {name!r} with "
                            "another passphrase: you cannot read each other; "
                            f"/leave {name} and join again with the right one",
                            peer_id=peer_id,
                        )
                    )
            elif isinstance(frame, m.Vector):
                self._vector_received(conn, peer_id, frame)
            elif isinstance(frame, m.Want):
                if not self.book.holds_vector(frame.room, peer_id):
                    return
                plan = self.sync.want_plan(frame.room, frame.author, frame.lo, frame.hi)
                if plan is not None:
                    self._start_push(conn, frame.room, [plan])
            else:
                if not self.book.holds_vector(frame.room, peer_id):
                    return
                # Only a floor the sender can back: at most what its vector says
                # it holds of that author, never for our own messages, and no
                # new author beyond the per-room bound.
                backed = self._room_vectors(frame.room).get(peer_id, {}).get(frame.author, 0)
                tracked = self.sync.rooms.get(frame.room, {})
                if (
                    frame.author == self.me
                    or frame.seq > backed
                    or (frame.author not in tracked and len(tracked) >= limits.MAX_AUTHORS_PER_ROOM)
                ):
                    log.info("ignoring an unbacked floor from %s", peer_id[:8])
                    return
                # The sender chose its vector: a floor takes effect only at a message
                # of that author we hold (now, or when its push brings it).
                applied = self.sync.offer_floor(frame.room, frame.author, frame.seq, peer_id)
                if applied is not None:
                    self.store.set_floor(frame.room, frame.author, applied)
                    self._after_change({(frame.room, frame.author)})
        except StoreError as exc:  # ours, not the peer's: peer ids are checked by the codec
            log.error("cannot store a floor from %s: %s", peer_id[:8], exc)

    def peer_joined(self, conn: Link) -> None:
        """Send our rooms and vectors to a newly connected peer."""
        conn.send_frame(self.book.announcement())
        now = self._loop.time()
        peer_id = conn.peer_id or ""
        for room in self._rooms():
            joined = self.book.joined[room]
            if joined.kind == DM and joined.peer != peer_id:
                continue
            conn.send_frame(m.Vector(room=room, have=self._capped_vector(room)))
            self._vector_sent[(peer_id, room)] = now

    def peer_left(self, peer_id: str) -> None:
        self.book.forget_peer(peer_id)
        self._buckets.pop(peer_id, None)
        self._want_budget.pop(peer_id, None)
        self._store_budget.pop(peer_id, None)
        self.sync.forget_source(peer_id)
        # Keep only the part of its receipts we save (authors we track, and us): the rest
        # of its last vectors (up to MAX_VECTOR_AUTHORS each) is of no use while it is away.
        for room, vectors in self._peer_vectors.items():
            have = vectors.get(peer_id)
            if have is not None:
                tracked = self.sync.rooms.get(room, {})
                vectors[peer_id] = {a: h for a, h in have.items() if a in tracked or a == self.me}
        for sent in [k for k in self._vector_sent if k[0] == peer_id]:
            del self._vector_sent[sent]
        for key in [k for k in self._jobs if k[0] == peer_id]:
            self._jobs.pop(key).cancel()
            self._rerun.pop(key, None)
        for pushed in [k for k in self._sent if k[0] == peer_id]:
            del self._sent[pushed]

    # --- queries --------------------------------------------------------

    def history(self, wire: str, limit: int, before: str | None = None) -> ev.History:
        """Return the last messages of a room; with `before` (a message id), those older than it."""
        key = None
        if before is not None:
            row = self.find(before)
            if row is None or row.room != wire:
                raise UsageError(f"no message {before[:40]!r} in this room")
            key = (row.ts, row.author, row.seq)
        rows = self.store.history(wire, min(limit, limits.MAX_HISTORY), key)
        return ev.History(room=self.book.display(wire), messages=[self._row_event(r) for r in rows])

    def room_changed(self, wire: str) -> None:
        """Announce our rooms to every peer; after a join, ask them for the room's history."""
        self.manager.broadcast_frame(self.book.announcement())
        if wire in self.book.joined:
            self._send_room_frame(wire, m.Vector(room=wire, have=self._capped_vector(wire)))

    def search(self, text: str, limit: int) -> ev.SearchResult:
        rows = self.store.search(text, min(limit, limits.MAX_HISTORY))
        return ev.SearchResult(text=text, messages=[self._row_event(r) for r in rows])

    def find(self, msg_id: str) -> Row | None:
        """Return the stored message with this id or unique id prefix."""
        row = self.store.get(msg_id)
        if row is None:
            ids = self.store.find_ids(msg_id) if len(msg_id) >= 4 else []
            row = self.store.get(ids[0]) if len(ids) == 1 else None
        return row

    def holders(self, row: Row) -> list[str]:
        """Return the peers whose latest vector says they hold this message."""
        vectors = self._room_vectors(row.room)
        return [p for p, v in vectors.items() if v.get(row.author, 0) >= row.seq]

    def delivery(self, room: str, seq: int) -> tuple[int, int]:
        """Return (peers holding our message seq in room, peers known in room)."""
        vectors = self._room_vectors(room)
        count = sum(1 for v in vectors.values() if v.get(self.me, 0) >= seq)
        return count, len(vectors)

    # --- group commit ---------------------------------------------------

    def _queue(self, item: _Pending) -> None:
        self._pending.append(item)
        self._pending_ids.add(item.msg.id)
        if self._flush_handle is None and not self._closed:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        batch, self._pending = self._pending, []
        self._pending_ids.clear()
        if not batch:
            return
        rows = []
        keys: list[Key] = []
        running: dict[str, Key | None] = {}
        for item in batch:
            b = item.msg.body
            key = (b.ts, item.msg.author_id, b.seq)
            keys.append(key)
            last = running[b.room] if b.room in running else self._room_last_key(b.room)
            rows.append(
                NewMessage(
                    id=item.msg.id,
                    room=b.room,
                    author=item.msg.author_id,
                    seq=b.seq,
                    ts=b.ts,
                    nick=b.nick,
                    text=item.text,
                    body=item.msg.raw_body,
                    sig=item.msg.sig,
                    late=last is not None and key < last,
                    verified=item.verified,
                )
            )
            if last is None or key > last:
                running[b.room] = key
            else:
                running[b.room] = last
        try:
            results = self.store.insert_messages(rows)
        except Exception as exc:
            # Nothing was committed: tell the typist, drop the rest (peers resend on sync).
            log.error("cannot store messages: %s", exc)
            self._emit(ev.Error(message=f"cannot store messages: {exc}"))
            for item in batch:
                if item.conn is None:
                    # Give the seq back, or every later message would sit beyond a hole.
                    room, seq = item.msg.body.room, item.msg.body.seq
                    self._next_seq[room] = min(self._next_seq.get(room, seq), seq - 1)
                if item.done is not None and not item.done.done():
                    item.done.set_exception(exc)
            return
        touched: set[tuple[str, str]] = set()
        for item, row, key, result in zip(batch, rows, keys, results, strict=True):
            if result is Insert.NEW:
                last = self._last_key.get(row.room)
                if last is None or key > last:
                    self._last_key[row.room] = key
                self._accepted(item, row)
                touched.add((row.room, row.author))
            elif result is Insert.DUPLICATE:
                # Stored already, but maybe forgotten by the bounded gap tracking.
                self._seen.add(row.id)
                if not self.sync.holds(row.room, row.author, row.seq):
                    self._accept(row.room, row.author, row.seq)
                    touched.add((row.room, row.author))
            elif item.conn is None:  # our own message clashed with a stored one
                log.error("own message %s #%d not stored: %s", row.room, row.seq, result.value)
                self._emit(ev.Error(message=f"message not sent: seq {row.seq} already used"))
                if item.done is not None and not item.done.done():
                    item.done.set_exception(StoreError(f"seq {row.seq} already used"))
                continue
            elif (item.conn.peer_id or "") == row.author:
                # Equivocation by the author itself: nothing was stored.
                log.warning(
                    "disconnecting %s: equivocation (#%d in %s)",
                    row.author[:8],
                    row.seq,
                    row.room,
                )
                item.conn.close("equivocation")
            else:
                # A relay brought the second version (verified: not from its author).
                self._equivocated(row.author, row.room, row.seq)
            if item.done is not None and not item.done.done():
                item.done.set_result(self._message_event(item.msg, item.text, own=True, late=False))
        if touched:
            self._after_change(touched)

    def _accepted(self, item: _Pending, row: NewMessage) -> None:
        msg = item.msg
        if self._author_nicks.get(row.author) != row.nick:
            self._author_nicks[row.author] = row.nick
            try:
                self.store.note_author(row.author, row.nick)
            except Exception as exc:  # only a convenience for resolving nicks
                log.warning("cannot note %s's nick: %s", row.author[:8], exc)
        self._seen.add(msg.id)
        self._accept(row.room, row.author, row.seq)
        plaintext = m.encode(m.Chat(body=msg.raw_body, sig=msg.sig))
        if item.conn is None:
            # Ours: on the wire first, then echoed locally (peers' latency matters more).
            self.manager.broadcast(plaintext)
            self._note_sent(self.manager.peers, row.room, row.author, row.seq)
            self._emit(self._message_event(msg, item.text, own=True, late=False))
            return
        self._emit(self._message_event(msg, item.text, own=row.author == self.me, late=row.late))
        if row.author == self.me:
            self._maybe_settle(row.room)  # a peer gave back one of ours
        via = item.conn.peer_id or ""
        if item.live and row.author not in (via, self.me):
            self._note_relayed(row.author, via)
        if item.live and len(self.manager.peers) > 1 and self._relayable(item, row):
            exclude = frozenset({item.conn.peer_id or "", row.author})
            self.manager.broadcast(plaintext, exclude=exclude)
            targets = [p for p in self.manager.peers if p not in exclude]
            self._note_sent(targets, row.room, row.author, row.seq)

    def _accept(self, room: str, author: str, seq: int) -> None:
        """Tell the sync state seq is stored; save a peer's floor that this made take effect."""
        floor = self.sync.accept(room, author, seq)
        if floor is not None:
            try:
                self.store.set_floor(room, author, floor)
            except StoreError as exc:  # only costs a refetch after a restart
                log.warning("cannot save a floor: %s", exc)

    def _equivocated(self, author: str, room: str, seq: int) -> None:
        """An author signed two messages with one seq: flag it, cut only its own connection."""
        log.warning("equivocation by %s (#%d in %s): second version dropped", author[:8], seq, room)
        conn = self.manager.peers.get(author)
        if conn is not None:
            conn.close("equivocation")
        if author in self.equivocators or len(self.equivocators) >= limits.MAX_EQUIVOCATORS:
            return
        self.equivocators.add(author)
        self._emit(
            ev.Alert(
                message=f"{author[:8]} signed two different messages #{seq} in "
                f"{self.book.display(room)!r}; the first one stays",
                peer_id=author,
            )
        )

    def _note_relayed(self, author: str, via: str) -> None:
        self.relayed.pop(author, None)  # re-insert: the dict stays in order of last news
        self.relayed[author] = (via, time.time())
        if len(self.relayed) > limits.MAX_RELAYED_REMEMBERED:
            del self.relayed[next(iter(self.relayed))]

    def _relayable(self, item: _Pending, row: NewMessage) -> bool:
        """Return whether a stored message may be relayed: only with a verified signature."""
        if not item.verified:
            # A peer connected since it arrived: check now, never relay a forgery.
            item.verified = verify(item.msg.body.author, m.CHAT_CONTEXT + row.body, row.sig)
            if item.verified:
                with contextlib.suppress(StoreError):  # only saves re-verifying later
                    self.store.mark_verified([row.id])
        return item.verified

    def _note_sent(self, peer_ids: Iterable[str], room: str, author: str, seq: int) -> None:
        """Record that seq went live to these peers, if it extends what they hold without a hole."""
        vectors = self._room_vectors(room)
        for peer_id in peer_ids:
            if not self.book.peer_in(peer_id, room):
                continue  # it drops what it does not hold: nothing was carried
            key = (peer_id, room, author)
            prev = self._sent.get(key)
            if prev is None:
                prev = vectors.get(peer_id, {}).get(author, 0)
            if seq == prev + 1:
                self._sent[key] = seq

    # --- vectors, receipts, gaps ----------------------------------------

    def _after_change(self, touched: set[tuple[str, str]]) -> None:
        for room, author in touched:
            self._check_gap(room, author)
            self._dirty_rooms.add(room)
        if self._vector_handle is None and not self._closed:
            self._vector_handle = self._loop.call_later(limits.VECTOR_DELAY_S, self._send_vectors)

    def _send_vectors(self) -> None:
        self._vector_handle = None
        rooms, self._dirty_rooms = self._dirty_rooms, set()
        now = self._loop.time()
        for room in sorted(rooms):
            for peer_id in self._send_room_frame(
                room, m.Vector(room=room, have=self._capped_vector(room))
            ):
                self._vector_sent[(peer_id, room)] = now

    def _send_room_frame(self, wire: str, frame: m.Frame) -> list[str]:
        """Send a sync frame about a room to the peers that may hear it; return them.

        A conversation's frames go only to its other party: others must not
        learn who talks to whom, or how much.
        """
        room = self.book.joined.get(wire)
        if room is not None and room.kind == DM:
            conn = self.manager.peers.get(room.peer or "")
            if conn is None:
                return []
            conn.send_frame(frame)
            return [conn.peer_id or ""]
        self.manager.broadcast_frame(frame)
        return list(self.manager.peers)

    def _periodic_sync(self) -> None:
        self._periodic = self._loop.call_later(limits.SYNC_INTERVAL_S, self._periodic_sync)
        problem = self.store.check_checkpointer()
        if problem is not None and self._store_problem is None:  # once per episode
            self._emit(ev.Error(message=f"the message store's log is not being saved: {problem}"))
        self._store_problem = problem
        self._dirty_rooms.update(self._rooms())
        self._send_vectors()

    def _capped_vector(self, room: str) -> dict[str, int]:
        vector = self.sync.vector(room)
        if len(vector) > limits.MAX_VECTOR_AUTHORS:
            # Keep our own entry and the most active authors; the rest sync next time.
            top = sorted(vector.items(), key=lambda kv: -kv[1])[: limits.MAX_VECTOR_AUTHORS - 1]
            vector = dict(top) | {self.me: vector.get(self.me, 0)}
        return vector

    def _vector_received(self, conn: Link, peer_id: str, frame: m.Vector) -> None:
        room = frame.room
        if not self.book.holds_vector(room, peer_id):
            return
        vectors = self._room_vectors(room)
        old = vectors.get(peer_id, {})
        # In memory the latest vector replaces the last (bounded by MAX_VECTOR_AUTHORS);
        # saved are only authors we track, so peer-chosen keys cannot grow the store.
        tracked = self.sync.rooms.get(room, {})
        changed = {
            a: h
            for a, h in frame.have.items()
            if (a in tracked or a == self.me) and old.get(a) != h
        }
        first = peer_id not in vectors
        if first and len(vectors) >= limits.MAX_RECEIPT_PEERS_PER_ROOM:
            self._forget_receipts(room, vectors)
        vectors.pop(peer_id, None)  # re-insert: the dict stays in order of last vector
        vectors[peer_id] = dict(frame.have)
        if changed or first:
            # Receipts are kept in memory at once and saved in batches: a lost
            # update only costs a re-sent vector after a restart.
            self._unsaved.setdefault((peer_id, room), {}).update(changed or {self.me: 0})
            if self._save_handle is None and not self._closed:
                self._save_handle = self._loop.call_later(
                    limits.RECEIPT_SAVE_DELAY_S, self._save_vectors
                )
        before, after = old.get(self.me, 0), frame.have.get(self.me, 0)
        if after > before:
            self._report_delivered(room, before + 1, after)
        if self._unsure_until is not None:
            self._own_claims[room] = max(self._own_claims.get(room, 0), after)
            self._maybe_settle(room)
        plan = self.sync.push_plan(room, frame.have)
        if plan:
            self._start_push(conn, room, plan)
        mine = self.sync.rooms.get(room, {})
        behind = any(h > (mine[a].have if a in mine else 0) for a, h in frame.have.items())
        now = self._loop.time()
        if (
            behind
            and now - self._vector_sent.get((peer_id, room), -1e9) >= limits.VECTOR_REPLY_GAP_S
        ):
            # The peer holds what we lack but only pushes on seeing our vector.
            self._vector_sent[(peer_id, room)] = now
            conn.send_frame(m.Vector(room=room, have=self._capped_vector(room)))

    def _forget_receipts(self, room: str, vectors: dict[str, dict[str, int]]) -> None:
        """Forget the receipts of the least recently heard peer of room that is not connected."""
        for peer_id in vectors:
            if peer_id not in self.manager.peers:
                del vectors[peer_id]
                self._unsaved.pop((peer_id, room), None)
                try:
                    self.store.delete_peer_vectors(peer_id, room)
                except StoreError as exc:
                    log.warning("cannot forget receipts: %s", exc)
                return

    def _save_vectors(self) -> None:
        self._save_handle = None
        unsaved, self._unsaved = self._unsaved, {}
        for (peer_id, room), have in unsaved.items():
            self.store.set_peer_vector(peer_id, room, have)

    def _report_delivered(self, room: str, lo: int, hi: int) -> None:
        vectors = self._room_vectors(room)
        of = len(vectors)
        for seq, msg_id in self.store.ids_in_range(room, self.me, lo, hi):
            count = sum(1 for v in vectors.values() if v.get(self.me, 0) >= seq)
            self._emit(ev.Delivered(id=msg_id, count=count, of=of))

    def _check_gap(self, room: str, author: str) -> None:
        key = (room, author)
        gap = self.sync.author(room, author).gap()
        reported = self._gaps.get(key)
        if gap is None:
            if reported is not None:
                del self._gaps[key]
                self._asks.pop(key, None)
                timer = self._want_timers.pop(key, None)
                if timer is not None:
                    timer.cancel()
                self._emit(ev.GapFilled(room=room, peer_id=author))
            return
        if gap != reported:
            self._gaps[key] = gap
            self._asks[key] = 0  # a new hole: worth asking for again
            self._emit(ev.Gap(room=room, peer_id=author, missing=[gap[0], gap[1]]))
        if (
            key not in self._want_timers
            and self._asks.get(key, 0) < limits.GAP_MAX_ASKS
            and not self._closed
        ):
            self._want_timers[key] = self._loop.call_later(
                limits.GAP_REPAIR_DELAY_S, self._ask_for_gap, key
            )

    def _ask_for_gap(self, key: tuple[str, str]) -> None:
        self._want_timers.pop(key, None)
        gap = self._gaps.get(key)
        if gap is None or self._closed:
            return
        room, author = key
        if room not in self.book.joined:
            self._gaps.pop(key, None)  # we left the room: stop asking
            self._asks.pop(key, None)
            return
        asks = self._asks.get(key, 0)
        if asks >= limits.GAP_MAX_ASKS:
            log.info("giving up on %s #%d-%d in %s: no peer fills it", author[:8], *gap, room)
            return
        sent, targets = self._send_want(
            room, m.Want(room=room, author=author, lo=gap[0], hi=gap[1])
        )
        if sent:
            self._asks[key] = asks + 1
        # Ask again later if nobody could fill it yet (soon if peers only lacked budget).
        delay = limits.WANT_RETRY_S if targets and not sent else limits.SYNC_INTERVAL_S
        self._want_timers[key] = self._loop.call_later(delay, self._ask_for_gap, key)

    def _send_want(self, wire: str, frame: m.Want) -> tuple[int, int]:
        """Send a want to the peers in the room with want budget left; return (sent, peers).

        Each peer's budget (WANTS_*) stays far below the sync rate it tolerates,
        so however many gaps we have, gap repair never gets us disconnected.
        """
        room = self.book.joined.get(wire)
        if room is not None and room.kind == DM:
            conn = self.manager.peers.get(room.peer or "")
            targets = [] if conn is None else [conn]
        else:
            targets = [c for p, c in self.manager.peers.items() if self.book.peer_in(p, wire)]
        now = self._loop.time()
        sent = 0
        for conn in targets:
            peer_id = conn.peer_id or ""
            budget = self._want_budget.get(peer_id)
            if budget is None:
                budget = self._want_budget[peer_id] = _Bucket(
                    now, limits.WANTS_BURST, limits.WANTS_PER_S
                )
            if budget.take(now):
                conn.send_frame(frame)
                sent += 1
        return sent, len(targets)

    # --- pushing history to a peer --------------------------------------

    def _start_push(self, conn: Link, room: str, plan: list[PushRange]) -> None:
        peer_id = conn.peer_id or ""
        key = (peer_id, room)
        job = self._jobs.get(key)
        if job is not None and not job.done():
            self._rerun[key] = plan
            return
        task = self._loop.create_task(self._push(conn, room, plan))
        self._jobs[key] = task
        task.add_done_callback(functools.partial(self._push_done, key, conn))

    def _push_done(self, key: tuple[str, str], conn: Link, task: asyncio.Task[None]) -> None:
        if self._jobs.get(key) is task:
            del self._jobs[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("history push failed", exc_info=task.exception())
        plan = self._rerun.pop(key, None)
        if plan and conn.is_open and not self._closed:
            self._start_push(conn, key[1], plan)

    async def _push(self, conn: Link, room: str, plan: list[PushRange]) -> None:
        peer_id = conn.peer_id or ""
        ranges = []
        for r in plan:
            if r.floor is not None:
                conn.send_frame(m.Floor(room=room, author=r.author, seq=r.floor))
            # Within one connection, do not resend what was already sent, unless asked.
            sent = self._sent.get((peer_id, room, r.author), 0)
            lo = r.lo if r.resend else max(r.lo, sent + 1)
            if lo <= r.hi:
                ranges.append((r.author, lo, r.hi))
        after: Key = (-1, "", -1)
        while ranges and conn.is_open:
            rows = self.store.push_batch(room, ranges, after, limits.SYNC_BATCH)
            if not rows:
                break
            bad = self._verify_unverified(room, rows)
            for msg_id, ts, author, seq, body, sig, _verified in rows:
                if msg_id in bad:
                    continue
                conn.send_encoded(m.encode(m.Chat(body=body, sig=sig, hist=True)))
                pkey = (peer_id, room, author)
                self._sent[pkey] = max(self._sent.get(pkey, 0), seq)
                after = (ts, author, seq)
            if len(rows) < limits.SYNC_BATCH:
                break
            after = (rows[-1][1], rows[-1][2], rows[-1][3])
            if not await conn.wait_drained(limits.SEND_DRAIN_TIMEOUT_S):
                conn.close("too_slow")
                return
            await asyncio.sleep(0)  # let live traffic and other peers through

    def _verify_unverified(
        self, room: str, rows: list[tuple[str, int, str, int, bytes, bytes, int]]
    ) -> set[str]:
        """Verify stored messages we accepted unverified; drop forgeries. Return bad ids."""
        good, bad = [], set()
        for msg_id, _ts, author, _seq, body, sig, verified in rows:
            if verified:
                continue
            if verify(public_from_peer_id(author), m.CHAT_CONTEXT + body, sig):
                good.append(msg_id)
            else:
                bad.add(msg_id)
        if good:
            self.store.mark_verified(good)
        if bad:
            log.warning("dropping %d stored messages whose signature does not verify", len(bad))
            self.store.delete(bad)
            # No longer held: the sync state must not claim them (they are asked for again).
            touched = set()
            for msg_id, _ts, author, seq, _body, _sig, _verified in rows:
                if msg_id in bad:
                    self.sync.forget(room, author, seq)
                    touched.add((room, author))
            self._after_change(touched)
        return bad

    # --- helpers --------------------------------------------------------

    def _rooms(self) -> list[str]:
        return self.book.wires()

    def _room_vectors(self, room: str) -> dict[str, dict[str, int]]:
        vectors = self._peer_vectors.get(room)
        if vectors is None:
            vectors = self._peer_vectors[room] = self.store.peer_vectors(room)
        return vectors

    def _room_last_key(self, room: str) -> Key | None:
        if room not in self._last_key:
            self._last_key[room] = self.store.last_key(room)
        return self._last_key[room]

    def _message_event(
        self, msg: ChatMessage, text: str, own: bool, late: bool
    ) -> ev.Message | ev.DirectMessage:
        b = msg.body
        return self._event(msg.id, b.room, msg.author_id, b.nick, b.ts, text, own, b.seq, late)

    def _row_event(self, r: Row) -> ev.Message | ev.DirectMessage:
        return self._event(
            r.id, r.room, r.author, r.nick, r.ts, r.text, r.author == self.me, r.seq, r.late
        )

    def _event(
        self,
        msg_id: str,
        wire: str,
        author: str,
        nick: str,
        ts: int,
        text: str,
        own: bool,
        seq: int,
        late: bool,
    ) -> ev.Message | ev.DirectMessage:
        room = self.book.joined.get(wire)
        if room is not None and room.kind == DM:
            return ev.DirectMessage(
                id=msg_id,
                peer_id=author,
                nick=nick,
                ts=ts / 1000,
                text=text,
                own=own,
                to=(room.peer if own else self.me) or "",
                seq=seq,
                late=late,
            )
        return ev.Message(
            id=msg_id,
            room=self.book.display(wire),
            peer_id=author,
            nick=nick,
            ts=ts / 1000,
            text=text,
            own=own,
            seq=seq,
            late=late,
        )
