"""Admission to a private room: two members prove the passphrase to each other (sans-IO).

No key check value travels any more (it let anyone who heard it test passphrases offline).
Two connected peers that both announce a private room's wire name run SPAKE2 in its
symmetric mode (PyPI `spake2`) with the room key (Argon2id of the passphrase) as the
password, bound to the room, both peer ids and the Noise handshake hash of their
connection, then confirm the key both ways (docs/protocol.md section 28):

    step 1  SPAKE2 message (33 bytes), each side sends one
    step 2  BLAKE2b-256(key = SPAKE2 key, "chinwag/1 admit confirm" 0 sender id)

A peer is admitted to the room once its confirmation checks; a wrong one is a refusal
(one of us has another passphrase). A peer learns nothing from a run it cannot complete
but whether its one guess was right: each run is an online guess, so runs are rate
limited per peer (ADMIT_PER_PEER, over it: disconnected) and per room (failures,
ADMIT_FAILURES_PER_ROOM), and we start one again with a peer that failed only after a
back-off. Admission lasts as long as the connection (it is bound to its handshake).

Pure: randomness (64 bytes per run) and time are passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import deque
from dataclasses import dataclass

from spake2 import SPAKE2_Symmetric  # type: ignore[import-untyped]
from spake2.ed25519_basic import NotOnCurve  # type: ignore[import-untyped]
from spake2.spake2 import SPAKEError  # type: ignore[import-untyped]

from chinwag import limits
from chinwag.logonce import WarnOnce
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import Reason

log = logging.getLogger(__name__)

STEP_PAKE = 1
STEP_CONFIRM = 2
_CONTEXT = b"chinwag/1 admit\x00"
_CONFIRM = b"chinwag/1 admit confirm\x00"
#: Bytes of a SPAKE2 message (side byte + Ed25519 point) and of a confirmation.
PAKE_BYTES = 33
CONFIRM_BYTES = 32
#: What spake2 raises on a bad message (its length asserts, point decoding, reflection).
_BAD_PAKE = (SPAKEError, NotOnCurve, ValueError, AssertionError, IndexError)
#: Bytes of randomness one run takes (SPAKE2 over Ed25519 draws a 64-byte scalar).
ENTROPY_BYTES = 64


@dataclass(frozen=True, slots=True)
class Send:
    """Send frame to peer."""

    peer: str
    frame: m.Admit


@dataclass(frozen=True, slots=True)
class Admitted:
    """peer proved the passphrase of room (on this connection)."""

    peer: str
    room: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A run with peer failed: one of us holds room under another passphrase."""

    peer: str
    room: str


@dataclass(frozen=True, slots=True)
class Unanswered:
    """peer did not complete a run in ADMIT_TIMEOUT_S (an older peer, or one gone quiet)."""

    peer: str
    room: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the connection to peer with reason."""

    peer: str
    reason: Reason


Action = Send | Admitted | Refused | Unanswered | Disconnect


def binding(room: str, me: str, peer: str, handshake_hash: bytes) -> bytes:
    """Return the SPAKE2 identity of a run: the room, both peer ids (sorted), the channel."""
    low, high = sorted((me, peer))
    return b"\x00".join((_CONTEXT + room.encode(), low.encode(), high.encode(), handshake_hash))


def confirmation(shared: bytes, sender: str) -> bytes:
    """Return the key confirmation that sender sends (proves it derived the same key)."""
    return hashlib.blake2b(_CONFIRM + sender.encode(), key=shared, digest_size=32).digest()


class _Run:
    """One run with one peer for one room."""

    __slots__ = ("pake", "shared", "started")

    def __init__(self, pake: SPAKE2_Symmetric, started: float) -> None:
        self.pake = pake
        self.shared: bytes | None = None
        self.started = started


def _entropy(data: bytes) -> object:
    def draw(n: int) -> bytes:
        if n > len(data):
            raise ValueError("admission run needs more entropy")
        return data[:n]

    return draw


def _prune(times: deque[float], now: float) -> deque[float]:
    while times and times[0] <= now - limits.ADMIT_WINDOW_S:
        times.popleft()
    return times


class Admission:
    """Runs, admissions and their rate limits for every (peer, private room) of one node."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._runs: dict[tuple[str, str], _Run] = {}
        self._admitted: dict[str, set[str]] = {}
        #: Runs each peer started with us per room (times, in the window).
        self._tries: dict[tuple[str, str], deque[float]] = {}
        #: Failed runs per room (times, in the window).
        self._failures: dict[str, deque[float]] = {}
        #: Failures in a row with a peer per room, and when we may start again.
        self._streak: dict[tuple[str, str], int] = {}
        self._retry_at: dict[tuple[str, str], float] = {}
        self._warn = WarnOnce(log)

    # --- queries -------------------------------------------------------------

    def admitted(self, room: str) -> frozenset[str]:
        """Return the peers that proved room's passphrase to us on their current connection."""
        return frozenset(self._admitted.get(room, ()))

    def is_admitted(self, peer: str, room: str) -> bool:
        return peer in self._admitted.get(room, ())

    def running(self, peer: str, room: str) -> bool:
        return (peer, room) in self._runs

    # --- commands ------------------------------------------------------------

    def start(
        self, peer: str, room: str, key: bytes, handshake_hash: bytes, entropy: bytes, now: float
    ) -> list[Action]:
        """Start a run with peer for room (it announces it); nothing if one runs, if the peer
        is admitted, during the back-off after a failure, or while the room's failures are
        over their bound."""
        ident = (peer, room)
        if ident in self._runs or self.is_admitted(peer, room):
            return []
        if now < self._retry_at.get(ident, 0.0) or self._room_full(room, now):
            return []
        return [self._open(peer, room, key, handshake_hash, entropy, now)]

    def received(
        self,
        peer: str,
        frame: m.Admit,
        key: bytes | None,
        handshake_hash: bytes,
        entropy: bytes,
        now: float,
    ) -> list[Action]:
        """An `admit` frame from peer; key is ours for frame.room (None: we do not hold it)."""
        room = frame.room
        ident = (peer, room)
        if key is None:
            self._warn(("not ours", peer), "ignoring admit from %s: not a room we hold", peer[:8])
            return []
        if frame.step == STEP_PAKE:
            tries = self._tries.get(ident)
            if tries is None:
                self._trim_tries(now)
                tries = self._tries[ident] = deque()
            _prune(tries, now).append(now)
            if len(tries) > limits.ADMIT_PER_PEER:
                self._warn(
                    ("flood", peer), "disconnecting %s: too many passphrase proofs", peer[:8]
                )
                self._forget(ident)
                return [Disconnect(peer, Reason.ADMIT_FLOOD)]
            out: list[Action] = []
            run = self._runs.get(ident)
            if run is None or run.shared is not None:
                # The peer starts a (new) run: whatever it proved before no longer holds.
                self._forget(ident)
                if self._room_full(room, now):
                    return []
                out.append(self._open(peer, room, key, handshake_hash, entropy, now))
                run = self._runs[ident]
            try:
                if len(frame.data) != PAKE_BYTES:
                    raise ValueError(f"{len(frame.data)} bytes")
                run.shared = bytes(run.pake.finish(frame.data))
            except _BAD_PAKE as exc:
                log.debug("bad SPAKE2 message from %s: %s", peer[:8], type(exc).__name__)
                return out + self._fail(ident, now)
            out.append(Send(peer, m.Admit(room, STEP_CONFIRM, confirmation(run.shared, self.me))))
            return out
        run = self._runs.get(ident)
        if run is None or run.shared is None:
            self._warn(("early", peer), "ignoring an unexpected admit confirmation from %s", peer)
            return []
        if not hmac.compare_digest(frame.data, confirmation(run.shared, peer)):
            return self._fail(ident, now)
        del self._runs[ident]
        self._streak.pop(ident, None)
        self._retry_at.pop(ident, None)
        self._admitted.setdefault(room, set()).add(peer)
        return [Admitted(peer, room)]

    def peer_closed(self, peer: str) -> None:
        """The connection to peer closed: its runs and admissions end (tries are kept)."""
        for ident in [k for k in self._runs if k[0] == peer]:
            del self._runs[ident]
        for peers in self._admitted.values():
            peers.discard(peer)

    def peer_dropped(self, peer: str, room: str) -> None:
        """peer no longer announces room."""
        self._forget((peer, room))

    def room_left(self, room: str) -> None:
        """We left room (or join it again with another passphrase): start afresh."""
        for ident in [k for k in self._runs if k[1] == room]:
            del self._runs[ident]
        self._admitted.pop(room, None)
        for ident in [k for k in self._retry_at if k[1] == room]:
            del self._retry_at[ident]
            self._streak.pop(ident, None)

    # --- timer ---------------------------------------------------------------

    def get_timer(self) -> float | None:
        """Return when the oldest run times out, or None."""
        if not self._runs:
            return None
        return min(r.started for r in self._runs.values()) + limits.ADMIT_TIMEOUT_S

    def handle_timer(self, now: float) -> list[Action]:
        """Drop the runs that waited ADMIT_TIMEOUT_S."""
        out: list[Action] = []
        for ident, run in list(self._runs.items()):
            if now >= run.started + limits.ADMIT_TIMEOUT_S:
                del self._runs[ident]
                out.append(Unanswered(*ident))
        return out

    # --- internals -----------------------------------------------------------

    def _open(
        self, peer: str, room: str, key: bytes, handshake_hash: bytes, entropy: bytes, now: float
    ) -> Send:
        pake = SPAKE2_Symmetric(
            key,
            idSymmetric=binding(room, self.me, peer, handshake_hash),
            entropy_f=_entropy(entropy),
        )
        self._runs[(peer, room)] = _Run(pake, now)
        return Send(peer, m.Admit(room, STEP_PAKE, bytes(pake.start())))

    def _fail(self, ident: tuple[str, str], now: float) -> list[Action]:
        peer, room = ident
        self._runs.pop(ident, None)
        _prune(self._failures.setdefault(room, deque()), now).append(now)
        streak = self._streak[ident] = self._streak.get(ident, 0) + 1
        backoff = min(limits.ADMIT_BACKOFF_MAX_S, limits.ADMIT_BACKOFF_S * 2 ** (streak - 1))
        self._retry_at[ident] = now + backoff
        self._warn(("refused", peer, room), "passphrase proof with %s failed", peer[:8])
        return [Refused(peer, room)]

    def _forget(self, ident: tuple[str, str]) -> None:
        self._runs.pop(ident, None)
        peers = self._admitted.get(ident[1])
        if peers is not None:
            peers.discard(ident[0])

    def _room_full(self, room: str, now: float) -> bool:
        failures = self._failures.get(room)
        if failures is None or len(_prune(failures, now)) < limits.ADMIT_FAILURES_PER_ROOM:
            return False
        self._warn(
            ("room full", room),
            "refusing passphrase proofs for %s: %d failed in %d s",
            room,
            len(failures),
            int(limits.ADMIT_WINDOW_S),
        )
        return True

    def _trim_tries(self, now: float) -> None:
        """Forget the tries of peers whose window has passed (fresh identities each add one)."""
        if len(self._tries) < limits.ADMIT_MAX_TRACKED:
            return
        for ident in [k for k, t in self._tries.items() if not _prune(t, now)]:
            del self._tries[ident]
        while len(self._tries) >= limits.ADMIT_MAX_TRACKED:
            del self._tries[next(iter(self._tries))]
