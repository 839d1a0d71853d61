"""The sans-IO gossip mesh of rooms: gossipsub v1.1 with v1.2's IDONTWANT (docs/mesh.md).

Skeleton: the API of the contract (/work/briefs/s3/mesh_contract.md) with simple bodies.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chinwag import limits
from chinwag.protocol import messages as m

#: A message id: (room wire name, author peer id, seq).
MsgId = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class MeshParams:
    """The mesh's parameters (defaults from limits.py; the simulator may vary them)."""

    d: int = limits.MESH_D
    d_lo: int = limits.MESH_D_LO
    d_hi: int = limits.MESH_D_HI
    d_score: int = limits.MESH_D_SCORE
    d_out: int = limits.MESH_D_OUT
    d_lazy: int = limits.MESH_D_LAZY
    heartbeat_s: float = limits.MESH_HEARTBEAT_S
    history_len: int = limits.MESH_HISTORY_LEN
    history_gossip: int = limits.MESH_HISTORY_GOSSIP
    prune_backoff_s: int = limits.MESH_PRUNE_BACKOFF_S
    conn_margin: int = limits.MESH_CONN_MARGIN


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
        self._conns: dict[str, bool] = {}
        self._candidates: dict[str, float] = {}
        self._joined: set[str] = set()
        self._peer_rooms: dict[str, frozenset[str]] = {}
        self._mesh: dict[str, set[str]] = {}
        self._targets: dict[str, list[str]] = {}
        self._timer: float | None = None

    # --- connections and candidates -------------------------------------

    def connected(self, peer: str, now: float, *, mesh: bool = True) -> list[MeshAction]:
        """A connection to peer opened (mesh=False: a direct one, never counted or closed)."""
        self._conns[peer] = mesh
        self._candidates.pop(peer, None)
        if self._timer is None:
            self._timer = now + self.params.heartbeat_s
        return []

    def disconnected(self, peer: str, now: float) -> list[MeshAction]:
        """The connection to peer closed: drop it from every mesh."""
        self._conns.pop(peer, None)
        self._peer_rooms.pop(peer, None)
        for room, members in self._mesh.items():
            if peer in members:
                members.discard(peer)
                self._targets.pop(room, None)
        return []

    def candidate(self, peer: str, now: float) -> None:
        """Remember a peer we could dial (discovery, presence, a PRUNE's peer exchange)."""
        if peer != self.me and peer not in self._conns:
            self._candidates[peer] = now

    def drop_candidate(self, peer: str) -> None:
        """Forget a dial candidate (it left, or cannot be reached)."""
        self._candidates.pop(peer, None)

    # --- rooms ------------------------------------------------------------

    def join(self, room: str, now: float) -> list[MeshAction]:
        """We joined room: build its mesh from connected peers in it (Graft)."""
        self._joined.add(room)
        self._mesh.setdefault(room, set())
        if self._timer is None:
            self._timer = now + self.params.heartbeat_s
        return self._fill(room)

    def leave(self, room: str, now: float) -> list[MeshAction]:
        """We left room: Prune its mesh peers and forget it."""
        self._joined.discard(room)
        self._targets.pop(room, None)
        members = self._mesh.pop(room, set())
        return [MeshSend(p, m.Prune(room=room)) for p in sorted(members)]

    def peer_rooms(self, peer: str, rooms: Iterable[str], now: float) -> list[MeshAction]:
        """Peer's Rooms frame: the rooms it holds (replaces the last)."""
        held = frozenset(rooms)
        self._peer_rooms[peer] = held
        out: list[MeshAction] = []
        for room, members in self._mesh.items():
            if peer in members and room not in held:
                members.discard(peer)
                self._targets.pop(room, None)
        for room in held & self._joined:
            out += self._fill(room)
        return out

    # --- traffic ------------------------------------------------------------

    def publish(self, room: str, msg: MsgId, now: float) -> list[str]:
        """Our own message of room: return the peers to push it to."""
        return self._room_targets(room)

    def received(
        self, peer: str, room: str, msg: MsgId, first: bool, now: float
    ) -> tuple[list[str], list[MeshAction]]:
        """A valid message from peer: return (peers to forward it to, actions)."""
        if not first:
            return [], []
        return [p for p in self._room_targets(room) if p != peer and p != msg[1]], []

    def invalid(self, peer: str, now: float) -> list[MeshAction]:
        """Peer sent invalid traffic (bad signature, malformed ...): it loses score."""
        return []

    def frame(
        self, peer: str, frame: m.Graft | m.Prune | m.IHave | m.IWant | m.IDontWant, now: float
    ) -> list[MeshAction]:
        """A mesh frame from peer."""
        if isinstance(frame, m.Graft) and frame.room in self._joined:
            self._mesh.setdefault(frame.room, set()).add(peer)
            self._targets.pop(frame.room, None)
        elif isinstance(frame, m.Prune) and frame.room in self._mesh:
            self._mesh[frame.room].discard(peer)
            self._targets.pop(frame.room, None)
        return []

    def get_timer(self) -> float | None:
        """Return when `handle_timer` is next due, or None."""
        return self._timer

    def handle_timer(self, now: float) -> list[MeshAction]:
        """Heartbeat: graft and prune to keep every mesh within D_lo..D_hi, gossip, dial."""
        if self._timer is None or now < self._timer:
            return []
        self._timer = now + self.params.heartbeat_s
        out: list[MeshAction] = []
        for room in sorted(self._joined):
            out += self._fill(room)
        return out

    def score(self, peer: str, now: float) -> float:
        """Return peer's score (0 until scoring lands)."""
        return 0.0

    def mesh_peers(self, room: str) -> frozenset[str]:
        """Return the mesh peers of room."""
        return frozenset(self._mesh.get(room, ()))

    # --- internals ------------------------------------------------------------

    def _room_targets(self, room: str) -> list[str]:
        targets = self._targets.get(room)
        if targets is None:
            targets = self._targets[room] = sorted(self._mesh.get(room, ()))
        return targets

    def _fill(self, room: str) -> list[MeshAction]:
        members = self._mesh.setdefault(room, set())
        out: list[MeshAction] = []
        if len(members) >= self.params.d_lo:
            return out
        pool = sorted(
            p
            for p, meshed in self._conns.items()
            if meshed and p not in members and room in self._peer_rooms.get(p, ())
        )
        self.rng.shuffle(pool)
        for p in pool[: self.params.d - len(members)]:
            members.add(p)
            out.append(MeshSend(p, m.Graft(room=room)))
        if out:
            self._targets.pop(room, None)
        return out
