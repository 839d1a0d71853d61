"""The sans-IO gossip mesh of rooms: gossipsub v1.1 with v1.2's IDONTWANT (docs/mesh.md).

Theory of operation
-------------------
Per joined room, each node keeps a mesh of about D (D_lo..D_hi) connected peers of the
room. A message is pushed eagerly to the mesh; ids of recent messages are announced
lazily (IHAVE) at each heartbeat to D_lazy other peers of the room, which fetch what they
lack (IWANT, answered by `MeshServe`). The per-author sequence sync of the replica stays
the backstop. A peer that tells us IDONTWANT for a message does not get it from us, and
(episub choking) a mesh peer whose copies nearly always come second is asked by CHOKE to
announce instead of pushing, so a node receives eagerly from about three peers.
Our own messages go to every connected peer of the room (flood publishing).

Each peer has a score (gossipsub v1.1's, simplified: P1 time in mesh, P2 first
deliveries, P3 mesh delivery deficit and its sticky P3b, P4 invalid messages, P7
behaviour penalty), decayed at each heartbeat. Negative peers are pruned and never
grafted, peers under the gossip threshold get no gossip and their gossip is ignored,
graylisted peers are ignored, and below the close threshold the connection is closed.

The mesh also keeps the node's degree: it asks for dials (`MeshDial`) from its
candidates while a joined room's mesh or the connection count is under D_lo, refuses
(PRUNE with peer exchange, then close) an inbound connection beyond D_hi + a margin, and
closes the lowest-scoring connections that are in no mesh above it.
Direct connections (`connected(..., mesh=False)`: a conversation, a file) are never
counted, meshed or closed.

Pure: no asyncio, sockets or clocks; `now` comes in, randomness is the `random.Random`
given to the constructor (seeded by the simulator), and every iteration that feeds it is
sorted, so a run is reproducible. Cheap per message: the target list of a room is
cached and rebuilt only when its mesh changes.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from chinwag import limits
from chinwag.logonce import WarnOnce
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import Reason

log = logging.getLogger(__name__)
_warn = WarnOnce(log)

#: A message id: (room wire name, author peer id, seq).
MsgId = tuple[str, str, int]

MeshFrame = m.MeshFrame


@dataclass(frozen=True, slots=True)
class MeshParams:
    """The mesh parameters (defaults: limits.py, docs/mesh.md; the simulator may vary them)."""

    d: int = limits.MESH_D
    d_lo: int = limits.MESH_D_LO
    d_hi: int = limits.MESH_D_HI
    d_score: int = limits.MESH_D_SCORE
    d_out: int = limits.MESH_D_OUT
    d_lazy: int = limits.MESH_D_LAZY
    heartbeat_s: float = limits.MESH_HEARTBEAT_S
    #: A first copy that crossed this many links is announced, not pushed (0: no limit).
    max_hops: int = limits.MESH_MAX_HOPS
    history_len: int = limits.MESH_HISTORY_LEN
    history_gossip: int = limits.MESH_HISTORY_GOSSIP
    prune_backoff_s: int = limits.MESH_PRUNE_BACKOFF_S
    leave_backoff_s: int = limits.MESH_LEAVE_BACKOFF_S
    conn_margin: int = limits.MESH_CONN_MARGIN
    #: Whether `dont_want` sends IDONTWANT (v1.2) to the mesh on a first copy.
    idontwant: bool = True
    #: Episub choking: mesh peers whose copies nearly always come second are asked (CHOKE)
    #: to announce by IHAVE instead of pushing, keeping choke_keep pushing peers per room.
    choke: bool = True
    choke_keep: int = limits.MESH_CHOKE_KEEP
    #: Deliveries (decayed) a mesh peer needs before it may be choked (no choice on noise).
    choke_min_samples: float = 10.0
    # --- scoring (docs/mesh.md, "Scoring") ---
    #: Multiplier applied to every counter at each heartbeat.
    decay: float = 0.9
    #: Multiplier of the behaviour penalty at each heartbeat (abuse is remembered longer).
    penalty_decay: float = 0.98
    #: P1: points per second in the mesh, up to p1_cap seconds.
    w1: float = 0.02
    p1_cap_s: float = 60.0
    #: P2: points per first delivery (decayed), up to p2_cap deliveries.
    w2: float = 0.5
    p2_cap: float = 20.0
    #: P3: points lost per squared delivery deficit, once in the mesh p3_activation_s and the
    #: room carried at least p3_min_activity (decayed) messages; the quota is p3_ratio of them,
    #: at most p3_cap (so P3 alone prunes, at most -w3 * p3_cap**2, but never closes).
    w3: float = 4.0
    p3_activation_s: float = 5.0
    p3_min_activity: float = 5.0
    p3_ratio: float = 0.02
    p3_cap: float = 4.0
    #: P4: points lost per squared invalid message (decayed).
    w4: float = 20.0
    #: P7: points lost per squared behaviour penalty above p7_threshold.
    w7: float = 2.0
    p7_threshold: float = 1.0
    gossip_threshold: float = limits.MESH_GOSSIP_THRESHOLD
    graylist_threshold: float = limits.MESH_GRAYLIST_THRESHOLD
    close_threshold: float = limits.MESH_CLOSE_THRESHOLD
    accept_px_threshold: float = limits.MESH_ACCEPT_PX_THRESHOLD


# --- actions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeshSend:
    """Send a mesh frame (Graft, Prune, IHave, IWant, IDontWant) to peer."""

    peer: str
    frame: m.Frame


@dataclass(frozen=True, slots=True)
class MeshDial:
    """Open a connection to this candidate."""

    peer: str


@dataclass(frozen=True, slots=True)
class MeshClose:
    """Close the connection to peer with a reason code (low score, over the degree)."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class MeshServe:
    """Answer an IWANT: send these stored messages to peer as live chats."""

    peer: str
    ids: list[MsgId]


MeshAction = MeshSend | MeshDial | MeshClose | MeshServe

#: What `received` answers for most copies (no targets, no actions): one shared immutable
#: pair, not two new lists per duplicate.
_NOTHING: tuple[Sequence[str], Sequence[MeshAction]] = ((), ())


# --- per-peer state -------------------------------------------------------------


class _Stats:
    """What a peer did in one room (scoring counters)."""

    __slots__ = (
        "choked",
        "chokes_us",
        "deliveries",
        "failure",
        "first",
        "mesh_first",
        "mesh_since",
    )

    def __init__(self) -> None:
        #: When it joined our mesh of the room (None: not in it).
        self.mesh_since: float | None = None
        #: P2: first deliveries (decayed).
        self.first = 0.0
        #: P3: messages it delivered (first or duplicate) while in our mesh (decayed).
        self.deliveries = 0.0
        #: P3b: sticky penalty of a deficit it was pruned with (decayed).
        self.failure = 0.0
        #: First deliveries while in our mesh (decayed): its share of `deliveries` ranks it.
        self.mesh_first = 0.0
        #: We choked it (it announces instead of pushing: no delivery quota), it choked us.
        self.choked = False
        self.chokes_us = False


class _Peer:
    """One connected peer as the mesh sees it."""

    __slots__ = (
        "announced",
        "asked",
        "closing",
        "controls",
        "dontwant",
        "ihaves",
        "invalid",
        "meshed",
        "outbound",
        "penalty",
        "promises",
        "rooms",
        "served",
        "served_ids",
        "since",
        "stats",
    )

    def __init__(self, now: float, meshed: bool, outbound: bool) -> None:
        #: False for a direct connection (a conversation, a file): never meshed or closed.
        self.meshed = meshed
        #: We dialled it (D_out keeps some of these: inbound ones can be an attacker's).
        self.outbound = outbound
        self.since = now
        self.rooms: frozenset[str] = frozenset()
        self.stats: dict[str, _Stats] = {}
        #: P4 and P7 counters (decayed).
        self.invalid = 0.0
        self.penalty = 0.0
        #: Counters of the current heartbeat (bounds on what it makes us do).
        self.ihaves = 0
        self.asked = 0
        self.served = 0
        self.controls = 0
        #: Our IHAVEs to it: (heartbeat, room, label of the oldest history window announced);
        #: only ids of those windows are served (no per-id sets: a 10,000-node run holds this).
        self.announced: deque[tuple[int, str, int]] = deque()
        #: Ids served to it already (asking again is asking for the unannounced).
        self.served_ids: dict[MsgId, None] = {}
        #: Ids it told us not to send (oldest first, bounded).
        self.dontwant: dict[MsgId, None] = {}
        #: Ids we asked of it by IWANT -> by when they must arrive.
        self.promises: dict[MsgId, float] = {}
        #: A close was asked already.
        self.closing = False


class Mesh:
    """Mesh decisions of one node: who gets each room's messages eagerly, gossip, scores."""

    def __init__(
        self,
        me: str,
        rng: random.Random,
        have: Callable[[MsgId], bool],
        params: MeshParams = MeshParams(),
    ) -> None:
        self.me = me
        self.rng = rng
        self.have = have
        self.params = params
        self._peers: dict[str, _Peer] = {}
        #: Peers we could dial, oldest first (bounded by MESH_MAX_CANDIDATES).
        self._candidates: dict[str, float] = {}
        #: Dials asked for and not yet connected -> when asked.
        self._dialing: dict[str, float] = {}
        self._joined: set[str] = set()
        #: Joined room -> its mesh.
        self._mesh: dict[str, set[str]] = {}
        #: Joined room -> connected, mesh-eligible peers that hold it.
        self._room_peers: dict[str, set[str]] = {}
        #: Meshed connections whose first Rooms frame has not come yet: our own messages go
        #: to them too (they may well hold the room; else they drop it), so a message posted
        #: in the moment after a connect is not left to sync and shown out of order.
        self._unannounced: set[str] = set()
        #: Joined room -> cached eager targets (peer id, peer), rebuilt when the mesh changes.
        self._targets: dict[str, list[tuple[str, _Peer]]] = {}
        #: Joined room -> cached mesh peers that push to us (not choked by us): IDONTWANT to them.
        self._feeds: dict[str, list[str]] = {}
        #: Joined room -> message ids first seen per heartbeat, newest last (the mcache),
        #: each with the links its first copy crossed to reach us (0: our own).
        self._history: dict[str, deque[tuple[int, dict[MsgId, int]]]] = {}
        #: Joined room -> ids in its history (all windows).
        self._history_ids: dict[str, int] = {}
        #: Ids in some history window -> when first seen.
        self._seen_at: dict[MsgId, float] = {}
        #: Joined room -> messages it carried (decayed): the base of the P3 quota.
        self._activity: dict[str, float] = {}
        #: Ids asked by IWANT of anyone -> deadline (not asked twice meanwhile).
        self._wanted: dict[MsgId, float] = {}
        #: (peer, room) -> (backoff until, since): no GRAFT either way before `until`.
        self._backoff: dict[tuple[str, str], tuple[float, float]] = {}
        #: Disconnected peers -> (P4, P7, forget at): a reconnect does not wash a bad score.
        self._retained: dict[str, tuple[float, float, float]] = {}
        self._heartbeats = 0
        self._timer: float | None = None

    # --- connections and candidates -------------------------------------

    def connected(
        self, peer: str, now: float, *, mesh: bool = True, outbound: bool | None = None
    ) -> list[MeshAction]:
        """A connection to peer opened (mesh=False: a direct one, never counted or closed).

        outbound: whether we dialled it (default: whether the mesh asked for that dial).
        Its rooms come later by `peer_rooms`; grafting waits for them.
        """
        if peer in self._peers or peer == self.me:
            return []
        asked = self._dialing.pop(peer, None) is not None
        self._candidates.pop(peer, None)
        p = self._peers[peer] = _Peer(now, mesh, asked if outbound is None else outbound)
        kept = self._retained.pop(peer, None)
        if kept is not None and kept[2] > now:
            p.invalid, p.penalty = kept[0], kept[1]
        self._arm(now)
        if mesh:
            self._unannounced.add(peer)
        if (
            mesh
            and not p.outbound
            and self.connections() > self.params.d_hi + self.params.conn_margin
        ):
            # Full: an inbound dial gets peer exchange for our rooms (others to dial), then a close.
            out: list[MeshAction] = []
            for room in sorted(self._joined):
                out += self._prune(peer, room, now, px=True)
            return out + self._close(peer, p, Reason.MESH_FULL)
        return []

    def disconnected(self, peer: str, now: float) -> list[MeshAction]:
        """The connection to peer closed: drop it from every mesh; keep its penalties a while."""
        p = self._peers.pop(peer, None)
        self._unannounced.discard(peer)
        if p is None:
            return []
        for mid in p.promises:
            # It will not deliver what we asked of it: the next IHAVE may ask someone else.
            self._wanted.pop(mid, None)
        for room in p.rooms:
            peers = self._room_peers.get(room)
            if peers is not None:
                peers.discard(peer)
                if peer in self._mesh[room]:
                    self._mesh[room].discard(peer)
                    self._changed(room)
        if p.invalid > 0 or p.penalty > 0 or p.closing:
            # Kept (and not dialled) a while: penalties survive a reconnect, and a peer
            # we closed for the degree is not dialled again at once.
            keep = limits.MESH_RETAIN_S if p.invalid or p.penalty else self.params.prune_backoff_s
            self._retained.pop(peer, None)
            self._retained[peer] = (p.invalid, p.penalty, now + keep)
            while len(self._retained) > limits.MESH_MAX_RETAINED:
                del self._retained[next(iter(self._retained))]
        elif p.meshed:
            self.candidate(peer, now)  # it may come back: a peer worth dialling again
        return []

    def candidate(self, peer: str, now: float) -> None:
        """Remember a peer we could dial (discovery, presence, a PRUNE's peer exchange)."""
        if peer == self.me or peer in self._peers or peer in self._dialing:
            return
        if peer in self._retained:
            return  # penalised: not worth a dial
        self._candidates.pop(peer, None)  # re-insert: newest last
        self._candidates[peer] = now
        while len(self._candidates) > limits.MESH_MAX_CANDIDATES:
            del self._candidates[next(iter(self._candidates))]

    def drop_candidate(self, peer: str) -> None:
        """Forget a dial candidate (it left, or cannot be reached)."""
        self._candidates.pop(peer, None)
        self._dialing.pop(peer, None)

    # --- rooms ------------------------------------------------------------

    def join(self, room: str, now: float) -> list[MeshAction]:
        """We joined room: graft up to D connected peers that hold it."""
        if room in self._joined:
            return []
        self._joined.add(room)
        self._mesh[room] = set()
        self._room_peers[room] = {
            pid for pid, p in self._peers.items() if p.meshed and room in p.rooms
        }
        self._history[room] = deque([(self._heartbeats, {})])
        self._history_ids[room] = 0
        self._activity[room] = 0.0
        self._arm(now)
        return self._graft_more(room, now, self.params.d)

    def leave(self, room: str, now: float) -> list[MeshAction]:
        """We left room: PRUNE its mesh peers (short backoff) and forget its state."""
        if room not in self._joined:
            return []
        self._joined.discard(room)
        members = self._mesh.pop(room)
        self._room_peers.pop(room)
        self._changed(room)
        self._activity.pop(room)
        self._history_ids.pop(room)
        for _label, window in self._history.pop(room):
            for mid in window:
                self._seen_at.pop(mid, None)
        out: list[MeshAction] = []
        backoff = self.params.leave_backoff_s
        for pid in sorted(members):
            self._set_backoff(pid, room, now, backoff)
            st = self._peers[pid].stats.get(room)
            if st is not None:
                st.mesh_since = None
            out.append(MeshSend(pid, m.Prune(room=room, backoff_s=backoff)))
        return out

    def peer_rooms(self, peer: str, rooms: Iterable[str], now: float) -> list[MeshAction]:
        """Peer's Rooms frame: the rooms it holds now (replaces the last); graft it if needed."""
        p = self._peers.get(peer)
        if p is None:
            return []
        self._unannounced.discard(peer)
        held: set[str] = set()
        for room in rooms:
            if len(held) >= limits.MESH_MAX_PEER_ROOMS:
                break
            held.add(room)
        new = frozenset(held)
        old, p.rooms = p.rooms, new
        out: list[MeshAction] = []
        for room in old - new:
            p.stats.pop(room, None)
            if room in self._joined:
                self._room_peers[room].discard(peer)
                if peer in self._mesh[room]:
                    self._mesh[room].discard(peer)
                    self._changed(room)
        if not p.meshed:
            return out
        for room in sorted(new - old):
            if room not in self._joined:
                continue
            self._room_peers[room].add(peer)
            members = self._mesh[room]
            # Do not wait for the heartbeat: a small mesh takes a new peer at once.
            if len(members) < self.params.d_lo and self._graftable(peer, room, now):
                out += self._graft(peer, room, now)
        return out

    # --- traffic ------------------------------------------------------------

    def publish(self, room: str, msg: MsgId, now: float) -> list[str]:
        """Our own message of room: note it for gossip and return the peers to push it to.

        gossipsub v1.1's flood publishing: every connected peer of the room whose score is
        not under the gossip threshold, not only the mesh (one author's few messages, so
        it costs little, and ours get out even while our mesh is being rebuilt); also
        peers that have not yet said which rooms they hold.
        """
        if room not in self._joined:
            return self._fanout(room, now)
        self._note(room, msg, now)
        threshold = self.params.gossip_threshold
        peers = self._room_peers[room]
        if self._unannounced:
            peers = peers | self._unannounced
        return [pid for pid in sorted(peers) if self.score(pid, now) >= threshold]

    def _fanout(self, room: str, now: float) -> list[str]:
        """Peers for a message of a room we do not hold: D random peers that hold it."""
        pool = sorted(
            pid for pid, p in self._peers.items() if p.meshed and room in p.rooms and not p.closing
        )
        return self.rng.sample(pool, min(self.params.d, len(pool)))

    def received(
        self, peer: str, room: str, msg: MsgId, first: bool, now: float, hops: int = 1
    ) -> tuple[Sequence[str], Sequence[MeshAction]]:
        """A valid live message from peer: return (peers to forward it to, actions).

        first: it was new to us (stored just now); False for a duplicate (only scored).
        hops: the links this copy crossed to reach us; at max_hops it is not pushed on
        (only announced). The targets skip the sender, the author and peers that said
        IDONTWANT.
        """
        p = self._peers.get(peer)
        if room not in self._joined:
            return [], []
        # A first copy at the hop limit goes no further: it does not count as first for its
        # sender (a feed of long chains, or one that lies about relays, gets choked).
        last = first and 0 < self.params.max_hops <= hops
        if p is not None and msg[1] != peer:
            # Scored only as a forwarder: its own messages prove nothing about forwarding.
            st = p.stats.get(room)
            if st is None:
                st = p.stats[room] = _Stats()
            if first and not last:
                st.first += 1.0
            if st.mesh_since is not None and (first or msg in self._seen_at):
                st.deliveries += 1.0
                if first and not last:
                    st.mesh_first += 1.0
        if not first:
            return _NOTHING
        self._note(room, msg, now, hops)
        if self._wanted:
            self._wanted.pop(msg, None)
        if last:
            return _NOTHING  # announced to the peers we push to at the heartbeat
        author = msg[1]
        targets = [
            pid
            for pid, q in self._room_targets(room)
            if pid != peer and pid != author and msg not in q.dontwant
        ]
        return targets, []

    def dont_want(self, peer: str | None, room: str, msg: MsgId, now: float) -> list[MeshAction]:
        """A first copy arrived (before it is checked and stored): IDONTWANT to the mesh.

        For an adapter that forwards only after a delay (verify, commit): the mesh peers
        then skip sending us their copies. Never to the sender; empty if disabled.
        """
        if not self.params.idontwant or room not in self._joined:
            return []
        feeds = self._feeds.get(room)
        if feeds is None:
            feeds = self._feeds[room] = [
                pid for pid in sorted(self._mesh[room]) if not self._peers[pid].stats[room].choked
            ]
        frame = m.IDontWant(room=room, ids=[(msg[1], msg[2])])
        return [MeshSend(pid, frame) for pid in feeds if pid != peer]

    def invalid(self, peer: str, now: float) -> list[MeshAction]:
        """Peer sent invalid traffic (bad signature, malformed ...): P4, maybe a close."""
        p = self._peers.get(peer)
        if p is None:
            return []
        p.invalid += 1.0
        _warn((peer, "invalid"), "mesh: %s sent invalid traffic (score falls)", peer[:8])
        return self._maybe_close(peer, p, now)

    def frame(self, peer: str, frame: MeshFrame, now: float) -> list[MeshAction]:
        """A mesh frame from peer: what to answer (bounded; abuse lowers its score)."""
        p = self._peers.get(peer)
        if p is None or p.closing:
            return []
        if type(frame) is m.IDontWant:
            # The most frequent frame, first and without a score: honouring it costs bounded
            # memory and only spares the sender copies, whoever it is.
            self._on_idontwant(p, frame)
            return []
        if self.score(peer, now) < self.params.graylist_threshold:
            # Graylisted: ignored, and talking on regardless is abuse (else a flood that
            # got it graylisted would park its score above the close threshold for good).
            p.penalty += 1.0
            return self._maybe_close(peer, p, now)
        if isinstance(frame, m.IHave):
            out = self._on_ihave(peer, p, frame, now)
        elif isinstance(frame, m.IWant):
            out = self._on_iwant(peer, p, frame, now)
        else:
            p.controls += 1
            if p.controls > limits.MESH_MAX_CONTROL_PER_HEARTBEAT:
                p.penalty += 1.0
                _warn((peer, "control"), "mesh: %s floods GRAFT/PRUNE (ignored)", peer[:8])
                out = []
            elif isinstance(frame, m.Graft):
                out = self._on_graft(peer, p, frame.room, now)
            elif isinstance(frame, m.Prune):
                out = self._on_prune(peer, p, frame, now)
            else:
                self._on_choke(peer, p, frame.room, isinstance(frame, m.Choke))
                out = []
        return out + self._maybe_close(peer, p, now)

    # --- timer ------------------------------------------------------------

    def get_timer(self) -> float | None:
        """Return when `handle_timer` is next due, or None."""
        return self._timer

    def handle_timer(self, now: float) -> list[MeshAction]:
        """Heartbeat: keep every mesh within D_lo..D_hi, gossip, decay scores, dial or close."""
        if self._timer is None or now < self._timer:
            return []
        self._timer = now + self.params.heartbeat_s if self._peers or self._joined else None
        self._heartbeats += 1
        out: list[MeshAction] = []
        self._expire_promises(now)
        scores = {pid: self.score(pid, now) for pid in self._peers}
        for room in sorted(self._joined):
            out += self._maintain(room, scores, now)
            if self.params.choke:
                out += self._choke(room, now)
            out += self._gossip(room, scores)
            out += self._announce_held(room)
            window = self._history[room]
            window.append((self._heartbeats, {}))
            while len(window) > self.params.history_len:
                _label, old = window.popleft()
                self._history_ids[room] -= len(old)
                for mid in old:
                    self._seen_at.pop(mid, None)
        self._decay(now)
        out += self._degree(scores, now)
        for pid in sorted(scores):
            p = self._peers.get(pid)
            if p is not None and scores[pid] < self.params.close_threshold and not p.closing:
                out += self._close(pid, p, Reason.LOW_SCORE)
        return out

    # --- queries ------------------------------------------------------------

    def score(self, peer: str, now: float) -> float:
        """Return peer's score (0 for a peer not connected and not penalised)."""
        p = self._peers.get(peer)
        prm = self.params
        if p is None:
            kept = self._retained.get(peer)
            if kept is None:
                return 0.0
            return -prm.w4 * kept[0] ** 2 - prm.w7 * max(0.0, kept[1] - prm.p7_threshold) ** 2
        s = 0.0
        for room, st in p.stats.items():
            if st.mesh_since is not None:
                t = now - st.mesh_since
                s += prm.w1 * min(t, prm.p1_cap_s)
                s -= prm.w3 * self._deficit(room, st, t) ** 2
            s += prm.w2 * min(st.first, prm.p2_cap)
            s -= prm.w3 * st.failure
        s -= prm.w4 * p.invalid**2
        excess = p.penalty - prm.p7_threshold
        if excess > 0:
            s -= prm.w7 * excess**2
        return s

    def hops(self, msg: MsgId) -> int:
        """Return the links msg's first copy crossed to reach us, as long as it is in the
        gossip history (0: ours, or forgotten): the relay count of a copy we serve."""
        windows = self._history.get(msg[0])
        if windows is not None:
            for _label, window in windows:
                hops = window.get(msg)
                if hops is not None:
                    return hops
        return 0

    def recent(self, msg: MsgId, now: float) -> bool:
        """Return whether msg went through us less than MESH_IN_FLIGHT_S ago (may be in flight)."""
        seen = self._seen_at.get(msg)
        return seen is not None and now - seen < limits.MESH_IN_FLIGHT_S

    def mesh_peers(self, room: str) -> frozenset[str]:
        """Return the mesh peers of room."""
        return frozenset(self._mesh.get(room, ()))

    def forwards(self, peer: str) -> bool:
        """Return whether peer meets its delivery quota in every room where it is in our mesh.

        False: it looks like a non-forwarder (P3 deficit); the heartbeat prunes it.
        """
        p = self._peers.get(peer)
        if p is None:
            return True
        now = self._last_now()
        for room, st in p.stats.items():
            if st.mesh_since is not None and self._deficit(room, st, now - st.mesh_since) > 0:
                return False
        return True

    def connections(self) -> int:
        """Return the number of mesh-managed (not direct) connections."""
        return sum(1 for p in self._peers.values() if p.meshed)

    def candidates(self) -> list[str]:
        """Return the dial candidates, oldest first."""
        return list(self._candidates)

    # --- internals: messages ------------------------------------------------------

    def _note(self, room: str, msg: MsgId, now: float, hops: int = 0) -> None:
        """Remember a first-seen id and its hops in the gossip history (bounded per room)."""
        if msg in self._seen_at:
            return
        if msg[1] != self.me:
            # Our own never come back to us: counted, they would set every mesh peer a
            # delivery quota (P3) it cannot meet, and prune a mere listener.
            self._activity[room] += 1.0
        if self._history_ids[room] >= limits.MESH_MAX_HISTORY_IDS:
            return  # a very fast room: the rest is not gossiped (sync repairs it)
        self._history_ids[room] += 1
        self._history[room][-1][1][msg] = hops
        self._seen_at[msg] = now

    def _changed(self, room: str) -> None:
        """The mesh of room (or a choke in it) changed: rebuild the cached lists on next use."""
        self._targets.pop(room, None)
        self._feeds.pop(room, None)

    def _room_targets(self, room: str) -> list[tuple[str, _Peer]]:
        targets = self._targets.get(room)
        if targets is None:
            targets = self._targets[room] = [
                (pid, p)
                for pid in sorted(self._mesh[room])
                if not (p := self._peers[pid]).stats[room].chokes_us
            ]
        return targets

    def _deficit(self, room: str, st: _Stats, in_mesh_s: float) -> float:
        """Return the P3 delivery deficit of a mesh peer (0 until its quota applies)."""
        prm = self.params
        activity = self._activity.get(room, 0.0)
        if in_mesh_s < prm.p3_activation_s or activity < prm.p3_min_activity or st.choked:
            return 0.0
        return max(0.0, min(activity * prm.p3_ratio, prm.p3_cap) - st.deliveries)

    def _last_now(self) -> float:
        """Return the time of the last heartbeat (for queries without a now)."""
        if self._timer is None:
            return 0.0
        return self._timer - self.params.heartbeat_s

    # --- internals: frames --------------------------------------------------------

    def _on_graft(self, peer: str, p: _Peer, room: str, now: float) -> list[MeshAction]:
        if room not in self._joined:
            return [MeshSend(peer, m.Prune(room=room, backoff_s=self.params.leave_backoff_s))]
        members = self._mesh[room]
        if peer in members:
            return []
        if not p.meshed:
            return [MeshSend(peer, m.Prune(room=room))]  # a direct connection: never meshed
        if room not in p.rooms:
            # Its Rooms frame (checked by the adapter, e.g. a private room's key check value)
            # has not named the room yet, perhaps still on its way: it may try again soon.
            return [
                MeshSend(peer, m.Prune(room=room, backoff_s=limits.MESH_UNKNOWN_ROOM_BACKOFF_S))
            ]
        backoff = self._backoff.get((peer, room))
        if backoff is not None and now < backoff[0]:
            # gossipsub v1.1: a GRAFT in backoff costs P7, twice if right after the PRUNE.
            p.penalty += 1.0
            if now < backoff[1] + limits.MESH_GRAFT_FLOOD_S:
                p.penalty += 1.0
            _warn((peer, "graft"), "mesh: %s grafts %s during its backoff", peer[:8], room)
            return self._prune(peer, room, now, px=False)
        if self.score(peer, now) < 0:
            return self._prune(peer, room, now, px=False)
        if len(members) >= self.params.d_hi and not p.outbound:
            return self._prune(peer, room, now, px=True)
        self._add(peer, p, room, now)
        return []

    def _on_prune(self, peer: str, p: _Peer, frame: m.Prune, now: float) -> list[MeshAction]:
        room = frame.room
        if room not in self._joined:
            return []
        if peer in self._mesh[room]:
            self._remove(peer, p, room, now)
        self._set_backoff(peer, room, now, frame.backoff_s or self.params.prune_backoff_s)
        if frame.px and self.score(peer, now) >= self.params.accept_px_threshold:
            for cand in frame.px:
                self.candidate(cand, now)
        return []

    def _on_ihave(self, peer: str, p: _Peer, frame: m.IHave, now: float) -> list[MeshAction]:
        # Counted before the gossip threshold: a flood keeps costing while it is ignored.
        p.ihaves += 1
        if p.ihaves > limits.MESH_MAX_IHAVE_PER_HEARTBEAT:
            p.penalty += 1.0
            _warn((peer, "ihave"), "mesh: %s floods IHAVE (ignored)", peer[:8])
            return []
        if self.score(peer, now) < self.params.gossip_threshold:
            return []
        room = frame.room
        if room not in self._joined:
            return []
        budget = limits.MESH_MAX_IWANT_PER_HEARTBEAT - p.asked
        wanted: list[m.MeshId] = []
        deadline = now + limits.MESH_IWANT_FOLLOWUP_S
        for author, seq in frame.ids:
            if budget <= 0:
                break
            mid = (room, author, seq)
            if mid in self._seen_at or mid in self._wanted or self.have(mid):
                continue
            wanted.append((author, seq))
            self._wanted[mid] = deadline
            p.promises[mid] = deadline
            budget -= 1
        if not wanted:
            return []
        p.asked += len(wanted)
        st = p.stats.get(room)
        out: list[MeshAction] = []
        if st is not None and st.choked:
            # A peer we choked announces what our pushing peers did not bring: it is ahead.
            st.choked = False
            self._changed(room)
            out.append(MeshSend(peer, m.Unchoke(room=room)))
        return [*out, MeshSend(peer, m.IWant(room=room, ids=wanted))]

    def _on_iwant(self, peer: str, p: _Peer, frame: m.IWant, now: float) -> list[MeshAction]:
        room = frame.room
        if self.score(peer, now) < self.params.gossip_threshold:
            # Not served; asking for the never announced keeps costing while it is ignored.
            if any(not self._announced_to(p, (room, a, s)) for a, s in frame.ids):
                p.penalty += 1.0
            return []
        serve: list[MsgId] = []
        unannounced = 0
        for author, seq in frame.ids:
            mid = (room, author, seq)
            if mid in p.served_ids or not self._announced_to(p, mid):
                unannounced += 1  # never announced to it, or served once already
                continue
            if p.served >= limits.MESH_MAX_SERVE_PER_HEARTBEAT:
                continue  # over this heartbeat's budget: it may ask again at the next
            p.served_ids[mid] = None
            if self.have(mid):
                serve.append(mid)
                p.served += 1
        if unannounced:
            p.penalty += 1.0
            _warn((peer, "iwant"), "mesh: %s asks by IWANT for ids never announced", peer[:8])
        return [MeshServe(peer, serve)] if serve else []

    def _on_choke(self, peer: str, p: _Peer, room: str, choke: bool) -> None:
        """A mesh peer asks us to announce instead of pushing (or to push again)."""
        if room not in self._joined or peer not in self._mesh[room]:
            return
        st = p.stats[room]
        if st.chokes_us != choke:
            st.chokes_us = choke
            self._changed(room)

    def _choke(self, room: str, now: float) -> list[MeshAction]:
        """Episub: keep choke_keep pushing mesh peers, choke the one most often second."""
        prm = self.params
        members = self._mesh[room]
        pushing = [pid for pid in sorted(members) if not self._peers[pid].stats[room].choked]
        out: list[MeshAction] = []
        if len(pushing) < prm.choke_keep:
            # Too few feeds (pruned, gone): unchoke the best of the choked ones.
            choked = sorted(
                (pid for pid in members if self._peers[pid].stats[room].choked),
                key=lambda pid: (-self._share(pid, room), pid),
            )
            for pid in choked[: prm.choke_keep - len(pushing)]:
                self._peers[pid].stats[room].choked = False
                self._changed(room)
                out.append(MeshSend(pid, m.Unchoke(room=room)))
            return out
        if len(pushing) == prm.choke_keep:
            return out
        ready = [
            pid
            for pid in pushing
            if (st := self._peers[pid].stats[room]).deliveries >= prm.choke_min_samples
            and st.mesh_since is not None
            and now - st.mesh_since >= prm.p3_activation_s
        ]
        if ready:
            worst = min(ready, key=lambda pid: (self._share(pid, room), pid))
            self._peers[worst].stats[room].choked = True
            self._changed(room)
            out.append(MeshSend(worst, m.Choke(room=room)))
        return out

    def _share(self, peer: str, room: str) -> float:
        """Return the share of first copies among what a mesh peer delivered in room."""
        st = self._peers[peer].stats[room]
        return st.mesh_first / st.deliveries if st.deliveries > 0 else 0.0

    def _on_idontwant(self, p: _Peer, frame: m.IDontWant) -> None:
        if frame.room not in self._joined:
            return
        room = frame.room
        dontwant = p.dontwant
        for author, seq in frame.ids:
            dontwant[(room, author, seq)] = None
        while len(dontwant) > limits.MESH_MAX_DONTWANT_PER_PEER:
            del dontwant[next(iter(dontwant))]

    # --- internals: mesh changes --------------------------------------------------

    def _graftable(self, peer: str, room: str, now: float) -> bool:
        if self._peers[peer].closing:
            return False
        backoff = self._backoff.get((peer, room))
        if backoff is not None and now < backoff[0]:
            return False
        return self.score(peer, now) >= 0

    def _add(self, peer: str, p: _Peer, room: str, now: float) -> None:
        self._mesh[room].add(peer)
        self._changed(room)
        st = p.stats.get(room)
        if st is None:
            st = p.stats[room] = _Stats()
        st.mesh_since = now
        st.deliveries = st.mesh_first = 0.0
        st.choked = st.chokes_us = False

    def _remove(self, peer: str, p: _Peer, room: str, now: float) -> None:
        self._mesh[room].discard(peer)
        self._changed(room)
        st = p.stats.get(room)
        if st is not None and st.mesh_since is not None:
            # P3b: a deficit it leaves the mesh with sticks (decaying) to its score.
            cap = self.params.p3_cap**2
            st.failure = min(st.failure + self._deficit(room, st, now - st.mesh_since) ** 2, cap)
            st.mesh_since = None
            st.choked = st.chokes_us = False

    def _graft(self, peer: str, room: str, now: float) -> list[MeshAction]:
        self._add(peer, self._peers[peer], room, now)
        return [MeshSend(peer, m.Graft(room=room))]

    def _prune(self, peer: str, room: str, now: float, *, px: bool) -> list[MeshAction]:
        """Drop peer from room's mesh (if in it) and send it a PRUNE with backoff and PX."""
        p = self._peers[peer]
        if peer in self._mesh[room]:
            self._remove(peer, p, room, now)
        backoff = self.params.prune_backoff_s
        self._set_backoff(peer, room, now, backoff)
        exchange: list[str] = []
        if px:
            pool = sorted(self._room_peers[room] - {peer})
            if len(pool) > limits.MESH_MAX_PX:
                pool = self.rng.sample(pool, limits.MESH_MAX_PX)
            exchange = pool
        return [MeshSend(peer, m.Prune(room=room, px=exchange, backoff_s=backoff))]

    def _set_backoff(self, peer: str, room: str, now: float, seconds: float) -> None:
        key = (peer, room)
        self._backoff.pop(key, None)  # re-insert: newest last
        self._backoff[key] = (now + min(seconds, limits.MESH_MAX_BACKOFF_S), now)
        while len(self._backoff) > limits.MESH_MAX_BACKOFFS:
            del self._backoff[next(iter(self._backoff))]

    def _graft_more(self, room: str, now: float, want: int) -> list[MeshAction]:
        """Graft up to want more random eligible peers into room's mesh."""
        members = self._mesh[room]
        pool = sorted(
            pid
            for pid in self._room_peers[room]
            if pid not in members and self._graftable(pid, room, now)
        )
        out: list[MeshAction] = []
        for pid in self.rng.sample(pool, min(want, len(pool))):
            out += self._graft(pid, room, now)
        return out

    def _maintain(self, room: str, scores: dict[str, float], now: float) -> list[MeshAction]:
        """gossipsub v1.1's mesh maintenance of one room at a heartbeat."""
        prm = self.params
        members = self._mesh[room]
        out: list[MeshAction] = []
        for pid in sorted(members):
            if scores[pid] < 0:
                out += self._prune(pid, room, now, px=False)
        if len(members) < prm.d_lo:
            out += self._graft_more(room, now, prm.d - len(members))
        elif len(members) > prm.d_hi:
            ranked = sorted(members, key=lambda pid: (-scores[pid], pid))
            keep = ranked[: prm.d_score]
            rest = ranked[prm.d_score :]
            self.rng.shuffle(rest)
            keep += rest[: prm.d - len(keep)]
            dropped = rest[prm.d - prm.d_score :]
            # Keep D_out outbound peers: an attacker that dials us cannot fill the mesh.
            outbound = sum(1 for pid in keep if self._peers[pid].outbound)
            for pid in [q for q in dropped if self._peers[q].outbound]:
                if outbound >= prm.d_out:
                    break
                inbound = [q for q in keep[prm.d_score :] if not self._peers[q].outbound]
                if not inbound:
                    break
                keep.remove(inbound[-1])
                dropped.remove(pid)
                dropped.append(inbound[-1])
                keep.append(pid)
                outbound += 1
            for pid in sorted(dropped):
                out += self._prune(pid, room, now, px=True)
        if len(members) >= prm.d_lo:
            outbound = sum(1 for pid in members if self._peers[pid].outbound)
            if outbound < prm.d_out:
                pool = sorted(
                    pid
                    for pid in self._room_peers[room]
                    if pid not in members
                    and self._peers[pid].outbound
                    and self._graftable(pid, room, now)
                )
                for pid in pool[: prm.d_out - outbound]:
                    out += self._graft(pid, room, now)
        return out

    def _gossip(self, room: str, scores: dict[str, float]) -> list[MeshAction]:
        """IHAVE the ids of the last history_gossip heartbeats to D_lazy non-mesh room peers.

        Mesh peers that choked us get them too (we push no more to them: the announcement
        is how they fetch what their pushing peers lost, and notice those lag).
        """
        prm = self.params
        windows = list(self._history[room])[-prm.history_gossip :]
        ids = [mid for _label, w in windows for mid in w]
        if not ids:
            return []
        oldest = windows[0][0]
        if len(ids) > limits.MESH_MAX_IHAVE_IDS:
            ids = self.rng.sample(ids, limits.MESH_MAX_IHAVE_IDS)
        frame = m.IHave(room=room, ids=[(a, s) for _r, a, s in ids])
        members = self._mesh[room]
        targets = [pid for pid in sorted(members) if self._peers[pid].stats[room].chokes_us]
        pool = sorted(
            pid
            for pid in self._room_peers[room]
            if pid not in members and scores.get(pid, 0.0) >= prm.gossip_threshold
        )
        targets += self.rng.sample(pool, min(prm.d_lazy, len(pool)))
        out: list[MeshAction] = []
        for pid in targets:
            # Remembered by window, not by id: the windows from `oldest` on, as they are now.
            self._peers[pid].announced.append((self._heartbeats, room, oldest))
            out.append(MeshSend(pid, frame))
        return out

    def _announce_held(self, room: str) -> list[MeshAction]:
        """IHAVE what the hop limit kept us from pushing, to the mesh peers we push to.

        They count on our pushes and get no other IHAVE from us: where every feed of a
        node held a message back, only this (or sync, seconds later) brings it.
        """
        limit = self.params.max_hops
        if limit <= 0:
            return []
        # Since the last heartbeat: the newest window, which keeps each id's hops (only what
        # is in the history can be served when asked for).
        newest, window = self._history[room][-1]
        held = [(a, s) for (_r, a, s), hops in window.items() if hops >= limit]
        if not held:
            return []
        frame = m.IHave(room=room, ids=held[: limits.MESH_MAX_IHAVE_IDS])
        out: list[MeshAction] = []
        for pid, p in self._room_targets(room):
            p.announced.append((self._heartbeats, room, newest))
            out.append(MeshSend(pid, frame))
        return out

    def _announced_to(self, p: _Peer, mid: MsgId) -> bool:
        """Return whether mid is in a history window announced to p (in an IHAVE to it)."""
        if mid not in self._seen_at:
            return False
        room = mid[0]
        label = next((lb for lb, w in self._history[room] if mid in w), None)
        if label is None:
            return False
        # Windows created after an IHAVE (label >= its heartbeat) were not in it.
        return any(r == room and oldest <= label < hb for hb, r, oldest in p.announced)

    # --- internals: heartbeat bookkeeping -----------------------------------------

    def _arm(self, now: float) -> None:
        if self._timer is None:
            self._timer = now + self.params.heartbeat_s

    def _expire_promises(self, now: float) -> None:
        """A peer that did not deliver what it announced and we asked for: P7 (once a beat)."""
        for pid, p in self._peers.items():
            if not p.promises:
                continue
            broken = [mid for mid, due in p.promises.items() if due <= now]
            if not broken:
                continue
            for mid in broken:
                del p.promises[mid]
            kept = [mid for mid in broken if mid in self._seen_at or self.have(mid)]
            if len(kept) < len(broken):
                p.penalty += 1.0
                _warn((pid, "promise"), "mesh: %s did not deliver what it announced", pid[:8])
        if self._wanted:
            for mid in [mid for mid, due in self._wanted.items() if due <= now]:
                del self._wanted[mid]

    def _decay(self, now: float) -> None:
        prm = self.params
        d = prm.decay
        for room in self._activity:
            self._activity[room] *= d
        hb = self._heartbeats
        for p in self._peers.values():
            p.ihaves = p.asked = p.served = p.controls = 0
            p.invalid = p.invalid * d if p.invalid > 0.01 else 0.0
            p.penalty = p.penalty * prm.penalty_decay if p.penalty > 0.01 else 0.0
            for st in p.stats.values():
                st.first *= d
                st.deliveries *= d
                st.mesh_first *= d
                # Sticky: a pruned non-forwarder stays ungraftable for minutes, not seconds.
                st.failure = st.failure * prm.penalty_decay if st.failure > 0.01 else 0.0
            announced = p.announced
            while announced and announced[0][0] <= hb - prm.history_len:
                announced.popleft()
            if p.served_ids:  # only ids still in the history can be asked (and refused)
                p.served_ids = {mid: None for mid in p.served_ids if mid in self._seen_at}
            if p.dontwant:
                # Only a first copy is forwarded: once we saw an id, its IDONTWANT is spent
                # (a 10,000-node room would otherwise hold 1000 ids per peer per node).
                seen = self._seen_at
                p.dontwant = {mid: None for mid in p.dontwant if mid not in seen}
        if self._backoff and hb % 16 == 0:
            for key in [k for k, (until, _s) in self._backoff.items() if until <= now]:
                del self._backoff[key]
        if self._retained and hb % 16 == 0:
            for pid in [k for k, v in self._retained.items() if v[2] <= now]:
                del self._retained[pid]

    def _degree(self, scores: dict[str, float], now: float) -> list[MeshAction]:
        """Dial candidates while under D_lo; close extra non-mesh connections above D_hi."""
        prm = self.params
        out: list[MeshAction] = []
        for pid in [k for k, t in self._dialing.items() if t + limits.MESH_DIAL_TIMEOUT_S <= now]:
            del self._dialing[pid]  # never connected: dropped (discovery brings it back)
        meshed = [pid for pid, p in self._peers.items() if p.meshed and not p.closing]
        # A room short of mesh peers dials only up to D_hi connections (a small room
        # must not make us dial everyone on the LAN).
        under = len(meshed) < prm.d_lo or (
            len(meshed) < prm.d_hi
            and any(len(self._mesh[room]) < prm.d_lo for room in self._joined)
        )
        if under and self._joined and self._candidates:
            # Dials in flight count: they must not carry us past D_hi when they all connect.
            room_left = prm.d_hi - len(meshed)
            slots = min(limits.MESH_MAX_DIALS_PER_HEARTBEAT, room_left) - len(self._dialing)
            if slots > 0:
                pool = sorted(self._candidates)
                for pid in self.rng.sample(pool, min(slots, len(pool))):
                    del self._candidates[pid]
                    self._dialing[pid] = now
                    out.append(MeshDial(pid))
        limit = prm.d_hi + prm.conn_margin
        if len(meshed) > limit:
            in_mesh: set[str] = set().union(*self._mesh.values()) if self._mesh else set()
            closable = sorted(
                (scores.get(pid, 0.0), pid)
                for pid in meshed
                if pid not in in_mesh and now - self._peers[pid].since >= limits.MESH_CONN_GRACE_S
            )
            for _score, pid in closable[: len(meshed) - limit]:
                out += self._close(pid, self._peers[pid], Reason.MESH_FULL)
        return out

    def _maybe_close(self, peer: str, p: _Peer, now: float) -> list[MeshAction]:
        if p.closing or self.score(peer, now) >= self.params.close_threshold:
            return []
        _warn((peer, "close"), "mesh: closing %s: its score fell below the threshold", peer[:8])
        return self._close(peer, p, Reason.LOW_SCORE)

    def _close(self, peer: str, p: _Peer, reason: str) -> list[MeshAction]:
        """Ask for a close once; drop it from every mesh at once (no more sends to it)."""
        p.closing = True
        for room in p.rooms:
            peers = self._room_peers.get(room)
            if peers is not None:
                peers.discard(peer)  # no more gossip or grafts either
            members = self._mesh.get(room)
            if members is not None and peer in members:
                members.discard(peer)
                self._changed(room)
                st = p.stats.get(room)
                if st is not None:
                    st.mesh_since = None
        return [MeshClose(peer, reason)]
