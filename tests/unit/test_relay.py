"""protocol/relay.py (the relay's book, the client's keeper) and the circuit handoff of
protocol/session.py: in memory, time as a float, exact answers."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_support import byte_by_byte, deliver, drain, make_info, pair, summary, whole

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.net.relay import classify_path
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import Reason, RelayRefusal
from chinwag.protocol.relay import Circuit, RelayBook, ReservationKeeper
from chinwag.protocol.session import FrameReceived, Session, State

TTL = limits.RELAY_RESERVATION_TTL_S
KIB128 = limits.RELAY_CIRCUIT_MAX_BYTES


@pytest.fixture(autouse=True)
def _quiet_fixed_ephemeral_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One of ephemeral keypairs is already set")
        yield


def _ids(n: int) -> list[str]:
    return [Identity.generate().peer_id for _ in range(n)]


PEERS = _ids(12)


def _reserved(book: RelayBook, peer: str, ip: str = "10.0.0.1", now: float = 0.0) -> None:
    assert isinstance(book.reserve(peer, ip, now, 1_000.0), m.ReserveOk)


# --- reservations ------------------------------------------------------------------


def test_a_reservation_is_granted_with_the_limits_and_its_expiry() -> None:
    book = RelayBook()
    ok = book.reserve(PEERS[0], "10.0.0.1", 5.0, 1_000.0)
    assert ok == m.ReserveOk(expires=int(1_000 + TTL), ttl=int(TTL), max_bytes=KIB128, max_s=120)
    assert book.reserved(PEERS[0], 5.0)
    assert not book.reserved(PEERS[0], 5.0 + TTL)  # it expires unless renewed


def test_one_peer_gets_four_grants_per_ttl() -> None:
    """Renewals count: a peer cannot churn reservations (each costs the relay work)."""
    book = RelayBook()
    for i in range(limits.RELAY_MAX_RESERVATIONS_PER_PEER):
        _reserved(book, PEERS[0], now=float(i))
    no = book.reserve(PEERS[0], "10.0.0.1", 10.0, 0.0)
    assert no == m.ReserveNo(reason=RelayRefusal.RESOURCE_LIMIT)
    _reserved(book, PEERS[0], now=TTL + 0.5)  # the first grant left the window


def test_one_address_gets_eight_grants_per_ttl() -> None:
    book = RelayBook()
    for peer in PEERS[: limits.RELAY_MAX_RESERVATIONS_PER_IP]:
        _reserved(book, peer, ip="192.0.2.7")
    over = PEERS[limits.RELAY_MAX_RESERVATIONS_PER_IP]
    assert isinstance(book.reserve(over, "192.0.2.7", 0.0, 0.0), m.ReserveNo)
    _reserved(book, over, ip="192.0.2.8")  # another address is fine


def test_the_relay_grants_at_most_128_per_ttl_in_all() -> None:
    book = RelayBook()
    for i in range(limits.RELAY_MAX_RESERVATIONS):
        _reserved(book, f"p{i}", ip=f"10.0.{i // 8}.{i % 8}")
    assert isinstance(book.reserve("late", "10.9.9.9", 1.0, 0.0), m.ReserveNo)
    assert len(book.reservations) == limits.RELAY_MAX_RESERVATIONS


def test_a_dropped_reservation_connection_ends_reachability() -> None:
    book = RelayBook()
    _reserved(book, PEERS[0])
    book.unreserve(PEERS[0])
    assert book.connect(PEERS[1], PEERS[0], 1.0) == m.CircuitNo(reason=RelayRefusal.NO_RESERVATION)


# --- circuits ----------------------------------------------------------------------


def _circuit(book: RelayBook, src: str, dst: str, now: float = 0.0) -> Circuit:
    got = book.connect(src, dst, now)
    assert isinstance(got, Circuit), got
    return got


def test_a_circuit_needs_the_targets_reservation_and_its_accept() -> None:
    book = RelayBook()
    a, b, c = PEERS[:3]
    assert book.connect(a, b, 0.0) == m.CircuitNo(reason=RelayRefusal.NO_RESERVATION)
    _reserved(book, b)
    assert book.connect(b, b, 0.0) == m.CircuitNo(reason=RelayRefusal.SELF)
    circuit = _circuit(book, a, b)
    assert book.accept(c, circuit.id, 1.0) == m.CircuitNo(reason=RelayRefusal.UNKNOWN_CIRCUIT)
    assert book.accept(b, circuit.id + 1, 1.0) == m.CircuitNo(reason=RelayRefusal.UNKNOWN_CIRCUIT)
    assert book.accept(b, circuit.id, 1.0) is circuit
    assert book.accept(b, circuit.id, 1.0) == m.CircuitNo(reason=RelayRefusal.UNKNOWN_CIRCUIT)
    assert book.ok_frame(circuit) == m.CircuitOk(max_bytes=KIB128, max_s=120)


def test_a_circuit_not_accepted_in_time_is_due_to_close() -> None:
    book = RelayBook()
    _reserved(book, PEERS[1])
    circuit = _circuit(book, PEERS[0], PEERS[1], now=10.0)
    assert book.get_timer() == 10.0 + limits.RELAY_CIRCUIT_SETUP_S
    assert book.due(10.0 + limits.RELAY_CIRCUIT_SETUP_S - 0.01) == []
    assert book.due(10.0 + limits.RELAY_CIRCUIT_SETUP_S) == [circuit.id]


def test_a_limited_circuit_closes_after_two_minutes() -> None:
    book = RelayBook()
    _reserved(book, PEERS[1])
    circuit = _circuit(book, PEERS[0], PEERS[1])
    book.accept(PEERS[1], circuit.id, 1.0)
    assert book.due(1.0 + limits.RELAY_CIRCUIT_MAX_S - 0.01) == []
    assert book.due(1.0 + limits.RELAY_CIRCUIT_MAX_S) == [circuit.id]


def test_a_limited_circuit_carries_128_kib_each_way_and_no_more() -> None:
    book = RelayBook()
    _reserved(book, PEERS[1])
    cid = _circuit(book, PEERS[0], PEERS[1]).id
    book.accept(PEERS[1], cid, 0.0)
    assert book.allow(cid, True, KIB128 - 10) == KIB128 - 10
    assert not book.exhausted(cid)
    assert book.allow(cid, False, 1000) == 1000  # the other direction has its own budget
    assert book.allow(cid, True, 25) == 10  # only what is left passes
    assert book.exhausted(cid)
    assert book.allow(cid, True, 1) == 0


def test_circuits_per_peer_and_in_all_are_bounded() -> None:
    book = RelayBook()
    target = PEERS[0]
    _reserved(book, target)
    for _ in range(limits.RELAY_MAX_CIRCUITS_PER_PEER):
        _circuit(book, PEERS[1], target)
    assert book.connect(PEERS[2], target, 0.0) == m.CircuitNo(reason=RelayRefusal.RESOURCE_LIMIT)
    book2 = RelayBook()
    targets = [f"t{i}" for i in range(8)]
    for i, t in enumerate(targets):
        _reserved(book2, t, ip=f"10.1.0.{i}")
    made = 0
    for i in range(limits.RELAY_MAX_CIRCUITS):
        got = book2.connect(f"s{i}", targets[i % len(targets)], 0.0)
        made += isinstance(got, Circuit)
    assert made == limits.RELAY_MAX_CIRCUITS
    assert book2.connect("late", targets[0], 0.0) == m.CircuitNo(reason=RelayRefusal.RESOURCE_LIMIT)


def test_one_host_cannot_take_every_circuit_with_fresh_ids() -> None:
    # The most reservations one IP gets, each target dialled by fresh ids from that IP.
    book = RelayBook()
    own = [f"own{i}" for i in range(limits.RELAY_MAX_RESERVATIONS_PER_IP)]
    for t in own:
        _reserved(book, t, ip="10.9.9.9")
    made = sum(
        isinstance(book.connect(f"fresh{i}", own[i % len(own)], 0.0, "10.9.9.9"), Circuit)
        for i in range(limits.RELAY_MAX_CIRCUITS)
    )
    assert made == limits.RELAY_MAX_CIRCUITS_PER_IP < limits.RELAY_MAX_CIRCUITS
    # Room is left for everybody else.
    _reserved(book, "bob", ip="10.0.0.2")
    assert isinstance(book.connect("alice", "bob", 0.0, "10.0.0.1"), Circuit)


def test_contacts_get_unlimited_circuits_only_between_two_contacts() -> None:
    a, b, stranger = PEERS[:3]
    book = RelayBook(unlimited=lambda peer: peer in (a, b))
    assert book.reserve(b, "10.0.0.2", 0.0, 0.0) == m.ReserveOk(expires=int(TTL), ttl=int(TTL))
    free = _circuit(book, a, b)
    assert not free.limited and book.ok_frame(free) == m.CircuitOk()
    book.accept(b, free.id, 0.0)
    assert book.allow(free.id, True, 10 * KIB128) == 10 * KIB128
    assert book.due(10 * limits.RELAY_CIRCUIT_MAX_S) == []
    assert _circuit(book, stranger, b).limited


# --- any sequence of requests stays within the bounds ---------------------------------

# Few ids, circuits and addresses, short waits mostly: sequences often reserve, connect,
# accept and send on one circuit, and often reach the per-peer and per-address bounds.
_PEER = st.sampled_from([f"p{i}" for i in range(10)])
_IP = st.sampled_from(["10.0.0.1", "10.0.0.2"])
_CID = st.integers(0, 6)
_WAIT = st.sampled_from([0.5, 3.0, 6.0, 60.0, 130.0, 4_000.0])
_RESERVE = st.tuples(st.just("reserve"), _PEER, _IP)
_OPS = st.lists(
    st.one_of(
        _RESERVE,
        _RESERVE,
        st.tuples(st.just("unreserve"), _PEER),
        st.tuples(st.just("connect"), _PEER, _PEER),
        st.tuples(st.just("connect"), _PEER, _PEER),
        st.tuples(st.just("accept"), _PEER, _CID),
        st.tuples(st.just("bytes"), _CID, st.booleans(), st.integers(0, 1 << 18)),
        st.tuples(st.just("wait"), _WAIT),
    ),
    min_size=20,
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(_OPS)
def test_no_sequence_of_requests_exceeds_the_bounds(ops: list[tuple[object, ...]]) -> None:
    book = RelayBook()
    now = 0.0
    for op in ops:
        kind = op[0]
        if kind == "reserve":
            book.reserve(str(op[1]), str(op[2]), now, now)
        elif kind == "unreserve":
            book.unreserve(str(op[1]))
        elif kind == "connect":
            book.connect(str(op[1]), str(op[2]), now)
        elif kind == "accept":
            book.accept(str(op[1]), int(op[2]), now)  # type: ignore[call-overload]
        elif kind == "bytes":
            book.allow(int(op[1]), bool(op[2]), int(op[3]))  # type: ignore[call-overload]
        else:
            now += float(op[1])  # type: ignore[arg-type]
            for cid in book.due(now):
                book.close(cid)
        total, per_peer, per_ip = book.grant_counts()
        assert total <= limits.RELAY_MAX_RESERVATIONS
        assert max(per_peer.values(), default=0) <= limits.RELAY_MAX_RESERVATIONS_PER_PEER
        assert max(per_ip.values(), default=0) <= limits.RELAY_MAX_RESERVATIONS_PER_IP
        assert len(book.reservations) <= limits.RELAY_MAX_RESERVATIONS
        assert len(book.circuits) <= limits.RELAY_MAX_CIRCUITS
        for peer in {c.src for c in book.circuits.values()} | {
            c.dst for c in book.circuits.values()
        }:
            mine = [c for c in book.circuits.values() if peer in (c.src, c.dst)]
            assert len(mine) <= limits.RELAY_MAX_CIRCUITS_PER_PEER
        for c in book.circuits.values():
            assert c.limited and max(c.sent) <= c.max_bytes
            deadline = c.deadline()
            assert deadline is not None and deadline > now  # the due ones were closed


# --- the client's keeper -----------------------------------------------------------------


def _ok(ttl: int = int(TTL)) -> m.ReserveOk:
    return m.ReserveOk(expires=ttl, ttl=ttl, max_bytes=KIB128, max_s=120)


def test_the_keeper_reserves_on_connect_and_renews_before_expiry() -> None:
    keeper = ReservationKeeper()
    assert keeper.add_relay("r")
    assert keeper.due(0.0) == []  # not connected yet
    keeper.connected("r", 1.0)
    assert keeper.due(1.0) == ["r"]
    assert keeper.due(1.0) == []  # asked once
    keeper.granted("r", _ok(), 1.5)
    assert keeper.reserved(2.0) == ["r"]
    renew_at = 1.5 + TTL * limits.RELAY_RENEW_AT
    assert keeper.get_timer() == renew_at
    assert keeper.due(renew_at - 1) == []
    assert keeper.due(renew_at) == ["r"]
    assert keeper.reserved(renew_at) == ["r"]  # still held while the renewal is on its way


def test_the_keeper_backs_off_after_refusals_drops_and_silence() -> None:
    keeper = ReservationKeeper()
    keeper.add_relay("r")
    keeper.connected("r", 0.0)
    assert keeper.due(0.0) == ["r"]
    keeper.refused("r", 0.0)
    assert keeper.due(limits.RELAY_RETRY_BASE_S - 0.01) == []
    assert keeper.due(limits.RELAY_RETRY_BASE_S) == ["r"]
    keeper.refused("r", 10.0)
    assert keeper.get_timer() == 10.0 + 2 * limits.RELAY_RETRY_BASE_S  # doubled
    keeper.granted("r", _ok(), 20.0)
    keeper.disconnected("r", 30.0)  # the reservation goes with the connection
    assert keeper.reserved(30.0) == []
    keeper.connected("r", 30.5)
    assert keeper.due(30.5) == []  # reconnected, but backing off (the grant reset it)
    assert keeper.due(30.0 + limits.RELAY_RETRY_BASE_S) == ["r"]
    # No answer at all: counts as a refusal once the setup time passed.
    t = 30.0 + limits.RELAY_RETRY_BASE_S + limits.RELAY_CIRCUIT_SETUP_S
    assert keeper.due(t) == []
    assert keeper.get_timer() == t + 2 * limits.RELAY_RETRY_BASE_S


def test_the_keeper_knows_a_bounded_number_of_relays() -> None:
    keeper = ReservationKeeper()
    for i in range(limits.RELAY_MAX_KNOWN):
        assert keeper.add_relay(f"r{i}")
    assert not keeper.add_relay("one-more")
    assert keeper.add_relay("r0")  # known already


# --- the session's handoff after a circuit frame ------------------------------------


def _circuit_pair() -> tuple[Session, Session]:
    client = make_info("alice", 0, ("chat/1", m.CIRCUIT_CAP))
    relay = make_info("relay", 0, ("chat/1", m.RELAY_CAP))
    p = pair(client, relay)
    assert p.a.state is State.OPEN and p.b.state is State.OPEN
    assert p.a.circuit and p.b.circuit  # the relay learnt it from the client's hello
    return p.a, p.b


@pytest.mark.parametrize("chunker", [whole, byte_by_byte], ids=["whole", "byte_by_byte"])
def test_after_cok_the_session_stops_and_hands_back_the_bytes_behind_it(chunker: object) -> None:
    client, relay = _circuit_pair()
    relay.send_frame(m.CircuitOk(max_bytes=5, max_s=6))
    behind = b"\x00\x20" + bytes(range(32)) + b"the far end's next bytes"
    deliver(client, relay.data_to_send() + behind, 1.0, chunker)  # type: ignore[arg-type]
    assert [e.frame for e in drain(client) if isinstance(e, FrameReceived)] == [
        m.CircuitOk(max_bytes=5, max_s=6)
    ]
    assert client.halted and client.state is State.OPEN
    assert client.take_unread() == behind
    assert client.take_unread() == b""


def test_the_relay_side_stops_reading_after_cconn() -> None:
    client, relay = _circuit_pair()
    client.send_frame(m.Connect(target=PEERS[0]))
    relay.receive_data(client.data_to_send() + b"early", 1.0)
    assert [e.frame for e in drain(relay) if isinstance(e, FrameReceived)] == [
        m.Connect(target=PEERS[0])
    ]
    assert relay.halted and relay.take_unread() == b"early"


def test_a_circuit_session_sends_no_keepalive_that_would_cross_the_splice() -> None:
    client, relay = _circuit_pair()
    assert client.get_timer() is None and relay.get_timer() is None
    client.handle_timer(limits.KEEPALIVE_INTERVAL_S * 10)
    assert client.data_to_send() == b"" and client.state is State.OPEN


def test_circuit_frames_on_an_ordinary_connection_close_it() -> None:
    p = pair(make_info("alice"), make_info("bob"))
    p.take()
    p.a.send_frame(m.CircuitOk())
    p.shuttle(1.0)
    _, b_events = p.take()
    assert b_events == [("closed", Reason.MALFORMED_FRAME, False)]


def test_a_peer_we_dial_cannot_make_our_connection_a_circuit_one() -> None:
    # Bob answers Alice's ordinary dial with `circuit/1` in his hello: Alice keeps her
    # keepalive (he cannot turn off her dead-peer check) and refuses a `cok` from him
    # (he cannot halt her reading and wedge the connection).
    p = pair(make_info("alice"), make_info("bob", caps=("chat/1", m.CIRCUIT_CAP)))
    p.take()
    assert not p.a.circuit and p.a.get_timer() is not None
    p.b.send_frame(m.CircuitOk())
    p.shuttle(1.0)
    a_events, _ = p.take()
    assert a_events == [("closed", Reason.MALFORMED_FRAME, False)]
    assert not p.a.halted


def test_reservation_frames_reach_the_layer_above_on_an_ordinary_connection() -> None:
    p = pair(make_info("alice"), make_info("bob"))
    p.take()
    for frame in (m.Reserve(), _ok(), m.ReserveNo(reason="x"), m.Incoming(circuit=3, src=PEERS[0])):
        p.a.send_frame(frame)
        p.shuttle(1.0)
        assert [e.frame for e in p.b_events if isinstance(e, FrameReceived)] == [frame]
        p.b_events.clear()
    assert summary(p.a_events) == []


# --- paths -------------------------------------------------------------------------------


def test_paths_are_lan_inside_our_subnets_and_direct_beyond() -> None:
    nets = [("192.168.1.20", 24), ("127.0.0.1", 8), ("fd00::1", 64)]
    assert classify_path("192.168.1.77", nets) == "lan"
    assert classify_path("127.0.0.1", nets) == "lan"
    assert classify_path("::ffff:192.168.1.3", nets) == "lan"
    assert classify_path("[fd00::9]", nets) == "lan"
    assert classify_path("203.0.113.5", nets) == "direct"
    assert classify_path("not an address", nets) == "direct"
