"""protocol/reach.py: reports of our address summed up into confirmed public addresses and
the kind of NAT; one liar (or one network of them) cannot make us believe anything."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit_support import FUZZ

from chinwag import limits
from chinwag.errors import RemoteProtocolError
from chinwag.protocol.reach import Reach
from chinwag.protocol.reasons import Reason

LISTEN = 47475
T0 = 1000.0


def reach() -> Reach:
    return Reach(LISTEN)


def test_one_report_is_not_enough_two_networks_are() -> None:
    r = reach()
    assert r.observed("p1", "198.51.100.1", "203.0.113.7:47475", 5000, False, T0)
    assert r.public_addrs(T0) == []
    assert r.observed("p2", "192.0.2.1", "203.0.113.7:47475", 5001, False, T0)
    assert r.public_addrs(T0) == ["203.0.113.7:47475"]
    assert r.public_ips(T0) == ["203.0.113.7"]


def test_one_liar_cannot_confirm_an_address_with_many_identities_in_one_network() -> None:
    r = reach()
    for i in range(10):
        r.observed(f"sybil{i}", f"198.51.100.{i + 1}", "203.0.113.66:1234", 5000, False, T0)
    assert r.public_addrs(T0) == []
    # Two honest reporters from two networks confirm the truth; the lie stays out.
    r.observed("h1", "192.0.2.1", "203.0.113.7:47475", 5001, False, T0)
    r.observed("h2", "203.0.113.200", "203.0.113.7:47475", 5002, False, T0)
    assert r.public_addrs(T0) == ["203.0.113.7:47475"]


def test_a_reporter_counts_once_with_its_latest_report() -> None:
    r = reach()
    r.observed("p1", "198.51.100.1", "203.0.113.7:47475", 5000, False, T0)
    r.observed("p1", "198.51.100.1", "203.0.113.7:47475", 5000, False, T0)
    assert r.public_addrs(T0) == []
    r.observed("p2", "192.0.2.1", "203.0.113.7:47475", 5000, False, T0)
    r.observed("p1", "198.51.100.1", "203.0.113.8:47475", 5000, False, T0)  # p1 changed its mind
    assert r.public_addrs(T0) == []


@pytest.mark.parametrize(
    ("reporter", "addr"),
    [
        ("198.51.100.1", "192.168.1.5:47475"),  # private, from a public peer: a lie
        ("192.168.1.1", "10.0.0.5:47475"),  # private from a LAN peer: not a public address
        ("198.51.100.1", "127.0.0.1:47475"),
        ("198.51.100.1", "100.64.0.9:47475"),  # carrier NAT space: not reachable
    ],
)
def test_implausible_reports_are_ignored(reporter: str, addr: str) -> None:
    r = reach()
    assert not r.observed("p1", reporter, addr, 5000, False, T0)
    assert not r.observed("p2", "192.0.2.1", addr, 5000, False, T0)
    assert r.public_addrs(T0) == [] and r._reports == {}


def test_a_reporter_without_an_ip_is_ignored() -> None:
    assert not reach().observed("p1", "", "203.0.113.7:47475", 5000, False, T0)


@pytest.mark.parametrize("bogus", ["", "garbage", "1.2.3.4", "1.2.3.4:0", "name:80", "::1:80"])
def test_an_unparseable_report_is_a_protocol_error(bogus: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        reach().observed("p1", "198.51.100.1", bogus, 5000, False, T0)
    assert info.value.code == Reason.MALFORMED_FRAME


def test_outbound_reports_from_a_passing_port_name_no_address_of_ours() -> None:
    """The mapping of an ephemeral port cannot be dialled; that of the listening port can."""
    r = reach()
    r.observed("p1", "198.51.100.1", "203.0.113.7:40001", 40001, True, T0)
    r.observed("p2", "192.0.2.1", "203.0.113.7:40001", 40001, True, T0)  # the port reused
    assert r.public_addrs(T0) == []
    assert r.public_ips(T0) == ["203.0.113.7"]
    r.observed("p3", "198.51.100.3", "203.0.113.7:47475", LISTEN, True, T0)
    r.observed("p4", "192.0.2.4", "203.0.113.7:47475", LISTEN, True, T0)
    assert r.public_addrs(T0) == ["203.0.113.7:47475"]


def test_a_cone_nat_keeps_one_public_port_for_every_destination() -> None:
    r = reach()
    r.observed("p1", "198.51.100.1", "203.0.113.7:47475", LISTEN, True, T0)
    assert r.symmetric(T0) is None
    r.observed("p2", "192.0.2.1", "203.0.113.7:47475", LISTEN, True, T0)
    assert r.symmetric(T0) is False


def test_a_symmetric_nat_shows_another_port_to_each_destination() -> None:
    r = reach()
    r.observed("p1", "198.51.100.1", "203.0.113.7:31000", LISTEN, True, T0)
    r.observed("p2", "192.0.2.1", "203.0.113.7:52000", LISTEN, True, T0)
    assert r.symmetric(T0) is True
    assert r.public_addrs(T0) == []  # no port is confirmed
    assert r.public_ips(T0) == ["203.0.113.7"]


def test_one_liar_cannot_make_a_confirmed_cone_look_symmetric() -> None:
    r = reach()
    r.observed("p1", "198.51.100.1", "203.0.113.7:47475", LISTEN, True, T0)
    r.observed("p2", "192.0.2.1", "203.0.113.7:47475", LISTEN, True, T0)
    r.observed("liar", "203.0.113.99", "203.0.113.7:666", LISTEN, True, T0)
    assert r.symmetric(T0) is False


def test_inbound_reports_and_distinct_local_ports_say_nothing_about_the_nat_kind() -> None:
    r = reach()
    r.observed("p1", "198.51.100.1", "203.0.113.7:5000", LISTEN, False, T0)  # port forward
    r.observed("p2", "192.0.2.1", "203.0.113.7:6000", LISTEN, False, T0)
    r.observed("p3", "198.51.100.3", "203.0.113.7:40001", 40001, True, T0)
    r.observed("p4", "192.0.2.4", "203.0.113.7:40002", 40002, True, T0)
    assert r.symmetric(T0) is None


def test_reports_age_out() -> None:
    r = reach()
    r.observed("p1", "198.51.100.1", "203.0.113.7:47475", 5000, False, T0)
    r.observed("p2", "192.0.2.1", "203.0.113.7:47475", 5000, False, T0)
    assert r.public_addrs(T0 + limits.OBS_MAX_AGE_S) == ["203.0.113.7:47475"]
    assert r.public_addrs(T0 + limits.OBS_MAX_AGE_S + 1) == []


def test_reporters_are_bounded_oldest_dropped_first() -> None:
    r = reach()
    r.observed("old", "198.51.100.1", "203.0.113.7:47475", 5000, False, T0)
    for i in range(limits.MAX_OBS_REPORTERS):
        r.observed(f"p{i}", f"10.{i}.0.1", "203.0.113.9:47475", 5000, False, T0)
    assert len(r._reports) == limits.MAX_OBS_REPORTERS
    assert "old" not in r._reports
    r.observed("new", "192.0.2.1", "203.0.113.7:47475", 5000, False, T0)
    assert "203.0.113.7:47475" not in r.public_addrs(T0)


def test_public_addresses_are_bounded_and_best_confirmed_first() -> None:
    r = reach()
    n = 0
    for port, reporters in [(1001, 2), (1002, 4), (1003, 3), (1004, 2), (1005, 2), (1006, 2)]:
        for _ in range(reporters):
            n += 1
            r.observed(f"p{n}", f"10.{n}.0.1", f"203.0.113.7:{port}", 5000, False, T0)
    addrs = r.public_addrs(T0)
    assert len(addrs) == limits.MAX_PUBLIC_ADDRS
    assert addrs[:2] == ["203.0.113.7:1002", "203.0.113.7:1003"]


@given(st.text(max_size=70), st.text(max_size=50), st.integers(0, 70000), st.booleans())
@FUZZ
def test_any_report_is_kept_ignored_or_a_protocol_error(
    addr: str, reporter_ip: str, local_port: int, outbound: bool
) -> None:
    r = reach()
    try:
        r.observed("p1", reporter_ip, addr, local_port, outbound, T0)
    except RemoteProtocolError as exc:
        assert exc.code == Reason.MALFORMED_FRAME
    r.summary(T0)
