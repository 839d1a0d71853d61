"""A deterministic in-memory network of nodes that run the real sans-IO replica.

Model: the same sans-IO idea as unit_support.py, for protocol/replica.py. Each
`SimNode` is a small adapter, like history.py: a dict store
{(room, author, seq): content} and a real `Replica` (with its `SyncState`). It
stores a message, then tells the replica (accept, changed, committed), and
carries out the actions the replica answers with. Every rule (relays and
whom they skip, push plans and floors, suppression of what a connection
already carried, floor backing, vector replies, wants, budgets) is the
replica's own: the simulator has no copy of them.

A `SimNet` holds directed links between nodes. A link is a list of items in
flight (messages, floors and wants); the test decides, step by step, which
item of which link is delivered next, dropped or duplicated, so any
reordering, interleaving and loss can be expressed. Vectors are delivered at
once (they are small and sent on every connect). Connecting two nodes opens
the connection on both replicas (each sends its vectors, each answers the
other's with a push); closing it tells both replicas. Time stands still
unless the test runs the replicas' timers with `advance()`.

`settle()` is the end of a schedule: every link is cut (what was in flight is
lost) and the nodes then sync over a connected graph with reliable, in-order
links until a full pass moves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from chinwag import events as ev
from chinwag.protocol import messages as m
from chinwag.protocol import replica as rp
from chinwag.protocol.replica import Replica
from chinwag.protocol.sync import SyncState

Key = tuple[str, str, int]  # (room, author, seq)


@dataclass(frozen=True, slots=True)
class Msg:
    """A message in flight: hist=True for a push, False for live traffic."""

    key: Key
    content: str
    hist: bool


@dataclass(frozen=True, slots=True)
class FloorItem:
    """A Floor frame in flight."""

    room: str
    author: str
    seq: int


@dataclass(frozen=True, slots=True)
class WantItem:
    """A Want frame in flight."""

    room: str
    author: str
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class VectorItem:
    """A Vector frame (delivered at once by the net; a test may hand one to a node)."""

    room: str
    have: dict[str, int]


Item = Msg | FloorItem | WantItem | VectorItem


def to_chat(msg: Msg) -> m.Chat:
    """Carry a simulated message in a real Chat frame (the body names its key)."""
    room, author, seq = msg.key
    body = "\x00".join((room, author, str(seq), msg.content)).encode()
    return m.Chat(body=body, sig=b"", hist=msg.hist)


def to_frame(item: FloorItem | WantItem | VectorItem) -> m.Floor | m.Want | m.Vector:
    """The real sync frame an item in flight stands for."""
    if isinstance(item, FloorItem):
        return m.Floor(room=item.room, author=item.author, seq=item.seq)
    if isinstance(item, WantItem):
        return m.Want(room=item.room, author=item.author, lo=item.lo, hi=item.hi)
    return m.Vector(room=item.room, have=dict(item.have))


def from_chat(chat: m.Chat) -> Msg:
    room, author, seq, content = chat.body.decode().split("\x00", 3)
    return Msg((room, author, int(seq)), content, chat.hist)


class _View:
    """The replica's RoomView: every node is in every room of the net, nothing is a DM."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def peers(self) -> Sequence[str]:
        return list(self.node.peers)

    def rooms(self) -> list[str]:
        return sorted(self.node.universe | set(self.node.sync.rooms))

    def joined(self, room: str) -> bool:
        return True

    def dm_peer(self, room: str) -> str | None:
        return None

    def peer_in(self, peer_id: str, room: str) -> bool:
        return True

    def holds_vector(self, room: str, peer_id: str) -> bool:
        return True

    def saved_receipts(self, room: str) -> dict[str, dict[str, int]]:
        return {}


@dataclass
class SimNode:
    """One node: a real Replica plus a dict store, as history.py is for SQLite."""

    name: str
    #: Whether a duplicate of a stored message is reported to the replica
    #: (history.py does: the bounded gap tracking may have forgotten it).
    accept_duplicates: bool = False
    store: dict[Key, str] = field(default_factory=dict)
    #: Keys for which a second, different content was offered (must stay empty).
    equivocations: list[Key] = field(default_factory=list)
    #: Names of the peers with an open connection, oldest first (kept by the net).
    peers: list[str] = field(default_factory=list)
    #: Rooms that exist in the net (every node holds every room).
    universe: set[str] = field(default_factory=set)
    #: The simulated clock (set by the net).
    now: float = 0.0
    #: Actions the replica answered with, not yet carried out by the net.
    outbox: list[rp.Action] = field(default_factory=list)
    #: Events the replica emitted (gaps, gaps filled).
    events: list[ev.NodeEvent] = field(default_factory=list)
    #: Reasons this node closed connections for.
    disconnects: list[tuple[str, str]] = field(default_factory=list)
    replica: Replica = field(init=False)

    def __post_init__(self) -> None:
        self.replica = Replica(self.name, _View(self))
        self.replica.start(self.now)

    @property
    def sync(self) -> SyncState:
        return self.replica.sync

    def _do(self, actions: list[rp.Action]) -> None:
        for action in actions:
            if isinstance(action, rp.Emit):
                self.events.append(action.event)
            else:
                self.outbox.append(action)

    def _stored(self, key: Key) -> None:
        """Tell the replica a message is committed (persist, then release)."""
        self._do(self.replica.accept(*key))
        self._do(self.replica.changed({(key[0], key[1])}, self.now))

    def write(self, room: str, text: str) -> Msg:
        """Author a new message (seq = our have + 1), store it, then let the replica send it."""
        seq = self.sync.author(room, self.name).have + 1
        key = (room, self.name, seq)
        content = f"{self.name}/{room}/{seq}/{text}"
        assert key not in self.store, f"{self.name} would reuse seq {seq} in {room}"
        self.store[key] = content
        msg = Msg(key, content, hist=False)
        self._stored(key)
        self._do(self.replica.committed(to_chat(msg), room, self.name, seq, None, True, bool))
        return msg

    def receive(self, item: Item, source: str = "peer") -> bool:
        """Apply one delivered item (from peer `source`); return True if it stored a new message."""
        if not isinstance(item, Msg):
            refused = self.replica.sync_allowed(source, self.now)
            if refused:
                self._do(refused)
            else:
                self._do(self.replica.sync_received(source, to_frame(item), self.now))
            return False
        room, author, seq = item.key
        old = self.store.get(item.key)
        if old is not None:
            if old != item.content:
                # The store refused it (another message holds the seq): the replica decides.
                self.equivocations.append(item.key)
                self._do(self.replica.clashed(author, seq, source, room))
            elif self.accept_duplicates:
                saves, moved = self.replica.duplicate(room, author, seq)
                self._do(saves)
                if moved:
                    self._do(self.replica.changed({(room, author)}, self.now))
            return False
        if not self.replica.admit(source, room, author, seq, len(item.content), self.now):
            return False  # refused (budget, orphan bounds): sync brings it again later
        self.store[item.key] = item.content
        self._stored(item.key)
        self._do(
            self.replica.committed(
                to_chat(item), room, author, seq, source, not item.hist, lambda: True
            )
        )
        return True

    def rooms(self) -> set[str]:
        return set(self.sync.rooms)

    def vector(self, room: str) -> dict[str, int]:
        return self.sync.vector(room)

    def push_items(self, push: rp.Push) -> list[Item]:
        """Make a push of the replica concrete: its floors, then its ranges from the store."""
        peer, room = push.peer, push.room
        floors, ranges = self.replica.push_ranges(peer, room, push.plan)
        items: list[Item] = [FloorItem(room, f.author, f.seq) for f in floors]
        for author, lo, hi in ranges:
            state = self.sync.author(room, author)
            for seq in range(lo, hi + 1):
                key = (room, author, seq)
                if key not in self.store:
                    # A want may span a hole above `have`; below it the plan claims we hold it.
                    assert seq > state.have, f"{self.name} plans to push {key} it does not hold"
                    continue
                items.append(Msg(key, self.store[key], hist=True))
                self.replica.pushed(peer, room, author, seq)
        return items

    def check_invariants(self) -> None:
        """The sync state never claims a message the store lacks, nor misses a contiguous one."""
        for room, authors in self.sync.rooms.items():
            for author, state in authors.items():
                assert state.base >= 1
                assert state.have >= state.base - 1
                # A floor takes effect only at a held seq: never a claim of unseen messages.
                assert state.base == 1 or state.have >= state.base, (self.name, room, author)
                assert all(s > state.have + 1 for s in state.above)
                for seq in range(state.base, state.have + 1):
                    assert (room, author, seq) in self.store, (self.name, room, author, seq)
                for seq in state.above:
                    assert (room, author, seq) in self.store, (self.name, room, author, seq)


@dataclass
class SimNet:
    """Nodes and the directed links between them."""

    nodes: list[SimNode]
    #: (src, dst) -> items in flight from src to dst; present while connected.
    links: dict[tuple[int, int], list[Item]] = field(default_factory=dict)
    #: The truth: every message ever written, by key.
    written: dict[Key, str] = field(default_factory=dict)
    now: float = 0.0

    @classmethod
    def create(cls, n: int, accept_duplicates: bool = False) -> SimNet:
        net = cls([SimNode(f"node{i}", accept_duplicates) for i in range(n)])
        universe: set[str] = set()
        for node in net.nodes:
            node.universe = universe  # one set: a room written anywhere exists everywhere
        return net

    def index(self, name: str) -> int | None:
        """Return the index of the node called name (None: not a node of the net)."""
        return next((i for i, n in enumerate(self.nodes) if n.name == name), None)

    # --- topology -------------------------------------------------------

    def connected(self, a: int, b: int) -> bool:
        return (a, b) in self.links

    def peers(self, a: int) -> list[int]:
        return sorted(dst for src, dst in self.links if src == a)

    def connect(self, a: int, b: int) -> None:
        """Open the link a<->b (if not open): both replicas send their vectors and push."""
        if a == b or self.connected(a, b):
            if a != b:
                self.exchange_vectors(a, b)
            return
        self.links[(a, b)] = []
        self.links[(b, a)] = []
        na, nb = self.nodes[a], self.nodes[b]
        na.peers.append(nb.name)
        nb.peers.append(na.name)
        na.outbox += na.replica.peer_opened(nb.name, self.now)
        nb.outbox += nb.replica.peer_opened(na.name, self.now)
        self.run(a)
        self.run(b)

    def disconnect(self, a: int, b: int) -> None:
        """Close the link a<->b; whatever was in flight is lost."""
        if not self.connected(a, b):
            return
        del self.links[(a, b)]
        del self.links[(b, a)]
        for x, y in ((a, b), (b, a)):
            node, peer = self.nodes[x], self.nodes[y].name
            node.peers.remove(peer)
            node.replica.peer_closed(peer)

    def exchange_vectors(self, a: int, b: int) -> None:
        """Both sides send their vector of every room (a resync on an open connection)."""
        na, nb = self.nodes[a], self.nodes[b]
        rooms = sorted(na.universe | na.rooms() | nb.rooms())
        for room in rooms:
            self.send_vector(a, b, room)
        for room in rooms:
            self.send_vector(b, a, room)

    def send_vector(self, src: int, dst: int, room: str) -> None:
        """src sends its vector of room to dst (delivered at once)."""
        vector = VectorItem(room, self.nodes[src].replica.capped_vector(room))
        self.nodes[dst].receive(vector, self.nodes[src].name)
        self.run(dst)

    # --- the replicas' actions ------------------------------------------

    def run(self, i: int) -> None:
        """Carry out what node i's replica asked for (and what that caused elsewhere)."""
        node = self.nodes[i]
        while node.outbox:
            action = node.outbox.pop(0)
            if isinstance(action, rp.Send | rp.Flood):
                if isinstance(action, rp.Send):
                    target = self.index(action.peer)
                    targets = [] if target is None else [target]
                else:
                    targets = [j for j in self.peers(i) if self.nodes[j].name not in action.exclude]
                for j in targets:
                    if self.connected(i, j):
                        self._send(i, j, action.frame)
            elif isinstance(action, rp.Push):
                j = self.index(action.peer)
                if j is not None and self.connected(i, j):
                    self.links[(i, j)] += node.push_items(action)
            elif isinstance(action, rp.Disconnect):
                node.disconnects.append((action.peer, action.reason))
                j = self.index(action.peer)
                if j is not None:
                    self.disconnect(i, j)
            # SaveFloor, SaveReceipts, ForgetReceipts, Delivered, CheckStore: nothing to persist.

    def _send(self, i: int, j: int, frame: m.Frame) -> None:
        if isinstance(frame, m.Chat):
            self.links[(i, j)].append(from_chat(frame))
        elif isinstance(frame, m.Want):
            self.links[(i, j)].append(WantItem(frame.room, frame.author, frame.lo, frame.hi))
        elif isinstance(frame, m.Floor):
            self.links[(i, j)].append(FloorItem(frame.room, frame.author, frame.seq))
        elif isinstance(frame, m.Vector):
            self.nodes[j].receive(VectorItem(frame.room, dict(frame.have)), self.nodes[i].name)
            self.run(j)
        else:
            raise AssertionError(f"unexpected frame {frame!r}")

    def advance(self, seconds: float) -> None:
        """Let simulated time pass, running every replica timer due meanwhile, in order."""
        until = self.now + seconds
        while True:
            due = [
                (t, i) for i, n in enumerate(self.nodes) if (t := n.replica.get_timer()) is not None
            ]
            due = [d for d in due if d[0] <= until]
            if not due:
                break
            when, i = min(due)
            self.now = max(self.now, when)
            for node in self.nodes:
                node.now = self.now
            self.nodes[i]._do(self.nodes[i].replica.handle_timer(self.now))
            self.run(i)
        self.now = until
        for node in self.nodes:
            node.now = self.now

    # --- traffic --------------------------------------------------------

    def write(self, a: int, room: str, text: str) -> None:
        self.nodes[a].universe.add(room)
        msg = self.nodes[a].write(room, text)
        self.written[msg.key] = msg.content
        self.run(a)

    def pending(self) -> list[tuple[int, int]]:
        """Links with something in flight, in a stable order."""
        return sorted(k for k, items in self.links.items() if items)

    def deliver(self, link: tuple[int, int], index: int, keep: bool = False) -> None:
        """Deliver item `index` of link (keep=True leaves a copy in flight: a duplicate)."""
        src, dst = link
        items = self.links[link]
        item = items[index] if keep else items.pop(index)
        self.nodes[dst].receive(item, self.nodes[src].name)
        self.run(dst)

    def drop(self, link: tuple[int, int], index: int) -> None:
        self.links[link].pop(index)

    def drop_all(self, link: tuple[int, int]) -> None:
        """Lose everything in flight on link."""
        self.links[link].clear()

    def flush(self, link: tuple[int, int]) -> None:
        """Deliver everything in flight on link, in order."""
        while self.links.get(link):
            self.deliver(link, 0)

    # --- the end of a schedule ------------------------------------------

    def settle(self, edges: Iterable[tuple[int, int]], max_passes: int | None = None) -> int:
        """Cut every link, then sync over edges reliably until quiet; return passes used."""
        for a, b in list(self.links):
            self.disconnect(a, b)
        edges = list(edges)
        limit = max_passes if max_passes is not None else 2 * len(self.nodes) + 2
        for passes in range(1, limit + 1):
            before = self.snapshot()
            for a, b in edges:
                self.connect(a, b)
                self.flush((a, b))
                self.flush((b, a))
                self.disconnect(a, b)
            if self.snapshot() == before:
                return passes
        raise AssertionError(f"no quiescence after {limit} passes")

    def snapshot(self) -> tuple[object, ...]:
        return tuple(
            (
                len(n.store),
                tuple(sorted((r, tuple(sorted(n.vector(r).items()))) for r in n.rooms())),
            )
            for n in self.nodes
        )

    def truth_vector(self, room: str) -> dict[str, int]:
        """Author -> highest seq written in room."""
        out: dict[str, int] = {}
        for r, author, seq in self.written:
            if r == room:
                out[author] = max(out.get(author, 0), seq)
        return out

    def rooms(self) -> set[str]:
        return {k[0] for k in self.written}
