"""history.py against hostile peers: floors, fresh-key floods, wants, equivocation, forgeries.

Each test drives a real History over a real store with fake connections
(unit_support.FakeConn), sends what a hostile peer would send, and checks what
the node believes, stores, relays and sends. Byte-level and end-to-end
counterparts: tests/unit/test_sync.py and tests/integration/test_e2e_sync_hostile.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from unit_support import ALICE, BOB, CAROL, MALLORY, ME, ROOM, FakeConn, FakeManager, chat, new

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.history import History
from chinwag.protocol import messages as m
from chinwag.protocol.chat import ChatMessage
from chinwag.rooms import RoomBook
from chinwag.store.db import Store, StoreError

TOP = 2**63 - 1


def frame(msg: ChatMessage, hist: bool = False, sig: bytes | None = None) -> m.Chat:
    return m.Chat(body=msg.raw_body, sig=msg.sig if sig is None else sig, hist=hist)


class Node:
    """A loaded History of ME over a store, with fake peers."""

    def __init__(self, store: Store) -> None:
        self.events: list[ev.NodeEvent] = []
        self.manager = FakeManager()
        manager: Any = self.manager
        self.book = RoomBook(store, ME)
        self.book.load()
        self.history = History(store, ME, manager, self.events.append, self.book)
        self.history.load()
        self.store = store

    def peer(self, who: Identity) -> Any:
        """Connect a fake peer that announced ROOM."""
        conn = FakeConn(who.peer_id)
        self.manager.peers[who.peer_id] = conn
        self.book.set_announced(who.peer_id, m.Rooms(joined=[m.RoomAnnounce(room=ROOM)]))
        return conn

    def of(self, kind: type[ev.NodeEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def node(store: Store) -> Any:
    n = Node(store)
    yield n
    await n.history.close()


async def turn() -> None:
    """Let History's call_soon group commit run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll cond while History's timers run (they are the events awaited); fail after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


def wants(node: Node, conn: Any) -> list[m.Want]:
    """The wants conn was sent: to it alone, or broadcast to every peer."""
    sent = [*node.manager.frames, *conn.sent]
    return [f for f in sent if isinstance(f, m.Want)]


# --- 1. floors never write off a third party's history --------------------------


@pytest.mark.parametrize("floor", [TOP, 6])
async def test_a_floor_never_claims_another_authors_unseen_messages(node: Node, floor: int) -> None:
    # We hold alice 1..2. Mallory claims to hold far more of her, then floors her:
    # at 2^63-1 (stop asking for alice for good) or at 6 (drop 3..5 after a partition).
    node.store.insert_messages([new(ALICE, s) for s in (1, 2)])
    node.history.load()
    mallory = node.peer(MALLORY)
    node.history.sync_frame(mallory, m.Vector(room=ROOM, have={ALICE.peer_id: TOP}))
    node.history.sync_frame(mallory, m.Floor(room=ROOM, author=ALICE.peer_id, seq=floor))
    await turn()
    assert node.history.sync.vector(ROOM) == {ALICE.peer_id: 2}
    assert node.store.floors() == {}
    # Alice's next messages still count, and a hole in them is still a gap.
    alice = node.peer(ALICE)
    node.history.chat_received(alice, frame(chat(ALICE, 3, "three")))
    node.history.chat_received(alice, frame(chat(ALICE, 5, "five")))
    await turn()
    assert node.history.sync.vector(ROOM) == {ALICE.peer_id: 3}
    assert [(g.peer_id, g.missing) for g in node.of(ev.Gap)] == [(ALICE.peer_id, [4, 4])]
    assert mallory.closed is None


async def test_an_honest_floor_takes_effect_when_its_push_arrives(node: Node) -> None:
    # Bob holds alice 1..9 but offers only 8..9: floor 8, then the push (out of order).
    bob = node.peer(BOB)
    node.history.sync_frame(bob, m.Vector(room=ROOM, have={ALICE.peer_id: 9}))
    node.history.sync_frame(bob, m.Floor(room=ROOM, author=ALICE.peer_id, seq=8))
    assert node.history.sync.vector(ROOM) == {}  # nothing held yet: nothing claimed
    node.history.chat_received(bob, frame(chat(ALICE, 9, "nine"), hist=True))
    await turn()
    assert node.history.sync.vector(ROOM) == {}
    node.history.chat_received(bob, frame(chat(ALICE, 8, "eight"), hist=True))
    await turn()
    assert node.history.sync.vector(ROOM) == {ALICE.peer_id: 9}
    assert node.store.floors() == {(ROOM, ALICE.peer_id): 8}
    assert not node.of(ev.Gap) or node.of(ev.GapFilled)


async def test_a_relayed_copy_counts_one_relay_more_and_ours_none(node: Node) -> None:
    """The relay count is outside the signature: a hint the next node trusts as far as it
    goes (a relay that lies can only make a copy travel further or stop, as a silent one)."""
    alice, _bob = node.peer(ALICE), node.peer(BOB)
    node.history.chat_received(
        alice, m.Chat(body=chat(CAROL, 1, "hi").raw_body, sig=chat(CAROL, 1, "hi").sig, relays=2)
    )
    node.history.chat_received(
        alice,
        m.Chat(
            body=chat(CAROL, 2, "top").raw_body,
            sig=chat(CAROL, 2, "top").sig,
            relays=limits.MAX_RELAYS,
        ),
    )
    await turn()
    assert [(f.relays, exclude) for f, exclude in node.manager.chats()] == [
        (3, frozenset({ALICE.peer_id, CAROL.peer_id})),
        (limits.MAX_RELAYS, frozenset({ALICE.peer_id, CAROL.peer_id})),
    ]


# --- 2. a want storm cannot cut honest links ------------------------------------


async def test_fresh_keys_with_holes_are_bounded_per_sender_and_not_relayed(
    node: Node,
) -> None:
    mallory, node_bob = node.peer(MALLORY), node.peer(BOB)
    keys = [Identity.generate() for _ in range(3 * limits.MAX_ORPHAN_AUTHORS_PER_PEER)]
    for key in keys:
        node.history.chat_received(mallory, frame(chat(key, 2, "junk")))
    await turn()
    stored = {r.author for r in node.store.history(ROOM, limits.MAX_HISTORY)}
    assert len(stored) == limits.MAX_ORPHAN_AUTHORS_PER_PEER
    assert len(node.manager.chats()) == limits.MAX_ORPHAN_AUTHORS_PER_PEER  # relayed
    assert mallory.closed is None and node_bob.closed is None
    # Another sender gets its own allowance, up to the room's.
    carol = node.peer(CAROL)
    for key in keys:
        node.history.chat_received(carol, frame(chat(key, 3, "more junk")))
    await turn()
    stored = {r.author for r in node.store.history(ROOM, limits.MAX_HISTORY)}
    assert len(stored) == 2 * limits.MAX_ORPHAN_AUTHORS_PER_PEER
    assert len(stored) <= limits.MAX_ORPHAN_AUTHORS_PER_ROOM
    # An author whose history starts at 1 is no orphan: always admitted.
    node.history.chat_received(mallory, frame(chat(Identity.generate(), 1, "hi")))
    await turn()
    assert len({r.author for r in node.store.history(ROOM, limits.MAX_HISTORY)}) == len(stored) + 1


async def test_wants_for_many_gaps_stay_within_what_peers_tolerate(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3,000 gaps at once (as if the orphan bounds were lifted): each peer still gets
    # wants within our budget, far below the sync flood limit it enforces.
    monkeypatch.setattr(limits, "MAX_ORPHAN_AUTHORS_PER_ROOM", 10_000)
    monkeypatch.setattr(limits, "MAX_ORPHAN_AUTHORS_PER_PEER", 10_000)
    monkeypatch.setattr(limits, "GAP_REPAIR_DELAY_S", 0.0)
    bob, carol = node.peer(BOB), node.peer(CAROL)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(3_000):
        node.history.chat_received(bob, frame(chat(Identity.generate(), 2, "junk"), hist=True))
    await turn()
    await until(lambda: len(wants(node, bob)) >= limits.WANTS_BURST)
    elapsed = loop.time() - start
    for conn in (bob, carol):
        assert len(wants(node, conn)) <= limits.WANTS_BURST + limits.WANTS_PER_S * elapsed + 1
        assert len(wants(node, conn)) < limits.SYNC_REQUESTS_BURST
    assert limits.WANTS_PER_S < limits.SYNC_REQUESTS_PER_S


async def test_a_gap_no_peer_fills_is_given_up(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "GAP_REPAIR_DELAY_S", 0.0)
    monkeypatch.setattr(limits, "SYNC_INTERVAL_S", 0.01)
    bob = node.peer(BOB)
    node.history.chat_received(bob, frame(chat(ALICE, 1, "one"), hist=True))
    node.history.chat_received(bob, frame(chat(ALICE, 3, "three"), hist=True))
    await turn()
    await until(lambda: not node.history.replica.timers.wants)
    asked = [(w.author, w.lo, w.hi) for w in wants(node, bob)]
    assert asked == [(ALICE.peer_id, 2, 2)] * limits.GAP_MAX_ASKS
    # A new message of that author with a new hole asks again.
    node.history.chat_received(bob, frame(chat(ALICE, 2, "two"), hist=True))
    node.history.chat_received(bob, frame(chat(ALICE, 5, "five"), hist=True))
    await turn()
    await until(lambda: len(wants(node, bob)) > limits.GAP_MAX_ASKS)
    assert (wants(node, bob)[-1].lo, wants(node, bob)[-1].hi) == (4, 4)


# --- 4. equivocation blames the author, not the relay ---------------------------


@pytest.mark.parametrize("when", ["later", "same batch"])
async def test_a_relayed_second_version_is_dropped_and_the_author_flagged(
    node: Node, when: str
) -> None:
    bob, mallory, alice = node.peer(BOB), node.peer(MALLORY), node.peer(ALICE)
    first, second = chat(ALICE, 1, "first"), chat(ALICE, 1, "second")
    node.history.chat_received(bob, frame(first))
    if when == "later":
        await turn()
    node.history.chat_received(mallory, frame(second))
    await turn()
    assert [r.text for r in node.store.history(ROOM, 10)] == ["first"]
    assert bob.closed is None and mallory.closed is None
    assert alice.closed == "equivocation"  # the author itself, where we reach it
    alerts = [a for a in node.of(ev.Alert) if a.peer_id == ALICE.peer_id]
    assert len(alerts) == 1 and "two different messages" in alerts[0].message
    assert ALICE.peer_id in node.history.equivocators
    # A second version nobody signed is a forgery: the relay is cut for that.
    forged = bytearray(chat(ALICE, 1, "third").sig)
    forged[5] ^= 1
    carol = node.peer(CAROL)
    node.history.chat_received(carol, frame(chat(ALICE, 1, "third"), sig=bytes(forged)))
    await turn()
    assert carol.closed == "bad_signature"


async def test_the_author_equivocating_itself_is_disconnected(node: Node) -> None:
    alice = node.peer(ALICE)
    node.history.chat_received(alice, frame(chat(ALICE, 1, "first")))
    await turn()
    node.history.chat_received(alice, frame(chat(ALICE, 1, "second")))
    await turn()
    assert alice.closed == "equivocation"
    assert [r.text for r in node.store.history(ROOM, 10)] == ["first"]


# --- 9. a deleted forgery leaves the sync state ---------------------------------


async def test_a_deleted_forgery_is_no_longer_claimed(node: Node) -> None:
    # Straight from its author with only one peer: stored unverified (the channel vouches).
    alice = node.peer(ALICE)
    good = chat(ALICE, 1, "genuine")
    bad_sig = bytearray(chat(ALICE, 1, "forged").sig)
    bad_sig[3] ^= 1
    node.history.chat_received(alice, frame(chat(ALICE, 1, "forged"), sig=bytes(bad_sig)))
    await turn()
    assert node.history.sync.vector(ROOM) == {ALICE.peer_id: 1}
    # A peer's vector makes us push it: it is verified, found forged and deleted.
    bob = node.peer(BOB)
    node.history.sync_frame(bob, m.Vector(room=ROOM, have={}))
    await until(lambda: not node.history._jobs)
    assert node.store.history(ROOM, 10) == []
    assert node.history.sync.vector(ROOM) == {}
    assert not node.history.sync.holds(ROOM, ALICE.peer_id, 1)
    # The genuine message is taken when it comes, no equivocation.
    node.history.chat_received(bob, frame(good, hist=True))
    await turn()
    assert [r.text for r in node.store.history(ROOM, 10)] == ["genuine"]
    assert bob.closed is None and alice.closed is None


# --- 7. what a peer can make us keep --------------------------------------------


async def test_a_departed_peers_vector_shrinks_to_what_we_save(node: Node) -> None:
    node.store.insert_messages([new(ALICE, 1)])
    node.history.load()
    mallory = node.peer(MALLORY)
    made_up = {Identity.generate().peer_id: 7 for _ in range(limits.MAX_VECTOR_AUTHORS - 2)}
    have = made_up | {ALICE.peer_id: 1, ME.peer_id: 0}
    node.history.sync_frame(mallory, m.Vector(room=ROOM, have=have))
    assert len(node.history.replica.receipts[ROOM][MALLORY.peer_id]) == len(have)
    node.history.peer_left(MALLORY.peer_id)
    assert node.history.replica.receipts[ROOM][MALLORY.peer_id] == {ALICE.peer_id: 1, ME.peer_id: 0}


async def test_receipts_of_departed_peers_are_bounded(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_RECEIPT_PEERS_PER_ROOM", 3)
    bob = node.peer(BOB)
    node.history.sync_frame(bob, m.Vector(room=ROOM, have={}))
    passing = [Identity.generate() for _ in range(6)]
    for who in passing:
        conn = node.peer(who)
        node.history.sync_frame(conn, m.Vector(room=ROOM, have={ME.peer_id: 1}))
        del node.manager.peers[who.peer_id]
        node.history.peer_left(who.peer_id)
    node.history._save_vectors()
    kept = node.history.replica.receipts[ROOM]
    assert len(kept) == 3
    assert BOB.peer_id in kept  # connected peers are never forgotten
    assert set(kept) == {BOB.peer_id, passing[-2].peer_id, passing[-1].peer_id}
    assert set(node.store.peer_vectors(ROOM)) <= set(kept)


@pytest.mark.parametrize("known", [False, True])
async def test_a_peer_cannot_make_us_store_beyond_its_budget(
    store: Store, monkeypatch: pytest.MonkeyPatch, known: bool
) -> None:
    size = len(chat(MALLORY, 1, "x" * 100).raw_body) + 64
    monkeypatch.setattr(limits, "STORE_BYTES_BURST", 3 * size)
    monkeypatch.setattr(limits, "STORE_BYTES_PER_S", 0)
    if known:  # met in an earlier run: favoured
        store.save_peer(MALLORY.peer_id, "mallory", "127.0.0.1:1")
    n = Node(store)
    try:
        mallory = n.peer(MALLORY)
        for seq in range(1, 21):
            n.history.chat_received(mallory, frame(chat(MALLORY, seq, "x" * 100)))
        await turn()
        expect = 3 * (limits.KNOWN_PEER_STORE_FACTOR if known else 1)
        assert len(n.store.history(ROOM, 100)) == expect
        assert mallory.closed is None
        # Another peer's budget is its own.
        bob = n.peer(BOB)
        n.history.chat_received(bob, frame(chat(BOB, 1, "hi")))
        await turn()
        assert len(n.store.history(ROOM, 100)) == expect + 1
    finally:
        await n.history.close()


# --- 8. never number a message with a seq we already used -----------------------


async def test_unsure_numbering_waits_for_peers_to_give_back_our_messages(node: Node) -> None:
    # As after a power cut or a deleted store: we sent 1..2 but no longer hold them.
    node.history.set_unsure("test")
    fut = node.history.post_own(ROOM, lambda seq: chat(ME, seq, "new"), "new")
    await turn()
    assert not fut.done() and node.store.history(ROOM, 10) == []
    bob = node.peer(BOB)
    node.history.sync_frame(bob, m.Vector(room=ROOM, have={ME.peer_id: 2}))
    for seq in (1, 2):  # bob's push gives them back
        node.history.chat_received(bob, frame(chat(ME, seq, f"old {seq}"), hist=True))
    await until(fut.done)
    stored = [(r.seq, r.text) for r in node.store.history(ROOM, 10)]
    assert stored == [(1, "old 1"), (2, "old 2"), (3, "new")]
    assert bob.closed is None
    # Settled: later messages are numbered at once.
    fut2 = node.history.post_own(ROOM, lambda seq: chat(ME, seq, "next"), "next")
    await until(fut2.done)
    assert node.store.history(ROOM, 10)[-1].seq == 4


async def test_unsure_numbering_gives_up_waiting_after_a_while(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "UNSURE_MAX_WAIT_S", 0.05)
    node.history.set_unsure("test")
    mallory = node.peer(MALLORY)  # claims far more of ours than it gives back
    node.history.sync_frame(mallory, m.Vector(room=ROOM, have={ME.peer_id: 10**9}))
    fut = node.history.post_own(ROOM, lambda seq: chat(ME, seq, "alone"), "alone")
    await until(fut.done)
    assert [(r.seq, r.text) for r in node.store.history(ROOM, 10)] == [(1, "alone")]


async def test_held_messages_fail_cleanly_when_we_stop(store: Store) -> None:
    n = Node(store)
    n.history.set_unsure("test")
    fut = n.history.post_own(ROOM, lambda seq: chat(ME, seq, "never"), "never")
    await n.history.close()
    assert fut.done() and isinstance(fut.exception(), Exception)
    assert store.history(ROOM, 10) == []


# --- the replica's one timer ----------------------------------------------------


async def test_a_failing_receipt_save_does_not_stop_the_periodic_sync(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # All replica timers share one asyncio timer: an action that raises (a store
    # error while saving receipts) must not leave it unarmed.
    monkeypatch.setattr(limits, "RECEIPT_SAVE_DELAY_S", 0.0)
    monkeypatch.setattr(limits, "SYNC_INTERVAL_S", 0.05)

    def broken(*args: object) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(node.store, "set_peer_vector", broken)
    node.history.load()  # re-arms the periodic sync with the short interval
    bob = node.peer(BOB)
    node.history.sync_frame(bob, m.Vector(room=ROOM, have={ME.peer_id: 0}))  # a receipt
    sent = len([f for f in node.manager.frames if isinstance(f, m.Vector)])
    await until(
        lambda: len([f for f in node.manager.frames if isinstance(f, m.Vector)]) >= sent + 3,
        timeout=3.0,
    )


# --- bounded per-run memory ------------------------------------------------------


async def test_the_author_nick_cache_is_bounded_and_keeps_recent_authors(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "HISTORY_MAX_AUTHOR_NICKS", 2)
    writes: list[str] = []
    note = node.store.note_author

    def counted(peer_id: str, nick: str) -> None:
        writes.append(peer_id)
        note(peer_id, nick)

    monkeypatch.setattr(node.store, "note_author", counted)
    authors = [ALICE, BOB, CAROL, MALLORY]  # a flood of fresh authors, in the small
    for who in authors:
        node.history.chat_received(node.peer(who), frame(chat(who, 1)))
        await turn()
    assert len(node.history._author_nicks) == 2
    assert {who.peer_id for who in authors} <= set(node.store.peer_nicks())
    # A recent author's unchanged nick costs no store write; a forgotten one's costs one.
    node.history.chat_received(node.peer(MALLORY), frame(chat(MALLORY, 2)))
    await turn()
    assert len(writes) == 4
    node.history.chat_received(node.peer(ALICE), frame(chat(ALICE, 2)))
    await turn()
    assert writes[4:] == [ALICE.peer_id]
