"""Membership: the adapter of the sans-IO presence book (protocol/presence.py).

It keeps our own signed record up to date (nick, rooms, addresses), sends it to
each new connection, sends a peer the records of the rooms it announces, takes
peers' `pres` frames, carries out the book's actions (forward to the other
connections, disconnect a forger or a flooder, save our seq) and arms one timer
for the book's `get_timer()` (refresh ours, expire others). Times are Unix
seconds (records carry wall-clock times, so the loop's clock would not do).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.protocol import messages as m
from chinwag.protocol import presence as pr
from chinwag.protocol.presence import PresenceBook, PresenceRecord, RoomRef, parse_addr

if TYPE_CHECKING:
    from chinwag.net.link import Link, Links

log = logging.getLogger(__name__)


class Members:
    """Our presence record and everyone else's: sending, forwarding, expiring."""

    def __init__(
        self,
        identity: Identity,
        manager: Links,
        last_seq: int,
        save_seq: Callable[[int], None],
        keep: Callable[[str], bool],
        changed: Callable[[frozenset[str]], None] | None = None,
        clock: Callable[[], float] = time.time,
        invalid: Callable[[str], None] | None = None,
        own_keys: Callable[[], m.PublishedKeys | None] = lambda: None,
        learn_keys: Callable[[PresenceRecord], None] | None = None,
    ) -> None:
        """`invalid(peer_id)`: the peer sent forged, malformed or flooding presence (it is
        disconnected; with the mesh it also loses score); `own_keys()`: the Olm keys our
        record carries (asked at each signing); `learn_keys(record)`: a taken record of
        another author carries Olm keys (docs/protocol.md 23.1)."""
        self.book = PresenceBook(identity, last_seq=last_seq, keep=keep)
        self.manager = manager
        self._save_seq = save_seq
        self._changed = changed or (lambda _authors: None)
        self._invalid = invalid or (lambda _peer: None)
        self._clock = clock
        self._own_keys = own_keys
        self._learn_keys = learn_keys
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    # --- our record ----------------------------------------------------------------

    def set_own(self, nick: str, rooms: Iterable[RoomRef], addrs: Iterable[str]) -> None:
        """Say what our record holds (sent now, or within PRESENCE_OWN_MIN_GAP_S)."""
        if self._closed:
            return
        self._run(self.book.set_own(nick, rooms, addrs, self._clock(), self._own_keys()), None)

    def keys_changed(self) -> None:
        """Our Olm keys changed (a new fallback key): our record is re-signed soon."""
        if not self._closed:
            self._run(self.book.set_keys(self._own_keys(), self._clock()), None)

    def leave(self) -> None:
        """Send our signed leave to every peer (before the goodbyes) and stop the timer."""
        if not self._closed:
            self._run(self.book.leave(self._clock()), None)
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- peers ----------------------------------------------------------------------

    def peer_joined(self, conn: Link) -> None:
        """A new connection: send it our record (the others follow its rooms frame)."""
        own = self.book.own
        if own is not None:
            conn.send_frame(m.Presence(recs=[own.signed]))

    def rooms_announced(
        self, conn: Link, before: Mapping[str, bytes], now_in: Mapping[str, bytes]
    ) -> None:
        """A peer announced rooms: send it what we hold of those it newly shares with us."""
        new = {w: k for w, k in now_in.items() if before.get(w) != k}
        if not new:
            return
        records = [r for r in self.book.batch_for(new, self._clock()) if r.author != conn.peer_id]
        for frame in pr.frames(records):
            conn.send_frame(frame)

    def peer_left(self, peer_id: str) -> None:
        self.book.peer_closed(peer_id)

    def frame(self, conn: Link, frame: m.Presence) -> None:
        """Records from a peer."""
        if self._closed:
            return
        self._run(self.book.received(conn.peer_id or "", frame, self._clock()), conn)

    # --- queries --------------------------------------------------------------------

    def get(self, peer_id: str) -> PresenceRecord | None:
        return self.book.get(peer_id)

    def nicks(self) -> dict[str, str]:
        """Return peer id -> nick of every member whose record we hold."""
        return {r.author: r.nick for r in self.book.records()}

    def online(self, peer_id: str) -> bool:
        record = self.book.get(peer_id)
        return record is not None and record.fresh(self._clock())

    def addresses(self, peer_id: str) -> list[tuple[str, int]]:
        """Return where peer_id's record says it listens."""
        record = self.book.get(peer_id)
        if record is None or record.gone:
            return []
        return [a for a in (parse_addr(s) for s in record.addrs) if a is not None]

    # --- actions and the timer ------------------------------------------------------

    def _run(self, actions: list[pr.Action], conn: Link | None) -> None:
        forwards: dict[frozenset[str], list[PresenceRecord]] = {}
        changed: set[str] = set()
        for action in actions:
            if isinstance(action, pr.Forward):
                forwards.setdefault(action.exclude, []).append(action.record)
                record = action.record
                learn = self._learn_keys
                if learn is not None and record.okeys is not None and record.author != self.book.me:
                    learn(record)
            elif isinstance(action, pr.Disconnect):
                self._invalid(action.peer)
                target = conn if conn is not None and conn.peer_id == action.peer else None
                target = target or self.manager.peers.get(action.peer)
                if target is not None:
                    target.close(action.reason)
            elif isinstance(action, pr.SaveSeq):
                try:
                    self._save_seq(action.seq)
                except OSError as exc:  # a restart may then sign below it: peers drop those
                    log.warning("cannot save the presence seq: %s", exc)
            elif isinstance(action, pr.Changed):
                changed |= action.authors
        for exclude, records in forwards.items():
            for frame in pr.frames(records):
                self.manager.broadcast(m.encode(frame), exclude)
        if changed:
            self._changed(frozenset(changed))
        self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed:
            return
        due = self.book.get_timer()
        if due is not None:
            # Not sooner than needed, yet never a busy loop on a clock that lags.
            delay = max(due - self._clock(), limits.PRESENCE_TIMER_MIN_S)
            self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._closed:
            now = self._clock()
            # Our fallback key may have aged out since (it rotates when asked for): the
            # refresh carries the current one.
            actions = self.book.set_keys(self._own_keys(), now)
            self._run(actions + self.book.handle_timer(now), None)
