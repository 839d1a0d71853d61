"""File sharing core: offers, the Download state machine, names, frames and I/O helpers.

protocol/transfer.py is driven call by call with an explicit clock and small
chunks (4096 bytes, the least an offer allows), so whole downloads run in
memory in microseconds. The I/O helpers of the files package (ChunkWriter, unique_path,
hash_file) run on real files in tmp_path; no sockets, no event loop, no sleeps.
The last section is a hypothesis property: random piece/corruption/drop
schedules always end with the right bytes, and only the bad source banned.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_support import FUZZ

from chinwag import limits
from chinwag.crypto import box
from chinwag.crypto.identity import Identity
from chinwag.errors import RemoteProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol.names import safe_filename
from chinwag.protocol.transfer import (
    EMPTY_ROOT,
    OFFER_MARK,
    Download,
    Offer,
    Outcome,
    decode_offer,
    digest_root,
    encode_offer,
    file_id,
    new_offer,
)
from chinwag.store.filedata import ChunkWriter, hash_file, sealer, unique_path
from chinwag.units import human_size

CHUNK = 4096
PER_PAGE = limits.FILE_HASHES_PER_FRAME
FID = "0123456789abcdef" * 2
A, B, C, EVIL = "alice" * 10 + "aa", "bob" * 17 + "b", "carol" * 10 + "cc", "evil" * 13
T = limits.FILE_REQUEST_TIMEOUT_S


# --- helpers ---------------------------------------------------------------


def file_data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def chunk_digests(data: bytes, chunk: int = CHUNK) -> list[bytes]:
    return [hashlib.sha256(data[i : i + chunk]).digest() for i in range(0, len(data), chunk)]


def make_offer(data: bytes, chunk: int = CHUNK, name: str = "report.pdf") -> Offer:
    return Offer(
        fid=FID,
        name=name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        chunk=chunk,
        root=digest_root(b"".join(chunk_digests(data, chunk))),
        salt="5a" * 16,
    )


def fake_digests(n: int, seed: int = 2) -> bytes:
    """n made-up chunk digests (the hash list does not need the data behind it)."""
    return random.Random(seed).randbytes(32 * n)


def listed_offer(n: int, digests: bytes, size: int | None = None) -> Offer:
    """An offer of n chunks of CHUNK bytes whose root covers `digests`."""
    return Offer(
        fid=FID,
        name="big.iso",
        size=n * CHUNK if size is None else size,
        sha256="ab" * 32,
        chunk=CHUNK,
        root=digest_root(digests),
    )


def feed_hashes(dl: Download, peer: str, digests: bytes) -> None:
    """Give dl the whole hash list, page by page, from peer."""
    while (lo := dl.hashes_wanted()) is not None:
        page = digests[32 * lo : 32 * (lo + PER_PAGE)]
        assert dl.hashes_received(peer, lo, page)
    assert dl.digests is not None


def ready(data: bytes, *peers: str, window: int = 8) -> Download:
    """A download of data, all of peers its sources, its hash list fetched from the first."""
    dl = Download(make_offer(data), window=window)
    for peer in peers:
        assert dl.add_source(peer, 0.0)
    if peers:
        feed_hashes(dl, peers[0], b"".join(chunk_digests(data)))
    return dl


def chunk_of(data: bytes, idx: int) -> bytes:
    return data[idx * CHUNK : (idx + 1) * CHUNK]


def send_chunk(
    dl: Download, peer: str, idx: int, data: bytes, now: float = 0.0, piece: int = 1000
) -> Outcome:
    """Send chunk idx of data in pieces from peer; return the outcome of the last piece."""
    body = chunk_of(data, idx)
    out = Outcome()
    for off in range(0, len(body), piece):
        out = dl.piece(peer, idx, off, body[off : off + piece], now)
        if out.dropped:
            return out
        if off + piece < len(body):
            assert out == Outcome()  # nothing until the chunk is whole
    return out


def check(
    dl: Download, peer: str, idx: int, out: Outcome, into: bytearray | None = None
) -> Outcome:
    """What the I/O layer does with a whole chunk: check its digest, write it, report."""
    assert out.chunk is not None
    ok = hashlib.sha256(out.chunk).digest() == out.digest
    if ok and into is not None:
        into[idx * CHUNK : idx * CHUNK + len(out.chunk)] = out.chunk
    return dl.checked(peer, idx, ok)


def inflight(dl: Download, peer: str) -> list[int]:
    return list(dl.sources[peer].inflight)


# --- offers ----------------------------------------------------------------


def test_offer_round_trip() -> None:
    offer = make_offer(file_data(10_000), name="naïve résumé (final).pdf")
    text = encode_offer(offer)
    assert text.startswith(OFFER_MARK)
    assert decode_offer(text) == offer


def test_offer_with_unknown_fields_still_decodes() -> None:
    offer = make_offer(b"x")
    raw = msgspec.json.decode(encode_offer(offer)[len(OFFER_MARK) :])
    raw["future"] = {"anything": [1, 2]}
    assert decode_offer(OFFER_MARK + msgspec.json.encode(raw).decode()) == offer


def test_ordinary_text_is_no_offer() -> None:
    offer_json = encode_offer(make_offer(b"x"))[len(OFFER_MARK) :]
    assert decode_offer("hello") is None
    assert decode_offer("") is None
    assert decode_offer(offer_json) is None  # the mark is missing
    assert decode_offer("file:" + offer_json) is None  # typed text, not the control char
    assert decode_offer(" " + OFFER_MARK + offer_json) is None


def good_fields() -> dict[str, object]:
    return msgspec.structs.asdict(make_offer(file_data(9000)))


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("fid", "0123456789ABCDEF" * 2),  # upper-case hex
        ("fid", "0123456789abcdef"),  # too short
        ("fid", "0123456789abcdeg" * 2),  # not hex
        ("fid", "0123456789abcdef" * 2 + "\n"),
        ("fid", 12),
        ("sha256", "00" * 31),
        ("sha256", "zz" * 32),
        ("sha256", "AB" * 32),
        ("root", "00" * 33),
        ("root", ""),
        ("size", -1),
        ("size", limits.FILE_MAX_SIZE + 1),
        ("size", 1.5),
        ("size", "10"),
        ("size", True),
        ("chunk", 4095),
        ("chunk", 0),
        ("chunk", (64 << 20) + 1),
        ("name", ""),
        ("name", "x" * 1025),
        ("name", None),
    ],
)
def test_malformed_offer_is_no_offer(field_name: str, value: object) -> None:
    fields = good_fields()
    fields[field_name] = value
    assert decode_offer(OFFER_MARK + msgspec.json.encode(fields).decode()) is None


@pytest.mark.parametrize("missing", ["fid", "name", "size", "sha256", "chunk", "root"])
def test_offer_missing_a_field_is_no_offer(missing: str) -> None:
    fields = good_fields()
    del fields[missing]
    assert decode_offer(OFFER_MARK + msgspec.json.encode(fields).decode()) is None


@pytest.mark.parametrize("body", ["", "{", "[]", "null", '"text"', "{}{}", "\x00"])
def test_offer_that_is_not_an_object_is_no_offer(body: str) -> None:
    assert decode_offer(OFFER_MARK + body) is None


def test_offer_size_bounds_are_inclusive() -> None:
    fields = good_fields()
    fields["chunk"] = limits.FILE_CHUNK
    for size in (0, limits.FILE_MAX_SIZE):
        fields["size"] = size
        offer = decode_offer(OFFER_MARK + msgspec.json.encode(fields).decode())
        assert offer is not None and offer.size == size


def test_offer_with_chunks_above_the_chunk_size_is_refused() -> None:
    fields = good_fields()
    fields["chunk"] = limits.FILE_CHUNK + 1
    assert decode_offer(OFFER_MARK + msgspec.json.encode(fields).decode()) is None


def test_file_id_is_bound_to_its_author() -> None:
    alice, mallory = Identity.generate(), Identity.generate()
    offer = new_offer(alice.public, os.urandom(16), "a.txt", 3, "ab" * 32, EMPTY_ROOT)
    assert offer.fid == file_id(alice.public, offer.salt)
    assert offer.fid != file_id(mallory.public, offer.salt)
    again = new_offer(alice.public, os.urandom(16), "a.txt", 3, "ab" * 32, EMPTY_ROOT)
    assert again.fid != offer.fid and again.salt != offer.salt
    decoded = decode_offer(encode_offer(offer))
    assert decoded == offer


def test_offer_with_too_many_chunks_is_refused() -> None:
    fields = good_fields()
    fields["chunk"] = 4096
    fields["size"] = 4096 * limits.FILE_MAX_CHUNKS
    assert decode_offer(OFFER_MARK + msgspec.json.encode(fields).decode()) is not None
    fields["size"] += 1
    assert decode_offer(OFFER_MARK + msgspec.json.encode(fields).decode()) is None


@pytest.mark.parametrize(
    ("size", "chunks"),
    [
        (0, 0),
        (1, 1),
        (CHUNK - 1, 1),
        (CHUNK, 1),
        (CHUNK + 1, 2),
        (3 * CHUNK, 3),
        (3 * CHUNK + 1, 4),
    ],
)
def test_chunk_count(size: int, chunks: int) -> None:
    offer = listed_offer(0, b"", size=size)
    assert offer.chunks == chunks
    dl = Download(offer)
    assert dl.n == chunks
    if chunks:
        lengths = [dl.chunk_len(0), dl.chunk_len(chunks - 1)]
        assert lengths == [min(CHUNK, size), size - (chunks - 1) * CHUNK]


def test_chunk_count_of_the_largest_offer() -> None:
    assert listed_offer(0, b"", size=limits.FILE_MAX_SIZE).chunks == limits.FILE_MAX_SIZE // CHUNK
    offer = msgspec.structs.replace(make_offer(b""), size=limits.FILE_MAX_SIZE, chunk=64 << 20)
    assert offer.chunks == 1 << 14


def test_digest_root() -> None:
    assert digest_root(b"") == EMPTY_ROOT == hashlib.sha256(b"").hexdigest()
    digests = fake_digests(3)
    assert digest_root(digests) == hashlib.sha256(digests).hexdigest()
    assert digest_root(digests[32:] + digests[:32]) != digest_root(digests)


# --- the hash list ---------------------------------------------------------


def test_empty_file_is_complete_at_once() -> None:
    dl = Download(make_offer(b""))
    assert dl.n == 0 and dl.digests == []
    assert dl.hashes_wanted() is None
    assert dl.complete
    assert dl.add_source(A, 0.0)
    assert dl.requests(0.0) == []
    assert dl.hashes_received(A, 0, fake_digests(1))  # nothing wanted: ignored
    assert dl.digests == [] and A not in dl.banned


def test_single_page_hash_list() -> None:
    data = file_data(3 * CHUNK + 5)
    dl = Download(make_offer(data))
    assert dl.hashes_wanted() == 0
    assert dl.requests(0.0) == []  # no chunk requests before the list
    dl.add_source(A, 0.0)
    assert dl.requests(0.0) == []
    assert dl.hashes_received(A, 0, b"".join(chunk_digests(data)))
    assert dl.digests == chunk_digests(data)
    assert dl.hashes_wanted() is None
    assert not dl.complete


def test_hash_list_in_several_pages_from_one_source() -> None:
    n = 2 * PER_PAGE + 5
    digests = fake_digests(n)
    dl = Download(listed_offer(n, digests))
    for peer in (A, B):
        dl.add_source(peer, 0.0)
    assert dl.hashes_wanted() == 0
    assert dl.hashes_received(A, 0, digests[: 32 * PER_PAGE])
    assert dl.hashes_wanted() == PER_PAGE
    assert dl.digests is None
    # A repeated or late page changes nothing.
    assert dl.hashes_received(B, 0, digests[: 32 * PER_PAGE])
    assert dl.hashes_received(B, 7, digests[32 * 7 : 32 * 8])
    assert dl.hashes_wanted() == PER_PAGE
    assert dl.hashes_received(A, PER_PAGE, digests[32 * PER_PAGE : 64 * PER_PAGE])
    assert dl.hashes_wanted() == 2 * PER_PAGE
    # Pages need not be full: the last five in two short pages.
    assert dl.hashes_received(A, 2 * PER_PAGE, digests[64 * PER_PAGE : 32 * (2 * PER_PAGE + 2)])
    assert dl.digests is None
    assert dl.hashes_received(A, 2 * PER_PAGE + 2, digests[32 * (2 * PER_PAGE + 2) :])
    assert dl.hashes_wanted() is None


def test_a_page_from_another_source_starts_the_list_again() -> None:
    n = 2 * PER_PAGE + 5
    digests = fake_digests(n)
    dl = Download(listed_offer(n, digests))
    for peer in (A, B):
        dl.add_source(peer, 0.0)
    assert dl.hashes_received(A, 0, digests[: 32 * PER_PAGE])
    # A mid-list page from B (A was dropped, say) does not mix with A's pages.
    assert dl.hashes_received(B, PER_PAGE, digests[32 * PER_PAGE : 64 * PER_PAGE])
    assert dl.hashes_wanted() == 0
    feed_hashes(dl, B, digests)
    assert dl.digests is not None and b"".join(dl.digests) == digests
    assert dl.digests is not None and b"".join(dl.digests) == digests
    assert len(dl.digests) == n and not dl.banned
    assert dl.hashes_received(B, 0, fake_digests(PER_PAGE, seed=9))  # after the end: ignored
    assert b"".join(dl.digests) == digests and not dl.banned


def test_wrong_root_bans_the_list_supplier_and_starts_over() -> None:
    n = 2 * PER_PAGE + 1
    digests = fake_digests(n)
    dl = Download(listed_offer(n, digests))
    for peer in (A, B, C):
        dl.add_source(peer, 0.0)
    assert dl.hashes_received(A, 0, digests[: 32 * PER_PAGE])
    assert dl.hashes_received(A, PER_PAGE, digests[32 * PER_PAGE : 64 * PER_PAGE])
    forged = bytearray(digests[64 * PER_PAGE :])
    forged[0] ^= 1
    assert not dl.hashes_received(A, 2 * PER_PAGE, bytes(forged))
    # The whole list came from A: only A is out.
    assert dl.banned == {A}
    assert set(dl.sources) == {B, C}
    assert dl.digests is None and dl.hashes_wanted() == 0
    assert not dl.add_source(A, 1.0)
    # C sends the true list and the download goes on.
    feed_hashes(dl, C, digests)
    assert dl.digests is not None and b"".join(dl.digests) == digests
    assert dl.banned == {A}


def test_wrong_single_page_bans_its_sender() -> None:
    data = file_data(2 * CHUNK)
    dl = Download(make_offer(data))
    dl.add_source(A, 0.0)
    dl.add_source(B, 0.0)
    assert not dl.hashes_received(A, 0, fake_digests(2))
    assert dl.banned == {A} and set(dl.sources) == {B}
    assert dl.hashes_wanted() == 0
    assert dl.hashes_received(B, 0, b"".join(chunk_digests(data)))
    assert dl.digests == chunk_digests(data)


@pytest.mark.parametrize("count", [4, PER_PAGE])
def test_page_that_overruns_the_list_bans(count: int) -> None:
    digests = fake_digests(3)
    dl = Download(listed_offer(3, digests))
    dl.add_source(A, 0.0)
    assert not dl.hashes_received(A, 0, fake_digests(count))  # n is 3
    assert dl.banned == {A} and not dl.sources
    assert dl.digests is None and dl.hashes_wanted() == 0


def test_second_page_that_overruns_bans() -> None:
    n = PER_PAGE + 2
    digests = fake_digests(n)
    dl = Download(listed_offer(n, digests))
    dl.add_source(A, 0.0)
    dl.add_source(B, 0.0)
    assert dl.hashes_received(A, 0, digests[: 32 * PER_PAGE])
    assert not dl.hashes_received(A, PER_PAGE, fake_digests(3))
    assert dl.banned == {A} and set(dl.sources) == {B}
    feed_hashes(dl, B, digests)
    assert dl.digests is not None and b"".join(dl.digests) == digests


@pytest.mark.parametrize("page", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 65])
def test_page_not_made_of_whole_digests_bans(page: bytes) -> None:
    digests = fake_digests(4)
    dl = Download(listed_offer(4, digests))
    dl.add_source(A, 0.0)
    assert not dl.hashes_received(A, 0, page)
    assert dl.banned == {A} and dl.digests is None


def test_hash_page_from_a_peer_that_is_no_source_is_ignored() -> None:
    # Any connected peer can send a FileHashes frame for a fid it saw offered. Were its
    # page taken, a bogus last page would ban the honest sources of the earlier pages.
    n = PER_PAGE + 1
    digests = fake_digests(n)
    dl = Download(listed_offer(n, digests))
    dl.add_source(A, 0.0)
    assert dl.hashes_received(A, 0, digests[: 32 * PER_PAGE])
    dl.hashes_received(EVIL, PER_PAGE, fake_digests(1, seed=5))
    assert A in dl.sources and A not in dl.banned
    assert dl.hashes_wanted() == PER_PAGE
    assert dl.hashes_received(A, PER_PAGE, digests[32 * PER_PAGE :])
    assert dl.digests is not None and b"".join(dl.digests) == digests


# --- sources and requests --------------------------------------------------


def test_add_source_rules() -> None:
    dl = Download(make_offer(file_data(CHUNK)))
    assert dl.add_source(A, 0.0)
    assert not dl.add_source(A, 1.0)  # already one
    dl.drop(A)
    assert A not in dl.banned
    assert dl.add_source(A, 2.0)  # dropped, not banned: may come back
    dl.drop(A, ban=True)
    assert not dl.add_source(A, 3.0)
    dl.drop(A, ban=True)  # dropping a non-source is harmless
    dl.drop(B)
    assert dl.banned == {A} and not dl.sources


def test_max_sources() -> None:
    data = file_data(100 * CHUNK)
    dl = Download(make_offer(data))
    peers = [f"peer{i:048d}" for i in range(limits.FILE_MAX_SOURCES + 2)]
    added = [dl.add_source(p, 0.0) for p in peers]
    feed_hashes(dl, peers[1], b"".join(chunk_digests(data)))
    assert added == [True] * limits.FILE_MAX_SOURCES + [False, False]
    assert len(dl.sources) == limits.FILE_MAX_SOURCES
    dl.drop(peers[0])
    assert dl.add_source(peers[-1], 0.0)
    assert not dl.add_source(peers[-2], 0.0)
    assert len(dl.sources) == limits.FILE_MAX_SOURCES
    assert {p for p, _ in dl.requests(0.0)} == set(dl.sources)


def test_requests_round_robin_lowest_first_within_window() -> None:
    data = file_data(20 * CHUNK)
    dl = ready(data, A, B, window=3)
    assert dl.requests(0.0) == [(A, 0), (B, 1), (A, 2), (B, 3), (A, 4), (B, 5)]
    assert dl.requests(0.0) == []  # every window is full
    assert inflight(dl, A) == [0, 2, 4] and inflight(dl, B) == [1, 3, 5]
    out = send_chunk(dl, B, 1, data)
    assert out.chunk is not None
    assert dl.requests(0.0) == [(B, 6)]  # only B has room
    check(dl, B, 1, out)
    assert dl.requests(0.0) == []
    assert dl.add_source(C, 0.0)
    assert dl.requests(0.0) == [(C, 7), (C, 8), (C, 9)]


def test_window_of_one_source() -> None:
    data = file_data(10 * CHUNK)
    dl = ready(data, A, window=4)
    assert dl.requests(0.0) == [(A, i) for i in range(4)]
    assert dl.requests(0.0) == []
    for idx in range(4):
        check(dl, A, idx, send_chunk(dl, A, idx, data))
    assert dl.requests(0.0) == [(A, i) for i in range(4, 8)]


def test_no_requests_without_sources_or_hash_list() -> None:
    data = file_data(2 * CHUNK)
    dl = Download(make_offer(data))
    assert dl.requests(0.0) == []
    dl.add_source(A, 0.0)
    assert dl.requests(0.0) == []  # the hash list first
    feed_hashes(dl, A, b"".join(chunk_digests(data)))
    dl.drop(A)
    assert dl.requests(0.0) == []


def test_memory_bound_waits_for_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    # FILE_MAX_CHECKING whole chunks waiting for their check: nothing more is asked of anyone.
    monkeypatch.setattr(limits, "FILE_MAX_CHECKING", 2)
    data = file_data(20 * CHUNK)
    dl = ready(data, A, B, window=3)
    assert dl.requests(0.0) == [(A, 0), (B, 1), (A, 2), (B, 3), (A, 4), (B, 5)]
    whole = {idx: send_chunk(dl, peer, idx, data) for peer, idx in [(A, 0), (B, 1)]}
    assert inflight(dl, A) == [2, 4] and inflight(dl, B) == [3, 5]
    assert dl.requests(0.0) == []  # both have room, but two chunks await their check
    assert dl.add_source(C, 0.0)
    assert dl.requests(0.0) == []
    check(dl, A, 0, whole[0])
    assert dl.requests(0.0) == [(A, 6), (B, 7), (C, 8), (C, 9), (C, 10)]
    check(dl, B, 1, whole[1])
    assert dl.requests(0.0) == []  # windows full again


def test_memory_bound_lets_a_fast_disk_keep_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "FILE_MAX_CHECKING", 3)
    data = file_data(12 * CHUNK)
    dl = ready(data, A, window=1)
    pending: list[tuple[int, Outcome]] = []
    for expected in range(3):
        assert dl.requests(0.0) == [(A, expected)]
        pending.append((expected, send_chunk(dl, A, expected, data)))
    assert dl.requests(0.0) == []  # three unchecked chunks: A waits though idle
    for idx, out in pending:
        check(dl, A, idx, out)
    for idx in range(3, 12):  # checked as soon as they arrive: one request after another
        assert dl.requests(0.0) == [(A, idx)]
        check(dl, A, idx, send_chunk(dl, A, idx, data))
    assert dl.complete


def test_drop_returns_inflight_chunks_lowest_first() -> None:
    data = file_data(10 * CHUNK)
    dl = ready(data, A, B, window=2)
    assert dl.requests(0.0) == [(A, 0), (B, 1), (A, 2), (B, 3)]
    half = chunk_of(data, 0)[:1000]
    assert dl.piece(A, 0, 0, half, 1.0) == Outcome()
    dl.drop(A)
    assert A not in dl.sources and A not in dl.banned
    assert dl.piece(A, 0, 1000, chunk_of(data, 0)[1000:], 1.0) == Outcome()  # late: ignored
    dl.add_source(C, 2.0)
    assert dl.requests(2.0) == [(C, 0), (C, 2)]
    # C starts chunk 0 from scratch: what A sent before is gone.
    out = send_chunk(dl, C, 0, data)
    assert out.chunk == bytearray(chunk_of(data, 0))


def test_nak_drops_the_source_without_ban() -> None:
    data = file_data(6 * CHUNK)
    dl = ready(data, A, B, window=2)
    dl.requests(0.0)
    dl.nak(A, 5)  # not asked of A: nothing happens
    dl.nak(C, 0)  # not a source
    assert set(dl.sources) == {A, B}
    dl.nak(A, 2)
    assert set(dl.sources) == {B} and not dl.banned
    assert dl.add_source(A, 1.0)
    assert dl.requests(1.0) == [(A, 0), (A, 2)]


def test_expired_after_the_timeout() -> None:
    data = file_data(6 * CHUNK)
    dl = ready(data, A, B, window=2)
    assert dl.expired(1000.0) == []  # idle sources owe nothing
    assert dl.requests(10.0) == [(A, 0), (B, 1), (A, 2), (B, 3)]
    assert dl.expired(10.0 + T) == []
    assert dl.expired(10.0 + T + 0.001) == [A, B]
    dl.piece(A, 0, 0, chunk_of(data, 0)[:10], 15.0)  # progress, not yet a whole chunk
    assert dl.expired(15.0 + T) == [B]
    assert dl.expired(15.0 + T + 1) == [A, B]
    for peer in dl.expired(15.0 + T + 1):
        dl.drop(peer)  # what files/downloading.py does: ask someone else
    assert not dl.banned
    dl.add_source(C, 50.0)
    assert dl.requests(50.0) == [(C, 0), (C, 1)]


def test_an_idle_source_restarts_its_clock_when_asked() -> None:
    data = file_data(4 * CHUNK)
    dl = ready(data, A, window=1)
    assert dl.requests(0.0) == [(A, 0)]
    check(dl, A, 0, send_chunk(dl, A, 0, data, now=1.0))
    assert dl.expired(500.0) == []  # owes nothing
    assert dl.requests(500.0) == [(A, 1)]
    assert dl.expired(500.0 + T) == []
    assert dl.expired(500.0 + T + 1) == [A]


# --- pieces ----------------------------------------------------------------


def test_piece_assembles_a_chunk_from_pieces() -> None:
    data = file_data(2 * CHUNK + 100)
    dl = ready(data, A, window=8)
    dl.requests(0.0)
    body = chunk_of(data, 0)
    assert dl.piece(A, 0, 0, body[:1], 0.0) == Outcome()
    assert dl.piece(A, 0, 1, body[1:4000], 0.0) == Outcome()
    out = dl.piece(A, 0, 4000, body[4000:], 0.0)
    assert out.chunk == bytearray(body)
    assert dl.digests is not None and out.digest == dl.digests[0]
    assert out.verified is None and out.corrupt is None and not out.dropped
    assert inflight(dl, A) == [1, 2]
    # The short last chunk is whole at its own length.
    last = dl.piece(A, 2, 0, chunk_of(data, 2), 0.0)
    assert last.chunk == bytearray(data[2 * CHUNK :]) and len(last.chunk) == 100
    assert inflight(dl, A) == [1]


@pytest.mark.parametrize(
    ("off", "length", "why"),
    [
        (10, 100, "starts past what we have"),
        (0, CHUNK + 1, "longer than the chunk"),
        (0, 0, "empty"),
    ],
)
def test_bad_first_piece_bans_the_source(off: int, length: int, why: str) -> None:
    data = file_data(3 * CHUNK)
    dl = ready(data, A, B, window=1)
    assert dl.requests(0.0) == [(A, 0), (B, 1)]
    out = dl.piece(A, 0, off, b"x" * length, 0.0)
    assert out == Outcome(dropped=True), why
    assert dl.banned == {A} and set(dl.sources) == {B}
    assert dl.requests(0.0) == []  # B's window is full; chunk 0 is wanted again
    dl.add_source(C, 0.0)
    assert dl.requests(0.0) == [(C, 0)]


def test_piece_rewinding_or_overrunning_bans() -> None:
    data = file_data(2 * CHUNK + 10)
    dl = ready(data, A, B, window=2)
    assert dl.requests(0.0) == [(A, 0), (B, 1), (A, 2)]
    assert dl.piece(A, 0, 0, b"a" * 100, 0.0) == Outcome()
    assert dl.piece(A, 0, 50, b"a" * 100, 0.0) == Outcome(dropped=True)  # overlaps
    assert A in dl.banned
    assert dl.piece(B, 1, 0, b"b" * 100, 0.0) == Outcome()
    assert dl.piece(B, 1, 100, b"b" * CHUNK, 0.0) == Outcome(dropped=True)  # past the end
    assert dl.banned == {A, B} and not dl.sources


def test_short_last_chunk_overrun_bans() -> None:
    data = file_data(CHUNK + 10)
    dl = ready(data, A, B, window=1)
    assert dl.requests(0.0) == [(A, 0), (B, 1)]
    assert dl.piece(B, 1, 0, b"x" * 11, 0.0) == Outcome(dropped=True)
    assert dl.banned == {B}


def test_pieces_not_asked_of_the_sender_are_ignored() -> None:
    data = file_data(4 * CHUNK)
    dl = ready(data, A, B, window=1)
    assert dl.requests(0.0) == [(A, 0), (B, 1)]
    body = chunk_of(data, 0)
    assert dl.piece(C, 0, 0, body, 0.0) == Outcome()  # not a source
    assert dl.piece(B, 0, 0, body, 0.0) == Outcome()  # a source, but 0 was asked of A
    assert dl.piece(A, 2, 0, chunk_of(data, 2), 0.0) == Outcome()  # not asked of anyone
    assert dl.piece(A, 99, 0, b"x", 0.0) == Outcome()  # no such chunk
    assert not dl.banned and set(dl.sources) == {A, B}
    # A's own chunk is untouched by B's attempt.
    assert send_chunk(dl, A, 0, data).chunk == bytearray(body)
    # A whole chunk is no longer in flight: another copy of it is ignored.
    assert dl.piece(A, 0, 0, body, 0.0) == Outcome()
    assert not dl.banned


# --- checks, corruption, completion ----------------------------------------


def test_whole_download_from_two_sources() -> None:
    data = file_data(9 * CHUNK + 100)
    dl = ready(data, A, B, window=2)
    written = bytearray(len(data))
    asked: dict[str, list[int]] = {A: [], B: []}
    now = 0.0
    while not dl.complete:
        reqs = dl.requests(now)
        assert reqs, "stuck"
        for peer, idx in reqs:
            asked[peer].append(idx)
        # Each source serves its requests in order, in pieces of 1500 bytes.
        for peer, idx in reqs:
            out = send_chunk(dl, peer, idx, data, now, piece=1500)
            assert out.chunk is not None
            assert check(dl, peer, idx, out, written) == Outcome(verified=idx)
        now += 1.0
    assert sorted(asked[A] + asked[B]) == list(range(10))
    assert asked[A] and asked[B]  # the work was shared
    assert abs(len(asked[A]) - len(asked[B])) <= 1
    assert bytes(written) == data
    assert dl.verified_count == 10 and dl.verified_bytes == len(data)
    assert dl.sources[A].received + dl.sources[B].received == len(data)
    assert dl.requests(now) == [] and not dl.banned
    assert hashlib.sha256(written).hexdigest() == dl.offer.sha256


def test_a_chunk_verified_twice_counts_once() -> None:
    data = file_data(2 * CHUNK)
    dl = ready(data, A, window=1)
    dl.requests(0.0)
    out = send_chunk(dl, A, 0, data)
    assert check(dl, A, 0, out) == Outcome(verified=0)
    assert dl.checked(A, 0, True) == Outcome(verified=0)
    assert dl.verified_count == 1 and dl.verified_bytes == CHUNK


def test_corrupt_chunk_is_asked_again() -> None:
    data = file_data(4 * CHUNK)
    dl = ready(data, A, B, window=1)
    assert dl.requests(0.0) == [(A, 0), (B, 1)]
    bad = bytearray(chunk_of(data, 0))
    bad[123] ^= 0xFF
    out = dl.piece(A, 0, 0, bytes(bad), 0.0)
    assert out.chunk is not None
    assert check(dl, A, 0, out) == Outcome(corrupt=0)
    assert dl.sources[A].bad == 1 and not dl.banned
    assert dl.verified_count == 0
    # Chunk 0 is the lowest wanted again; B is busy, so A gets it (not 2).
    assert dl.requests(0.0) == [(A, 0)]
    check(dl, B, 1, send_chunk(dl, B, 1, data))
    assert dl.requests(0.0) == [(B, 2)]
    assert check(dl, A, 0, send_chunk(dl, A, 0, data)) == Outcome(verified=0)


def test_source_banned_after_max_bad_chunks_and_others_finish() -> None:
    data = file_data(8 * CHUNK)
    dl = ready(data, EVIL, B, window=2)
    written = bytearray(len(data))
    bad_seen = 0
    outcomes: list[Outcome] = []
    while not dl.complete:
        reqs = dl.requests(0.0)
        assert reqs, "stuck"
        for peer, idx in reqs:
            if peer == EVIL:
                body = bytearray(chunk_of(data, idx))
                body[0] ^= 1
                out = dl.piece(EVIL, idx, 0, bytes(body), 0.0)
                if out.chunk is None:
                    continue  # EVIL was dropped after an earlier chunk of this batch
                res = check(dl, EVIL, idx, out, written)
                bad_seen += 1
                outcomes.append(res)
                assert res.corrupt == idx
            else:
                assert check(dl, B, idx, send_chunk(dl, B, idx, data), written).verified == idx
    assert bad_seen == limits.FILE_MAX_BAD_CHUNKS
    assert [o.dropped for o in outcomes] == [False] * (bad_seen - 1) + [True]
    assert dl.banned == {EVIL} and set(dl.sources) == {B}
    assert not dl.add_source(EVIL, 1.0)
    assert bytes(written) == data and dl.verified_bytes == len(data)


def test_ban_drops_the_chunks_still_in_flight_from_it() -> None:
    data = file_data(10 * CHUNK)
    dl = ready(data, EVIL, window=4)
    assert dl.requests(0.0) == [(EVIL, i) for i in range(4)]
    for idx in range(limits.FILE_MAX_BAD_CHUNKS):
        out = dl.piece(EVIL, idx, 0, b"\x00" * CHUNK, 0.0)
        assert check(dl, EVIL, idx, out).corrupt == idx
    assert EVIL in dl.banned and not dl.sources
    assert dl.piece(EVIL, 3, 0, chunk_of(data, 3), 0.0) == Outcome()
    dl.add_source(B, 1.0)
    assert dl.requests(1.0) == [(B, i) for i in range(4)]


def test_check_after_the_source_left_still_counts() -> None:
    data = file_data(3 * CHUNK)
    dl = ready(data, A, B, window=1)
    dl.requests(0.0)
    ok_out = send_chunk(dl, A, 0, data)
    bad_out = dl.piece(B, 1, 0, b"\x00" * CHUNK, 0.0)
    dl.drop(A)
    dl.drop(B)
    assert check(dl, A, 0, ok_out) == Outcome(verified=0)
    assert check(dl, B, 1, bad_out) == Outcome(corrupt=1)
    assert dl.verified_count == 1
    dl.add_source(C, 1.0)
    assert dl.requests(1.0) == [(C, 1)]


def test_bad_chunk_count_survives_a_nak() -> None:
    data = file_data(40 * CHUNK)
    dl = ready(data, EVIL, window=2)
    for _ in range(limits.FILE_MAX_BAD_CHUNKS):
        reqs = dl.requests(0.0)
        assert reqs and reqs[0][0] == EVIL
        idx = reqs[0][1]
        check(dl, EVIL, idx, dl.piece(EVIL, idx, 0, b"\x00" * CHUNK, 0.0))
        if EVIL in dl.sources:
            dl.nak(EVIL, reqs[1][1])  # "busy": dropped, not banned
            assert dl.add_source(EVIL, 0.0)  # it answers the next FileWho
    assert EVIL in dl.banned


def test_corrupt_chunk_checked_after_its_source_left_still_counts() -> None:
    # The check runs in the io thread: a source can nak its other chunk (and so be
    # dropped, not banned) before the check of its corrupt one comes back.
    data = file_data(40 * CHUNK)
    dl = ready(data, EVIL, window=2)
    outcomes: list[Outcome] = []
    for _ in range(limits.FILE_MAX_BAD_CHUNKS):
        reqs = dl.requests(0.0)
        assert [peer for peer, _ in reqs] == [EVIL, EVIL]
        out = dl.piece(EVIL, reqs[0][1], 0, b"\x00" * CHUNK, 0.0)
        dl.nak(EVIL, reqs[1][1])
        outcomes.append(check(dl, EVIL, reqs[0][1], out))
        if EVIL not in dl.banned:
            assert dl.add_source(EVIL, 0.0)
    assert EVIL in dl.banned and not dl.sources
    assert [o.dropped for o in outcomes] == [False] * (limits.FILE_MAX_BAD_CHUNKS - 1) + [True]
    # Checks of its chunks still on the way change nothing more.
    assert dl.checked(EVIL, 0, False) == Outcome(corrupt=0)


def test_restore_after_restart() -> None:
    data = file_data(5 * CHUNK + 7)
    offer = make_offer(data)
    dl = Download(offer, window=8)
    dl.restore([0, 2, 2, 5, -1, 6, 99])
    assert dl.verified_count == 3
    assert dl.verified_bytes == 2 * CHUNK + 7
    assert not dl.complete  # no hash list yet
    dl.add_source(A, 0.0)
    feed_hashes(dl, A, b"".join(chunk_digests(data)))
    assert [idx for _, idx in dl.requests(0.0)] == [1, 3, 4]
    for idx in (1, 3, 4):
        check(dl, A, idx, send_chunk(dl, A, idx, data))
    assert dl.complete and dl.verified_bytes == len(data)


def test_restore_of_every_chunk_completes() -> None:
    data = file_data(3 * CHUNK)
    dl = Download(make_offer(data), window=8)
    dl.digests = chunk_digests(data)  # as files/downloading.py does with the stored list
    dl.restore([0, 1, 2])
    assert dl.complete and dl.verified_bytes == len(data)
    dl.add_source(A, 0.0)
    assert dl.requests(0.0) == []


# --- safe_filename ---------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "saved"),
    [
        ("report.pdf", "report.pdf"),
        ("../../x", "x"),
        ("../../etc/passwd", "passwd"),
        ("/abs", "abs"),
        ("/", "file"),
        ("C:\\x\\y.exe", "y.exe"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("dir/", "file"),
        ("..", "file"),
        (".", "file"),
        ("...", "file"),
        ("", "file"),
        ("   ", "file"),
        (".bashrc", "bashrc"),
        ("..hidden.txt", "hidden.txt"),
        ("trailing. . .", "trailing"),
        ("CON", "_CON"),
        ("con", "_con"),
        ("nul.txt", "_nul.txt"),
        ("COM1", "_COM1"),
        ("lpt9.log", "_lpt9.log"),
        ("Aux.", "_Aux"),
        ("clock$", "_clock$"),
        ("console.txt", "console.txt"),
        ("com10", "com10"),
        ("\x1b[31mred\x1b[0m.txt", "[31mred[0m.txt"),
        ("new\nline\r.txt", "newline.txt"),
        ("tab\there\x00.txt", "tabhere.txt"),
        ("bell\x07\x7f.txt", "bell.txt"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),  # right-to-left override
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ('a<b>c:d"e|f?g*h.txt', "abcdefgh.txt"),
        ("naïve résumé.pdf", "naïve résumé.pdf"),
        ("日本語.txt", "日本語.txt"),
    ],
)
def test_safe_filename(offered: str, saved: str) -> None:
    assert safe_filename(offered) == saved


@pytest.mark.parametrize("offered", ["nul.tar.gz", "CON.tar.gz", "com1.a.b", "con .txt"])
def test_safe_filename_device_name_with_several_extensions(offered: str) -> None:
    # Windows treats NUL.tar.gz like NUL: the part before the first dot is what counts.
    saved = safe_filename(offered)
    assert saved.startswith("_") and saved.endswith(offered.rsplit(".", 1)[1])


@pytest.mark.parametrize(
    "offered",
    [
        "a" * 1000,
        "a" * 1000 + ".txt",
        "é" * 1000,
        "é" * 1000 + ".tar",
        "😀" * 300 + ".png",
        "x." + "é" * 100,
        "x." + "y" * 100,
        "a" * 198 + " b",
        "a.bbbbbbbbbbbbbbb cc",
        "名" * 130 + "." + "語" * 20,
    ],
)
def test_safe_filename_long_names(offered: str) -> None:
    saved = safe_filename(offered)
    assert 0 < len(saved) <= limits.FILE_MAX_NAME_CHARS
    assert len(saved.encode()) <= 240
    assert saved[0] == offered[0]
    assert_safe(saved)


def test_safe_filename_keeps_a_short_extension_when_cutting() -> None:
    saved = safe_filename("a" * 1000 + ".txt")
    assert saved.endswith(".txt") and saved.startswith("a" * 190)
    assert len(saved) <= limits.FILE_MAX_NAME_CHARS


def test_lone_surrogates_never_reach_a_file_name() -> None:
    fields = good_fields()
    text = OFFER_MARK + msgspec.json.encode(fields).decode()
    assert decode_offer(text.replace("report.pdf", "a\\ud800b.pdf")) is None
    saved = safe_filename("a\ud800b.txt")  # (and were one to get there, it goes)
    assert saved == "ab.txt"
    saved.encode()


_DEVICES = {"con", "prn", "aux", "nul", "clock$"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(10)
}


def assert_safe(saved: str) -> None:
    assert saved
    assert len(saved) <= limits.FILE_MAX_NAME_CHARS
    assert len(saved.encode()) <= 240
    assert "/" not in saved and "\\" not in saved
    assert not saved.startswith(".")
    assert not saved.endswith((".", " "))
    assert saved not in (".", "..")
    assert all(c.isprintable() and c not in '<>:"|?*' for c in saved)
    assert saved.split(".", 1)[0].rstrip(" ").lower() not in _DEVICES


@given(st.text(max_size=400))
@settings(FUZZ)
def test_safe_filename_property(offered: str) -> None:
    assert_safe(safe_filename(offered))


_TRICKY = ["a", "é", ".", " ", "/", "\\", "con", "NUL", "lpt1", "\x00", "\x1b", "\u202e", ":"]


@given(st.lists(st.sampled_from(_TRICKY), max_size=60), st.integers(0, 230))
@settings(FUZZ)
def test_safe_filename_property_on_tricky_alphabet(parts: list[str], pad: int) -> None:
    assert_safe(safe_filename("".join(parts)))
    assert_safe(safe_filename("x" * pad + "".join(parts)))
    assert_safe(safe_filename("".join(parts) + " " * pad + "x"))


# --- the files package helpers--------------------------------------------------


def test_unique_path_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "name.txt").write_bytes(b"precious")
    (tmp_path / "name (2).txt").write_bytes(b"also precious")
    got = [unique_path(tmp_path, "name.txt") for _ in range(3)]
    assert [p.name for p in got] == ["name (1).txt", "name (3).txt", "name (4).txt"]
    assert all(p.parent == tmp_path and p.read_bytes() == b"" for p in got)
    assert (tmp_path / "name.txt").read_bytes() == b"precious"
    assert (tmp_path / "name (2).txt").read_bytes() == b"also precious"


def test_unique_path_free_name_and_odd_names(tmp_path: Path) -> None:
    assert unique_path(tmp_path, "fresh.bin") == tmp_path / "fresh.bin"
    assert unique_path(tmp_path, "file").name == "file"
    assert unique_path(tmp_path, "file").name == "file (1)"
    assert unique_path(tmp_path, "a.tar.gz").name == "a.tar.gz"
    assert unique_path(tmp_path, "a.tar.gz").name == "a.tar (1).gz"


def test_unique_path_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    (tmp_path / "name.txt").symlink_to(target)
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere")
    assert unique_path(tmp_path, "name.txt").name == "name (1).txt"
    assert unique_path(tmp_path, "dangling.txt").name == "dangling (1).txt"
    assert target.read_bytes() == b"keep"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_hash_file(tmp_path: Path, size: int) -> None:
    data = file_data(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    got_size, whole, digests, mtime_ns = hash_file(path, CHUNK)
    assert got_size == size
    assert whole == hashlib.sha256(data).hexdigest()
    assert digests == b"".join(chunk_digests(data))
    assert digest_root(digests) == make_offer(data).root
    assert mtime_ns == path.stat().st_mtime_ns


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1500, "1.5 kB"),
        (1_500_000, "1.5 MB"),
        (2_000_000_000, "2.0 GB"),
        (3 * 10**12, "3.0 TB"),
        (5 * 10**15, "5000.0 TB"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


@pytest.fixture
def part(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / ".chinwag-part"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    yield path, fd


def writer_for(fd: int, data: bytes) -> ChunkWriter:
    return ChunkWriter(fd, make_offer(data))


def test_writer_rejects_a_bad_digest_and_writes_nothing(part: tuple[Path, int]) -> None:
    path, fd = part
    data = file_data(3 * CHUNK)
    w = writer_for(fd, data)
    try:
        digests = chunk_digests(data)
        bad = bytearray(chunk_of(data, 1))
        bad[-1] ^= 1
        assert not w.check_and_write(1, bad, digests[1])
        assert not w.check_and_write(0, bytearray(chunk_of(data, 0)), digests[1])
        assert path.stat().st_size == 0
        assert w.check_and_write(1, bytearray(chunk_of(data, 1)), digests[1])
        assert path.read_bytes() == b"\x00" * CHUNK + chunk_of(data, 1)
    finally:
        w.close()


@pytest.mark.parametrize(
    "order",
    [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2], [2, 0, 1, 3], [0, 2, 3, 1], [0, 0, 1, 1, 2, 3]],
)
def test_writer_whole_digest_in_any_order(part: tuple[Path, int], order: list[int]) -> None:
    path, fd = part
    data = file_data(3 * CHUNK + 333)
    w = writer_for(fd, data)
    try:
        digests = chunk_digests(data)
        for idx in order:
            assert w.check_and_write(idx, bytearray(chunk_of(data, idx)), digests[idx])
        assert w.whole_digest() == hashlib.sha256(data).hexdigest()
        assert path.read_bytes() == data
    finally:
        w.close()


def test_writer_whole_digest_of_a_file_larger_than_file_chunk(
    part: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # whole_digest re-reads out-of-order data in blocks of FILE_CHUNK: make them small.
    monkeypatch.setattr(limits, "FILE_CHUNK", 1000)
    _, fd = part
    data = file_data(4 * CHUNK + 1)
    w = writer_for(fd, data)
    try:
        digests = chunk_digests(data)
        for idx in (0, 4, 2, 3, 1):
            assert w.check_and_write(idx, bytearray(chunk_of(data, idx)), digests[idx])
        assert w.whole_digest() == hashlib.sha256(data).hexdigest()
    finally:
        w.close()


def test_writer_whole_digest_sees_a_wrong_file(part: tuple[Path, int]) -> None:
    _, fd = part
    data = file_data(2 * CHUNK)
    w = writer_for(fd, data)
    try:
        digests = chunk_digests(data)
        assert w.check_and_write(1, bytearray(chunk_of(data, 1)), digests[1])
        assert w.whole_digest() != hashlib.sha256(data).hexdigest()  # chunk 0 is zeros
    finally:
        w.close()


def test_writer_scan_finds_the_good_chunks(part: tuple[Path, int]) -> None:
    path, fd = part
    data = file_data(5 * CHUNK + 10)
    damaged = bytearray(data)
    damaged[2 * CHUNK + 17] ^= 0x55  # chunk 2 corrupt
    path.write_bytes(damaged[: 4 * CHUNK + 5])  # chunk 5 missing, chunk 4 cut short
    w = writer_for(fd, data)
    try:
        digests = chunk_digests(data)
        good = w.scan(digests)
        assert good == [0, 1, 3]
        # Resume: restore what scan found, fetch the rest, and the whole file checks out.
        dl = Download(make_offer(data), window=8)
        dl.digests = digests
        dl.restore(good)
        assert dl.verified_bytes == 3 * CHUNK
        dl.add_source(A, 0.0)
        assert [idx for _, idx in dl.requests(0.0)] == [2, 4, 5]
        for idx in (2, 4, 5):
            out = send_chunk(dl, A, idx, data)
            assert out.chunk is not None
            ok = w.check_and_write(idx, out.chunk, out.digest)
            dl.checked(A, idx, ok)
        assert dl.complete
        assert w.whole_digest() == hashlib.sha256(data).hexdigest()
        assert path.read_bytes() == data
    finally:
        w.close()


def test_writer_scan_of_an_empty_or_full_file(part: tuple[Path, int]) -> None:
    path, fd = part
    data = file_data(2 * CHUNK + 1)
    w = writer_for(fd, data)
    try:
        assert w.scan(chunk_digests(data)) == []
    finally:
        w.close()
    path.write_bytes(data)
    fd2 = os.open(path, os.O_RDWR)
    w = writer_for(fd2, data)
    try:
        assert w.scan(chunk_digests(data)) == [0, 1, 2]
        assert w.whole_digest() == hashlib.sha256(data).hexdigest()
    finally:
        w.close()


# --- sealed chunks (files of private rooms) ---------------------------------

KEY = bytes(range(32))
MALLORY_KEY = Identity.generate().public


def sealed_offer(data: bytes, key: bytes = KEY, chunk: int = CHUNK) -> tuple[Offer, list[bytes]]:
    """A sealed offer of data, and the sealed chunks that travel (its digests cover them)."""
    raw_fid = bytes.fromhex(FID)
    sealed = [
        box.seal_chunk(key, raw_fid, i, data[i * chunk : (i + 1) * chunk])
        for i in range(-(-len(data) // chunk))
    ]
    offer = Offer(
        fid=FID,
        name="plans.pdf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        chunk=chunk,
        root=digest_root(b"".join(hashlib.sha256(c).digest() for c in sealed)),
        salt="5a" * 16,
        key=key.hex(),
    )
    return offer, sealed


def test_seal_chunk_is_deterministic_and_authenticated() -> None:
    fid = bytes.fromhex(FID)
    data = file_data(CHUNK)
    sealed = box.seal_chunk(KEY, fid, 3, data)
    assert len(sealed) == len(data) + box.CHUNK_TAG_BYTES
    assert sealed == box.seal_chunk(KEY, fid, 3, memoryview(data))  # every holder alike
    assert data[:64] not in sealed
    assert box.open_chunk(KEY, fid, 3, sealed) == data
    other_fid = bytes.fromhex("f" * 32)
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    for key, f, idx, blob in [
        (bytes(32), fid, 3, sealed),  # another key
        (KEY, fid, 4, sealed),  # another chunk's place
        (KEY, other_fid, 3, sealed),  # another file
        (KEY, fid, 3, tampered),
        (KEY, fid, 3, sealed[:-1]),
        (KEY, fid, 3, b""),
    ]:
        with pytest.raises(box.BadCiphertext):
            box.open_chunk(key, f, idx, blob)
    assert box.seal_chunk(KEY, fid, 4, data) != sealed  # the nonce is the chunk index


def test_seal_chunk_nonce_is_the_index_big_endian() -> None:
    # The byte layout documented in docs/files.md: AES-256-GCM, nonce = idx as 12
    # bytes big-endian, associated data = "chinwag/1 file chunk\0" || fid.
    fid = bytes.fromhex(FID)
    data = b"x" * 100
    expected = AESGCM(KEY).encrypt(
        (2**40 + 7).to_bytes(12, "big"), data, b"chinwag/1 file chunk\x00" + fid
    )
    assert box.seal_chunk(KEY, fid, 2**40 + 7, data) == expected


def test_sealed_offer_round_trip_and_key_bounds() -> None:
    offer, _ = sealed_offer(file_data(CHUNK))
    text = encode_offer(offer)
    assert f'"key":"{KEY.hex()}"' in text
    assert decode_offer(text) == offer and offer.sealed and offer.overhead == 16
    plain = make_offer(file_data(CHUNK))
    assert '"key"' not in encode_offer(plain)  # an unsealed offer is as before
    assert not plain.sealed and plain.overhead == 0
    for bad in ("ab" * 31, "AB" * 32, "zz" * 32, "ab" * 33):
        assert decode_offer(encode_offer(msgspec.structs.replace(offer, key=bad))) is None
    with pytest.raises(ValueError, match="32 bytes"):
        new_offer(
            Identity.generate().public, os.urandom(16), "x", 0, "0" * 64, EMPTY_ROOT, key=b"k"
        )


def test_sealed_download_takes_chunks_as_they_travel(part: tuple[Path, int]) -> None:
    """Pieces of a sealed chunk are 16 bytes longer; the writer checks them sealed and
    writes them opened; a piece beyond the sealed length bans."""
    path, fd = part
    data = file_data(2 * CHUNK + 100)
    offer, sealed = sealed_offer(data)
    dl = Download(offer, window=8)
    dl.add_source(A, 0.0)
    dl.add_source(EVIL, 0.0)
    feed_hashes(dl, A, b"".join(hashlib.sha256(c).digest() for c in sealed))
    assert dl.wire_len(0) == CHUNK + 16 and dl.wire_len(2) == 100 + 16
    w = ChunkWriter(fd, offer)
    try:
        asked = dict((idx, peer) for peer, idx in dl.requests(0.0))
        assert sorted(asked) == [0, 1, 2]
        for idx, peer in asked.items():
            blob = sealed[idx]
            if peer == EVIL:
                assert dl.piece(EVIL, idx, 0, blob + b"!", 0.0).dropped
                continue
            out = Outcome()
            for off in range(0, len(blob), 1000):
                out = dl.piece(A, idx, off, blob[off : off + 1000], 0.0)
            assert out.pieces
            ok = w.check_and_write(idx, out.pieces, out.digest)
            assert dl.checked(A, idx, ok).verified == idx
        for peer, idx in dl.requests(0.0):
            out = dl.piece(peer, idx, 0, sealed[idx], 0.0)
            ok = w.check_and_write(idx, out.pieces, out.digest)
            assert dl.checked(peer, idx, ok).verified == idx
        assert dl.complete and dl.verified_bytes == len(data)
        assert w.whole_digest() == offer.sha256
        assert path.read_bytes() == data  # the file on disk holds the plaintext
    finally:
        w.close()


def test_sealed_chunk_that_does_not_open_is_corrupt(part: tuple[Path, int]) -> None:
    """A chunk matching its digest that does not open (a bad offer) is not written."""
    path, fd = part
    data = file_data(CHUNK)
    offer, sealed = sealed_offer(data)
    other, _ = sealed_offer(data, key=bytes(32))  # same digests, another key
    w = ChunkWriter(fd, msgspec.structs.replace(offer, key=other.key))
    try:
        assert not w.check_and_write(0, sealed[0], hashlib.sha256(sealed[0]).digest())
        assert path.stat().st_size == 0
    finally:
        w.close()


def test_sealed_resume_scans_the_plaintext_against_the_sealed_digests(
    part: tuple[Path, int],
) -> None:
    path, fd = part
    data = file_data(4 * CHUNK + 10)
    offer, sealed = sealed_offer(data)
    damaged = bytearray(data)
    damaged[CHUNK + 5] ^= 1  # chunk 1 corrupt; chunk 4 missing
    path.write_bytes(damaged[: 4 * CHUNK])
    w = ChunkWriter(fd, offer)
    try:
        assert w.scan([hashlib.sha256(c).digest() for c in sealed]) == [0, 2, 3]
    finally:
        w.close()


def test_hash_file_with_a_sealer_lists_the_sealed_digests(tmp_path: Path) -> None:
    data = file_data(3 * CHUNK + 1)
    offer, sealed = sealed_offer(data)
    path = tmp_path / "plans.pdf"
    path.write_bytes(data)
    size, sha, digests, _ = hash_file(path, CHUNK, sealer(offer.key, offer.fid))
    assert (size, sha) == (len(data), offer.sha256)
    assert digests == b"".join(hashlib.sha256(c).digest() for c in sealed)
    assert digest_root(digests) == offer.root
    assert sealer("", offer.fid) is None


# --- frames ----------------------------------------------------------------

FID_BYTES = bytes.fromhex(FID)
FILE_FRAMES: list[m.Frame] = [
    m.FileWho(fid=FID_BYTES),
    m.FileHave(fid=FID_BYTES),
    m.FileHashesReq(fid=FID_BYTES, lo=PER_PAGE),
    m.FileHashes(fid=FID_BYTES, lo=0, hashes=fake_digests(PER_PAGE)),
    m.FileHashes(fid=FID_BYTES, lo=3, hashes=b""),
    m.FileGet(fid=FID_BYTES, idx=2**40),
    m.FileData(
        fid=FID_BYTES, idx=7, off=64_000, data=memoryview(b"\x00\xff" * (limits.FILE_PIECE // 2))
    ),
    m.FileData(fid=FID_BYTES, idx=0, off=0, data=memoryview(b"")),
    m.FileNak(fid=FID_BYTES, idx=1, reason="busy"),
    m.FileEnd(fid=FID_BYTES, reason="withdrawn"),
]


@pytest.mark.parametrize("frame", FILE_FRAMES, ids=lambda f: type(f).__name__)
def test_file_frames_round_trip(frame: m.Frame) -> None:
    wire = m.encode(frame)
    assert len(wire) <= limits.MAX_FRAME
    assert m.decode_frame(wire) == frame


def test_every_file_frame_type_is_known() -> None:
    tags = {type(f).__struct_config__.tag for f in FILE_FRAMES}
    assert tags == {"fwho", "fhave", "fhreq", "fhash", "fget", "fdata", "fnak", "fend"}
    assert tags <= m.KNOWN_TAGS


def raw_frame(tag: str, **fields: object) -> bytes:
    return msgspec.msgpack.encode({"t": tag, **fields})


@pytest.mark.parametrize(
    "wire",
    [
        raw_frame("fdata", fid=FID_BYTES, idx=0, off=0, data=b"x" * (limits.FILE_PIECE + 1)),
        raw_frame("fhash", fid=FID_BYTES, lo=0, hashes=b"x" * (32 * PER_PAGE + 1)),
        raw_frame("fwho", fid=FID_BYTES[:15]),
        raw_frame("fhave", fid=FID_BYTES + b"\x00"),
        raw_frame("fhave", fid=FID),  # hex text, not bytes
        raw_frame("fget", fid=FID_BYTES, idx=-1),
        raw_frame("fget", fid=FID_BYTES),
        raw_frame("fhreq", fid=FID_BYTES, lo=2**63),
        raw_frame("fdata", fid=FID_BYTES, idx=0, off=-5, data=b"x"),
        raw_frame("fnak", fid=FID_BYTES, idx=0, reason="r" * 65),
        raw_frame("fend", fid=FID_BYTES, reason=None),
    ],
)
def test_malformed_file_frames_raise(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode_frame(wire)


# --- property: random schedules ----------------------------------------------


@dataclass
class Sim:
    """A download driven by hypothesis: two honest sources and one that lies."""

    data: bytes
    dl: Download
    queues: dict[str, list[int]] = field(default_factory=dict)
    checks: list[tuple[str, int, Outcome]] = field(default_factory=list)
    written: bytearray = field(default_factory=bytearray)
    #: Corrupt chunks from EVIL checked (whether or not it was a source then).
    evil_bad: int = 0
    evil_bad_offset: bool = False
    now: float = 0.0

    def ask(self) -> None:
        for peer, idx in self.dl.requests(self.now):
            self.queues.setdefault(peer, []).append(idx)

    def forget(self, peer: str) -> None:
        self.queues.pop(peer, None)

    def send(self, peer: str, size: int, corrupt: bool, bad_offset: bool) -> None:
        idx = self.queues[peer][0]
        part = self.dl._partial[idx]
        off = part.got
        body = chunk_of(self.data, idx)[off : off + size]
        if peer == EVIL and corrupt:
            body = bytes([body[0] ^ 1]) + body[1:]
        if peer == EVIL and bad_offset:
            off += 1
            self.evil_bad_offset = True
        out = self.dl.piece(peer, idx, off, body, self.now)
        if out.dropped:
            assert peer == EVIL
            self.forget(peer)
        elif out.chunk is not None:
            self.queues[peer].pop(0)
            self.checks.append((peer, idx, out))

    def check_one(self, i: int) -> None:
        peer, idx, out = self.checks.pop(i)
        res = check(self.dl, peer, idx, out, self.written)
        if res.corrupt is not None:
            assert peer == EVIL
            self.evil_bad += 1
        if res.dropped:
            self.forget(peer)
        assert (EVIL in self.dl.banned) == self.evil_should_be_banned()

    def evil_should_be_banned(self) -> bool:
        return self.evil_bad >= limits.FILE_MAX_BAD_CHUNKS or self.evil_bad_offset


@given(
    chunks=st.integers(0, 9),
    cut=st.integers(0, CHUNK - 1),
    window=st.integers(1, 3),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["send", "send", "send", "check", "drop", "nak", "rejoin", "tick"]),
            st.sampled_from([A, B, EVIL]),
            st.integers(1, CHUNK),
            st.booleans(),
            st.integers(0, 9),
        ),
        min_size=20,
        max_size=200,
    ),
)
@settings(FUZZ, max_examples=150)
def test_random_schedules_end_with_the_right_bytes(
    chunks: int, cut: int, window: int, steps: list[tuple[str, str, int, bool, int]]
) -> None:
    size = max(0, chunks * CHUNK - cut)
    data = file_data(size, seed=size)
    sim = Sim(data, ready(data, A, B, EVIL, window=window), written=bytearray(size))
    checking = limits.FILE_MAX_CHECKING  # new requests wait while this many await a check
    dl = sim.dl
    for action, peer, n, corrupt, pick in steps:
        sim.ask()
        if action == "send" and sim.queues.get(peer):
            # EVIL mostly lies, now and then about the offset (which bans it at once).
            sim.send(peer, n, corrupt or pick % 2 == 1, bad_offset=corrupt and pick == 0)
        elif action == "check" and sim.checks:
            sim.check_one(pick % len(sim.checks))
        elif action == "drop" and peer in dl.sources:
            dl.drop(peer)
            sim.forget(peer)
        elif action == "nak" and sim.queues.get(peer):
            dl.nak(peer, sim.queues[peer][pick % len(sim.queues[peer])])
            sim.forget(peer)
        elif action == "rejoin" and peer not in dl.sources:
            assert dl.add_source(peer, sim.now) == (peer not in dl.banned)
        elif action == "tick":
            sim.now += n / 100
            for gone in dl.expired(sim.now):
                dl.drop(gone)
                sim.forget(gone)
        # Invariants at every step.
        assert (EVIL in dl.banned) == sim.evil_should_be_banned()
        assert len(sim.checks) == len(dl._checking) <= checking - 1 + 3 * window
        assert dl.verified_bytes == sum(dl.chunk_len(i) for i in range(dl.n) if dl.have[i])
        assert A not in dl.banned and B not in dl.banned
    # Then the honest sources finish the job; EVIL comes back and keeps lying, if it may.
    for peer in (A, B, EVIL):
        if peer not in dl.sources:
            dl.add_source(peer, sim.now)
    for _ in range(10 * (dl.n + 1) * limits.FILE_MAX_BAD_CHUNKS):
        if dl.complete:
            break
        while sim.checks:
            sim.check_one(0)
        sim.ask()
        for peer in list(sim.queues):
            while sim.queues.get(peer):
                sim.send(peer, CHUNK, corrupt=True, bad_offset=False)
    assert dl.complete
    assert bytes(sim.written) == data
    assert dl.verified_bytes == size and dl.verified_count == dl.n
    assert A not in dl.banned and B not in dl.banned
    assert (EVIL in dl.banned) == (
        sim.evil_bad >= limits.FILE_MAX_BAD_CHUNKS or sim.evil_bad_offset
    )


@given(st.text(max_size=300))
def test_decode_offer_never_raises_on_any_text(text: str) -> None:
    """Any message text is an offer or not one: never an exception."""
    for candidate in (text, OFFER_MARK + text):
        result = decode_offer(candidate)
        assert result is None or isinstance(result, Offer)


@given(st.binary(max_size=400))
def test_decode_offer_never_raises_on_garbled_json(noise: bytes) -> None:
    """A valid offer with bytes changed or cut stays an offer or becomes None."""
    good = encode_offer(make_offer(file_data(9000)))
    cut = len(noise) % len(good)
    garbled = good[:cut] + noise.decode("latin-1") + good[cut:]
    assert decode_offer(garbled) is None or isinstance(decode_offer(garbled), Offer)
