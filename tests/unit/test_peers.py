"""protocol/peers.py: the dial policy, driven with a seeded random.Random and a float clock."""

from __future__ import annotations

import random
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit_support import FUZZ

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.protocol.peers import (
    SEEN,
    STRANGER,
    VERIFIED,
    Candidate,
    Dial,
    HandshakeGate,
    PeerTable,
    eviction_victim,
)

LOW, MID, HIGH = sorted(Identity.from_seed(bytes([i]) * 32).peer_id for i in (1, 2, 3))
SEED = 1234


def table(own: str) -> PeerTable:
    return PeerTable(own, random.Random(SEED))


def expected_delays(n: int) -> list[float]:
    """The back-off delays a table seeded with SEED draws, computed independently."""
    rng = random.Random(SEED)
    out = []
    for failures in range(n):
        delay = limits.RECONNECT_BASE_S * 2.0 ** min(failures, limits.MAX_BACKOFF_STEPS)
        out.append(
            min(limits.RECONNECT_CAP_S, delay * (1 + limits.RECONNECT_JITTER * rng.random()))
        )
    return out


def dial_of(peer_id: str, port: int = 5000) -> Dial:
    return Dial(peer_id, "10.0.0.9", port, peer_id)


# --- who dials first --------------------------------------------------------------


def test_lower_peer_id_dials_a_beaconed_peer_at_once() -> None:
    t = table(LOW)
    assert t.beacon(HIGH, "10.0.0.9", 5000, now=10.0) is True
    assert t.get_timer() == 10.0
    assert t.due_dials(10.0) == [dial_of(HIGH)]
    assert t.due_dials(10.0) == []  # in progress: not dialled twice
    assert t.get_timer() is None


def test_higher_peer_id_waits_dial_yield() -> None:
    t = table(HIGH)
    assert t.beacon(LOW, "10.0.0.9", 5000, now=10.0) is True
    assert t.due_dials(10.0) == []
    assert t.get_timer() == 10.0 + limits.DIAL_YIELD_S
    assert t.due_dials(10.0 + limits.DIAL_YIELD_S - 0.001) == []
    assert t.due_dials(10.0 + limits.DIAL_YIELD_S) == [dial_of(LOW)]


def test_own_beacon_is_ignored() -> None:
    t = table(MID)
    assert t.beacon(MID, "10.0.0.9", 5000, now=0.0) is False
    assert t.due_dials(0.0) == [] and t.get_timer() is None
    assert t.address_of(MID) is None


def test_repeated_beacons_do_not_reschedule() -> None:
    t = table(HIGH)
    t.beacon(LOW, "10.0.0.9", 5000, now=0.0)
    t.beacon(LOW, "10.0.0.9", 5000, now=0.5)
    assert t.get_timer() == limits.DIAL_YIELD_S  # still from the first beacon


def test_beacon_updates_the_address_unless_dialling() -> None:
    t = table(LOW)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    t.beacon(HIGH, "10.0.0.7", 6000, now=0.0)
    assert t.address_of(HIGH) == ("10.0.0.7", 6000)
    assert t.due_dials(0.0) == [Dial(HIGH, "10.0.0.7", 6000, HIGH)]
    t.beacon(HIGH, "10.0.0.8", 7000, now=0.1)  # mid-dial: keep what we are dialling
    assert t.address_of(HIGH) == ("10.0.0.7", 6000)


# --- back-off -----------------------------------------------------------------------


def test_failed_dials_back_off_exponentially_with_jitter_and_a_cap() -> None:
    t = table(LOW)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    now = 0.0
    delays = []
    for _ in range(12):
        [d] = t.due_dials(now)
        t.dial_failed(d.key, now)
        timer = t.get_timer()
        assert timer is not None
        delays.append(timer - now)
        t.beacon(HIGH, "10.0.0.9", 5000, now=timer - 0.001)  # still beaconing: not stale
        assert t.due_dials(timer - 0.001) == []
        now = timer
    assert delays == pytest.approx(expected_delays(12))
    for i, delay in enumerate(delays):
        base = limits.RECONNECT_BASE_S * 2**i
        assert min(base, limits.RECONNECT_CAP_S) <= delay <= base * (1 + limits.RECONNECT_JITTER)
        assert delay <= limits.RECONNECT_CAP_S  # the cap holds, jitter included
    assert delays[:7] == sorted(delays[:7])  # doubling outruns the jitter
    assert delays[-4:] == [limits.RECONNECT_CAP_S] * 4


def test_same_seed_same_schedule() -> None:
    def schedule() -> list[float | None]:
        t = table(LOW)
        out = []
        for i in range(5):
            t.beacon(HIGH, "h", 1, now=100.0 * i)
            [d] = t.due_dials(100.0 * i)
            t.dial_failed(d.key, 100.0 * i)
            out.append(t.get_timer())
        return out

    assert schedule() == schedule()


def test_lost_connection_is_redialled_after_back_off() -> None:
    t = table(LOW)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    [d] = t.due_dials(0.0)
    t.dial_reached(d.key, HIGH)
    t.connected(HIGH, "10.0.0.9", 5000, now=0.1, dial_key=d.key)
    t.disconnected(HIGH, now=5.0, goodbye=False)
    [delay] = expected_delays(1)
    assert t.get_timer() == pytest.approx(5.0 + delay)
    assert t.due_dials(5.0 + delay) == [dial_of(HIGH)]


def test_stable_connection_resets_the_back_off() -> None:
    t = table(LOW)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    now = 0.0
    for _ in range(5):  # five failures: the next delay would be 16 s
        [d] = t.due_dials(now)
        t.dial_failed(d.key, now)
        now = t.get_timer() or 0.0
        t.beacon(HIGH, "10.0.0.9", 5000, now=now)
    [d] = t.due_dials(now)
    t.connected(HIGH, "10.0.0.9", 5000, now=now, dial_key=d.key)
    t.disconnected(HIGH, now=now + limits.STABLE_CONNECTION_S, goodbye=False)
    timer = t.get_timer()
    assert timer is not None
    assert timer - (now + limits.STABLE_CONNECTION_S) <= limits.RECONNECT_BASE_S * (
        1 + limits.RECONNECT_JITTER
    )


# --- connected, goodbye, manual, stale, bounds ---------------------------------------


def test_connected_peers_are_not_dialled() -> None:
    t = table(LOW)
    t.connected(HIGH, "10.0.0.9", 5000, now=0.0)  # inbound
    assert t.beacon(HIGH, "10.0.0.9", 5000, now=1.0) is False  # no need to answer
    assert t.due_dials(100.0) == []
    assert t.get_timer() is None


def test_beacon_of_a_peer_being_dialled_is_not_dialled_twice() -> None:
    t = table(LOW)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    assert len(t.due_dials(0.0)) == 1
    assert t.beacon(HIGH, "10.0.0.9", 5000, now=0.5) is True
    assert t.due_dials(0.5) == []


def test_inbound_connection_cancels_a_pending_dial() -> None:
    t = table(HIGH)
    t.beacon(LOW, "10.0.0.9", 5000, now=0.0)  # we would dial after DIAL_YIELD_S...
    t.connected(LOW, "10.0.0.9", 5000, now=0.5)  # ...but LOW dialled us first
    assert t.due_dials(10.0) == []


def test_goodbye_forgets_a_discovered_peer_until_it_beacons_again() -> None:
    t = table(LOW)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    [d] = t.due_dials(0.0)
    t.connected(HIGH, "10.0.0.9", 5000, now=0.1, dial_key=d.key)
    t.disconnected(HIGH, now=1.0, goodbye=True)
    assert t.address_of(HIGH) is None
    assert t.get_timer() is None
    assert t.due_dials(1000.0) == []
    assert t.beacon(HIGH, "10.0.0.9", 5000, now=2000.0) is True
    assert t.due_dials(2000.0) == [dial_of(HIGH)]


def test_manual_peer_is_dialled_at_once_and_retried_for_ever() -> None:
    t = table(LOW)
    t.add_manual("192.0.2.1", 47475, now=0.0)
    now = 0.0
    for _ in range(40):  # far beyond limits.FORGET_DISCOVERED_S: manual peers are never forgotten
        assert t.due_dials(now) == [Dial("192.0.2.1:47475", "192.0.2.1", 47475, None)]
        t.dial_failed("192.0.2.1:47475", now)
        timer = t.get_timer()
        assert timer is not None and timer > now
        now = timer
    assert now > 10 * limits.FORGET_DISCOVERED_S


def test_adding_a_manual_peer_twice_keeps_one_entry() -> None:
    t = table(LOW)
    t.add_manual("192.0.2.1", 47475, now=0.0)
    t.add_manual("192.0.2.1", 47475, now=0.0)
    assert len(t.due_dials(0.0)) == 1


@pytest.mark.parametrize("goodbye", [True, False])
def test_manual_peer_is_redialled_after_disconnect(goodbye: bool) -> None:
    t = table(LOW)
    t.add_manual("192.0.2.1", 47475, now=0.0)
    [d] = t.due_dials(0.0)
    t.dial_reached(d.key, HIGH)
    t.connected(HIGH, "192.0.2.1", 47475, now=0.1, dial_key=d.key)
    assert t.due_dials(50.0) == []  # connected: nothing to do
    t.disconnected(HIGH, now=60.0, goodbye=goodbye)
    now = 60.0
    for _ in range(30):  # the peer stays down for a long time
        timer = t.get_timer()
        assert timer is not None, "a manual peer must never be given up"
        now = timer
        dials = t.due_dials(now)
        assert dials == [Dial("192.0.2.1:47475", "192.0.2.1", 47475, HIGH)]
        t.dial_failed(dials[0].key, now)
    assert now > 60.0 + 10 * limits.FORGET_DISCOVERED_S


def test_manual_dial_reaching_a_known_peer_is_not_repeated() -> None:
    t = table(LOW)
    t.add_manual("192.0.2.1", 47475, now=0.0)
    t.beacon(HIGH, "192.0.2.1", 47475, now=0.0)
    dials = t.due_dials(0.0)
    assert {d.key for d in dials} == {"192.0.2.1:47475", HIGH}
    manual = next(d for d in dials if d.key != HIGH)
    t.dial_reached(manual.key, HIGH)
    t.connected(HIGH, "192.0.2.1", 47475, now=0.1, dial_key=manual.key)
    t.dial_failed(HIGH, now=0.2)  # the other dial lost the duplicate race
    assert t.due_dials(1000.0) == []


def test_stale_discovered_peers_are_forgotten() -> None:
    t = table(LOW)
    t.beacon(MID, "10.0.0.8", 5000, now=0.0)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    for d in t.due_dials(0.0):  # both unreachable: backing off
        t.dial_failed(d.key, 0.0)
    t.beacon(MID, "10.0.0.8", 5000, now=limits.FORGET_DISCOVERED_S)  # MID is still around
    t.due_dials(limits.FORGET_DISCOVERED_S + 0.001)
    assert t.address_of(HIGH) is None
    assert t.address_of(MID) == ("10.0.0.8", 5000)


def test_dialling_peer_is_not_forgotten_while_the_dial_runs() -> None:
    t = table(LOW)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    [d] = t.due_dials(0.0)
    t.due_dials(10 * limits.FORGET_DISCOVERED_S)  # the dial hangs for a long time
    assert t.address_of(HIGH) == ("10.0.0.9", 5000)
    t.dial_failed(d.key, 10 * limits.FORGET_DISCOVERED_S)
    t.due_dials(10 * limits.FORGET_DISCOVERED_S + 0.001)
    assert t.address_of(HIGH) is None  # silent for long: forgotten after the failure


def peer_ids(n: int) -> list[str]:
    # Distinct, sortable stand-ins; the table does not parse peer ids.
    return [f"{i:052d}" for i in range(n)]


def host_of(i: int) -> str:
    """A distinct source address per index (one host may claim few ids)."""
    return f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def held(t: PeerTable, ids: list[str]) -> int:
    """How many of ids the table holds now (address_of forgets nothing)."""
    return sum(t.address_of(pid) is not None for pid in ids)


def test_max_discovered_bounds_the_table() -> None:
    t = table("z" * 52)  # every stand-in id is lower than ours
    ids = peer_ids(limits.MAX_DISCOVERED + 1)
    for i, pid in enumerate(ids[:-1]):
        assert t.beacon(pid, host_of(i), 5000, now=i * 0.001) is True
    # Full, and everyone was heard lately: the newcomer is refused.
    newcomer = ids[-1]
    assert t.beacon(newcomer, "10.9.9.9", 5000, now=1.0) is False
    assert t.address_of(newcomer) is None
    # Once strangers have been silent for DISCOVERED_IDLE_S, the one heard longest ago
    # (and only it) makes room.
    late = limits.DISCOVERED_IDLE_S + 0.0005
    assert t.beacon(newcomer, "10.9.9.9", 5000, now=late) is True
    assert t.address_of(newcomer) is not None
    assert t.address_of(ids[0]) is None
    assert held(t, ids[1:-1]) == limits.MAX_DISCOVERED - 1
    assert len(t) == limits.MAX_DISCOVERED


def test_connected_peers_survive_a_full_table() -> None:
    t = table("z" * 52)
    ids = peer_ids(limits.MAX_DISCOVERED + 1)
    t.connected(ids[0], "10.0.0.1", 5000, now=0.0)
    for i, pid in enumerate(ids[1:-1], start=1):
        t.beacon(pid, host_of(i), 5000, now=0.0)
    assert t.beacon(ids[-1], "10.9.9.9", 5000, now=limits.DISCOVERED_IDLE_S) is True
    assert t.address_of(ids[0]) == ("10.0.0.1", 5000)
    assert t.beacon(ids[0], "10.0.0.1", 5000, now=1.0) is False  # still connected


def test_spoofed_beacon_flood_keeps_the_table_bounded() -> None:
    # Counted as the flood goes (due_dials would forget stale entries first and hide growth).
    t = table("z" * 52)
    for i, pid in enumerate(peer_ids(5 * limits.MAX_DISCOVERED)):
        t.beacon(pid, host_of(i), 5000, now=i * 0.1)
        assert len(t) <= limits.MAX_DISCOVERED


def test_a_beacon_flood_never_evicts_a_known_peer_or_its_pending_redial() -> None:
    t = table(LOW)
    t.connected(HIGH, "10.1.1.1", 5000, now=0.0)
    t.disconnected(HIGH, now=1.0, goodbye=False)  # lost: a redial is pending
    redial_at = t.get_timer()
    assert redial_at is not None
    flood = [f"a{i:051d}" for i in range(5 * limits.MAX_DISCOVERED)]  # all above LOW
    for i, pid in enumerate(flood):
        t.beacon(pid, host_of(i), 5000, now=1.0 + i * 0.05)
        assert t.address_of(HIGH) == ("10.1.1.1", 5000)
    assert redial_at in [e.next_attempt for e in t._entries.values() if e.peer_id == HIGH]


def test_a_beacon_flood_does_not_evict_a_stranger_that_keeps_beaconing() -> None:
    t = table("z" * 52)
    live = "y" * 52
    now = 0.0
    for i, pid in enumerate(peer_ids(5 * limits.MAX_DISCOVERED)):
        now = i * 0.05
        if i % 60 == 0:  # every 3 s, like a real peer
            t.beacon(live, "10.200.0.1", 5000, now=now)
        t.beacon(pid, host_of(i), 5000, now=now)
        assert t.address_of(live) is not None


def test_one_source_address_claims_few_ids() -> None:
    t = table("z" * 52)
    ids = peer_ids(limits.MAX_IDS_PER_HOST + 5)
    accepted = [t.beacon(pid, "10.0.0.66", 5000, now=0.0) for pid in ids]
    assert accepted == [True] * limits.MAX_IDS_PER_HOST + [False] * 5
    assert t.beacon("y" * 52, "10.0.0.67", 5000, now=0.0) is True  # another host still can
    # A known peer at that address is no stranger: it does not count.
    t.connected("x" * 52, "10.0.0.66", 6000, now=0.0)
    assert t.beacon("x" * 52, "10.0.0.66", 6000, now=0.1) is False


def test_first_dials_of_strangers_are_paced() -> None:
    t = table("-" * 52)  # lower than every stand-in: dials at once
    for i, pid in enumerate(peer_ids(100)):
        t.beacon(pid, host_of(i), 5000, now=0.0)
    burst = int(limits.NEW_DIALS_BURST)
    assert len(t.due_dials(0.0)) == burst
    assert t.due_dials(0.0) == []
    timer = t.get_timer()
    assert timer == pytest.approx(1.0 / limits.NEW_DIALS_PER_S)  # not a busy loop
    dialled = burst
    now = 0.0
    while now < 10.0:
        now = t.get_timer() or 10.0
        dialled += len(t.due_dials(now))
    assert dialled <= burst + limits.NEW_DIALS_PER_S * 10.0 + 1


def test_redials_of_known_peers_and_manual_addresses_are_not_paced() -> None:
    t = table("-" * 52)  # lower than every stand-in: dials at once
    for i, pid in enumerate(peer_ids(50)):
        t.beacon(pid, host_of(i), 5000, now=0.0)
    t.due_dials(0.0)  # the burst is spent on strangers
    t.add_manual("192.0.2.1", 47475, now=0.0)
    t.connected("y" * 52, "10.1.1.1", 5000, now=0.0)
    t.disconnected("y" * 52, now=0.0, goodbye=False)
    assert t.wanted("y" * 52, now=0.0) is True
    keys = {d.key for d in t.due_dials(0.0)}
    assert keys == {"192.0.2.1:47475", "y" * 52}


def test_a_beacon_does_not_move_a_proven_address_until_a_dial_there_fails() -> None:
    t = table(LOW)
    t.connected(HIGH, "10.1.1.1", 5000, now=0.0)  # a handshake proved this address
    t.beacon(HIGH, "10.6.6.6", 6666, now=0.5)  # spoofed while connected
    assert t.address_of(HIGH) == ("10.1.1.1", 5000)
    t.disconnected(HIGH, now=1.0, goodbye=False)
    t.beacon(HIGH, "10.6.6.6", 6666, now=1.1)  # spoofed while we plan to redial
    assert t.address_of(HIGH) == ("10.1.1.1", 5000)
    [dial] = t.due_dials(10.0)
    assert (dial.host, dial.port) == ("10.1.1.1", 5000)
    t.dial_failed(dial.key, now=10.0)  # the peer moved: now a beacon may say where
    t.beacon(HIGH, "10.1.1.2", 5000, now=10.1)
    assert t.address_of(HIGH) == ("10.1.1.2", 5000)


# --- dialling on demand -----------------------------------------------------------


def test_a_wanted_peer_is_dialled_without_waiting_for_its_back_off() -> None:
    t = table(LOW)
    t.connected(HIGH, "10.0.0.9", 5000, now=0.0)
    for _ in range(4):  # a few failures: the back-off has grown
        t.disconnected(HIGH, now=1.0, goodbye=False)
        assert t.due_dials(1.0) == []
    timer = t.get_timer()
    assert timer is not None and timer > 1.5  # the back-off has grown past now
    assert t.wanted(HIGH, now=1.5) is True
    assert t.due_dials(1.5) == [dial_of(HIGH)]
    assert t.wanted(HIGH, now=1.6) is False  # already dialling


def test_a_wanted_peer_of_a_manual_address_is_dialled_there() -> None:
    t = table(LOW)
    t.add_manual("10.0.0.5", 7000, now=0.0)
    [dial] = t.due_dials(0.0)
    t.dial_reached(dial.key, HIGH)
    t.connected(HIGH, "10.0.0.5", 7000, now=0.0, dial_key=dial.key)
    t.disconnected(HIGH, now=2.0, goodbye=True)
    assert t.due_dials(2.0) == []
    assert t.wanted(HIGH, now=2.1) is True
    assert [(d.host, d.port) for d in t.due_dials(2.1)] == [("10.0.0.5", 7000)]


def test_an_unknown_or_connected_peer_is_not_dialled_on_demand() -> None:
    t = table(LOW)
    assert t.wanted(HIGH, now=0.0) is False
    t.connected(HIGH, "10.0.0.9", 5000, now=0.0)
    assert t.wanted(HIGH, now=0.1) is False
    assert t.due_dials(0.1) == []


def test_a_peer_without_a_listen_port_is_not_redialled() -> None:
    t = table(LOW)
    t.connected(HIGH, "10.0.0.9", 0, now=0.0)  # it only dials (a listen port of 0)
    t.disconnected(HIGH, now=1.0, goodbye=False)
    assert t.get_timer() is None and t.due_dials(100.0) == []


# --- the peer limit: who may replace whom ----------------------------------------------


def cand(peer_id: str, rank: int, last_active: float) -> Candidate:
    return Candidate(peer_id, rank, last_active)


def test_a_newcomer_replaces_only_a_lower_ranked_peer_lowest_and_idlest_first() -> None:
    peers = [
        cand("v", VERIFIED, 0.0),
        cand("s1", SEEN, 5.0),
        cand("x1", STRANGER, 9.0),
        cand("x2", STRANGER, 3.0),
    ]
    assert eviction_victim(peers, VERIFIED, now=10.0) == "x2"
    assert eviction_victim(peers, SEEN, now=10.0) == "x2"
    assert eviction_victim(peers[:2], VERIFIED, now=10.0) == "s1"
    # Rank for rank, only an idle one; a verified peer never.
    assert eviction_victim(peers, STRANGER, now=10.0) is None
    idle = 3.0 + limits.PEER_IDLE_EVICT_S
    assert eviction_victim(peers, STRANGER, now=idle) == "x2"
    assert eviction_victim(peers[:2], SEEN, now=100 * idle) == "s1"
    assert eviction_victim(peers[:1], VERIFIED, now=100 * idle) is None


def test_64_throwaway_identities_give_way_to_known_peers() -> None:
    # They connected in the last second: none is idle.
    throwaways = [cand(f"t{i}", STRANGER, 100.0 + i / 100) for i in range(limits.MAX_PEERS)]
    assert eviction_victim(throwaways, STRANGER, now=101.0) is None
    assert eviction_victim(throwaways, SEEN, now=101.0) == "t0"
    assert eviction_victim(throwaways, VERIFIED, now=101.0) == "t0"


# --- handshake slots --------------------------------------------------------------------


def test_one_source_address_holds_few_handshake_slots() -> None:
    gate = HandshakeGate()
    n = limits.MAX_PENDING_PER_HOST
    got = [gate.admit(("a", i), "10.0.0.66", now=0.0) for i in range(n + 3)]
    assert got == [(True, None)] * n + [(False, None)] * 3
    assert gate.admit("good", "10.0.0.7", now=0.0) == (True, None)
    gate.done(("a", 0))  # a handshake ended (completed, failed or timed out): a slot is free
    assert gate.admit(("a", 99), "10.0.0.66", now=0.0) == (True, None)


def test_full_handshake_slots_are_shared_fairly_between_sources() -> None:
    gate = HandshakeGate()
    per_host = limits.MAX_PENDING_PER_HOST
    hosts = [f"10.0.0.{i}" for i in range(limits.MAX_PENDING_HANDSHAKES // per_host)]
    for h in hosts:
        for i in range(per_host):
            assert gate.admit((h, i), h, now=0.0) == (True, None)
    assert len(gate) == limits.MAX_PENDING_HANDSHAKES
    # Full: a new source takes the oldest slot of a source holding more than its share.
    assert gate.admit("good", "10.0.1.1", now=0.0) == (True, (hosts[0], 0))
    assert len(gate) == limits.MAX_PENDING_HANDSHAKES
    # A source already holding its share gets nothing more while all are even.
    assert gate.admit((hosts[1], 99), hosts[1], now=0.0) == (False, None)


def test_handshakes_per_source_address_are_rate_limited() -> None:
    gate = HandshakeGate()
    burst = int(limits.HANDSHAKES_PER_HOST_BURST)
    started = 0
    for i in range(burst + 10):
        ok, _ = gate.admit(i, "10.0.0.66", now=0.0)
        if ok:
            started += 1
            gate.done(i)  # each handshake ends at once: only the rate limits
    assert started == burst
    assert gate.admit("later", "10.0.0.66", now=1.0)[0] is True  # refilled
    assert gate.admit("other", "10.0.0.7", now=0.0)[0] is True  # another source is not limited


# --- properties ---------------------------------------------------------------------------

beacon_op = st.tuples(st.just("beacon"), st.integers(0, 40), st.integers(0, 5))
op = st.one_of(
    beacon_op,
    beacon_op,
    beacon_op,  # mostly beacons, so that the bounds are reached
    st.tuples(st.just("fail"), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("connect"), st.integers(0, 40), st.integers(0, 5)),
    st.tuples(st.just("lose"), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 800), st.just(0)),
)


@FUZZ
@given(st.lists(op, min_size=20, max_size=200))
def test_any_sequence_keeps_the_table_bounded_and_never_spins(
    ops: list[tuple[str, int, int]],
) -> None:
    with (
        mock.patch.object(limits, "MAX_DISCOVERED", 8),  # small bounds, so they are reached
        mock.patch.object(limits, "MAX_IDS_PER_HOST", 3),
    ):
        run_table_ops(ops)


def run_table_ops(ops: list[tuple[str, int, int]]) -> None:
    ids = [f"{i:052d}" for i in range(41)]
    t = table(f"{20:052d}5")  # between stand-ins 20 and 21: some dial at once, some yield
    now = 0.0
    for kind, i, h in ops:
        pid, host = ids[min(i, 40)], f"10.0.0.{h}"
        if kind == "beacon":
            t.beacon(pid, host, 5000, now)
        elif kind == "fail":
            t.dial_failed(pid, now)
        elif kind == "connect":
            t.connected(pid, host, 5000, now)
        elif kind == "lose":
            if t._is_connected(pid):
                t.disconnected(pid, now, goodbye=False)
        else:
            now += i / 100
        # Beacons alone add strangers; peers we were connected to came through the peer
        # limit and are forgotten like the rest once silent.
        strangers = [e for e in t._entries.values() if t._is_stranger(e)]
        assert len(strangers) <= limits.MAX_DISCOVERED
        for host_ in {e.host for e in strangers}:
            assert sum(e.host == host_ for e in strangers) <= limits.MAX_IDS_PER_HOST
        t.due_dials(now)
        timer = t.get_timer()
        assert timer is None or timer > now  # due_dials did everything due: no busy loop


def test_a_peer_known_from_an_earlier_run_gets_in_and_is_dialled_at_once_during_a_flood() -> None:
    old_friend = "y" * 52
    t = PeerTable("-" * 52, random.Random(SEED), known=lambda pid: pid == old_friend)
    flood = peer_ids(limits.MAX_DISCOVERED)
    for i, pid in enumerate(flood):
        t.beacon(pid, host_of(i), 5000, now=0.0)  # fresh: none is idle yet
    t.due_dials(0.0)  # the flood spends the dial burst
    assert t.beacon("x" * 52, "10.9.9.8", 5000, now=0.0) is False  # a stranger: no room
    assert t.beacon(old_friend, host_of(0), 5000, now=0.0) is True  # host cap does not apply
    assert len(t) == limits.MAX_DISCOVERED
    assert [d.key for d in t.due_dials(0.0)] == [old_friend]  # not paced behind the flood


# --- with the gossip mesh: beacons feed candidates, the mesh dials -------------------


def mesh_table(own: str, contacts: tuple[str, ...] = ()) -> PeerTable:
    return PeerTable(
        own, random.Random(SEED), dial_discovered=False, contact=lambda p: p in contacts
    )


def test_mesh_mode_beacon_records_the_address_but_does_not_dial() -> None:
    t = mesh_table(LOW)
    assert t.beacon(HIGH, "10.0.0.9", 5000, now=10.0) is True  # still worth answering
    assert t.address_of(HIGH) == ("10.0.0.9", 5000)
    assert t.get_timer() is None
    assert t.due_dials(100.0) == []


def test_mesh_mode_wanted_peer_is_dialled_once_and_not_retried_by_the_table() -> None:
    t = mesh_table(LOW)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    assert t.wanted(HIGH, now=1.0) is True
    assert t.due_dials(1.0) == [dial_of(HIGH)]
    t.dial_failed(HIGH, now=2.0)
    assert t.get_timer() is None  # the mesh asks again (or picks another candidate)
    assert t.wanted(HIGH, now=3.0) is True
    assert t.due_dials(3.0) == [dial_of(HIGH)]


def test_mesh_mode_lost_connection_is_not_redialled_by_the_table() -> None:
    t = mesh_table(LOW)
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    t.wanted(HIGH, now=0.0)
    [d] = t.due_dials(0.0)
    t.dial_reached(d.key, HIGH)
    t.connected(HIGH, "10.0.0.9", 5000, now=0.1, dial_key=d.key)
    t.disconnected(HIGH, now=5.0, goodbye=False)
    assert t.get_timer() is None
    assert t.due_dials(1000.0) == []


def test_mesh_mode_contacts_and_manual_peers_are_still_dialled_and_redialled() -> None:
    t = mesh_table(LOW, contacts=(HIGH,))
    t.beacon(HIGH, "10.0.0.9", 5000, now=0.0)
    t.beacon(MID, "10.0.0.8", 5000, now=0.0)
    t.add_manual("10.0.0.7", 6000, now=0.0)
    dials = t.due_dials(0.0)
    assert sorted(d.key for d in dials) == sorted(["10.0.0.7:6000", HIGH])
    t.dial_failed(HIGH, now=1.0)
    [delay] = expected_delays(1)
    assert t.due_dials(1.0 + delay) == [dial_of(HIGH)]
