"""Signed presence records and the book that holds them: the members of a room, also far ones.

Theory of operation
-------------------
Every node signs a small record about itself with its identity key: its peer id
(the key), nick, rooms (public wire names; private rooms as wire name plus key
check value, as in the `rooms` frame), the addresses it listens on, `seq` (its
clock in ms, strictly increasing, kept across restarts), `expires` (Unix s, at
most seq / 1000 + PRESENCE_TTL_S) and `gone` (a signed leave). Records spread
over the connections: a node forwards a record it had not held to its other
connections, and dedups by (author, seq), so a record crosses each link at most
once per direction.

`PresenceBook` holds at most one record per author, the newest:

- a record whose seq is not above the held one is dropped (duplicates and
  replays): a replayed old record cannot bring back a peer that left, as its
  signed `gone` (or any newer record) is held until it expires itself, and
  every older record expires no later (expires <= seq / 1000 + TTL);
- expired records, and records expiring beyond our clock + TTL + skew, are dropped;
- the signature is checked once, only for a record that would be taken; a
  forged one disconnects the sender (`bad_signature`), a malformed one too
  (`malformed_frame`);
- bounds: records in all, per room, per record (rooms, addresses, bytes), per
  author in time (an author cannot make honest peers forward a flood), per
  sending peer in time (beyond it the peer is cut with `presence_flood`).

Pure: no clock, sockets or randomness; `now` (Unix seconds) comes in, typed
actions come out (`Forward`, `Disconnect`, `SaveSeq`, `Changed`). The adapter
(chinwag/members.py, or a simulator) sends, saves and re-arms one timer from
`get_timer()`, calling `handle_timer(now)` when it fires.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from chinwag import limits
from chinwag.crypto.identity import BadIdentity, Identity, peer_id_from_public, verify
from chinwag.errors import RemoteProtocolError
from chinwag.logonce import WarnOnce
from chinwag.protocol import messages as m
from chinwag.protocol.names import is_valid_name
from chinwag.protocol.reasons import Reason
from chinwag.protocol.replica import Bucket

log = logging.getLogger(__name__)

#: A room as a record names it: (wire name, key check value; b"" for a public room).
RoomRef = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class PresenceRecord:
    """A decoded presence record (its signature checked or not: see `PresenceBook`)."""

    author: str
    nick: str
    seq: int
    expires: int
    gone: bool
    rooms: tuple[RoomRef, ...]
    addrs: tuple[str, ...]
    #: The record as it travels (forwarded as is: only its author can sign it).
    signed: m.SignedPresence
    #: The author's Olm keys as it signed them (their own signature not checked here).
    okeys: m.PublishedKeys | None = None

    @property
    def signed_at(self) -> float:
        """The author's clock (Unix seconds) when it signed the record."""
        return self.seq / 1000

    def in_room(self, wire: str, kcv: bytes = b"") -> bool:
        """Return whether the record names room wire (a private room: with this key check)."""
        return (wire, kcv) in self.rooms

    def fresh(self, now: float) -> bool:
        """Return whether the record says its author is online at now."""
        return not self.gone and self.expires > now


def make_record(
    identity: Identity,
    nick: str,
    seq: int,
    expires: int,
    gone: bool,
    rooms: Iterable[RoomRef],
    addrs: Iterable[str],
    okeys: m.PublishedKeys | None = None,
) -> PresenceRecord:
    """Build and sign a record by identity (inputs must be valid and within the bounds)."""
    body = m.PresenceBody(
        author=identity.public,
        nick=nick,
        seq=seq,
        expires=expires,
        gone=gone,
        rooms=[m.RoomAnnounce(room=w, kcv=k) for w, k in rooms],
        addrs=list(addrs),
        okeys=okeys,
    )
    raw = m.encode_presence(body)
    signed = m.SignedPresence(body=raw, sig=identity.sign(m.PRESENCE_CONTEXT + raw))
    return _record(body, signed)


def open_record(signed: m.SignedPresence) -> PresenceRecord:
    """Decode and check a received record, not its signature; RemoteProtocolError if malformed."""
    body = m.decode_presence(signed.body)
    if not is_valid_name(body.nick):
        raise RemoteProtocolError("invalid nick in presence", Reason.MALFORMED_FRAME)
    for room in body.rooms:
        if not is_valid_name(room.room) or room.room != room.room.lower():
            raise RemoteProtocolError("invalid room in presence", Reason.MALFORMED_FRAME)
    for addr in body.addrs:
        if parse_addr(addr) is None:
            raise RemoteProtocolError("invalid address in presence", Reason.MALFORMED_FRAME)
    # The same on every peer (no clock): expiry is tied to the author's own seq, so a
    # record older than a held leave never outlives it.
    if body.expires * 1000 > body.seq + limits.PRESENCE_TTL_S * 1000:
        raise RemoteProtocolError("presence expires too late", Reason.MALFORMED_FRAME)
    return _record(body, signed)


def verify_record(record: PresenceRecord) -> bool:
    """Return whether the record's signature is its author's."""
    try:
        public = m.decode_presence(record.signed.body).author
    except RemoteProtocolError:
        return False
    return verify(public, m.PRESENCE_CONTEXT + record.signed.body, record.signed.sig)


def parse_addr(addr: str) -> tuple[str, int] | None:
    """Return (host, port) of a "host:port" address, or None if it is not one."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or len(port) > 5:
        return None
    number = int(port)
    if not 0 < number < 65536 or any(c.isspace() for c in host):
        return None
    return host.strip("[]"), number


def _record(body: m.PresenceBody, signed: m.SignedPresence) -> PresenceRecord:
    try:
        author = peer_id_from_public(body.author)
    except BadIdentity as exc:  # pragma: no cover - Key32 has 32 bytes
        raise RemoteProtocolError(str(exc), Reason.MALFORMED_FRAME) from None
    return PresenceRecord(
        author=author,
        nick=body.nick,
        seq=body.seq,
        expires=body.expires,
        gone=body.gone,
        rooms=tuple((r.room, r.kcv) for r in body.rooms),
        addrs=tuple(body.addrs),
        signed=signed,
        okeys=body.okeys,
    )


# --- actions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forward:
    """Send record to every connected peer not in exclude."""

    record: PresenceRecord
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the connection to peer with a reason code."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class SaveSeq:
    """Persist the seq of our newest record (a restart must sign above it)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Changed:
    """The records of these authors changed (came, changed, left or expired)."""

    authors: frozenset[str]


Action = Forward | Disconnect | SaveSeq | Changed


def frames(records: Iterable[PresenceRecord]) -> list[m.Presence]:
    """Return records packed into `pres` frames of at most PRESENCE_PER_FRAME records."""
    signed = [r.signed for r in records]
    step = limits.PRESENCE_PER_FRAME
    return [m.Presence(recs=signed[i : i + step]) for i in range(0, len(signed), step)]


@dataclass(slots=True)
class _Own:
    """What our own record should say (published at most every PRESENCE_OWN_MIN_GAP_S)."""

    nick: str
    rooms: tuple[RoomRef, ...]
    addrs: tuple[str, ...]
    okeys: m.PublishedKeys | None = None


class PresenceBook:
    """The newest record of each author, bounded; our own record and its refresh."""

    def __init__(
        self,
        identity: Identity,
        *,
        last_seq: int = 0,
        keep: Callable[[str], bool] | None = None,
        max_records: int = limits.PRESENCE_MAX_RECORDS,
        max_per_room: int = limits.PRESENCE_MAX_PER_ROOM,
    ) -> None:
        """`last_seq`: the seq of our newest record of an earlier run; `keep(peer_id)`: a
        peer whose record a full room takes in place of a stranger's (connected, known)."""
        self.identity = identity
        self.me = identity.peer_id
        self.last_seq = last_seq
        self._keep = keep or (lambda _peer: False)
        self.max_records = max_records
        self.max_per_room = max_per_room
        self._records: dict[str, PresenceRecord] = {}
        self._by_room: dict[str, set[str]] = {}
        #: (expires, author, seq): when held records lapse (stale entries skipped).
        self._expiry: list[tuple[int, str, int]] = []
        self._author_budget: dict[str, Bucket] = {}
        self._peer_budget: dict[str, Bucket] = {}
        self._warn = WarnOnce(log)
        self.own: PresenceRecord | None = None
        self._want: _Own | None = None
        #: When our record must next be (re-)signed; None: nothing to publish.
        self._own_due: float | None = None
        #: Our clock when we signed our record last (its seq may be ahead: an earlier run's).
        self._signed_now = 0.0
        self._left = False

    # --- queries --------------------------------------------------------------------

    def get(self, author: str) -> PresenceRecord | None:
        """Return the newest record held of author (ours excluded), expired or not."""
        return self._records.get(author)

    def records(self) -> list[PresenceRecord]:
        """Return every record held (ours excluded)."""
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def room_count(self, wire: str) -> int:
        """Return how many records held name room wire."""
        return len(self._by_room.get(wire, ()))

    def members(self, wire: str, kcv: bytes = b"") -> list[PresenceRecord]:
        """Return the records naming room wire (with this key check value), by author."""
        out = [self._records[a] for a in self._by_room.get(wire, ())]
        return sorted((r for r in out if r.in_room(wire, kcv)), key=lambda r: r.author)

    # --- our own record ---------------------------------------------------------------

    def set_own(
        self,
        nick: str,
        rooms: Iterable[RoomRef],
        addrs: Iterable[str],
        now: float,
        okeys: m.PublishedKeys | None = None,
    ) -> list[Action]:
        """Say what our record holds: signed now, or at the end of the minimum gap."""
        want = _Own(
            nick,
            tuple(sorted(set(rooms)))[: limits.PRESENCE_MAX_ROOMS],
            tuple(dict.fromkeys(addrs))[: limits.PRESENCE_MAX_ADDRS],
            okeys,
        )
        return self._set_want(want, now)

    def set_keys(self, okeys: m.PublishedKeys | None, now: float) -> list[Action]:
        """Say which Olm keys our record carries (a new fallback key: re-signed soon)."""
        if self._want is None or self._want.okeys == okeys:
            return []
        want = self._want
        return self._set_want(_Own(want.nick, want.rooms, want.addrs, okeys), now)

    def _set_want(self, want: _Own, now: float) -> list[Action]:
        if self._left or want == self._want:
            return []
        self._want = want
        earliest = now if self.own is None else self._signed_now + limits.PRESENCE_OWN_MIN_GAP_S
        self._own_due = (
            max(now, earliest) if self._own_due is None else min(self._own_due, max(now, earliest))
        )
        return self._publish(now) if self._own_due <= now else []

    def leave(self, now: float) -> list[Action]:
        """Sign our leave (`gone`) now, whatever the gap: to be sent before we go."""
        if self._want is None or self._left:
            return []
        self._left = True
        self._own_due = None
        return self._sign(now, gone=True)

    def _publish(self, now: float) -> list[Action]:
        self._own_due = None
        return self._sign(now, gone=False)

    def _sign(self, now: float, gone: bool) -> list[Action]:
        assert self._want is not None
        seq = max(int(now * 1000), self.last_seq + 1)
        self.last_seq = seq
        self._signed_now = now
        want = self._want
        rooms = want.rooms
        while True:
            record = make_record(
                self.identity,
                want.nick,
                seq,
                # If an earlier run's seq is ahead of our clock, peers still take it: they
                # drop records expiring far beyond their own clock.
                min(seq // 1000, int(now)) + limits.PRESENCE_TTL_S,
                gone,
                rooms,
                () if gone else want.addrs,
                # A leave keeps our keys: mail to us while we are away is what they are for.
                want.okeys,
            )
            if len(record.signed.body) <= limits.PRESENCE_MAX_BYTES or not rooms:
                break
            # Long non-ASCII room names: peers would refuse the record as malformed (and
            # cut us); the last rooms are left out instead.
            self._warn("own_too_big", "presence: our record is too big: listing fewer rooms")
            rooms = rooms[:-1]
        self.own = record
        return [SaveSeq(seq), Forward(record)]

    # --- peers -------------------------------------------------------------------------

    def peer_closed(self, peer: str) -> None:
        """A connection ended: forget its rate budget."""
        self._peer_budget.pop(peer, None)

    def batch_for(self, rooms: Mapping[str, bytes], now: float) -> list[PresenceRecord]:
        """Return the records to send a peer that announced rooms (wire -> kcv): the newest
        PRESENCE_CONNECT_BATCH of those naming one of them (leaves included: they stop replays)."""
        shared = [
            r
            for r in self._records.values()
            if r.expires > now and any(rooms.get(w, None) == k for w, k in r.rooms)
        ]
        shared.sort(key=lambda r: -r.seq)
        return shared[: limits.PRESENCE_CONNECT_BATCH]

    def received(self, peer: str, frame: m.Presence, now: float) -> list[Action]:
        """Records from peer: take the new ones, forward them; cut a forger or a flooder."""
        budget = self._peer_budget.get(peer)
        if budget is None:
            budget = self._peer_budget[peer] = Bucket(
                now, limits.PRESENCE_PEER_BURST, limits.PRESENCE_PEER_PER_S
            )
        out: list[Action] = []
        changed: set[str] = set()
        for signed in frame.recs:
            if not budget.take(now):
                self._warn(("flood", peer), "disconnecting %s: presence flood", peer[:8])
                out.append(Disconnect(peer, Reason.PRESENCE_FLOOD))
                break
            try:
                record = open_record(signed)
            except RemoteProtocolError as exc:
                self._warn(("malformed", peer), "disconnecting %s: %s", peer[:8], exc)
                out.append(Disconnect(peer, exc.code))
                break
            verdict = self._take(peer, record, now)
            if verdict is _FORGED:
                self._warn(("forged", peer), "disconnecting %s: forged presence", peer[:8])
                out.append(Disconnect(peer, Reason.BAD_SIGNATURE))
                break
            if verdict is _TAKEN:
                changed.add(record.author)
                out.append(Forward(record, frozenset({peer})))
        if changed:
            out.append(Changed(frozenset(changed)))
        return out

    def _take(self, peer: str, record: PresenceRecord, now: float) -> object:
        """Hold record if it is new, valid and fits; return _TAKEN, _DROPPED or _FORGED."""
        author = record.author
        if author == self.me:
            if record.seq >= self.last_seq and self._want is not None and not self._left:
                # Ours, newer than we know (an earlier run's state was lost): sign above it.
                self.last_seq = record.seq
                self._own_due = now
            return _DROPPED
        held = self._records.get(author)
        if held is not None and record.seq <= held.seq:
            return _DROPPED  # a duplicate, or a replay of an older record
        if record.expires <= now or record.expires > now + _MAX_AHEAD_S:
            return _DROPPED
        fresh_budget: Bucket | None = None
        if not (record.gone and (held is None or not held.gone)):
            # A leave always passes once (after a non-leave): it must reach everyone.
            budget = self._author_budget.get(author)
            if budget is None:
                # Kept only once the record is taken (below): an author never stored (a
                # forgery, a full book) must not leave an entry behind.
                budget = Bucket(now, limits.PRESENCE_AUTHOR_BURST, limits.PRESENCE_AUTHOR_PER_S)
            if not budget.take(now):
                log.debug("dropping a presence record of %s: over its rate", author[:8])
                return _DROPPED
            fresh_budget = budget
        if not verify_record(record):
            return _FORGED
        if not self._make_room(peer, record, held, now):
            if held is None:
                self._warn(
                    "presence_full", "presence book full: dropping records of new authors (once)"
                )
                return _DROPPED
            # Newest wins all the same (a leave must replace what it ends); the record is
            # just not listed in the rooms it newly names that are full.
            log.debug("presence: %s not listed in a full room", author[:8])
        self._store(record)
        if fresh_budget is not None:
            self._author_budget[author] = fresh_budget
        return _TAKEN

    def _make_room(
        self, peer: str, record: PresenceRecord, held: PresenceRecord | None, now: float
    ) -> bool:
        """Make room for record (held: the author's record it replaces); False if it may not
        take a place (a new author), or not in every room it newly names (a held one)."""
        self._expire(now)
        rooms = {w for w, _k in record.rooms} - {w for w, _k in (held.rooms if held else ())}

        def full() -> list[str]:
            return [w for w in rooms if len(self._by_room.get(w, ())) >= self.max_per_room]

        def over() -> bool:
            return held is None and len(self._records) >= self.max_records

        full_rooms = full()
        if not over() and not full_rooms:
            return True
        if not (self._keep(record.author) or peer == record.author):
            return False
        # A connected or known peer takes a stranger's place (the one lapsing first).
        pool = set(self._records) if over() else set()
        for wire in full_rooms:
            pool |= self._by_room[wire]
        while full_rooms or over():
            victims = [
                self._records[a]
                for a in pool
                if a in self._records and not self._keep(a) and a not in (peer, record.author)
            ]
            if full_rooms:
                victims = [v for v in victims if any(w in full_rooms for w, _k in v.rooms)]
            if not victims:
                return False
            victim = min(victims, key=lambda r: (r.expires, r.author))
            self._drop(victim.author)
            full_rooms = full()
        return True

    def _store(self, record: PresenceRecord) -> None:
        held = self._records.get(record.author)
        if held is not None:
            self._unindex(held)
        self._records[record.author] = record
        for wire, _kcv in record.rooms:
            authors = self._by_room.setdefault(wire, set())
            if len(authors) < self.max_per_room:  # else: not listed there (see _take)
                authors.add(record.author)
        heapq.heappush(self._expiry, (record.expires, record.author, record.seq))
        if len(self._expiry) > 4 * self.max_records:
            self._expiry = [
                (r.expires, r.author, r.seq) for r in self._records.values()
            ]  # drop stale entries now and then: the heap stays bounded
            heapq.heapify(self._expiry)

    def _unindex(self, record: PresenceRecord) -> None:
        for wire, _kcv in record.rooms:
            authors = self._by_room.get(wire)
            if authors is not None:
                authors.discard(record.author)
                if not authors:
                    del self._by_room[wire]

    def _drop(self, author: str) -> None:
        record = self._records.pop(author, None)
        if record is not None:
            self._unindex(record)
        self._author_budget.pop(author, None)

    def _expire(self, now: float) -> set[str]:
        """Drop the records that lapsed by now; return their authors."""
        gone: set[str] = set()
        while self._expiry and self._expiry[0][0] <= now:
            _expires, author, seq = heapq.heappop(self._expiry)
            held = self._records.get(author)
            if held is not None and held.seq == seq:
                self._drop(author)
                gone.add(author)
        return gone

    # --- timer -------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """Return when `handle_timer` is next due (a record lapses, ours is due), or None."""
        while self._expiry:
            _expires, author, seq = self._expiry[0]
            held = self._records.get(author)
            if held is not None and held.seq == seq:
                break
            heapq.heappop(self._expiry)  # stale: replaced or dropped
        due = [float(self._expiry[0][0])] if self._expiry else []
        if self._own_due is not None:
            due.append(self._own_due)
        elif self.own is not None and not self._left:
            due.append(self._signed_now + limits.PRESENCE_REFRESH_S)
        return min(due) if due else None

    def handle_timer(self, now: float) -> list[Action]:
        """Drop lapsed records; sign our record if it changed or is due for a refresh."""
        out: list[Action] = []
        lapsed = self._expire(now)
        if lapsed:
            out.append(Changed(frozenset(lapsed)))
        if self._left or self._want is None:
            return out
        refresh = self.own is not None and now >= self._signed_now + limits.PRESENCE_REFRESH_S
        if (self._own_due is not None and now >= self._own_due) or refresh:
            out += self._publish(now)
        return out


_TAKEN, _DROPPED, _FORGED = object(), object(), object()
#: Seconds a record's expiry may lie ahead of our clock.
_MAX_AHEAD_S = limits.PRESENCE_TTL_S + limits.PRESENCE_MAX_SKEW_S
