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

    def author(self, room: str, author: str) -> AuthorState:
        return self.rooms.setdefault(room, {}).setdefault(author, AuthorState())

    def load(self, room: str, author: str, base: int, seqs: list[int]) -> None:
        """Initialise one author's state from the seqs held (any order)."""
        state = self.author(room, author)
        state.base = max(1, base)
        state.have = state.base - 1
        state.above = {s for s in seqs if s >= state.base}
        state.absorb()

    def load_contiguous(self, room: str, author: str, base: int, top: int) -> None:
        """Initialise one author whose seqs base..top are all held."""
        state = self.author(room, author)
        state.base, state.have, state.above = max(1, base), top, set()

    def holds(self, room: str, author: str, seq: int) -> bool:
        state = self.rooms.get(room, {}).get(author)
        if state is None:
            return False
        return state.base <= seq <= state.have or seq in state.above

    def accept(self, room: str, author: str, seq: int) -> None:
        """Record that (room, author, seq) is now stored."""
        state = self.author(room, author)
        if seq <= state.have:
            return
        if seq == state.have + 1 and seq >= state.base:
            state.have = seq
            state.absorb()
        elif seq >= state.base:
            state.above.add(seq)
            if len(state.above) > limits.MAX_ABOVE_PER_AUTHOR:
                state.above.discard(max(state.above))

    def set_floor(self, room: str, author: str, floor: int) -> bool:
        """Accept that history below floor is not offered; return True if `have` moved."""
        state = self.author(room, author)
        if floor <= state.have + 1:
            return False
        # Everything below floor is written off; what we hold from floor on counts.
        state.base = floor
        state.have = floor - 1
        state.above = {s for s in state.above if s >= floor}
        state.absorb()
        return True

    def vector(self, room: str) -> dict[str, int]:
        """Return our vector for room."""
        return {a: s.have for a, s in self.rooms.get(room, {}).items() if s.have > 0}

    def push_plan(self, room: str, peer_have: dict[str, int]) -> list[PushRange]:
        """Return what to send a peer whose vector for room is peer_have."""
        plan = []
        for author, state in self.rooms.get(room, {}).items():
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
