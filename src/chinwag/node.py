"""The Node facade: wires identity, protocol, connections and discovery.

UIs call its async commands (start, send, set_nick, peers, stop) and receive
its events (chinwag.events) through subscribe(). Nothing else of the node is
public.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.identity import load_or_create_identity
from chinwag.crypto.noise import generate_static_private
from chinwag.datadir import DataDir
from chinwag.errors import RemoteProtocolError, UsageError
from chinwag.net.connection import PeerConnection
from chinwag.net.discovery import Discovery
from chinwag.net.manager import ConnectionManager
from chinwag.protocol import messages as m
from chinwag.protocol.chat import ChatMessage, SeenSet, make_message, open_message
from chinwag.protocol.discovery import encode_beacon
from chinwag.protocol.names import DEFAULT_ROOM, validate_nick, validate_room, validate_text
from chinwag.protocol.session import Closed, LocalInfo

log = logging.getLogger(__name__)

CAPABILITIES = ("chat/1",)


@dataclass
class NodeConfig:
    """Everything a node needs to start."""

    data_dir: Path
    nick: str | None = None
    port: int = limits.DEFAULT_TCP_PORT
    #: Listen on any free port when `port` is taken (only for the default port).
    port_fallback: bool = True
    bind: str = "0.0.0.0"
    peers: list[tuple[str, int]] = field(default_factory=list)
    discovery: bool = True
    discovery_port: int = limits.DISCOVERY_PORT


def default_nick() -> str:
    """Return the user's login name made into a valid nick."""
    try:
        name = getpass.getuser()
    except Exception:  # getuser raises various errors when no name is known
        name = "anon"
    cleaned = "".join(c for c in name if c.isalnum() or c in "_.-")[: limits.MAX_NICK_CHARS]
    return cleaned or "anon"


class Node:
    """One chinwag peer."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.datadir = DataDir(config.data_dir)
        self._subscribers: list[Callable[[ev.NodeEvent], None]] = []
        self._seen = SeenSet()
        self._seq: dict[str, int] = {}
        self._rng = random.Random()
        self._manager: ConnectionManager | None = None
        self._discovery: Discovery | None = None
        self._local: LocalInfo | None = None
        self._since: dict[str, float] = {}
        self._nicks: dict[str, str] = {}
        self.nick = ""
        self.port = 0
        self.stopped = asyncio.Event()
        self._held: list[ev.NodeEvent] | None = None

    # --- lifecycle ------------------------------------------------------

    async def start(self) -> ev.Ready:
        """Lock the data dir, load the identity, listen, discover; emit and return Ready."""
        self.datadir.open()
        # Hold events until `ready` is out, so it is always the first event.
        self._held = []
        try:
            self.identity = load_or_create_identity(self.config.data_dir)
            settings = self.datadir.load_settings()
            nick = self.config.nick or settings.get("nick") or default_nick()
            self.nick = validate_nick(str(nick))
            if self.config.nick and settings.get("nick") != self.config.nick:
                self.datadir.save_setting("nick", self.nick)
            self._noise_static = generate_static_private()
            self._local = LocalInfo.create(
                self.identity, self._noise_static, self.nick, 0, CAPABILITIES
            )
            self._manager = ConnectionManager(lambda: self._local_info(), self, self._rng)
            self.port = await self._manager.listen(
                self.config.bind, self.config.port, self.config.port_fallback
            )
            self._local = LocalInfo.create(
                self.identity, self._noise_static, self.nick, self.port, CAPABILITIES
            )
            if self.config.discovery:
                self._discovery = Discovery(
                    self.config.discovery_port,
                    self.config.bind,
                    self.identity.peer_id,
                    lambda: encode_beacon(self.identity.peer_id, self.port, self.nick),
                    self._manager.beacon_heard,
                    self._rng,
                )
                await self._discovery.start()
            for host, port in self.config.peers:
                self._manager.add_manual_peer(host, port)
        except BaseException:
            self.datadir.close()
            raise
        ready = ev.Ready(peer_id=self.identity.peer_id, nick=self.nick, port=self.port)
        log.info("ready: %s (%s) listening on port %d", self.nick, self.identity.peer_id, self.port)
        held, self._held = self._held, None
        self._emit(ready)
        for event in held or []:
            self._emit(event)
        return ready

    async def stop(self, reason: str = "quit") -> None:
        """Say goodbye to every peer and release the data directory."""
        if self.stopped.is_set():
            return
        if self._discovery is not None:
            self._discovery.close()
        if self._manager is not None:
            await self._manager.close(reason)
        self.datadir.close()
        self.stopped.set()

    def subscribe(self, callback: Callable[[ev.NodeEvent], None]) -> None:
        """Call callback with every event from now on (in the event loop's thread)."""
        self._subscribers.append(callback)

    # --- commands -------------------------------------------------------

    async def send(self, text: str, room: str | None = None) -> ev.Message:
        """Sign and send a message to every peer; emit and return it as an own message."""
        text = validate_text(text)
        room = validate_room(room) if room is not None else DEFAULT_ROOM
        manager = self._require_manager()
        seq = self._seq.get(room, 0) + 1
        self._seq[room] = seq
        msg = make_message(self.identity, room, self.nick, int(time.time() * 1000), seq, text)
        self._seen.add(msg.id)
        # Put it on the wire before echoing it locally: the peers' latency matters more.
        manager.broadcast(m.encode(m.Chat(body=msg.raw_body, sig=msg.sig)))
        event = self._message_event(msg, own=True)
        self._emit(event)
        await manager.wait_drained()
        return event

    def set_nick(self, nick: str) -> None:
        """Change our nick, save it and tell every peer."""
        nick = validate_nick(nick)
        old, self.nick = self.nick, nick
        self.datadir.save_setting("nick", nick)
        self._local = LocalInfo.create(
            self.identity, self._noise_static, nick, self.port, CAPABILITIES
        )
        manager = self._require_manager()
        manager.broadcast(m.encode(m.NickChange(nick=nick)))
        self._emit(ev.NickChanged(peer_id=self.identity.peer_id, nick=nick, old=old, own=True))

    def peers(self) -> ev.Peers:
        """Return the connected peers."""
        manager = self._require_manager()
        infos = []
        for peer_id, conn in sorted(
            manager.peers.items(), key=lambda kv: kv[1].session.peer_nick or ""
        ):
            rtt = conn.session.rtt
            infos.append(
                ev.PeerInfo(
                    peer_id=peer_id,
                    nick=conn.session.peer_nick or "?",
                    address=f"{conn.address[0]}:{conn.address[1]}",
                    since=self._since.get(peer_id, 0.0),
                    rtt_ms=None if rtt is None else round(rtt * 1000, 3),
                )
            )
        return ev.Peers(peers=infos)

    def error(self, message: str) -> None:
        """Report an error event to the UIs."""
        self._emit(ev.Error(message=message))

    # --- ManagerListener ------------------------------------------------

    def peer_joined(self, conn: PeerConnection) -> None:
        peer_id = conn.session.peer_id
        assert peer_id is not None
        self._since[peer_id] = time.time()
        self._nicks[peer_id] = conn.session.peer_nick or "?"
        self._emit(
            ev.PeerJoined(
                peer_id=peer_id,
                nick=conn.session.peer_nick or "?",
                address=f"{conn.address[0]}:{conn.address[1]}",
            )
        )

    def peer_left(self, conn: PeerConnection, closed: Closed) -> None:
        peer_id = conn.session.peer_id
        assert peer_id is not None
        self._since.pop(peer_id, None)
        self._nicks.pop(peer_id, None)
        self._emit(
            ev.PeerLeft(peer_id=peer_id, nick=conn.session.peer_nick or "?", reason=closed.reason)
        )

    def frame_received(self, conn: PeerConnection, frame: m.Chat | m.NickChange) -> None:
        if isinstance(frame, m.NickChange):
            peer_id = conn.session.peer_id or ""
            old = self._nicks.get(peer_id, "?")
            self._nicks[peer_id] = frame.nick
            self._emit(ev.NickChanged(peer_id=peer_id, nick=frame.nick, old=old))
            return
        self._chat_received(conn, frame)

    # --- internals ------------------------------------------------------

    def _chat_received(self, conn: PeerConnection, frame: m.Chat) -> None:
        manager = self._require_manager()
        from_id = conn.session.peer_id or ""
        try:
            msg = open_message(frame.body, frame.sig, check_signature=False)
            if msg.id in self._seen:
                return
            # A message straight from its author is authenticated by the channel;
            # verify the rest, and anything we pass on, so we never relay a forgery.
            relay = len(manager.peers) > 1
            if msg.author_id != from_id or relay:
                msg = open_message(frame.body, frame.sig, check_signature=True)
        except RemoteProtocolError as exc:
            log.warning("disconnecting %s: %s", from_id[:8], exc)
            conn.close(exc.code)
            return
        self._seen.add(msg.id)
        self._emit(self._message_event(msg, own=False))
        if relay:
            manager.broadcast(m.encode(frame), exclude=frozenset({from_id, msg.author_id}))

    def _message_event(self, msg: ChatMessage, own: bool) -> ev.Message:
        b = msg.body
        return ev.Message(
            id=msg.id,
            room=b.room,
            peer_id=msg.author_id,
            nick=b.nick,
            ts=b.ts / 1000,
            text=b.text,
            own=own,
            seq=b.seq,
        )

    def _local_info(self) -> LocalInfo:
        assert self._local is not None
        return self._local

    def _require_manager(self) -> ConnectionManager:
        if self._manager is None:
            raise UsageError("the node is not started")
        return self._manager

    def _emit(self, event: ev.NodeEvent) -> None:
        if self._held is not None:
            self._held.append(event)
            return
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber failed")
