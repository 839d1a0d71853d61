"""The node's adapter over protocol/admit.py: admission to private rooms by PAKE.

It starts a run with every connected peer that announces a private room we hold (when its
`rooms` frame comes, and when we join), carries `admit` frames both ways, arms the one
timer of the runs, tells the node who was admitted (`admitted(wire, peer_id)`: sync,
files, presence and room keys follow) and lets a join wait for the verdict of the peers
announcing the room (docs/rooms.md "Joining a private room").
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from chinwag import events as ev
from chinwag import limits
from chinwag.logonce import WarnOnce
from chinwag.net.link import Link
from chinwag.protocol import admit as ad
from chinwag.protocol import messages as m
from chinwag.rooms import PRIVATE, RoomBook

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    """What the peers announcing a room said of our passphrase, while a join waits."""

    asked: set[str]
    admitted: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    unanswered: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def settled(self) -> bool:
        """Admitted by one peer, or every peer asked has answered (or timed out)."""
        return bool(self.admitted) or not (self.asked - self.refused - self.unanswered)


class Admissions:
    """Runs the admission state machine of a node over its connections."""

    def __init__(
        self,
        book: RoomBook,
        peers: Callable[[], Mapping[str, Link]],
        channel: Callable[[str], bytes | None],
        admitted: Callable[[str, str], None],
        emit: Callable[[ev.NodeEvent], None],
    ) -> None:
        self.book = book
        self.machine = book.admission
        self._peers = peers
        #: The Noise handshake hash of the connection to a peer (the channel binding).
        self._channel = channel
        self._admitted = admitted
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        #: The sweep that starts runs again with announcers not admitted (ADMIT_RETRY_S).
        self._sweep: asyncio.TimerHandle | None = None
        self._waits: dict[str, Verdict] = {}
        self._alerted = WarnOnce(log)
        self._closed = False

    # --- inputs ----------------------------------------------------------------

    def announced(self, peer_id: str) -> None:
        """peer_id sent its rooms: start a run for each private room of ours it announces."""
        for wire in self.book.to_admit(peer_id):
            self._start(peer_id, wire)
        self._rearm()

    def joined(self, wire: str) -> Verdict | None:
        """We joined private room wire: start runs with the peers announcing it; return the
        verdict to wait for (None if nobody announces it: we are alone, the room is ours)."""
        asked = {p for p in self._peers() if wire in self.book.announced.get(p, {})}
        if not asked:
            return None
        verdict = self._waits[wire] = Verdict(asked)
        for peer_id in asked:
            self._start(peer_id, wire)
        self._rearm()
        return verdict

    def frame(self, conn: Link, frame: m.Admit) -> None:
        """An `admit` frame from a connected peer."""
        peer_id = conn.peer_id or ""
        room = self.book.joined.get(frame.room)
        key = room.key if room is not None and room.kind == PRIVATE else None
        hh = self._channel(peer_id)
        if hh is None:
            return
        actions = self.machine.received(
            peer_id, frame, key, hh, os.urandom(ad.ENTROPY_BYTES), self._loop.time()
        )
        self._carry(actions)
        self._rearm()

    def peer_gone(self, peer_id: str) -> None:
        """The connection to peer_id closed: a join waiting for it stops waiting for it."""
        for verdict in self._waits.values():
            if peer_id in verdict.asked and peer_id not in verdict.refused:
                verdict.unanswered.add(peer_id)
                verdict.changed.set()

    def done(self, wire: str) -> None:
        """The join of wire stopped waiting."""
        self._waits.pop(wire, None)

    def close(self) -> None:
        self._closed = True
        for handle in (self._timer, self._sweep):
            if handle is not None:
                handle.cancel()
        self._timer = self._sweep = None

    # --- internals ---------------------------------------------------------------

    def _start(self, peer_id: str, wire: str) -> None:
        room = self.book.joined.get(wire)
        hh = self._channel(peer_id)
        if room is None or room.key is None or hh is None:
            return
        now = self._loop.time()
        actions = self.machine.start(peer_id, wire, room.key, hh, os.urandom(ad.ENTROPY_BYTES), now)
        verdict = self._waits.get(wire)
        if not actions and verdict is not None and not self.machine.running(peer_id, wire):
            # No run (back-off, or the room's guesses or the runs with strangers over their
            # bounds): no answer.
            if not self.machine.is_admitted(peer_id, wire):
                verdict.unanswered.add(peer_id)
            else:
                verdict.admitted.add(peer_id)
            verdict.changed.set()
        self._carry(actions)

    def _carry(self, actions: list[ad.Action]) -> None:
        peers = self._peers()
        for action in actions:
            if isinstance(action, ad.Send):
                link = peers.get(action.peer)
                if link is not None:
                    link.send_frame(action.frame)
            elif isinstance(action, ad.Disconnect):
                link = peers.get(action.peer)
                if link is not None:
                    link.close(action.reason)
            elif isinstance(action, ad.Admitted):
                log.info("%s proved the passphrase of %s", action.peer[:8], action.room)
                self._note(action.room, action.peer, "admitted")
                self._admitted(action.room, action.peer)
            elif isinstance(action, ad.Refused):
                self._note(action.room, action.peer, "refused")
                if self._alerted(
                    (action.peer, action.room),
                    "peer %s did not accept our passphrase of %s",
                    action.peer[:8],
                    action.room,
                ):
                    name = self.book.display(action.room)
                    self._emit(
                        ev.Alert(
                            message=f"peer {action.peer[:8]} announces private room {name!r} "
                            "but did not accept our passphrase (or does not know it): "
                            "you cannot read each other",
                            peer_id=action.peer,
                        )
                    )
            else:
                self._note(action.room, action.peer, "unanswered")

    def _note(self, wire: str, peer_id: str, outcome: str) -> None:
        verdict = self._waits.get(wire)
        if verdict is None:
            return
        getattr(verdict, outcome).add(peer_id)
        verdict.changed.set()

    def _pending(self) -> bool:
        """Return whether a connected peer announces a private room of ours unadmitted."""
        return any(self.book.to_admit(p) for p in self._peers())

    def _on_sweep(self) -> None:
        self._sweep = None
        for peer_id in list(self._peers()):
            for wire in self.book.to_admit(peer_id):
                if not self.machine.running(peer_id, wire):
                    self._start(peer_id, wire)
        self._rearm()

    def _rearm(self) -> None:
        if self._sweep is None and not self._closed and self._pending():
            self._sweep = self._loop.call_later(limits.ADMIT_RETRY_S, self._on_sweep)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.machine.get_timer()
        if when is not None and not self._closed:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._carry(self.machine.handle_timer(self._loop.time()))
        self._rearm()


async def wait_verdict(verdict: Verdict) -> Verdict:
    """Wait until verdict is settled or ADMIT_JOIN_WAIT_S has passed; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.ADMIT_JOIN_WAIT_S
    while not verdict.settled:
        left = deadline - loop.time()
        if left <= 0:
            break
        verdict.changed.clear()
        try:
            await asyncio.wait_for(verdict.changed.wait(), left)
        except TimeoutError:
            break
    return verdict
