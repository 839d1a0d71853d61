"""asyncio adapter for one Session: bytes in, events out, one timer.

After any input it drains the session's events, writes its pending bytes and
re-arms the session's single timer (the aioquic adapter pattern).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Protocol, cast

from chinwag import limits
from chinwag.errors import RemoteProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol.punch import Puncher
from chinwag.protocol.reasons import Reason
from chinwag.protocol.session import Closed, Event, Session, State

log = logging.getLogger(__name__)

#: Seconds a closing connection may take to flush its goodbye before it is aborted.
_ABORT_AFTER_S = 1.0


def _end_stream(transport: asyncio.Transport) -> None:
    """Send our end of stream after what is buffered, and close once the peer ends its side.

    Half-closing, and reading (and dropping) until the peer's end of stream, keeps our
    goodbye from being lost: a closed socket answers what the peer still sends (a flooding
    peer, or one that had not heard us yet) with a reset, which can fail the peer's
    socket before it has read the goodbye and its reason.
    """
    try:
        if transport.can_write_eof():
            transport.write_eof()
            return
    except (OSError, RuntimeError):
        pass  # the peer has gone already (ENOTCONN): nothing left to half-close
    transport.close()


class ConnectionOwner(Protocol):
    """What a connection reports to (the ConnectionManager); declared here, so no import circle."""

    def connection_made(self, conn: PeerConnection) -> None: ...
    def session_event(self, conn: PeerConnection, event: Event) -> None:
        """Handle one event; a RemoteProtocolError raised here closes this connection."""
        ...

    def session_closed(self, conn: PeerConnection, closed: Closed) -> None: ...


class PeerConnection(asyncio.Protocol):
    """One TCP connection driven by a sans-IO Session; implements net/link.py's Link."""

    def __init__(
        self, manager: ConnectionOwner, session: Session, dial_key: str | None = None
    ) -> None:
        self.manager = manager
        self.session = session
        self.dial_key = dial_key
        self.transport: asyncio.Transport | None = None
        self.address: tuple[str, int] = ("", 0)
        self.connected_at = 0.0
        #: When the peer last sent a chat or file frame (or connected): the peer limit
        #: replaces idle strangers first.
        self.last_active = 0.0
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        #: Set once the socket is gone (connection_lost): a half-closed one lives on a while.
        self._lost = asyncio.Event()
        self._closed = False
        self._processing = False
        #: We closed without linger: frames still queued from the peer are not for us.
        self._closed_locally = False
        #: How the peer is reached (docs/reach.md "Paths"): "lan", "direct" or "relayed"
        #: (then `via` is the relay's peer id, and `limited` whether the circuit has
        #: byte and time limits).
        self.path = "direct"
        self.via: str | None = None
        self.limited = False
        # --- punching (docs/reach.md) ---
        #: Hole punching on a relayed connection, and its timer (net/manager.py drives it).
        self.punch: Puncher | None = None
        self.punch_timer: asyncio.TimerHandle | None = None
        #: On a punched connection: the relayed connection and attempt it answers.
        self.punch_of: tuple[PeerConnection, int] | None = None

    @property
    def peer_id(self) -> str | None:
        return self.session.peer_id

    @property
    def is_open(self) -> bool:
        return self.session.state is State.OPEN and not self._closed

    # --- asyncio.Protocol -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.address = (str(peer[0]), int(peer[1]))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=limits.SEND_HIGH_WATER)
        self.manager.connection_made(self)
        self._process()

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data, self._loop.time())
        self._process()

    def eof_received(self) -> bool | None:
        self.session.receive_data(b"", self._loop.time())
        self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._drained.set()
        self._lost.set()
        if self.session.state is not State.CLOSED:
            self.session.receive_data(b"", self._loop.time())
        self._process()
        if self._timer is not None:
            self._timer.cancel()

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    # --- commands -------------------------------------------------------

    def send_frame(self, frame: m.Frame) -> None:
        if self.is_open:
            self.session.send_frame(frame)
            self._flush()

    def send_encoded(self, plaintext: bytes) -> None:
        """Send an encoded frame; no-op if the connection is not open."""
        if self.is_open:
            self.session.send_encoded(plaintext)
            self._flush()

    def close(self, reason: str, linger: bool = False) -> None:
        """Say goodbye and close; with linger, still take the peer's frames for a while."""
        if not linger:
            self._closed_locally = True
        if self.session.state is State.OPEN or self.session.state is State.HANDSHAKE:
            until = self._loop.time() + limits.HANDSHAKE_TIMEOUT_S if linger else None
            self.session.close(reason, linger_until=until)
        elif self.session.state is State.LINGER and not linger:
            self.session.close(reason)
        self._process()

    def detach(self) -> tuple[asyncio.Transport, bytes] | None:
        """Stop driving the socket (after a circuit handoff frame); return it and the
        bytes received after that frame, or None if the connection is already closed.

        The session is left as it is (halted); the caller gives the transport a new protocol.
        """
        if self._closed or self.transport is None or self.transport.is_closing():
            return None
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self.transport, self.session.take_unread()

    async def finish_closing(self, limit_s: float) -> None:
        """Wait (up to limit_s) for the peer to end its side of a closed connection, then
        drop the socket if it has not: nothing is left open once the node has stopped."""
        if self.transport is None or self._lost.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), limit_s)
        if not self._lost.is_set():
            self.transport.abort()

    async def wait_drained(self, limit_s: float) -> bool:
        """Wait until the send buffer is below its high-water mark; False on timeout."""
        if self._drained.is_set():
            return True
        try:
            await asyncio.wait_for(self._drained.wait(), limit_s)
        except TimeoutError:
            return False
        return True

    @property
    def pending_bytes(self) -> int:
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    # --- the adapter loop -----------------------------------------------

    def _process(self) -> None:
        # A handler may close this connection while we dispatch its events; the
        # outer call then finishes the work instead of recursing.
        if self._processing:
            return
        self._processing = True
        try:
            self._drain()
        finally:
            self._processing = False

    def _drain(self) -> None:
        closed: Closed | None = None
        # Flushing can itself close the session (a peer that stopped reading), so
        # loop until a flush leaves no new event behind.
        while True:
            batch: list[Event] = []
            while (event := self.session.next_event()) is not None:
                batch.append(event)
            # Frames the peer sent before its goodbye (or end of stream) in the same read
            # are delivered: a retired connection's last frames must not be lost.
            graceful = any(isinstance(e, Closed) and e.by_peer for e in batch)
            for event in batch:
                if isinstance(event, Closed):
                    closed = event
                elif not self._closed_locally and (
                    graceful or self.session.state is not State.CLOSED
                ):
                    # Frames queued behind one that got the peer disconnected are dropped;
                    # those a peer sent before its goodbye are its last words (a signed
                    # leave, a message typed before /quit) and arrive in the same read.
                    self._dispatch(event)
            self._flush()
            if not self.session.has_events():
                break
        if closed is not None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            transport = self.transport
            if transport is not None and not transport.is_closing():
                _end_stream(transport)
                # A peer that neither reads nor ends its side gets the goodbye's second.
                self._loop.call_later(_ABORT_AFTER_S, transport.abort)
            self._closed = True
            self.manager.session_closed(self, closed)
            return
        self._arm_timer()

    def _dispatch(self, event: Event) -> None:
        # The one catch point for remote errors found above the session (history,
        # files, rooms): the peer sent something illegal, so this connection closes
        # with the error's reason code; the node and the other peers carry on.
        try:
            self.manager.session_event(self, event)
        except RemoteProtocolError as exc:
            log.debug("peer %s broke the protocol: %s (%s)", self._label(), exc, exc.code)
            self.close(exc.code)

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if (
            data
            and not self._closed
            and self.transport is not None
            and not self.transport.is_closing()
        ):
            self.transport.write(data)
            if (
                self.transport.get_write_buffer_size() > limits.MAX_PENDING_BYTES
                and self.session.state is State.OPEN
            ):
                log.warning("peer %s is not reading; disconnecting", self._label())
                self.session.close(Reason.TOO_SLOW)
                self._process()

    def _arm_timer(self) -> None:
        # Deadlines move later with every packet; an early wake-up is harmless
        # (the session does nothing yet), so only re-arm when the deadline moved earlier.
        when = self.session.get_timer()
        if when is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.session.handle_timer(self._loop.time())
        self._process()

    def _label(self) -> str:
        pid = self.session.peer_id
        return f"{pid[:8] if pid else '?'}@{self.address[0]}:{self.address[1]}"
