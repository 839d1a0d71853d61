"""Addresses and invite codes (protocol/addr.py, protocol/invite.py): the codec fed whole,
byte by byte, with garbage, tampered and expired; hypothesis: InviteError or an invite."""

from __future__ import annotations

import base64
import contextlib
import string

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit_support import FUZZ

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.errors import ChinwagError, UsageError
from chinwag.protocol import invite as inv
from chinwag.protocol.addr import AddrError, format_addr, ip_of, is_public, parse_addr

ALICE = Identity.from_seed(bytes(range(32)))
NOW = 1_800_000_000.0
EXPIRES = int(NOW) + 3600
ADDRS = ["192.168.1.7:47475", "203.0.113.5:47475", "[2001:db8::1]:47475"]
RELAYS = [(Identity.from_seed(b"r" * 32).peer_id, "198.51.100.9:47475")]


def code() -> str:
    return inv.make_invite(ALICE, "alice", ADDRS, RELAYS, EXPIRES)


# --- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10.0.0.1:1", ("10.0.0.1", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("[2001:DB8::1]:80", ("2001:db8::1", 80)),
    ],
)
def test_addresses_parse_and_format_back(text: str, parsed: tuple[str, int]) -> None:
    assert parse_addr(text) == parsed
    assert parse_addr(format_addr(*parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "HOST:PORT"),
        ("10.0.0.1", "HOST:PORT"),
        (":80", "HOST:PORT"),
        ("10.0.0.1:0", "1-65535"),
        ("10.0.0.1:65536", "1-65535"),
        ("10.0.0.1:\uff18\uff10", "1-65535"),  # fullwidth digits: isdigit() says yes
        ("10.0.0.1:-1", "1-65535"),
        ("example.org:80", "IP address"),
        ("::1:80", r"\[HOST\]:PORT"),
        ("[10.0.0.1]:80", "IPv6"),
        ("1.2.3.4:" + "9" * 60, "too long"),
    ],
)
def test_bad_addresses_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(AddrError, match=why):
        parse_addr(text)


@pytest.mark.parametrize(
    ("addr", "public"),
    [
        ("203.0.113.5:1", True),  # documentation nets: the NAT lab's internet
        ("8.8.8.8:1", True),
        ("192.168.1.2:1", False),
        ("100.64.1.2:1", False),  # carrier-grade NAT space
        ("127.0.0.1:1", False),
        ("[2001:db8::1]:1", True),
        ("[fe80::1]:1", False),
        ("[fd00::1]:1", False),
        ("[::ffff:10.0.0.1]:1", False),
    ],
)
def test_what_counts_as_public(addr: str, public: bool) -> None:
    assert is_public(ip_of(addr)) is public


# --- invite codes ------------------------------------------------------------------------


def test_a_code_reads_back_whole_and_in_capitals() -> None:
    text = code()
    assert text.startswith("chinwag:") and text == text.lower() and "=" not in text
    for variant in (text, text.upper(), f"  {text}\n"):
        invite = inv.read_invite(variant, NOW)
        assert invite.id == ALICE.peer_id and invite.nick == "alice"
        assert invite.addrs == ADDRS and invite.relays == RELAYS and invite.expires == EXPIRES


def test_every_cut_of_a_code_is_refused_clearly() -> None:
    """Byte by byte: no prefix of a code is a code (nor anything but an InviteError)."""
    text = code()
    for end in range(len(text)):
        with pytest.raises(inv.InviteError):
            inv.read_invite(text[:end], NOW)


@pytest.mark.parametrize("garbage", ["a", "aa", "ab" * 5, " x", "==", "\x00"])
def test_trailing_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(inv.InviteError):
        inv.read_invite(code() + garbage, NOW)


def test_every_changed_character_is_refused() -> None:
    """Tampering: any character replaced by another (case aside) gives an InviteError."""
    text = code()
    alphabet = string.ascii_lowercase + "234567"
    for i, ch in enumerate(text):
        other = alphabet[(alphabet.find(ch.lower()) + 1) % len(alphabet)] if ch.isalnum() else "x"
        with pytest.raises(inv.InviteError):
            inv.read_invite(text[:i] + other + text[i + 1 :], NOW)


def test_a_tampered_field_is_called_altered() -> None:
    """A re-encoded payload with another address keeps the form but not the signature."""
    raw = base64.b32decode(code()[8:].upper() + "=" * (-len(code()[8:]) % 8))
    invite = msgspec.msgpack.decode(raw[:-64], type=inv.Invite)
    forged = msgspec.msgpack.encode(msgspec.structs.replace(invite, addrs=["198.51.100.66:1"]))
    body = base64.b32encode(forged + raw[-64:]).decode().rstrip("=").lower()
    with pytest.raises(inv.InviteError, match="altered"):
        inv.read_invite("chinwag:" + body, NOW)


def test_an_expired_code_says_when_it_expired() -> None:
    with pytest.raises(inv.InviteError, match=r"expired on .* UTC; ask alice for a new one"):
        inv.read_invite(code(), EXPIRES)
    assert inv.read_invite(code(), EXPIRES - 1).id == ALICE.peer_id


def test_another_version_is_named() -> None:
    payload = msgspec.msgpack.encode({"v": 2, "id": ALICE.peer_id, "new": [1, 2]})
    raw = payload + ALICE.sign(inv.INVITE_CONTEXT + payload)
    text = "chinwag:" + base64.b32encode(raw).decode().rstrip("=").lower()
    with pytest.raises(inv.InviteError, match="version 2; this chinwag reads version 1"):
        inv.read_invite(text, NOW)


def test_a_signature_by_another_key_is_refused() -> None:
    """A code naming Alice's id but signed by Mallory is not Alice's."""
    mallory = Identity.from_seed(b"m" * 32)
    payload = msgspec.msgpack.encode(
        inv.Invite(v=1, id=ALICE.peer_id, nick="alice", addrs=[], relays=[], expires=EXPIRES)
    )
    raw = payload + mallory.sign(inv.INVITE_CONTEXT + payload)
    text = "chinwag:" + base64.b32encode(raw).decode().rstrip("=").lower()
    with pytest.raises(inv.InviteError, match="altered"):
        inv.read_invite(text, NOW)


def test_bounds_are_checked_before_decoding() -> None:
    with pytest.raises(inv.InviteError, match="too long"):
        inv.read_invite("chinwag:" + "a" * limits.MAX_INVITE_CHARS, NOW)
    many = [f"10.0.0.{i}:1" for i in range(limits.MAX_INVITE_ADDRS + 3)]
    made = inv.read_invite(inv.make_invite(ALICE, "alice", many, [], EXPIRES), NOW)
    assert len(made.addrs) == limits.MAX_INVITE_ADDRS


def test_invite_errors_are_usage_errors() -> None:
    assert issubclass(inv.InviteError, UsageError)


@given(st.text(max_size=300))
@FUZZ
def test_any_text_is_an_invite_or_an_invite_error(text: str) -> None:
    with contextlib.suppress(inv.InviteError):
        inv.read_invite(text, NOW)


@given(st.binary(max_size=400))
@FUZZ
def test_any_bytes_behind_the_prefix_are_an_invite_error(raw: bytes) -> None:
    text = "chinwag:" + base64.b32encode(raw).decode().rstrip("=").lower()
    with pytest.raises(inv.InviteError):
        inv.read_invite(text, NOW)


@given(st.data())
@FUZZ
def test_any_struct_signed_by_its_peer_is_read_or_refused_cleanly(data: st.DataObject) -> None:
    """A validly signed payload of any shape: an invite, or an InviteError, nothing else."""
    value = data.draw(
        st.dictionaries(
            st.sampled_from(["v", "id", "nick", "addrs", "relays", "expires", "x"]),
            st.one_of(
                st.integers(-(2**63), 2**64 - 1),
                st.text(max_size=60),
                st.lists(st.text(max_size=50), max_size=10),
                st.lists(st.tuples(st.text(max_size=60), st.text(max_size=50)), max_size=5),
                st.just(ALICE.peer_id),
                st.just(1),
            ),
        )
    )
    payload = msgspec.msgpack.encode(value)
    raw = payload + ALICE.sign(inv.INVITE_CONTEXT + payload)
    text = "chinwag:" + base64.b32encode(raw).decode().rstrip("=").lower()
    try:
        inv.read_invite(text, NOW)
    except ChinwagError as exc:
        assert isinstance(exc, inv.InviteError), exc
