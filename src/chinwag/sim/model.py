"""The simulated clock and network, and the adapter that drives the real Replica and Mesh.

Theory of operation
-------------------
Time is an integer of milliseconds (`tick`). Events wait in buckets, one list
per tick, and a heap of the ticks that have a bucket (`heapq` orders the ticks,
each bucket keeps insertion order): this is a heapq event queue in which the
millions of events of one millisecond cost one heap operation.

A node is what history.py is for a real chinwag: a store (here a bytearray
indexed by message number: 0 = not held, else 1 + the hop count it arrived with)
and the real `Replica` and `Mesh`, built as history.py builds them. The node
tells the replica what was stored (`accept`, `changed`, `committed`) and carries
out the typed actions the replica and the mesh answer with (send, flood, push,
disconnect, dial, serve). Every decision is theirs; the simulator decides only
what the world does: latency, loss, churn, partitions, who is a freeloader.

The network is TCP-like: a connection delivers its frames in order, after the
link's one-way latency. Loss is per transmission and is repaired by
retransmission (a lost frame arrives one retransmission timeout later, doubling
per further loss, and the frames behind it wait: head-of-line blocking), as on
a real TCP connection, where a lost segment never loses a frame of a live
connection. Frames are lost only when a connection closes (churn, partitions,
a disconnect), which is what the replica's sync repairs.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import heapq
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chinwag.limits import MAX_PEERS, MAX_RELAYS, MESH_MAX_HOPS
from chinwag.protocol import messages as m
from chinwag.protocol import replica as rp
from chinwag.protocol.mesh import (
    Mesh,
    MeshClose,
    MeshDial,
    MeshParams,
    MeshSend,
    MeshServe,
    MsgId,
)
from chinwag.protocol.replica import Replica
from chinwag.protocol.sync import SyncState

#: The one room every simulated node is in.
ROOM = "general"

# Event kinds (the first item of an event tuple).
E_CHAT = 0  # (kind, src, dst, conn, msg, hops, hist)
E_FRAME = 1  # (kind, src, dst, conn, frame)
E_TIMER = 2  # (kind, node, token)
E_CONNECT = 3  # (kind, a, b, latency): a's dial of b completes its handshake
E_DIAL_FAIL = 4  # (kind, a, b)
E_PUBLISH = 5  # (kind,)
E_LEAVE = 6  # (kind, node)
E_BACK = 7  # (kind, node)
E_SPLIT = 8  # (kind,)
E_HEAL = 9  # (kind,)

#: Bytes a frame costs on the wire beyond its encoding: 4-byte length prefix,
#: 2-byte Noise length, 16-byte AEAD tag.
FRAME_OVERHEAD = 22
#: Milliseconds of the smallest TCP retransmission timeout (Linux's RTO_MIN).
RTO_MIN_MS = 200
#: Milliseconds a dial to an unreachable peer takes to fail (limits.CONNECT_TIMEOUT_S).
DIAL_TIMEOUT_MS = 3_000
#: Most hops recorded (the store keeps 1 + hops in a byte).
MAX_HOPS = 254
#: Latency models (`--latency-model`): `link` draws each link's latency uniformly and
#: independently; `geo` derives it from the distance between two points on a plane.
LATENCY_MODELS = ("link", "geo")
#: Share of a geo link's latency drawn at random around its distance-derived value (±).
GEO_JITTER = 0.05
#: The geo plane: a unit square, so the largest distance is its diagonal.
GEO_MAX_DISTANCE = math.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class Params:
    """One simulation's parameters (the command line's flags)."""

    nodes: int = 200
    messages: int = 50
    authors: int = 100
    loss: float = 0.0
    churn: float = 0.0
    churn_down_s: float = 5.0
    non_forwarding: float = 0.0
    seed: int = 1
    rate: float = 100.0
    size: int = 200
    latency_ms: tuple[int, int] = (10, 150)
    #: How a link's latency is drawn (LATENCY_MODELS; docs/mesh.md, "Latency models and hops").
    latency_model: str = "geo"
    partition_s: float = 0.0
    candidates: int = 8
    warmup_s: float = 5.0
    drain_s: float = 60.0
    #: Send IDONTWANT on a new live copy, as history.py does (off: a faster run, see docs).
    idontwant: bool = True
    #: Links after which a live copy is announced, not pushed (MeshParams.max_hops; 0: none).
    max_hops: int = MESH_MAX_HOPS


def _true() -> bool:
    return True


class _View:
    """The replica's RoomView: one public room that every node holds; no conversations."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    def peers(self) -> Sequence[str]:
        return self.node.peer_names

    def rooms(self) -> list[str]:
        return [ROOM]

    def joined(self, room: str) -> bool:
        return room == ROOM

    def dm_peer(self, room: str) -> str | None:
        return None

    def peer_in(self, peer_id: str, room: str) -> bool:
        return True

    def holds_vector(self, room: str, peer_id: str) -> bool:
        return True

    def saved_receipts(self, room: str) -> dict[str, dict[str, int]]:
        return {}


@dataclass(eq=False)
class Node:
    """One simulated chinwag: a store and the real Replica and Mesh (like history.py)."""

    idx: int
    name: str
    store: bytearray
    forwards: bool = True
    up: bool = True
    #: Partition side (0 or 1).
    side: int = 0
    #: Peer index -> [connection id, one-way latency in ticks, tick the last frame we sent arrives].
    conns: dict[int, list[int]] = field(default_factory=dict)
    #: Peer id -> the same lists (the replica and mesh name peers by id), with the index last.
    by_name: dict[str, list[int]] = field(default_factory=dict)
    #: Peer ids with an open connection, oldest first (the replica's view.peers()).
    peer_names: tuple[str, ...] = ()
    #: Dials in progress (peer indexes).
    dialing: set[int] = field(default_factory=set)
    timer_tick: int | None = None
    timer_token: int = 0
    #: Whether this node leaves and comes back during the run.
    churns: bool = False
    #: [leave tick, back tick] of each absence.
    away: list[tuple[int, int]] = field(default_factory=list)
    #: Position on the unit square (the geo latency model; 0, 0 under the link model).
    x: float = 0.0
    y: float = 0.0
    sync: SyncState = field(default_factory=SyncState)
    replica: Replica = field(init=False)
    mesh: Mesh = field(init=False)


class Sim:
    """A network of simulated nodes; `run()` plays the scenario and returns the figures."""

    def __init__(self, params: Params) -> None:
        self.p = params
        self.rng = random.Random(params.seed)
        self.net_rng = random.Random(params.seed * 7_919 + 1)
        self.tick = 0
        self.now = 0.0
        self._ticks: list[int] = []
        self._buckets: dict[int, list[tuple[Any, ...]]] = {}
        self._next_conn = 1
        n = params.nodes
        # Peer ids shaped like real ones (52 base32 characters), distinct in the 8 that logs show.
        self.names = [
            base64.b32encode(hashlib.sha256(b"node %d" % i).digest()).decode().lower()[:52]
            for i in range(n)
        ]
        self.index = {name: i for i, name in enumerate(self.names)}
        if params.latency_model not in LATENCY_MODELS:
            raise ValueError(f"latency model must be one of {LATENCY_MODELS}")
        self.nodes = [Node(i, self.names[i], bytearray(params.messages)) for i in range(n)]
        if params.latency_model == "geo":
            # Drawn only under geo, so a link-model run keeps its network draws (and figures).
            rnd = self.net_rng.random
            for node in self.nodes:
                node.x = rnd()
                node.y = rnd()
        # The messages: author index, seq, live chats (by relay count), history chat, wire
        # bytes, publish tick.
        self.msg_author: list[int] = []
        self.msg_seq: list[int] = []
        self.msg_chat: list[list[m.Chat]] = []
        self.msg_hist: list[m.Chat] = []
        self.msg_tick: list[int] = []
        self.msg_id: list[MsgId] = []
        self.msg_bytes = 0
        self.msg_by_key: dict[tuple[str, int], int] = {}
        self.chat_msg: dict[int, int] = {}  # id(chat) -> message number (chats live all run)
        # Figures.
        self.delivered = 0
        self.target = 0
        self.duplicates = 0
        self.receptions = 0
        self.latency_hist: list[int] = []
        self.hops_hist = [0] * (MAX_HOPS + 2)
        self.within_5s = 0
        self.arrivals: dict[int, list[int]] = {}  # churning node -> arrival tick per message
        self.bytes_chat = 0
        self.bytes_sync = 0
        self.bytes_mesh = 0
        self.frames_sync = 0
        self.frames_mesh = 0
        self.conn_max = 0
        self.dials = 0
        self.closes = 0
        self.events = 0
        self.partitioned = False
        self._last_frame: object = None
        self._last_frame_bytes = 0
        rng = self.rng
        self.authors = rng.sample(range(n), min(params.authors, n))
        freeloaders = set(rng.sample(range(n), round(params.non_forwarding * n)))
        churners = rng.sample(range(n), round(params.churn * n))
        for node in self.nodes:
            node.forwards = node.idx not in freeloaders
            node.side = rng.randrange(2)
            self._boot(node, random.Random(params.seed * 1_000_003 + node.idx))
        self.start_tick = int(params.warmup_s * 1000)
        span = params.messages / params.rate if params.rate > 0 else 0.0
        self.end_publish = self.start_tick + int(span * 1000)
        # Publish times: a Poisson process of the given rate, starting after the warm-up.
        t = float(self.start_tick)
        self.publish_ticks: list[int] = []
        for _ in range(params.messages):
            self.publish_ticks.append(int(t))
            t += rng.expovariate(params.rate) * 1000 if params.rate > 0 else 0.0
        self._published = 0
        if self.publish_ticks:
            self._at(self.publish_ticks[0], (E_PUBLISH,))
        traffic_ms = max(1, (self.publish_ticks[-1] if self.publish_ticks else 0) - self.start_tick)
        down = int(params.churn_down_s * 1000)
        for i in churners:
            node = self.nodes[i]
            node.churns = True
            self.arrivals[i] = [-1] * params.messages
            leave = self.start_tick + rng.randrange(traffic_ms)
            node.away.append((leave, leave + down))
            self._at(leave, (E_LEAVE, i))
            self._at(leave + down, (E_BACK, i))
        if params.partition_s > 0:
            split = self.start_tick + min(1_000, traffic_ms // 4)
            self._at(split, (E_SPLIT,))
            self._at(split + int(params.partition_s * 1000), (E_HEAL,))

    # --- nodes ----------------------------------------------------------

    def _boot(self, node: Node, mesh_rng: random.Random) -> None:
        """(Re)start a node as history.py does: a Replica over its store, a Mesh, its room."""
        sync = node.sync

        def have(msg: MsgId) -> bool:
            return sync.holds(*msg)  # as history.py answers the mesh

        node.mesh = Mesh(
            node.name,
            mesh_rng,
            have,
            MeshParams(idontwant=self.p.idontwant, max_hops=self.p.max_hops),
        )
        node.replica = Replica(node.name, _View(node), sync, (), node.mesh)
        node.replica.start(self.now)
        node.up = True
        out: list[Any] = list(node.mesh.join(ROOM, self.now))
        # Discovery: a few random peers heard (like LAN beacons) feed the candidate list;
        # the mesh dials them.
        for peer in self._random_peers(node, self.p.candidates):
            node.mesh.candidate(self.names[peer], self.now)
        self._do(node, out)
        self._rearm(node)

    def _random_peers(self, node: Node, k: int) -> list[int]:
        n = self.p.nodes
        out: list[int] = []
        for _ in range(4 * k):
            if len(out) >= k:
                break
            j = self.rng.randrange(n)
            if j != node.idx and j not in out:
                out.append(j)
        return out

    # --- the event queue --------------------------------------------------

    def _at(self, tick: int, event: tuple[Any, ...]) -> None:
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = []
            heapq.heappush(self._ticks, tick)
        bucket.append(event)

    def run(self) -> dict[str, Any]:
        """Play the scenario to its end; return the figures (see docs/mesh.md)."""
        started = time.perf_counter()
        # Millions of long-lived objects and a flood of short-lived event tuples: the cyclic
        # collector would rescan the former again and again (a quarter of the run's time).
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(100_000, 50, 1_000)
        try:
            self._loop()
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
        return self.figures(time.perf_counter() - started)

    def _loop(self) -> None:
        """Process events in time order until everything is delivered or the drain ends."""
        p = self.p
        last = self.publish_ticks[-1] if self.publish_ticks else self.start_tick
        last = max(last, *(b for node in self.nodes for _, b in node.away), self.start_tick)
        end = last + int(p.drain_s * 1000)
        heal_end = self.start_tick + int(p.partition_s * 1000) + 2_000
        ticks, buckets = self._ticks, self._buckets
        while ticks:
            t = heapq.heappop(ticks)
            if t > end:
                break
            bucket = buckets.pop(t)
            self.tick = t
            self.now = t / 1000.0
            self.events += len(bucket)
            for ev in bucket:
                kind = ev[0]
                if kind == E_CHAT:
                    self._on_chat(ev)
                elif kind == E_FRAME:
                    self._on_frame(ev)
                elif kind == E_TIMER:
                    self._on_timer(ev)
                else:
                    self._on_world(ev)
            if (
                self.delivered >= self.target
                and self._published >= p.messages
                and t >= last
                and t >= heal_end
            ):
                break

    # --- the world --------------------------------------------------------

    def _on_world(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == E_CONNECT:
            self._on_connect(ev[1], ev[2], ev[3])
        elif kind == E_DIAL_FAIL:
            node = self.nodes[ev[1]]
            node.dialing.discard(ev[2])
            if node.up:
                node.mesh.drop_candidate(self.names[ev[2]])
                self._rearm(node)
        elif kind == E_PUBLISH:
            self._publish()
        elif kind == E_LEAVE:
            self._leave(self.nodes[ev[1]])
        elif kind == E_BACK:
            node = self.nodes[ev[1]]
            self._boot(node, random.Random(self.p.seed * 1_000_003 + node.idx + self.tick))
        elif kind == E_SPLIT:
            self.partitioned = True
            for node in self.nodes:
                for peer in [j for j in node.conns if self.nodes[j].side != node.side]:
                    self._close(node, peer)
        elif kind == E_HEAL:
            self.partitioned = False
            # Beacons are heard again across the healed link: fresh candidates for everyone.
            for node in self.nodes:
                if node.up:
                    for peer in self._random_peers(node, self.p.candidates):
                        node.mesh.candidate(self.names[peer], self.now)
                    self._rearm(node)

    def _reachable(self, a: Node, b: Node) -> bool:
        return b.up and a.up and not (self.partitioned and a.side != b.side)

    def _dial(self, node: Node, peer: int) -> None:
        if peer == node.idx or peer in node.conns or peer in node.dialing:
            return
        node.dialing.add(peer)
        self.dials += 1
        other = self.nodes[peer]
        if not self._reachable(node, other):
            self._at(self.tick + DIAL_TIMEOUT_MS, (E_DIAL_FAIL, node.idx, peer))
            return
        lat = self.link_latency(node, other)
        # TCP connect plus the Noise XX handshake: about three one-way trips.
        self._at(self.tick + 3 * lat, (E_CONNECT, node.idx, peer, lat))

    def link_latency(self, a: Node, b: Node) -> int:
        """One-way latency in ms, within latency_ms, of a new connection between a and b."""
        lo, hi = self.p.latency_ms
        if self.p.latency_model != "geo":
            return self.net_rng.randint(lo, hi)
        # Distance on the plane, scaled into [lo, hi]: the triangle inequality holds, as it
        # roughly does on the Internet; the jitter stands for routes that are not straight.
        dist = math.hypot(a.x - b.x, a.y - b.y)
        base = lo + (hi - lo) * dist / GEO_MAX_DISTANCE
        lat = round(base * (1.0 + self.net_rng.uniform(-GEO_JITTER, GEO_JITTER)))
        return min(hi, max(lo, lat))

    def _on_connect(self, a: int, b: int, lat: int) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        na.dialing.discard(b)
        if not na.up:
            return
        if not self._reachable(na, nb) or len(nb.conns) >= MAX_PEERS:
            na.mesh.drop_candidate(nb.name)
            self._rearm(na)
            return
        if b in na.conns:
            return  # both dialled: one connection per pair is kept
        cid = self._next_conn
        self._next_conn += 1
        na.conns[b] = na.by_name[nb.name] = [cid, lat, 0, b]
        nb.conns[a] = nb.by_name[na.name] = [cid, lat, 0, a]
        na.peer_names = (*na.peer_names, nb.name)
        nb.peer_names = (*nb.peer_names, na.name)
        self.conn_max = max(self.conn_max, len(na.conns), len(nb.conns))
        for x, y in ((na, nb), (nb, na)):
            out: list[Any] = list(x.mesh.connected(y.name, self.now))
            out += x.replica.peer_opened(y.name, self.now)
            # Its Rooms frame (sent first on every connection) names the room.
            out += x.mesh.peer_rooms(y.name, (ROOM,), self.now)
            self._do(x, out)
        self._rearm(na)
        self._rearm(nb)

    def _close(self, node: Node, peer: int) -> None:
        """Close the connection node<->peer: both sides hear of it; what was in flight is lost."""
        other = self.nodes[peer]
        if peer not in node.conns:
            return
        self.closes += 1
        del node.conns[peer]
        del node.by_name[other.name]
        other.conns.pop(node.idx, None)
        other.by_name.pop(node.name, None)
        node.peer_names = tuple(n for n in node.peer_names if n != other.name)
        other.peer_names = tuple(n for n in other.peer_names if n != node.name)
        for x, y in ((node, other), (other, node)):
            if x.up:
                x.replica.peer_closed(y.name)
                self._do(x, list(x.mesh.disconnected(y.name, self.now)))
                self._rearm(x)

    def _leave(self, node: Node) -> None:
        """The node goes away (its process stops): its peers see the connections close."""
        if not node.up:
            return
        node.up = False
        for peer in list(node.conns):
            self._close(node, peer)
        node.dialing.clear()
        node.replica.close()
        node.timer_token += 1
        node.timer_tick = None

    # --- timers -------------------------------------------------------------

    def _rearm(self, node: Node) -> None:
        """Arm the node's one timer at the earlier of its replica's and its mesh's."""
        if not node.up:
            return
        due = node.replica.get_timer()
        mesh_due = node.mesh.get_timer()
        if mesh_due is not None and (due is None or mesh_due < due):
            due = mesh_due
        if due is None:
            return
        tick = int(due * 1000) + 1
        if tick <= self.tick:
            tick = self.tick + 1
        armed = node.timer_tick
        if armed is not None and self.tick < armed <= tick:
            return  # an earlier firing re-arms
        node.timer_token += 1
        node.timer_tick = tick
        self._at(tick, (E_TIMER, node.idx, node.timer_token))

    def _on_timer(self, ev: tuple[Any, ...]) -> None:
        node = self.nodes[ev[1]]
        if ev[2] != node.timer_token or not node.up:
            return
        node.timer_tick = None
        now = self.now
        due = node.replica.get_timer()
        if due is not None and due <= now:
            self._do(node, list(node.replica.handle_timer(now)))
        due = node.mesh.get_timer()
        if due is not None and due <= now and node.up:
            self._do(node, list(node.mesh.handle_timer(now)))
        self._rearm(node)

    # --- traffic --------------------------------------------------------------

    def _publish(self) -> None:
        """The next message: a random author that is up writes it."""
        k = self._published
        self._published += 1
        if self._published < len(self.publish_ticks):
            self._at(max(self.tick, self.publish_ticks[self._published]), (E_PUBLISH,))
        ups = [a for a in self.authors if self.nodes[a].up]
        if not ups:  # every author is away: another node that is up speaks
            ups = [node.idx for node in self.nodes if node.up]
        author = self.nodes[self.rng.choice(ups)]
        seq = author.replica.next_seq(ROOM)
        body = b"%d:%s:" % (k, author.name.encode()) + b"x" * self.p.size
        chat = m.Chat(body=body, sig=bytes(64))
        hist = m.Chat(body=body, sig=bytes(64), hist=True)
        self.msg_author.append(author.idx)
        self.msg_seq.append(seq)
        self.msg_chat.append([chat])
        self.msg_hist.append(hist)
        self.msg_tick.append(self.tick)
        self.msg_id.append((ROOM, author.name, seq))
        self.msg_by_key[(author.name, seq)] = k
        self.chat_msg[id(chat)] = k
        self.chat_msg[id(hist)] = k
        if not self.msg_bytes:  # as relayed (most copies are): `relays` takes 8 bytes more
            self.msg_bytes = len(m.encode(self._chat(k, 1))) + FRAME_OVERHEAD
        self.target += self.p.nodes - 1
        author.store[k] = 1
        rep = author.replica
        out: list[Any] = list(rep.accept(ROOM, author.name, seq))
        out += rep.changed(((ROOM, author.name),), self.now)
        out += self._committed(author, k, None, True)
        self._do(author, out)
        self._rearm(author)

    def _chat(self, k: int, relays: int) -> m.Chat:
        """Return live message k as a copy that passed through `relays` nodes (made once)."""
        chats = self.msg_chat[k]
        while len(chats) <= relays:
            chat = m.Chat(body=chats[0].body, sig=chats[0].sig, relays=len(chats))
            self.chat_msg[id(chat)] = k
            chats.append(chat)
        return chats[relays]

    def _committed(self, node: Node, k: int, via: str | None, live: bool) -> list[Any]:
        """Tell the replica message k is committed (it asks its mesh whom to forward it to)."""
        # node.store[k] is 1 + the links our copy crossed: the relays of the copy we pass on.
        chat = self._chat(k, min(node.store[k] - 1, MAX_RELAYS)) if live else self.msg_hist[k]
        _room, author, seq = self.msg_id[k]
        return list(node.replica.committed(chat, ROOM, author, seq, via, live, _true, self.now))

    def _on_chat(self, ev: tuple[Any, ...]) -> None:
        _, s, d, conn, k, hops, hist = ev
        node = self.nodes[d]
        c = node.conns.get(s)
        if c is None or c[0] != conn:
            return  # the connection closed meanwhile: the frame is lost
        self.receptions += 1
        src = self.names[s]
        if node.store[k]:
            self.duplicates += 1
            if not hist:  # a live copy: the mesh scores its delivery (as history.py)
                _room, author, seq = self.msg_id[k]
                acts = node.replica.heard_again(src, ROOM, author, seq, self.now)
                if acts:
                    self._do(node, list(acts))
                    self._rearm(node)
            return
        author = self.names[self.msg_author[k]]
        seq = self.msg_seq[k]
        rep = node.replica
        if not rep.admit(src, ROOM, author, seq, self.msg_bytes, self.now):
            return
        node.store[k] = hops + 1 if hops < MAX_HOPS else MAX_HOPS + 1
        self.delivered += 1
        lat = self.tick - self.msg_tick[k]
        hist_l = self.latency_hist
        if lat >= len(hist_l):
            hist_l.extend([0] * (lat + 1 - len(hist_l)))
        hist_l[lat] += 1
        self.hops_hist[min(hops, MAX_HOPS + 1)] += 1
        if node.churns:
            self.arrivals[d][k] = self.tick
        elif lat <= 5_000:
            self.within_5s += 1
        out: list[Any] = []
        if not hist:
            # New to us: our mesh peers need not send their copies (history.py does this
            # before the commit).
            out += node.mesh.dont_want(src, ROOM, self.msg_id[k], self.now)
        out += rep.accept(ROOM, author, seq)
        out += rep.changed(((ROOM, author),), self.now)
        out += self._committed(node, k, src, not hist)
        self._do(node, out)
        self._rearm(node)

    def _on_frame(self, ev: tuple[Any, ...]) -> None:
        _, s, d, conn, frame = ev
        node = self.nodes[d]
        c = node.conns.get(s)
        if c is None or c[0] != conn:
            return
        src = self.names[s]
        if type(frame) is m.IDontWant:
            # The most frequent frame (one per message per mesh peer): no timer moves.
            acts = node.mesh.frame(src, frame, self.now)
            if acts:
                self._do(node, list(acts))
                self._rearm(node)
            return
        if isinstance(frame, m.Vector | m.Want | m.Floor):
            refused = node.replica.sync_allowed(src, self.now)
            actions: list[Any] = list(refused) if refused else []
            if not refused:
                actions += node.replica.sync_received(src, frame, self.now)
        else:
            actions = list(node.mesh.frame(src, frame, self.now))
        if actions:
            self._do(node, actions)
        self._rearm(node)

    # --- carrying out actions -------------------------------------------------

    def _do(self, node: Node, actions: list[Any]) -> None:
        """Carry out what node's replica and mesh decided."""
        for action in actions:
            if type(action) is MeshSend:
                # The most frequent action (IDONTWANT to each mesh peer): _send_frame, inlined.
                c = node.by_name.get(action.peer)
                if c is None:
                    continue
                frame = action.frame
                if frame is not self._last_frame:
                    self._last_frame = frame
                    self._last_frame_bytes = len(m.encode(frame)) + FRAME_OVERHEAD
                self.bytes_mesh += self._last_frame_bytes
                self.frames_mesh += 1
                arrive = self._arrival(c)
                bucket = self._buckets.get(arrive)
                if bucket is None:
                    bucket = self._buckets[arrive] = []
                    heapq.heappush(self._ticks, arrive)
                bucket.append((E_FRAME, node.idx, c[3], c[0], frame))
            elif isinstance(action, rp.Forward):
                k = self.chat_msg[id(action.frame)]
                if not node.forwards and self.msg_author[k] != node.idx:
                    continue  # a freeloader ignores forward targets
                self._forward(node, k, action.peers)
            elif isinstance(action, rp.Send):
                j = self.index.get(action.peer)
                if j is not None:
                    self._send_frame(node, j, action.frame)
            elif isinstance(action, rp.Flood):
                for j in list(node.conns):
                    if self.names[j] not in action.exclude:
                        self._send_frame(node, j, action.frame)
            elif isinstance(action, rp.Push):
                self._push(node, action)
            elif isinstance(action, MeshServe):
                self._serve(node, action)
            elif isinstance(action, MeshDial):
                j = self.index.get(action.peer)
                if j is not None:
                    self._dial(node, j)
            elif isinstance(action, rp.Disconnect | MeshClose):
                j = self.index.get(action.peer)
                if j is not None:
                    self._close(node, j)
            # Emit, SaveFloor, SaveReceipts, ForgetReceipts, Delivered, CheckStore,
            # ReleaseHeld: nothing to persist or show in a simulation.

    def _send_frame(self, node: Node, j: int, frame: m.Frame) -> None:
        if isinstance(frame, m.Chat):
            k = self.chat_msg[id(frame)]
            if not node.forwards and not frame.hist and self.msg_author[k] != node.idx:
                return
            self._send_chat(node, j, k, node.store[k], frame.hist)
            return
        c = node.conns.get(j)
        if c is None:
            return
        if frame is not self._last_frame:
            self._last_frame = frame
            self._last_frame_bytes = len(m.encode(frame)) + FRAME_OVERHEAD
        if isinstance(frame, m.Vector | m.Want | m.Floor):
            self.bytes_sync += self._last_frame_bytes
            self.frames_sync += 1
        else:
            self.bytes_mesh += self._last_frame_bytes
            self.frames_mesh += 1
        self._at(self._arrival(c), (E_FRAME, node.idx, j, c[0], frame))

    def _forward(self, node: Node, k: int, peers: Sequence[str]) -> None:
        """Send live message k to peers (the hot path: _send_chat, inlined)."""
        hops = node.store[k]
        by_name, buckets = node.by_name, self._buckets
        tick, loss, src = self.tick, self.p.loss, node.idx
        sent = 0
        for peer in peers:
            c = by_name.get(peer)
            if c is None:
                continue
            sent += 1
            if loss > 0.0:
                arrive = self._arrival(c)
            else:
                arrive = tick + c[1]
                if arrive < c[2]:
                    arrive = c[2]
                c[2] = arrive
            bucket = buckets.get(arrive)
            if bucket is None:
                bucket = buckets[arrive] = []
                heapq.heappush(self._ticks, arrive)
            bucket.append((E_CHAT, src, c[3], c[0], k, hops, False))
        self.bytes_chat += sent * self.msg_bytes

    def _send_chat(self, node: Node, j: int, k: int, hops: int, hist: bool) -> None:
        c = node.conns.get(j)
        if c is None:
            return
        self.bytes_chat += self.msg_bytes
        self._at(self._arrival(c), (E_CHAT, node.idx, j, c[0], k, hops, hist))

    def _arrival(self, c: list[int]) -> int:
        """Tick at which a frame sent now on connection c arrives (in order, TCP-like)."""
        lat = c[1]
        arrive = self.tick + lat
        loss = self.p.loss
        if loss > 0.0:
            rto = max(RTO_MIN_MS, 3 * lat)
            rnd = self.net_rng.random
            while rnd() < loss:
                arrive += rto
                rto *= 2
        if arrive < c[2]:
            arrive = c[2]  # head-of-line blocking: behind what was sent before
        c[2] = arrive
        return arrive

    def _push(self, node: Node, push: rp.Push) -> None:
        j = self.index.get(push.peer)
        if j is None or j not in node.conns:
            return
        floors, ranges = node.replica.push_ranges(push.peer, push.room, push.plan)
        for floor in floors:
            self._send_frame(node, j, floor)
        by_key, store = self.msg_by_key, node.store
        for author, lo, hi in ranges:
            for seq in range(lo, hi + 1):
                k = by_key.get((author, seq))
                if k is None or not store[k]:
                    continue
                self._send_chat(node, j, k, store[k], True)
                node.replica.pushed(push.peer, push.room, author, seq)

    def _serve(self, node: Node, serve: MeshServe) -> None:
        if not node.forwards:
            return  # a freeloader answers no IWANT either
        j = self.index.get(serve.peer)
        if j is None:
            return
        for _room, author, seq in serve.ids:
            k = self.msg_by_key.get((author, seq))
            if k is not None and node.store[k]:
                self._send_chat(node, j, k, node.store[k], False)

    # --- figures ----------------------------------------------------------------

    def figures(self, wall: float) -> dict[str, Any]:
        """The run's figures and parameters (the JSON line)."""
        p = self.p
        n_msgs = len(self.msg_tick)
        within = self.within_5s
        eligible = (p.nodes - 1) * n_msgs - sum(
            1 for i in self.arrivals for k in range(n_msgs) if self.msg_author[k] != i
        )
        for i, arr in self.arrivals.items():
            away = self.nodes[i].away
            for k in range(n_msgs):
                if self.msg_author[k] == i:
                    continue
                t0 = self.msg_tick[k]
                if any(a < t0 + 5_000 and b > t0 for a, b in away):
                    continue  # away within 5 s of it being sent: not counted within 5 s
                eligible += 1
                if 0 <= arr[k] - t0 <= 5_000:
                    within += 1
        pairs = (p.nodes - 1) * n_msgs
        conns = [len(node.conns) for node in self.nodes if node.up]
        total_bytes = self.bytes_chat + self.bytes_sync + self.bytes_mesh
        out: dict[str, Any] = {
            "delivery_ratio": round(self.delivered / pairs, 6) if pairs else 1.0,
            "delivered_within_5s": round(within / eligible, 6) if eligible else 1.0,
            "latency_p50_ms": _percentile(self.latency_hist, 0.50),
            "latency_p99_ms": _percentile(self.latency_hist, 0.99),
            "latency_max_ms": len(self.latency_hist) - 1 if self.latency_hist else 0,
            "hops_p50": _percentile(self.hops_hist, 0.50),
            "hops_p99": _percentile(self.hops_hist, 0.99),
            "duplicates_per_node_per_message": (
                round(self.duplicates / (p.nodes * n_msgs), 3) if n_msgs else 0.0
            ),
            "bytes_per_node": round(total_bytes / p.nodes),
            "bytes_per_node_chat": round(self.bytes_chat / p.nodes),
            "bytes_per_node_sync": round(self.bytes_sync / p.nodes),
            "bytes_per_node_mesh": round(self.bytes_mesh / p.nodes),
            "connections_per_node_max": self.conn_max,
            "connections_per_node_max_end": max(conns, default=0),
            "connections_per_node_mean_end": round(sum(conns) / len(conns), 2) if conns else 0,
            "messages_sent": n_msgs,
            "delivered_pairs": self.delivered,
            "expected_pairs": pairs,
            "sync_frames": self.frames_sync,
            "mesh_frames": self.frames_mesh,
            "dials": self.dials,
            "closes": self.closes,
            "events": self.events,
            "simulated_s": round(self.now, 3),
            "wall_s": round(wall, 2),
        }
        params = asdict(p)
        params["latency_ms"] = list(p.latency_ms)
        out["params"] = params
        return out


def _percentile(hist: list[int], q: float) -> int:
    """Return the q-quantile of a histogram (index = value)."""
    total = sum(hist)
    if not total:
        return 0
    rank = q * total
    seen = 0
    for value, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return value
    return len(hist) - 1


def run(params: Params) -> dict[str, Any]:
    """Run one simulation; return its figures."""
    return Sim(params).run()
