"""History and delivery: store every message, catch peers up, show where messages arrived.

The I/O side of section 3 of DESIGN.md: the adapter of the sans-IO replica.
`protocol/replica.py` decides (with `protocol/sync.py`'s vectors, gaps and
push plans) and answers with actions; `store/db.py` persists; this module
commits, then carries the actions out (persist, then release), and arms one
asyncio timer for the replica's `get_timer()`. What the rules are:

- every message, ours or received, is committed (group commit: one
  transaction per event-loop turn) before it is shown, relayed or receipted;
- when a connection opens, periodically, and shortly after new messages were
  stored, we send our vector of each room; a peer's vector both tells us what
  to push it (oldest first, in bounded batches, waiting for the socket between
  batches) and serves as its delivery receipt;
- a gap (a held seq above a missing one) is reported and, if a push does not
  fill it soon, asked for with a Want;
- a private room's message is taken only from a member: a peer admitted to
  us, or an author we know as a member (docs/protocol.md 27.4);
- bad input (a forged signature, a sync-request flood, an author's own
  equivocation) closes that peer's connection and stores nothing of it; a
  relayed second version of a message is dropped and its author flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.group import UnknownSession
from chinwag.crypto.identity import Identity, public_from_peer_id, verify
from chinwag.errors import RemoteProtocolError, UsageError
from chinwag.logonce import WarnOnce
from chinwag.protocol import messages as m
from chinwag.protocol import replica as rp
from chinwag.protocol.chat import ChatMessage, SeenSet, open_message
from chinwag.protocol.kinds import WIRE_PREFIX, RoomKind, kind_of_wire
from chinwag.protocol.mesh import Mesh, MeshAction, MeshClose, MeshDial, MeshSend, MeshServe, MsgId
from chinwag.protocol.reasons import Reason
from chinwag.protocol.replica import Replica
from chinwag.protocol.sync import PushRange, SyncState
from chinwag.roomkeys import UNREADABLE
from chinwag.rooms import DM, RoomBook
from chinwag.store.db import Insert, NewMessage, Row, Store, StoreError

if TYPE_CHECKING:
    from chinwag.net.link import Link, Links

log = logging.getLogger(__name__)
_warn_clear = WarnOnce(log)
DM_PREFIX = WIRE_PREFIX[RoomKind.DM]

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
    #: Links the copy crossed to reach us (0: our own): the relay count we pass it on with.
    hops: int = 0


def _relays(frame: m.Chat) -> int:
    """Return the links a received copy crossed (its relays plus the last one), bounded."""
    return min(frame.relays + 1, limits.MAX_RELAYS)


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


@dataclass(frozen=True, slots=True)
class MeshPorts:
    """What the gossip mesh needs of the node: its randomness and the connection manager."""

    rng: random.Random
    #: Dial a mesh candidate; False if no address of it is known.
    dial: Callable[[str], bool]
    #: Whether a connection is direct (for a conversation or a file): not the mesh's.
    is_direct: Callable[[str], bool]
    #: Whether we dialled the connection (the mesh keeps D_out outbound peers: no eclipse).
    is_outbound: Callable[[str], bool]


class _View:
    """The replica's RoomView over our rooms and the connection manager."""

    def __init__(self, book: RoomBook, manager: Links, store: Store) -> None:
        self.book = book
        self.manager = manager
        self.store = store

    def peers(self) -> Sequence[str]:
        return list(self.manager.peers)

    def rooms(self) -> list[str]:
        return self.book.wires()

    def joined(self, room: str) -> bool:
        return room in self.book.joined

    def dm_peer(self, room: str) -> str | None:
        joined = self.book.joined.get(room)
        if joined is None or joined.kind != DM:
            return None
        return joined.peer or ""

    def peer_in(self, peer_id: str, room: str) -> bool:
        return self.book.peer_in(peer_id, room)

    def holds_vector(self, room: str, peer_id: str) -> bool:
        # A peer not connected: its receipt came by mail (nothing goes back to it).
        return self.book.holds_vector(room, peer_id, peer_id in self.manager.peers)

    def saved_receipts(self, room: str) -> dict[str, dict[str, int]]:
        return self.store.peer_vectors(room)


class History:
    """Persistence, anti-entropy, gaps and receipts for one node."""

    def __init__(
        self,
        store: Store,
        identity: Identity,
        manager: Links,
        emit: Callable[[ev.NodeEvent], None],
        book: RoomBook,
        mesh: MeshPorts | None = None,
    ) -> None:
        """mesh: run rooms as a gossip mesh (docs/mesh.md); None floods to every peer."""
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
        self._jobs: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._rerun: dict[tuple[str, str], list[PushRange]] = {}
        #: The one timer of the replica (re-armed from replica.get_timer()).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        #: Author -> last nick noted in the store, least recently used first (bounded:
        #: HISTORY_MAX_AUTHOR_NICKS); a forgotten author costs one store write, nothing more.
        self._author_nicks: dict[str, str] = {}
        for author, nick in store.peer_nicks().items():
            self._note_nick(author, nick)
        #: Peers met in an earlier run or verified: a larger store budget (known before we start,
        #: so a fresh identity cannot make itself known by connecting).
        self._ports = mesh
        #: The gossip mesh of our rooms (None: every message floods to every peer).
        self.mesh: Mesh | None = None
        if mesh is not None:
            self.mesh = Mesh(self.me, mesh.rng, self._mesh_has)
        self.replica = Replica(
            self.me, _View(book, manager, store), self.sync, store.known_peers(), self.mesh
        )
        #: Authors heard live through another peer: author -> (that peer, time.time()).
        self.relayed: dict[str, tuple[str, float]] = {}
        self._store_problem: str | None = None
        # Own messages waiting to be numbered while the replica is unsure (see set_unsure).
        self._held_own: list[
            tuple[str, Callable[[int], ChatMessage], str, asyncio.Future[ev.NodeEvent]]
        ] = []
        #: Called once the pending batch is committed (mail is acknowledged only then).
        self._after_flush: list[Callable[[], None]] = []
        #: Sends a conversation's encoded chat frame to its other party inside its Olm
        #: ratchet (PrivateChannel.send of a `chat` inner frame); None: in clear (unit tests).
        self.private_send: Callable[[str, bytes], bool] | None = None
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
        now = self._loop.time()
        self.replica.start(now)
        if self.mesh is not None:
            for wire in self._meshed_rooms():
                self._mesh_run(self.mesh.join(wire, now))
        self._rearm()

    async def close(self) -> None:
        """Commit what is pending and stop background work."""
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        self.replica.close()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
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

    @property
    def equivocators(self) -> set[str]:
        """Authors seen signing two messages with one seq (flagged once each)."""
        return self.replica.equivocators

    def set_unsure(self, why: str) -> None:
        """Hold our new messages until peers gave back those we may have lost (or a timeout).

        The rule is the replica's (`Replica.set_unsure`); held messages wait here.
        """
        log.info("own messages wait for peers to give back what we sent: %s", why)
        self.replica.set_unsure(self._loop.time())
        self._rearm()

    def post_own(
        self, room: str, make: Callable[[int], ChatMessage], text: str
    ) -> asyncio.Future[ev.NodeEvent]:
        """Number (make(seq) signs it) and queue our new message, or hold it while unsure."""
        if not self.replica.waiting(room):
            return self.submit_own(make(self.next_seq(room)), text)
        if len(self._held_own) >= limits.MAX_HELD_OWN:
            raise UsageError("too many messages waiting for peers; try again in a few seconds")
        done: asyncio.Future[ev.NodeEvent] = self._loop.create_future()
        self._held_own.append((room, make, text, done))
        return done

    def _release_held(self) -> None:
        keep = []
        for room, make, text, done in self._held_own:
            if done.done():
                continue
            if self.replica.waiting(room):
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
        return self.replica.next_seq(room)

    def submit_own(self, msg: ChatMessage, text: str) -> asyncio.Future[ev.NodeEvent]:
        """Queue our new message (readable text: text); resolves once committed and sent."""
        done: asyncio.Future[ev.NodeEvent] = self._loop.create_future()
        self._queue(_Pending(msg, None, True, True, done, text))
        return done

    # --- frames from peers ----------------------------------------------

    def chat_received(
        self, conn: Link, frame: m.Chat, clear: bool = False, mailed: bool = False
    ) -> bool:
        """Check a received message and queue it for the next commit.

        clear: the frame came as a plain `chat` frame, not inside a `pm`; a conversation's
        message never travels so (docs/protocol.md section 26) and is refused.
        mailed: it came sealed in a mail item delivered by conn (section 24): conn passed on
        a box it could not read, so it vouches for nothing (section 27.4).
        Return False if this copy will never be stored (refused: blocked, not ours, does
        not decrypt, not remembered, over the sender's budget, or invalid), else True.
        """
        from_id = conn.peer_id or ""
        try:
            msg = open_message(frame.body, frame.sig, check_signature=False)
            body = msg.body
            author = msg.author_id
            if clear and body.room.startswith(DM_PREFIX):
                why = "refusing a private message from %s in clear (not in a pm)"
                _warn_clear(("clear-dm", from_id), why, from_id[:8])
                return False
            if msg.id in self._pending_ids:
                self._heard_again(from_id, frame, body.room, author, body.seq)
                return True
            if msg.id in self._seen and self.sync.holds(body.room, author, body.seq):
                self._heard_again(from_id, frame, body.room, author, body.seq)
                return True
            if self.sync.holds(body.room, author, body.seq):
                stored = self.store.ids_in_range(body.room, author, body.seq, body.seq)
                if not stored or stored[0][1] == msg.id:
                    self._seen.add(msg.id)
                    self._heard_again(from_id, frame, body.room, author, body.seq)
                    return True
                if author == from_id:
                    raise RemoteProtocolError(
                        f"equivocation: {author[:8]} #{body.seq} in {body.room} has two contents",
                        "equivocation",
                    )
                # A relay passes on what the author signed: check that the author did
                # sign it (else the relay forged it), then blame the author alone.
                msg = open_message(frame.body, frame.sig, check_signature=True)
                self._seen.add(msg.id)
                self._run(self.replica.equivocated(author, body.seq, self.book.display(body.room)))
                return True  # its seq is held (the first content)
            if author in self.book.blocked:
                self._seen.add(msg.id)
                return False
            room = self.book.holds(body.room, author)
            if room is None and msg.id in self._seen:
                return False  # relayed once already: never again (no storms)
            # A mail holder only passes on a sealed box: it took nothing, so only the
            # author's own membership counts ("" is never admitted).
            via = "" if mailed else from_id
            if room is not None and not self.book.from_member(room, via, author):
                # A stranger writing into a private room (its id is announced): neither
                # kept nor stored nor relayed, no key asked for. Not marked seen: a member
                # may bring it later (then its author is vouched for).
                _warn_clear(
                    ("not a member", from_id, body.room),
                    "refusing a message in %s by %s from %s: not a member we know",
                    room.name,
                    author[:8],
                    from_id[:8],
                )
                return False
            relay, verify_now = self.replica.must_verify(
                from_id, author, not frame.hist, bool(body.enc)
            )
            verified = False
            if verify_now:
                msg = open_message(frame.body, frame.sig, check_signature=True)
                verified = True
        except RemoteProtocolError as exc:
            log.warning("disconnecting %s: %s", from_id[:8], exc)
            self.mesh_invalid(from_id)
            conn.close(exc.code)
            return False
        if room is None:
            # Not ours to store or show; pass live traffic on for those who hold it.
            self._seen.add(msg.id)
            if relay:
                chat = m.Chat(body=msg.raw_body, sig=msg.sig, relays=_relays(frame))
                self._run(self.replica.pass_on(chat, from_id, author, body.room))
            return False
        try:
            text = self.book.plaintext(room, msg)
        except UnknownSession:
            text = self._await_key(conn, frame, msg)
            if text is None:
                return False  # kept until its key comes (or refused)
        if text is None or not self.book.remember(room):
            self._seen.add(msg.id)
            return False
        size = len(frame.body) + len(frame.sig)
        now = self._loop.time()
        if not self.replica.admit(from_id, body.room, author, body.seq, size, now):
            return False  # not marked seen: sync fetches it again once the budget refills
        if self.mesh is not None and not frame.hist:
            # New to us: our mesh peers need not send their copies while we commit it.
            self._mesh_carry(
                self.mesh.dont_want(from_id, body.room, (body.room, author, body.seq), now)
            )
        self._queue(_Pending(msg, conn, not frame.hist, verified, None, text, _relays(frame)))
        return True

    def _await_key(self, conn: Link, frame: m.Chat, msg: ChatMessage) -> str | None:
        """A private-room message whose Megolm key is not here yet: keep it (signature checked
        first, so no forgery makes us ask for keys) until its key comes, and return None (not
        stored now; not marked seen: sync brings it again if the bounded keep drops it).
        Once its key was asked for in vain for MEGOLM_GIVE_UP_S, return the placeholder text
        to store it with (its text is filled in if the key comes later)."""
        from_id = conn.peer_id or ""
        try:
            msg = open_message(frame.body, frame.sig, check_signature=True)
        except RemoteProtocolError as exc:
            log.warning("disconnecting %s: %s", from_id[:8], exc)
            self.mesh_invalid(from_id)
            conn.close(exc.code)
            return None
        if self.book.group is None or self.book.group.hold(conn, frame, msg):
            return None
        return UNREADABLE

    def _heard_again(self, via: str, frame: m.Chat, room: str, author: str, seq: int) -> None:
        """A copy of a message we hold or queued: the mesh scores the delivery (live only)."""
        if self.mesh is not None and not frame.hist:
            self._run(self.replica.heard_again(via, room, author, seq, self._loop.time()))

    def sync_frame(self, conn: Link, frame: m.SyncFrame) -> None:
        """Handle a vector, want or floor from a peer."""
        peer_id = conn.peer_id or ""
        now = self._loop.time()
        refused = self.replica.sync_allowed(peer_id, now)
        if refused:
            for action in refused:  # this connection, even if the manager no longer lists it
                if isinstance(action, rp.Disconnect):
                    conn.close(action.reason)
            return
        try:
            if isinstance(frame, m.Rooms):
                # The node starts admissions to the private rooms it announces (node.py).
                self.book.set_announced(peer_id, frame)
                if self.mesh is not None:
                    self._mesh_run(self.mesh.peer_rooms(peer_id, self._rooms_of(peer_id), now))
                return
            # Peer ids in the frame were checked by the codec (messages.PeerIdStr).
            actions = self.replica.sync_received(peer_id, frame, now)
        except StoreError as exc:  # ours, not the peer's
            log.error("cannot handle a sync frame from %s: %s", peer_id[:8], exc)
            return
        self._run(actions)

    def peer_joined(self, conn: Link) -> None:
        """Send our rooms and vectors to a newly connected peer."""
        conn.send_frame(self.book.announcement())
        peer_id = conn.peer_id or ""
        now = self._loop.time()
        if self.mesh is not None and self._ports is not None:
            meshed = not self._ports.is_direct(peer_id)
            outbound = self._ports.is_outbound(peer_id)
            self._mesh_carry(self.mesh.connected(peer_id, now, mesh=meshed, outbound=outbound))
        self._run(self.replica.peer_opened(peer_id, now))

    def peer_admitted(self, peer_id: str, wire: str) -> None:
        """peer_id proved private room wire's passphrase: sync the room with it from now on."""
        now = self._loop.time()
        if self.mesh is not None:
            self._mesh_run(self.mesh.peer_rooms(peer_id, self._rooms_of(peer_id), now))
        self._run(self.replica.peer_admitted(peer_id, wire, now))

    def peer_left(self, peer_id: str) -> None:
        self.book.forget_peer(peer_id)
        self.replica.peer_closed(peer_id)
        if self.mesh is not None:
            self._mesh_carry(self.mesh.disconnected(peer_id, self._loop.time()))
        for key in [k for k in self._jobs if k[0] == peer_id]:
            self._jobs.pop(key).cancel()
            self._rerun.pop(key, None)
        self._rearm()

    # --- the gossip mesh ----------------------------------------------------

    def mesh_frame(self, conn: Link, frame: m.MeshFrame) -> None:
        """Handle a graft, prune, ihave, iwant or idontwant from a peer."""
        if self.mesh is None:
            return  # a node without the mesh ignores mesh frames (the room floods)
        self._mesh_run(self.mesh.frame(conn.peer_id or "", frame, self._loop.time()))

    def candidate(self, peer_id: str) -> None:
        """A peer we could dial was heard of (a beacon, presence): offer it to the mesh."""
        if self.mesh is not None and peer_id != self.me:
            self.mesh.candidate(peer_id, self._loop.time())

    def dial_failed(self, peer_id: str) -> None:
        """A dial of peer_id failed: the mesh picks other candidates."""
        if self.mesh is not None:
            self.mesh.drop_candidate(peer_id)

    def mesh_invalid(self, peer_id: str) -> None:
        """peer_id sent invalid traffic (a bad signature, a malformed chat): it loses score."""
        if self.mesh is not None and peer_id:
            self._mesh_run(self.mesh.invalid(peer_id, self._loop.time()))

    def _mesh_has(self, msg: MsgId) -> bool:
        room, author, seq = msg
        return self.sync.holds(room, author, seq)

    def _meshed_rooms(self) -> list[str]:
        """Return the wire names of our rooms that are meshed (not conversations)."""
        return [w for w, r in self.book.joined.items() if r.kind != DM]

    def _rooms_of(self, peer_id: str) -> list[str]:
        """Return the rooms peer_id announced that it holds as we do (a private room: only
        once it proved the passphrase to us)."""
        out = []
        for wire in self.book.announced.get(peer_id, {}):
            room = self.book.joined.get(wire)
            if room is None or self.book.shares_room(peer_id, room.name):
                out.append(wire)
        return out

    def _mesh_run(self, actions: list[MeshAction]) -> None:
        """Carry out what the mesh decided, then re-arm the one timer."""
        self._mesh_carry(actions)
        self._rearm()

    def _mesh_carry(self, actions: list[MeshAction]) -> None:
        for action in actions:
            if isinstance(action, MeshSend):
                conn = self.manager.peers.get(action.peer)
                if conn is not None:
                    conn.send_frame(action.frame)
            elif isinstance(action, MeshDial):
                if self._ports is not None and not self._ports.dial(action.peer):
                    self.dial_failed(action.peer)
            elif isinstance(action, MeshClose):
                conn = self.manager.peers.get(action.peer)
                if conn is not None:
                    log.info("closing %s: %s", action.peer[:8], action.reason)
                    conn.close(action.reason)
            elif isinstance(action, MeshServe):
                self._serve(action.peer, action.ids)

    def _serve(self, peer_id: str, ids: list[MsgId]) -> None:
        """Answer an iwant: send the stored messages as live chats (verified ones only)."""
        conn = self.manager.peers.get(peer_id)
        if conn is None:
            return
        by_room: dict[str, list[tuple[str, int, int]]] = {}
        for room, author, seq in ids:
            by_room.setdefault(room, []).append((author, seq, seq))
        for room, ranges in by_room.items():
            rows = self.store.push_batch(room, ranges, (-1, "", -1), len(ranges))
            bad = self._verify_unverified(room, rows)
            for msg_id, _ts, author, seq, body, sig, _verified in rows:
                if msg_id not in bad:
                    relays = self.mesh.hops((room, author, seq)) if self.mesh is not None else 0
                    conn.send_encoded(m.encode(m.Chat(body=body, sig=sig, relays=relays)))

    # --- the replica's actions --------------------------------------------

    def _run(self, actions: list[rp.Action]) -> None:
        """Carry out what the replica decided, then re-arm its timer."""
        self._carry(actions)
        self._rearm()

    def _carry(self, actions: list[rp.Action]) -> None:
        """Carry out what the replica decided (the caller re-arms the timer)."""
        for action in actions:
            if isinstance(action, rp.Send):
                if isinstance(action.frame, m.Chat) and self._private(action.frame.body):
                    self._send_private(action.peer, m.encode(action.frame))
                    continue
                conn = self.manager.peers.get(action.peer)
                if conn is not None:
                    conn.send_frame(action.frame)
            elif isinstance(action, rp.Forward):
                encoded = m.encode(action.frame)
                for peer in action.peers:
                    conn = self.manager.peers.get(peer)
                    if conn is not None:
                        conn.send_encoded(encoded)
            elif isinstance(action, MeshSend | MeshDial | MeshClose | MeshServe):
                self._mesh_carry([action])
            elif isinstance(action, rp.Flood):
                if isinstance(action.frame, m.Chat):
                    self.manager.broadcast(m.encode(action.frame), action.exclude)
                else:  # sync frames go to every peer
                    self.manager.broadcast_frame(action.frame)
            elif isinstance(action, rp.Push):
                conn = self.manager.peers.get(action.peer)
                if conn is not None:
                    self._start_push(conn, action.room, action.plan)
            elif isinstance(action, rp.Emit):
                self._emit(action.event)
            elif isinstance(action, rp.Disconnect):
                conn = self.manager.peers.get(action.peer)
                if conn is not None:
                    conn.close(action.reason)
            elif isinstance(action, rp.SaveFloor):
                try:
                    self.store.set_floor(action.room, action.author, action.seq)
                except StoreError as exc:  # only costs a refetch after a restart
                    log.warning("cannot save a floor: %s", exc)
            elif isinstance(action, rp.SaveReceipts):
                self._save_vectors()
            elif isinstance(action, rp.ForgetReceipts):
                try:
                    self.store.delete_peer_vectors(action.peer, action.room)
                except StoreError as exc:
                    log.warning("cannot forget receipts: %s", exc)
            elif isinstance(action, rp.Delivered):
                self._report_delivered(action.room, action.lo, action.hi)
            elif isinstance(action, rp.CheckStore):
                problem = self.store.check_checkpointer()
                if problem is not None and self._store_problem is None:  # once per episode
                    self._emit(
                        ev.Error(message=f"the message store's log is not being saved: {problem}")
                    )
                self._store_problem = problem
            elif isinstance(action, rp.ReleaseHeld):
                self._release_held()

    def _rearm(self) -> None:
        """Arm the one timer for the replica's next deadline."""
        due = None if self._closed else self.replica.get_timer()
        if self.mesh is not None and not self._closed:
            beat = self.mesh.get_timer()
            if beat is not None and (due is None or beat < due):
                due = beat
        if due == self._timer_due and (due is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = due
        if due is not None:
            self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        due, self._timer_due = self._timer_due, None
        # call_at may fire within the clock's resolution before the deadline.
        now = max(self._loop.time(), due if due is not None else 0.0)
        try:
            self._carry(self.replica.handle_timer(now))
            if self.mesh is not None:
                due = self.mesh.get_timer()
                if due is not None and now >= due:
                    self._mesh_carry(self.mesh.handle_timer(now))
        finally:
            self._rearm()  # a failed action (say, a store error) must not stop the timers

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
        now = self._loop.time()
        if self.mesh is not None and not wire.startswith("dm."):
            joined = wire in self.book.joined
            self._mesh_carry(self.mesh.join(wire, now) if joined else self.mesh.leave(wire, now))
        if wire in self.book.joined:
            self._run(self.replica.send_vector(wire, now))
        else:
            self._rearm()

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
        return self.replica.delivery(room, seq)

    # --- group commit ---------------------------------------------------

    def _queue(self, item: _Pending) -> None:
        self._pending.append(item)
        self._pending_ids.add(item.msg.id)
        if self._flush_handle is None and not self._closed:
            self._flush_handle = self._loop.call_soon(self._flush)

    def when_committed(self, callback: Callable[[], None]) -> None:
        """Call callback once what is queued now is committed (or failed): soon, in any case."""
        if self._flush_handle is None:
            self._loop.call_soon(callback)
        else:
            self._after_flush.append(callback)

    def holds(self, room: str, author: str, seq: int) -> bool:
        """Return whether message seq of author in room is in the store."""
        return self.sync.holds(room, author, seq)

    def mail_vector(self, peer_id: str, frame: m.Vector) -> None:
        """A vector of peer_id that came by mail (its receipt while we were apart): merged,
        only raising entries (a stale or partial copy lowers or wipes nothing)."""
        self._run(self.replica.receipt_merged(peer_id, frame, self._loop.time()))

    def _flush(self) -> None:
        self._flush_handle = None
        after, self._after_flush = self._after_flush, []
        try:
            self._flush_batch()
        finally:
            for callback in after:
                self._loop.call_soon(callback)

    def _flush_batch(self) -> None:
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
                    self.replica.unreserve(item.msg.body.room, item.msg.body.seq)
                if item.done is not None and not item.done.done():
                    item.done.set_exception(exc)
            return
        touched: set[tuple[str, str]] = set()
        actions: list[rp.Action] = []
        for item, row, key, result in zip(batch, rows, keys, results, strict=True):
            if result is Insert.NEW:
                last = self._last_key.get(row.room)
                if last is None or key > last:
                    self._last_key[row.room] = key
                actions += self._accepted(item, row)
                touched.add((row.room, row.author))
            elif result is Insert.DUPLICATE:
                # Stored already, but maybe forgotten by the bounded gap tracking.
                self._seen.add(row.id)
                saves, moved = self.replica.duplicate(row.room, row.author, row.seq)
                actions += saves
                if moved:
                    touched.add((row.room, row.author))
            elif item.conn is None:  # our own message clashed with a stored one
                log.error("own message %s #%d not stored: %s", row.room, row.seq, result.value)
                self._emit(ev.Error(message=f"message not sent: seq {row.seq} already used"))
                if item.done is not None and not item.done.done():
                    item.done.set_exception(StoreError(f"seq {row.seq} already used"))
                continue
            else:
                # Another message holds this seq: nothing was stored.
                via = item.conn.peer_id or ""
                where = self.book.display(row.room)
                actions += self.replica.clashed(row.author, row.seq, via, where)
            if item.done is not None and not item.done.done():
                item.done.set_result(self._message_event(item.msg, item.text, own=True, late=False))
        if touched:
            actions += self.replica.changed(touched, self._loop.time())
        self._run(actions)

    def _note_nick(self, author: str, nick: str) -> bool:
        """Remember author's nick as the most recent entry; return whether it changed."""
        changed = self._author_nicks.pop(author, None) != nick
        self._author_nicks[author] = nick
        while len(self._author_nicks) > limits.HISTORY_MAX_AUTHOR_NICKS:
            del self._author_nicks[next(iter(self._author_nicks))]
        return changed

    def _accepted(self, item: _Pending, row: NewMessage) -> list[rp.Action]:
        """A new message is committed: release what waited for the commit."""
        msg = item.msg
        if self._note_nick(row.author, row.nick):
            try:
                self.store.note_author(row.author, row.nick)
            except Exception as exc:  # only a convenience for resolving nicks
                log.warning("cannot note %s's nick: %s", row.author[:8], exc)
        self._seen.add(msg.id)
        actions = self.replica.accept(row.room, row.author, row.seq)
        chat = m.Chat(body=msg.raw_body, sig=msg.sig, relays=item.hops)
        if item.conn is None:
            # Ours: on the wire first, then echoed locally (peers' latency matters more).
            now = self._loop.time()
            sent = self.replica.committed(
                chat, row.room, row.author, row.seq, None, True, bool, now
            )
            self._carry(sent)
            self._emit(self._message_event(msg, item.text, own=True, late=False))
            return actions
        self._emit(self._message_event(msg, item.text, own=row.author == self.me, late=row.late))
        via = item.conn.peer_id or ""
        if item.live and row.author not in (via, self.me):
            self._note_relayed(row.author, via)
        relay = self.replica.committed(
            chat,
            row.room,
            row.author,
            row.seq,
            via,
            item.live,
            functools.partial(self._relayable, item, row),
            self._loop.time(),
        )
        self._carry(relay)  # the flush re-arms the timer once, after the batch
        return actions

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

    # --- vectors, receipts, gaps ----------------------------------------

    def _save_vectors(self) -> None:
        unsaved = self.replica.take_unsaved()
        for (peer_id, room), have in unsaved.items():
            self.store.set_peer_vector(peer_id, room, have)

    def _report_delivered(self, room: str, lo: int, hi: int) -> None:
        for seq, msg_id in self.store.ids_in_range(room, self.me, lo, hi):
            count, of = self.replica.delivery(room, seq)
            self._emit(ev.Delivered(id=msg_id, count=count, of=of))

    # --- conversations inside the Olm ratchet (docs/protocol.md section 26) -------

    def _private(self, body: bytes) -> bool:
        """Return whether an encoded chat body is a conversation's (it goes inside a `pm`)."""
        if self.private_send is None:
            return False
        try:
            return kind_of_wire(m.decode_body(body).room) is RoomKind.DM
        except RemoteProtocolError:
            return False

    def _send_private(self, peer_id: str, encoded_chat: bytes) -> None:
        assert self.private_send is not None
        self.private_send(peer_id, encoded_chat)

    def resync(self, peer_id: str) -> None:
        """Send our vector of the conversation with peer_id (its ratchet started anew: it
        re-sends what we lack, we re-send what it lacks)."""
        for wire, room in list(self.book.joined.items()):
            if room.kind == DM and room.peer == peer_id:
                self.replica.forget_sent(peer_id, wire)
                self._run(self.replica.send_vector(wire, self._loop.time()))

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
        private = self.private_send is not None and kind_of_wire(room) is RoomKind.DM
        floors, ranges = self.replica.push_ranges(peer_id, room, plan)
        for floor in floors:
            conn.send_frame(floor)
        after: Key = (-1, "", -1)
        while ranges and conn.is_open:
            rows = self.store.push_batch(room, ranges, after, limits.SYNC_BATCH)
            if not rows:
                break
            bad = self._verify_unverified(room, rows)
            for msg_id, ts, author, seq, body, sig, _verified in rows:
                if msg_id in bad:
                    continue
                encoded = m.encode(m.Chat(body=body, sig=sig, hist=True))
                if private:
                    self._send_private(peer_id, encoded)  # re-wrapped under today's session
                else:
                    conn.send_encoded(encoded)
                self.replica.pushed(peer_id, room, author, seq)
                after = (ts, author, seq)
            if len(rows) < limits.SYNC_BATCH:
                break
            after = (rows[-1][1], rows[-1][2], rows[-1][3])
            if not await conn.wait_drained(limits.SEND_DRAIN_TIMEOUT_S):
                conn.close(Reason.TOO_SLOW)
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
            self._run(self.replica.changed(touched, self._loop.time()))
        return bad

    # --- helpers --------------------------------------------------------

    def _rooms(self) -> list[str]:
        return self.book.wires()

    def _room_vectors(self, room: str) -> dict[str, dict[str, int]]:
        return self.replica.room_receipts(room)

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
