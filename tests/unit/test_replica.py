"""protocol/replica.py driven call by call: inputs and `now` in, exact actions out."""

from __future__ import annotations

import random
from collections.abc import Sequence

from chinwag import events as ev
from chinwag import limits
from chinwag.protocol import messages as m
from chinwag.protocol import replica as rp
from chinwag.protocol.mesh import Mesh
from chinwag.protocol.replica import Replica
from chinwag.protocol.sync import PushRange

ME, BOB, CAROL, ALICE = "me", "bob", "carol", "alice"
ROOM = "general"
CHAT = m.Chat(body=b"body", sig=b"sig")


class View:
    """Every peer is in every room; the test sets who is connected."""

    def __init__(self, *peers: str) -> None:
        self.connected = list(peers)
        self.room_list = [ROOM]

    def peers(self) -> Sequence[str]:
        return list(self.connected)

    def rooms(self) -> list[str]:
        return list(self.room_list)

    def joined(self, room: str) -> bool:
        return room in self.room_list

    def dm_peer(self, room: str) -> str | None:
        return BOB if room == "dm" else None

    def peer_in(self, peer_id: str, room: str) -> bool:
        return True

    def holds_vector(self, room: str, peer_id: str) -> bool:
        return True

    def saved_receipts(self, room: str) -> dict[str, dict[str, int]]:
        return {}


def replica(*peers: str) -> Replica:
    return Replica(ME, View(*peers))


def test_our_message_goes_to_everyone_and_a_live_one_is_relayed_past_its_sender_and_author() -> (
    None
):
    r = replica(BOB, CAROL, ALICE)
    assert r.committed(CHAT, ROOM, ME, 1, None, True, lambda: False) == [rp.Flood(CHAT)]
    relay = r.committed(CHAT, ROOM, ALICE, 1, BOB, True, lambda: True)
    assert relay == [rp.Flood(CHAT, frozenset({BOB, ALICE}))]
    # Pushed history, an unverifiable message, or a single peer: never relayed.
    assert r.committed(CHAT, ROOM, ALICE, 2, BOB, False, lambda: True) == []
    assert r.committed(CHAT, ROOM, ALICE, 3, BOB, True, lambda: False) == []
    assert replica(BOB).committed(CHAT, ROOM, ALICE, 1, BOB, True, lambda: True) == []


def test_a_change_sends_vectors_after_a_short_delay_and_the_periodic_sync_checks_the_store() -> (
    None
):
    r = replica(BOB)
    r.start(100.0)
    assert r.get_timer() == 100.0 + limits.SYNC_INTERVAL_S
    r.accept(ROOM, ME, 1)
    assert r.changed({(ROOM, ME)}, 101.0) == []
    assert r.get_timer() == 101.0 + limits.VECTOR_DELAY_S
    assert r.handle_timer(101.0) == []  # not due yet
    sent = r.handle_timer(101.0 + limits.VECTOR_DELAY_S)
    assert sent == [rp.Flood(m.Vector(room=ROOM, have={ME: 1}))]
    assert r.get_timer() == 100.0 + limits.SYNC_INTERVAL_S
    periodic = r.handle_timer(100.0 + limits.SYNC_INTERVAL_S)
    assert periodic == [rp.CheckStore(), rp.Flood(m.Vector(room=ROOM, have={ME: 1}))]


def test_a_conversations_vector_goes_only_to_its_other_party() -> None:
    r = replica(BOB, CAROL)
    r.view.room_list.append("dm")  # type: ignore[attr-defined]
    opened = r.peer_opened(CAROL, 0.0)
    assert opened == [rp.Send(CAROL, m.Vector(room=ROOM, have={}))]
    assert r.send_vector("dm", 0.0) == [rp.Send(BOB, m.Vector(room="dm", have={}))]


def test_a_vector_is_a_receipt_a_push_and_if_we_are_behind_a_reply() -> None:
    r = replica(BOB)
    for seq in (1, 2, 3):
        r.accept(ROOM, ME, seq)
    assert r.peer_opened(BOB, 0.0) == [rp.Send(BOB, m.Vector(room=ROOM, have={ME: 3}))]
    got = r.vector_received(BOB, m.Vector(room=ROOM, have={ME: 1, ALICE: 4}), 0.5)
    assert got == [
        rp.Delivered(ROOM, 1, 1),
        rp.Push(BOB, ROOM, [PushRange(ME, 2, 3)]),
    ]  # no reply yet: our vector went out 0.5 s ago
    assert r.delivery(ROOM, 1) == (1, 1) and r.delivery(ROOM, 2) == (0, 1)
    later = r.vector_received(BOB, m.Vector(room=ROOM, have={ME: 1, ALICE: 4}), 5.0)
    assert later == [
        rp.Push(BOB, ROOM, [PushRange(ME, 2, 3)]),
        rp.Send(BOB, m.Vector(room=ROOM, have={ME: 3})),
    ]
    assert r.get_timer() == 0.5 + limits.RECEIPT_SAVE_DELAY_S
    assert r.handle_timer(0.5 + limits.RECEIPT_SAVE_DELAY_S) == [rp.SaveReceipts()]
    assert r.take_unsaved() == {(BOB, ROOM): {ME: 1}}


def test_a_push_skips_what_the_connection_carried_unless_asked() -> None:
    r = replica(BOB)
    for seq in range(1, 6):
        r.accept(ROOM, ALICE, seq)
    r.pushed(BOB, ROOM, ALICE, 3)
    plan = [PushRange(ALICE, 1, 5)]
    assert r.push_ranges(BOB, ROOM, plan) == ([], [(ALICE, 4, 5)])
    asked = [PushRange(ALICE, 2, 3, resend=True)]
    assert r.push_ranges(BOB, ROOM, asked) == ([], [(ALICE, 2, 3)])
    r.peer_closed(BOB)  # a new connection carries nothing yet
    assert r.push_ranges(BOB, ROOM, plan) == ([], [(ALICE, 1, 5)])


def test_forget_sent_drops_what_one_room_carried_to_one_peer_only() -> None:
    r = replica(BOB, CAROL)
    for seq in range(1, 6):
        r.accept(ROOM, ALICE, seq)
        r.accept("other", ALICE, seq)
    for peer, room in ((BOB, ROOM), (BOB, "other"), (CAROL, ROOM)):
        r.pushed(peer, room, ALICE, 3)
    r.forget_sent(BOB, ROOM)  # its ratchet broke: what went may not have arrived
    plan = [PushRange(ALICE, 1, 5)]
    assert r.push_ranges(BOB, ROOM, plan) == ([], [(ALICE, 1, 5)])
    assert r.push_ranges(BOB, "other", plan) == ([], [(ALICE, 4, 5)])
    assert r.push_ranges(CAROL, ROOM, plan) == ([], [(ALICE, 4, 5)])


def test_a_gap_is_reported_asked_for_and_given_up() -> None:
    r = replica(BOB)
    r.accept(ROOM, ALICE, 1)
    r.accept(ROOM, ALICE, 3)
    assert r.changed({(ROOM, ALICE)}, 0.0) == [
        rp.Emit(ev.Gap(room=ROOM, peer_id=ALICE, missing=[2, 2]))
    ]
    want = rp.Send(BOB, m.Want(room=ROOM, author=ALICE, lo=2, hi=2))
    now = limits.GAP_REPAIR_DELAY_S
    asked = []
    for _ in range(limits.GAP_MAX_ASKS + 2):
        asked += [a for a in r.handle_timer(now) if isinstance(a, rp.Send) and a == want]
        now = max(now, r.timers.wants.get((ROOM, ALICE), now))
    assert len(asked) == limits.GAP_MAX_ASKS
    r.accept(ROOM, ALICE, 2)
    assert r.changed({(ROOM, ALICE)}, now) == [rp.Emit(ev.GapFilled(room=ROOM, peer_id=ALICE))]
    assert r.timers.wants == {}


def test_an_equivocator_is_cut_and_flagged_once_and_a_relay_is_not_blamed() -> None:
    r = replica(BOB, ALICE)
    first = r.clashed(ALICE, 1, BOB, ROOM)
    assert first[0] == rp.Disconnect(ALICE, "equivocation")
    assert [type(a) for a in first] == [rp.Disconnect, rp.Emit]
    assert r.clashed(ALICE, 2, BOB, ROOM) == [rp.Disconnect(ALICE, "equivocation")]
    assert r.equivocators == {ALICE}
    # From the author itself: only that connection is cut, nobody flagged.
    assert r.clashed(CAROL, 1, CAROL, ROOM) == [rp.Disconnect(CAROL, "equivocation")]
    assert r.equivocators == {ALICE}


def test_while_unsure_our_messages_wait_until_peers_gave_ours_back_or_time_is_up() -> None:
    r = replica(BOB)
    r.set_unsure(10.0)
    assert r.waiting(ROOM)
    # Bob holds our 1..2; we hold none: still waiting.
    got = r.vector_received(BOB, m.Vector(room=ROOM, have={ME: 2}), 11.0)
    assert rp.ReleaseHeld() not in got and r.waiting(ROOM)
    r.accept(ROOM, ME, 1)
    r.accept(ROOM, ME, 2)
    assert r.committed(CHAT, ROOM, ME, 2, BOB, False, lambda: True) == [rp.ReleaseHeld()]
    assert not r.waiting(ROOM) and r.next_seq(ROOM) == 3
    assert r.waiting("dev")
    assert rp.ReleaseHeld() in r.handle_timer(10.0 + limits.UNSURE_MAX_WAIT_S)
    assert not r.waiting("dev")


def test_a_sync_flood_disconnects() -> None:
    r = replica(BOB)
    burst = int(limits.SYNC_REQUESTS_BURST)
    assert all(r.sync_allowed(BOB, 0.0) == [] for _ in range(burst))
    assert r.sync_allowed(BOB, 0.0) == [rp.Disconnect(BOB, "sync_flood")]
    assert r.sync_allowed(BOB, 1.0) == []  # it refills with time


# --- with a mesh as router (issue 16) ----------------------------------------------


def _meshed(*peers: str) -> tuple[Replica, Mesh]:
    """A replica routing through a real Mesh in which every peer holds ROOM."""
    mesh = Mesh(ME, random.Random(1), lambda _mid: False)
    mesh.join(ROOM, 0.0)
    for p in peers:
        mesh.connected(p, 0.0)
        mesh.peer_rooms(p, [ROOM], 0.0)
    return Replica(ME, View(*peers), router=mesh), mesh


def test_with_a_router_messages_go_to_the_mesh_targets_not_to_everyone() -> None:
    peers = [f"p{i}" for i in range(10)]
    r, mesh = _meshed(*peers)
    targets = sorted(mesh.mesh_peers(ROOM))
    assert len(targets) == limits.MESH_D_LO < len(peers)  # grafted at once up to D_lo
    # Our own go to every peer of the room (gossipsub's flood publishing), relays to the mesh.
    assert r.committed(CHAT, ROOM, ME, 1, None, True, bool, 1.0) == [rp.Forward(CHAT, peers)]
    sender, author = targets[0], targets[1]
    relay = r.committed(CHAT, ROOM, author, 1, sender, True, lambda: True, 1.0)
    assert relay == [rp.Forward(CHAT, targets[2:])]
    # Pushed history, an unverifiable message: never forwarded.
    assert r.committed(CHAT, ROOM, author, 2, sender, False, lambda: True, 1.0) == []
    assert r.committed(CHAT, ROOM, author, 3, sender, True, lambda: False, 1.0) == []
    # A room we do not hold is not passed on (only members carry a room).
    assert r.pass_on(CHAT, sender, author, ROOM) == []
    # Nor a conversation of others: it travels only inside its parties' ratchet (issue 12).
    dm_room = "dm." + "x" * 40
    assert r.pass_on(CHAT, sender, author, dm_room) == []
    # A duplicate is scored by the mesh, nothing is sent.
    assert r.heard_again(targets[3], ROOM, author, 1, 1.1) == []
    assert mesh._peers[targets[3]].stats[ROOM].deliveries == 1.0


def test_with_a_router_a_conversation_goes_only_to_its_other_party() -> None:
    r, _mesh = _meshed(BOB, CAROL)
    assert r.committed(CHAT, "dm", ME, 1, None, True, bool, 1.0) == [rp.Send(BOB, CHAT)]
    assert r.committed(CHAT, "dm", BOB, 1, BOB, True, lambda: True, 1.0) == []  # for us: kept
    # Its party not connected: never flooded; it waits for sync over a direct connection.
    away, _ = _meshed(CAROL)
    assert away.committed(CHAT, "dm", ME, 1, None, True, bool, 1.0) == []


def test_without_a_router_a_conversation_goes_only_to_its_other_party() -> None:
    r = Replica(ME, View(BOB, CAROL))
    assert r.committed(CHAT, "dm", ME, 1, None, True, bool, 1.0) == [rp.Send(BOB, CHAT)]
    assert r.committed(CHAT, "dm", BOB, 1, BOB, True, lambda: True, 1.0) == []  # not relayed
    away = Replica(ME, View(CAROL))
    assert away.committed(CHAT, "dm", ME, 1, None, True, bool, 1.0) == []
    assert away.pass_on(CHAT, CAROL, BOB, "dm." + "x" * 40) == []


def test_with_a_router_the_vector_waits_for_the_mesh() -> None:
    r, _mesh = _meshed(BOB)
    r.changed({(ROOM, BOB)}, 10.0)
    assert r.timers.vector == 10.0 + limits.MESH_VECTOR_DELAY_S
    plain = replica(BOB)
    plain.changed({(ROOM, BOB)}, 10.0)
    assert plain.timers.vector == 10.0 + limits.VECTOR_DELAY_S


def test_with_a_router_a_push_skips_what_the_mesh_carries_right_now() -> None:
    r, mesh = _meshed(BOB, CAROL)
    for seq in (1, 2, 3):
        r.accept(ROOM, ALICE, seq)
    mesh.received(CAROL, ROOM, (ROOM, ALICE, 3), True, 1.0)  # 3 came live just now
    (push,) = r.vector_received(BOB, m.Vector(room=ROOM, have={ALICE: 0}), 1.1)
    assert isinstance(push, rp.Push)
    assert [(p.author, p.lo, p.hi) for p in push.plan] == [(ALICE, 1, 2)]
    # Once it had the time to arrive, it is pushed like the rest.
    later = 1.0 + limits.MESH_IN_FLIGHT_S
    (push,) = r.vector_received(CAROL, m.Vector(room=ROOM, have={ALICE: 0}), later)
    assert isinstance(push, rp.Push)
    assert [(p.author, p.lo, p.hi) for p in push.plan] == [(ALICE, 1, 3)]


def test_with_a_router_a_peer_that_just_connected_gets_the_recent_ones_too() -> None:
    """A peer that (re)connected after a message went by cannot have it in flight from us:
    the push does not wait for the next periodic vector (a restarted node caught up late)."""
    r, mesh = _meshed(BOB, CAROL)
    for seq in (1, 2, 3):
        r.accept(ROOM, ALICE, seq)
    mesh.received(CAROL, ROOM, (ROOM, ALICE, 3), True, 1.0)  # 3 came live just now
    r.peer_closed(BOB)
    r.peer_opened(BOB, 1.05)  # BOB comes back
    (push,) = r.vector_received(BOB, m.Vector(room=ROOM, have={ALICE: 0}), 1.1)
    assert isinstance(push, rp.Push)
    assert [(p.author, p.lo, p.hi) for p in push.plan] == [(ALICE, 1, 3)]


def test_a_mailed_receipt_only_ever_raises_entries_never_lowers_or_wipes() -> None:
    # Each receipt goes to 2 holders: a stale copy arriving after the live one is normal.
    r = replica()  # bob is not connected: his receipts come by mail
    for seq in range(1, 8):
        r.accept(ROOM, ME, seq)
    r.accept(ROOM, ALICE, 4)
    r.vector_received(BOB, m.Vector(room=ROOM, have={ME: 3, ALICE: 4}), 1.0)
    assert r.delivery(ROOM, 3) == (1, 1)
    live = r.receipt_merged(BOB, m.Vector(room=ROOM, have={ME: 7}), 2.0)
    assert rp.Delivered(ROOM, 4, 7) in live
    # The stale copy: nothing reported, nothing lowered; and a partial one wipes no entry.
    assert r.receipt_merged(BOB, m.Vector(room=ROOM, have={ME: 5}), 3.0) == []
    assert r.room_receipts(ROOM)[BOB] == {ME: 7, ALICE: 4}
    assert r.delivery(ROOM, 7) == (1, 1)
    r.handle_timer(2.0 + limits.RECEIPT_SAVE_DELAY_S)
    assert r.take_unsaved()[(BOB, ROOM)][ME] == 7
