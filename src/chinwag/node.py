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
from chinwag.errors import UsageError
from chinwag.history import History
from chinwag.net.connection import PeerConnection
from chinwag.net.discovery import Discovery
from chinwag.net.manager import ConnectionManager
from chinwag.protocol import messages as m
from chinwag.protocol.chat import make_message
from chinwag.protocol.discovery import encode_beacon
from chinwag.protocol.names import DEFAULT_ROOM, validate_nick, validate_room, validate_text
from chinwag.protocol.session import Closed, LocalInfo
from chinwag.store.db import Store

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
        self._history: History | None = None
        self._store: Store | None = None
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
            self._store = Store(self.config.data_dir / "chinwag.db")
            self._store.start_checkpointer()
            self._manager = ConnectionManager(lambda: self._local_info(), self, self._rng)
            self._history = History(self._store, self.identity, self._manager, self._emit)
            self._history.load()
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
            if self._manager is not None:
                await self._manager.close("error")
            if self._history is not None:
                await self._history.close()
            if self._store is not None:
                self._store.close()
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
        if self._history is not None:
            await self._history.close()
        if self._manager is not None:
            await self._manager.close(reason)
        if self._store is not None:
            self._store.close()
        self.datadir.close()
        self.stopped.set()

    def subscribe(self, callback: Callable[[ev.NodeEvent], None]) -> None:
        """Call callback with every event from now on (in the event loop's thread)."""
        self._subscribers.append(callback)

    # --- commands -------------------------------------------------------

    def post(self, text: str, room: str | None = None) -> asyncio.Future[ev.Message]:
        """Sign and queue a message; the future resolves once it is stored and sent.

        Raises UsageError at once for invalid text or room. Messages posted in
        one event-loop turn share one commit.
        """
        text = validate_text(text)
        room = validate_room(room) if room is not None else DEFAULT_ROOM
        history = self._require_history()
        seq = history.next_seq(room)
        msg = make_message(self.identity, room, self.nick, int(time.time() * 1000), seq, text)
        return history.submit_own(msg)

    async def send(self, text: str, room: str | None = None) -> ev.Message:
        """Post a message and wait until it is stored and sent (and congested peers drained)."""
        event = await self.post(text, room)
        await self._require_manager().wait_drained()
        return event

    def congested(self) -> bool:
        """Return True if a peer is slow to take what we send (callers should wait_drained)."""
        return self._require_manager().congested()

    async def wait_drained(self) -> None:
        await self._require_manager().wait_drained()

    def history(self, room: str | None = None, limit: int = 100) -> ev.History:
        """Return the last `limit` messages of a room in display order."""
        room = validate_room(room) if room is not None else DEFAULT_ROOM
        if limit < 1:
            raise UsageError("limit must be at least 1")
        return self._require_history().history(room, limit)

    def search(self, text: str, limit: int = 50) -> ev.SearchResult:
        """Return messages containing text."""
        if not text.strip():
            raise UsageError("search for what?")
        return self._require_history().search(text, limit)

    def info(self, msg_id: str) -> ev.Info:
        """Return who holds a message (by id or unique id prefix)."""
        history = self._require_history()
        row = history.find(msg_id.strip().lower())
        if row is None:
            raise UsageError(f"no message with id {msg_id[:40]!r}")
        nicks = self._require_store().peer_nicks()
        holders = [
            ev.PeerInfo(peer_id=p, nick=nicks.get(p, "?"), address="")
            for p in sorted(history.holders(row))
        ]
        return ev.Info(id=row.id, room=row.room, peer_id=row.author, seq=row.seq, holders=holders)

    def delivery_of(self, room: str, seq: int) -> tuple[int, int]:
        """Return (peers holding, peers known in the room) for our message seq in room."""
        return self._require_history().delivery(room, seq)

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
        self._require_store().save_peer(
            peer_id, self._nicks[peer_id], f"{conn.address[0]}:{conn.address[1]}"
        )
        self._require_history().peer_joined(conn)
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
        if self._history is not None:
            self._history.peer_left(peer_id)
        self._emit(
            ev.PeerLeft(peer_id=peer_id, nick=conn.session.peer_nick or "?", reason=closed.reason)
        )

    def frame_received(
        self, conn: PeerConnection, frame: m.Chat | m.NickChange | m.SyncFrame
    ) -> None:
        if isinstance(frame, m.NickChange):
            peer_id = conn.session.peer_id or ""
            old = self._nicks.get(peer_id, "?")
            self._nicks[peer_id] = frame.nick
            self._emit(ev.NickChanged(peer_id=peer_id, nick=frame.nick, old=old))
            return
        if isinstance(frame, m.Chat):
            self._require_history().chat_received(conn, frame)
        else:
            self._require_history().sync_frame(conn, frame)

    # --- internals ------------------------------------------------------

    def _local_info(self) -> LocalInfo:
        assert self._local is not None
        return self._local

    def _require_history(self) -> History:
        if self._history is None:
            raise UsageError("the node is not started")
        return self._history

    def _require_store(self) -> Store:
        if self._store is None:
            raise UsageError("the node is not started")
        return self._store

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
