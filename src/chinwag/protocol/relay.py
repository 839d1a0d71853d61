"""Relays, sans-IO: the relay's book of reservations and circuits, and the client's keeper.

Theory of operation (docs/reach.md "Relays", docs/protocol.md section 22)
-----------------------------------------------------------------------
A peer behind a NAT holds a *reservation* at a relay over its ordinary connection to
it (`rsv` -> `rsvok`/`rsvno`). Whoever wants to reach that peer opens a fresh
connection to the relay and asks for a *circuit* (`cconn`); the relay tells the
reserved peer (`cinc`), which opens a fresh connection of its own and takes the
circuit (`cacc`); the relay answers both with `cok` and from then on copies bytes
between the two sockets. The ends run their own Noise session through it.

`RelayBook` decides, from inputs and `now`, who gets a reservation or a circuit and
when a circuit must close; every bound is in limits.py (RELAY_*). Grants are counted
over the last reservation TTL (a renewal is a grant), as go-libp2p's circuit v2 does,
so the book's memory is bounded by the grant limits whatever peers send.
`ReservationKeeper` is the client side: which relays to send `rsv` to, and when.
No clocks, no sockets, no randomness: `now` (monotonic seconds) and `wall` (Unix
seconds, only to tell the client an expiry) come in as arguments.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chinwag import limits
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import RelayRefusal

# --- the relay's side ---------------------------------------------------------------


@dataclass(slots=True)
class Reservation:
    """A peer reachable through us until `expires` (monotonic s)."""

    peer_id: str
    ip: str
    expires: float


@dataclass(slots=True)
class Circuit:
    """One circuit: set up (`accepted_at` None) or spliced. `sent[0]`: bytes src -> dst."""

    id: int
    src: str
    dst: str
    created: float
    max_bytes: int
    max_s: float
    accepted_at: float | None = None
    sent: list[int] = field(default_factory=lambda: [0, 0])
    #: The IP address the dialer asked from (its circuits per IP are bounded).
    src_ip: str | None = None

    @property
    def limited(self) -> bool:
        return self.max_bytes > 0

    def deadline(self) -> float | None:
        """When the circuit must close (setup timeout, or its time limit), None for never."""
        if self.accepted_at is None:
            return self.created + limits.RELAY_CIRCUIT_SETUP_S
        if self.max_s > 0:
            return self.accepted_at + self.max_s
        return None


class RelayBook:
    """Reservations and circuits of one relay, every count bounded (limits.py RELAY_*)."""

    def __init__(self, unlimited: Callable[[str], bool] | None = None) -> None:
        """`unlimited(peer_id)`: a peer served without byte/time limits (our contacts)."""
        self._unlimited = unlimited or (lambda _peer_id: False)
        self.reservations: dict[str, Reservation] = {}
        #: Grants in the last TTL: (expiry, peer id, ip), oldest first.
        self._grants: deque[tuple[float, str, str]] = deque()
        self.circuits: dict[int, Circuit] = {}
        self._next_id = 1

    # --- reservations ----------------------------------------------------------

    def reserve(self, peer_id: str, ip: str, now: float, wall: float) -> m.ReserveOk | m.ReserveNo:
        """Grant (or renew) peer_id's reservation, or refuse it with a reason."""
        self._expire(now)
        if (
            len(self._grants) >= limits.RELAY_MAX_RESERVATIONS
            or sum(1 for g in self._grants if g[1] == peer_id)
            >= limits.RELAY_MAX_RESERVATIONS_PER_PEER
            or sum(1 for g in self._grants if g[2] == ip) >= limits.RELAY_MAX_RESERVATIONS_PER_IP
        ):
            return m.ReserveNo(reason=RelayRefusal.RESOURCE_LIMIT)
        ttl = limits.RELAY_RESERVATION_TTL_S
        self._grants.append((now + ttl, peer_id, ip))
        self.reservations[peer_id] = Reservation(peer_id, ip, now + ttl)
        if self._unlimited(peer_id):
            return m.ReserveOk(expires=int(wall + ttl), ttl=int(ttl))
        return m.ReserveOk(
            expires=int(wall + ttl),
            ttl=int(ttl),
            max_bytes=limits.RELAY_CIRCUIT_MAX_BYTES,
            max_s=int(limits.RELAY_CIRCUIT_MAX_S),
        )

    def unreserve(self, peer_id: str) -> None:
        """peer_id's reservation connection is gone: it is no longer reachable through us.

        Its grant still counts until it expires (a peer cannot churn reservations).
        """
        self.reservations.pop(peer_id, None)

    def reserved(self, peer_id: str, now: float) -> bool:
        res = self.reservations.get(peer_id)
        return res is not None and res.expires > now

    # --- circuits --------------------------------------------------------------

    def connect(
        self, src: str, target: str, now: float, ip: str | None = None
    ) -> Circuit | m.CircuitNo:
        """A peer asks (from address `ip`) for a circuit to target: a new circuit waiting
        for Accept, or a refusal."""
        self._expire(now)
        if src == target:
            return m.CircuitNo(reason=RelayRefusal.SELF)
        if not self.reserved(target, now):
            return m.CircuitNo(reason=RelayRefusal.NO_RESERVATION)
        if (
            len(self.circuits) >= limits.RELAY_MAX_CIRCUITS
            or self._circuits_of(src) >= limits.RELAY_MAX_CIRCUITS_PER_PEER
            or self._circuits_of(target) >= limits.RELAY_MAX_CIRCUITS_PER_PEER
            # Peer ids cost nothing: one host dialling its own reserved ids from many ids
            # would otherwise take every circuit of the relay.
            or (
                ip is not None
                and sum(1 for c in self.circuits.values() if c.src_ip == ip)
                >= limits.RELAY_MAX_CIRCUITS_PER_IP
            )
        ):
            return m.CircuitNo(reason=RelayRefusal.RESOURCE_LIMIT)
        # Unlimited only when both ends are ours to serve: a contact cannot give a stranger
        # free bandwidth through us.
        free = self._unlimited(src) and self._unlimited(target)
        circuit = Circuit(
            id=self._next_id,
            src=src,
            dst=target,
            created=now,
            max_bytes=0 if free else limits.RELAY_CIRCUIT_MAX_BYTES,
            max_s=0.0 if free else limits.RELAY_CIRCUIT_MAX_S,
            src_ip=ip,
        )
        self._next_id += 1
        self.circuits[circuit.id] = circuit
        return circuit

    def accept(self, peer_id: str, circuit_id: int, now: float) -> Circuit | m.CircuitNo:
        """The target takes a circuit: it is spliced from now on (the adapter sends `cok`)."""
        circuit = self.circuits.get(circuit_id)
        if circuit is None or circuit.dst != peer_id or circuit.accepted_at is not None:
            return m.CircuitNo(reason=RelayRefusal.UNKNOWN_CIRCUIT)
        circuit.accepted_at = now
        return circuit

    def ok_frame(self, circuit: Circuit) -> m.CircuitOk:
        return m.CircuitOk(max_bytes=circuit.max_bytes, max_s=int(circuit.max_s))

    def allow(self, circuit_id: int, from_src: bool, nbytes: int) -> int:
        """Count nbytes about to cross the circuit; return how many of them may (the rest
        would pass its byte limit: the adapter forwards those allowed and closes it)."""
        circuit = self.circuits.get(circuit_id)
        if circuit is None:
            return 0
        side = 0 if from_src else 1
        if circuit.max_bytes > 0:
            nbytes = max(0, min(nbytes, circuit.max_bytes - circuit.sent[side]))
        circuit.sent[side] += nbytes
        return nbytes

    def exhausted(self, circuit_id: int) -> bool:
        """True when a direction of the circuit used its whole byte limit."""
        c = self.circuits.get(circuit_id)
        return c is not None and c.max_bytes > 0 and max(c.sent) >= c.max_bytes

    def close(self, circuit_id: int) -> None:
        self.circuits.pop(circuit_id, None)

    def _circuits_of(self, peer_id: str) -> int:
        return sum(1 for c in self.circuits.values() if peer_id in (c.src, c.dst))

    # --- time ----------------------------------------------------------------

    def due(self, now: float) -> list[int]:
        """Return the circuits whose setup or time limit ran out (the adapter closes them)."""
        self._expire(now)
        return [
            c.id for c in self.circuits.values() if (d := c.deadline()) is not None and d <= now
        ]

    def get_timer(self) -> float | None:
        """When due() next has something to do, or None."""
        times = [d for c in self.circuits.values() if (d := c.deadline()) is not None]
        times += [r.expires for r in self.reservations.values()]
        return min(times) if times else None

    def _expire(self, now: float) -> None:
        while self._grants and self._grants[0][0] <= now:
            self._grants.popleft()
        for peer_id in [p for p, r in self.reservations.items() if r.expires <= now]:
            del self.reservations[peer_id]

    def grant_counts(self) -> tuple[int, dict[str, int], dict[str, int]]:
        """Return (grants in all, per peer, per ip) in the current window (for tests)."""
        per_peer: dict[str, int] = {}
        per_ip: dict[str, int] = {}
        for _, peer_id, ip in self._grants:
            per_peer[peer_id] = per_peer.get(peer_id, 0) + 1
            per_ip[ip] = per_ip.get(ip, 0) + 1
        return len(self._grants), per_peer, per_ip


# --- the client's side ----------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    connected: bool = False
    #: A `rsv` is on its way: when we give up waiting for the answer.
    asked_until: float | None = None
    #: When our reservation ends (monotonic), None when we hold none.
    expires: float | None = None
    #: When to send the next `rsv` (renewal or retry), None: not now.
    next_try: float | None = None
    failures: int = 0
    max_bytes: int = 0


class ReservationKeeper:
    """Keeps a reservation at each known relay: reserve on connect, renew before expiry,
    retry after a refusal or a drop with exponential back-off (limits.py RELAY_*)."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    def add_relay(self, relay_id: str) -> bool:
        """Remember a relay to reserve at (bounded); False if there is no room for it."""
        if relay_id in self._slots:
            return True
        if len(self._slots) >= limits.RELAY_MAX_KNOWN:
            return False
        self._slots[relay_id] = _Slot()
        return True

    def knows(self, relay_id: str) -> bool:
        return relay_id in self._slots

    def connected(self, relay_id: str, now: float) -> None:
        """Our ordinary connection to the relay is up: reserve now (or when back-off allows)."""
        slot = self._slots.get(relay_id)
        if slot is None:
            return
        slot.connected = True
        if slot.next_try is None or slot.expires is None:
            slot.next_try = max(now, slot.next_try or now)

    def disconnected(self, relay_id: str, now: float) -> None:
        """The connection is gone and the reservation with it: retry later, backing off."""
        slot = self._slots.get(relay_id)
        if slot is None:
            return
        slot.connected = False
        slot.asked_until = None
        slot.expires = None
        slot.next_try = now + self._backoff(slot)

    def granted(self, relay_id: str, ok: m.ReserveOk, now: float) -> None:
        slot = self._slots.get(relay_id)
        if slot is None:
            return
        slot.asked_until = None
        slot.failures = 0
        ttl = max(float(ok.ttl), 1.0)
        slot.expires = now + ttl
        slot.max_bytes = ok.max_bytes
        slot.next_try = now + ttl * limits.RELAY_RENEW_AT

    def refused(self, relay_id: str, now: float) -> None:
        slot = self._slots.get(relay_id)
        if slot is None:
            return
        slot.asked_until = None
        slot.next_try = now + self._backoff(slot)

    def due(self, now: float) -> list[str]:
        """Return the relays to send `rsv` to now (each marked as asked)."""
        out = []
        for relay_id, slot in self._slots.items():
            if slot.expires is not None and slot.expires <= now:
                slot.expires = None
            if slot.asked_until is not None and slot.asked_until <= now:
                self.refused(relay_id, now)  # no answer in time
            if (
                slot.connected
                and slot.asked_until is None
                and slot.next_try is not None
                and slot.next_try <= now
            ):
                slot.asked_until = now + limits.RELAY_CIRCUIT_SETUP_S
                slot.next_try = None
                out.append(relay_id)
        return out

    def get_timer(self) -> float | None:
        times: list[float] = []
        for slot in self._slots.values():
            if slot.asked_until is not None:
                times.append(slot.asked_until)
            elif slot.connected and slot.next_try is not None:
                times.append(slot.next_try)
            if slot.expires is not None:
                times.append(slot.expires)
        return min(times) if times else None

    def reserved(self, now: float) -> list[str]:
        """Relays at which we hold a reservation now."""
        return [r for r, s in self._slots.items() if s.expires is not None and s.expires > now]

    def _backoff(self, slot: _Slot) -> float:
        delay = limits.RELAY_RETRY_BASE_S * (2 ** min(slot.failures, 16))
        slot.failures += 1
        return float(min(delay, limits.RELAY_RETRY_CAP_S))
