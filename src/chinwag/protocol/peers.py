"""Whom to dial and when: the sans-IO peer table behind the connection manager.

Theory of operation
-------------------
Addresses come from beacons (keyed by the peer id they claim), from
`--peer HOST:PORT` (keyed by address until a handshake names the peer), and
from inbound connections (the peer's address plus the listen port in its
hello). The table turns these into dial decisions:

- a peer heard in a beacon is dialled at once by the side with the lower peer
  id; the other side waits DIAL_YIELD_S first, so a simultaneous dial is rare
  (and harmless: the connection manager keeps one connection per pair);
- with `dial_discovered=False` (the gossip mesh decides whom to dial, docs/mesh.md)
  a beacon only records the address: a discovered peer is dialled when `wanted`
  (a mesh dial, a private conversation, a file) or when it is a contact
  (`contact(peer_id)`), and a lost or failed dial of it is not retried by the table;
- failed or lost connections are retried after an exponential back-off with
  jitter, capped at RECONNECT_CAP_S;
- a peer that said goodbye is forgotten until it beacons again (manual
  addresses keep being retried);
- discovered peers not heard from for a while are forgotten, and the table
  holds at most MAX_DISCOVERED of them.

Beacons are unauthenticated, so the table defends itself against spoofed ones
(hardening): a source address may claim at most MAX_IDS_PER_HOST strangers; when
the table is full a newcomer may only replace the stranger heard longest ago, and
only one silent for DISCOVERED_IDLE_S (a peer we have been connected to, in this
run or an earlier one, may take any stranger's place; such peers, manual
addresses, connected peers and dials in progress are never evicted by a beacon);
first dials of strangers are paced by a token bucket (NEW_DIALS_PER_S); and a
beacon never moves the address of a peer that is connected, being dialled, or
whose address a handshake proved (until a dial there fails).

Randomness (jitter) comes from an injected `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from chinwag import limits


@dataclass(slots=True)
class Entry:
    """One dialable address and its retry state."""

    host: str
    port: int
    peer_id: str | None
    manual: bool
    next_attempt: float | None = None
    failures: int = 0
    dialing: bool = False
    connected: bool = False
    connected_since: float = 0.0
    last_seen: float = 0.0
    #: We have been connected to this peer: not a stranger, never evicted by a beacon.
    known: bool = False
    #: A handshake proved host:port belongs to this peer; beacons do not move it.
    proven: bool = False


@dataclass(frozen=True, slots=True)
class Dial:
    """Dial host:port now; `key` is reported back to dial_failed/dial_done."""

    key: str
    host: str
    port: int
    expected_peer_id: str | None


class PeerTable:
    """Dial policy: who to dial, when, and when to give up for a while."""

    def __init__(
        self,
        own_peer_id: str,
        rng: random.Random,
        known: Callable[[str], bool] | None = None,
        *,
        dial_discovered: bool = True,
        contact: Callable[[str], bool] | None = None,
    ) -> None:
        """`known(peer_id)`: a peer we were connected to before (in an earlier run too);
        a beacon naming it is no stranger's. `dial_discovered=False`: beacons do not make
        us dial (the mesh does, through `wanted`), except peers for which `contact` is true."""
        self.own_peer_id = own_peer_id
        self._rng = rng
        self._known = known or (lambda _peer_id: False)
        self.dial_discovered = dial_discovered
        self._contact = contact or (lambda _peer_id: False)
        self._entries: dict[str, Entry] = {}
        #: Token bucket pacing first dials of strangers (beacon floods make us dial anyone).
        self._dial_tokens = limits.NEW_DIALS_BURST
        self._dial_stamp: float | None = None

    # --- inputs ---------------------------------------------------------

    def add_manual(self, host: str, port: int, now: float) -> None:
        """Add a `--peer` address, to be dialled now and kept for ever."""
        key = f"{host}:{port}"
        self._entries.setdefault(key, Entry(host, port, None, manual=True, next_attempt=now))

    def add_contact(self, peer_id: str, host: str, port: int, now: float) -> None:
        """Add an address of a contact (issue 14): dialled now expecting peer_id, kept for
        ever (until remove_contact), retried with back-off like a `--peer` address."""
        key = contact_key(peer_id, host, port)
        entry = self._entries.setdefault(
            key, Entry(host, port, peer_id, manual=True, next_attempt=now, known=True)
        )
        if not entry.connected and not entry.dialing and entry.next_attempt is None:
            entry.next_attempt = now

    def remove_contact(self, peer_id: str) -> None:
        """Forget every address added by add_contact for peer_id (a connection stays)."""
        prefix = f"{peer_id}@"
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def beacon(self, peer_id: str, host: str, port: int, now: float) -> bool:
        """Record a beacon; return True if the sender is not connected (worth answering)."""
        if peer_id == self.own_peer_id:
            return False
        entry = self._entries.get(peer_id)
        if entry is None:
            known = self._known(peer_id)
            if not known and self._strangers_at(host) >= limits.MAX_IDS_PER_HOST:
                return False
            if self._discovered_count() >= limits.MAX_DISCOVERED:
                idle_s = 0.0 if known else limits.DISCOVERED_IDLE_S
                if not self._evict_stranger(now, idle_s):
                    return False
            entry = self._entries[peer_id] = Entry(host, port, peer_id, manual=False, known=known)
        entry.last_seen = now
        movable = not entry.connected and not entry.dialing and not entry.proven
        if movable and host != entry.host and self._is_stranger(entry):
            # Moving would let one host claim more than its share of strangers.
            movable = self._strangers_at(host) < limits.MAX_IDS_PER_HOST
        if movable:
            entry.host, entry.port = host, port
        if entry.connected:
            return False
        if entry.next_attempt is None and self._auto(entry):
            first = peer_id > self.own_peer_id
            entry.next_attempt = now if first else now + limits.DIAL_YIELD_S
        return True

    def hint(self, peer_id: str, host: str, port: int, now: float) -> bool:
        """Learn an address of peer_id from its signed presence record, without dialling.

        Return False if the table has no room for it. Like a beacon it never moves the
        address of a peer that is connected, being dialled or proven elsewhere.
        """
        if peer_id == self.own_peer_id:
            return False
        entry = self._entries.get(peer_id)
        if entry is None:
            known = self._known(peer_id)
            if self._discovered_count() >= limits.MAX_DISCOVERED and not self._evict_stranger(
                now, 0.0 if known else limits.DISCOVERED_IDLE_S
            ):
                return False
            entry = self._entries[peer_id] = Entry(host, port, peer_id, manual=False, known=known)
        elif not entry.connected and not entry.dialing and not entry.proven:
            entry.host, entry.port = host, port
        entry.last_seen = now
        return True

    def dial_reached(self, key: str, peer_id: str) -> None:
        """The dial for key completed a handshake with peer_id (maybe a duplicate connection)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.dialing = False
            entry.peer_id = peer_id
            entry.next_attempt = None
            if not entry.manual and peer_id == key:
                entry.known = entry.proven = True

    def dial_failed(self, key: str, now: float) -> None:
        """A dial for key failed: schedule a retry with back-off."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.dialing = False
            # The proven address failed: a beacon may tell us where the peer went.
            entry.proven = False
            if self._auto(entry):
                self._back_off(entry, now)
            else:  # whoever wanted it asks again (the mesh picks another candidate meanwhile)
                entry.next_attempt = None
                entry.failures = min(entry.failures + 1, limits.MAX_BACKOFF_STEPS)

    def connected(
        self, peer_id: str, host: str, listen_port: int, now: float, dial_key: str | None = None
    ) -> None:
        """A connection to peer_id is open (dialled via dial_key, or inbound)."""
        if dial_key is not None and dial_key in self._entries:
            manual = self._entries[dial_key]
            manual.peer_id = peer_id
            manual.dialing = False
        entry = self._entries.get(peer_id)
        if entry is None:
            entry = self._entries[peer_id] = Entry(host, listen_port, peer_id, manual=False)
        if listen_port:
            entry.host, entry.port = host, listen_port
            entry.proven = True
        entry.known = True
        entry.connected = True
        entry.connected_since = now
        entry.last_seen = now
        entry.dialing = False
        entry.next_attempt = None

    def disconnected(self, peer_id: str, now: float, goodbye: bool) -> None:
        """The last connection to peer_id closed; goodbye=True if it left on purpose."""
        entry = self._entries.get(peer_id)
        manual = [e for e in self._entries.values() if e.manual and e.peer_id == peer_id]
        stable = entry is not None and now - entry.connected_since >= limits.STABLE_CONNECTION_S
        if entry is not None:
            if goodbye or manual or not entry.port:
                # (No port: the peer listens nowhere, e.g. it only dials; nothing to redial.)
                # A departed peer is dialled again when it beacons; a manual
                # address is redialled through its own entry.
                del self._entries[peer_id]
            else:
                entry.connected = False
                entry.last_seen = now
                if stable:
                    entry.failures = 0
                if self._auto(entry):
                    self._back_off(entry, now)
                else:
                    entry.next_attempt = None
        for other in manual:
            if stable:
                other.failures = 0
            self._back_off(other, now)

    def wanted(self, peer_id: str, now: float) -> bool:
        """We need peer_id now (it holds a file we fetch): dial it without waiting for its
        back-off. Return True if a dial is due now (an address is known, not in progress)."""
        due = False
        for entry in self._entries.values():
            if entry.peer_id != peer_id or entry.connected or entry.dialing:
                continue
            entry.next_attempt = now
            due = True
        return due

    # --- outputs --------------------------------------------------------

    def due_dials(self, now: float) -> list[Dial]:
        """Return the dials to start now (each marked as in progress)."""
        self._forget_stale(now)
        self._refill(now)
        dials = []
        for key, entry in self._entries.items():
            if entry.connected or entry.dialing or entry.next_attempt is None:
                continue
            if entry.next_attempt > now:
                continue
            if entry.peer_id is not None and self._is_connected(entry.peer_id):
                entry.next_attempt = None
                continue
            if self._is_stranger(entry):
                if self._dial_tokens < 1.0:
                    continue  # paced: dialled when a token is back (get_timer)
                self._dial_tokens -= 1.0
            entry.dialing = True
            dials.append(Dial(key, entry.host, entry.port, entry.peer_id))
        return dials

    def get_timer(self) -> float | None:
        """Return when due_dials next has something to do, or None."""
        times = []
        token_at = self._next_token_at()
        for e in self._entries.values():
            if e.next_attempt is None or e.dialing or e.connected:
                continue
            if self._is_stranger(e) and token_at is not None:
                times.append(max(e.next_attempt, token_at))
            else:
                times.append(e.next_attempt)
        return min(times) if times else None

    def __len__(self) -> int:
        """Return the number of entries (addresses and peers) held."""
        return len(self._entries)

    def is_manual(self, key: str) -> bool:
        """Return whether key is a `--peer` address (the user asked for it)."""
        entry = self._entries.get(key)
        return entry is not None and entry.manual

    def last_heard(self, peer_id: str) -> float | None:
        """Return when peer_id was last heard (beacon or connection), or None if unknown."""
        entry = self._entries.get(peer_id)
        return None if entry is None else entry.last_seen

    def address_of(self, peer_id: str) -> tuple[str, int] | None:
        entry = self._entries.get(peer_id)
        return None if entry is None else (entry.host, entry.port)

    # --- internals ------------------------------------------------------

    def _auto(self, entry: Entry) -> bool:
        """Return whether the table itself dials entry (from beacons) and redials it when lost."""
        if self.dial_discovered or entry.manual:
            return True
        return entry.peer_id is not None and self._contact(entry.peer_id)

    def _is_connected(self, peer_id: str) -> bool:
        entry = self._entries.get(peer_id)
        return entry is not None and entry.connected

    def _discovered_count(self) -> int:
        return sum(1 for e in self._entries.values() if not e.manual)

    @staticmethod
    def _is_stranger(entry: Entry) -> bool:
        """A peer only heard in beacons: never connected, not a manual address."""
        return not entry.manual and not entry.known and not entry.connected

    def _strangers_at(self, host: str) -> int:
        return sum(1 for e in self._entries.values() if e.host == host and self._is_stranger(e))

    def _evict_stranger(self, now: float, idle_s: float) -> bool:
        """Forget the stranger heard longest ago, if silent for idle_s, to make room;
        False if there is none."""
        idle = [
            (e.last_seen, key)
            for key, e in self._entries.items()
            if self._is_stranger(e) and not e.dialing and now - e.last_seen >= idle_s
        ]
        if not idle:
            return False
        del self._entries[min(idle)[1]]
        return True

    def _refill(self, now: float) -> None:
        if self._dial_stamp is not None:
            self._dial_tokens = min(
                limits.NEW_DIALS_BURST,
                self._dial_tokens + (now - self._dial_stamp) * limits.NEW_DIALS_PER_S,
            )
        self._dial_stamp = now

    def _next_token_at(self) -> float | None:
        """Return when the next first dial of a stranger may start (None: one may now)."""
        if self._dial_tokens >= 1.0 or self._dial_stamp is None:
            return None
        return self._dial_stamp + (1.0 - self._dial_tokens) / limits.NEW_DIALS_PER_S

    def _delay(self, failures: int) -> float:
        delay = limits.RECONNECT_BASE_S * 2.0**failures
        delay *= 1 + limits.RECONNECT_JITTER * self._rng.random()
        return min(limits.RECONNECT_CAP_S, delay)

    def _back_off(self, entry: Entry, now: float) -> None:
        entry.next_attempt = now + self._delay(entry.failures)
        entry.failures = min(entry.failures + 1, limits.MAX_BACKOFF_STEPS)

    def _forget_stale(self, now: float) -> None:
        horizon = limits.FORGET_DISCOVERED_S
        stale = [
            key
            for key, e in self._entries.items()
            if not e.manual and not e.connected and not e.dialing and now - e.last_seen > horizon
        ]
        for key in stale:
            del self._entries[key]


def contact_key(peer_id: str, host: str, port: int) -> str:
    """Return the table key of one address of a contact (never a peer id or `--peer` key)."""
    return f"{peer_id}@{host}:{port}"


# --- admission of connections (hardening) -------------------------------------------
#
# Throwaway identities and silent sockets are free for an attacker; peers we know are
# what users care about. So at the peer limit a newcomer may replace a connected peer
# ranked lower than itself (verified > seen before or dialled by hand > stranger), or
# one of its own rank idle for PEER_IDLE_EVICT_S; and inbound handshakes are
# bounded per source address, in number and rate, with a fair share of the global slots.

#: Ranks of peers, higher is kept first.
STRANGER, SEEN, VERIFIED = 1, 2, 3


@dataclass(frozen=True, slots=True)
class Candidate:
    """A connected peer as the peer limit sees it."""

    peer_id: str
    rank: int
    #: When it last sent us a chat or file frame (not sync: sent idle too), or connected.
    last_active: float


def eviction_victim(peers: list[Candidate], new_rank: int, now: float) -> str | None:
    """Return the connected peer to drop for a newcomer of new_rank at the peer limit.

    None means the newcomer is refused. The victim is ranked lower than the newcomer,
    or ranked the same (below VERIFIED) and idle for PEER_IDLE_EVICT_S; the lowest
    ranked first, then the one idle longest. Verified peers are never replaced.
    """
    eligible = [
        p
        for p in peers
        if p.rank < new_rank
        or (p.rank == new_rank < VERIFIED and now - p.last_active >= limits.PEER_IDLE_EVICT_S)
    ]
    if not eligible:
        return None
    return min(eligible, key=lambda p: (p.rank, p.last_active, p.peer_id)).peer_id


class HandshakeGate:
    """Which inbound connections may start a handshake (keys are the caller's connections)."""

    def __init__(self) -> None:
        #: Pending inbound handshakes: key -> source address (insertion order: oldest first).
        self._pending: dict[object, str] = {}
        #: Per source address: (tokens, stamp) of its handshake-rate bucket; oldest first.
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def admit(self, key: object, host: str, now: float) -> tuple[bool, object | None]:
        """Decide on a new inbound connection from host.

        Return (admitted, key of a pending connection to abort to make room, or None).
        """
        tokens, stamp = self._buckets.pop(host, (limits.HANDSHAKES_PER_HOST_BURST, now))
        tokens = min(
            limits.HANDSHAKES_PER_HOST_BURST,
            tokens + (now - stamp) * limits.HANDSHAKES_PER_HOST_PER_S,
        )
        self._buckets[host] = (tokens, now)  # re-inserted: most recently used last
        if len(self._buckets) > limits.MAX_TRACKED_HOSTS:
            del self._buckets[next(iter(self._buckets))]
        if tokens < 1.0:
            return False, None
        counts: dict[str, int] = {}
        for h in self._pending.values():
            counts[h] = counts.get(h, 0) + 1
        mine = counts.get(host, 0)
        if mine >= limits.MAX_PENDING_PER_HOST:
            return False, None
        victim: object | None = None
        if len(self._pending) >= limits.MAX_PENDING_HANDSHAKES:
            # Full: take a slot from the source holding the most, if it holds more than
            # this one would (a fair share), its oldest first; else refuse.
            greedy = max(counts, key=lambda h: counts[h])
            if counts[greedy] <= mine + 1:
                return False, None
            victim = next(k for k, h in self._pending.items() if h == greedy)
            del self._pending[victim]
        self._buckets[host] = (tokens - 1.0, now)
        self._pending[key] = host
        return True, victim

    def done(self, key: object) -> None:
        """The connection's handshake ended (completed, failed or aborted)."""
        self._pending.pop(key, None)
