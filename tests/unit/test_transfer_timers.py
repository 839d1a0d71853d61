"""The download's timers, sans-IO: get_timer()/handle_timer(now) on a simulated clock.

protocol/transfer.py decides when a silent source is dropped, when a digest page
is asked of another source, when holders are asked again (and the author
dialled), when a download is reported stalled and when its progress is shown
again; files/downloading.py only runs the actions. Here the clock jumps from one
get_timer() deadline to the next, so each rule fires at exactly its time.
"""

from __future__ import annotations

import hashlib
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from unit_support import FUZZ

from chinwag import limits
from chinwag.protocol.transfer import (
    AskHolders,
    Download,
    DownloadAction,
    Offer,
    Refresh,
    RequestChunk,
    RequestHashes,
    SourceExpired,
    Stalled,
    Unstalled,
    digest_root,
)

CHUNK = 4096
A, B = "alice" * 10 + "aa", "bob" * 17 + "b"
DATA = random.Random(7).randbytes(5 * CHUNK)
DIGESTS = [hashlib.sha256(DATA[i : i + CHUNK]).digest() for i in range(0, len(DATA), CHUNK)]
OFFER = Offer(
    fid="0123456789abcdef" * 2,
    name="plans.pdf",
    size=len(DATA),
    sha256=hashlib.sha256(DATA).hexdigest(),
    chunk=CHUNK,
    root=digest_root(b"".join(DIGESTS)),
    salt="5a" * 16,
)


def run_until(dl: Download, end: float, now: float = 0.0) -> list[tuple[float, DownloadAction]]:
    """Jump the clock from deadline to deadline up to `end`; return (time, action) fired."""
    fired: list[tuple[float, DownloadAction]] = []
    while (at := dl.get_timer()) is not None and at <= end:
        assert at >= now, "a deadline in the past would spin the adapter's timer"
        now = at
        actions = dl.handle_timer(now)
        # Every deadline has work (else a simulator setting now = deadline would spin).
        assert actions, f"get_timer() said {at} but nothing was due"
        fired.extend((now, a) for a in actions)
    return fired


def after(t: float) -> float:
    """The first time past a strict timeout ending at t."""
    return math.nextafter(t, math.inf)


def started(now: float = 0.0) -> Download:
    dl = Download(OFFER)
    dl.start(now)
    assert dl.ask(now) == AskHolders()
    return dl


def test_with_no_source_holders_are_asked_every_interval_and_the_author_dialled() -> None:
    dl = started()
    fired = run_until(dl, 10.0)
    asks = [(t, a) for t, a in fired if isinstance(a, AskHolders)]
    step = limits.FILE_ASK_INTERVAL_S
    assert asks == [(step * k, AskHolders(dial_author=True)) for k in (1, 2, 3)]


def test_a_download_with_no_source_is_stalled_once_after_the_stall_time() -> None:
    dl = started(100.0)
    fired = run_until(dl, 100.0 + 2 * limits.FILE_STALL_S, now=100.0)
    stalls = [t for t, a in fired if isinstance(a, Stalled)]
    assert stalls == [100.0 + limits.FILE_STALL_S]
    dl.add_source(A, 200.0)
    assert Unstalled() in dl.pump(200.0) and not dl.stalled
    assert Unstalled() not in dl.pump(200.0)


def test_a_download_resumed_stalled_is_not_stalled_again_and_unstalls_with_a_source() -> None:
    dl = Download(OFFER)
    dl.start(0.0, stalled=True)
    dl.ask(0.0)
    fired = run_until(dl, 3 * limits.FILE_STALL_S)
    assert not any(isinstance(a, Stalled) for _t, a in fired)
    dl.add_source(A, 90.0)
    assert dl.pump(90.0)[0] == Unstalled()


def test_the_digest_list_is_asked_of_another_source_after_its_timeout() -> None:
    dl = started()
    dl.add_source(A, 1.0)
    dl.add_source(B, 1.0)
    assert dl.pump(1.0) == [RequestHashes(A, 0)]
    assert dl.pump(2.0) == []  # asked already: not again before the timeout
    fired = run_until(dl, 1.0 + limits.FILE_HASHES_TIMEOUT_S + 1)
    again = [(t, a) for t, a in fired if isinstance(a, RequestHashes)]
    assert again == [(after(1.0 + limits.FILE_HASHES_TIMEOUT_S), RequestHashes(B, 0))]
    assert A not in dl.sources and A not in dl.banned  # slow, not lying


def test_an_unanswered_digest_request_of_the_only_source_is_reported_when_it_expires() -> None:
    """The hash-request deadline has work even when no other source is there to ask."""
    dl = started()
    dl.add_source(A, 0.0)
    assert dl.pump(0.0) == [RequestHashes(A, 0)]
    deadline = after(limits.FILE_HASHES_TIMEOUT_S)
    fired = run_until(dl, limits.FILE_HASHES_TIMEOUT_S + 0.1)
    assert (deadline, SourceExpired(A)) in fired
    assert A not in dl.sources and A not in dl.banned


def test_an_answered_digest_request_clears_its_timer() -> None:
    dl = started()
    dl.add_source(A, 0.0)
    assert dl.pump(0.0) == [RequestHashes(A, 0)]
    assert dl.hashes_received(A, 0, b"".join(DIGESTS))
    assert dl.hashes_asked is None
    requests = dl.pump(0.5)
    assert all(isinstance(r, RequestChunk) and r.peer_id == A for r in requests), requests
    assert len(requests) == limits.FILE_WINDOW


def test_a_source_that_owes_chunks_and_sends_nothing_expires_at_its_deadline() -> None:
    dl = started()
    dl.add_source(A, 0.0)
    dl.pump(0.0)
    dl.hashes_received(A, 0, b"".join(DIGESTS))
    dl.pump(0.0)
    fired = run_until(dl, limits.FILE_REQUEST_TIMEOUT_S + 1)
    expired = [(t, a) for t, a in fired if isinstance(a, SourceExpired)]
    assert expired == [(after(limits.FILE_REQUEST_TIMEOUT_S), SourceExpired(A))]
    # Meanwhile its progress was shown again every FILE_TICK_S, and not after it left.
    refreshes = [t for t, a in fired if isinstance(a, Refresh)]
    assert refreshes == [float(k) for k in range(1, int(limits.FILE_REQUEST_TIMEOUT_S) + 1)]
    assert A not in dl.sources and A not in dl.banned


def test_data_moves_the_expiry_deadline() -> None:
    dl = started()
    dl.add_source(A, 0.0)
    dl.pump(0.0)
    dl.hashes_received(A, 0, b"".join(DIGESTS))
    dl.pump(0.0)
    dl.piece(A, 0, 0, DATA[:100], 15.0)
    deadlines = [s.last_progress + limits.FILE_REQUEST_TIMEOUT_S for s in dl.sources.values()]
    assert deadlines == [15.0 + limits.FILE_REQUEST_TIMEOUT_S]
    assert not any(isinstance(a, SourceExpired) for _t, a in run_until(dl, 34.0))


def test_a_paused_download_has_no_timer_and_sends_nothing() -> None:
    dl = started()
    dl.add_source(A, 0.0)
    dl.paused = True
    assert dl.get_timer() is None
    assert dl.handle_timer(1000.0) == [] and dl.pump(1000.0) == []
    dl.paused = False
    assert dl.get_timer() is not None


def test_with_every_source_there_is_no_ask_timer() -> None:
    dl = started()
    for k in range(limits.FILE_MAX_SOURCES):
        dl.add_source(f"peer{k}" * 9, 0.0)
    fired = run_until(dl, 2 * limits.FILE_ASK_INTERVAL_S)
    assert not any(isinstance(a, AskHolders) for _t, a in fired)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "drop", "hashes", "piece", "pump", "timer", "wait"]),
            st.sampled_from([A, B]),
            st.floats(0.0, 40.0),
        ),
        max_size=60,
    )
)
@settings(FUZZ, max_examples=200)
def test_every_deadline_has_work_whatever_happened(
    steps: list[tuple[str, str, float]],
) -> None:
    """Whatever the schedule, get_timer() never names a time at which handle_timer() has
    nothing to do, and never one already passed when it was last handled."""
    now = 0.0
    dl = started(now)
    for op, peer, dt in steps:
        if op == "add":
            dl.add_source(peer, now)
        elif op == "drop":
            dl.drop(peer)
        elif op == "hashes" and peer in dl.sources:
            dl.hashes_received(peer, 0, b"".join(DIGESTS))
        elif op == "piece" and dl.sources.get(peer) and dl.sources[peer].inflight:
            dl.piece(peer, dl.sources[peer].inflight[0], 0, DATA[:10], now)
        elif op == "pump":
            dl.pump(now)
        elif op == "wait":
            now += dt
        elif op == "timer" and (at := dl.get_timer()) is not None:
            now = max(now, at)
            actions = dl.handle_timer(now)
            if at == now:
                assert actions, f"nothing due at {at}"
            after_ = dl.get_timer()
            assert after_ is None or after_ > now, (after_, now)
