"""Sans-IO hole-punch coordination over a relayed connection (libp2p DCUtR's timing).

Theory of operation
-------------------
Two peers joined through a relay try to open a direct TCP connection by dialling
each other at the same moment (TCP simultaneous open), each from its listening
port, so each NAT sees an outgoing SYN before the other's SYN arrives. The
initiator is the side that dialled the relayed connection; it runs rounds of
up to PUNCH_ATTEMPTS attempts. One attempt:

    initiator                           responder
    PunchConnect{addrs, n}  ------->    (answers at once)
                            <-------    PunchConnect{addrs, n}
    rtt = now - sent
    PunchSync{n}            ------->    Dial(initiator's addrs) now
    Dial(responder's addrs) at now + rtt/2

so both SYNs leave at about the same moment. The adapter reports the outcome
with dial_result(): success (a direct connection whose handshake completed)
ends the punching; failure starts the next attempt at once, and after the
last attempt of a round the next round waits PUNCH_RETRY_BASE_S, doubling per
failed round up to PUNCH_RETRY_CAP_S. The responder answers at most
PUNCH_RESPONDER_MAX_CONNECTS connects per PUNCH_RESPONDER_WINDOW_S and ignores
the rest (it would otherwise dial whatever a peer lists, as often as asked).
Malformed address lists raise RemoteProtocolError (the caller closes the
connection); stale frames of an older attempt are ignored.

The object is driven like every protocol object here: receive(frame, now),
handle_timer(now), get_timer(), next_action(); no clock, no sockets.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from chinwag import limits
from chinwag.errors import RemoteProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol.addr import AddrError, dialable, parse_addr
from chinwag.protocol.reasons import Reason


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send this frame over the relayed connection."""

    frame: m.PunchConnect | m.PunchSync


@dataclass(frozen=True, slots=True)
class Dial:
    """Dial every address now from the listening port; report with dial_result(attempt, ...)."""

    addrs: tuple[tuple[str, int], ...]
    attempt: int


@dataclass(frozen=True, slots=True)
class RoundFailed:
    """The initiator's round failed; the next one starts at `retry_at` (for logs and tests)."""

    round: int
    retry_at: float


Action = SendFrame | Dial | RoundFailed


class Phase(enum.Enum):
    IDLE = "idle"  # initiator: waiting for the next attempt; responder: waiting for a connect
    CONNECT_SENT = "connect_sent"  # initiator: PunchConnect out, timing the answer
    DIAL_WAIT = "dial_wait"  # initiator: sync sent, dials at dial_at
    AWAIT_SYNC = "await_sync"  # responder: answered, waiting for PunchSync
    DIALING = "dialing"  # a Dial is out; waiting for dial_result
    DONE = "done"  # a direct connection is up; nothing more


def check_addrs(addrs: list[str]) -> tuple[tuple[str, int], ...]:
    """Parse a peer's address list; raise RemoteProtocolError on junk or a forbidden target."""
    out: list[tuple[str, int]] = []
    for text in addrs:
        try:
            host, port = parse_addr(text)
        except AddrError as exc:
            raise RemoteProtocolError(f"bad address: {exc}", Reason.MALFORMED_FRAME) from None
        if not dialable(host):
            raise RemoteProtocolError(f"may not dial {text!r}", Reason.MALFORMED_FRAME)
        if (host, port) not in out:
            out.append((host, port))
    return tuple(out)


class Puncher:
    """Hole-punch state of one relayed connection; `initiator` is the side that dialled it."""

    def __init__(self, initiator: bool, now: float, own_addrs: tuple[str, ...] = ()) -> None:
        self.initiator = initiator
        #: Our public addresses as "host:port" (observed, UPnP); the adapter keeps it current.
        self.own_addrs = own_addrs
        self.phase = Phase.IDLE
        #: Attempt number across rounds (1, 2, ...): frames of older attempts are stale.
        self.attempt = 0
        #: Attempts made in the current round (initiator).
        self.in_round = 0
        self.round = 1
        self.rtt: float | None = None
        self._peer_addrs: tuple[tuple[str, int], ...] = ()
        self._sent_at = 0.0
        self._deadline: float | None = now if initiator else None
        self._window_start = now
        self._window_count = 0
        self._actions: deque[Action] = deque()

    # --- inputs ---------------------------------------------------------

    def receive(self, frame: m.PunchConnect | m.PunchSync, now: float) -> None:
        """Feed a punch frame from the relayed connection; junk raises RemoteProtocolError."""
        if isinstance(frame, m.PunchConnect):
            addrs = check_addrs(frame.addrs)  # checked whatever our state: junk is junk
            if self.initiator:
                self._connect_answered(frame.n, addrs, now)
            else:
                self._connect_received(frame.n, addrs, now)
        else:
            if self.initiator:
                raise RemoteProtocolError("PunchSync from the responder", Reason.PROTOCOL_ERROR)
            if self.phase is Phase.AWAIT_SYNC and frame.n == self.attempt:
                self._dial(now)

    def dial_result(self, attempt: int, ok: bool, now: float) -> None:
        """The Dial of `attempt` ended: ok means a direct connection completed its handshake."""
        if self.phase is Phase.DONE:
            return
        if ok:
            self.phase = Phase.DONE
            self._deadline = None
            return
        if self.phase is Phase.DIALING and attempt == self.attempt:
            self._attempt_failed(now)

    def succeeded(self) -> None:
        """A direct connection to the peer is up by any way: stop punching."""
        self.phase = Phase.DONE
        self._deadline = None

    def handle_timer(self, now: float) -> None:
        """Run what is due: start an attempt, dial after the sync, or time an attempt out."""
        if self._deadline is None or now < self._deadline:
            return
        if self.phase is Phase.IDLE and self.initiator:
            self._start_attempt(now)
        elif self.phase is Phase.DIAL_WAIT:
            self._dial(now)
        elif self.phase in (Phase.CONNECT_SENT, Phase.DIALING):
            if self.initiator:
                self._attempt_failed(now)
            else:
                self._idle(None)
        elif self.phase is Phase.AWAIT_SYNC:
            self._idle(None)

    # --- outputs --------------------------------------------------------

    @property
    def peer_addrs(self) -> tuple[tuple[str, int], ...]:
        """The addresses the peer gave in the current attempt."""
        return self._peer_addrs

    def claims_inbound(self, host: str) -> bool:
        """True if an inbound connection from `host` (any port) is this attempt's punch.

        Only the initiator claims, from its sync until the attempt ends: the responder's SYN
        may reach our listener before our own dial leaves. A cone NAT sends it from the port
        the peer announced; a symmetric NAT from a fresh port nobody can predict, which a
        public listener accepts all the same, so an announced IP is enough.
        """
        if not self.initiator or self.phase not in (Phase.DIAL_WAIT, Phase.DIALING):
            return False
        return any(peer_host == host for peer_host, _port in self._peer_addrs)

    def get_timer(self) -> float | None:
        """Return when handle_timer should next run, or None."""
        return self._deadline

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    # --- internals ------------------------------------------------------

    def _start_attempt(self, now: float) -> None:
        self.attempt += 1
        self.in_round += 1
        self._sent_at = now
        self.phase = Phase.CONNECT_SENT
        self._deadline = now + limits.PUNCH_REPLY_TIMEOUT_S
        self._actions.append(SendFrame(m.PunchConnect(addrs=list(self.own_addrs), n=self.attempt)))

    def _connect_answered(self, n: int, addrs: tuple[tuple[str, int], ...], now: float) -> None:
        if self.phase is not Phase.CONNECT_SENT or n != self.attempt:
            return  # an answer to an attempt already given up
        self.rtt = max(0.0, now - self._sent_at)
        self._peer_addrs = addrs
        self._actions.append(SendFrame(m.PunchSync(n=n)))
        self.phase = Phase.DIAL_WAIT
        self._deadline = now + self.rtt / 2

    def _connect_received(self, n: int, addrs: tuple[tuple[str, int], ...], now: float) -> None:
        if now - self._window_start >= limits.PUNCH_RESPONDER_WINDOW_S:
            self._window_start, self._window_count = now, 0
        if self.phase is Phase.DONE or self._window_count >= limits.PUNCH_RESPONDER_MAX_CONNECTS:
            return
        self._window_count += 1
        self.attempt = n
        self._peer_addrs = addrs
        self._actions.append(SendFrame(m.PunchConnect(addrs=list(self.own_addrs), n=n)))
        self.phase = Phase.AWAIT_SYNC
        self._deadline = now + limits.PUNCH_SYNC_TIMEOUT_S

    def _dial(self, now: float) -> None:
        # With no address to dial (the peer knows none of its own) we still wait out the
        # attempt: the peer's SYN may reach our listener if we are the one reachable.
        self.phase = Phase.DIALING
        self._deadline = now + limits.PUNCH_DIAL_TIMEOUT_S + 1.0  # the adapter reports first
        if self._peer_addrs:
            self._actions.append(Dial(self._peer_addrs, self.attempt))

    def _attempt_failed(self, now: float) -> None:
        if not self.initiator:
            self._idle(None)
            return
        if self.in_round < limits.PUNCH_ATTEMPTS:
            self._idle(now)
            return
        delay = min(limits.PUNCH_RETRY_BASE_S * 2 ** (self.round - 1), limits.PUNCH_RETRY_CAP_S)
        self._actions.append(RoundFailed(self.round, now + delay))
        self.round += 1
        self.in_round = 0
        self._idle(now + delay)

    def _idle(self, deadline: float | None) -> None:
        self.phase = Phase.IDLE
        self._deadline = deadline
