"""history.py as the gossip mesh's adapter: what it feeds the Mesh and how it carries out
the Mesh's actions. The Mesh is replaced by a recorder that answers with chosen actions, so
these tests check the wiring only (protocol/mesh.py's rules have their own tests).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

import pytest
from unit_support import ALICE, BOB, ME, ROOM, FakeConn, FakeManager, chat, new

from chinwag import events as ev
from chinwag.history import History, MeshPorts
from chinwag.protocol import messages as m
from chinwag.protocol.mesh import MeshAction, MeshClose, MeshDial, MeshSend, MeshServe
from chinwag.protocol.reasons import Reason
from chinwag.rooms import RoomBook
from chinwag.store.db import Store


class RecordingMesh:
    """Records every call the adapter makes; answers with `next` (then nothing)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.next: list[MeshAction] = []
        self.timer: float | None = None
        #: What hops() answers: the links a message's first copy crossed to reach us.
        self.hop_counts: dict[Any, int] = {}

    def _answer(self) -> list[MeshAction]:
        out, self.next = self.next, []
        return out

    def connected(
        self, peer: str, now: float, *, mesh: bool = True, outbound: bool | None = None
    ) -> list[MeshAction]:
        self.calls.append(("connected", peer, mesh))
        return self._answer()

    def disconnected(self, peer: str, now: float) -> list[MeshAction]:
        self.calls.append(("disconnected", peer))
        return self._answer()

    def candidate(self, peer: str, now: float) -> None:
        self.calls.append(("candidate", peer))

    def drop_candidate(self, peer: str) -> None:
        self.calls.append(("drop_candidate", peer))

    def join(self, room: str, now: float) -> list[MeshAction]:
        self.calls.append(("join", room))
        return self._answer()

    def leave(self, room: str, now: float) -> list[MeshAction]:
        self.calls.append(("leave", room))
        return self._answer()

    def peer_rooms(self, peer: str, rooms: Iterable[str], now: float) -> list[MeshAction]:
        self.calls.append(("peer_rooms", peer, sorted(rooms)))
        return self._answer()

    def dont_want(self, peer: str | None, room: str, msg: Any, now: float) -> list[MeshAction]:
        self.calls.append(("dont_want", peer, msg))
        return self._answer()

    def invalid(self, peer: str, now: float) -> list[MeshAction]:
        self.calls.append(("invalid", peer))
        return self._answer()

    def frame(self, peer: str, frame: m.Frame, now: float) -> list[MeshAction]:
        self.calls.append(("frame", peer, frame))
        return self._answer()

    def get_timer(self) -> float | None:
        return self.timer

    def hops(self, msg: Any) -> int:
        return self.hop_counts.get(msg, 0)

    def handle_timer(self, now: float) -> list[MeshAction]:
        self.calls.append(("handle_timer",))
        self.timer = None
        return self._answer()

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


class Node:
    """A loaded History of ME with the mesh on, its Mesh replaced by a RecordingMesh."""

    def __init__(self, store: Store) -> None:
        self.events: list[ev.NodeEvent] = []
        self.manager = FakeManager()
        self.dialled: list[str] = []
        self.dial_ok = True
        self.direct: set[str] = set()
        self.book = RoomBook(store, ME)
        self.book.load()
        ports = MeshPorts(
            random.Random(1), self._dial, lambda p: p in self.direct, lambda p: p in self.direct
        )
        manager: Any = self.manager
        self.history = History(store, ME, manager, self.events.append, self.book, ports)
        self.mesh = RecordingMesh()
        self.history.mesh = self.mesh  # type: ignore[assignment]
        self.history.load()
        self.store = store

    def _dial(self, peer: str) -> bool:
        self.dialled.append(peer)
        return self.dial_ok

    def peer(self, who: str) -> FakeConn:
        conn = FakeConn(who)
        self.manager.peers[who] = conn
        return conn


@pytest.fixture
async def node(store: Store) -> Any:
    n = Node(store)
    yield n
    await n.history.close()


async def test_load_joins_the_rooms_we_hold(node: Node) -> None:
    assert node.mesh.named("join") == [("join", ROOM)]


async def test_connections_are_fed_as_mesh_or_direct(node: Node) -> None:
    node.direct.add(BOB.peer_id)
    node.history.peer_joined(node.peer(ALICE.peer_id))
    node.history.peer_joined(node.peer(BOB.peer_id))
    assert node.mesh.named("connected") == [
        ("connected", ALICE.peer_id, True),
        ("connected", BOB.peer_id, False),
    ]
    node.history.peer_left(ALICE.peer_id)
    assert node.mesh.named("disconnected") == [("disconnected", ALICE.peer_id)]


async def test_rooms_frame_feeds_peer_rooms(node: Node) -> None:
    conn = node.peer(ALICE.peer_id)
    rooms = m.Rooms(joined=[m.RoomAnnounce(room=ROOM), m.RoomAnnounce(room="other")])
    node.history.sync_frame(conn, rooms)
    assert node.mesh.named("peer_rooms") == [("peer_rooms", ALICE.peer_id, [ROOM, "other"])]


async def test_join_and_leave_reach_the_mesh(node: Node) -> None:
    node.book.join_public("other")
    node.history.room_changed("other")
    node.book.leave("other")
    node.history.room_changed("other")
    assert node.mesh.named("join")[-1] == ("join", "other")
    assert node.mesh.named("leave") == [("leave", "other")]


async def test_mesh_frames_go_to_the_mesh_and_its_sends_to_the_peer(node: Node) -> None:
    conn = node.peer(ALICE.peer_id)
    graft = m.Graft(room=ROOM)
    prune = m.Prune(room=ROOM, px=[BOB.peer_id], backoff_s=60)
    node.mesh.next = [MeshSend(ALICE.peer_id, prune)]
    node.history.mesh_frame(conn, graft)
    assert node.mesh.named("frame") == [("frame", ALICE.peer_id, graft)]
    assert conn.sent == [prune]


async def test_serve_sends_stored_messages_as_live_chats(node: Node) -> None:
    node.store.insert_messages([new(BOB, 1, "one"), new(BOB, 2, "two")])
    conn = node.peer(ALICE.peer_id)
    node.mesh.next = [MeshServe(ALICE.peer_id, [(ROOM, BOB.peer_id, 2), (ROOM, BOB.peer_id, 9)])]
    node.mesh.hop_counts[(ROOM, BOB.peer_id, 2)] = 3  # our copy came over three links
    node.history.mesh_frame(conn, m.IWant(room=ROOM, ids=[(BOB.peer_id, 2)]))
    [sent] = conn.sent
    assert isinstance(sent, bytes)
    frame = m.decode_frame(sent)
    two = chat(BOB, 2, "two")
    assert frame == m.Chat(body=two.raw_body, sig=two.sig, relays=3)


async def test_mesh_close_closes_with_its_reason(node: Node) -> None:
    conn = node.peer(ALICE.peer_id)
    node.mesh.next = [MeshClose(ALICE.peer_id, Reason.LOW_SCORE)]
    node.history.mesh_frame(conn, m.Graft(room=ROOM))
    assert conn.closed == Reason.LOW_SCORE


async def test_mesh_dial_asks_the_manager_and_drops_unreachable_candidates(node: Node) -> None:
    node.history.candidate(ALICE.peer_id)
    node.history.candidate(ME.peer_id)  # never ourselves
    assert node.mesh.named("candidate") == [("candidate", ALICE.peer_id)]
    node.dial_ok = False
    node.mesh.next = [MeshDial(ALICE.peer_id)]
    node.history.mesh_frame(node.peer(BOB.peer_id), m.Graft(room=ROOM))
    assert node.dialled == [ALICE.peer_id]
    assert node.mesh.named("drop_candidate") == [("drop_candidate", ALICE.peer_id)]


async def test_a_forged_relay_counts_as_invalid_traffic(node: Node) -> None:
    conn = node.peer(BOB.peer_id)
    node.book.set_announced(BOB.peer_id, m.Rooms(joined=[m.RoomAnnounce(room=ROOM)]))
    msg = chat(ALICE, 1, "forged")
    bad = bytearray(msg.sig)
    bad[3] ^= 1
    node.history.chat_received(conn, m.Chat(body=msg.raw_body, sig=bytes(bad)))
    assert node.mesh.named("invalid") == [("invalid", BOB.peer_id)]
    assert conn.closed == Reason.BAD_SIGNATURE


async def test_the_mesh_runs_on_the_one_timer(node: Node) -> None:
    loop = asyncio.get_running_loop()
    node.mesh.timer = loop.time() + 0.01
    conn = node.peer(ALICE.peer_id)
    node.history.mesh_frame(conn, m.IHave(room=ROOM, ids=[]))  # an input re-arms the timer
    node.mesh.next = [MeshSend(ALICE.peer_id, m.Graft(room=ROOM))]
    deadline = loop.time() + 5
    while not node.mesh.named("handle_timer"):
        assert loop.time() < deadline, "the mesh's timer never ran"
        await asyncio.sleep(0.005)
    assert conn.sent == [m.Graft(room=ROOM)]
