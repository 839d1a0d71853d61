"""History sync bookkeeping: per room and author, what we hold and what others lack.

Theory of operation
-------------------
Every author numbers its messages per room 1, 2, 3, ... For each (room,
author) we keep `base` (the lowest seq we expect to hold: 1, or a floor a
peer announced because it offers no older history), `have` (every seq in
base..have is held) and `above` (seqs held beyond have+1, i.e. across a gap).

A peer's knowledge of a room is its vector {author: have}. Comparing vectors
tells each side exactly what the other lacks; the side that holds more pushes
it (anti-entropy), oldest first, never more than HISTORY_OFFER messages of one
author. If that bound (or our own base) means we cannot offer everything the
peer lacks, the push starts with a Floor so the peer stops waiting for older
messages. A hole between `have` and the lowest seq in `above` is a gap; the
node asks peers for it with a Want.

A Floor from a peer is only that peer's claim. It takes effect only at a seq
of that author we actually hold (at once if we hold it, else when it arrives,
as the floor's push brings it next), so a peer can never make us believe we
hold more of another author than we have seen, nor write off messages above
the last one we hold. Until then the claim is remembered per sending peer.

An author we hold nothing contiguous of (only seqs across a hole) is an
orphan: such authors are admitted up to a bound per room and per sending peer,
so fresh keys with made-up seqs cannot fill us with gaps no one can repair.

Pure bookkeeping: no I/O. The node stores messages, then tells this object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chinwag import limits


@dataclass(slots=True)
class AuthorState:
    """What we hold of one author in one room."""

    base: int = 1
    have: int = 0
    above: set[int] = field(default_factory=set)
    #: Floors peers announced that we do not hold a message at yet: source -> seq.
    claims: dict[str, int] = field(default_factory=dict)

    def absorb(self) -> None:
        """Advance `have` over held seqs that became contiguous."""
        while self.have + 1 in self.above:
            self.have += 1
            self.above.discard(self.have)

    def gap(self) -> tuple[int, int] | None:
        """Return the first missing range (lo, hi) below held messages, or None."""
        if not self.above:
            return None
        return (self.have + 1, min(self.above) - 1)


@dataclass(frozen=True, slots=True)
class PushRange:
    """Send seqs lo..hi of author; first announce `floor` if it is not None."""

    author: str
    lo: int
    hi: int
    floor: int | None = None
    #: Send even what this connection already carried (the peer asked for it).
    resend: bool = False


class SyncState:
    """Vectors, gaps and push plans for every room we hold."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, AuthorState]] = {}
        #: room -> orphan author -> the source (sending peer) that introduced it.
        self.orphans: dict[str, dict[str, str]] = {}
        #: (source, room) -> orphan authors that source introduced and that are still orphans.
        self._orphans_by: dict[tuple[str, str], int] = {}
        #: source -> (room, author) it holds a floor claim for (to forget it when it leaves).
        self._claims_by: dict[str, set[tuple[str, str]]] = {}
        #: room -> our vector, rebuilt after a change (vectors are compared and sent far
        #: more often than they change in a busy room; see `vector`).
        self._vectors: dict[str, dict[str, int]] = {}

    def author(self, room: str, author: str) -> AuthorState:
        """Return the state of author in room, created empty if new."""
        # Looked up first: setdefault would build a throwaway dict and AuthorState per call
        # (twice per message stored, the hot path).
        authors = self.rooms.get(room)
        if authors is None:
            authors = self.rooms[room] = {}
        state = authors.get(author)
        if state is None:
            state = authors[author] = AuthorState()
        return state

    def load(self, room: str, author: str, base: int, seqs: list[int]) -> None:
        """Initialise one author's state from the seqs held (any order)."""
        self._vectors.pop(room, None)
        state = self.author(room, author)
        state.base = max(1, base)
        state.have = state.base - 1
        state.above = {s for s in seqs if s >= state.base}
        state.absorb()

    def load_contiguous(self, room: str, author: str, base: int, top: int) -> None:
        """Initialise one author whose seqs base..top are all held."""
        self._vectors.pop(room, None)
        state = self.author(room, author)
        state.base, state.have, state.above = max(1, base), top, set()

    def holds(self, room: str, author: str, seq: int) -> bool:
        state = self.rooms.get(room, {}).get(author)
        if state is None:
            return False
        return state.base <= seq <= state.have or seq in state.above

    def accept(self, room: str, author: str, seq: int) -> int | None:
        """Record that (room, author, seq) is now stored; return a floor this applied, or None.

        A remembered floor claim at exactly seq takes effect now that we hold seq.
        """
        self._vectors.pop(room, None)
        state = self.author(room, author)
        applied = None
        if state.claims and seq in state.claims.values():
            if seq > state.have + 1:
                self._apply_floor(state, seq)
                applied = seq
            self._drop_claims(room, author, state, seq)
        if seq <= state.have:
            pass
        elif seq == state.have + 1 and seq >= state.base:
            state.have = seq
            state.absorb()
        elif seq >= state.base:
            state.above.add(seq)
            if len(state.above) > limits.MAX_ABOVE_PER_AUTHOR:
                state.above.discard(max(state.above))
        if state.have >= state.base:
            self._unorphan(room, author)
        return applied

    def forget(self, room: str, author: str, seq: int) -> None:
        """Record that (room, author, seq) is no longer stored (a forgery was deleted)."""
        self._vectors.pop(room, None)
        state = self.rooms.get(room, {}).get(author)
        if state is None:
            return
        if seq in state.above:
            state.above.discard(seq)
        elif state.base <= seq <= state.have:
            # What lay above the deleted seq is now held across a hole (bounded like any above).
            room_left = max(0, limits.MAX_ABOVE_PER_AUTHOR - len(state.above))
            top = min(state.have, seq + room_left)
            state.above.update(range(seq + 1, top + 1))
            state.have = seq - 1

    def admits(self, room: str, author: str, seq: int, source: str) -> bool:
        """Return whether a message (room, author, seq) from source may be stored.

        Refused: a new author once the room tracks MAX_AUTHORS_PER_ROOM, and a
        message that would make its author a new orphan (nothing contiguous held)
        beyond MAX_ORPHAN_AUTHORS_PER_ROOM, or beyond MAX_ORPHAN_AUTHORS_PER_PEER
        introduced by this source. Admitting a new orphan records it.
        """
        if author in self.orphans.get(room, {}):
            return True  # admitted as an orphan already
        authors = self.rooms.get(room, {})
        state = authors.get(author)
        if state is None and len(authors) >= limits.MAX_AUTHORS_PER_ROOM:
            return False
        if state is not None and state.have >= state.base:
            return True  # known, and not a new orphan
        base = 1 if state is None else state.base
        if seq <= base or (state is not None and seq in state.claims.values()):
            return True  # contiguous from the base (or where a floor takes effect)
        orphans = self.orphans.setdefault(room, {})
        if len(orphans) >= limits.MAX_ORPHAN_AUTHORS_PER_ROOM:
            return False
        if self._orphans_by.get((source, room), 0) >= limits.MAX_ORPHAN_AUTHORS_PER_PEER:
            return False
        orphans[author] = source
        self._orphans_by[(source, room)] = self._orphans_by.get((source, room), 0) + 1
        return True

    def is_orphan(self, room: str, author: str) -> bool:
        return author in self.orphans.get(room, {})

    def _unorphan(self, room: str, author: str) -> None:
        orphans = self.orphans.get(room)
        if orphans is None or author not in orphans:
            return
        source = orphans.pop(author)
        left = self._orphans_by.get((source, room), 1) - 1
        if left > 0:
            self._orphans_by[(source, room)] = left
        else:
            self._orphans_by.pop((source, room), None)

    def set_floor(self, room: str, author: str, floor: int) -> bool:
        """Accept that history below floor is not offered; return True if `have` moved.

        Trusted input only (our own store); a peer's floor goes through offer_floor.
        """
        self._vectors.pop(room, None)
        state = self.author(room, author)
        if floor <= state.have + 1:
            return False
        self._apply_floor(state, floor)
        if state.have >= state.base:
            self._unorphan(room, author)
        return True

    def offer_floor(self, room: str, author: str, floor: int, source: str) -> int | None:
        """Take a peer's floor: apply it if we hold seq `floor`, else remember it.

        Return the floor applied (to be saved), or None. A floor never makes us
        claim a seq we have not stored: it takes effect only at a held seq.
        """
        state = self.author(room, author)
        if floor <= state.have + 1:
            return None
        if floor in state.above:
            self._vectors.pop(room, None)
            self._apply_floor(state, floor)
            self._drop_claims(room, author, state, floor)
            self._unorphan(room, author)
            return floor
        # One claim per source: a peer can only replace its own claim.
        state.claims[source] = floor
        self._claims_by.setdefault(source, set()).add((room, author))
        return None

    def forget_source(self, source: str) -> None:
        """Drop the floor claims of a source (a peer that left)."""
        for room, author in self._claims_by.pop(source, set()):
            state = self.rooms.get(room, {}).get(author)
            if state is not None:
                state.claims.pop(source, None)

    def _apply_floor(self, state: AuthorState, floor: int) -> None:
        # Everything below floor is written off; what we hold from floor on counts.
        state.base = floor
        state.have = floor - 1
        state.above = {s for s in state.above if s >= floor}
        state.absorb()

    def _drop_claims(self, room: str, author: str, state: AuthorState, upto: int) -> None:
        """Forget claims at or below upto (they can no longer move anything)."""
        for source, seq in list(state.claims.items()):
            if seq <= upto:
                del state.claims[source]
                sources = self._claims_by.get(source)
                if sources is not None:
                    sources.discard((room, author))

    def vector(self, room: str) -> dict[str, int]:
        """Return our vector for room (shared until the next change: callers must not modify it)."""
        vector = self._vectors.get(room)
        if vector is None:
            vector = {a: s.have for a, s in self.rooms.get(room, {}).items() if s.have > 0}
            self._vectors[room] = vector
        return vector

    def push_plan(self, room: str, peer_have: dict[str, int]) -> list[PushRange]:
        """Return what to send a peer whose vector for room is peer_have."""
        states = self.rooms.get(room)
        if not states:
            return []
        # Only authors whose entry differs from the peer's can be ahead: a set difference (in C)
        # finds them, as a busy room's vectors come often and differ in an entry or two.
        ahead = self.vector(room).items() - peer_have.items()
        authors = [a for a, _ in ahead] if len(ahead) <= 1 else list(states)  # room order
        plan = []
        for author in authors:
            state = states[author]
            theirs = peer_have.get(author, 0)
            if state.have <= theirs:
                continue
            offer_from = max(state.base, state.have - limits.HISTORY_OFFER + 1)
            lo = max(theirs + 1, offer_from)
            floor = offer_from if offer_from > theirs + 1 else None
            plan.append(PushRange(author, lo, state.have, floor))
        return plan

    def want_plan(self, room: str, author: str, lo: int, hi: int) -> PushRange | None:
        """Return what to send for a Want, clipped to what we offer, or None."""
        state = self.rooms.get(room, {}).get(author)
        if state is None:
            return None
        top = max([state.have, *state.above]) if state.above else state.have
        offer_from = max(state.base, top - limits.HISTORY_OFFER + 1)
        lo2 = max(lo, offer_from)
        hi2 = min(hi, top, lo2 + limits.MAX_WANT_RANGE - 1)
        floor = offer_from if lo < offer_from else None
        if hi2 < lo2:
            # Nothing to send; still tell the asker not to wait for what we do not offer.
            return None if floor is None else PushRange(author, floor, floor - 1, floor)
        return PushRange(author, lo2, hi2, floor, resend=True)
