"""Contacts, invites and our own address (issue 14): the adapter between the Node, the
store's `contacts` table, the connection manager and protocol/reach.py.

A contact is a peer added by its invite code. It is stored, dialled at every start and
whenever the network changes (new interface addresses, or a new public address seen by
peers), by every address its invite named plus the last one it was seen at, with the
manager's back-off; relays named in the invite are tried through the relay helper's
`dial_via` when this build has it. Our own reachable addresses (for our invites) are
the interfaces', the public ones peers confirmed (protocol/reach.py, persisted in the
settings for the next run and for `chinwag invite`), a UPnP mapping and relays.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.identity import BadIdentity, Identity, key_from_peer_id, short_id
from chinwag.datadir import DataDir
from chinwag.errors import DataDirLocked, UsageError
from chinwag.net.connection import PeerConnection
from chinwag.net.discovery import attached_networks
from chinwag.net.manager import ConnectionManager
from chinwag.net.netwatch import NetWatch, lan_addrs
from chinwag.protocol import messages as m
from chinwag.protocol.addr import AddrError, format_addr, normalize_addr
from chinwag.protocol.invite import Invite, make_invite, read_invite
from chinwag.protocol.reach import Reach, parse_observed
from chinwag.store.db import ContactRow, Store

log = logging.getLogger(__name__)

#: The settings key of what we know of our reachability (read by `chinwag invite`).
REACH_SETTING = "reach"


def invite_event(
    identity: Identity,
    nick: str,
    addrs: list[str],
    relays: list[tuple[str, str]],
    now: float,
) -> ev.Invite:
    """Return a fresh signed invite (valid INVITE_TTL_S) naming addrs (deduplicated) and relays."""
    unique: list[str] = []
    for addr in addrs:
        try:
            addr = normalize_addr(addr)
        except AddrError:
            continue
        if addr not in unique:
            unique.append(addr)
    unique = unique[: limits.MAX_INVITE_ADDRS]
    relays = relays[: limits.MAX_INVITE_RELAYS]
    expires = int(now) + limits.INVITE_TTL_S
    code = make_invite(identity, nick, unique, relays, expires)
    return ev.Invite(
        code=code,
        addresses=unique,
        relays=[ev.RelayAddr(peer_id=r, address=a) for r, a in relays],
        peer_id=identity.peer_id,
        expires=float(expires),
    )


def offline_invite(
    data_dir: Path, identity: Identity, nick: str, port: int | None, bind: str | None
) -> ev.Invite:
    """Return an invite made without a running node (`chinwag invite`).

    It names what the last run saw (its port, bind address and confirmed public
    addresses, saved in the settings) unless `port`/`bind` are given.
    """
    reach = _reach_setting(DataDir(data_dir).load_settings())
    port = port or int(reach.get("port") or limits.DEFAULT_TCP_PORT)
    bind = bind or str(reach.get("bind") or "0.0.0.0")
    public = [str(a) for a in reach.get("public") or []]
    upnp = reach.get("upnp")
    relays = [(str(r), str(a)) for r, a in reach.get("relays") or []]
    addrs = ([str(upnp)] if upnp else []) + public + lan_addrs(bind, port)
    return invite_event(identity, nick, addrs, relays, time.time())


def store_contact(data_dir: Path, code: str) -> ev.ContactAdded:
    """Add the peer of an invite code, or a peer id alone (found on the DHT at the next
    start), as a contact without running a node (`chinwag add`).

    Raises InviteError for a bad code, UsageError for a bad peer id, DataDirLocked while a
    chinwag runs on data_dir (then `/add CODE` in it does the same and connects at once).
    """
    peer_id = code.strip().lower()
    by_id = len(peer_id) == 52 and peer_id.isascii() and peer_id.isalnum()
    if by_id:
        try:
            key_from_peer_id(peer_id)
        except BadIdentity as exc:
            raise UsageError(f"not a peer id ({exc}) nor an invite code") from None
        invite = None
    else:
        invite = read_invite(code, time.time())
        peer_id = invite.id
    datadir = DataDir(data_dir)
    try:
        datadir.open()
    except DataDirLocked:
        raise DataDirLocked(
            "chinwag is running on this data directory: type /add CODE in it instead"
        ) from None
    try:
        from chinwag.datadir import load_or_create_identity

        if peer_id == load_or_create_identity(data_dir).peer_id:
            raise UsageError("that is your own " + ("peer id" if by_id else "invite code"))
        store = Store(data_dir / "chinwag.db")
        try:
            old = {row.peer_id: row for row in store.contacts()}
            if peer_id not in old and len(old) >= limits.MAX_CONTACTS:
                raise UsageError(f"you have {limits.MAX_CONTACTS} contacts already")
            if invite is not None:
                row = _contact_row(invite, old.get(peer_id))
            else:
                # Known by its id alone: its addresses come from the DHT at the next start.
                row = old.get(peer_id) or ContactRow(
                    peer_id=peer_id, nick=short_id(peer_id), addrs=[], relays=[],
                    added_at=time.time(),
                )  # fmt: skip
            store.save_contact(row)
        finally:
            store.close()
    finally:
        datadir.close()
    return ev.ContactAdded(peer_id=row.peer_id, nick=row.nick)


def _contact_row(invite: Invite, old: ContactRow | None) -> ContactRow:
    """Return the contact an invite makes (keeping when an earlier one was added and seen)."""
    return ContactRow(
        peer_id=invite.id,
        nick=invite.nick,
        addrs=list(invite.addrs),
        relays=[(r, a) for r, a in invite.relays],
        added_at=old.added_at if old is not None else time.time(),
        last_seen=old.last_seen if old is not None else 0.0,
    )


def _reach_setting(settings: dict[str, Any]) -> dict[str, Any]:
    value = settings.get(REACH_SETTING)
    return value if isinstance(value, dict) else {}


class ContactBook:
    """Contacts and our own address, for one running node."""

    def __init__(
        self,
        store: Store,
        manager: ConnectionManager,
        datadir: DataDir,
        emit: Callable[[ev.NodeEvent], None],
        bind: str,
        hooks: Callable[[], tuple[str | None, list[tuple[str, str]]]] = lambda: (None, []),
    ) -> None:
        """Made before the node listens (peers may report our address at once); load() follows.

        `hooks()` returns the UPnP mapping and the relay reservations now (Node's hooks).
        """
        self._store = store
        self._manager = manager
        self._datadir = datadir
        self._emit = emit
        self._bind = bind
        self._hooks = hooks
        self._port = 0
        self._contacts: dict[str, ContactRow] = {}
        self.reach = Reach(0)
        saved = _reach_setting(datadir.load_settings())
        #: Public addresses confirmed in the last run: offered until this run confirms some.
        self._last_public = [str(a) for a in saved.get("public") or []][: limits.MAX_PUBLIC_ADDRS]
        self._summary: tuple[list[str], bool | None] = ([], None)
        self._watch: NetWatch | None = None
        self._saved: dict[str, Any] | None = None
        #: Connections whose `obs` was taken: one report per connection (more are ignored).
        self._reported: weakref.WeakSet[PeerConnection] = weakref.WeakSet()
        self._last_public_redial = -limits.PUBLIC_CHANGE_REDIAL_MIN_S
        #: Called when our addresses, mapping or relays may have changed (the DHT record).
        self.on_change: Callable[[], None] = lambda: None

    # --- lifecycle ------------------------------------------------------

    def load(self, port: int) -> None:
        """Load the contacts, dial them all, watch the network, note our port for invites."""
        self._port = self.reach.listen_port = port
        self._contacts = {row.peer_id: row for row in self._store.contacts()}
        self._save_reach()
        for row in self._contacts.values():
            self._dial(row)
        # Each poll also saves a new UPnP mapping or reservation for `chinwag invite`.
        self._watch = NetWatch(
            lambda _ips: self.network_changed("interface addresses"),
            self._save_reach,
        )
        self._watch.start()

    def close(self) -> None:
        """Stop watching the network (no await: stopping a node must not yield here)."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    # --- queries --------------------------------------------------------

    def is_contact(self, peer_id: str) -> bool:
        return peer_id in self._contacts

    def relays_of(self, peer_id: str) -> list[str]:
        """Return the peer ids of the relays a contact's invite names (its mailboxes first)."""
        row = self._contacts.get(peer_id)
        return [relay for relay, _addr in row.relays] if row is not None else []

    def unaddressed(self) -> list[str]:
        """Return the contacts we know no address or relay of (added by id, not found yet)."""
        return [p for p, row in self._contacts.items() if not row.addrs and not row.relays]

    def public_addrs(self) -> list[str]:
        """Our public addresses: confirmed by peers in this run, else in the last one."""
        return self.reach.public_addrs(time.monotonic()) or list(self._last_public)

    def invite(
        self, identity: Identity, nick: str, upnp: str | None, relays: list[tuple[str, str]]
    ) -> ev.Invite:
        """Return a fresh invite naming the UPnP mapping, public and LAN addresses, relays."""
        self._save_reach()
        return invite_event(identity, nick, self.own_addrs(upnp), relays, time.time())

    def own_addrs(self, upnp: str | None) -> list[str]:
        """Return where peers may dial us: the UPnP mapping, public then LAN addresses."""
        return ([upnp] if upnp else []) + self.public_addrs() + lan_addrs(self._bind, self._port)

    def listing(self, nicks: dict[str, str]) -> ev.Contacts:
        """Return every contact with whether it is online and how it is reached."""
        out = []
        now = time.time()
        for row in self._contacts.values():
            conn = self._manager.peers.get(row.peer_id)
            out.append(
                ev.ContactInfo(
                    peer_id=row.peer_id,
                    nick=nicks.get(row.peer_id, row.nick),
                    online=conn is not None,
                    path="" if conn is None else path_of(conn),
                    last_seen=now if conn is not None else row.last_seen,
                )
            )
        return ev.Contacts(contacts=out)

    # --- commands -------------------------------------------------------

    def add(self, code: str, own_peer_id: str) -> ev.ContactAdded:
        """Store the peer of an invite code as a contact and dial it; InviteError if bad."""
        invite = read_invite(code, time.time())
        if invite.id == own_peer_id:
            raise UsageError("that is your own invite code")
        old = self._contacts.get(invite.id)
        if old is None and len(self._contacts) >= limits.MAX_CONTACTS:
            raise UsageError(f"you have {limits.MAX_CONTACTS} contacts already; /forget one")
        row = _contact_row(invite, old)
        self._store.save_contact(row)
        self._contacts[row.peer_id] = row
        if old is not None:
            # A newer code: its addresses replace the old ones in the dial table.
            self._manager.forget_contact(row.peer_id)
        log.info("contact added: %s (%s) at %s", row.nick, short_id(row.peer_id), row.addrs)
        event = ev.ContactAdded(peer_id=row.peer_id, nick=row.nick)
        self._emit(event)
        self._dial(row)
        return event

    def add_id(self, peer_id: str, own_peer_id: str) -> tuple[ev.ContactAdded, bool]:
        """Store a peer known only by its id as a contact (its addresses come from the DHT);
        return (event, whether it is new). UsageError for a malformed id or our own."""
        peer_id = peer_id.strip().lower()
        try:
            key_from_peer_id(peer_id)
        except BadIdentity as exc:
            raise UsageError(
                f"not a peer id ({exc}): give the 52-character id or an invite code"
            ) from None
        if peer_id == own_peer_id:
            raise UsageError("that is your own peer id")
        old = self._contacts.get(peer_id)
        if old is None and len(self._contacts) >= limits.MAX_CONTACTS:
            raise UsageError(f"you have {limits.MAX_CONTACTS} contacts already; /forget one")
        row = old or ContactRow(
            peer_id=peer_id, nick=short_id(peer_id), addrs=[], relays=[], added_at=time.time()
        )
        self._store.save_contact(row)
        self._contacts[peer_id] = row
        log.info("contact added by id: %s", short_id(peer_id))
        event = ev.ContactAdded(peer_id=peer_id, nick=row.nick)
        self._emit(event)
        if old is not None:
            self._dial(row)
        return event, old is None

    def learned(self, peer_id: str, addrs: list[str], relays: list[tuple[str, str]]) -> None:
        """A newer DHT record says where a contact is: dial there first, then what we knew."""
        row = self._contacts.get(peer_id)
        if row is None:
            return
        merged = [*addrs, *(a for a in row.addrs if a not in addrs)]
        row.addrs = merged[: limits.MAX_INVITE_ADDRS]
        row.relays = (relays or row.relays)[: limits.MAX_INVITE_RELAYS]
        self._store.save_contact(row)
        # A new round: the record's addresses and relays replace the table's.
        self._manager.forget_contact(peer_id)
        self._dial(row)

    def forget(self, who: str, nicks: dict[str, str]) -> ev.ContactForgotten:
        """Remove a contact named by id, id prefix (8+ characters) or nick."""
        peer_id = self._resolve(who.strip().lstrip("@"), nicks)
        row = self._contacts.pop(peer_id)
        self._store.forget_contact(peer_id)
        self._manager.forget_contact(peer_id)
        return ev.ContactForgotten(peer_id=peer_id, nick=nicks.get(peer_id, row.nick))

    def _resolve(self, who: str, nicks: dict[str, str]) -> str:
        if who in self._contacts:
            return who
        if len(who) >= 8:
            by_prefix = [p for p in self._contacts if p.startswith(who.lower())]
            if len(by_prefix) == 1:
                return by_prefix[0]
        by_nick = [p for p, r in self._contacts.items() if nicks.get(p, r.nick) == who]
        if len(by_nick) == 1:
            return by_nick[0]
        if by_nick:
            ids = ", ".join(short_id(p) for p in by_nick)
            raise UsageError(f"several contacts are called {who!r}: {ids}; use an id")
        raise UsageError(f"no contact {who[:40]!r}; /contacts lists them")

    # --- events from the node -------------------------------------------

    def peer_joined(self, conn: PeerConnection) -> None:
        """A contact connected: note when, its nick, and the address it is at now."""
        row = self._contacts.get(conn.session.peer_id or "")
        if row is None:
            return
        row.last_seen = time.time()
        row.nick = conn.session.peer_nick or row.nick
        port = conn.session.peer_port
        if port and path_of(conn) != "relayed":
            # Where it is now (its listening port there): tried first next time.
            seen = format_addr(conn.address[0], port)
            row.addrs = [seen, *(a for a in row.addrs if a != seen)][: limits.MAX_INVITE_ADDRS]
        self._store.save_contact(row)

    def peer_left(self, peer_id: str, redial: bool = False) -> None:
        row = self._contacts.get(peer_id)
        if row is not None:
            row.last_seen = time.time()
            self._store.save_contact(row)
            if redial:
                # Its path broke (a relay died, a network moved), not a goodbye: try every
                # route again now, relays included (the table alone redials only addresses).
                self._dial(row)

    def observed(self, conn: PeerConnection, frame: m.Observed) -> None:
        """A peer says where it sees us; RemoteProtocolError if it is not an address.

        Only the first report of a connection counts: a peer cannot flip its view (and
        with it our public address) without reconnecting.
        """
        parse_observed(frame.addr)  # unparseable: a protocol error, first report or not
        if conn in self._reported:
            log.debug("ignoring a repeated report of our address from %s", conn.peer_id)
            return
        self._reported.add(conn)
        local_port = 0
        if conn.transport is not None:
            sockname = conn.transport.get_extra_info("sockname")
            if sockname:
                local_port = int(sockname[1])
        kept = self.reach.observed(
            conn.session.peer_id or "?",
            conn.address[0],
            frame.addr,
            local_port,
            conn.session.dialled,
            time.monotonic(),
        )
        if not kept:
            log.debug("ignoring %s's report of our address %r", conn.peer_id, frame.addr[:64])
            return
        summary = self.reach.summary(time.monotonic())
        if summary == self._summary:
            return
        old_public = self._summary[0]
        self._summary = summary
        log.info("our public addresses: %s; symmetric NAT: %s", summary[0], summary[1])
        self._save_reach()
        now = time.monotonic()
        if summary[0] != old_public and now - self._last_public_redial >= (
            limits.PUBLIC_CHANGE_REDIAL_MIN_S
        ):
            self._last_public_redial = now
            self.network_changed("public address")

    def network_changed(self, why: str) -> None:
        """Our addresses changed: dial every contact not connected now (not at back-off)."""
        self.on_change()
        offline = [r for r in self._contacts.values() if r.peer_id not in self._manager.peers]
        if offline:
            log.info("%s changed: dialling %d contact(s)", why, len(offline))
        for row in offline:
            self._dial(row)

    # --- internals ------------------------------------------------------

    def _dial(self, row: ContactRow) -> None:
        # Also when connected: its addresses must be in the table for when it goes away
        # (the table does not dial a connected peer).
        self._manager.dial_contact(row.peer_id, row.addrs, row.relays)

    def _save_reach(self) -> None:
        """Persist what `chinwag invite` needs (written only when it changed)."""
        upnp, relays = self._hooks()
        state: dict[str, Any] = {
            "port": self._port,
            "bind": self._bind,
            "public": self.public_addrs(),
            "symmetric": self._summary[1],
            "upnp": upnp,
            "relays": [list(r) for r in relays],
        }
        if state != self._saved:
            if self._saved is not None:
                self.on_change()
            try:
                self._datadir.save_setting(REACH_SETTING, state)
            except OSError as exc:
                log.warning("cannot save what we know of our addresses: %s", exc)
            self._saved = state


def path_of(conn: PeerConnection) -> str:
    """Return how a connected peer is reached: the relay helper's `conn.path` if this build
    has it, else "lan" (its address is on one of our networks) or "direct"."""
    path = getattr(conn, "path", None)
    if isinstance(path, str) and path:
        return path
    try:
        ip = ipaddress.ip_address(conn.address[0])
    except ValueError:
        return "direct"
    if ip.is_loopback:
        return "lan"
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in net for net in attached_networks()):
        return "lan"
    return "direct"
