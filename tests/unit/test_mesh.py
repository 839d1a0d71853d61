"""protocol/mesh.py driven call by call: graft/prune/backoff, gossip, IDONTWANT, scores, degree."""

from __future__ import annotations

import random

import mesh_sim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_sim import MeshNet

from chinwag import limits
from chinwag.protocol import messages as m
from chinwag.protocol.mesh import (
    Mesh,
    MeshAction,
    MeshClose,
    MeshDial,
    MeshParams,
    MeshSend,
    MeshServe,
    MsgId,
)
from chinwag.protocol.reasons import Reason

ROOM = "general"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def pid(i: int) -> str:
    """A canonical-looking peer id for peer number i (the mesh never parses ids)."""
    digits = []
    for _ in range(51):
        digits.append(_B32[i % 32])
        i //= 32
    return "".join(reversed(digits)) + "a"


ME = pid(0)
AUTHOR = pid(999)


class Node:
    """A Mesh with a dict 'store' for have(), and helpers to connect peers."""

    def __init__(self, seed: int = 1, params: MeshParams | None = None) -> None:
        self.held: set[MsgId] = set()
        self.mesh = Mesh(ME, random.Random(seed), self.held.__contains__, params or MeshParams())
        self.now = 0.0

    def connect(
        self, *peers: str, rooms: tuple[str, ...] = (ROOM,), outbound: bool = False
    ) -> None:
        for p in peers:
            self.mesh.connected(p, self.now, outbound=outbound)
            self.mesh.peer_rooms(p, rooms, self.now)

    def beat(self, seconds: float = 1.0) -> list[MeshAction]:
        """Advance by seconds, running every heartbeat due."""
        out: list[MeshAction] = []
        end = self.now + seconds
        while True:
            due = self.mesh.get_timer()
            if due is None or due > end:
                break
            self.now = due
            out += self.mesh.handle_timer(due)
        self.now = end
        return out


def sends(actions: list[MeshAction], kind: type) -> dict[str, object]:
    return {
        a.peer: a.frame for a in actions if isinstance(a, MeshSend) and isinstance(a.frame, kind)
    }


def peers(n: int, start: int = 1) -> list[str]:
    return [pid(i) for i in range(start, start + n)]


# --- graft, prune, backoff ------------------------------------------------------


def test_join_grafts_d_peers_and_a_new_room_peer_is_grafted_at_once_while_under_d_lo() -> None:
    node = Node()
    node.connect(*peers(10))
    grafts = sends(node.mesh.join(ROOM, 0.0), m.Graft)
    assert len(grafts) == limits.MESH_D == len(node.mesh.mesh_peers(ROOM))
    small = Node()
    small.mesh.join(ROOM, 0.0)
    for i, p in enumerate(peers(6), 1):
        small.mesh.connected(p, 0.0)
        out = small.mesh.peer_rooms(p, [ROOM], 0.0)
        assert (p in sends(out, m.Graft)) == (i <= limits.MESH_D_LO)
    # A peer in another room only is never grafted.
    small.connect(pid(50), rooms=("other",))
    assert pid(50) not in small.mesh.mesh_peers(ROOM)


def test_graft_is_accepted_until_d_hi_then_answered_by_prune_with_backoff_and_px() -> None:
    node = Node(params=MeshParams(conn_margin=4))  # room for a 13th inbound connection
    node.mesh.join(ROOM, 0.0)
    ps = peers(limits.MESH_D_HI + 1)
    node.connect(*ps)
    outs = [node.mesh.frame(p, m.Graft(room=ROOM), 0.0) for p in ps]
    assert outs[:-1] == [[]] * limits.MESH_D_HI
    assert len(node.mesh.mesh_peers(ROOM)) == limits.MESH_D_HI
    last = ps[-1]
    (prune,) = outs[-1]
    assert isinstance(prune, MeshSend) and isinstance(prune.frame, m.Prune)
    assert prune.frame.backoff_s == limits.MESH_PRUNE_BACKOFF_S
    assert prune.frame.px and last not in prune.frame.px
    assert len(prune.frame.px) <= limits.MESH_MAX_PX


def test_prune_backoff_keeps_the_peer_out_until_it_expires() -> None:
    node = Node()
    a = pid(1)
    node.connect(a)
    node.mesh.join(ROOM, 0.0)
    assert node.mesh.mesh_peers(ROOM) == {a}
    node.mesh.frame(a, m.Prune(room=ROOM, backoff_s=30), 0.0)
    assert node.mesh.mesh_peers(ROOM) == frozenset()
    assert sends(node.beat(29.0), m.Graft) == {}  # under D_lo, but a is in backoff
    assert a in sends(node.beat(2.0), m.Graft)
    assert node.mesh.mesh_peers(ROOM) == {a}


def test_graft_during_backoff_is_refused_and_a_graft_storm_gets_the_peer_closed() -> None:
    node = Node()
    a, b = pid(1), pid(2)
    node.connect(a, b)
    node.mesh.join(ROOM, 0.0)
    node.mesh.frame(a, m.Prune(room=ROOM), 0.0)
    out = node.mesh.frame(a, m.Graft(room=ROOM), 1.0)
    assert isinstance(sends(out, m.Prune)[a], m.Prune)
    assert a not in node.mesh.mesh_peers(ROOM)
    assert node.mesh.score(a, 1.0) < 0  # two penalties: in backoff, and right after the prune
    closes: list[MeshAction] = []
    for i in range(20):
        closes += [
            x
            for x in node.mesh.frame(a, m.Graft(room=ROOM), 1.0 + i / 10)
            if isinstance(x, MeshClose)
        ]
    assert closes == [MeshClose(a, Reason.LOW_SCORE)]  # asked once
    assert node.mesh.score(b, 3.0) >= 0  # the others keep their place
    assert node.mesh.mesh_peers(ROOM) == {b}


def test_control_frames_beyond_the_per_heartbeat_bound_are_ignored_and_penalised() -> None:
    node = Node()
    a = pid(1)
    node.connect(a)
    node.mesh.join(ROOM, 0.0)
    for _ in range(limits.MESH_MAX_CONTROL_PER_HEARTBEAT):
        node.mesh.frame(a, m.Graft(room=ROOM), 0.0)  # already in the mesh: no penalty
    assert node.mesh.score(a, 0.0) >= 0
    node.mesh.frame(a, m.Prune(room=ROOM), 0.0)  # over the bound: ignored
    assert a in node.mesh.mesh_peers(ROOM)
    assert node.mesh._peers[a].penalty == 1.0


def test_heartbeat_prunes_a_mesh_over_d_hi_to_d_keeping_d_out_outbound_peers() -> None:
    node = Node()
    node.mesh.join(ROOM, 0.0)
    inbound = peers(limits.MESH_D_HI)
    outbound = peers(3, start=100)
    node.connect(*inbound)
    node.connect(*outbound, outbound=True)
    for p in inbound + outbound:  # outbound grafts are taken even at D_hi
        node.mesh.frame(p, m.Graft(room=ROOM), 0.0)
    assert len(node.mesh.mesh_peers(ROOM)) == limits.MESH_D_HI + 3
    prunes = sends(node.beat(), m.Prune)
    mesh = node.mesh.mesh_peers(ROOM)
    assert len(mesh) == limits.MESH_D
    assert len(prunes) == limits.MESH_D_HI + 3 - limits.MESH_D
    assert len(mesh & set(outbound)) >= limits.MESH_D_OUT


def test_leave_prunes_with_the_short_backoff_and_forgets_the_room() -> None:
    node = Node()
    node.connect(*peers(3))
    node.mesh.join(ROOM, 0.0)
    out = node.mesh.leave(ROOM, 1.0)
    assert {f.backoff_s for f in sends(out, m.Prune).values()} == {limits.MESH_LEAVE_BACKOFF_S}  # type: ignore[attr-defined]
    assert node.mesh.mesh_peers(ROOM) == frozenset()
    # A graft for a room we do not hold is answered by a prune.
    assert pid(1) in sends(node.mesh.frame(pid(1), m.Graft(room=ROOM), 2.0), m.Prune)


def test_a_peer_that_leaves_the_room_or_disconnects_leaves_the_mesh() -> None:
    node = Node()
    a, b = pid(1), pid(2)
    node.connect(a, b)
    node.mesh.join(ROOM, 0.0)
    node.mesh.peer_rooms(a, ["other"], 1.0)
    node.mesh.disconnected(b, 1.0)
    assert node.mesh.mesh_peers(ROOM) == frozenset()
    assert node.mesh.publish(ROOM, (ROOM, ME, 1), 1.0) == []


# --- publish, forward, IDONTWANT ------------------------------------------------


def test_publish_and_received_go_to_the_mesh_minus_sender_author_and_idontwant() -> None:
    node = Node()
    ps = peers(5)
    node.connect(*ps)
    node.mesh.join(ROOM, 0.0)
    mesh = sorted(node.mesh.mesh_peers(ROOM))
    assert node.mesh.publish(ROOM, (ROOM, ME, 1), 0.0) == mesh
    sender, author, quiet = mesh[0], mesh[1], mesh[2]
    msg = (ROOM, author, 1)
    node.mesh.frame(quiet, m.IDontWant(room=ROOM, ids=[(author, 1)]), 0.0)
    targets, _ = node.mesh.received(sender, ROOM, msg, True, 0.1)
    assert targets == [p for p in mesh if p not in (sender, author, quiet)]
    # A duplicate is forwarded to no one.
    assert tuple(map(list, node.mesh.received(mesh[3], ROOM, msg, False, 0.2))) == ([], [])
    # IDONTWANT on a first copy goes to every mesh peer but the sender.
    out = node.mesh.dont_want(sender, ROOM, (ROOM, author, 2), 0.3)
    assert set(sends(out, m.IDontWant)) == set(mesh) - {sender}
    assert Node(params=MeshParams(idontwant=False)).mesh.dont_want(sender, ROOM, msg, 0.0) == []


def test_a_copy_that_crossed_max_hops_links_is_announced_not_pushed() -> None:
    node, lazy = _lazy_setup()
    mesh = sorted(node.mesh.mesh_peers(ROOM))
    near, far = (ROOM, AUTHOR, 1), (ROOM, AUTHOR, 2)
    node.held.update((near, far))
    limit = limits.MESH_MAX_HOPS
    targets, _ = node.mesh.received(mesh[0], ROOM, near, True, 0.1, limit - 1)
    assert list(targets) == mesh[1:]
    assert tuple(map(list, node.mesh.received(mesh[0], ROOM, far, True, 0.1, limit))) == ([], [])
    # Kept for gossip all the same, with the hops a copy we serve says it crossed.
    assert (node.mesh.hops(near), node.mesh.hops(far), node.mesh.hops((ROOM, AUTHOR, 3))) == (
        limit - 1,
        limit,
        0,
    )
    ihave = sends(node.beat(), m.IHave)
    assert ihave[lazy] == m.IHave(room=ROOM, ids=[(AUTHOR, 1), (AUTHOR, 2)])
    # The mesh peers we push to count on us: the held-back copy is announced to them (once).
    held = m.IHave(room=ROOM, ids=[(AUTHOR, 2)])
    assert {p: f for p, f in ihave.items() if p != lazy} == {p: held for p in mesh}
    assert node.mesh.frame(mesh[1], m.IWant(room=ROOM, ids=[(AUTHOR, 2)]), node.now) == [
        MeshServe(mesh[1], [far])
    ]
    assert set(sends(node.beat(), m.IHave)) == {lazy}
    # No limit: pushed whatever the hops.
    free = Node(params=MeshParams(max_hops=0))
    free.connect(*peers(3))
    free.mesh.join(ROOM, 0.0)
    first = sorted(free.mesh.mesh_peers(ROOM))[0]
    assert free.mesh.received(first, ROOM, far, True, 0.1, 100)[0]


def test_a_held_back_id_the_history_could_not_keep_is_not_announced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Announced, it could not be served: the honest peer asking for it would be penalised."""
    monkeypatch.setattr(limits, "MESH_MAX_HISTORY_IDS", 1)
    node, lazy = _lazy_setup()
    mesh = sorted(node.mesh.mesh_peers(ROOM))
    for seq in (1, 2):  # the second does not fit in the history
        node.mesh.received(mesh[0], ROOM, (ROOM, AUTHOR, seq), True, 0.1, limits.MESH_MAX_HOPS)
    ihave = sends(node.beat(), m.IHave)
    assert {p: f for p, f in ihave.items() if p != lazy} == {
        p: m.IHave(room=ROOM, ids=[(AUTHOR, 1)]) for p in mesh
    }


def test_our_message_goes_to_a_new_peer_before_its_rooms_frame_but_not_after_it_left() -> None:
    """Posted in the moment after a connect, before the peer said its rooms: it still goes
    live (left to sync it would arrive seconds later, after newer ones)."""
    node = Node()
    node.mesh.join(ROOM, 0.0)
    fresh, other_room = pid(7), pid(8)
    node.mesh.connected(fresh, 0.0)
    node.mesh.connected(other_room, 0.0)
    node.mesh.peer_rooms(other_room, ("elsewhere",), 0.0)
    assert node.mesh.publish(ROOM, (ROOM, ME, 1), 0.0) == [fresh]
    node.mesh.peer_rooms(fresh, (), 0.1)  # it holds no room: it gets nothing more
    assert node.mesh.publish(ROOM, (ROOM, ME, 2), 0.1) == []
    # A direct connection (a conversation, a file) gets no room traffic meanwhile either.
    node.mesh.connected(pid(9), 0.2, mesh=False)
    assert node.mesh.publish(ROOM, (ROOM, ME, 3), 0.2) == []


def test_idontwant_memory_is_bounded_per_peer() -> None:
    node = Node()
    a = pid(1)
    node.connect(a)
    node.mesh.join(ROOM, 0.0)
    for seq in range(0, 3 * limits.MESH_MAX_DONTWANT_PER_PEER, limits.MESH_MAX_IDONTWANT_IDS):
        ids = [(AUTHOR, s) for s in range(seq, seq + limits.MESH_MAX_IDONTWANT_IDS)]
        node.mesh.frame(a, m.IDontWant(room=ROOM, ids=ids), 0.0)
    assert len(node.mesh._peers[a].dontwant) == limits.MESH_MAX_DONTWANT_PER_PEER


# --- IHAVE / IWANT ----------------------------------------------------------------


def _lazy_setup() -> tuple[Node, str]:
    """A node with a full mesh and one extra room peer outside it (a gossip target)."""
    node = Node()
    node.connect(*peers(limits.MESH_D))
    node.mesh.join(ROOM, 0.0)
    lazy = pid(77)
    node.connect(lazy)
    node.mesh.frame(lazy, m.Prune(room=ROOM), 0.0)  # keep it out of the mesh
    return node, lazy


def test_heartbeat_sends_ihave_to_non_mesh_peers_and_serves_only_announced_ids() -> None:
    node, lazy = _lazy_setup()
    msg = (ROOM, AUTHOR, 1)
    node.held.add(msg)
    node.mesh.received(sorted(node.mesh.mesh_peers(ROOM))[0], ROOM, msg, True, 0.1)
    ihave = sends(node.beat(), m.IHave)
    assert set(ihave) == {lazy}
    assert ihave[lazy] == m.IHave(room=ROOM, ids=[(AUTHOR, 1)])
    out = node.mesh.frame(lazy, m.IWant(room=ROOM, ids=[(AUTHOR, 1)]), node.now)
    assert out == [MeshServe(lazy, [msg])]
    assert node.mesh.score(lazy, node.now) >= 0
    # Asked again (served once already), or never announced: nothing, and a penalty each.
    for _ in range(3):
        assert node.mesh.frame(lazy, m.IWant(room=ROOM, ids=[(AUTHOR, 1)]), node.now) == []
    assert node.mesh.score(lazy, node.now) < 0


def test_iwant_for_never_announced_ids_is_never_served_and_repeated_it_closes() -> None:
    node, lazy = _lazy_setup()
    node.held.update((ROOM, AUTHOR, s) for s in range(100))
    out: list[MeshAction] = []
    for s in range(30):
        out += node.mesh.frame(lazy, m.IWant(room=ROOM, ids=[(AUTHOR, s)]), 1.0)
    assert not [a for a in out if isinstance(a, MeshServe)]
    assert [a for a in out if isinstance(a, MeshClose)] == [MeshClose(lazy, Reason.LOW_SCORE)]


def test_ihave_is_answered_by_iwant_for_missing_ids_only_within_the_budget() -> None:
    node, lazy = _lazy_setup()
    held = (ROOM, AUTHOR, 1)
    node.held.add(held)
    ids = [(AUTHOR, s) for s in range(1, limits.MESH_MAX_IHAVE_IDS + 1)]
    out = node.mesh.frame(lazy, m.IHave(room=ROOM, ids=ids), 0.5)
    (iwant,) = sends(out, m.IWant).values()
    assert isinstance(iwant, m.IWant)
    assert iwant.ids == ids[1:]  # not the one held
    # Asked already: another IHAVE of the same ids, from anyone, asks nothing more.
    other = sorted(node.mesh.mesh_peers(ROOM))[0]
    assert node.mesh.frame(other, m.IHave(room=ROOM, ids=ids), 0.5) == []
    # The per-heartbeat budget of ids asked of one peer.
    more = [(AUTHOR, s) for s in range(1000, 1000 + limits.MESH_MAX_IHAVE_IDS)]
    (iwant,) = sends(node.mesh.frame(lazy, m.IHave(room=ROOM, ids=more), 0.5), m.IWant).values()
    assert isinstance(iwant, m.IWant)
    assert len(iwant.ids) == limits.MESH_MAX_IWANT_PER_HEARTBEAT - (len(ids) - 1)
    assert node.mesh.frame(lazy, m.IHave(room=ROOM, ids=more[1:]), 0.5) == []
    # The next heartbeat gives a new budget.
    node.beat()
    assert sends(node.mesh.frame(lazy, m.IHave(room=ROOM, ids=more), node.now), m.IWant)


def test_an_ihave_flood_is_ignored_beyond_the_bound_and_gets_the_peer_closed() -> None:
    node, lazy = _lazy_setup()
    asked = 0
    closes = []
    for i in range(40):
        out = node.mesh.frame(lazy, m.IHave(room=ROOM, ids=[(AUTHOR, 10_000 + i)]), 0.5)
        asked += len(sends(out, m.IWant))
        closes += [a for a in out if isinstance(a, MeshClose)]
    assert asked == limits.MESH_MAX_IHAVE_PER_HEARTBEAT
    assert closes == [MeshClose(lazy, Reason.LOW_SCORE)]


def test_a_broken_ihave_promise_costs_score() -> None:
    node, lazy = _lazy_setup()
    kept, broken = (AUTHOR, 1), (AUTHOR, 2)
    node.mesh.frame(lazy, m.IHave(room=ROOM, ids=[kept, broken]), 0.5)
    node.mesh.received(lazy, ROOM, (ROOM, *kept), True, 1.0)
    node.beat(limits.MESH_IWANT_FOLLOWUP_S + 1)
    assert node.mesh._peers[lazy].penalty > 0
    # Once asked and expired, the id may be asked again (of someone else).
    out = node.mesh.frame(
        sorted(node.mesh.mesh_peers(ROOM))[0], m.IHave(room=ROOM, ids=[broken]), node.now
    )
    assert sends(out, m.IWant)


def test_gossip_and_history_are_bounded() -> None:
    node, _lazy = _lazy_setup()
    sender = sorted(node.mesh.mesh_peers(ROOM))[0]
    for s in range(limits.MESH_MAX_HISTORY_IDS + 100):
        node.mesh.received(sender, ROOM, (ROOM, AUTHOR, s), True, 0.1)
    assert len(node.mesh._seen_at) == limits.MESH_MAX_HISTORY_IDS
    (ihave,) = sends(node.beat(), m.IHave).values()
    assert isinstance(ihave, m.IHave)
    assert len(ihave.ids) == limits.MESH_MAX_IHAVE_IDS


# --- scores -----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [10, 100])
def test_a_mesh_peer_that_never_forwards_loses_score_and_is_pruned_not_closed(rate: int) -> None:
    node = Node()
    good = peers(5)
    lazy = pid(66)  # never forwards, but talks: its own messages prove nothing
    node.connect(*good, lazy)
    node.mesh.join(ROOM, 0.0)
    assert lazy in node.mesh.mesh_peers(ROOM)
    pruned_at = None
    seq = 0
    actions: list[MeshAction] = []
    for second in range(40):
        node.mesh.received(lazy, ROOM, (ROOM, lazy, second + 1), True, second)
        for k in range(rate):  # each message first from some good peer
            seq += 1
            t = second + k / rate
            node.mesh.received(good[seq % len(good)], ROOM, (ROOM, AUTHOR, seq), True, t)
            for j in (1, 2):  # and as duplicates from two others
                node.mesh.received(good[(seq + j) % len(good)], ROOM, (ROOM, AUTHOR, seq), False, t)
        beat = node.beat()
        actions += beat
        if lazy in sends(beat, m.Prune) and pruned_at is None:
            pruned_at = second
    assert pruned_at is not None and pruned_at <= limits.MESH_HEARTBEAT_S * 15
    assert not node.mesh.forwards(lazy) or lazy not in node.mesh.mesh_peers(ROOM)
    assert set(good) <= node.mesh.mesh_peers(ROOM)
    assert all(node.mesh.score(p, node.now) > 0 for p in good)
    assert node.mesh.score(lazy, node.now) < 0
    # Not forwarding costs its mesh place, not its connection (P3 is capped).
    assert not [a for a in actions if isinstance(a, MeshClose)]
    assert node.mesh.score(lazy, node.now) > limits.MESH_CLOSE_THRESHOLD


def test_invalid_messages_lower_the_score_until_close() -> None:
    node = Node()
    a = pid(1)
    node.connect(a)
    out: list[MeshAction] = []
    for _ in range(5):
        out += node.mesh.invalid(a, 0.0)
    assert out == [MeshClose(a, Reason.LOW_SCORE)]


def test_penalties_survive_a_reconnect() -> None:
    node = Node()
    a = pid(1)
    node.connect(a)
    node.mesh.invalid(a, 0.0)
    before = node.mesh.score(a, 0.0)
    node.mesh.disconnected(a, 1.0)
    node.mesh.candidate(a, 1.0)
    assert a not in node.mesh.candidates()  # penalised: not dialled
    node.connect(a)
    assert node.mesh.score(a, 1.0) == before < 0


# --- degree -----------------------------------------------------------------------


def test_under_d_lo_the_mesh_dials_candidates_a_few_per_heartbeat() -> None:
    node = Node()
    node.mesh.join(ROOM, 0.0)
    for p in peers(20, start=200):
        node.mesh.candidate(p, 0.0)
    node.mesh.candidate(ME, 0.0)
    dials = [a for a in node.beat() if isinstance(a, MeshDial)]
    assert len(dials) == limits.MESH_MAX_DIALS_PER_HEARTBEAT
    assert not [a for a in node.beat() if isinstance(a, MeshDial)]  # still waiting for those
    for d in dials:
        node.connect(d.peer)
    assert len(node.mesh.mesh_peers(ROOM)) == limits.MESH_D_LO
    assert not [a for a in node.beat() if isinstance(a, MeshDial)]
    # Dials that never connect are dropped after the timeout: others are tried.
    node2 = Node()
    node2.mesh.join(ROOM, 0.0)
    for p in peers(8, start=300):
        node2.mesh.candidate(p, 0.0)
    first = {a.peer for a in node2.beat() if isinstance(a, MeshDial)}
    later = {a.peer for a in node2.beat(limits.MESH_DIAL_TIMEOUT_S + 1) if isinstance(a, MeshDial)}
    assert later and not later & first


def test_candidates_are_bounded() -> None:
    node = Node()
    for i in range(limits.MESH_MAX_CANDIDATES + 50):
        node.mesh.candidate(pid(1000 + i), 0.0)
    assert len(node.mesh.candidates()) == limits.MESH_MAX_CANDIDATES
    # A PRUNE's peer exchange feeds them (bounded by the frame).
    node.connect(pid(1))
    node.mesh.join(ROOM, 0.0)
    node.mesh.frame(pid(1), m.Prune(room=ROOM, px=[pid(5000)]), 0.0)
    assert node.mesh.candidates()[-1] == pid(5000)


def test_connections_beyond_d_hi_and_the_margin_are_closed_lowest_score_first_never_direct() -> (
    None
):
    node = Node()
    node.mesh.join(ROOM, 0.0)
    ps = peers(limits.MESH_D_HI + limits.MESH_CONN_MARGIN + 5)
    node.connect(*ps, outbound=True)  # ours: taken, the heartbeat trims
    direct = pid(500)
    node.mesh.connected(direct, 0.0, mesh=False)
    node.mesh.peer_rooms(direct, [ROOM], 0.0)
    node.mesh.invalid(ps[-1], 0.0)  # the worst one
    closes = [a for a in node.beat(limits.MESH_CONN_GRACE_S + 1) if isinstance(a, MeshClose)]
    assert len(closes) == 5
    assert {c.reason for c in closes} == {Reason.MESH_FULL}
    closed = {c.peer for c in closes}
    assert ps[-1] in closed
    assert not closed & node.mesh.mesh_peers(ROOM)
    assert direct not in closed and direct not in node.mesh.mesh_peers(ROOM)
    assert node.mesh.connections() == len(ps)  # closes are asked; the adapter reports them
    for c in closes:
        node.mesh.disconnected(c.peer, node.now)
    assert node.mesh.connections() == limits.MESH_D_HI + limits.MESH_CONN_MARGIN
    assert not [a for a in node.beat() if isinstance(a, MeshClose)]


# --- invariants under churn (hypothesis) ----------------------------------------------

_op = st.one_of(
    st.tuples(st.just("connect"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("disconnect"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("rooms"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("graft"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("prune"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("ihave"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("iwant"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("msg"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("invalid"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("choke"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("rejoin"), st.integers(1, 30), st.booleans()),
    st.tuples(st.just("beat"), st.integers(1, 30), st.booleans()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=80), st.integers(0, 2**32))
def test_any_churn_keeps_the_mesh_within_bounds_and_never_raises(
    ops: list[tuple[str, int, bool]], seed: int
) -> None:
    node = Node(seed)
    mesh = node.mesh
    mesh.join(ROOM, 0.0)
    t = 0.0
    for op, i, flag in ops:
        p = pid(i)
        t += 0.1
        if op == "connect":
            mesh.connected(p, t, outbound=flag)
            mesh.peer_rooms(p, [ROOM] if flag or i % 3 else ["other"], t)
        elif op == "disconnect":
            mesh.disconnected(p, t)
        elif op == "rooms":
            mesh.peer_rooms(p, [ROOM] if flag else [], t)
        elif op == "graft":
            mesh.frame(p, m.Graft(room=ROOM), t)
        elif op == "prune":
            mesh.frame(p, m.Prune(room=ROOM, px=[pid(i + 40)] if flag else []), t)
        elif op == "ihave":
            mesh.frame(p, m.IHave(room=ROOM, ids=[(AUTHOR, i)]), t)
        elif op == "iwant":
            mesh.frame(p, m.IWant(room=ROOM, ids=[(AUTHOR, i)]), t)
        elif op == "msg":
            targets, _ = mesh.received(p, ROOM, (ROOM, AUTHOR, i), flag, t)
            assert p not in targets
            assert set(targets) <= mesh.mesh_peers(ROOM)
        elif op == "invalid":
            mesh.invalid(p, t)
        elif op == "rejoin":  # leave and join again (or another room, briefly)
            mesh.leave(ROOM if flag else "other", t)
            mesh.join(ROOM, t)
            mesh.join("other", t)
        elif op == "choke":
            mesh.frame(p, m.Choke(room=ROOM) if flag else m.Unchoke(room=ROOM), t)
        else:
            t += i
            mesh.handle_timer(t)
            size = len(mesh.mesh_peers(ROOM))
            assert size <= limits.MESH_D_HI
            if size < limits.MESH_D_LO:
                # Only when no eligible peer is left outside the mesh.
                outside = mesh._room_peers[ROOM] - mesh.mesh_peers(ROOM)
                assert not [q for q in outside if mesh._graftable(q, ROOM, t)]
        assert mesh.mesh_peers(ROOM) <= set(mesh._peers)
        assert ME not in mesh.mesh_peers(ROOM)


# --- Replica + Mesh on a small simulated network (tests/unit/mesh_sim.py) --------------


def _traffic(net: MeshNet, messages: int, seed: int) -> None:
    rng = random.Random(seed)
    names = sorted(net.nodes)
    for i in range(messages):
        net.write(rng.choice(names), f"m{i}")
        net.run(0.1)


def test_replica_and_mesh_deliver_everything_live_over_a_bounded_mesh() -> None:
    net = MeshNet(40, seed=7)
    net.discover_all()
    net.run(15.0)  # the meshes build from the candidates
    for node in net.nodes.values():
        assert limits.MESH_D_LO <= len(node.mesh.mesh_peers(mesh_sim.ROOM)) <= limits.MESH_D_HI
    _traffic(net, 100, seed=3)
    net.run(5.0)
    for node in net.nodes.values():
        assert set(net.written) <= set(node.store), node.name
    total = len(net.nodes) * len(net.written)
    live = sum(n.live for n in net.nodes.values())
    copies = sum(n.received for n in net.nodes.values())
    assert live >= 0.99 * (total - len(net.written))  # at most 1% came first by sync
    # Eager push to ~D peers, not a flood to everyone (40 here): few copies per message.
    assert copies / total < limits.MESH_D
    assert net.max_connections <= limits.MESH_D_HI + limits.MESH_CONN_MARGIN


def test_a_fifth_of_freeloaders_do_not_stop_delivery_and_get_pruned() -> None:
    net = MeshNet(40, seed=11, freeloaders=8)
    net.discover_all()
    net.run(15.0)
    _traffic(net, 250, seed=5)  # P3 needs traffic: each freeloader is caught 5 s into a mesh
    net.run(5.0)
    for node in net.nodes.values():
        if not node.freeloader:  # pruned everywhere, they wait for sync
            assert set(net.written) <= set(node.store), node.name
    freeloaders = {n for n, node in net.nodes.items() if node.freeloader}
    meshed = sum(
        len(node.mesh.mesh_peers(mesh_sim.ROOM) & freeloaders)
        for node in net.nodes.values()
        if not node.freeloader
    )
    good = [node for node in net.nodes.values() if not node.freeloader]
    edges = sum(len(node.mesh.mesh_peers(mesh_sim.ROOM)) for node in good)
    assert meshed / edges < 0.05  # from a fifth of the mesh to (nearly) none
    net.run(limits.SYNC_INTERVAL_S)
    for node in net.nodes.values():
        assert set(net.written) <= set(node.store), node.name


# --- choking (episub) -------------------------------------------------------------------


def test_mesh_peers_most_often_second_are_choked_down_to_choke_keep_and_owe_no_quota() -> None:
    node = Node()
    fast = peers(limits.MESH_CHOKE_KEEP)
    slow = peers(limits.MESH_D - limits.MESH_CHOKE_KEEP, start=10)
    node.connect(*fast, *slow)
    node.mesh.join(ROOM, 0.0)
    assert node.mesh.mesh_peers(ROOM) == set(fast + slow)
    chokes: list[str] = []
    seq = 0
    for second in range(20):
        for k in range(10):
            seq += 1
            msg = (ROOM, AUTHOR, seq)
            t = second + k / 10
            node.mesh.received(fast[seq % len(fast)], ROOM, msg, True, t)
            for p in [*fast, *slow]:  # every other mesh peer brings a later copy
                if p != fast[seq % len(fast)]:
                    node.mesh.received(p, ROOM, msg, False, t)
        chokes += list(sends(node.beat(), m.Choke))
    assert sorted(chokes) == sorted(slow)  # one a heartbeat, never a fast one
    # IDONTWANT goes only to the peers that still push to us.
    out = node.mesh.dont_want(fast[0], ROOM, (ROOM, AUTHOR, 9999), node.now)
    assert set(sends(out, m.IDontWant)) == set(fast[1:])
    assert all(node.mesh.score(p, node.now) > 0 for p in slow)  # choked: no P3 deficit
    assert node.mesh.mesh_peers(ROOM) == set(fast + slow)
    # A choked peer whose IHAVE shows an id we lack is ahead: unchoked at once.
    out = node.mesh.frame(slow[0], m.IHave(room=ROOM, ids=[(AUTHOR, 10_000)]), node.now)
    assert slow[0] in sends(out, m.Unchoke) and slow[0] in sends(out, m.IWant)
    # When pushing peers leave, the best choked ones are unchoked.
    for p in fast:
        node.mesh.disconnected(p, node.now)
    unchoked = sends(node.beat(), m.Unchoke)
    assert set(unchoked) == set(slow[1:])


def test_a_feed_whose_first_copies_reach_the_hop_limit_is_choked_first() -> None:
    """Its copies go no further, so they count as second: a peer that always comes first but
    says its copies crossed the limit (a long chain, or a lie that would starve the peers we
    push to) is choked, and the honest feeds that come after it keep pushing."""
    node = Node()
    liar, honest = pid(1), peers(limits.MESH_CHOKE_KEEP + 1, start=10)
    node.connect(liar, *honest)
    node.mesh.join(ROOM, 0.0)
    chokes: list[str] = []
    for seq in range(1, 101):
        msg, t = (ROOM, AUTHOR, seq), seq / 10
        targets, _ = node.mesh.received(liar, ROOM, msg, True, t, limits.MESH_MAX_HOPS)
        assert not targets
        for p in honest:
            node.mesh.received(p, ROOM, msg, False, t)
        if seq % 10 == 0:
            chokes += list(sends(node.beat(), m.Choke))
    assert chokes[0] == liar and len(chokes) == 2
    # MESH_CHOKE_KEEP honest feeds still push to us (IDONTWANT goes to them), not the liar.
    feeds = set(sends(node.mesh.dont_want(None, ROOM, (ROOM, AUTHOR, 999), node.now), m.IDontWant))
    assert len(feeds) == limits.MESH_CHOKE_KEEP and liar not in feeds


def test_a_peer_that_chokes_us_gets_no_pushes_but_an_ihave_each_heartbeat() -> None:
    node = Node()
    ps = peers(4)
    node.connect(*ps)
    node.mesh.join(ROOM, 0.0)
    node.mesh.frame(ps[0], m.Choke(room=ROOM), 0.0)
    msg = (ROOM, AUTHOR, 1)
    targets, _ = node.mesh.received(ps[1], ROOM, msg, True, 0.1)
    assert targets == sorted(ps[2:])
    assert node.mesh.publish(ROOM, (ROOM, ME, 1), 0.2) == sorted(ps)  # own: flood publishing
    ihave = sends(node.beat(), m.IHave)
    assert ihave[ps[0]] == m.IHave(room=ROOM, ids=[(AUTHOR, 1), (ME, 1)])
    node.held.add(msg)
    assert node.mesh.frame(ps[0], m.IWant(room=ROOM, ids=[(AUTHOR, 1)]), 1.1) == [
        MeshServe(ps[0], [msg])
    ]
    node.mesh.frame(ps[0], m.Unchoke(room=ROOM), 1.2)
    targets, _ = node.mesh.received(ps[1], ROOM, (ROOM, AUTHOR, 2), True, 1.3)
    assert ps[0] in targets
    # A choke from a peer outside the mesh changes nothing.
    node.mesh.frame(ps[0], m.Prune(room=ROOM), 1.4)
    node.mesh.frame(ps[0], m.Choke(room=ROOM), 1.5)
    assert node.mesh.mesh_peers(ROOM) == set(ps[1:])


# --- more bounds ----------------------------------------------------------------------


def test_ids_served_per_peer_per_heartbeat_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MESH_MAX_SERVE_PER_HEARTBEAT", 100)  # below one IHAVE's ids
    node, lazy = _lazy_setup()
    sender = sorted(node.mesh.mesh_peers(ROOM))[0]
    count = limits.MESH_MAX_IHAVE_IDS
    for s in range(count):
        node.held.add((ROOM, AUTHOR, s))
        node.mesh.received(sender, ROOM, (ROOM, AUTHOR, s), True, 0.1)
    node.beat()  # announces all of them to lazy
    half = count // 2
    served = 0
    for lo in (0, half):
        ids = [(AUTHOR, s) for s in range(lo, lo + half)]
        for a in node.mesh.frame(lazy, m.IWant(room=ROOM, ids=ids), node.now):
            served += len(a.ids) if isinstance(a, MeshServe) else 0
    assert served == limits.MESH_MAX_SERVE_PER_HEARTBEAT
    node.beat()
    ids = [(AUTHOR, s) for s in range(count - 10, count)]  # not yet asked: still announced
    (serve,) = node.mesh.frame(lazy, m.IWant(room=ROOM, ids=ids), node.now)
    assert isinstance(serve, MeshServe) and len(serve.ids) == 10


def test_rooms_tracked_per_peer_backoffs_and_retained_peers_are_bounded() -> None:
    node = Node()
    a = pid(1)
    node.connect(a)
    node.mesh.peer_rooms(a, [f"r{i}" for i in range(2 * limits.MESH_MAX_PEER_ROOMS)], 0.0)
    assert len(node.mesh._peers[a].rooms) == limits.MESH_MAX_PEER_ROOMS
    rooms = [f"r{i}" for i in range(40)]
    for room in rooms:
        node.mesh.join(room, 0.0)
    for i in range(limits.MESH_MAX_BACKOFFS // len(rooms) + 10):
        p = pid(100 + i)
        node.connect(p, rooms=tuple(rooms))
        for room in rooms:
            node.mesh.frame(p, m.Prune(room=room), 0.0)
        node.mesh.disconnected(p, 0.0)
    assert len(node.mesh._backoff) == limits.MESH_MAX_BACKOFFS
    for i in range(limits.MESH_MAX_RETAINED + 10):
        p = pid(10_000 + i)
        node.mesh.connected(p, 0.0)
        node.mesh.invalid(p, 0.0)
        node.mesh.disconnected(p, 0.0)
    assert len(node.mesh._retained) == limits.MESH_MAX_RETAINED


def test_with_ten_percent_loss_everything_arrives_within_five_seconds() -> None:
    net = MeshNet(40, seed=5, loss=0.1)
    net.discover_all()
    net.run(15.0)
    _traffic(net, 100, seed=3)
    net.run(5.0)  # before any periodic sync: redundant pushes, gossip and vectors repaired it
    for node in net.nodes.values():
        assert set(net.written) <= set(node.store), node.name
    live = sum(n.live for n in net.nodes.values())
    assert live >= 0.99 * (len(net.nodes) - 1) * len(net.written)


def test_ten_of_forty_killed_mid_run_the_rest_get_everything_and_the_killed_catch_up() -> None:
    net = MeshNet(40, seed=13)
    net.discover_all()
    net.run(15.0)
    _traffic(net, 50, seed=1)
    killed = sorted(net.nodes)[::4]  # 10 nodes
    for name in killed:
        net.kill(name)
    rng = random.Random(2)
    alive = sorted(set(net.nodes) - set(killed))
    for i in range(50):
        net.write(rng.choice(alive), f"late{i}")
        net.run(0.1)
    net.run(3.0)
    for name in alive:
        assert set(net.written) <= set(net.nodes[name].store), name
        assert len(net.nodes[name].mesh.mesh_peers(mesh_sim.ROOM)) >= limits.MESH_D_LO
    for name in killed:
        net.revive(name)
    net.run(5.0)  # the vectors of new connections push what they missed
    for node in net.nodes.values():
        assert set(net.written) <= set(node.store), node.name
        assert len(node.peers) <= limits.MESH_D_HI + limits.MESH_CONN_MARGIN


def test_an_inbound_connection_beyond_the_limit_gets_peer_exchange_and_a_close() -> None:
    node = Node()
    node.mesh.join(ROOM, 0.0)
    ps = peers(limits.MESH_D_HI + limits.MESH_CONN_MARGIN)
    node.connect(*ps)
    late = pid(900)
    out = node.mesh.connected(late, 1.0)
    (prune,) = sends(out, m.Prune).values()
    assert isinstance(prune, m.Prune) and prune.px and set(prune.px) <= set(ps)
    assert out[-1] == MeshClose(late, Reason.MESH_FULL)
    assert node.mesh.score(late, 1.0) >= 0  # no blame: just full


def test_dials_never_aim_past_d_hi_connections() -> None:
    node = Node()
    node.mesh.join(ROOM, 0.0)
    node.connect(*peers(limits.MESH_D_HI - 2), rooms=("other",))  # connected, none in the room
    for p in peers(20, start=200):
        node.mesh.candidate(p, 0.0)
    dials = [a for a in node.beat() if isinstance(a, MeshDial)]
    assert len(dials) == 2  # the mesh is empty, but 2 more reach D_hi


def test_what_was_asked_of_a_peer_that_leaves_may_be_asked_of_another_at_once() -> None:
    node, lazy = _lazy_setup()
    other = sorted(node.mesh.mesh_peers(ROOM))[0]
    ids = [(AUTHOR, 1)]
    assert sends(node.mesh.frame(lazy, m.IHave(room=ROOM, ids=ids), 0.5), m.IWant)
    assert node.mesh.frame(other, m.IHave(room=ROOM, ids=ids), 0.6) == []  # asked already
    node.mesh.disconnected(lazy, 0.7)
    assert sends(node.mesh.frame(other, m.IHave(room=ROOM, ids=ids), 0.8), m.IWant)


def test_a_graft_before_the_peers_rooms_frame_is_refused_with_a_short_backoff() -> None:
    node = Node()
    node.mesh.join(ROOM, 0.0)
    a = pid(1)
    node.mesh.connected(a, 0.0)
    (prune,) = sends(node.mesh.frame(a, m.Graft(room=ROOM), 0.0), m.Prune).values()
    assert prune == m.Prune(room=ROOM, backoff_s=limits.MESH_UNKNOWN_ROOM_BACKOFF_S)
    assert node.mesh.score(a, 0.0) == 0  # no blame
    node.mesh.peer_rooms(a, [ROOM], 0.1)  # its Rooms frame arrives: grafted (mesh under D_lo)
    assert a in node.mesh.mesh_peers(ROOM)
    # A direct connection is never meshed.
    d = pid(2)
    node.mesh.connected(d, 0.0, mesh=False)
    node.mesh.peer_rooms(d, [ROOM], 0.0)
    assert sends(node.mesh.frame(d, m.Graft(room=ROOM), 0.0), m.Prune)
    assert d not in node.mesh.mesh_peers(ROOM)


def test_only_ids_of_the_windows_announced_to_a_peer_are_served() -> None:
    node, lazy = _lazy_setup()
    sender = sorted(node.mesh.mesh_peers(ROOM))[0]
    old, new = (ROOM, AUTHOR, 1), (ROOM, AUTHOR, 2)
    node.held.update((old, new))
    node.mesh.received(sender, ROOM, old, True, 0.1)
    assert lazy in sends(node.beat(), m.IHave)  # announces old
    node.mesh.received(sender, ROOM, new, True, node.now + 0.1)  # after that IHAVE
    out = node.mesh.frame(lazy, m.IWant(room=ROOM, ids=[(AUTHOR, 1), (AUTHOR, 2)]), node.now)
    assert out == [MeshServe(lazy, [old])]
    assert node.mesh._peers[lazy].penalty == 1.0
    # Once the announced window left the history, nothing of it is served either.
    node.beat(limits.MESH_HISTORY_LEN + 1)
    node.mesh._peers[lazy].penalty = 0.0
    assert node.mesh.frame(lazy, m.IWant(room=ROOM, ids=[(AUTHOR, 1)]), node.now) == []


def test_an_idontwant_is_forgotten_at_the_heartbeat_once_the_message_was_seen() -> None:
    node = Node()
    a, b = pid(1), pid(2)
    node.connect(a, b)
    node.mesh.join(ROOM, 0.0)
    node.mesh.frame(a, m.IDontWant(room=ROOM, ids=[(AUTHOR, 1), (AUTHOR, 2)]), 0.0)
    node.mesh.received(b, ROOM, (ROOM, AUTHOR, 1), True, 0.1)
    node.beat()
    assert list(node.mesh._peers[a].dontwant) == [(ROOM, AUTHOR, 2)]  # 2 may still come
    targets, _ = node.mesh.received(b, ROOM, (ROOM, AUTHOR, 2), True, node.now)
    assert a not in targets


def test_a_listener_is_not_pruned_for_not_forwarding_our_own_messages() -> None:
    """Two nodes, only we talk (the two-node fast path, a lecture): the peer cannot deliver
    our own messages back to us, so they must not raise its delivery quota (P3); it stays
    in our mesh and keeps getting every message pushed."""
    node = Node()
    node.mesh.join(ROOM, node.now)
    (peer,) = peers(1)
    node.connect(peer)
    assert node.mesh.mesh_peers(ROOM) == {peer}
    seq = 0
    for _ in range(60):  # a minute at 50 messages a second
        for _ in range(50):
            seq += 1
            assert node.mesh.publish(ROOM, (ROOM, ME, seq), node.now) == [peer]
        node.beat(1.0)
    assert node.mesh.score(peer, node.now) >= 0
    assert node.mesh.mesh_peers(ROOM) == {peer}
