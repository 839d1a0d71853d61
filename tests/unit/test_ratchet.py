"""crypto/ratchet.py: the Olm wrapper (sessions, refusals that leave the ratchet alone, pickles,
key binding, padding)."""

from __future__ import annotations

import pytest

from chinwag.crypto import ratchet as r
from chinwag.crypto.box import BadCiphertext
from chinwag.crypto.identity import Identity

KEY = r.pickle_key(bytes(range(32)))


def _pair() -> tuple[r.OlmAccount, r.OlmAccount, r.OlmSession, r.OlmSession]:
    """Alice starts a session from one of Bob's one-time keys; Bob accepts it."""
    alice, bob = r.OlmAccount.create(), r.OlmAccount.create()
    out = alice.outbound(bob.identity_key, bob.take_one_time_key())
    first = out.encrypt(b"hello")
    assert first.kind == r.PRE_KEY
    inbound, text = bob.inbound(alice.identity_key, first)
    assert text == b"hello"
    return alice, bob, out, inbound


def test_conversation_both_ways() -> None:
    _alice, _bob, a, b = _pair()
    reply = b.encrypt(b"hi alice")
    assert reply.kind == r.NORMAL
    assert a.decrypt(reply) == b"hi alice"
    for i in range(5):
        assert b.decrypt(a.encrypt(b"n%d" % i)) == b"n%d" % i


def test_replay_is_refused_and_the_ratchet_does_not_move() -> None:
    _alice, _bob, a, b = _pair()
    b.decrypt(a.encrypt(b"x"))  # a normal-message chain now
    msg = a.encrypt(b"once")
    assert b.decrypt(msg) == b"once"
    with pytest.raises(r.RatchetError):
        b.decrypt(msg)  # its key is gone
    assert b.decrypt(a.encrypt(b"next")) == b"next"


def test_forged_and_truncated_messages_are_refused_without_advancing() -> None:
    _alice, _bob, a, b = _pair()
    b.decrypt(a.encrypt(b"x"))
    msg = a.encrypt(b"genuine")
    flipped = r.OlmMessage(msg.kind, msg.ciphertext[:-1] + bytes([msg.ciphertext[-1] ^ 1]))
    truncated = r.OlmMessage(msg.kind, msg.ciphertext[:-9])
    for bad in (flipped, truncated, r.OlmMessage(r.NORMAL, b"\x03garbage")):
        with pytest.raises(BadCiphertext):
            b.decrypt(bad)
    assert b.decrypt(msg) == b"genuine"  # the forgeries changed nothing


def test_one_time_key_opens_one_session_only() -> None:
    alice, bob = r.OlmAccount.create(), r.OlmAccount.create()
    otk = bob.take_one_time_key()
    first = alice.outbound(bob.identity_key, otk).encrypt(b"one")
    bob.inbound(alice.identity_key, first)
    with pytest.raises(r.RatchetError):
        bob.inbound(alice.identity_key, first)  # the key is gone: a replayed pre-key fails


def test_fallback_key_opens_sessions() -> None:
    alice, bob = r.OlmAccount.create(), r.OlmAccount.create()
    first = alice.outbound(bob.identity_key, bob.fallback_key).encrypt(b"offline")
    session, text = bob.inbound(alice.identity_key, first)
    assert text == b"offline" and session.matches(first)


def test_forged_pre_key_message_consumes_nothing() -> None:
    alice, bob = r.OlmAccount.create(), r.OlmAccount.create()
    otk = bob.take_one_time_key()
    first = alice.outbound(bob.identity_key, otk).encrypt(b"one")
    forged = r.OlmMessage(first.kind, first.ciphertext[:-1] + bytes([first.ciphertext[-1] ^ 1]))
    with pytest.raises(r.RatchetError):
        bob.inbound(alice.identity_key, forged)
    _session, text = bob.inbound(alice.identity_key, first)  # the key is still there
    assert text == b"one"


def test_pre_key_from_someone_else_is_refused() -> None:
    alice, bob, mallory = r.OlmAccount.create(), r.OlmAccount.create(), r.OlmAccount.create()
    first = mallory.outbound(bob.identity_key, bob.take_one_time_key()).encrypt(b"i am alice")
    with pytest.raises(r.RatchetError):
        bob.inbound(alice.identity_key, first)


def test_pickles_round_trip_and_need_the_key() -> None:
    alice, bob, a, b = _pair()
    a2 = r.OlmSession.from_pickle(a.pickle(KEY), KEY)
    b2 = r.OlmSession.from_pickle(b.pickle(KEY), KEY)
    assert b2.decrypt(a2.encrypt(b"after restart")) == b"after restart"
    bob2 = r.OlmAccount.from_pickle(bob.pickle(KEY), KEY)
    assert bob2.identity_key == bob.identity_key and bob2.fallback_key == bob.fallback_key
    other = r.pickle_key(bytes(32))
    with pytest.raises(r.RatchetError):
        r.OlmSession.from_pickle(a.pickle(KEY), other)
    with pytest.raises(r.RatchetError):
        r.OlmAccount.from_pickle(alice.pickle(KEY), other)


def test_keys_are_bound_to_the_identity() -> None:
    ident, other = Identity.generate(), Identity.generate()
    acct = r.OlmAccount.create()
    sig = r.sign_keys(ident, acct.identity_key, acct.fallback_key)
    assert r.verify_keys(ident.public, acct.identity_key, acct.fallback_key, sig)
    assert not r.verify_keys(other.public, acct.identity_key, acct.fallback_key, sig)
    assert not r.verify_keys(ident.public, acct.identity_key, bytes(32), sig)


def test_padding_buckets() -> None:
    small = r.pad(r.OlmMessage(r.NORMAL, b"x" * 10))
    assert len(small) == 256
    assert len(r.pad(r.OlmMessage(r.NORMAL, b"x" * 252))) == 512
    assert len(r.pad(r.OlmMessage(r.NORMAL, b"x" * 3000))) == 4096
    assert r.unpad(small) == r.OlmMessage(r.NORMAL, b"x" * 10)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        r.pad(r.OlmMessage(r.NORMAL, b"x" * 10))[:255],  # truncated
        r.pad(r.OlmMessage(r.NORMAL, b"x" * 10)) + b"\x00",  # not a bucket
        b"\x07" + r.pad(r.OlmMessage(r.NORMAL, b"x" * 10))[1:],  # unknown type
        r.pad(r.OlmMessage(r.NORMAL, b"x" * 10))[:-1] + b"\x01",  # padding altered
        b"\x01\xff\xff\xff\xff" + bytes(251),  # length beyond the data
    ],
)
def test_unpad_refuses(data: bytes) -> None:
    with pytest.raises(r.RatchetError):
        r.unpad(data)


def test_reordered_within_the_window_decrypts_beyond_it_is_refused_without_advancing() -> None:
    _alice, _bob, a, b = _pair()
    b.decrypt(a.encrypt(b"x"))
    early = [a.encrypt(b"m%d" % i) for i in range(3)]
    assert b.decrypt(early[2]) == b"m2"  # skipped keys of m0, m1 are kept (a small window)
    assert b.decrypt(early[0]) == b"m0" and b.decrypt(early[1]) == b"m1"
    held = a.encrypt(b"held back")
    for _ in range(2100):  # beyond vodozemac's gap of 2000 message keys
        a.encrypt(b"lost")
    with pytest.raises(r.RatchetError):
        b.decrypt(a.encrypt(b"far ahead"))
    assert b.decrypt(held) == b"held back"  # the refusal moved nothing
