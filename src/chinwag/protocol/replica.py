"""The sans-IO replica: when to send vectors, push history, relay, receipt and repair gaps.

Theory of operation
-------------------
`SyncState` (protocol/sync.py) knows what we hold; this class decides what to
do about it. It is fed with what happened (a message was committed, a peer
sent a vector, want or floor, a peer opened or closed, time passed) and
answers with typed actions (`Send`, `Flood`, `Push`, `Emit`, `Disconnect`,
`SaveFloor`, `SaveReceipts`, `ForgetReceipts`, `Delivered`, `CheckStore`). The
adapter (history.py, or the simulator in tests/unit/sync_sim.py) commits and
sends what it is told, and re-arms one timer from `get_timer()`, calling
`handle_timer(now)` when it fires, as aioquic's connection does.

Persist before release: the adapter tells the replica about a message only
after it is committed (`committed`), so a relay or receipt never precedes the
commit. Which peers may hear a room is the adapter's `RoomView` (room
membership lives with the rooms, not here).

No asyncio, sockets, SQLite, clocks or randomness: `now` comes in. Peer ids in
frames are validated before they reach the replica (by the adapter or codec).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from chinwag import events as ev
from chinwag import limits
from chinwag.protocol import messages as m
from chinwag.protocol.kinds import RoomKind, kind_of_wire
from chinwag.protocol.mesh import Mesh, MeshClose, MeshDial, MeshSend, MeshServe
from chinwag.protocol.reasons import Reason
from chinwag.protocol.sync import PushRange, SyncState

log = logging.getLogger(__name__)


class RoomView(Protocol):
    """What the replica may ask about rooms and connections (the adapter answers)."""

    def peers(self) -> Sequence[str]:
        """Return the peer ids with an open connection, oldest first."""
        ...

    def rooms(self) -> list[str]:
        """Return the wire names of the rooms we hold."""
        ...

    def joined(self, room: str) -> bool:
        """Return whether we hold room."""
        ...

    def dm_peer(self, room: str) -> str | None:
        """Return the other party if room is a conversation, else None."""
        ...

    def peer_in(self, peer_id: str, room: str) -> bool:
        """Return whether peer_id takes part in room (keeps what we send of it)."""
        ...

    def holds_vector(self, room: str, peer_id: str) -> bool:
        """Return whether a vector, want or floor of peer_id about room is to be heard."""
        ...

    def saved_receipts(self, room: str) -> dict[str, dict[str, int]]:
        """Return the receipts of room saved by an earlier run: peer -> its vector."""
        ...


# --- actions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send frame to one peer."""

    peer: str
    frame: m.Frame


@dataclass(frozen=True, slots=True)
class Flood:
    """Send frame to every connected peer not in exclude."""

    frame: m.Frame
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Forward:
    """Send a live chat to these peers (the mesh's targets; replaces Flood with a router)."""

    frame: m.Chat
    peers: list[str]


@dataclass(frozen=True, slots=True)
class Push:
    """Push history of room to peer per plan (the adapter calls `push_ranges` when it starts)."""

    peer: str
    room: str
    plan: list[PushRange]


@dataclass(frozen=True, slots=True)
class Emit:
    """Show an event to the user interfaces."""

    event: ev.NodeEvent


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the connection to peer with a reason code."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class SaveFloor:
    """Persist that history of author in room starts at seq."""

    room: str
    author: str
    seq: int


@dataclass(frozen=True, slots=True)
class SaveReceipts:
    """Persist the receipts changed since the last save (`take_unsaved`)."""


@dataclass(frozen=True, slots=True)
class ForgetReceipts:
    """Delete the saved receipts of peer in room."""

    peer: str
    room: str


@dataclass(frozen=True, slots=True)
class Delivered:
    """Our messages lo..hi of room reached one more peer: report each (`delivery` counts)."""

    room: str
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class CheckStore:
    """The periodic moment to check the store's health."""


@dataclass(frozen=True, slots=True)
class ReleaseHeld:
    """Number and send the own messages held while unsure (those of rooms no longer waiting)."""


Action = (
    Send
    | Flood
    | Push
    | Emit
    | Disconnect
    | SaveFloor
    | SaveReceipts
    | ForgetReceipts
    | Delivered
    | CheckStore
    | ReleaseHeld
    | Forward
    | MeshSend
    | MeshDial
    | MeshClose
    | MeshServe
)


class Bucket:
    """Token bucket limiting one peer's sync requests (or our wants, or its stored bytes)."""

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
        """Take cost tokens if there are enough; return whether it did."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.tokens = tokens if tokens < self.burst else self.burst
        self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


@dataclass(slots=True)
class _Timers:
    """Deadlines (in the adapter's clock) of the replica's timers; None: not armed."""

    vector: float | None = None
    periodic: float | None = None
    save: float | None = None
    #: When we stop waiting for peers to give back our own messages (see set_unsure).
    unsure: float | None = None
    #: (room, author) -> when to ask for its gap.
    wants: dict[tuple[str, str], float] = field(default_factory=dict)


class Replica:
    """Delivery decisions of one node: vectors, pushes, relays, receipts, gap repair."""

    def __init__(
        self,
        me: str,
        view: RoomView,
        sync: SyncState | None = None,
        known: Iterable[str] = (),
        router: Mesh | None = None,
    ) -> None:
        self.me = me
        #: The gossip mesh choosing whom a live message goes to (None: flood to every peer).
        self.router = router
        self.view = view
        self.sync = sync if sync is not None else SyncState()
        #: Peers met in an earlier run or verified: a larger store budget.
        self.known = set(known)
        #: room -> peer -> its last vector (receipts); loaded from the view on first use.
        self.receipts: dict[str, dict[str, dict[str, int]]] = {}
        self._unsaved: dict[tuple[str, str], dict[str, int]] = {}
        # peer -> room -> author -> seq up to which this connection has carried the
        # author's messages to the peer without a hole (live or pushed), so a
        # push does not resend what is still in flight. (Nested, not keyed by a
        # (peer, room, author) tuple: it is updated once per copy per target, and a
        # tuple per update and per entry costs time and memory.)
        self.sent: dict[str, dict[str, dict[str, int]]] = {}
        self.vector_sent: dict[tuple[str, str], float] = {}
        #: Connected peer -> when its connection opened.
        self.opened: dict[str, float] = {}
        self.dirty_rooms: set[str] = set()
        self.gaps: dict[tuple[str, str], tuple[int, int]] = {}
        # Times the current gap of (room, author) was asked for (we give up at GAP_MAX_ASKS).
        self.asks: dict[tuple[str, str], int] = {}
        self._sync_budget: dict[str, Bucket] = {}
        self._want_budget: dict[str, Bucket] = {}
        self._store_budget: dict[str, Bucket] = {}
        self.timers = _Timers()
        self.closed = False
        #: Authors seen signing two messages with one seq (flagged once each).
        self.equivocators: set[str] = set()
        self._next_seq: dict[str, int] = {}
        # While our own numbering may be behind what we sent before (see set_unsure):
        # the rooms already settled and the highest own seq each room's peers showed us.
        self.settled: set[str] = set()
        self._own_claims: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------

    def start(self, now: float) -> None:
        """Arm the periodic sync."""
        self.timers.periodic = now + limits.SYNC_INTERVAL_S

    def close(self) -> None:
        """Stop every timer: nothing more is decided."""
        self.closed = True
        self.timers = _Timers()

    def get_timer(self) -> float | None:
        """Return when `handle_timer` is next due, or None."""
        t = self.timers
        # Plain comparisons, no list: the adapter asks after every message.
        due = t.periodic
        for d in (t.vector, t.save, t.unsure):
            if d is not None and (due is None or d < due):
                due = d
        if t.wants:
            d = min(t.wants.values())
            if due is None or d < due:
                due = d
        return due

    def handle_timer(self, now: float) -> list[Action]:
        """Run every timer due at now."""
        out: list[Action] = []
        if self.closed:
            return out
        t = self.timers
        if t.periodic is not None and now >= t.periodic:
            t.periodic = now + limits.SYNC_INTERVAL_S
            out.append(CheckStore())
            self.dirty_rooms.update(self.view.rooms())
            out += self._send_vectors(now)
        if t.vector is not None and now >= t.vector:
            out += self._send_vectors(now)
        if t.save is not None and now >= t.save:
            t.save = None
            out.append(SaveReceipts())
        if t.unsure is not None and now >= t.unsure:
            t.unsure = None
            out.append(ReleaseHeld())
        for key, due in sorted(t.wants.items(), key=lambda kv: kv[1]):
            if due <= now and key in t.wants:
                del t.wants[key]
                out += self._ask_for_gap(key, now)
        return out

    # --- our own messages -----------------------------------------------

    def set_unsure(self, now: float) -> None:
        """Hold our new messages until peers gave back those we may have lost (or a timeout).

        After a power cut (the last commits may be gone) or with a new store but an old
        identity, our store may lack messages we sent: numbering from it would reuse
        their seqs. A room is settled once a peer's vector for it arrived and we hold
        all of our own messages that every vector so far showed; its held messages are
        then numbered after them. After UNSURE_MAX_WAIT_S we number anyway (a peer
        claiming more of ours than it gives back cannot stop us from talking).
        """
        self.timers.unsure = now + limits.UNSURE_MAX_WAIT_S

    def waiting(self, room: str) -> bool:
        """Return whether our new messages in room must wait (see set_unsure)."""
        return self.timers.unsure is not None and room not in self.settled

    def _maybe_settle(self, room: str) -> list[Action]:
        if not self.waiting(room):
            return []
        claim = self._own_claims.get(room)
        if claim is not None and self.sync.author(room, self.me).have >= claim:
            log.info("own messages in %s: got back what peers hold (up to #%d)", room, claim)
            self.settled.add(room)
            return [ReleaseHeld()]
        return []

    def next_seq(self, room: str) -> int:
        """Reserve the next seq of our own messages in room."""
        seq = max(self._next_seq.get(room, 0), self.sync.author(room, self.me).have) + 1
        self._next_seq[room] = seq
        return seq

    def unreserve(self, room: str, seq: int) -> None:
        """Our message seq was not stored: give its seq back (else later ones sit beyond a hole)."""
        self._next_seq[room] = min(self._next_seq.get(room, seq), seq - 1)

    # --- peers ----------------------------------------------------------

    def peer_opened(self, peer: str, now: float) -> list[Action]:
        """A peer connected: send it our vector of every room it may hear."""
        self.opened[peer] = now
        out: list[Action] = []
        for room in self.view.rooms():
            dm = self.view.dm_peer(room)
            if dm is not None and dm != peer:
                continue
            if _members_only(room) and not self.view.peer_in(peer, room):
                continue  # a private room: sent once the peer is admitted (peer_admitted)
            out.append(Send(peer, m.Vector(room=room, have=self.capped_vector(room))))
            self.vector_sent[(peer, room)] = now
        return out

    def peer_admitted(self, peer: str, room: str, now: float) -> list[Action]:
        """peer proved private room's passphrase: send it our vector of the room."""
        if not self.view.joined(room) or not self.view.peer_in(peer, room):
            return []
        self.vector_sent[(peer, room)] = now
        return [Send(peer, m.Vector(room=room, have=self.capped_vector(room)))]

    def peer_closed(self, peer: str) -> None:
        """A peer left: forget its budgets, claims and what its connection carried."""
        self.opened.pop(peer, None)
        self._sync_budget.pop(peer, None)
        self._want_budget.pop(peer, None)
        self._store_budget.pop(peer, None)
        self.sync.forget_source(peer)
        # Keep only the part of its receipts we save (authors we track, and us): the rest
        # of its last vectors (up to MAX_VECTOR_AUTHORS each) is of no use while it is away.
        for room, vectors in self.receipts.items():
            have = vectors.get(peer)
            if have is not None:
                tracked = self.sync.rooms.get(room, {})
                vectors[peer] = {a: h for a, h in have.items() if a in tracked or a == self.me}
        for sent in [k for k in self.vector_sent if k[0] == peer]:
            del self.vector_sent[sent]
        self.sent.pop(peer, None)

    # --- messages -------------------------------------------------------

    def admit(self, peer: str, room: str, author: str, seq: int, size: int, now: float) -> bool:
        """Return whether a received message of size bytes may be queued for storing.

        Refused (not marked seen: sync brings it again) when the peer's store
        budget is spent or the sync state does not admit the author.
        """
        budget = self._store_budget.get(peer)
        if budget is None:
            factor = limits.KNOWN_PEER_STORE_FACTOR if peer in self.known else 1
            budget = self._store_budget[peer] = Bucket(
                now, limits.STORE_BYTES_BURST * factor, limits.STORE_BYTES_PER_S * factor
            )
        if not budget.take(now, size):
            if budget.refused == 0:
                log.warning("refusing messages from %s: over its store budget", peer[:8])
            budget.refused += 1
            return False
        if not self.sync.admits(room, author, seq, peer):
            # Not stored, not relayed, not marked seen: sync brings it again once its
            # author's earlier messages are here.
            log.info(
                "refusing %s #%d in %s from %s: too many authors with holes",
                author[:8],
                seq,
                room,
                peer[:8],
            )
            return False
        return True

    def must_verify(self, via: str, author: str, live: bool, private: bool) -> tuple[bool, bool]:
        """Return (relay: we will pass it on, verify: check its signature before anything).

        Straight from its author the channel already proves a message; verify the
        rest, private messages, and whatever we will relay, so we never pass on a forgery.
        """
        relay = live and len(self.view.peers()) > 1
        return relay, author != via or relay or private

    def pass_on(self, chat: m.Chat, via: str, author: str, room: str = "") -> list[Action]:
        """A live message of a room we do not hold: pass it on for those who hold it.

        With a router only members carry a room: nothing is passed on. A private
        conversation's message is never passed on (it travels only inside its two
        parties' ratchet, over their own connection: docs/protocol.md section 26).
        """
        if self.router is not None or kind_of_wire(room) is RoomKind.DM:
            return []
        return [Flood(chat, frozenset({via, author}))]

    def equivocated(self, author: str, seq: int, where: str) -> list[Action]:
        """An author signed two messages with one seq: cut only its own connection, flag it once.

        where: the room as the user knows it.
        """
        log.warning(
            "equivocation by %s (#%d in %s): second version dropped", author[:8], seq, where
        )
        out: list[Action] = [Disconnect(author, Reason.EQUIVOCATION)]
        if author in self.equivocators or len(self.equivocators) >= limits.MAX_EQUIVOCATORS:
            return out
        self.equivocators.add(author)
        message = (
            f"{author[:8]} signed two different messages #{seq} in {where!r}; the first one stays"
        )
        return [*out, Emit(ev.Alert(message=message, peer_id=author))]

    def clashed(self, author: str, seq: int, via: str, where: str) -> list[Action]:
        """The store refused a peer's message: its seq holds another one (an equivocation).

        From the author itself: cut that connection. Brought by a relay (verified,
        so the author did sign both): blame the author alone.
        """
        if via == author:
            log.warning("disconnecting %s: equivocation (#%d in %s)", author[:8], seq, where)
            return [Disconnect(author, Reason.EQUIVOCATION)]
        return self.equivocated(author, seq, where)

    def accept(self, room: str, author: str, seq: int) -> list[Action]:
        """Tell the sync state seq is stored; save a peer's floor that this made take effect."""
        floor = self.sync.accept(room, author, seq)
        return [] if floor is None else [SaveFloor(room, author, floor)]

    def duplicate(self, room: str, author: str, seq: int) -> tuple[list[Action], bool]:
        """A message was stored already; return (actions, whether the sync state changed).

        The bounded gap tracking may have forgotten it: count it again.
        """
        if self.sync.holds(room, author, seq):
            return [], False
        return self.accept(room, author, seq), True

    def committed(
        self,
        chat: m.Chat,
        room: str,
        author: str,
        seq: int,
        via: str | None,
        live: bool,
        relayable: Callable[[], bool],
        now: float = 0.0,
    ) -> list[Action]:
        """A new message is committed (via: the peer it came from, None for our own).

        Ours goes to every peer; a live one from a peer is relayed to the others
        (never back to its sender or author) if relayable() (its signature checks).
        chat is the frame to pass on: its `relays` is one more than the copy we got.
        With a router, the mesh's targets replace "every peer" (see `_route`).
        """
        if self.router is not None:
            return self._route(self.router, chat, room, author, seq, via, live, relayable, now)
        peers = self.view.peers()
        dm = self.view.dm_peer(room)
        if via is None and dm is not None:
            return self._to_party(dm, chat, room, author, seq)
        if via is None:
            self._note_sent(peers, room, author, seq)
            return [Flood(chat)]
        out = self._maybe_settle(room) if author == self.me else []  # a peer gave back ours
        if live and len(peers) > 1 and dm is None and relayable():
            exclude = frozenset({via, author})
            self._note_sent([p for p in peers if p not in exclude], room, author, seq)
            out.append(Flood(chat, exclude))
        return out

    def _route(
        self,
        router: Mesh,
        chat: m.Chat,
        room: str,
        author: str,
        seq: int,
        via: str | None,
        live: bool,
        relayable: Callable[[], bool],
        now: float,
    ) -> list[Action]:
        """committed() with a mesh: a room's live message goes to the mesh's targets.

        A conversation is not meshed: ours goes to its other party if connected (sync
        brings it otherwise), and one we receive is for us, never relayed.
        """
        dm = self.view.dm_peer(room)
        if via is None:
            if dm is not None:
                return self._to_party(dm, chat, room, author, seq)
            targets = router.publish(room, (room, author, seq), now)
            if not targets:
                return []
            self._note_sent(targets, room, author, seq)
            return [Forward(chat, targets)]
        out = self._maybe_settle(room) if author == self.me else []  # a peer gave back ours
        if dm is not None or not live:
            return out
        # chat is the copy to pass on: its relay count is the links ours crossed.
        relay_to, actions = router.received(via, room, (room, author, seq), True, now, chat.relays)
        out += actions
        if relay_to and relayable():
            self._note_sent(relay_to, room, author, seq)
            out.append(Forward(chat, list(relay_to)))
        return out

    def _to_party(self, dm: str, chat: m.Chat, room: str, author: str, seq: int) -> list[Action]:
        """Our new message of a conversation: to its other party alone, over a direct
        connection (the adapter wraps it in the pair's ratchet). Never flooded: without a
        connection it waits in the store, and sync (or a mailbox) delivers it later."""
        if dm not in self.view.peers():
            return []
        self._note_sent((dm,), room, author, seq)
        return [Send(dm, chat)]

    def heard_again(self, via: str, room: str, author: str, seq: int, now: float) -> list[Action]:
        """A live copy of a message we hold came from via: the mesh scores its delivery."""
        if self.router is None or self.view.dm_peer(room) is not None:
            return []
        _targets, actions = self.router.received(via, room, (room, author, seq), False, now)
        return list(actions) if actions else []

    def _note_sent(self, peer_ids: Iterable[str], room: str, author: str, seq: int) -> None:
        """Record that seq went live to these peers, if it extends what they hold without a hole."""
        vectors = self.room_receipts(room)
        sent, peer_in = self.sent, self.view.peer_in  # once per copy per target: hoisted
        for peer_id in peer_ids:
            if not peer_in(peer_id, room):
                continue  # it drops what it does not hold: nothing was carried
            rooms = sent.get(peer_id)
            if rooms is None:
                rooms = sent[peer_id] = {}
            carried = rooms.get(room)
            if carried is None:
                carried = rooms[room] = {}
            prev = carried.get(author)
            if prev is None:
                held = vectors.get(peer_id)
                prev = 0 if held is None else held.get(author, 0)
            if seq == prev + 1:
                carried[author] = seq

    def changed(self, touched: Iterable[tuple[str, str]], now: float) -> list[Action]:
        """The sync state of these (room, author) changed: check gaps, send vectors soon."""
        out: list[Action] = []
        for room, author in touched:
            out += self._check_gap(room, author, now)
            self.dirty_rooms.add(room)
        if self.timers.vector is None and not self.closed:
            # With a mesh the vector is the backstop: sent once live delivery had its time,
            # else it races the mesh and a push duplicates what is still in flight.
            delay = limits.VECTOR_DELAY_S if self.router is None else limits.MESH_VECTOR_DELAY_S
            self.timers.vector = now + delay
        return out

    # --- sync frames ----------------------------------------------------

    def sync_allowed(self, peer: str, now: float) -> list[Action]:
        """Take one sync request from peer's budget; a Disconnect if it floods."""
        bucket = self._sync_budget.setdefault(peer, Bucket(now))
        if bucket.take(now):
            return []
        log.warning("disconnecting %s: too many sync requests", peer[:8])
        return [Disconnect(peer, Reason.SYNC_FLOOD)]

    def sync_received(
        self, peer: str, frame: m.Vector | m.Want | m.Floor, now: float
    ) -> list[Action]:
        """A vector, want or floor from peer (its peer ids already checked): what to do."""
        if isinstance(frame, m.Vector):
            return self.vector_received(peer, frame, now)
        if isinstance(frame, m.Want):
            return self.want_received(peer, frame)
        return self.floor_received(peer, frame, now)

    def vector_received(self, peer: str, frame: m.Vector, now: float) -> list[Action]:
        """A peer's vector: its receipt, what to push it, and our vector if it holds more."""
        room = frame.room
        if not self.view.holds_vector(room, peer):
            return []
        out: list[Action] = []
        vectors = self.room_receipts(room)
        old = vectors.get(peer, {})
        # In memory the latest vector replaces the last (bounded by MAX_VECTOR_AUTHORS);
        # saved are only authors we track, so peer-chosen keys cannot grow the store.
        tracked = self.sync.rooms.get(room, {})
        # Only entries that differ from its last vector can be changes (a set difference, in C:
        # a busy room's vectors come often and differ in few entries).
        changed = {
            a: h for a, h in frame.have.items() - old.items() if a in tracked or a == self.me
        }
        first = peer not in vectors
        if first and len(vectors) >= limits.MAX_RECEIPT_PEERS_PER_ROOM:
            out += self._forget_receipts(room, vectors)
        vectors.pop(peer, None)  # re-insert: the dict stays in order of last vector
        vectors[peer] = dict(frame.have)
        if changed or first:
            # Receipts are kept in memory at once and saved in batches: a lost
            # update only costs a re-sent vector after a restart.
            self._unsaved.setdefault((peer, room), {}).update(changed or {self.me: 0})
            if self.timers.save is None and not self.closed:
                self.timers.save = now + limits.RECEIPT_SAVE_DELAY_S
        before, after = old.get(self.me, 0), frame.have.get(self.me, 0)
        if after > before:
            out.append(Delivered(room, before + 1, after))
        if self.timers.unsure is not None:
            self._own_claims[room] = max(self._own_claims.get(room, 0), after)
            out += self._maybe_settle(room)
        mine = self.sync.vector(room)
        if frame.have == mine:
            behind = False  # the common case in a quiet room: nothing to push or ask
        else:
            plan = self.sync.push_plan(room, frame.have)
            # Only a peer connected for a while can have those in flight through the mesh: one
            # that just (re)connected missed them, and the next vector may be SYNC_INTERVAL_S away.
            settled = now - self.opened.get(peer, -math.inf) >= limits.MESH_IN_FLIGHT_S
            if plan and self.router is not None and settled:
                plan = self._not_in_flight(self.router, room, plan, now)
            if plan:
                out.append(Push(peer, room, plan))
            behind = any(h > mine.get(a, 0) for a, h in frame.have.items() - mine.items())
        if behind and now - self.vector_sent.get((peer, room), -1e9) >= limits.VECTOR_REPLY_GAP_S:
            # The peer holds what we lack but only pushes on seeing our vector.
            self.vector_sent[(peer, room)] = now
            out.append(Send(peer, m.Vector(room=room, have=self.capped_vector(room))))
        return out

    def receipt_merged(self, peer: str, frame: m.Vector, now: float) -> list[Action]:
        """A receipt of peer that came by mail (late, maybe stale, maybe partial): merged
        entry by entry, only ever raising; a copy that raises nothing is ignored."""
        room = frame.room
        if not self.view.holds_vector(room, peer):
            return []
        vectors = self.room_receipts(room)
        old = vectors.get(peer, {})
        merged = dict(old)
        for author, have in frame.have.items():
            if have > merged.get(author, 0) and (
                author in merged or len(merged) < limits.MAX_VECTOR_AUTHORS
            ):
                merged[author] = have
        if peer in vectors and merged == old:
            return []
        return self.vector_received(peer, m.Vector(room=room, have=merged), now)

    def _not_in_flight(
        self, router: Mesh, room: str, plan: list[PushRange], now: float
    ) -> list[PushRange]:
        """Trim from a push what the mesh carries right now (seen by us a moment ago).

        A vector races the mesh: the peer lacks what is still on its way to it. Pushed,
        those would be duplicates; if the mesh fails them, a later vector pushes them.
        """
        trimmed = []
        for r in plan:
            hi = r.hi
            while hi >= r.lo and router.recent((room, r.author, hi), now):
                hi -= 1
            if hi == r.hi:
                trimmed.append(r)
            elif hi >= r.lo or r.floor is not None:
                trimmed.append(dataclasses.replace(r, hi=hi))
        return trimmed

    def want_received(self, peer: str, frame: m.Want) -> list[Action]:
        """A peer asks for a range: push what we offer of it."""
        if not self.view.holds_vector(frame.room, peer):
            return []
        plan = self.sync.want_plan(frame.room, frame.author, frame.lo, frame.hi)
        return [] if plan is None else [Push(peer, frame.room, [plan])]

    def floor_received(self, peer: str, frame: m.Floor, now: float) -> list[Action]:
        """A peer's floor: a claim, taken only if its vector backs it."""
        if not self.view.holds_vector(frame.room, peer):
            return []
        # Only a floor the sender can back: at most what its vector says
        # it holds of that author, never for our own messages, and no
        # new author beyond the per-room bound.
        backed = self.room_receipts(frame.room).get(peer, {}).get(frame.author, 0)
        tracked = self.sync.rooms.get(frame.room, {})
        if (
            frame.author == self.me
            or frame.seq > backed
            or (frame.author not in tracked and len(tracked) >= limits.MAX_AUTHORS_PER_ROOM)
        ):
            log.info("ignoring an unbacked floor from %s", peer[:8])
            return []
        # The sender chose its vector: a floor takes effect only at a message
        # of that author we hold (now, or when its push brings it).
        applied = self.sync.offer_floor(frame.room, frame.author, frame.seq, peer)
        if applied is None:
            return []
        out: list[Action] = [SaveFloor(frame.room, frame.author, applied)]
        return out + self.changed({(frame.room, frame.author)}, now)

    # --- pushing --------------------------------------------------------

    def push_ranges(
        self, peer: str, room: str, plan: list[PushRange]
    ) -> tuple[list[m.Floor], list[tuple[str, int, int]]]:
        """Return the floors to send first and the (author, lo, hi) ranges a push carries.

        Within one connection, what was already sent is not sent again, unless asked.
        """
        floors, ranges = [], []
        for r in plan:
            if r.floor is not None:
                floors.append(m.Floor(room=room, author=r.author, seq=r.floor))
            sent = self.sent.get(peer, {}).get(room, {}).get(r.author, 0)
            lo = r.lo if r.resend else max(r.lo, sent + 1)
            if lo <= r.hi:
                ranges.append((r.author, lo, r.hi))
        return floors, ranges

    def forget_sent(self, peer: str, room: str) -> None:
        """Forget what went to peer in room on this connection: it may not have arrived
        (the pair's ratchet broke and started anew), so its next vector gets a full push."""
        rooms = self.sent.get(peer)
        if rooms is not None:
            rooms.pop(room, None)

    def pushed(self, peer: str, room: str, author: str, seq: int) -> None:
        """A push sent seq of author to peer."""
        carried = self.sent.setdefault(peer, {}).setdefault(room, {})
        carried[author] = max(carried.get(author, 0), seq)

    # --- vectors and receipts -------------------------------------------

    def capped_vector(self, room: str) -> dict[str, int]:
        """Return our vector of room, at most MAX_VECTOR_AUTHORS entries (ours always in)."""
        vector = self.sync.vector(room)
        if len(vector) > limits.MAX_VECTOR_AUTHORS:
            # Keep our own entry and the most active authors; the rest sync next time.
            top = sorted(vector.items(), key=lambda kv: -kv[1])[: limits.MAX_VECTOR_AUTHORS - 1]
            vector = dict(top) | {self.me: vector.get(self.me, 0)}
        return vector

    def room_frame(self, room: str, frame: m.Frame) -> tuple[list[Action], list[str]]:
        """Send a sync frame about a room to the peers that may hear it; return them too.

        A conversation's frames go only to its other party: others must not
        learn who talks to whom, or how much.
        """
        dm = self.view.dm_peer(room) if self.view.joined(room) else None
        if dm is not None:
            if dm not in self.view.peers():
                return [], []
            return [Send(dm, frame)], [dm]
        if _members_only(room):
            # A private room's frames go only to peers admitted to it (docs/protocol.md 28).
            members = [p for p in self.view.peers() if self.view.peer_in(p, room)]
            return [Send(p, frame) for p in members], members
        return [Flood(frame)], list(self.view.peers())

    def send_vector(self, room: str, now: float) -> list[Action]:
        """Send our vector of room now (after a join: ask peers for its history)."""
        out, _peers = self.room_frame(room, m.Vector(room=room, have=self.capped_vector(room)))
        return out

    def _send_vectors(self, now: float) -> list[Action]:
        self.timers.vector = None
        rooms, self.dirty_rooms = self.dirty_rooms, set()
        out: list[Action] = []
        for room in sorted(rooms):
            sent, peers = self.room_frame(room, m.Vector(room=room, have=self.capped_vector(room)))
            out += sent
            for peer in peers:
                self.vector_sent[(peer, room)] = now
        return out

    def _forget_receipts(self, room: str, vectors: dict[str, dict[str, int]]) -> list[Action]:
        """Forget the receipts of the least recently heard peer of room that is not connected."""
        connected = set(self.view.peers())
        for peer in vectors:
            if peer not in connected:
                del vectors[peer]
                self._unsaved.pop((peer, room), None)
                return [ForgetReceipts(peer, room)]
        return []

    def room_receipts(self, room: str) -> dict[str, dict[str, int]]:
        """Return the receipts of room (peer -> its last vector), loading them once."""
        vectors = self.receipts.get(room)
        if vectors is None:
            vectors = self.receipts[room] = self.view.saved_receipts(room)
        return vectors

    def take_unsaved(self) -> dict[tuple[str, str], dict[str, int]]:
        """Return and clear the receipts changed since the last save: (peer, room) -> have."""
        unsaved, self._unsaved = self._unsaved, {}
        self.timers.save = None
        return unsaved

    def delivery(self, room: str, seq: int) -> tuple[int, int]:
        """Return (peers holding our message seq in room, peers known in room)."""
        vectors = self.room_receipts(room)
        count = sum(1 for v in vectors.values() if v.get(self.me, 0) >= seq)
        return count, len(vectors)

    # --- gaps -----------------------------------------------------------

    def _check_gap(self, room: str, author: str, now: float) -> list[Action]:
        key = (room, author)
        gap = self.sync.author(room, author).gap()
        reported = self.gaps.get(key)
        if gap is None:
            if reported is not None:
                del self.gaps[key]
                self.asks.pop(key, None)
                self.timers.wants.pop(key, None)
                return [Emit(ev.GapFilled(room=room, peer_id=author))]
            return []
        out: list[Action] = []
        if gap != reported:
            self.gaps[key] = gap
            self.asks[key] = 0  # a new hole: worth asking for again
            out.append(Emit(ev.Gap(room=room, peer_id=author, missing=[gap[0], gap[1]])))
        if (
            key not in self.timers.wants
            and self.asks.get(key, 0) < limits.GAP_MAX_ASKS
            and not self.closed
        ):
            self.timers.wants[key] = now + limits.GAP_REPAIR_DELAY_S
        return out

    def _ask_for_gap(self, key: tuple[str, str], now: float) -> list[Action]:
        gap = self.gaps.get(key)
        if gap is None:
            return []
        room, author = key
        if not self.view.joined(room):
            self.gaps.pop(key, None)  # we left the room: stop asking
            self.asks.pop(key, None)
            return []
        asks = self.asks.get(key, 0)
        if asks >= limits.GAP_MAX_ASKS:
            log.info("giving up on %s #%d-%d in %s: no peer fills it", author[:8], *gap, room)
            return []
        out, targets = self._send_want(
            room, m.Want(room=room, author=author, lo=gap[0], hi=gap[1]), now
        )
        if out:
            self.asks[key] = asks + 1
        # Ask again later if nobody could fill it yet (soon if peers only lacked budget).
        delay = limits.WANT_RETRY_S if targets and not out else limits.SYNC_INTERVAL_S
        self.timers.wants[key] = now + delay
        return out

    def _send_want(self, room: str, frame: m.Want, now: float) -> tuple[list[Action], int]:
        """Send a want to the peers in the room with want budget left; return (sends, peers).

        Each peer's budget (WANTS_*) stays far below the sync rate it tolerates,
        so however many gaps we have, gap repair never gets us disconnected.
        """
        peers = self.view.peers()
        dm = self.view.dm_peer(room)
        if dm is not None:
            targets = [dm] if dm in peers else []
        else:
            targets = [p for p in peers if self.view.peer_in(p, room)]
        out: list[Action] = []
        for peer in targets:
            budget = self._want_budget.get(peer)
            if budget is None:
                budget = self._want_budget[peer] = Bucket(
                    now, limits.WANTS_BURST, limits.WANTS_PER_S
                )
            if budget.take(now):
                out.append(Send(peer, frame))
        return out, len(targets)


def _members_only(room: str) -> bool:
    """Return whether room's sync frames go only to its admitted members (a private room)."""
    return kind_of_wire(room) is RoomKind.PRIVATE
