"""The Node facade: wires identity, connections, discovery, the store, history and rooms.

UIs call its commands (start, post/send, dm, join, leave, history, search,
info, whois, verify, block, set_nick, peers, stop) and receive its events
(chinwag.events) through subscribe(). Nothing else of the node is public.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from chinwag import events as ev
from chinwag import limits
from chinwag.admission import Admissions, wait_verdict
from chinwag.contacts import ContactBook
from chinwag.crypto import box
from chinwag.crypto.identity import (
    BadIdentity,
    fingerprint,
    key_from_peer_id,
    peer_id_from_public,
    public_from_peer_id,
    short_id,
)
from chinwag.crypto.noise import generate_static_private
from chinwag.datadir import DataDir, default_downloads_dir, load_or_create_identity
from chinwag.errors import RemoteProtocolError, UsageError
from chinwag.files import FileShare
from chinwag.history import History, MeshPorts
from chinwag.logonce import WarnOnce
from chinwag.mailbox import Mailbox
from chinwag.members import Members
from chinwag.net.connection import PeerConnection
from chinwag.net.dht import STATE_FILE as DHT_STATE_FILE
from chinwag.net.dht import DhtNode, DhtUnavailable
from chinwag.net.discovery import Discovery
from chinwag.net.manager import ConnectionManager
from chinwag.net.upnp import UpnpMapper
from chinwag.private import CHAT, PrivateChannel, inner
from chinwag.protocol import groupkeys as gk
from chinwag.protocol import messages as m
from chinwag.protocol.addr import AddrError, parse_addr
from chinwag.protocol.chat import ChatMessage, make_message
from chinwag.protocol.dhtrecord import DhtRecord
from chinwag.protocol.discovery import encode_beacon
from chinwag.protocol.names import DEFAULT_ROOM, validate_nick, validate_room, validate_text
from chinwag.protocol.peers import SEEN, STRANGER, VERIFIED
from chinwag.protocol.presence import PresenceRecord
from chinwag.protocol.reasons import Reason
from chinwag.protocol.session import Closed, LocalInfo
from chinwag.protocol.transfer import OFFER_MARK, encode_offer
from chinwag.rendezvous import SEQ_SETTING as DHT_SEQ_SETTING
from chinwag.rendezvous import Rendezvous
from chinwag.roomkeys import RoomKeys
from chinwag.rooms import DM, PRIVATE, Room, RoomBook
from chinwag.store.db import HeldRow, Store, StoreError

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
    #: Where accepted files are saved (default: the platform's downloads directory).
    downloads: Path | None = None
    #: Files up to this many bytes from verified peers are accepted without asking (0: never).
    auto_accept: int = 0
    #: Map the TCP port on the home router with UPnP-IGD (the CLI turns it on; `--no-upnp`).
    upnp: bool = False
    # --- relays (docs/reach.md "Relays") ---
    #: Relay circuits for others (`--relay`, `chinwag relay`).
    relay: bool = False
    #: Serve our contacts' circuits without byte or time limits (`--relay-contacts-unlimited`).
    relay_contacts_unlimited: bool = False
    #: Relays to keep a reservation at (`--relay-peer HOST:PORT`).
    relay_peers: list[tuple[str, int]] = field(default_factory=list)
    #: Take part in chat (rooms); False for the headless relay, which stores no messages.
    chat: bool = True
    #: Upgrade relayed connections to direct ones by hole punching (`--no-punch` turns it off).
    punch: bool = True
    #: Rooms are a gossip mesh (docs/mesh.md): discovery feeds the mesh's candidates instead
    #: of dialling everyone heard. False: the old flood to every peer (tests, comparisons).
    mesh: bool = True
    # --- the Mainline DHT (docs/dht.md) ---
    #: Publish our record and look contacts up on the DHT (the CLI turns it on; `--no-dht`).
    dht: bool = False
    #: UDP port of the DHT node (`--dht-port`; 0: any free port).
    dht_port: int = limits.DEFAULT_DHT_PORT
    #: Bootstrap nodes (`--dht-bootstrap`; the CLI puts the public ones when none is given).
    dht_bootstrap: list[tuple[str, int]] = field(default_factory=list)
    #: Publish the record sealed under a blinded key (`--no-dht-private`: in the clear).
    dht_private: bool = True
    #: Start even if `chinwag export` retired this data directory (`--force`; clears the mark).
    force_exported: bool = False

    @property
    def meshed(self) -> bool:
        """Return whether rooms run as a gossip mesh here: not on a relay, whose clients'
        connections are in no mesh and must not be closed to keep the mesh's degree."""
        return self.mesh and not self.relay


@dataclass
class _Running:
    """The running parts of a started node: built together in start(), stopped in stop().

    A node is either not started (no `_Running`) or has every part; nothing checks the
    parts one by one. `discovery` is None when beacons are off (NodeConfig.discovery).
    """

    store: Store
    manager: ConnectionManager
    book: RoomBook
    history: History
    files: FileShare
    #: Contacts and our own address (issue 14).
    contacts: ContactBook
    members: Members
    discovery: Discovery | None = None
    upnp: UpnpMapper | None = None
    #: Mail that waits for its reader (issue 15 item 4); set right after the parts above.
    mailbox: Mailbox | None = None
    rendezvous: Rendezvous | None = None
    #: Pairwise Olm ratchets: conversations travel only inside them (issue 12).
    private: PrivateChannel | None = None
    #: Admission to private rooms by PAKE (issue 12 item 4); set right after the parts above.
    admissions: Admissions | None = None

    async def close(self, reason: str) -> None:
        """Stop every part, the network last but one and the store last."""
        if self.admissions is not None:
            self.admissions.close()
        # Our signed leave goes out before the goodbyes: members far away see us go.
        self.members.leave()
        if self.upnp is not None:
            await self.upnp.close()
        if self.discovery is not None:
            self.discovery.close()
        self.contacts.close()
        if self.mailbox is not None:
            self.mailbox.close()
        if self.rendezvous is not None:
            await self.rendezvous.close()
        await self.files.close()
        await self.history.close()
        await self.manager.close(reason)
        if self.private is not None:
            self.private.close()
        self.store.close()


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
        #: Every running part, once start() has built them (None before and after).
        self._run: _Running | None = None
        self._rng = random.Random()
        self._local: LocalInfo | None = None
        self._since: dict[str, float] = {}
        self._nicks: dict[str, str] = {}
        self.nick = ""
        self.port = 0
        #: UDP port of our DHT node (0: the DHT is off).
        self.dht_port = 0
        self.stopped = asyncio.Event()
        self._held: list[ev.NodeEvent] | None = None
        self._warn = WarnOnce(log)
        #: Per connected peer: when its last nick change was shown, and the nick shown.
        self._nick_shown: dict[str, tuple[float, str]] = {}
        #: Per connected peer: the timer showing its latest nick at the end of the gap.
        self._nick_pending: dict[str, asyncio.TimerHandle] = {}
        #: Peers we had been connected to before (earlier runs, or connections that ended):
        #: kept before strangers at the peer limit.
        self._seen_peers: set[str] = set()
        #: Held private messages sent by accept_key, dropped from the store once committed.
        self._releasing: set[int] = set()
        self._caps: tuple[str, ...] = CAPABILITIES

    # --- lifecycle ------------------------------------------------------

    async def start(self) -> ev.Ready:
        """Lock the data dir, load the identity, listen, discover; emit and return Ready."""
        self.datadir.open()
        # Hold events until `ready` is out, so it is always the first event.
        self._held = []
        store: Store | None = None
        history: History | None = None
        run: _Running | None = None
        try:
            # Before the store or a socket: a retired copy must not advance its ratchets.
            self.datadir.check_not_exported(self.config.force_exported)
            had_identity = (self.config.data_dir / "identity.key").exists()
            self.identity = load_or_create_identity(self.config.data_dir)
            settings = self.datadir.load_settings()
            nick = self.config.nick or settings.get("nick") or default_nick()
            self.nick = validate_nick(str(nick))
            if self.config.nick and settings.get("nick") != self.config.nick:
                self.datadir.save_setting("nick", self.nick)
            self._noise_static = generate_static_private()
            self._caps = CAPABILITIES + ((m.RELAY_CAP,) if self.config.relay else ())
            self._local = LocalInfo.create(
                self.identity, self._noise_static, self.nick, 0, self._caps
            )
            store = Store(self.config.data_dir / "chinwag.db")
            store.start_checkpointer()
            self._seen_peers = set(store.peer_nicks())
            manager = ConnectionManager(
                lambda: self._local_info(),
                self,
                self._rng,
                self._peer_rank,
                relay=self.config.relay,
                relay_unlimited=self._relay_unlimited,
                mesh=self.config.meshed,
                contact=lambda peer_id: self._peer_rank(peer_id) >= VERIFIED,
                dial_failed=self._dial_failed,
            )
            manager.punch_enabled = self.config.punch
            book = RoomBook(store, self.identity)
            book.load()
            book.group = RoomKeys(
                store, self.identity, self._send_pairwise, self._admitted, self._room_key
            )
            if not self.config.chat:
                # A headless relay is in no room: it stores, shows and syncs no message.
                for joined in list(book.joined.values()):
                    book.leave(joined.wire)
            ports = (
                MeshPorts(
                    random.Random(self._rng.random()),
                    manager.mesh_dial,
                    manager.is_direct,
                    manager.is_outbound,
                )
                if self.config.meshed
                else None
            )
            history = History(store, self.identity, manager, self._emit, book, ports)
            book.group.retry = history.chat_received
            history.load()
            if store.created and had_identity:
                history.set_unsure("the message store is new, the identity is not")
            elif store.tail_may_be_lost:
                history.set_unsure("the machine went down while chinwag ran")
            files = FileShare(
                store,
                self.identity.peer_id,
                manager,
                self._emit,
                self.config.downloads or default_downloads_dir(),
                self.config.auto_accept,
                lambda peer_id: peer_id in book.verified,
                lambda peer_id, room: book.shares_room(peer_id, room),
                self._is_private_room,
            )
            # Complete before anything can call back (file offers shown while loading,
            # peers once listening): every part is there, or the node is not started.
            contacts = ContactBook(
                store,
                manager,
                self.datadir,
                self._emit,
                self.config.bind,
                lambda: (self.upnp_mapping, self.reservations()),
            )
            members = Members(
                self.identity,
                manager,
                _int_setting(settings.get("presence_seq")),
                lambda seq: self.datadir.save_setting("presence_seq", seq),
                self._presence_keep,
                self._members_changed,
                invalid=history.mesh_invalid,
                own_keys=self._own_olm_keys,
                learn_keys=self._learn_presence_keys,
            )
            run = self._run = _Running(store, manager, book, history, files, contacts, members)
            run.mailbox = Mailbox(
                store,
                self.identity,
                manager,
                history,
                book,
                self._emit,
                reader_rooms=self._presence_rooms,
                relays_of=contacts.relays_of,
                reach=self._reach_member,
                room_members=self._room_members,
            )
            run.mailbox.load()
            run.private = self._make_private(run)
            run.mailbox.private = run.private  # held mail goes inside the ratchets too
            run.admissions = Admissions(
                book,
                lambda: manager.peers,
                self._channel_of,
                self.on_admitted,
                self._emit,
            )
            files.load()
            self.port = await manager.listen(
                self.config.bind, self.config.port, self.config.port_fallback
            )
            self._local = LocalInfo.create(
                self.identity, self._noise_static, self.nick, self.port, self._caps
            )
            if self.config.discovery:
                run.discovery = Discovery(
                    self.config.discovery_port,
                    self.config.bind,
                    self.identity.peer_id,
                    lambda: encode_beacon(self.identity.peer_id, self.port, self.nick),
                    self._beacon_heard,
                    self._rng,
                )
                await run.discovery.start()
            if self.config.upnp and not _is_loopback(self.config.bind):
                run.upnp = UpnpMapper(self.port, self._rng, self._upnp_changed)
                run.upnp.start()
                # Punches offer the mapping too, after the addresses peers observe.
                manager.extra_addrs = lambda: [a for a in (self.upnp_mapping,) if a]
            self._update_presence()
            for host, port in self.config.peers:
                manager.add_manual_peer(host, port)
            contacts.load(self.port)
            if self.config.dht:
                await self._start_dht(run)
            for host, port in self.config.relay_peers:
                manager.relay.add_relay_peer(host, port)
        except BaseException:
            # Close what was built: all of it once _Running exists, else the store's users.
            if run is not None:
                self._run = None
                await run.close(Reason.ERROR)
            else:
                if history is not None:
                    await history.close()
                if store is not None:
                    store.close()
            self.datadir.close()
            raise
        ready = ev.Ready(peer_id=self.identity.peer_id, nick=self.nick, port=self.port)
        log.info("ready: %s (%s) listening on port %d", self.nick, self.identity.peer_id, self.port)
        held, self._held = self._held, None
        self._emit(ready)
        for event in held or []:
            self._emit(event)
        return ready

    async def stop(self, reason: str = Reason.QUIT) -> None:
        """Say goodbye to every peer and release the data directory."""
        if self.stopped.is_set():
            return
        for pending in self._nick_pending.values():
            pending.cancel()
        if self._run is not None:
            # The parts stay (closed): goodbyes report peers gone through them.
            await self._run.close(reason)
        self.datadir.close()
        self.stopped.set()

    @property
    def upnp_mapping(self) -> str | None:
        """Our TCP port's public "host:port" mapped by UPnP on the home router, or None."""
        run = self._run
        return run.upnp.mapping if run is not None and run.upnp is not None else None

    def _upnp_changed(self, mapping: str | None) -> None:
        self._emit(ev.Upnp(mapping=mapping))

    def subscribe(self, callback: Callable[[ev.NodeEvent], None]) -> None:
        """Call callback with every event from now on (in the event loop's thread)."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[ev.NodeEvent], None]) -> None:
        """Stop calling callback (a UI that closed while the node runs on); no-op if absent."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    # --- commands -------------------------------------------------------

    def post(self, text: str, room: str | None = None) -> asyncio.Future[ev.NodeEvent]:
        """Sign and queue a message to a joined room; resolves once it is stored and sent.

        Raises UsageError at once for invalid text or a room we are not in.
        Messages posted in one event-loop turn share one commit.
        """
        joined = self._joined_room(room)
        made: list[ChatMessage] = []
        done = self._post(joined, _chat_text(text), made)

        def committed(fut: asyncio.Future[ev.NodeEvent]) -> None:
            # No member of the room is connected: mailboxes keep it for those offline.
            if made and not fut.cancelled() and fut.exception() is None:
                mailbox = self._run.mailbox if self._run is not None else None
                if mailbox is not None:
                    mailbox.own_room_committed(joined.wire, made[-1])

        done.add_done_callback(committed)
        return done

    def dm(self, who: str, text: str) -> asyncio.Future[ev.NodeEvent]:
        """Send a private message (end-to-end encrypted) to a peer named by nick or id."""
        text = _chat_text(text)
        change = self._key_change(who)
        if change is not None:
            return self._hold(change, text)
        peer_id = self.resolve_peer(who)
        if peer_id == self.identity.peer_id:
            raise UsageError("that is you")
        try:
            key_from_peer_id(peer_id)  # e.g. a contact stored before ids were checked
        except BadIdentity as exc:
            raise UsageError(f"cannot write to {short_id(peer_id)}: {exc}") from None
        run = self._running()
        room = run.book.join_dm(peer_id)
        # A conversation travels over a direct connection (the outbox holds it meanwhile); a
        # member known by its presence record alone is dialled where the record says it listens.
        run.manager.reach(peer_id, run.members.addresses(peer_id))
        made: list[ChatMessage] = []
        done = self._post(room, text, made)

        def committed(fut: asyncio.Future[ev.NodeEvent]) -> None:
            # Committed and sent: if the reader is offline, mailboxes keep it for it.
            if made and not fut.cancelled() and fut.exception() is None:
                mailbox = self._run.mailbox if self._run is not None else None
                if mailbox is not None:
                    mailbox.own_committed(peer_id, made[-1])

        done.add_done_callback(committed)
        return done

    # --- private messages held while a verified peer's key changed ----------------

    def _key_change(self, who: str) -> tuple[str, str, str] | None:
        """Return (nick, verified key, new key) if `who` names a verified nick now used by
        another key, or that other key; None if a message to `who` may go out as usual.

        Raises UsageError if several new keys use the nick (the user must pick one by id).
        """
        run = self._running()
        book = run.book
        who = who.strip().lstrip("@")
        if not book.verified:
            return None
        known = self._known_nicks()
        if who in book.verified.values():
            new = sorted(
                p
                for p, nick in known.items()
                if nick == who
                and book.verified.get(p) != who
                and p not in book.replaced
                and p != self.identity.peer_id
            )
            if len(new) > 1:
                ids = ", ".join(short_id(p) for p in new)
                raise UsageError(
                    f"several new keys use the verified nick {who!r}: {ids}; name one by id"
                )
            old = book.impostor_of(new[0], who) if new else None
            return (who, old, new[0]) if old is not None else None
        try:
            peer_id = self.resolve_peer(who)
        except UsageError:
            return None  # dm() resolves again and reports it
        nick = known.get(peer_id)
        if nick is None or book.verified.get(peer_id) == nick or peer_id in book.replaced:
            return None
        old = book.impostor_of(peer_id, nick)
        return (nick, old, peer_id) if old is not None else None

    def _hold(self, change: tuple[str, str, str], text: str) -> asyncio.Future[ev.NodeEvent]:
        """Keep a private message (in the store) until the user decides on the key change."""
        nick, old, new = change
        store = self._running().store
        if store.held_count() >= limits.MAX_HELD_DMS:
            raise UsageError(
                f"{limits.MAX_HELD_DMS} messages are held already: decide first "
                f"(/acceptkey {nick} or /discardheld {nick})"
            )
        row = store.hold_dm(nick, old, new, text, time.time())
        log.info("private message to %r held: key %s is not the verified %s", nick, new, old)
        event = _held_event(row)
        self._emit(event)
        fut: asyncio.Future[ev.NodeEvent] = asyncio.get_running_loop().create_future()
        fut.set_result(event)
        return fut

    def _pending_change(self, who: str) -> tuple[str, str, str]:
        """Return the key change `who` names (its nick, or the new key); raise UsageError."""
        change = self._key_change(who)
        if change is None:
            raise UsageError(f"no unresolved key change for {who.strip()[:40]!r}")
        return change

    def held(self) -> ev.HeldDms:
        """Return the private messages held on key changes, oldest first."""
        rows = self._running().store.held_dms()
        return ev.HeldDms(held=[_held_event(r) for r in rows if r.id not in self._releasing])

    def accept_key(self, who: str) -> ev.KeyAccepted:
        """Accept the new key of a verified nick: it becomes the verified one (the old key
        loses its mark) and the messages held for it are sent, in the order written."""
        nick, old, new = self._pending_change(who)
        run = self._running()
        run.book.replace_verified(old, new, nick)
        rows = [r for r in run.store.held_dms(new) if r.id not in self._releasing]
        sent = [self.dm(new, row.text) for row in rows]
        if sent:
            self._releasing.update(r.id for r in rows)

            # Dropped once committed (sent or in the outbox): typed text is never lost.
            def committed(fut: asyncio.Future[list[ev.NodeEvent]]) -> None:
                self._releasing.difference_update(r.id for r in rows)
                if not fut.cancelled() and fut.exception() is None and self._run is not None:
                    self._run.store.drop_held(r.id for r in rows)

            asyncio.gather(*sent).add_done_callback(committed)
        log.info("key %s accepted for %r (was %s); %d held sent", new, nick, old, len(rows))
        return ev.KeyAccepted(nick=nick, peer_id=new, old_peer_id=old, sent=len(rows))

    def discard_held(self, who: str) -> ev.HeldDiscarded:
        """Delete, unsent, the messages held for the new key `who` names (nick or key); the
        key change stays unresolved (later messages are held again)."""
        run = self._running()
        try:
            nick, _old, new = self._pending_change(who)
        except UsageError:
            # Resolved meanwhile (e.g. /verify): the held ones can still be dropped by id.
            new = self.resolve_peer(who)
            nick = self._known_nicks().get(new, "?")
        rows = [r for r in run.store.held_dms(new) if r.id not in self._releasing]
        if not rows:
            raise UsageError(f"no private messages are held for {who.strip()[:40]!r}")
        run.store.drop_held(r.id for r in rows)
        return ev.HeldDiscarded(nick=nick, peer_id=new, count=len(rows))

    def _post(
        self, room: Room, text: str, made: list[ChatMessage] | None = None
    ) -> asyncio.Future[ev.NodeEvent]:
        """Seal, sign and queue our message; `made` gets the signed message once numbered."""
        history = self._running().history
        book = self._running().book
        book.wrote_in(room)
        identity, nick = self.identity, self.nick

        def make(seq: int) -> ChatMessage:
            # Sealed and signed when numbered (later, if we wait for peers to give back lost
            # seqs): a private room's ciphertext names its seq (docs/protocol.md 27).
            clear, enc = book.seal(room, text, seq)
            msg = make_message(identity, room.wire, nick, int(time.time() * 1000), seq, clear, enc)
            if made is not None:
                made.append(msg)
            return msg

        return history.post_own(room.wire, make, text)

    def _room_members(self, wire: str) -> list[str]:
        """Return the members of joined room wire that presence records name (any state)."""
        run = self._running()
        room = run.book.joined.get(wire)
        if room is None:
            return []
        return [r.author for r in run.members.book.members(wire)]

    def _presence_rooms(self, peer_id: str) -> set[str]:
        """Return the rooms peer_id's presence record names (fresh or not)."""
        record = self._running().members.get(peer_id)
        return {wire for wire, _kcv in record.rooms} if record is not None else set()

    def _joined_room(self, name: str | None) -> Room:
        book = self._running().book
        room = book.find(name if name is not None else DEFAULT_ROOM)
        if room is None:
            if name is not None:
                validate_room(name)
            raise UsageError(f"you are not in room {name or DEFAULT_ROOM!r}; /join it first")
        return room

    async def join(self, name: str, passphrase: str | None = None) -> ev.Joined:
        """Join a room (private with a passphrase) and fetch its history from peers."""
        book = self._running().book
        if passphrase is not None:
            if not passphrase or len(passphrase) > limits.MAX_PASSPHRASE_CHARS:
                raise UsageError(f"a passphrase has 1-{limits.MAX_PASSPHRASE_CHARS} characters")
            canonical = validate_room(name)
            # Argon2id takes about 0.1 s and 64 MiB: keep it off the event loop.
            key = await asyncio.to_thread(box.derive_room_key, canonical, passphrase)
            was_in = book.find(canonical) is not None
            room = book.join_private(canonical, key)
            await self._admit_joined(room, was_in)
        else:
            canonical = validate_room(name)
            existing = book.find(canonical)
            if existing is not None and existing.kind == PRIVATE:
                raise UsageError(f"{canonical!r} is a private room: join it with its passphrase")
            if len(book.joined) >= limits.MAX_ROOMS:
                raise UsageError(f"you are in {limits.MAX_ROOMS} rooms already")
            room = book.join_public(canonical)
            self._running().history.room_changed(room.wire)
        self._update_presence()
        self._offer_members(None)
        event = ev.Joined(room=room.name, private=room.kind == PRIVATE)
        self._emit(event)
        return event

    async def _admit_joined(self, room: Room, was_in: bool) -> None:
        """Announce a private room just joined and prove its passphrase to the peers that
        announce it; UsageError (and not joined) if some answered and none accepted it."""
        run = self._running()
        run.history.room_changed(room.wire)
        assert run.admissions is not None
        verdict = run.admissions.joined(room.wire)
        if verdict is None:
            return  # nobody announces it: we are alone, the room starts with us
        try:
            await wait_verdict(verdict)
        finally:
            run.admissions.done(room.wire)
        if verdict.admitted or not verdict.refused:
            return  # a member accepted it, or nobody answered (older peers): joined
        if not was_in and room.wire in run.book.joined:
            run.book.leave(room.wire)
            run.history.room_changed(room.wire)
        raise UsageError(
            f"passphrase not accepted: none of the {len(verdict.asked)} peer(s) announcing "
            f"private room {room.name!r} accepted it (wrong passphrase?)"
        )

    def leave(self, name: str) -> ev.Left:
        """Leave a room: its messages are no longer stored, shown or synced."""
        book = self._running().book
        room = book.leave(name)
        if room.kind == PRIVATE and book.group is not None:
            book.group.forget_room(room.wire)
        self._running().history.room_changed(room.wire)
        self._update_presence()
        event = ev.Left(room=room.name)
        self._emit(event)
        return event

    def rooms(self) -> ev.RoomList:
        """Return the rooms known on the network with their online member counts."""
        return ev.RoomList(
            rooms=[
                ev.RoomInfo(name=name, members=members, joined=joined)
                for name, members, joined in self._running().book.listing()
            ]
        )

    def resolve_peer(self, who: str) -> str:
        """Return the peer id named by a nick, a full id or an id prefix (8+ chars).

        Raises UsageError if nobody or several peers match (listing them by short id).
        """
        who = who.strip().lstrip("@")
        known = self._known_nicks()
        if who in known:
            return who
        with contextlib.suppress(BadIdentity):
            public_from_peer_id(who)
            try:
                key_from_peer_id(who)
            except BadIdentity as exc:  # its shape, not a key: DH on it would raise later
                raise UsageError(f"not a peer id: {exc}") from None
            return who  # a full peer id we have not met yet: fine, it is its own key
        if len(who) >= 8:
            by_prefix = [p for p in known if p.startswith(who.lower())]
            if len(by_prefix) == 1:
                return by_prefix[0]
        by_nick = sorted(p for p, nick in known.items() if nick == who)
        if len(by_nick) > 1:
            # A key the user replaced by accepting a new one (accept_key) no longer competes.
            replaced = self._running().book.replaced
            by_nick = [p for p in by_nick if p not in replaced] or by_nick
        if len(by_nick) == 1:
            return by_nick[0]
        if by_nick:
            candidates = ", ".join(short_id(p) for p in by_nick)
            raise UsageError(f"several peers are called {who!r}: {candidates}; use an id")
        raise UsageError(f"no known peer {who[:40]!r}")

    def _known_nicks(self) -> dict[str, str]:
        known = self._running().store.peer_nicks()
        known.update(self._running().members.nicks())
        known.update(self._nicks)
        known[self.identity.peer_id] = self.nick
        return known

    def whois(self, who: str) -> ev.Whois:
        """Return who a peer is: id, fingerprint, verified, safety number."""
        peer_id = self.resolve_peer(who)
        book = self._running().book
        return ev.Whois(
            peer_id=peer_id,
            nick=self._known_nicks().get(peer_id, "?"),
            fingerprint=fingerprint(peer_id),
            verified=peer_id in book.verified,
            safety_number=box.safety_number(self.identity.public, public_from_peer_id(peer_id)),
            blocked=peer_id in book.blocked,
            online=peer_id in self._nicks or self._running().members.online(peer_id),
        )

    def verify(self, who: str, confirm: bool) -> ev.Whois:
        """Show the safety number for a peer; with confirm, mark the peer verified."""
        info = self.whois(who)
        if confirm:
            self._running().book.set_verified(info.peer_id, info.nick)
            info = self.whois(info.peer_id)
        return info

    def block(self, who: str, blocked: bool = True) -> ev.Whois:
        """Block (or unblock) a peer: its messages are neither stored nor shown."""
        peer_id = self.resolve_peer(who)
        if peer_id == self.identity.peer_id:
            raise UsageError("you cannot block yourself")
        book = self._running().book
        book.set_blocked(peer_id, blocked)
        if blocked and book.group is not None:
            # It keeps what it read; what we write from now on uses a key it never gets.
            for room in list(book.joined.values()):
                if room.kind == PRIVATE:
                    book.group.member_left(room.wire, peer_id)
        return self.whois(peer_id)

    # --- files ----------------------------------------------------------

    async def send_file(self, to: str, path: str) -> ev.FileOffer:
        """Offer a file to a peer (nick or id) or to a joined room (`#room`).

        The file is hashed first (in a worker thread); the offer then goes out as a
        message, so peers who are away get it later. Raises UsageError for a path
        that does not exist or cannot be read.
        """
        files = self._running().files
        if to.startswith("#"):
            room = self._joined_room(to[1:])
            label = room.name
        else:
            peer_id = self.resolve_peer(to)
            if peer_id == self.identity.peer_id:
                raise UsageError("that is you")
            room = self._running().book.join_dm(peer_id)
            label = "@" + peer_id
        offer = await files.prepare(path, label, self.nick)
        try:
            await self._post(room, encode_offer(offer))
        except BaseException:
            files.forget(offer.fid)
            raise
        return ev.FileOffer(
            id=offer.fid,
            peer_id=self.identity.peer_id,
            nick=self.nick,
            name=offer.name,
            size=offer.size,
            sha256=offer.sha256,
            room="" if label.startswith("@") else label,
            own=True,
        )

    def accept_file(self, ident: str, directory: str | None = None) -> ev.FileInfo:
        """Fetch an offered file (by id or unique id prefix) into directory or the downloads."""
        return self._running().files.accept(ident, directory)

    def reject_file(self, ident: str) -> ev.FileInfo:
        """Decline an offered file."""
        return self._running().files.reject(ident)

    def cancel_file(self, ident: str, keep: bool = False) -> ev.FileInfo:
        """Stop a transfer (partial data removed unless keep) or withdraw our own offer."""
        return self._running().files.cancel(ident, keep)

    def files(self) -> ev.FileList:
        """Return every file offer and transfer, newest first."""
        return self._running().files.listing()

    async def send(self, text: str, room: str | None = None) -> ev.NodeEvent:
        """Post a message and wait until it is stored and sent (and congested peers drained)."""
        event = await self.post(text, room)
        await self._running().manager.wait_drained()
        return event

    def congested(self) -> bool:
        """Return True if a peer is slow to take what we send (callers should wait_drained)."""
        return self._running().manager.congested()

    async def wait_drained(self) -> None:
        await self._running().manager.wait_drained()

    def history(
        self, room: str | None = None, limit: int = 100, before: str | None = None
    ) -> ev.History:
        """Return the last `limit` messages of a room (or `@peer` conversation), oldest first.

        With `before` (a message id of that room), only messages older than it.
        """
        if limit < 1:
            raise UsageError("limit must be at least 1")
        if room is not None and room.startswith("@"):
            wire = self._running().book.join_dm(self.resolve_peer(room)).wire
        else:
            wire = self._joined_room(room).wire
        result = self._running().history.history(wire, limit, before)
        return ev.History(room=result.room, messages=self._render(result.messages))

    def conversations(self) -> list[tuple[str, str]]:
        """Return (display name, peer id) of every private conversation we hold."""
        return sorted(
            (r.name, r.peer or "") for r in self._running().book.joined.values() if r.kind == DM
        )

    def search(self, text: str, limit: int = 50) -> ev.SearchResult:
        """Return messages containing text."""
        if not text.strip():
            raise UsageError("search for what?")
        result = self._running().history.search(text, limit)
        return ev.SearchResult(text=result.text, messages=self._render(result.messages))

    def info(self, msg_id: str) -> ev.Info:
        """Return who holds a message (by id or unique id prefix)."""
        history = self._running().history
        row = history.find(msg_id.strip().lower())
        if row is None:
            raise UsageError(f"no message with id {msg_id[:40]!r}")
        nicks = self._running().store.peer_nicks()
        holders = [
            ev.PeerInfo(peer_id=p, nick=nicks.get(p, "?"), address="")
            for p in sorted(history.holders(row))
        ]
        return ev.Info(id=row.id, room=row.room, peer_id=row.author, seq=row.seq, holders=holders)

    def delivery_of(self, msg: ev.Message | ev.DirectMessage) -> tuple[int, int]:
        """Return (peers holding, peers known in the room) for one of our messages."""
        book = self._running().book
        if isinstance(msg, ev.DirectMessage):
            wire = book.join_dm(msg.to).wire
        else:
            room = book.find(msg.room)
            if room is None:
                return 0, 0
            wire = room.wire
        return self._running().history.delivery(wire, msg.seq)

    def set_nick(self, nick: str) -> None:
        """Change our nick, save it and tell every peer."""
        nick = validate_nick(nick)
        old, self.nick = self.nick, nick
        self.datadir.save_setting("nick", nick)
        self._local = LocalInfo.create(
            self.identity, self._noise_static, nick, self.port, self._caps
        )
        manager = self._running().manager
        manager.broadcast(m.encode(m.NickChange(nick=nick)))
        self._update_presence()
        self._emit(ev.NickChanged(peer_id=self.identity.peer_id, nick=nick, old=old, own=True))

    def peers(self) -> ev.Peers:
        """Return the connected peers."""
        manager = self._running().manager
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
                    path=conn.path,
                    via=conn.via,
                )
            )
        return ev.Peers(peers=infos, relayed=self.relayed_peers())

    def members(self, room: str | None = None) -> ev.Members:
        """Return the members of a joined room we know of: by presence record or connection."""
        run = self._running()
        joined = self._joined_room(room)
        if joined.kind == DM:
            raise UsageError("a private conversation has no member list")
        now = time.time()
        found: dict[str, ev.Member] = {}
        for record in run.members.book.members(joined.wire):
            found[record.author] = ev.Member(
                peer_id=record.author,
                nick=self._nicks.get(record.author, record.nick),
                online=record.fresh(now) or record.author in run.manager.peers,
                direct=record.author in run.manager.peers,
                last_seen=now if record.author in run.manager.peers else min(record.signed_at, now),
            )
        for peer_id in run.manager.peers:
            if peer_id not in found and run.book.shares_room(peer_id, joined.wire):
                found[peer_id] = ev.Member(
                    peer_id=peer_id,
                    nick=self._nicks.get(peer_id, "?"),
                    online=True,
                    direct=True,
                    last_seen=now,
                )
        found.pop(self.identity.peer_id, None)
        members = sorted(found.values(), key=lambda x: (not x.online, x.nick, x.peer_id))
        return ev.Members(room=joined.name, members=members)

    def relayed_peers(self) -> list[ev.RelayedPeer]:
        """Return peers we hear only through others, lately (`via`: the peer that relayed)."""
        history = self._running().history
        manager = self._running().manager
        nicks = self._known_nicks()
        fresh = time.time() - limits.RELAYED_FRESH_S
        return [
            ev.RelayedPeer(peer_id=author, nick=nicks.get(author, "?"), via=via, seen=seen)
            for author, (via, seen) in reversed(history.relayed.items())
            if seen >= fresh and author not in manager.peers
        ]

    # --- reach: invites and contacts (issue 14, docs/reach.md) ---------

    def invite_info(self) -> tuple[str, list[str], list[tuple[str, str]]]:
        """Return (invite code, addresses it names, relays it names)."""
        invite = self.invite()
        return invite.code, invite.addresses, [(r.peer_id, r.address) for r in invite.relays]

    def invite(self) -> ev.Invite:
        """Return a fresh invite code: our LAN, public and UPnP addresses and relays."""
        return self._running().contacts.invite(
            self.identity, self.nick, self.upnp_mapping, self.reservations()
        )

    def add_contact(self, code: str) -> ev.ContactAdded:
        """Add the peer of an invite code as a contact (emits contact_added) and dial it.

        Raises InviteError (a UsageError) for a malformed, tampered or expired code.
        """
        return self._running().contacts.add(code, self.identity.peer_id)

    def contacts(self) -> ev.Contacts:
        """Return the contacts: online or not, how they are reached, when last seen."""
        return self._running().contacts.listing(self._known_nicks())

    def forget_contact(self, who: str) -> ev.ContactForgotten:
        """Remove a contact (by id, id prefix or nick): it is no longer dialled."""
        return self._running().contacts.forget(who, self._known_nicks())

    # --- relays (docs/reach.md "Relays") ----------------------------------

    def reservations(self) -> list[tuple[str, str]]:
        """Return (relay peer id, "host:port") of each relay we hold a reservation at."""
        return self._running().manager.relay.reservations()

    async def connect_via(self, peer_id: str, via: str, addr: str | None = None) -> None:
        """Connect to peer_id through a circuit at relay `via` (a peer id).

        The relay's address is `addr` ("host:port") or the one we know it by (a relay we
        are connected to). Raises UsageError for an unknown relay, a bad address, a peer
        connected already or a peer as its own relay; RelayError if the relay refuses or
        does not answer; `peer_joined` follows on success.
        """
        manager = self._running().manager
        target = self.resolve_peer(peer_id)
        relay_id = self.resolve_peer(via)
        if self.identity.peer_id in (target, relay_id):
            raise UsageError("that is you")
        if relay_id == target:
            raise UsageError("a peer cannot be its own relay: name another peer after 'via'")
        if addr is not None:
            try:
                relay_addr = parse_addr(addr)
            except AddrError as exc:
                raise UsageError(f"relay address: {exc}") from None
        elif relay_id in manager.relay.relay_addrs:
            relay_addr = manager.relay.relay_addrs[relay_id]
        else:
            raise UsageError(f"no known address for relay {short_id(relay_id)}: add its HOST:PORT")
        conn = manager.peers.get(target)
        if conn is not None and conn.is_open:
            # A circuit would only lose the one-connection-per-pair tie-break to it.
            where = conn.path if conn.via is None else f"{conn.path} via {short_id(conn.via)}"
            raise UsageError(f"already connected to {short_id(target)} ({where})")
        await manager.dial_via(relay_id, relay_addr, target)

    def _relay_unlimited(self, peer_id: str) -> bool:
        """Whether our relay serves peer_id without limits (a contact, if so configured)."""
        return self.config.relay_contacts_unlimited and self._is_contact(peer_id)

    def error(self, message: str) -> None:
        """Report an error event to the UIs."""
        self._emit(ev.Error(message=message))

    # --- ManagerListener ------------------------------------------------

    def peer_joined(self, conn: PeerConnection) -> None:
        peer_id = conn.session.peer_id
        assert peer_id is not None
        self._since[peer_id] = time.time()
        self._nicks[peer_id] = conn.session.peer_nick or "?"
        self._running().store.save_peer(
            peer_id, self._nicks[peer_id], f"{conn.address[0]}:{conn.address[1]}"
        )
        private = self._running().private
        if private is not None and self.config.chat:
            private.peer_joined(conn)  # keys first: a conversation's sync may follow at once
        self._running().history.peer_joined(conn)
        self._running().members.peer_joined(conn)
        self._update_presence()  # listening on any address: this one may be new
        self._running().files.ask_peer(conn)
        self._running().contacts.peer_joined(conn)
        mailbox = self._running().mailbox
        if mailbox is not None:
            mailbox.peer_joined(conn)
        self._check_impostor(peer_id, self._nicks[peer_id])
        self._emit(
            ev.PeerJoined(
                peer_id=peer_id,
                nick=conn.session.peer_nick or "?",
                address=f"{conn.address[0]}:{conn.address[1]}",
                path=conn.path,
                via=conn.via,
            )
        )

    def peer_left(self, conn: PeerConnection, closed: Closed) -> None:
        peer_id = conn.session.peer_id
        assert peer_id is not None
        self._since.pop(peer_id, None)
        self._nicks.pop(peer_id, None)
        self._nick_shown.pop(peer_id, None)
        pending = self._nick_pending.pop(peer_id, None)
        if pending is not None:
            pending.cancel()
        # Seen before from now on (not while connected: it ranks as it did when it came).
        self._seen_peers.add(peer_id)
        if self._run is not None:
            if self._run.private is not None:
                self._run.private.peer_left(peer_id)
            self._run.history.peer_left(peer_id)
            if self._run.admissions is not None:
                self._run.admissions.peer_gone(peer_id)
            self._run.files.peer_left(peer_id)
            self._run.members.peer_left(peer_id)
            self._offer_members(None)
            # natlab: a contact lost without a goodbye is dialled again by every route.
            lost = closed.by_peer and closed.code != Reason.QUIT
            self._run.contacts.peer_left(peer_id, redial=lost)
            if self._run.mailbox is not None:
                self._run.mailbox.peer_left(peer_id)
            if self._run.rendezvous is not None:
                # Its lookups back off afresh from now: a contact that moves is found again
                # within seconds of its new record, whatever its earlier absences were.
                self._run.rendezvous.forget_retry(peer_id)
        self._emit(
            ev.PeerLeft(peer_id=peer_id, nick=conn.session.peer_nick or "?", reason=closed.reason)
        )

    def path_changed(self, conn: PeerConnection) -> None:
        """The peer moved to another path (a hole punch succeeded): no leave, no join."""
        peer_id = conn.session.peer_id
        assert peer_id is not None
        # A contact reached directly now (a punch): its address there is the one to dial
        # first next time, before any relay.
        self._running().contacts.peer_joined(conn)
        self._emit(ev.PathChanged(peer_id=peer_id, path=conn.path, via=conn.via))

    def frame_received(
        self,
        conn: PeerConnection,
        frame: m.PeerFrame | m.Observed,
    ) -> None:
        if isinstance(frame, m.MailFrame):
            mailbox = self._running().mailbox
            if mailbox is not None:
                mailbox.frame(conn, frame)
            return
        if isinstance(frame, m.FileFrame):
            self._running().files.frame(conn, frame)
            return
        if isinstance(frame, m.Presence):
            if not self.config.chat:
                # A headless relay is in no room: passing its clients' presence records on
                # would tell every stranger using it where every other one listens.
                return
            self._running().members.frame(conn, frame)
            return
        if isinstance(frame, m.NickChange):
            self._nick_changed(conn.session.peer_id or "", frame.nick)
            return
        if isinstance(frame, m.Admit):
            if self._run is not None and self._run.admissions is not None and self.config.chat:
                self._run.admissions.frame(conn, frame)
            return
        if isinstance(frame, m.Observed):
            self._running().contacts.observed(conn, frame)
            return
        if isinstance(frame, m.Chat):
            if not self.config.chat:
                # A headless relay is in no room and passes no chat on: its clients' chat
                # flooded through it would be free bandwidth for strangers, and the work of
                # checking and re-sending every message delayed its circuits (docs/reach.md).
                log.debug("relay: passing no chat on from %s", (conn.session.peer_id or "?")[:8])
                return
            if self._untimely(conn, frame):
                return
            self._running().history.chat_received(conn, frame, clear=True)
        elif isinstance(frame, m.MeshFrame):
            self._running().history.mesh_frame(conn, frame)
        elif isinstance(frame, m.OlmFrame):
            private = self._running().private
            if private is not None and self.config.chat:
                private.frame(conn, frame)
        else:
            book = self._running().book
            peer_id = conn.session.peer_id or ""
            # Presence records of a private room go only to peers admitted to it.
            before = book.presence_view(peer_id)
            before_all = dict(book.announced.get(peer_id, {}))
            self._running().history.sync_frame(conn, frame)
            if isinstance(frame, m.Rooms):
                # Room files are asked of room members: this peer may be one now.
                self._running().files.ask_peer(conn)
                self._room_members_changed(peer_id, before_all, book.announced.get(peer_id, {}))
                announced = book.presence_view(peer_id)
                self._running().members.rooms_announced(conn, before, announced)
                admissions = self._running().admissions
                if admissions is not None:
                    admissions.announced(peer_id)
                mailbox = self._running().mailbox
                if mailbox is not None:
                    mailbox.peer_rooms(conn.session.peer_id or "")

    # --- private rooms: Megolm room keys (docs/protocol.md 27) -------------

    def _admitted(self, wire: str) -> set[str]:
        """Return the connected, unblocked peers admitted to private room wire (by PAKE,
        section 28): the one place the room keys' sharing asks who is a member."""
        run = self._run
        if run is None:
            return set()
        book = run.book
        room = book.joined.get(wire)
        if room is None or room.kind != PRIVATE:
            return set()
        return {
            peer
            for peer in run.manager.peers
            if peer not in book.blocked and book.shares_room(peer, wire)
        }

    def _room_key(self, wire: str) -> bytes | None:
        """Return private room wire's passphrase key (room keys travel sealed under it)."""
        room = self._run.book.joined.get(wire) if self._run is not None else None
        return room.key if room is not None and room.kind == PRIVATE else None

    def _send_pairwise(self, peer_id: str, kind: str, data: bytes) -> bool:
        """Send one room-key frame to peer_id alone, inside our pairwise Olm ratchet with it
        (PrivateChannel.send, a `pm`); False if not connected."""
        run = self._run
        if run is None or run.private is None:
            return False
        return run.private.send(peer_id, inner(kind, data))

    def _room_key_frame(self, peer_id: str, data: bytes) -> None:
        """An `rk` or `rkq` from inside a peer's `pm` (docs/protocol.md 27)."""
        keys = self._running().book.group
        if keys is None or not self.config.chat:
            return
        try:
            keys.received(peer_id, data)
        except RemoteProtocolError as exc:
            log.warning("disconnecting %s: %s (inside a pm)", peer_id[:8], exc)
            conn = self._running().manager.peers.get(peer_id)
            if conn is not None:
                conn.close(exc.code)

    def _presence_rooms_changed(self, authors: frozenset[str]) -> None:
        """Presence records changed: a member whose record drops a private room of ours left
        it (also one we have no connection to); one that quit or expired did not."""
        run = self._run
        if run is None or run.book.group is None:
            return
        private = [r for r in run.book.joined.values() if r.kind == PRIVATE]
        for author in authors:
            record = run.members.get(author)
            if record is None or record.gone or author == self.identity.peer_id:
                continue
            for room in private:
                # With our kcv, or none (admission by PAKE sends no kcv, section 28).
                member = record.in_room(room.wire, room.kcv) or record.in_room(room.wire)
                run.book.group.presence(room.wire, author, member)

    def _room_members_changed(
        self, peer_id: str, before: dict[str, bytes], announced: dict[str, bytes]
    ) -> None:
        """A peer's rooms frame: rotate our room keys when a member left."""
        book = self._running().book
        if book.group is None or peer_id in book.blocked:
            return
        for room in list(book.joined.values()):
            # A member that stops announcing the room left it: we rotate. (A new member gets
            # our key once admitted: on_admitted.)
            if room.kind == PRIVATE and room.wire in before and room.wire not in announced:
                book.group.member_left(room.wire, peer_id)

    def on_admitted(self, wire: str, peer_id: str) -> None:
        """peer_id proved private room wire's passphrase to us (and we ours to it): from now
        on the room's history, vectors, files, presence records and our room key go to it."""
        run = self._running()
        run.history.peer_admitted(peer_id, wire)
        if run.book.group is not None and peer_id not in run.book.blocked:
            run.book.group.on_admitted(wire, peer_id)  # our room key goes to the new member
        conn = run.manager.peers.get(peer_id)
        if conn is not None:
            run.files.ask_peer(conn)
            view = run.book.presence_view(peer_id)
            before = {w: k for w, k in view.items() if w != wire}
            run.members.rooms_announced(conn, before, view)
        if run.mailbox is not None:
            run.mailbox.peer_rooms(peer_id)  # a member now: it carries the room's messages

    def _channel_of(self, peer_id: str) -> bytes | None:
        """Return the Noise handshake hash of our connection to peer_id (None: none)."""
        conn = self._running().manager.peers.get(peer_id)
        return conn.session.handshake_hash if conn is not None else None

    # --- internals ------------------------------------------------------

    def _make_private(self, run: _Running) -> PrivateChannel:
        """Our Olm ratchets, wired to history: a conversation's chat frames go inside them."""
        private = PrivateChannel(self.identity, run.store, run.manager)
        run.history.private_send = lambda peer_id, chat: private.send(peer_id, inner(CHAT, chat))
        private.on(CHAT, self._private_chat)
        for kind in gk.KINDS:  # Megolm room keys of private rooms (section 27)
            private.on(kind, self._room_key_frame)
        private.on_session = run.history.resync
        private.on_rotate = run.members.keys_changed
        return private

    def _own_olm_keys(self) -> m.PublishedKeys | None:
        """Return the Olm keys our presence record carries (none without private chat)."""
        run = self._run
        if run is None or run.private is None or not self.config.chat:
            return None
        return run.private.presence_keys()

    def _learn_presence_keys(self, record: PresenceRecord) -> None:
        """A presence record brought its author's Olm keys: keep them if newer (26.1)."""
        run = self._run
        if run is None or run.private is None or record.okeys is None or not self.config.chat:
            return
        try:
            run.private.learn_published(record.author, record.okeys, record.signed_at)
        except StoreError as exc:  # ours, not the author's
            log.error("olm: cannot save the keys of %s: %s", record.author[:8], exc)

    def _private_chat(self, peer_id: str, data: bytes) -> None:
        """A chat frame from inside a peer's `pm`: a message of our conversation with it."""
        conn = self._running().manager.peers.get(peer_id)
        if conn is None:
            return
        try:
            frame = m.decode_frame(data)
        except RemoteProtocolError as exc:
            log.warning("disconnecting %s: %s (inside a pm)", peer_id[:8], exc)
            conn.close(exc.code)
            return
        if not isinstance(frame, m.Chat):
            log.info("ignoring a %s frame inside a pm from %s", type(frame).__name__, peer_id[:8])
            return
        if self._untimely(conn, frame):
            return
        self._running().history.chat_received(conn, frame)

    def _update_presence(self) -> None:
        """Tell the presence book what our record says now (it signs only what changed)."""
        run = self._run
        if run is None:
            return
        # No key check value: presence records travel far (docs/protocol.md section 28).
        rooms = [(r.wire, b"") for r in run.book.joined.values() if r.kind != DM]
        run.members.set_own(self.nick, rooms, self._own_addresses())

    def _own_addresses(self) -> list[str]:
        """Return "host:port" where peers may dial us: the bound address, or else the local
        addresses our connections use (those are reachable from some peer at least)."""
        if self.port == 0:
            return []
        if self.config.bind not in ("0.0.0.0", "", "::"):
            hosts = [self.config.bind]
        else:
            hosts = []
            for conn in self._running().manager.peers.values():
                name = conn.transport.get_extra_info("sockname") if conn.transport else None
                if isinstance(name, tuple) and name and name[0] not in hosts:
                    hosts.append(str(name[0]))
        # Loopback last: a member dialled at the first address must not be sent to itself.
        hosts.sort(key=lambda h: (h.startswith("127.") or h == "::1", h))
        return [f"[{h}]:{self.port}" if ":" in h else f"{h}:{self.port}" for h in hosts]

    def _members_changed(self, authors: frozenset[str]) -> None:
        self._presence_rooms_changed(authors)
        self._offer_members(authors)
        mailbox = self._run.mailbox if self._run is not None else None
        if mailbox is not None:
            mailbox.members_changed(authors)

    def _reach_member(self, peer_id: str) -> None:
        """Dial a member whose presence record says it is online, where the record says."""
        run = self._running()
        if run.members.online(peer_id):
            run.manager.reach(peer_id, run.members.addresses(peer_id))

    def _offer_members(self, authors: frozenset[str] | None) -> None:
        """Offer the mesh, as dial candidates, members (of authors; None: all) of joined rooms
        that no connected peer is in: only members carry a room's messages, so these members
        are our only way into it (e.g. a private room whose other members are beyond a peer)."""
        run = self._run
        if run is None or not self.config.meshed:
            return  # without the mesh every peer floods every room: nobody to offer
        book, manager = run.book, run.manager
        lonely = {
            (r.wire, b"")
            for r in book.joined.values()
            if r.kind != DM and not any(book.shares_room(p, r.wire) for p in manager.peers)
        }
        if not lonely:
            return
        now = time.time()
        records = (
            run.members.book.records()
            if authors is None
            else [r for a in authors if (r := run.members.get(a)) is not None]
        )
        for record in records:
            if record.author in manager.peers or not record.fresh(now):
                continue
            if any(ref in lonely for ref in record.rooms) and manager.learn(
                record.author, run.members.addresses(record.author)
            ):
                run.history.candidate(record.author)

    def _presence_keep(self, peer_id: str) -> bool:
        """Return whether a full presence room takes peer_id's record in place of a stranger's."""
        run = self._run
        if run is not None and (peer_id in run.manager.peers or peer_id in run.book.verified):
            return True
        return peer_id in self._seen_peers

    def _beacon_heard(self, peer_id: str, host: str, port: int) -> bool:
        """A discovery beacon: record its address; with the mesh, offer it as a candidate.

        Return whether to answer at once. With the mesh most peers heard stay unconnected,
        so only a peer new to us (or silent for a while: it restarted) is answered; else
        each beacon of a big LAN would draw an answer from nearly every host.
        """
        run = self._running()
        heard = run.manager.table.last_heard(peer_id)
        unknown = run.manager.beacon_heard(peer_id, host, port)
        if unknown:
            run.history.candidate(peer_id)
        if not self.config.meshed:
            return unknown
        now = asyncio.get_running_loop().time()
        return unknown and (heard is None or now - heard > limits.BEACON_ANSWER_SILENT_S)

    def _dial_failed(self, peer_id: str) -> None:
        if self._run is not None:
            self._run.history.dial_failed(peer_id)
            if self._run.rendezvous is not None and self._run.contacts.is_contact(peer_id):
                # Its known addresses fail: where is it now?
                self._run.rendezvous.lookup_soon(peer_id, self._dht_found)

    async def _start_dht(self, run: _Running) -> None:
        """Start the DHT node and publish; without libtorrent (or its port) warn and go on."""
        try:
            dht = DhtNode(
                self.config.bind,
                self.config.dht_port,
                list(self.config.dht_bootstrap),
                self.config.data_dir / DHT_STATE_FILE,
            )
        except DhtUnavailable as exc:
            log.warning("DHT off: %s", exc)
            return
        run.rendezvous = Rendezvous(
            self.identity,
            dht,
            self.config.dht_private,
            lambda: (run.contacts.own_addrs(self.upnp_mapping), self.reservations()),
            self._emit,
            _int_setting(self.datadir.load_settings().get(DHT_SEQ_SETTING)),
            lambda seq: self.datadir.save_setting(DHT_SEQ_SETTING, seq),
        )
        try:
            self.dht_port = await run.rendezvous.start()
        except (DhtUnavailable, OSError, RuntimeError) as exc:
            log.warning("DHT off: %s", exc)
            await run.rendezvous.close()
            run.rendezvous = None
            return
        run.contacts.on_change = run.rendezvous.changed
        for peer_id in run.contacts.unaddressed():
            # Added by id (`chinwag add PEER_ID`, or not found before the last stop).
            run.rendezvous.lookup_soon(peer_id, self._dht_found, new=True)

    def _dht_found(self, peer_id: str, record: DhtRecord) -> None:
        """A contact's newer record: dial its addresses, then its relays."""
        if self._run is not None:
            self._run.contacts.learned(peer_id, list(record.addrs), list(record.relays))

    async def lookup(self, peer_id: str) -> ev.Lookup:
        """Look peer_id's record up on the DHT (emits `lookup`); a contact's newer record is
        dialled. UsageError for a malformed id or with the DHT off."""
        run = self._running()
        peer_id = peer_id.strip().lower()
        try:
            key_from_peer_id(peer_id)
        except BadIdentity as exc:
            raise UsageError(f"not a peer id: {exc}") from None
        if run.rendezvous is None:
            raise UsageError("the DHT is off (--no-dht, or libtorrent is missing)")
        record = await run.rendezvous.lookup(peer_id)
        if record is not None and run.contacts.is_contact(peer_id):
            run.rendezvous.acted(peer_id, record.seq)
            self._dht_found(peer_id, record)
        return run.rendezvous.last_lookup

    def add_peer(self, peer_id: str) -> ev.ContactAdded:
        """Add a contact known only by its peer id (emits contact_added), look it up on the
        DHT and dial what its record says. UsageError for a malformed id."""
        run = self._running()
        event, _new = run.contacts.add_id(peer_id, self.identity.peer_id)
        if run.rendezvous is None:
            self._emit(
                ev.Alert(
                    message="the DHT is off: this contact is reached only "
                    "when it connects to us or is on our LAN"
                )
            )
        elif event.peer_id not in run.manager.peers:
            run.rendezvous.lookup_soon(event.peer_id, self._dht_found, new=True)
        return event

    def _nick_changed(self, peer_id: str, nick: str) -> None:
        """A peer changed its nick: show it, at most once per NICK_CHANGE_MIN_GAP_S.

        Changes within the gap are shown as one at its end (the latest nick); the nick
        itself is current at once (peer list, /msg).
        """
        old = self._nicks.get(peer_id, "?")
        self._nicks[peer_id] = nick
        if nick == old:
            return
        self._check_impostor(peer_id, nick)
        if peer_id in self._nick_pending:
            log.debug("nick change of %s to %r shown later (rate-limited)", peer_id[:8], nick)
            return
        loop = asyncio.get_running_loop()
        last, shown = self._nick_shown.get(peer_id, (-1e18, old))
        wait = last + limits.NICK_CHANGE_MIN_GAP_S - loop.time()
        if wait <= 0:
            self._show_nick(peer_id, shown)
        else:
            self._nick_pending[peer_id] = loop.call_later(wait, self._show_nick, peer_id, shown)

    def _show_nick(self, peer_id: str, old: str) -> None:
        self._nick_pending.pop(peer_id, None)
        nick = self._nicks.get(peer_id)
        if nick is None or nick == old:
            return  # gone, or back to the nick last shown
        self._nick_shown[peer_id] = (asyncio.get_running_loop().time(), nick)
        self._emit(ev.NickChanged(peer_id=peer_id, nick=nick, old=old))

    def _check_impostor(self, peer_id: str, nick: str) -> None:
        """Alert (once per peer and nick) if peer_id uses the nick of a peer we verified."""
        impostor = self._running().book.impostor_of(peer_id, nick)
        if impostor is None:
            return
        if self._warn(
            ("impostor", peer_id, nick),
            "%s uses the nick %r of verified peer %s",
            peer_id[:8],
            nick,
            impostor[:8],
        ):
            self._emit(
                ev.Alert(
                    message=f"{nick!r} is now a different key "
                    f"({short_id(peer_id)}) than the one you verified ({short_id(impostor)}); "
                    f"private messages to {nick} are held until you decide: /acceptkey {nick} "
                    f"(after checking the safety number) or /discardheld {nick}",
                    peer_id=peer_id,
                )
            )

    def _is_contact(self, peer_id: str) -> bool:
        """Return whether peer_id is one of our contacts (an invite we added)."""
        return self._run is not None and self._run.contacts.is_contact(peer_id)

    def _peer_rank(self, peer_id: str) -> int:
        """Return whom the peer limit keeps first: verified, then seen before or contacts,
        then strangers."""
        if self._run is not None and peer_id in self._run.book.verified:
            return VERIFIED
        if self._run is not None and self._run.contacts.is_contact(peer_id):
            return SEEN
        return SEEN if peer_id in self._seen_peers else STRANGER

    def _untimely(self, conn: PeerConnection, frame: m.Chat) -> bool:
        """Return True if a chat's time is not acceptable (docs/protocol.md, section 7.1).

        Outside the fixed range: its author (if it sent it itself) is disconnected with
        `bad_timestamp`; a relay or a sync push of it (an older peer may hold one) is only
        dropped, so two honest peers never disconnect each other over it. More than a day
        ahead of our clock: dropped without closing; sync offers it again once it is due.
        """
        try:
            body = m.decode_body(frame.body)
        except RemoteProtocolError:
            return False  # malformed: history refuses it and closes the connection
        now_ms = int(time.time() * 1000)
        verdict = m.ts_verdict(body.ts, now_ms)
        if verdict is None:
            return False
        sender = conn.session.peer_id or "?"
        if verdict == m.BAD_TIMESTAMP and peer_id_from_public(body.author) == sender:
            log.warning("disconnecting %s: its message is dated %d (ms)", sender[:8], body.ts)
            conn.close(m.BAD_TIMESTAMP)
        elif verdict == m.BAD_TIMESTAMP:
            self._warn(
                ("bad_ts", sender),
                "dropping a message from %s dated %d (ms), out of range",
                sender[:8],
                body.ts,
            )
        else:
            self._warn(
                ("ts_ahead", sender),
                "not accepting yet a message from %s dated %d ms ahead of our clock",
                sender[:8],
                body.ts - now_ms,
            )
        return True

    def _local_info(self) -> LocalInfo:
        assert self._local is not None
        return self._local

    def _running(self) -> _Running:
        """Return the running parts; raise UsageError if the node is not started."""
        if self._run is None:
            raise UsageError("the node is not started")
        return self._run

    def _is_private_room(self, name: str) -> bool:
        """Return whether our joined room `name` (display name) is a private room."""
        room = self._running().book.find(name)
        return room is not None and room.kind == PRIVATE

    def _emit(self, event: ev.NodeEvent) -> None:
        if isinstance(event, ev.Message | ev.DirectMessage):
            event = _sane_ts(event)
        if (
            isinstance(event, ev.Message | ev.DirectMessage)
            and event.text.startswith(OFFER_MARK)
            and self._run is not None
        ):
            files = self._run.files
            offer = files.offer_message(event, _offer_room(event))
            self._deliver(msgspec.structs.replace(event, text=files.render(event.text)))
            if offer is not None:
                self._deliver(offer)
            return
        self._deliver(event)

    def _render(
        self, msgs: list[ev.Message | ev.DirectMessage]
    ) -> list[ev.Message | ev.DirectMessage]:
        """Return messages with file offers shown as readable lines and marks on our own.

        Our own carry `delivered`/`of`: one lookup each in the receipts the replica
        holds in memory (loaded once per room), no query per message.
        """
        msgs = [_sane_ts(msg) for msg in msgs]
        if self._run is None:
            return msgs
        files = self._run.files
        out: list[ev.Message | ev.DirectMessage] = []
        for msg in msgs:
            if msg.text.startswith(OFFER_MARK):
                msg = msgspec.structs.replace(msg, text=files.render(msg.text))
            if msg.own:
                count, of = self.delivery_of(msg)
                msg = msgspec.structs.replace(msg, delivered=count, of=of)
            out.append(msg)
        return out

    def _deliver(self, event: ev.NodeEvent) -> None:
        if self._held is not None:
            self._held.append(event)
            return
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber failed")


def _is_loopback(host: str) -> bool:
    """Whether a bind address is a loopback one (nothing to map on a router then)."""
    return host.startswith("127.") or host in ("::1", "localhost")


def _int_setting(value: object) -> int:
    """Return a saved integer setting, or 0 if it is missing or not an integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _chat_text(text: str) -> str:
    """Return text if it can be sent as a chat message (file offers are made by send_file)."""
    text = validate_text(text)
    if text.startswith(OFFER_MARK):
        raise UsageError("a message may not start with that control character")
    return text


def _sane_ts(msg: ev.Message | ev.DirectMessage) -> ev.Message | ev.DirectMessage:
    """Return msg with its time clamped into the range accepted on receipt.

    Messages stored before that check existed may carry any time; no UI (nor a JSON
    client) should get one it cannot turn into a date.
    """
    ts = m.clamp_ts_s(msg.ts)
    return msg if ts == msg.ts else msgspec.structs.replace(msg, ts=ts)


def _offer_room(event: ev.Message | ev.DirectMessage) -> str:
    """Return where an offer was made: a room name, or `@peer_id` of the other party."""
    if isinstance(event, ev.DirectMessage):
        return "@" + (event.to if event.own else event.peer_id)
    return event.room


def _held_event(row: HeldRow) -> ev.DmHeld:
    return ev.DmHeld(
        id=row.id,
        nick=row.nick,
        peer_id=row.new_peer,
        old_peer_id=row.old_peer,
        text=row.text,
        ts=row.ts,
    )
