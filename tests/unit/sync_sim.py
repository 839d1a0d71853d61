"""A deterministic in-memory network of nodes that sync history through SyncState alone.

Model: the same sans-IO idea as unit_support.py, for protocol/sync.py. Each
`SimNode` has a `SyncState` and a dict store {(room, author, seq): content};
nothing else. A node obeys the contract of history.py: it stores a message,
then (only if the store did not hold it yet) calls accept(); a Floor goes
straight to set_floor().

A `SimNet` holds directed links between nodes. A link is a list of items in
flight (messages and floors); the test decides, step by step, which item of
which link is delivered next, dropped or duplicated, so any reordering,
interleaving and loss can be expressed. Connecting two nodes exchanges their
vectors and queues each side's push_plan on the link (a Floor before the
messages of its range, as history.py sends them); writing a message sends it
live to every connected peer, and a node relays a new live message to its
other peers, as history.py does.

`settle()` is the end of a schedule: every link is cut (what was in flight is
lost) and the nodes then sync over a connected graph with reliable, in-order
links until a full pass moves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

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


Item = Msg | FloorItem


@dataclass
class SimNode:
    """One node: SyncState plus a dict store, nothing else."""

    name: str
    #: history.py tells the sync state nothing about a message the store already held
    #: (Insert.DUPLICATE); True models the alternative of re-accepting it.
    accept_duplicates: bool = False
    sync: SyncState = field(default_factory=SyncState)
    store: dict[Key, str] = field(default_factory=dict)
    #: Keys for which a second, different content was offered (must stay empty).
    equivocations: list[Key] = field(default_factory=list)

    def write(self, room: str, text: str) -> Msg:
        """Author a new message (seq = our have + 1), store it and accept it."""
        seq = self.sync.author(room, self.name).have + 1
        key = (room, self.name, seq)
        content = f"{self.name}/{room}/{seq}/{text}"
        assert key not in self.store, f"{self.name} would reuse seq {seq} in {room}"
        self.store[key] = content
        self.sync.accept(room, self.name, seq)
        return Msg(key, content, hist=False)

    def receive(self, item: Item, source: str = "peer") -> bool:
        """Apply one delivered item (from peer `source`); return True if it stored a new message."""
        if isinstance(item, FloorItem):
            self.sync.offer_floor(item.room, item.author, item.seq, source)
            return False
        old = self.store.get(item.key)
        if old is not None:
            if old != item.content:
                self.equivocations.append(item.key)
            elif self.accept_duplicates:
                self.sync.accept(*item.key)
            return False
        if not self.sync.admits(*item.key, source):
            return False  # refused (too many orphan authors): sync brings it again later
        self.store[item.key] = item.content
        self.sync.accept(*item.key)
        return True

    def rooms(self) -> set[str]:
        return set(self.sync.rooms)

    def vector(self, room: str) -> dict[str, int]:
        return self.sync.vector(room)

    def push_items(self, room: str, peer_have: dict[str, int]) -> list[Item]:
        """What we send a peer whose vector of room is peer_have: push_plan, made concrete."""
        items: list[Item] = []
        for r in self.sync.push_plan(room, peer_have):
            if r.floor is not None:
                items.append(FloorItem(room, r.author, r.floor))
            for seq in range(r.lo, r.hi + 1):
                key = (room, r.author, seq)
                # The plan only covers base..have, which the sync state claims we hold.
                assert key in self.store, f"{self.name} plans to push {key} it does not hold"
                items.append(Msg(key, self.store[key], hist=True))
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

    @classmethod
    def create(cls, n: int, accept_duplicates: bool = False) -> SimNet:
        return cls([SimNode(f"node{i}", accept_duplicates) for i in range(n)])

    # --- topology -------------------------------------------------------

    def connected(self, a: int, b: int) -> bool:
        return (a, b) in self.links

    def peers(self, a: int) -> list[int]:
        return sorted(dst for src, dst in self.links if src == a)

    def connect(self, a: int, b: int) -> None:
        """Open the link a<->b (if not open) and exchange vectors of every room."""
        if a == b:
            return
        self.links.setdefault((a, b), [])
        self.links.setdefault((b, a), [])
        self.exchange_vectors(a, b)

    def disconnect(self, a: int, b: int) -> None:
        """Close the link a<->b; whatever was in flight is lost."""
        self.links.pop((a, b), None)
        self.links.pop((b, a), None)

    def exchange_vectors(self, a: int, b: int) -> None:
        """Both sides send their vectors; each queues its push for the other."""
        na, nb = self.nodes[a], self.nodes[b]
        for room in sorted(na.rooms() | nb.rooms()):
            va, vb = na.vector(room), nb.vector(room)
            self.links[(a, b)] += na.push_items(room, vb)
            self.links[(b, a)] += nb.push_items(room, va)

    # --- traffic --------------------------------------------------------

    def write(self, a: int, room: str, text: str) -> None:
        msg = self.nodes[a].write(room, text)
        self.written[msg.key] = msg.content
        for dst in self.peers(a):
            self.links[(a, dst)].append(msg)

    def pending(self) -> list[tuple[int, int]]:
        """Links with something in flight, in a stable order."""
        return sorted(k for k, items in self.links.items() if items)

    def deliver(self, link: tuple[int, int], index: int, keep: bool = False) -> None:
        """Deliver item `index` of link (keep=True leaves a copy in flight: a duplicate)."""
        src, dst = link
        items = self.links[link]
        item = items[index] if keep else items.pop(index)
        new = self.nodes[dst].receive(item, self.nodes[src].name)
        if new and isinstance(item, Msg) and not item.hist:
            # Relay live messages, as history.py does, except back to the sender or author.
            author = item.key[1]
            for peer in self.peers(dst):
                if peer != src and self.nodes[peer].name != author:
                    self.links[(dst, peer)].append(item)

    def drop(self, link: tuple[int, int], index: int) -> None:
        self.links[link].pop(index)

    def flush(self, link: tuple[int, int]) -> None:
        """Deliver everything in flight on link, in order."""
        while self.links.get(link):
            self.deliver(link, 0)

    # --- the end of a schedule ------------------------------------------

    def settle(self, edges: Iterable[tuple[int, int]], max_passes: int | None = None) -> int:
        """Cut every link, then sync over edges reliably until quiet; return passes used."""
        self.links.clear()
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
