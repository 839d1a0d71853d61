"""Admission to a private room: two members prove the passphrase to each other (sans-IO).

No key check value travels any more (it let anyone who heard it test passphrases offline).
Two connected peers that both announce a private room's wire name run SPAKE2 in its
symmetric mode (PyPI `spake2`) with the room key (Argon2id of the passphrase) as the
password, bound to the room, both peer ids and the Noise handshake hash of their
connection, then confirm the key both ways (docs/protocol.md section 28):

    step 1  SPAKE2 message (33 bytes), each side sends one
    step 2  BLAKE2b-256(key = SPAKE2 key, "chinwag/1 admit confirm" 0 sender id)

A peer is admitted to the room once its confirmation checks; a wrong one is a refusal
(one of us has another passphrase). Our confirmation tells the peer whether its one guess
of the passphrase was right, whether or not it ever sends its own: so every run in which
we sent ours counts as a guess from then on (running, timed out, closed, refused) unless
it ends in admission. Guesses are bounded per peer (ADMIT_PER_PEER runs, over it:
disconnected) and per room (ADMIT_FAILURES_PER_ROOM); the room's bound spares peers
admitted to it before (under this passphrase) and verified peers, so guessers cannot lock
members out. A step-1 message that is no valid SPAKE2 message is no guess (the sender
learns nothing): its connection is closed. Runs with peers not spared cost CPU on the
loop and are bounded in all (ADMIT_RUNS_PER_WINDOW); we start one again with a peer whose
run was lost only after a back-off. Admission lasts as long as the connection (it is
bound to its handshake).

Pure: randomness (64 bytes per run) and time are passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import deque
from collections.abc import Callable
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

    __slots__ = ("counted", "pake", "sent", "shared", "started")

    def __init__(self, pake: SPAKE2_Symmetric, started: float) -> None:
        self.pake = pake
        self.shared: bytes | None = None
        self.started = started
        #: When our confirmation went out (set with shared): the peer knows its answer.
        self.sent: float | None = None
        #: Whether that confirmation is counted in the room's guesses (peer not spared).
        self.counted = False


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

    def __init__(self, me: str, trusted: Callable[[str], bool] | None = None) -> None:
        """trusted(peer): whether the user verified peer (spared by the room's guess bound)."""
        self.me = me
        self._trusted = trusted
        self._runs: dict[tuple[str, str], _Run] = {}
        self._admitted: dict[str, set[str]] = {}
        #: Runs each peer started with us per room (times, in the window).
        self._tries: dict[tuple[str, str], deque[float]] = {}
        #: Guesses per room: when we confirmed to a peer not spared, not given back by an
        #: admission (times, in the window).
        self._guesses: dict[str, deque[float]] = {}
        #: Peers admitted to a room before under its current key, least recent first.
        self._known: dict[str, dict[str, None]] = {}
        #: Runs opened with peers not spared, all rooms (times, in the window): CPU.
        self._opened: deque[float] = deque()
        #: Lost runs in a row with a peer per room, and when we may start again (bounded
        #: like _tries; the two always hold the same keys).
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

    def spared(self, peer: str, room: str) -> bool:
        """Return whether peer is exempt from the room's guess bound (admitted to it before
        under this key, or verified): it cannot be locked out by guessers."""
        if peer in self._known.get(room, ()):
            return True
        return self._trusted is not None and self._trusted(peer)

    # --- commands ------------------------------------------------------------

    def start(
        self, peer: str, room: str, key: bytes, handshake_hash: bytes, entropy: bytes, now: float
    ) -> list[Action]:
        """Start a run with peer for room (it announces it); nothing if one runs, if the peer
        is admitted, during the back-off after a lost run, or (peer not spared) while the
        room's guesses or the runs with strangers are over their bounds."""
        ident = (peer, room)
        if ident in self._runs or self.is_admitted(peer, room):
            return []
        if now < self._retry_at.get(ident, 0.0) or not self._may_open(peer, room, now):
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
                self._end(ident, now)
                return [Disconnect(peer, Reason.ADMIT_FLOOD)]
            if len(frame.data) != PAKE_BYTES:
                return self._malformed(ident, f"{len(frame.data)} bytes", now)
            spared = self.spared(peer, room)
            if not spared and self._room_full(room, now):
                # Our confirmation would answer one more guess (also in a run we started).
                self._end(ident, now)
                return []
            out: list[Action] = []
            run = self._runs.get(ident)
            if run is None or run.shared is not None:
                # The peer starts a (new) run: whatever it proved before no longer holds.
                self._end(ident, now)
                if not self._may_open(peer, room, now):
                    return []
                out.append(self._open(peer, room, key, handshake_hash, entropy, now))
                run = self._runs[ident]
            try:
                run.shared = bytes(run.pake.finish(frame.data))
            except _BAD_PAKE as exc:
                # Not a guess (the sender learns nothing from it): a broken or reflected message.
                return self._malformed(ident, type(exc).__name__, now)
            run.sent = now
            if not spared:
                run.counted = True
                _prune(self._guesses.setdefault(room, deque()), now).append(now)
            out.append(Send(peer, m.Admit(room, STEP_CONFIRM, confirmation(run.shared, self.me))))
            return out
        run = self._runs.get(ident)
        if run is None or run.shared is None:
            self._warn(("early", peer), "ignoring an unexpected admit confirmation from %s", peer)
            return []
        if not hmac.compare_digest(frame.data, confirmation(run.shared, peer)):
            return self._fail(ident, now)
        del self._runs[ident]
        if run.counted and run.sent is not None:
            # The guess was right: a member joining is no guess (the bound stays for others).
            guesses = self._guesses.get(room)
            if guesses is not None and run.sent in guesses:
                guesses.remove(run.sent)
        self._streak.pop(ident, None)
        self._retry_at.pop(ident, None)
        self._admitted.setdefault(room, set()).add(peer)
        known = self._known.setdefault(room, {})
        known.pop(peer, None)
        known[peer] = None
        while len(known) > limits.ADMIT_KNOWN_PER_ROOM:
            del known[next(iter(known))]
        return [Admitted(peer, room)]

    def peer_closed(self, peer: str) -> None:
        """The connection to peer closed: its runs and admissions end (tries, guesses and
        back-offs are kept: closing right after our confirmation is still a guess)."""
        for ident in [k for k in self._runs if k[0] == peer]:
            self._end(ident, None)
        for peers in self._admitted.values():
            peers.discard(peer)

    def peer_dropped(self, peer: str, room: str) -> None:
        """peer no longer announces room."""
        self._end((peer, room), None)

    def room_left(self, room: str) -> None:
        """We left room (or join it again with another passphrase): start afresh (the guesses
        stay counted; who was admitted under the old key is forgotten)."""
        for ident in [k for k in self._runs if k[1] == room]:
            del self._runs[ident]
        self._admitted.pop(room, None)
        self._known.pop(room, None)
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
        """Drop the runs that waited ADMIT_TIMEOUT_S (one we confirmed stays a guess)."""
        out: list[Action] = []
        for ident, run in list(self._runs.items()):
            if now >= run.started + limits.ADMIT_TIMEOUT_S:
                self._end(ident, now)
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
        """The peer's confirmation was wrong (the guess was counted when we sent ours)."""
        peer, room = ident
        self._runs.pop(ident, None)
        self._back_off(ident, now)
        self._warn(("refused", peer, room), "passphrase proof with %s failed", peer[:8])
        return [Refused(peer, room)]

    def _malformed(self, ident: tuple[str, str], why: str, now: float) -> list[Action]:
        """A step 1 that is no SPAKE2 message (or ours reflected): close, count no guess."""
        peer = ident[0]
        self._end(ident, now)
        self._warn(("bad pake", peer), "disconnecting %s: bad SPAKE2 message (%s)", peer[:8], why)
        return [Disconnect(peer, Reason.MALFORMED_FRAME)]

    def _end(self, ident: tuple[str, str], now: float | None) -> None:
        """Drop a run and the peer's admission; a run we confirmed is lost: back off (now:
        None when no clock is at hand, then the time of our confirmation)."""
        run = self._runs.pop(ident, None)
        if run is not None and run.sent is not None:
            self._back_off(ident, run.sent if now is None else now)
        peers = self._admitted.get(ident[1])
        if peers is not None:
            peers.discard(ident[0])

    def _back_off(self, ident: tuple[str, str], now: float) -> None:
        streak = self._streak.pop(ident, 0) + 1
        self._retry_at.pop(ident, None)
        self._trim_backoff(now)
        self._streak[ident] = streak
        backoff = min(limits.ADMIT_BACKOFF_MAX_S, limits.ADMIT_BACKOFF_S * 2 ** (streak - 1))
        self._retry_at[ident] = now + backoff

    def _trim_backoff(self, now: float) -> None:
        """Forget back-offs over a window old, then the oldest (throwaway identities each add
        one): both tables stay within ADMIT_MAX_TRACKED."""
        if len(self._retry_at) < limits.ADMIT_MAX_TRACKED:
            return
        for ident in [k for k, t in self._retry_at.items() if t <= now - limits.ADMIT_WINDOW_S]:
            del self._retry_at[ident]
            self._streak.pop(ident, None)
        while len(self._retry_at) >= limits.ADMIT_MAX_TRACKED:
            ident = next(iter(self._retry_at))
            del self._retry_at[ident]
            self._streak.pop(ident, None)

    def _may_open(self, peer: str, room: str, now: float) -> bool:
        """Return whether we may open a run with peer for room: always if it is spared, else
        while the room's guesses and the runs with strangers are under their bounds (the
        latter is charged here)."""
        if self.spared(peer, room):
            return True
        if self._room_full(room, now):
            return False
        if len(_prune(self._opened, now)) >= limits.ADMIT_RUNS_PER_WINDOW:
            self._warn(
                ("busy",),
                "refusing passphrase proofs with new peers: %d in %d s",
                len(self._opened),
                int(limits.ADMIT_WINDOW_S),
            )
            return False
        self._opened.append(now)
        return True

    def _room_full(self, room: str, now: float) -> bool:
        guesses = self._guesses.get(room)
        if guesses is None or len(_prune(guesses, now)) < limits.ADMIT_FAILURES_PER_ROOM:
            return False
        self._warn(
            ("room full", room),
            "refusing passphrase proofs for %s from new peers: %d guesses in %d s",
            room,
            len(guesses),
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
