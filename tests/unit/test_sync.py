"""protocol/sync.py: vectors, gaps, floors and push plans, in memory, no I/O.

The first half pins down SyncState call by call; the second half runs many
nodes through sync_sim.py (the real replica plus a dict store) under schedules
chosen by hypothesis: links that reorder, drop and duplicate, connections
that come and go, and then checks convergence.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_sim import FloorItem, Item, Msg, SimNet, SimNode, VectorItem, WantItem
from unit_support import FUZZ

from chinwag import limits
from chinwag.protocol import replica as rp
from chinwag.protocol.sync import AuthorState, PushRange, SyncState

ROOM = "general"
A = "a" * 64
B = "b" * 64
#: The simulator properties: fewer examples than FUZZ, each runs a whole network.
SIM = settings(FUZZ, max_examples=150)


def state(s: SyncState, author: str = A, room: str = ROOM) -> tuple[int, int, set[int]]:
    st_ = s.rooms[room][author]
    return st_.base, st_.have, set(st_.above)


def accepted(*seqs: int, author: str = A, room: str = ROOM) -> SyncState:
    s = SyncState()
    for seq in seqs:
        s.accept(room, author, seq)
    return s


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(limits, "HISTORY_OFFER", 5)
    monkeypatch.setattr(limits, "MAX_WANT_RANGE", 4)
    monkeypatch.setattr(limits, "MAX_ABOVE_PER_AUTHOR", 3)
    yield


# --- accept, holds, gap ----------------------------------------------------


def test_accept_in_order() -> None:
    s = accepted(1, 2, 3)
    assert state(s) == (1, 3, set())
    assert s.rooms[ROOM][A].gap() is None
    assert s.vector(ROOM) == {A: 3}


def test_accept_out_of_order_then_gap_fills() -> None:
    s = accepted(3, 5)
    assert state(s) == (1, 0, {3, 5})
    assert s.rooms[ROOM][A].gap() == (1, 2)
    assert s.vector(ROOM) == {}  # nothing contiguous from 1 yet
    s.accept(ROOM, A, 1)
    assert state(s) == (1, 1, {3, 5})
    assert s.rooms[ROOM][A].gap() == (2, 2)
    s.accept(ROOM, A, 2)  # absorbs 3, stops at the hole at 4
    assert state(s) == (1, 3, {5})
    assert s.rooms[ROOM][A].gap() == (4, 4)
    s.accept(ROOM, A, 4)
    assert state(s) == (1, 5, set())
    assert s.rooms[ROOM][A].gap() is None


def test_accept_duplicates_change_nothing() -> None:
    s = accepted(1, 2, 4)
    before = state(s)
    for seq in (1, 2, 4, 4, 1):
        s.accept(ROOM, A, seq)
    assert state(s) == before == (1, 2, {4})


@pytest.mark.parametrize(
    ("seqs", "gap"),
    [
        ((), None),
        ((1, 2), None),
        ((2,), (1, 1)),
        ((10,), (1, 9)),
        ((1, 2, 7, 9), (3, 6)),  # the first hole only
        ((1, 3, 4, 8), (2, 2)),
    ],
)
def test_gap_is_the_first_hole(seqs: tuple[int, ...], gap: tuple[int, int] | None) -> None:
    s = accepted(*seqs)
    assert s.author(ROOM, A).gap() == gap


def test_absorb_directly() -> None:
    a = AuthorState(base=1, have=2, above={4, 5, 7})
    a.absorb()
    assert (a.have, a.above) == (2, {4, 5, 7})
    a.above.add(3)
    a.absorb()
    assert (a.have, a.above) == (5, {7})


def test_holds() -> None:
    s = accepted(1, 2, 5)
    assert [s.holds(ROOM, A, q) for q in range(0, 7)] == [
        False,
        True,
        True,
        False,
        False,
        True,
        False,
    ]
    assert not s.holds(ROOM, B, 1)
    assert not s.holds("elsewhere", A, 1)


def test_rooms_and_authors_are_independent() -> None:
    s = SyncState()
    s.accept(ROOM, A, 1)
    s.accept(ROOM, B, 2)
    s.accept("dev", A, 1)
    s.accept("dev", A, 2)
    assert s.vector(ROOM) == {A: 1}
    assert s.vector("dev") == {A: 2}
    assert s.author(ROOM, B).gap() == (1, 1)
    assert s.vector("nowhere") == {}


# --- set_floor -------------------------------------------------------------


def test_floor_moves_have() -> None:
    s = accepted(1, 2)
    assert s.set_floor(ROOM, A, 10) is True
    assert state(s) == (10, 9, set())
    assert s.vector(ROOM) == {A: 9}
    # Below the floor is written off: not held, and late arrivals change nothing.
    assert not s.holds(ROOM, A, 1)
    s.accept(ROOM, A, 5)
    assert state(s) == (10, 9, set())
    s.accept(ROOM, A, 10)
    assert state(s) == (10, 10, set())


def test_floor_drops_held_seqs_below_it_and_absorbs_the_rest() -> None:
    s = accepted(1, 2, 5, 8, 10, 11, 13)
    assert s.set_floor(ROOM, A, 9) is True
    # 5 and 8 are below the floor: gone from `above`; 10, 11 become contiguous from 9.
    assert state(s) == (9, 8, {10, 11, 13})
    assert s.author(ROOM, A).gap() == (9, 9)
    assert s.set_floor(ROOM, A, 10) is True
    assert state(s) == (10, 11, {13})
    assert s.author(ROOM, A).gap() == (12, 12)


def test_floor_exactly_at_a_held_seq() -> None:
    s = accepted(12, 13, 15)
    assert s.set_floor(ROOM, A, 12) is True
    assert state(s) == (12, 13, {15})


@pytest.mark.parametrize("floor", [-3, 0, 1, 2, 5, 6])
def test_floor_at_or_below_have_plus_one_is_a_no_op(floor: int) -> None:
    s = accepted(1, 2, 3, 4, 5, 9)
    assert s.set_floor(ROOM, A, floor) is False
    assert state(s) == (1, 5, {9})


def test_floor_below_an_earlier_floor_is_a_no_op() -> None:
    s = SyncState()
    assert s.set_floor(ROOM, A, 20) is True
    assert s.set_floor(ROOM, A, 10) is False
    assert state(s) == (20, 19, set())


def test_floor_for_an_unknown_author() -> None:
    s = SyncState()
    assert s.set_floor(ROOM, B, 7) is True
    assert state(s, B) == (7, 6, set())
    assert s.vector(ROOM) == {B: 6}
    assert s.author(ROOM, B).gap() is None


# --- load ------------------------------------------------------------------


def test_load_from_unordered_seqs() -> None:
    s = SyncState()
    s.load(ROOM, A, 1, [5, 1, 3, 2, 9])
    assert state(s) == (1, 3, {5, 9})
    s.load(ROOM, B, 4, [1, 2, 4, 5, 7])  # below the floor: ignored
    assert state(s, B) == (4, 5, {7})
    s.load("dev", A, 0, [])
    assert state(s, A, "dev") == (1, 0, set())


def test_load_contiguous() -> None:
    s = SyncState()
    s.load_contiguous(ROOM, A, 1, 40)
    s.load_contiguous(ROOM, B, 30, 40)
    assert state(s) == (1, 40, set())
    assert state(s, B) == (30, 40, set())
    assert s.holds(ROOM, B, 30) and not s.holds(ROOM, B, 29)


# --- vector ----------------------------------------------------------------


def test_vector_omits_authors_with_nothing_contiguous() -> None:
    s = accepted(2, 3)
    s.accept(ROOM, B, 1)
    s.author(ROOM, "c" * 64)  # created but empty (as history.next_seq does)
    assert s.vector(ROOM) == {B: 1}


# --- push_plan -------------------------------------------------------------


def test_push_plan_nothing_when_equal_or_peer_ahead() -> None:
    s = accepted(1, 2, 3)
    s.accept(ROOM, B, 1)
    assert s.push_plan(ROOM, {A: 3, B: 1}) == []
    assert s.push_plan(ROOM, {A: 7, B: 2, "c" * 64: 4}) == []
    assert s.push_plan("nowhere", {}) == []


def test_push_plan_ranges_from_their_have_plus_one() -> None:
    s = accepted(1, 2, 3, 4, 5, 8)  # 8 is above a gap: never pushed
    for seq in (1, 2):
        s.accept(ROOM, B, seq)
    plan = s.push_plan(ROOM, {A: 2})
    assert sorted(plan, key=lambda r: r.author) == [
        PushRange(A, 3, 5, None),
        PushRange(B, 1, 2, None),
    ]
    assert s.push_plan(ROOM, {A: 4, B: 2}) == [PushRange(A, 5, 5, None)]


def test_push_plan_bounded_by_history_offer(small_limits: None) -> None:
    s = accepted(*range(1, 21))
    assert s.push_plan(ROOM, {}) == [PushRange(A, 16, 20, 16)]
    assert s.push_plan(ROOM, {A: 3}) == [PushRange(A, 16, 20, 16)]
    assert s.push_plan(ROOM, {A: 14}) == [PushRange(A, 16, 20, 16)]
    # Their have+1 is within the offer: no floor needed.
    assert s.push_plan(ROOM, {A: 15}) == [PushRange(A, 16, 20, None)]
    assert s.push_plan(ROOM, {A: 18}) == [PushRange(A, 19, 20, None)]


def test_push_plan_floor_from_our_own_base() -> None:
    s = SyncState()
    s.set_floor(ROOM, A, 10)
    for seq in (10, 11, 12):
        s.accept(ROOM, A, seq)
    assert s.push_plan(ROOM, {}) == [PushRange(A, 10, 12, 10)]
    assert s.push_plan(ROOM, {A: 8}) == [PushRange(A, 10, 12, 10)]
    assert s.push_plan(ROOM, {A: 9}) == [PushRange(A, 10, 12, None)]


def test_push_plan_floor_only() -> None:
    # We hold nothing from our floor on: the plan is just the floor (an empty range).
    s = SyncState()
    s.set_floor(ROOM, A, 10)
    assert s.push_plan(ROOM, {A: 2}) == [PushRange(A, 10, 9, 10)]
    assert s.push_plan(ROOM, {A: 9}) == []


# --- want_plan -------------------------------------------------------------


def test_want_plan_unknown_author_or_room() -> None:
    s = accepted(1, 2)
    assert s.want_plan(ROOM, B, 1, 2) is None
    assert s.want_plan("dev", A, 1, 2) is None


def test_want_plan_within_what_we_hold() -> None:
    s = accepted(1, 2, 3, 4, 7, 8)
    assert s.want_plan(ROOM, A, 2, 3) == PushRange(A, 2, 3, None, resend=True)
    # Clipped to the highest seq held, including seqs above our own gap.
    assert s.want_plan(ROOM, A, 3, 100) == PushRange(A, 3, 8, None, resend=True)
    assert s.want_plan(ROOM, A, 9, 20) is None
    assert s.want_plan(ROOM, A, 5, 3) is None  # an empty (inverted) want


def test_want_plan_clipped_to_max_want_range(small_limits: None) -> None:
    s = accepted(1, 2, 3, 4, 5)
    assert s.want_plan(ROOM, A, 1, 100) == PushRange(A, 1, 4, None, resend=True)
    assert s.want_plan(ROOM, A, 2, 3) == PushRange(A, 2, 3, None, resend=True)


def test_want_plan_clipped_to_the_offer(small_limits: None) -> None:
    s = accepted(*range(1, 21))
    # Offer is 16..20; a want reaching below it gets the floor and the offered part.
    assert s.want_plan(ROOM, A, 3, 18) == PushRange(A, 16, 18, 16, resend=True)
    assert s.want_plan(ROOM, A, 16, 18) == PushRange(A, 16, 18, None, resend=True)
    # Wholly below the offer: a floor-only plan.
    assert s.want_plan(ROOM, A, 3, 9) == PushRange(A, 16, 15, 16)


def test_want_plan_below_our_own_base() -> None:
    s = SyncState()
    s.set_floor(ROOM, A, 10)
    s.accept(ROOM, A, 10)
    s.accept(ROOM, A, 11)
    assert s.want_plan(ROOM, A, 1, 5) == PushRange(A, 10, 9, 10)
    assert s.want_plan(ROOM, A, 1, 10) == PushRange(A, 10, 10, 10, resend=True)


# --- MAX_ABOVE_PER_AUTHOR ----------------------------------------------------


def test_above_is_bounded_keeping_the_seqs_nearest_the_gap(small_limits: None) -> None:
    s = accepted(9, 3, 7, 5, 4, 20, 2)
    above = state(s)[2]
    assert len(above) == limits.MAX_ABOVE_PER_AUTHOR == 3
    # The seqs dropped are the highest: those kept can be absorbed once the gap fills.
    assert above == {2, 3, 4}
    s.accept(ROOM, A, 1)
    assert state(s) == (1, 4, set())
    # Forgotten seqs are fetched again; accepting them again resumes progress.
    for seq in (5, 7, 9, 6, 8):
        s.accept(ROOM, A, seq)
    assert state(s) == (1, 9, set())


def test_above_bound_with_many_sparse_seqs(small_limits: None) -> None:
    s = SyncState()
    for seq in range(1000, 2, -7):
        s.accept(ROOM, A, seq)
        assert len(s.rooms[ROOM][A].above) <= limits.MAX_ABOVE_PER_AUTHOR


# --- model check: accept and set_floor against a plain set -----------------


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("accept"), st.integers(-2, 40)),
            st.tuples(st.just("floor"), st.integers(-2, 45)),
        ),
        max_size=60,
    )
)
def test_state_matches_a_set_model(ops: list[tuple[str, int]]) -> None:
    s = SyncState()
    held: set[int] = set()
    base = 1
    for op, n in ops:
        if op == "accept":
            s.accept(ROOM, A, n)
            held.add(n)
        else:
            have_before = s.author(ROOM, A).have
            moved = s.set_floor(ROOM, A, n)
            assert moved == (n > have_before + 1)
            if moved:
                base = n
        counted = {q for q in held if q >= base}
        have = base - 1
        while have + 1 in counted:
            have += 1
        a = s.author(ROOM, A)
        assert (a.base, a.have, a.above) == (base, have, {q for q in counted if q > have})
        gap = None if not a.above else (have + 1, min(a.above) - 1)
        assert a.gap() == gap
        assert s.vector(ROOM) == ({A: have} if have > 0 else {})


# --- the simulator: many nodes, hostile schedules -----------------------------

ROOMS = ("general", "dev")
KINDS = (
    "write",
    "write",
    "connect",
    "disconnect",
    "deliver",
    "deliver",
    "deliver",
    "deliver",
    "dup",
    "drop",
    "resync",
)
STEP = st.tuples(st.sampled_from(KINDS), st.integers(0, 63), st.integers(0, 63), st.integers(0, 63))
#: With time passing: the replicas' timers (vectors after a change, wants, periodic sync) run.
TIMED_STEP = st.tuples(
    st.sampled_from((*KINDS, "tick", "tick")),
    st.integers(0, 63),
    st.integers(0, 63),
    st.integers(0, 63),
)
TICKS = (
    limits.VECTOR_DELAY_S,
    limits.GAP_REPAIR_DELAY_S,
    limits.WANT_RETRY_S,
    limits.VECTOR_REPLY_GAP_S,
    limits.SYNC_INTERVAL_S,
)
#: Long enough that links hold several items at once, so reordering and loss make gaps.
SCHEDULE = st.lists(STEP, min_size=30, max_size=120)


def spanning_edges(data: st.DataObject, n: int) -> list[tuple[int, int]]:
    """A random connected graph on n nodes: a random tree plus a few extra edges."""
    edges = [(data.draw(st.integers(0, i - 1)), i) for i in range(1, n)]
    extra = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=4))
    return edges + [(a, b) for a, b in extra if a != b]


def run_schedule(net: SimNet, steps: list[tuple[str, int, int, int]]) -> None:
    """Apply hypothesis' schedule; check invariants after every step."""
    n = len(net.nodes)
    for count, (kind, x, y, z) in enumerate(steps):
        if kind == "write":
            net.write(x % n, ROOMS[y % 2], f"m{count}")
        elif kind == "connect":
            net.connect(x % n, y % n)
        elif kind == "disconnect":
            net.disconnect(x % n, y % n)
        elif kind == "resync":
            if net.connected(x % n, y % n):
                net.exchange_vectors(x % n, y % n)
        elif kind == "tick":
            net.advance(TICKS[x % len(TICKS)])
        elif pending := net.pending():
            link = pending[x % len(pending)]
            index = (y * 64 + z) % len(net.links[link])
            if kind == "drop":
                net.drop(link, index)
            else:
                net.deliver(link, index, keep=kind == "dup")
        for node in net.nodes:
            node.check_invariants()
            assert not node.equivocations
            assert not node.disconnects  # honest peers never cut each other off


def assert_converged(net: SimNet) -> None:
    """Everyone holds exactly what was written, and every vector is the max seq per author."""
    for node in net.nodes:
        assert not node.equivocations
        assert node.store == net.written, node.name
        for room in net.rooms():
            assert node.vector(room) == net.truth_vector(room), (node.name, room)
            for a in node.sync.rooms[room].values():
                assert a.above == set() and a.gap() is None and a.base == 1
        node.check_invariants()


@SIM
@given(st.integers(2, 5), SCHEDULE, st.data())
def test_sim_any_schedule_then_settle_converges(
    n: int, steps: list[tuple[str, int, int, int]], data: st.DataObject
) -> None:
    net = SimNet.create(n)
    run_schedule(net, steps)
    net.settle(spanning_edges(data, n))
    assert_converged(net)


@SIM
@given(st.integers(2, 5), SCHEDULE, st.data())
def test_sim_with_tight_orphan_bounds_refused_messages_come_back(
    n: int, steps: list[tuple[str, int, int, int]], data: st.DataObject
) -> None:
    # Messages refused because they would add an orphan author (one held only across a
    # hole) are not lost: sync brings them again, contiguously, and all converge.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(limits, "MAX_ORPHAN_AUTHORS_PER_PEER", 1)
        mp.setattr(limits, "MAX_ORPHAN_AUTHORS_PER_ROOM", 1)
        net = SimNet.create(n)
        run_schedule(net, steps)
        for node in net.nodes:
            for room in node.sync.orphans:
                assert len(node.sync.orphans[room]) <= 1
        net.settle(spanning_edges(data, n))
    assert_converged(net)


def test_sim_a_refused_orphan_comes_back_through_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_ORPHAN_AUTHORS_PER_ROOM", 1)
    net = SimNet.create(3)
    net.connect(0, 1)
    net.connect(0, 2)
    for writer in (1, 2):
        for k in range(3):
            net.write(writer, ROOM, f"w{writer}/{k}")
    # node0 gets each writer's last message first: node1's makes an orphan, node2's is refused.
    net.deliver((1, 0), 2)
    net.deliver((2, 0), 2)
    assert set(net.nodes[0].sync.orphans[ROOM]) == {"node1"}
    assert (ROOM, "node2", 3) not in net.nodes[0].store
    net.flush((1, 0))
    assert net.nodes[0].sync.orphans[ROOM] == {}  # node1 is contiguous now
    net.settle([(0, 1), (0, 2)])
    assert_converged(net)


@SIM
@given(SCHEDULE, st.data())
def test_sim_settle_over_a_line_needs_at_most_n_passes(
    steps: list[tuple[str, int, int, int]], data: st.DataObject
) -> None:
    # The farthest two nodes of a line are n-1 hops apart; one pass moves one hop at least.
    n = 4
    net = SimNet.create(n)
    run_schedule(net, steps)
    order = data.draw(st.permutations(range(n)))
    line = list(pairwise(order))
    passes = net.settle(line)
    assert passes <= n  # n-1 passes to spread, one to see that nothing moved
    assert_converged(net)


@SIM
@given(st.integers(2, 5), SCHEDULE, st.data())
def test_sim_with_a_small_history_offer_vectors_still_converge(
    n: int, steps: list[tuple[str, int, int, int]], data: st.DataObject
) -> None:
    # Floors now cut history: stores may differ, but every vector reaches the newest
    # seq of every author, nothing waits on a gap, and the newest HISTORY_OFFER
    # messages of each author are everywhere.
    offer = 3
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(limits, "HISTORY_OFFER", offer)
        net = SimNet.create(n)
        run_schedule(net, steps)
        net.settle(spanning_edges(data, n))
    for node in net.nodes:
        assert not node.equivocations
        assert all(net.written[k] == v for k, v in node.store.items())
        node.check_invariants()
        for room in net.rooms():
            truth = net.truth_vector(room)
            assert node.vector(room) == truth, (node.name, room)
            for author, top in truth.items():
                a = node.sync.rooms[room][author]
                assert a.above == set() and a.gap() is None
                assert a.base <= max(1, top - offer + 1)
                if author == node.name:
                    assert a.base == 1  # nobody can floor an author's own history
                for seq in range(max(1, top - offer + 1), top + 1):
                    assert (room, author, seq) in node.store


def test_sim_live_messages_alone_reach_connected_peers() -> None:
    net = SimNet.create(3)
    net.connect(0, 1)
    net.connect(1, 2)
    for i in range(3):
        net.write(0, ROOM, f"hi{i}")
    while pending := net.pending():
        net.flush(pending[0])
    assert net.nodes[2].store == net.written  # relayed by node 1
    assert net.nodes[2].vector(ROOM) == {"node0": 3}


def test_sim_a_partition_heals() -> None:
    net = SimNet.create(4)
    net.connect(0, 1)
    net.connect(2, 3)
    for i in range(5):
        net.write(i % 4, ROOM, "x")
    net.write(3, "dev", "y")
    for link in net.pending():
        net.flush(link)
    assert net.nodes[0].store != net.nodes[3].store
    net.settle([(1, 2), (0, 1), (2, 3)])
    assert_converged(net)


# --- the simulator: HISTORY_OFFER for a newcomer ---------------------------


@SIM
@given(
    st.lists(st.integers(0, 14), min_size=1, max_size=4),
    st.integers(1, 4),
    st.lists(st.tuples(st.integers(0, 99), st.integers(0, 999), st.booleans()), max_size=150),
)
def test_sim_newcomer_gets_only_the_newest_history_offer(
    counts: list[int], sources: int, choices: list[tuple[int, int, bool]]
) -> None:
    offer = 5
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(limits, "HISTORY_OFFER", offer)
        old = len(counts)
        net = SimNet.create(old + 1)
        fresh_i = old
        for i, count in enumerate(counts):
            for k in range(count):
                net.write(i, ROOM, f"t{k}")
        net.settle([(i, i + 1) for i in range(old - 1)])
        for node in net.nodes[:old]:
            assert node.vector(ROOM) == net.truth_vector(ROOM)
        # The newcomer connects to several old nodes at once; their pushes interleave,
        # arrive out of order and in part twice.
        for i in range(min(sources, old)):
            net.connect(fresh_i, i)
        for link_pick, index_pick, dup in choices:
            pending = [lk for lk in net.pending() if lk[1] == fresh_i]
            if not pending:
                break
            link = pending[link_pick % len(pending)]
            net.deliver(link, index_pick % len(net.links[link]), keep=dup)
        for link in net.pending():
            net.flush(link)
        fresh = net.nodes[fresh_i]
        fresh.check_invariants()
        truth = net.truth_vector(ROOM)
        expected = {
            (ROOM, a, s): net.written[(ROOM, a, s)]
            for a, top in truth.items()
            for s in range(max(1, top - offer + 1), top + 1)
        }
        assert fresh.store == expected
        assert fresh.vector(ROOM) == truth
        for a, top in truth.items():
            a_state = fresh.sync.rooms[ROOM][a]
            assert a_state.gap() is None and a_state.above == set()
            assert a_state.base == max(1, top - offer + 1)  # a floor when history was cut


# --- the simulator: one node, any delivery order -----------------------------


def message_set(counts: list[int]) -> list[Msg]:
    return [
        Msg((ROOM, f"author{i}", seq), f"author{i}#{seq}", hist=True)
        for i, count in enumerate(counts)
        for seq in range(1, count + 1)
    ]


@SIM
@given(
    st.lists(st.integers(1, 30), min_size=1, max_size=3).flatmap(
        lambda counts: st.tuples(
            st.just(counts),
            st.permutations(message_set(counts)),
            st.lists(st.sampled_from(message_set(counts)), max_size=30),
        )
    ),
    st.data(),
)
def test_sim_any_interleaving_converges_without_duplicates(
    case: tuple[list[int], list[Msg], list[Msg]], data: st.DataObject
) -> None:
    counts, order, extra = case
    # Duplicates are spliced in anywhere, including before their first copy.
    stream: list[Item] = list(order)
    for msg in extra:
        stream.insert(data.draw(st.integers(0, len(stream))), msg)
    node = SimNode("me")
    new = sum(node.receive(item) for item in stream)
    assert new == sum(counts)  # each message stored exactly once
    assert not node.equivocations
    assert node.store == {m.key: m.content for m in message_set(counts)}
    for i, count in enumerate(counts):
        a = node.sync.rooms[ROOM][f"author{i}"]
        assert (a.have, a.above, a.gap()) == (count, set(), None)
    node.check_invariants()


def test_sim_equivocation_is_noticed_and_not_stored() -> None:
    node = SimNode("me")
    node.receive(Msg((ROOM, A, 1), "one", hist=False))
    node.receive(Msg((ROOM, A, 1), "other", hist=True))
    assert node.equivocations == [(ROOM, A, 1)]
    assert node.store == {(ROOM, A, 1): "one"}
    # Brought by a peer that is not its author: the author is flagged and cut, not the peer.
    assert node.replica.equivocators == {A}
    assert node.outbox[-1] == rp.Disconnect(A, "equivocation")


def test_sim_floor_then_messages_in_any_order() -> None:
    node = SimNode("me")
    # The peer's vector comes first (on connect): it backs the floor the peer sends.
    node.receive(VectorItem(ROOM, {A: 20}))
    items: list[Item] = [Msg((ROOM, A, s), str(s), hist=True) for s in (18, 16, 20)]
    items += [
        FloorItem(ROOM, A, 16),
        Msg((ROOM, A, 17), "17", True),
        Msg((ROOM, A, 19), "19", True),
    ]
    for item in items:
        node.receive(item)
    assert state(node.sync) == (16, 20, set())


# --- the simulator: the MAX_ABOVE_PER_AUTHOR bound, end to end ---------------


def sparse_then_settle(accept_duplicates: bool) -> SimNet:
    """node0 gets seqs 2..5 of node1 before seq 1 (with above bounded to 2), then syncs."""
    net = SimNet.create(2, accept_duplicates=accept_duplicates)
    for k in range(6):
        net.write(1, ROOM, f"t{k}")
    net.connect(0, 1)  # queues the push 1..6 on (1, 0)
    link = (1, 0)
    for _ in range(4):
        net.deliver(link, 1)  # 2, 3, 4, 5: seq 1 stays first in flight
    net.deliver(link, 0)  # seq 1
    net.settle([(0, 1)], max_passes=5)
    return net


def test_sim_above_bound_recovers_when_refetched_seqs_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_ABOVE_PER_AUTHOR", 2)
    net = sparse_then_settle(accept_duplicates=True)
    assert_converged(net)


# --- hostile peers: floors are claims, orphans are bounded, forgeries are forgotten ---


@pytest.mark.parametrize("floor", [2**63 - 1, 6, 4])
def test_offer_floor_never_claims_unheld_seqs(floor: int) -> None:
    s = accepted(1, 2)
    assert s.offer_floor(ROOM, A, floor, "mallory") is None
    assert state(s) == (1, 2, set())
    assert s.vector(ROOM) == {A: 2}
    s.accept(ROOM, A, 3)  # the author's next message still counts
    assert state(s) == (1, 3, set())


def test_offer_floor_takes_effect_at_a_held_seq() -> None:
    s = accepted(1, 2, 9, 10)
    assert s.offer_floor(ROOM, A, 9, "bob") == 9  # held: applied at once
    assert state(s) == (9, 10, set())
    t = accepted(1, 2)
    assert t.offer_floor(ROOM, A, 9, "bob") is None  # a claim until 9 arrives
    assert t.accept(ROOM, A, 10) is None
    assert state(t) == (1, 2, {10})
    assert t.accept(ROOM, A, 9) == 9
    assert state(t) == (9, 10, set())


def test_floor_claims_are_per_source_and_forgotten_with_it() -> None:
    s = accepted(1)
    s.offer_floor(ROOM, A, 50, "mallory")
    s.offer_floor(ROOM, A, 2**40, "mallory")  # replaces mallory's own claim
    s.offer_floor(ROOM, A, 8, "bob")
    assert s.author(ROOM, A).claims == {"mallory": 2**40, "bob": 8}
    s.forget_source("mallory")
    assert s.author(ROOM, A).claims == {"bob": 8}
    assert s.accept(ROOM, A, 8) == 8
    assert s.author(ROOM, A).claims == {}


def test_admits_bounds_orphan_authors_per_source_and_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_ORPHAN_AUTHORS_PER_PEER", 2)
    monkeypatch.setattr(limits, "MAX_ORPHAN_AUTHORS_PER_ROOM", 3)
    s = SyncState()
    fresh = [f"{i}" * 64 for i in range(6)]
    assert [s.admits(ROOM, a, 2, "m") for a in fresh[:3]] == [True, True, False]
    assert s.admits(ROOM, fresh[0], 7, "m")  # an admitted orphan stays admitted
    assert [s.admits(ROOM, a, 2, "n") for a in fresh[3:5]] == [True, False]  # room full
    assert s.admits(ROOM, fresh[5], 1, "m")  # from its first message: no orphan
    s.accept(ROOM, fresh[0], 2)
    s.accept(ROOM, fresh[0], 1)  # no longer an orphan: frees a slot of "m" and the room
    assert s.admits(ROOM, fresh[2], 2, "m")


def test_forget_a_deleted_seq() -> None:
    s = accepted(1, 2, 3, 4, 6)
    s.forget(ROOM, A, 2)
    assert state(s) == (1, 1, {3, 4, 6})
    s.forget(ROOM, A, 6)
    assert state(s) == (1, 1, {3, 4})
    s.accept(ROOM, A, 2)
    assert state(s) == (1, 4, set())


def test_sim_a_hostile_floor_writes_off_nothing() -> None:
    net = SimNet.create(2)
    for k in range(3):
        net.write(1, ROOM, f"t{k}")
    net.connect(0, 1)
    net.flush((1, 0))
    # A third peer floors node1's history at node0: a claim, never applied.
    for floor in (2**63 - 1, 5):
        net.nodes[0].receive(FloorItem(ROOM, "node1", floor), "mallory")
        net.nodes[0].check_invariants()
    for k in range(3, 6):
        net.write(1, ROOM, f"t{k}")
    net.settle([(0, 1)])
    assert_converged(net)


def test_admits_no_new_author_beyond_the_room_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_AUTHORS_PER_ROOM", 2)
    s = accepted(1, author=A)
    s.accept(ROOM, B, 1)
    assert not s.admits(ROOM, "c" * 64, 1, "peer")  # a third author, even from seq 1
    assert s.admits(ROOM, A, 2, "peer") and s.admits(ROOM, "c" * 64, 1, "peer") is False
    assert s.admits("dev", "c" * 64, 1, "peer")  # another room has its own bound


# --- the simulator: rules the old copy never ran ------------------------------


def test_sim_a_resync_does_not_resend_what_the_connection_carries() -> None:
    # Live messages are in flight when vectors cross again: the push skips them.
    net = SimNet.create(2)
    net.connect(0, 1)
    for k in range(3):
        net.write(1, ROOM, f"t{k}")
    assert len(net.links[(1, 0)]) == 3
    net.exchange_vectors(0, 1)
    assert len(net.links[(1, 0)]) == 3  # nothing queued twice
    net.flush((1, 0))
    assert net.nodes[0].store == net.written
    # A new connection carries nothing yet: what was lost on the old one comes again.
    net.write(1, ROOM, "lost")
    net.drop((1, 0), 0)
    net.disconnect(0, 1)
    net.connect(0, 1)
    assert [i.key for i in net.links[(1, 0)] if isinstance(i, Msg)] == [(ROOM, "node1", 4)]
    net.flush((1, 0))
    assert_converged(net)


def test_sim_a_floor_is_taken_only_as_far_as_the_senders_vector_backs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "HISTORY_OFFER", 2)
    net = SimNet.create(3)
    for k in range(5):
        net.write(1, ROOM, f"t{k}")
    net.connect(0, 1)  # node1 pushes a floor at 4, then 4 and 5
    items = net.links[(1, 0)]
    assert items[0] == FloorItem(ROOM, "node1", 4)
    net.flush((1, 0))
    assert state(net.nodes[0].sync, "node1") == (4, 5, set())
    # node2 holds nothing of node1: its floors for node1 are not backed, and change nothing.
    net.connect(0, 2)
    for floor in (6, 9):
        net.nodes[0].receive(FloorItem(ROOM, "node1", floor), "node2")
    assert net.nodes[0].sync.author(ROOM, "node1").claims == {}
    assert state(net.nodes[0].sync, "node1") == (4, 5, set())


def test_sim_a_vector_from_a_peer_that_holds_more_is_answered() -> None:
    # node0 and node1 are connected; node1 then gets node2's history by a push (no
    # live relay). node1's next vector shows node0 it is behind: node0 answers with
    # its vector, and node1 pushes, long before the periodic sync.
    net = SimNet.create(3)
    net.connect(0, 1)
    net.advance(2 * limits.VECTOR_REPLY_GAP_S)
    for k in range(3):
        net.write(2, ROOM, f"t{k}")
    net.connect(1, 2)
    net.flush((2, 1))
    assert net.nodes[1].vector(ROOM) == {"node2": 3}
    assert not net.links[(1, 0)]
    net.advance(limits.VECTOR_DELAY_S)  # node1's vector goes out; node0 replies
    assert len(net.links[(1, 0)]) == 3
    net.flush((1, 0))
    assert net.nodes[0].vector(ROOM) == {"node2": 3}
    assert net.now < limits.SYNC_INTERVAL_S


def test_sim_a_gap_is_asked_for_with_a_want_and_filled() -> None:
    net = SimNet.create(2)
    net.connect(0, 1)
    for k in range(3):
        net.write(1, ROOM, f"t{k}")
    net.drop((1, 0), 1)  # seq 2 is lost
    net.flush((1, 0))
    node = net.nodes[0]
    assert node.sync.author(ROOM, "node1").gap() == (2, 2)
    assert [type(e).__name__ for e in node.events] == ["Gap"]
    assert not net.links[(0, 1)]
    net.advance(limits.GAP_REPAIR_DELAY_S)
    assert net.links[(0, 1)] == [WantItem(ROOM, "node1", 2, 2)]
    net.flush((0, 1))  # node1 serves the want, even though this connection carried seq 2
    net.flush((1, 0))
    assert node.store == net.written
    assert [type(e).__name__ for e in node.events] == ["Gap", "GapFilled"]
    assert node.replica.timers.wants == {}


def test_sim_a_gap_nobody_fills_is_asked_for_a_bounded_number_of_times() -> None:
    net = SimNet.create(2)
    net.connect(0, 1)
    for k in range(3):
        net.write(1, ROOM, f"t{k}")
    net.drop((1, 0), 1)
    net.flush((1, 0))
    asked = 0
    for _ in range(limits.GAP_MAX_ASKS + 2):
        net.advance(limits.SYNC_INTERVAL_S)
        asked += sum(isinstance(i, WantItem) for i in net.links[(0, 1)])
        net.drop_all((0, 1))
    assert asked == limits.GAP_MAX_ASKS


@SIM
@given(st.integers(2, 5), st.lists(TIMED_STEP, min_size=30, max_size=120), st.data())
def test_sim_any_timed_schedule_then_settle_converges(
    n: int, steps: list[tuple[str, int, int, int]], data: st.DataObject
) -> None:
    # Timers fire between deliveries: vectors after changes, vector replies, wants for
    # gaps and the periodic sync all run, and no rule breaks an invariant.
    net = SimNet.create(n)
    run_schedule(net, steps)  # also checks that no node cut another off
    net.settle(spanning_edges(data, n))
    assert_converged(net)
