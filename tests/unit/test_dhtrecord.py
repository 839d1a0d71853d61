"""The DHT record codec (protocol/dhtrecord.py) and key blinding (crypto/blind.py)."""

from __future__ import annotations

import contextlib

import msgspec
import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chinwag import limits
from chinwag.crypto import blind
from chinwag.crypto.identity import Identity
from chinwag.protocol import dhtrecord as rec

NOW = 1_800_000_000.0
#: The blinding period NOW is in (docs/protocol.md 25.4).
PERIOD = 20_833
ALICE = Identity.from_seed(bytes(range(32)))
MALLORY = Identity.from_seed(bytes(range(1, 33)))
NONCE = bytes(24)
ADDRS = ["203.0.113.5:47475", "192.168.1.2:47475"]
RELAYS = [(MALLORY.peer_id, "203.0.113.9:47475")]


def seal(private: bool, seq: int = 7, exp: int = int(NOW) + 3600, who: Identity = ALICE) -> bytes:
    return rec.seal_record(who, ADDRS, RELAYS, seq, exp, private, NONCE, period=PERIOD)[1]


@pytest.mark.parametrize("private", [True, False])
def test_round_trip(private: bool) -> None:
    value = seal(private)
    record = rec.open_record(ALICE.public, value, private, NOW)
    assert (record.addrs, record.relays, record.seq) == (ADDRS, RELAYS, 7)
    assert len(rec.bencode_bytes(value)) <= limits.MAX_DHT_VALUE_BYTES


def test_blinded_key_is_a_key_pair_only_the_owner_holds() -> None:
    """a'·B = A': libtorrent's signature with the blinded scalar verifies under A'."""
    for period in (PERIOD, PERIOD + 1):
        scalar = blind.blinded_private(ALICE, period)[:32]
        assert sodium.crypto_scalarmult_ed25519_base_noclamp(scalar) == blind.blinded_public(
            ALICE.public, period
        )
    assert blind.blinded_public(ALICE.public, PERIOD) != ALICE.public
    assert blind.blinded_public(MALLORY.public, PERIOD) != blind.blinded_public(
        ALICE.public, PERIOD
    )
    # The public mode's expanded key is the identity's own: a·B = A.
    assert sodium.crypto_scalarmult_ed25519_base(blind.expanded_private(ALICE)[:32]) == ALICE.public


def test_private_record_shows_nothing_in_clear() -> None:
    private, public = seal(True), seal(False)
    assert b"203.0.113.5" in public
    for clear in (b"203.0.113", b"192.168", ALICE.public, MALLORY.peer_id.encode()):
        assert clear not in private
    assert rec.target(ALICE.public, True, PERIOD) != ALICE.public


def test_the_private_key_changes_every_period_and_its_nonce_prefix_too() -> None:
    """A DHT node sees one pseudonym per day, not one for ever (review finding 3); and the
    two days' keys do not share a nonce prefix (their scalars differ by a known factor)."""
    keys = {rec.target(ALICE.public, True, p) for p in range(PERIOD - 2, PERIOD + 3)}
    assert len(keys) == 5
    assert rec.target(ALICE.public, False, PERIOD) == rec.target(ALICE.public, False, PERIOD + 1)
    prefixes = {blind.blinded_private(ALICE, p)[32:] for p in (PERIOD, PERIOD + 1)}
    assert len(prefixes) == 2
    # A record sealed for one day is not one of another day's key (the AEAD binds A').
    value = seal(True)
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, value, True, NOW, period=PERIOD + 1)
    assert err.value.reason == rec.UNDECRYPTABLE


def test_periods_published_and_looked_up() -> None:
    day = limits.DHT_BLIND_PERIOD_S
    start = PERIOD * day
    assert rec.period_of(start) == rec.period_of(start + day - 1) == PERIOD
    assert rec.publish_periods(start + 1) == [PERIOD]
    assert rec.publish_periods(start + day - limits.DHT_BLIND_NEXT_S - 1) == [PERIOD]
    assert rec.publish_periods(start + day - limits.DHT_BLIND_NEXT_S) == [PERIOD, PERIOD + 1]
    assert rec.publish_periods(start + day - 1) == [PERIOD, PERIOD + 1]
    assert rec.lookup_periods(start) == rec.lookup_periods(start + day - 1) == [PERIOD, PERIOD - 1]
    assert limits.DHT_BLIND_NEXT_S > limits.DHT_REPUBLISH_S, "an hourly put falls in the window"


def test_bep44_signature_is_checked() -> None:
    value = seal(False)
    sig = ALICE.sign(rec.bep44_signed(rec.SALT, 3, rec.bencode_bytes(value)))
    rec.open_record(ALICE.public, value, False, NOW, bep44=(3, sig))
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, value, False, NOW, bep44=(4, sig))
    assert err.value.reason == rec.BAD_SIGNATURE


def test_record_of_someone_else_is_refused() -> None:
    """Mallory publishes her own record; read as Alice's it does not pass."""
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, seal(False, who=MALLORY), False, NOW)
    assert err.value.reason == rec.BAD_SIGNATURE
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, seal(True, who=MALLORY), True, NOW)
    assert err.value.reason == rec.UNDECRYPTABLE


def test_inner_signature_is_checked() -> None:
    """A record whose map was altered (same length) fails the identity's signature."""
    value = seal(False)
    altered = value.replace(b"203.0.113.5", b"203.0.113.6")
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, altered, False, NOW)
    assert err.value.reason == rec.BAD_SIGNATURE


def test_tampered_private_record_does_not_open() -> None:
    value = bytearray(seal(True))
    value[-1] ^= 1
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, bytes(value), True, NOW)
    assert err.value.reason == rec.UNDECRYPTABLE


def test_old_seq_expired_oversized() -> None:
    value = seal(True, seq=7)
    rec.open_record(ALICE.public, value, True, NOW, last_seq=7)  # the same record again
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, value, True, NOW, last_seq=8)
    assert err.value.reason == rec.OLD_SEQ
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, seal(True, exp=int(NOW)), True, NOW)
    assert err.value.reason == rec.EXPIRED
    far = int(NOW) + limits.DHT_MAX_RECORD_AHEAD_S + 10
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, seal(True, exp=far), True, NOW)
    assert err.value.reason == rec.MALFORMED
    big = b"x" * (limits.MAX_DHT_VALUE_BYTES - 3)
    assert len(rec.bencode_bytes(big)) > limits.MAX_DHT_VALUE_BYTES
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, big, False, NOW)
    assert err.value.reason == rec.OVERSIZED


def test_other_version_is_refused() -> None:
    record = rec.DhtRecord(2, ADDRS, [], 1, int(NOW) + 60)
    payload = msgspec.msgpack.encode(record)
    value = payload + ALICE.sign(rec.RECORD_CONTEXT + payload)
    with pytest.raises(rec.DhtRecordError) as err:
        rec.open_record(ALICE.public, value, False, NOW)
    assert err.value.reason == rec.VERSION


def test_seal_drops_addresses_to_fit() -> None:
    addrs = [f"[2001:db8:aaaa:bbbb:cccc:dddd:eeee:{i:04x}]:65535" for i in range(8)]
    relays = [
        (MALLORY.peer_id, f"[2001:db8:aaaa:bbbb:cccc:dddd:ffff:{i:04x}]:65535") for i in range(4)
    ]
    for private in (True, False):
        record, value = rec.seal_record(
            ALICE, addrs, relays, 1, int(NOW) + 60, private, NONCE, period=PERIOD
        )
        assert len(rec.bencode_bytes(value)) <= limits.MAX_DHT_VALUE_BYTES
        assert len(record.relays) == len(relays)  # kept first: they reach us behind any NAT
        assert rec.open_record(ALICE.public, value, private, NOW) == record


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1100), st.booleans())
def test_any_bytes_yield_a_record_or_dht_record_error(data: bytes, private: bool) -> None:
    for value in (data, rec.bencode_bytes(data), None):
        with contextlib.suppress(rec.DhtRecordError):
            rec.open_record(ALICE.public, value, private, NOW, last_seq=3, bep44=(1, bytes(64)))
        with contextlib.suppress(rec.DhtRecordError):
            rec.open_record(ALICE.public, value, private, NOW)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400), st.integers(0, 255), st.booleans())
def test_damaged_records_yield_only_dht_record_error(pos: int, byte: int, private: bool) -> None:
    value = bytearray(seal(private))
    value[pos % len(value)] = byte
    with contextlib.suppress(rec.DhtRecordError):
        rec.open_record(ALICE.public, bytes(value), private, NOW)
    # Cut short, and with trailing garbage.
    for damaged in (bytes(value[: pos % len(value)]), bytes(value) + bytes([byte])):
        with contextlib.suppress(rec.DhtRecordError):
            rec.open_record(ALICE.public, damaged, private, NOW)


def test_worked_example_of_protocol_md() -> None:
    """docs/protocol.md 25.4."""
    me = Identity.from_seed(bytes(range(32)))
    assert rec.period_of(1_800_000_000) == PERIOD
    assert blind.blind_factor(me.public, PERIOD).hex() == (
        "1c275f41df528fdc6d20e4cf62f59abff087ffbc04dce64bd06e663b6cc3d201"
    )
    assert rec.target(me.public, True, PERIOD).hex() == (
        "c4e9c58bdb17b4041abe61803a46915736182d85c00e14e8cca98a486a121d91"
    )
    assert blind.blinded_private(me, PERIOD)[32:].hex() == (
        "f7ea709f8fdf5fe99a728f747ad46cb53b025b9d4a5b7d3682f4eabdbd17ad2c"
    )
    assert rec.record_key(me.public).hex() == (
        "a62307d1baa72dc200c2122d65b5e8d4258ac8209a98aa82fcada9216b85a71b"
    )
    args = (me, ["203.0.113.5:47475"], [], 1_800_000_000, 1_800_007_200)
    _record, public = rec.seal_record(*args, False, b"", period=PERIOD)
    assert public.hex().startswith(
        "85a17601a5616464727391b13230332e302e3131332e353a3437343735a672656c61797390"
        "a3736571ce6b49d200a3657870ce6b49ee203bcd0b49"
    )
    _record, private = rec.seal_record(*args, True, bytes(range(24)), period=PERIOD)
    assert private.hex().endswith("a3b6e07fb7b5a449d2ca9fafc06876feef3fd9734607b16")
    assert len(rec.bencode_bytes(public)) == 123 and len(rec.bencode_bytes(private)) == 163
