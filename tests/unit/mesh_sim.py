"""A small deterministic network of nodes running the real Replica with the real Mesh as router.

Each `MeshNode` is an adapter like history.py: a dict store, a `Replica(router=Mesh)`,
and the carrying out of their actions. `MeshNet` is a discrete-event network: every frame
takes a latency drawn from a seeded `random.Random`, connections are opened when a mesh
asks for a dial (`MeshDial`) and closed when it asks (`MeshClose`), and every node's two
timers (replica, mesh) run in time order. Every rule (targets, IDONTWANT, gossip, scores,
degree, sync) is the protocol objects' own: nothing here decides.

Used by tests/unit/test_mesh.py to show delivery to all over a D-bounded mesh; the
`sim` package (python -m chinwag.sim) is the large-scale version of the same idea.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from sync_sim import Msg, from_chat, to_chat

from chinwag.protocol import messages as m
from chinwag.protocol import replica as rp
from chinwag.protocol.mesh import Mesh, MeshClose, MeshDial, MeshParams, MeshSend, MeshServe, MsgId
from chinwag.protocol.replica import Replica

ROOM = "general"


class _View:
    """The replica's RoomView: one public room, connections as the net keeps them."""

    def __init__(self, node: MeshNode) -> None:
        self.node = node

    def peers(self) -> Sequence[str]:
        return sorted(self.node.peers)

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


@dataclass
class MeshNode:
    """One node: a dict store, a real Replica and its real Mesh."""

    name: str
    seed: int
    params: MeshParams
    #: A node that never forwards (ignores its mesh's targets; still publishes and talks).
    freeloader: bool = False
    store: dict[MsgId, str] = field(default_factory=dict)
    peers: set[str] = field(default_factory=set)
    #: Copies of messages received (live or pushed), first ones included.
    received: int = 0
    #: Messages that arrived by live traffic (mesh push or IWANT), not by sync.
    live: int = 0
    mesh: Mesh = field(init=False)
    replica: Replica = field(init=False)

    def __post_init__(self) -> None:
        self.mesh = Mesh(self.name, random.Random(self.seed), self.store.__contains__, self.params)
        self.replica = Replica(self.name, _View(self), router=self.mesh)


@dataclass(order=True)
class _Event:
    when: float
    order: int
    dst: str = field(compare=False)
    src: str = field(compare=False)
    frame: m.Frame = field(compare=False)


class MeshNet:
    """Nodes, connections and frames in flight, on one simulated clock."""

    def __init__(
        self,
        n: int,
        seed: int = 1,
        params: MeshParams | None = None,
        freeloaders: int = 0,
        latency: tuple[float, float] = (0.01, 0.15),
        loss: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.latency = latency
        #: Share of frames lost in flight (any frame: chats, gossip, vectors).
        self.loss = loss
        prm = params or MeshParams()
        self.nodes = {
            f"n{i:03d}": MeshNode(f"n{i:03d}", seed * 1000 + i, prm, i < freeloaders)
            for i in range(n)
        }
        self.now = 0.0
        self._queue: list[_Event] = []
        self._order = 0
        self.written: list[MsgId] = []
        self.max_connections = 0
        # Timers: a heap of (due, name, kind), checked against `_armed` when popped.
        self._timers: list[tuple[float, str, int]] = []
        self._armed: dict[tuple[str, int], float | None] = {}
        self._touched: set[str] = set()
        #: Killed nodes (see kill/revive).
        self.dead: set[str] = set()
        for node in self.nodes.values():
            node.replica.start(0.0)
            self._do(node, node.mesh.join(ROOM, 0.0))
        self._rearm()

    # --- topology -------------------------------------------------------

    def discover_all(self) -> None:
        """Every node hears of every other (LAN beacons): all are candidates."""
        for node in self.nodes.values():
            for other in self.nodes:
                if other != node.name:
                    node.mesh.candidate(other, self.now)

    def connect(self, a: str, b: str) -> None:
        """Open a<->b (a dialled): both meshes and replicas hear of it, both send their rooms."""
        na, nb = self.nodes[a], self.nodes[b]
        if b in na.peers or a == b:
            return
        na.peers.add(b)
        nb.peers.add(a)
        self._touched.update((a, b))
        self.max_connections = max(self.max_connections, len(na.peers), len(nb.peers))
        for x, y, out in ((na, b, True), (nb, a, False)):
            self._do(x, x.mesh.connected(y, self.now, outbound=out))
            self._do(x, x.replica.peer_opened(y, self.now))
        for x, y in ((na, b), (nb, a)):
            self._do(x, x.mesh.peer_rooms(y, [ROOM], self.now))

    def kill(self, name: str) -> None:
        """Stop a node (kill -9): its connections drop, frames to it and dials of it fail."""
        node = self.nodes[name]
        for peer in sorted(node.peers):
            self.disconnect(name, peer)
        self.dead.add(name)
        for kind in (0, 1):
            self._armed[(name, kind)] = None

    def revive(self, name: str) -> None:
        """Restart a killed node: its store survives, replica and mesh start afresh."""
        old = self.nodes[name]
        node = MeshNode(name, old.seed + 7919, old.params, old.freeloader)
        node.store.update(old.store)
        node.received, node.live = old.received, old.live
        by_author: dict[str, list[int]] = {}
        for _room, author, seq in node.store:
            by_author.setdefault(author, []).append(seq)
        for author, seqs in sorted(by_author.items()):
            node.replica.sync.load(ROOM, author, 1, seqs)
        self.nodes[name] = node
        self.dead.discard(name)
        node.replica.start(self.now)
        self._do(node, node.mesh.join(ROOM, self.now))
        for other in sorted(self.nodes):  # beacons: it hears everyone, everyone hears it
            if other != name and other not in self.dead:
                node.mesh.candidate(other, self.now)
                self.nodes[other].mesh.candidate(name, self.now)

    def disconnect(self, a: str, b: str) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        if b not in na.peers:
            return
        na.peers.discard(b)
        nb.peers.discard(a)
        for x, y in ((na, b), (nb, a)):
            x.replica.peer_closed(y)
            self._do(x, x.mesh.disconnected(y, self.now))

    # --- frames ---------------------------------------------------------

    def _send(self, src: str, dst: str, frame: m.Frame) -> None:
        if dst not in self.nodes[src].peers:
            return
        if self.loss and self.rng.random() < self.loss:
            return
        self._order += 1
        delay = self.rng.uniform(*self.latency)
        heapq.heappush(self._queue, _Event(self.now + delay, self._order, dst, src, frame))

    def _deliver(self, ev: _Event) -> None:
        node = self.nodes[ev.dst]
        if ev.src not in node.peers:
            return  # the connection closed meanwhile
        frame = ev.frame
        if isinstance(frame, m.Chat):
            self._chat(node, ev.src, frame)
        elif isinstance(frame, m.Vector | m.Want | m.Floor):
            refused = node.replica.sync_allowed(ev.src, self.now)
            self._do(node, refused or node.replica.sync_received(ev.src, frame, self.now))
        elif isinstance(frame, m.MeshFrame):
            self._do(node, node.mesh.frame(ev.src, frame, self.now))

    def _chat(self, node: MeshNode, src: str, frame: m.Chat) -> None:
        msg = from_chat(frame)
        room, author, seq = msg.key
        node.received += 1
        if msg.key in node.store:
            if not msg.hist:
                self._do(node, node.replica.heard_again(src, room, author, seq, self.now))
            return
        if not msg.hist:
            node.live += 1
        node.store[msg.key] = msg.content
        self._do(node, node.replica.accept(room, author, seq))
        self._do(node, node.replica.changed({(room, author)}, self.now))
        relay = node.replica.committed(
            frame, room, author, seq, src, not msg.hist, lambda: True, self.now
        )
        self._do(node, relay)

    def _do(self, node: MeshNode, actions: Sequence[rp.Action]) -> None:
        self._touched.add(node.name)
        for a in actions:
            if isinstance(a, rp.Forward):
                if node.freeloader and a.frame.body.split(b"\x00")[1].decode() != node.name:
                    continue  # never forwards (its own messages it does send)
                for peer in a.peers:
                    self._send(node.name, peer, a.frame)
            elif isinstance(a, rp.Send | MeshSend):
                self._send(node.name, a.peer, a.frame)
            elif isinstance(a, rp.Flood):
                for peer in sorted(node.peers - a.exclude):
                    self._send(node.name, peer, a.frame)
            elif isinstance(a, rp.Push):
                floors, ranges = node.replica.push_ranges(a.peer, a.room, a.plan)
                for f in floors:
                    self._send(node.name, a.peer, f)
                for author, lo, hi in ranges:
                    for seq in range(lo, hi + 1):
                        key = (a.room, author, seq)
                        if key in node.store:
                            self._send(node.name, a.peer, to_chat(Msg(key, node.store[key], True)))
                            node.replica.pushed(a.peer, a.room, author, seq)
            elif isinstance(a, MeshServe):
                if node.freeloader:
                    continue
                for key in a.ids:
                    self._send(node.name, a.peer, to_chat(Msg(key, node.store[key], False)))
            elif isinstance(a, MeshDial):
                if a.peer in self.nodes and a.peer not in self.dead:
                    self.connect(node.name, a.peer)
            elif isinstance(a, MeshClose | rp.Disconnect):
                self.disconnect(node.name, a.peer)

    # --- time -----------------------------------------------------------

    def _rearm(self) -> None:
        """Queue the timers of the nodes touched since the last call (if they changed)."""
        for name in sorted(self._touched - self.dead):
            node = self.nodes[name]
            for kind, due in enumerate((node.replica.get_timer(), node.mesh.get_timer())):
                if self._armed.get((name, kind)) != due:
                    self._armed[(name, kind)] = due
                    if due is not None:
                        heapq.heappush(self._timers, (due, name, kind))
        self._touched.clear()

    def run(self, seconds: float) -> None:
        """Run frames and timers in time order for seconds of simulated time."""
        until = self.now + seconds
        while True:
            self._rearm()
            while self._timers and self._armed.get(self._timers[0][1:]) != self._timers[0][0]:
                heapq.heappop(self._timers)  # re-armed since: stale
            best = self._timers[0] if self._timers else None
            nxt = self._queue[0].when if self._queue else None
            if nxt is not None and nxt <= until and (best is None or nxt <= best[0]):
                ev = heapq.heappop(self._queue)
                self.now = max(self.now, ev.when)
                self._deliver(ev)
                continue
            if best is None or best[0] > until:
                break
            due, name, kind = heapq.heappop(self._timers)
            self._armed[(name, kind)] = None
            if name in self.dead:
                continue
            self.now = max(self.now, due)
            node = self.nodes[name]
            if kind == 0:
                self._do(node, node.replica.handle_timer(self.now))
            else:
                self._do(node, node.mesh.handle_timer(self.now))
        self.now = until

    def write(self, name: str, text: str) -> MsgId:
        """name writes a message: stored, then published through its replica and mesh."""
        node = self.nodes[name]
        seq = node.replica.next_seq(ROOM)
        key = (ROOM, name, seq)
        node.store[key] = text
        self._do(node, node.replica.accept(ROOM, name, seq))
        self._do(node, node.replica.changed({(ROOM, name)}, self.now))
        chat = to_chat(Msg(key, text, False))
        self._do(node, node.replica.committed(chat, ROOM, name, seq, None, True, bool, self.now))
        self.written.append(key)
        return key
