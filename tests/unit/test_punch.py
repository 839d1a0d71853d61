"""protocol/punch.py: DCUtR timing, attempts, back-off and bounds, two punchers back to back."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chinwag import limits
from chinwag.errors import RemoteProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol.addr import format_addr, parse_addr
from chinwag.protocol.punch import Action, Dial, Phase, Puncher, RoundFailed, SendFrame

A_ADDRS = ("203.0.113.1:47475",)
B_ADDRS = ("203.0.113.2:47475", "198.51.100.9:4000")


def drain(p: Puncher) -> list[Action]:
    out = []
    while (a := p.next_action()) is not None:
        out.append(a)
    return out


def frame_of(actions: list[Action]) -> m.PunchConnect | m.PunchSync:
    (action,) = actions
    assert isinstance(action, SendFrame)
    # Through the real codec, as on the wire.
    decoded = m.decode_frame(m.encode(action.frame))
    assert isinstance(decoded, m.PunchConnect | m.PunchSync)
    return decoded


def exchange(i: Puncher, r: Puncher, t: float, one_way: float) -> tuple[Dial, float, Dial, float]:
    """Run one attempt from its start at t; return each side's Dial and when it came."""
    assert i.get_timer() is not None and i.get_timer() <= t
    i.handle_timer(t)
    connect = frame_of(drain(i))
    assert isinstance(connect, m.PunchConnect) and connect.addrs == list(A_ADDRS)
    r.receive(connect, t + one_way)
    answer = frame_of(drain(r))
    assert isinstance(answer, m.PunchConnect) and answer.addrs == list(B_ADDRS)
    assert answer.n == connect.n
    i.receive(answer, t + 2 * one_way)
    sync = frame_of(drain(i))
    assert isinstance(sync, m.PunchSync) and sync.n == connect.n
    r.receive(sync, t + 3 * one_way)
    (r_dial,) = drain(r)
    assert isinstance(r_dial, Dial)
    i_at = i.get_timer()
    assert i_at is not None
    assert drain(i) == []
    i.handle_timer(i_at)
    (i_dial,) = drain(i)
    assert isinstance(i_dial, Dial)
    return i_dial, i_at, r_dial, t + 3 * one_way


def pair(now: float = 0.0) -> tuple[Puncher, Puncher]:
    return Puncher(True, now, A_ADDRS), Puncher(False, now, B_ADDRS)


def test_both_sides_dial_at_the_same_moment_rtt_over_two_after_sync() -> None:
    i, r = pair()
    i_dial, i_at, r_dial, r_at = exchange(i, r, 0.0, one_way=0.05)
    assert i.rtt == pytest.approx(0.1)
    # The initiator sent sync at 0.1 and dials 0.05 later, when the sync reaches the responder.
    assert i_at == pytest.approx(0.15) and r_at == pytest.approx(0.15)
    assert i_dial.addrs == (("203.0.113.2", 47475), ("198.51.100.9", 4000))
    assert r_dial.addrs == (("203.0.113.1", 47475),)
    assert i_dial.attempt == r_dial.attempt == 1
    i.dial_result(1, True, 0.2)
    r.dial_result(1, True, 0.2)
    assert i.phase is r.phase is Phase.DONE
    assert i.get_timer() is None and r.get_timer() is None


def test_three_attempts_then_backoff_doubling_to_the_cap() -> None:
    i, r = pair()
    t = 0.0
    retry_ats = []
    for round_no in range(1, 9):
        for k in range(limits.PUNCH_ATTEMPTS):
            i_dial, i_at, r_dial, _ = exchange(i, r, t, one_way=0.01)
            assert i_dial.attempt == (round_no - 1) * limits.PUNCH_ATTEMPTS + k + 1
            t = i_at + limits.PUNCH_DIAL_TIMEOUT_S
            r.dial_result(r_dial.attempt, False, t)
            i.dial_result(i_dial.attempt, False, t)
            actions = drain(i)
            if k < limits.PUNCH_ATTEMPTS - 1:
                assert actions == []
                assert i.get_timer() == t  # the next attempt at once
        (failed,) = actions
        assert isinstance(failed, RoundFailed) and failed.round == round_no
        retry_ats.append(failed.retry_at - t)
        assert i.get_timer() == failed.retry_at
        t = failed.retry_at
    base, cap = limits.PUNCH_RETRY_BASE_S, limits.PUNCH_RETRY_CAP_S
    assert retry_ats == pytest.approx([min(base * 2**k, cap) for k in range(8)])
    assert retry_ats[-1] == cap


def test_unanswered_connect_times_out_as_a_failed_attempt() -> None:
    i = Puncher(True, 0.0, A_ADDRS)
    i.handle_timer(0.0)
    assert isinstance(frame_of(drain(i)), m.PunchConnect)
    assert i.get_timer() == limits.PUNCH_REPLY_TIMEOUT_S
    i.handle_timer(limits.PUNCH_REPLY_TIMEOUT_S)
    assert i.phase is Phase.IDLE and i.in_round == 1
    i.handle_timer(limits.PUNCH_REPLY_TIMEOUT_S)
    second = frame_of(drain(i))
    assert isinstance(second, m.PunchConnect) and second.n == 2


def test_a_late_answer_to_an_old_attempt_is_ignored() -> None:
    i = Puncher(True, 0.0, A_ADDRS)
    i.handle_timer(0.0)
    drain(i)
    i.handle_timer(limits.PUNCH_REPLY_TIMEOUT_S)
    i.handle_timer(limits.PUNCH_REPLY_TIMEOUT_S)  # attempt 2 out
    drain(i)
    i.receive(m.PunchConnect(addrs=list(B_ADDRS), n=1), 6.0)
    assert drain(i) == [] and i.phase is Phase.CONNECT_SENT


def test_responder_without_sync_forgets_the_attempt() -> None:
    r = Puncher(False, 0.0, B_ADDRS)
    assert r.get_timer() is None
    r.receive(m.PunchConnect(addrs=list(A_ADDRS), n=1), 1.0)
    drain(r)
    assert r.get_timer() == 1.0 + limits.PUNCH_SYNC_TIMEOUT_S
    r.handle_timer(1.0 + limits.PUNCH_SYNC_TIMEOUT_S)
    assert r.phase is Phase.IDLE and r.get_timer() is None
    r.receive(m.PunchSync(n=1), 7.0)  # too late: no dial
    assert drain(r) == []


def test_responder_answers_a_bounded_number_of_connects_per_window() -> None:
    r = Puncher(False, 0.0, B_ADDRS)
    answered = 0
    for n in range(1, 3 * limits.PUNCH_RESPONDER_MAX_CONNECTS):
        r.receive(m.PunchConnect(addrs=list(A_ADDRS), n=n), 0.1 * n)
        answered += len(drain(r))
    assert answered == limits.PUNCH_RESPONDER_MAX_CONNECTS
    r.receive(m.PunchConnect(addrs=list(A_ADDRS), n=99), limits.PUNCH_RESPONDER_WINDOW_S + 1)
    assert len(drain(r)) == 1


def test_sync_from_the_responder_is_a_protocol_error() -> None:
    i = Puncher(True, 0.0, A_ADDRS)
    with pytest.raises(RemoteProtocolError):
        i.receive(m.PunchSync(n=1), 0.0)


@pytest.mark.parametrize(
    "addr",
    ["nonsense", "1.2.3.4", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:-1", "host.example:80",
     "0.0.0.0:47475", "255.255.255.255:47475", "224.0.0.1:47475", "[::]:47475", "1.2.3.4: 5"],
)  # fmt: skip
def test_junk_addresses_are_a_protocol_error(addr: str) -> None:
    r = Puncher(False, 0.0, B_ADDRS)
    with pytest.raises(RemoteProtocolError):
        r.receive(m.PunchConnect(addrs=["203.0.113.1:1", addr], n=1), 0.0)
    assert drain(r) == []


def test_address_count_and_length_are_bounded_on_decode() -> None:
    too_many = [f"203.0.113.{k}:1" for k in range(limits.MAX_PUNCH_ADDRS + 1)]
    raw = msgspec.msgpack.encode({"t": "pcon", "addrs": too_many, "n": 1})
    with pytest.raises(RemoteProtocolError):
        m.decode_frame(raw)
    raw = msgspec.msgpack.encode({"t": "pcon", "addrs": ["1" * 65], "n": 1})
    with pytest.raises(RemoteProtocolError):
        m.decode_frame(raw)
    ok = m.decode_frame(msgspec.msgpack.encode({"t": "pcon", "addrs": too_many[:-1], "n": 1}))
    assert isinstance(ok, m.PunchConnect)


def test_addresses_round_trip() -> None:
    assert parse_addr(format_addr("203.0.113.7", 9)) == ("203.0.113.7", 9)
    assert parse_addr(format_addr("2001:db8::1", 9)) == ("2001:db8::1", 9)


def test_no_address_to_dial_still_waits_out_the_attempt() -> None:
    i = Puncher(True, 0.0, A_ADDRS)
    i.handle_timer(0.0)
    drain(i)
    i.receive(m.PunchConnect(addrs=[], n=1), 0.2)
    assert isinstance(frame_of(drain(i)), m.PunchSync)
    at = i.get_timer()
    assert at is not None
    i.handle_timer(at)
    assert drain(i) == [] and i.phase is Phase.DIALING  # the peer may still reach our listener
    timer = i.get_timer()
    assert timer is not None
    i.handle_timer(timer)
    assert i.phase is Phase.IDLE and i.in_round == 1


def test_initiator_claims_the_peers_ip_at_any_port_only_while_its_attempt_dials() -> None:
    # A symmetric NAT sends the responder's SYN from a port nobody announced: the IP counts.
    i, r = pair()
    assert not i.claims_inbound("203.0.113.2")  # no attempt yet
    i.handle_timer(0.0)
    drain(i)
    assert not i.claims_inbound("203.0.113.2")  # connect sent, no sync yet
    i.receive(m.PunchConnect(addrs=list(B_ADDRS), n=1), 0.1)
    drain(i)
    assert i.claims_inbound("203.0.113.2") and i.claims_inbound("198.51.100.9")  # DIAL_WAIT
    assert not i.claims_inbound("203.0.113.3")  # another host
    timer = i.get_timer()
    assert timer is not None
    i.handle_timer(timer)
    drain(i)
    assert i.phase is Phase.DIALING and i.claims_inbound("203.0.113.2")
    i.dial_result(1, False, timer + 1.0)  # the attempt failed: the window closes
    assert not i.claims_inbound("203.0.113.2")
    # The responder never claims: its dial is the punched connection's Noise responder.
    r.receive(m.PunchConnect(addrs=list(A_ADDRS), n=1), 0.0)
    r.receive(m.PunchSync(n=1), 0.1)
    drain(r)
    assert r.phase is Phase.DIALING and not r.claims_inbound("203.0.113.1")


@given(
    st.lists(st.text(max_size=limits.MAX_ADDR_CHARS), max_size=limits.MAX_PUNCH_ADDRS),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.booleans(),
)
def test_any_connect_yields_actions_or_a_remote_error(addrs: list[str], n: int, init: bool) -> None:
    p = Puncher(init, 0.0, A_ADDRS)
    if init:
        p.handle_timer(0.0)
        drain(p)
    try:
        p.receive(m.PunchConnect(addrs=addrs, n=n), 0.1)
    except RemoteProtocolError:
        return
    for action in drain(p):
        assert isinstance(action, SendFrame | Dial | RoundFailed)
