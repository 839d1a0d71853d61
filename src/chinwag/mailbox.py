"""Mailboxes: the adapter of protocol/mailbox.py (docs/dht.md "Mailboxes").

Three roles, one object per node:
- author: a private message committed while its reader is not connected is
  signed, put inside our Olm ratchet with the reader if we hold its keys (forward
  secrecy: PrivateChannel.wrap), sealed to the reader with its author inside, and
  put (`mput`) to up to MAILBOX_HOLDERS connected
  peers likely to meet it (its relays, then members of a room the reader is in,
  then peers sharing a room with us); a refusal (`mno`) sends it to the next;
  each acceptance (`mok`) is reported as `{"event":"mailed","id":..,"holders":n}`.
- holder: takes items from their depositors (the rules are `Holder.put`; it cannot
  see their authors: those are inside the seal), stores them in SQLite (table
  `mailbox`, the depositor only as a tag keyed by a secret of this process, so the
  database at rest does not say who deposited what) and delivers them (`mail`) when the reader
  connects; the reader's `mack` deletes them (a tombstone stays until expiry,
  at most MAILBOX_MAX_TOMBSTONES).
  Expired items are purged every MAILBOX_PURGE_INTERVAL_S.
- reader: budgets delivered frames per holder, opens delivered items, stores the
  messages through history (which dedups by id), acknowledges once committed (or
  at once if history refuses them: never stored), and mails its receipt (its
  vector of the conversation) back to an author that is not connected, so the
  author's `delivered` count rises when it returns, even if we are gone by then.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.box import BadCiphertext
from chinwag.crypto.identity import Identity, public_from_peer_id
from chinwag.errors import ChinwagError, RemoteProtocolError
from chinwag.private import inner
from chinwag.protocol import mailbox as mb
from chinwag.protocol import messages as m
from chinwag.protocol.chat import ChatMessage
from chinwag.protocol.kinds import RoomKind, kind_of_wire
from chinwag.protocol.reasons import MailRefusal
from chinwag.rooms import RoomBook
from chinwag.store.db import Store, StoreError

if TYPE_CHECKING:
    from chinwag.history import History
    from chinwag.net.link import Link, Links
    from chinwag.private import PrivateChannel

log = logging.getLogger(__name__)

_item_decoder = msgspec.msgpack.Decoder(m.MailItem)
_private_decoder = msgspec.msgpack.Decoder(m.PrivateInner)

#: Kind of the `PrivateInner` that carries a mailed frame inside the pair's Olm ratchet.
MAIL_KIND = "mail"


class Mailbox:
    """Mail that waits for its reader: author, holder and reader of one node."""

    def __init__(
        self,
        store: Store,
        identity: Identity,
        manager: Links,
        history: History,
        book: RoomBook,
        emit: Callable[[ev.NodeEvent], None],
        reader_rooms: Callable[[str], set[str]] = lambda _peer: set(),
        relays_of: Callable[[str], list[str]] = lambda _peer: [],
        reach: Callable[[str], None] = lambda _peer: None,
        room_members: Callable[[str], list[str]] = lambda _wire: [],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """reader_rooms(peer): rooms its presence record names; relays_of(peer): its relays;
        reach(peer): dial peer if its presence record says it is online;
        room_members(wire): members of a joined room its presence records name."""
        self.store = store
        self.identity = identity
        self.me = identity.peer_id
        self.manager = manager
        self.history = history
        self.book = book
        self._emit = emit
        self._reader_rooms = reader_rooms
        self._relays_of = relays_of
        self._reach = reach
        self._room_members = room_members
        self._clock = clock
        # A fresh key per run: the `sender` column counts a depositor's quota while we run,
        # and names no one once we stopped (its old tags just count in the total).
        tag_key = os.urandom(32)
        self.holder = mb.Holder(
            identity.public,
            tag=lambda peer: hashlib.blake2b(
                peer.encode(), key=tag_key, digest_size=16
            ).hexdigest(),
        )
        self.inbox = mb.Inbox(identity.public)
        self.outbox = mb.Outbox()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._send_soon: asyncio.Handle | None = None
        #: Receipts to mail (author, conversation) -> the holder that delivered (tried first).
        self._receipts: dict[tuple[str, str], str] = {}
        self._receipt_timer: asyncio.TimerHandle | None = None
        #: What our last mailed receipt of (author, conversation) said: no repeats.
        self._receipted: dict[tuple[str, str], dict[str, int]] = {}
        #: Our new items to save (the queue survives a restart until a holder keeps them).
        self._to_save: list[tuple[bytes, bytes, str | None, str | None]] = []
        self._closed = False
        #: Our room messages waiting for a connected holder, unsealed (msg id -> (wire, msg)).
        self._unsealed: dict[str, tuple[str, ChatMessage]] = {}
        #: Items queued in this loop turn: only they are planned at its end (not all pending).
        self._fresh: list[bytes] = []
        #: Reader -> items we hold for it (kept in memory: presence changes ask often).
        self._held_for: dict[str, int] = {}
        #: Pairwise Olm ratchets (set by the node): mail to a peer whose keys we hold goes
        #: inside them, so held mail is forward-secret; None: sealed to its key alone.
        self.private: PrivateChannel | None = None

    def load(self) -> None:
        """Purge expired mail, count what is held, arm the purge timer; reload our queue."""
        self._purge()
        try:
            saved = self.store.outgoing()
        except StoreError as exc:
            log.warning("mailbox: cannot read our saved mail: %s", exc)
            saved = []
        stale = []
        for raw, msg_id, room in saved:
            try:
                item = _item_decoder.decode(raw)
            except msgspec.DecodeError:
                continue
            if item.exp <= self._clock():
                stale.append(mb.mail_id(item.box))
            else:
                self.outbox.add(item, msg_id, room)
        if stale:
            self._forget(stale)
        self._sync_saved()

    def close(self) -> None:
        """Mail the receipts still waiting (connections are still open), stop the timers."""
        if self._receipts and not self._closed:
            self._mail_receipts()
        if self._send_soon is not None and not self._closed:
            self._send_fresh()  # what was written in this last turn
        self._sync_saved()
        self._closed = True
        for handle in (self._timer, self._send_soon, self._receipt_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._send_soon = self._receipt_timer = None

    def _purge(self) -> None:
        self._timer = None
        if self._closed:
            return
        try:
            expired = self.store.purge_mail(int(self._clock()))
            if expired:
                log.info("mailbox: %d items expired unread", expired)
            self.holder.load(self.store.mail_usage())
            self._held_for = self.store.mail_recipient_counts()
        except StoreError as exc:
            log.warning("mailbox: cannot purge expired mail: %s", exc)
        self._timer = self._loop.call_later(limits.MAILBOX_PURGE_INTERVAL_S, self._purge)

    # --- author -------------------------------------------------------------------

    def own_committed(self, to: str, msg: ChatMessage) -> None:
        """Our private message to `to` is committed: mail it if `to` is not connected."""
        if self._closed or to in self.manager.peers:
            return
        chat = m.Chat(body=msg.raw_body, sig=msg.sig)
        self._mail(to, chat, msg.id)

    def own_room_committed(self, wire: str, msg: ChatMessage) -> None:
        """Our room message is committed: if no member of the room is connected (no one
        carries it), mail it to up to MAILBOX_ROOM_READERS members that are offline; while
        no holder is connected, it waits unsealed (sealed when one connects)."""
        if self._closed or self._mail_room(wire, msg):
            return
        # No one to hand items to: sealing and signing them now would be waste at every
        # post of a user alone (and they would wait in the outbox all the same).
        self._unsealed.pop(msg.id, None)
        self._unsealed[msg.id] = (wire, msg)
        while len(self._unsealed) > limits.MAILBOX_UNSEALED_MAX:
            del self._unsealed[next(iter(self._unsealed))]

    def _mail_room(self, wire: str, msg: ChatMessage) -> bool:
        """Mail our room message to its offline members; return False if no holder for
        any of them is connected (nothing made: to retry when one connects)."""
        peers = self.manager.peers
        if not peers:
            return False
        if any(self.book.peer_in(p, wire) for p in peers):
            return True  # members store and sync it: it reaches the others through them
        # Members we know: those that sent us receipts (most recent last), then presence.
        known = list(reversed(self.history.replica.room_receipts(wire)))
        known += self._room_members(wire)
        readers: dict[str, None] = {}
        for peer in known:
            if len(readers) >= limits.MAILBOX_ROOM_READERS:
                break
            if peer != self.me and peer not in peers:
                readers[peer] = None
        if not any(self.candidates(reader) for reader in readers):
            return not readers  # no reader known: nothing to mail, ever
        chat = m.Chat(body=msg.raw_body, sig=msg.sig)
        for reader in readers:
            self._mail(reader, chat, msg.id, wire)
        return True

    def _seal_waiting(self) -> None:
        """A peer connected or announced its rooms: mail the room messages that waited
        for a holder (those a member now carries are dropped by _mail_room)."""
        if not self._unsealed or self._closed or not self.manager.peers:
            return
        waiting, self._unsealed = self._unsealed, {}
        for msg_id, (wire, msg) in waiting.items():
            if not self._mail_room(wire, msg):
                self._unsealed[msg_id] = (wire, msg)

    def _mail(
        self, to: str, frame: m.Chat | m.Vector, msg_id: str | None, room: str | None = None
    ) -> None:
        exp = int(self._clock()) + limits.MAILBOX_TTL_S
        self._queue(self._make(to, frame, exp), msg_id, room)

    def _make(self, to: str, frame: m.Chat | m.Vector, exp: int) -> m.MailItem:
        """Our item for reader `to`: inside our Olm ratchet with it if we hold its keys (a
        pre-key message from its fallback key if we share no session), else sealed only."""
        public = public_from_peer_id(to)
        private = self.private
        if private is not None:
            try:
                return mb.make_item(
                    self.identity,
                    public,
                    frame,
                    exp,
                    wrap=lambda data: private.wrap(to, inner(MAIL_KIND, data)),
                    okeys=private.presence_keys(),
                )
            except (ChinwagError, StoreError) as exc:  # NoKeys: a reader we never met
                log.info("mailbox: mail to %s without a ratchet: %s", to[:8], exc)
        return mb.make_item(self.identity, public, frame, exp)

    def _unwrap(self, author: str, body: bytes) -> bytes:
        """Take a mailed frame out of our Olm ratchet with its author (raise BadCiphertext
        or msgspec.DecodeError if it is not one; StoreError if the ratchet cannot be saved)."""
        if self.private is None:
            raise BadCiphertext("no ratchets here")
        got = _private_decoder.decode(self.private.unwrap(author, body))
        if got.kind != MAIL_KIND:
            raise BadCiphertext(f"a {got.kind[:16]!r} frame inside mail")
        return got.data

    def _learn(self, author: str, keys: m.PublishedKeys, signed_at: float) -> None:
        """Keep the Olm keys a mailed item carries (if newer than ours: section 26.6)."""
        if self.private is not None:
            self.private.learn_published(author, keys, signed_at, mailed=True)

    def _queue(self, item: m.MailItem, msg_id: str | None, room: str | None = None) -> None:
        """Queue our item for holders (saved, then put, at the end of this loop turn)."""
        ident = self.outbox.add(item, msg_id, room)
        self._to_save.append((ident, m.encode(item), msg_id, room))
        self._fresh.append(ident)
        if self._send_soon is None:
            # Messages written in one loop turn go out in one put per holder; only they are
            # planned (the rest was planned at the last peer event: nothing changed for it).
            self._send_soon = self._loop.call_soon(self._send_fresh)

    def _send_fresh(self) -> None:
        fresh, self._fresh = self._fresh, []
        self._send_outbox(only=fresh)

    def _send_outbox(self, first: str | None = None, only: list[bytes] | None = None) -> None:
        """Put what waits for holders to the connected candidates.

        first: a holder that delivered mail to us: it met the author's mail, so it is
        asked first for our receipts to that author (even if it is in none of our rooms,
        like a relay). only: plan these items alone (new ones), not all that wait.
        """
        if only is None and self._send_soon is not None:
            self._send_soon.cancel()  # a full plan covers this turn's new items too
            self._fresh = []
        self._send_soon = None
        if self._closed:
            return
        self._sync_saved()

        def candidates(to: str) -> list[str]:
            found = self.candidates(to)
            if first is not None and first in self.manager.peers and first != to:
                if first in found:
                    found.remove(first)
                found.insert(0, first)
            return found

        for peer, items in self.outbox.plan(candidates, only).items():
            conn = self.manager.peers.get(peer)
            if conn is None:
                continue
            for chunk in mb.pack(items):
                conn.send_frame(m.MailPut(items=chunk))

    def candidates(self, to: str) -> list[str]:
        """Return connected peers that may meet reader `to`, best first.

        Its relays (it holds reservations there), then peers in a room `to` is in
        (its presence record, or its receipts in our rooms), then peers sharing any
        room with us. A peer in no room we know of is not asked.
        """
        relays = set(self._relays_of(to))
        rooms = set(self._reader_rooms(to))
        for wire in self.book.wires():
            if kind_of_wire(wire) is not RoomKind.DM and to in self.history.replica.room_receipts(
                wire
            ):
                rooms.add(wire)
        ranked: list[tuple[int, str]] = []
        for peer in self.manager.peers:
            if peer in (to, self.me):
                continue
            # Private rooms only if admitted: a stranger announcing one must not attract mail.
            announced = self.book.presence_view(peer)
            if peer in relays:
                rank = 0
            elif rooms & announced.keys():
                rank = 1
            elif any(w in self.book.joined for w in announced):
                rank = 2
            else:
                continue
            ranked.append((rank, peer))
        ranked.sort()
        return [p for _r, p in ranked]

    def _sync_saved(self) -> None:
        """Save our new items; forget those a holder keeps now, or given up."""
        if self._to_save:
            rows, self._to_save = self._to_save, []
            try:
                self.store.save_outgoing(rows)
            except StoreError as exc:  # only costs mailing them after a restart
                log.warning("mailbox: cannot save our mail: %s", exc)
        settled = self.outbox.take_settled()
        if settled:
            self._forget(settled)

    def _forget(self, ids: list[bytes]) -> None:
        try:
            self.store.forget_outgoing(ids)
        except StoreError as exc:
            log.warning("mailbox: cannot forget our mail: %s", exc)

    # --- frames -------------------------------------------------------------------

    def frame(self, conn: Link, frame: m.MailFrame) -> None:
        """Handle a mail frame from a connected peer."""
        if self._closed:
            return
        peer = conn.peer_id or ""
        if isinstance(frame, m.MailPut):
            self._put(conn, peer, frame)
        elif isinstance(frame, m.MailOk):
            for report in self.outbox.kept(peer, frame.ids):
                self._emit(ev.Mailed(id=report.msg_id, holders=report.holders))
            self._sync_saved()
        elif isinstance(frame, m.MailNo):
            if self.outbox.refused(peer, frame.ids, frame.reason):
                self._send_outbox()  # an empty or repeated `mno` costs no new plan
        elif isinstance(frame, m.MailDeliver):
            self._delivered(conn, peer, frame)
        else:
            try:
                gone = self.store.mail_delivered(peer, frame.ids)
            except StoreError as exc:
                log.warning("mailbox: cannot delete delivered mail: %s", exc)
                return
            self.holder.removed(gone)
            if gone:
                left = self._held_for.get(peer, 0) - len(gone)
                if left > 0:
                    self._held_for[peer] = left
                else:
                    self._held_for.pop(peer, None)

    # --- holder -------------------------------------------------------------------

    def _put(self, conn: Link, peer: str, frame: m.MailPut) -> None:
        verdict = self.holder.put(peer, frame, self._clock(), self.store.mail_known)
        if verdict.close is not None:
            log.warning("mailbox: disconnecting %s: %s", peer[:8], verdict.close)
            self.history.mesh_invalid(peer)
            conn.close(verdict.close)
            return
        refused = verdict.refused
        if verdict.keep:
            try:
                self.store.hold_mail(
                    (h.id, h.to, h.by, h.exp, h.size, m.encode(h.item)) for h in verdict.keep
                )
            except StoreError as exc:
                log.warning("mailbox: cannot store mail: %s", exc)
                self.holder.not_stored(verdict.keep)
                refused.setdefault(MailRefusal.FULL, []).extend(h.id for h in verdict.keep)
                verdict.keep = []
        for h in verdict.keep:
            self._held_for[h.to] = self._held_for.get(h.to, 0) + 1
        for ids in mb.chunks([h.id for h in verdict.keep]):
            conn.send_frame(m.MailOk(ids=ids))
        for reason, refused_ids in refused.items():
            for ids in mb.chunks(refused_ids):
                conn.send_frame(m.MailNo(ids=ids, reason=reason))
        # A reader connected to us now gets its mail at once.
        for to in {h.to for h in verdict.keep}:
            reader = self.manager.peers.get(to)
            if reader is not None:
                self._deliver(reader, [h.item for h in verdict.keep if h.to == to])

    def _deliver(self, conn: Link, items: list[m.MailItem]) -> None:
        for chunk in mb.pack(items):
            conn.send_frame(m.MailDeliver(items=chunk))

    # --- reader -------------------------------------------------------------------

    def _delivered(self, conn: Link, holder: str, frame: m.MailDeliver) -> None:
        acks: list[bytes] = []
        chats: list[tuple[bytes, str, str, int]] = []
        reason = self.inbox.check(holder, frame, self._clock())
        if reason is not None:
            log.warning("mailbox: disconnecting holder %s: %s", holder[:8], reason)
            self.history.mesh_invalid(holder)
            conn.close(reason)
            return
        sender = public_from_peer_id(holder) if holder else None
        for item in frame.items:
            try:
                opened = mb.open_item(self.identity, item, sender, self._unwrap, self._learn)
            except StoreError as exc:
                # Ours: not acknowledged, so it comes again at the next connection.
                log.warning("mailbox: cannot open mail (our store): %s", exc)
                continue
            except RemoteProtocolError as exc:
                log.warning("mailbox: disconnecting holder %s: %s", holder[:8], exc)
                self.history.mesh_invalid(holder)
                conn.close(exc.code)
                return
            except mb.MailDropped as exc:
                log.info("mailbox: dropping mail from holder %s: %s", holder[:8], exc)
                acks.append(mb.mail_id(item.box))
                continue
            if isinstance(opened.frame, m.Vector):
                # A conversation's receipt, or a room's from a member we know already:
                # a mailed one could otherwise be anyone's, in any number.
                room = opened.frame.room
                if kind_of_wire(room) is RoomKind.DM or (
                    room in self.book.joined
                    and opened.frm in self.history.replica.room_receipts(room)
                ):
                    self.history.mail_vector(opened.frm, opened.frame)
                acks.append(opened.id)
                continue
            body = m.decode_body(opened.frame.body)  # checked by open_item
            if opened.frm in self.book.blocked or self.book.holds(body.room, opened.frm) is None:
                # Blocked, or a room we left: we will never store it; the holder may forget it.
                acks.append(opened.id)
                continue
            verdict = m.ts_verdict(body.ts, int(self._clock() * 1000))
            if verdict is not None:
                # As for any chat (node._untimely): out of range never; ahead: not yet.
                log.info(
                    "mailbox: mailed chat from %s dated %d: %s", opened.frm[:8], body.ts, verdict
                )
                if verdict == m.BAD_TIMESTAMP:
                    acks.append(opened.id)
                continue
            if not self.history.chat_received(
                conn, m.Chat(body=opened.frame.body, sig=opened.frame.sig, hist=True), mailed=True
            ):
                # Refused (does not decrypt, not remembered, over budget...): never stored
                # from this copy, so the holders may forget it (else resent for 7 days).
                acks.append(opened.id)
                continue
            chats.append((opened.id, body.room, opened.frm, body.seq))
        self.history.when_committed(lambda: self._stored(conn, holder, acks, chats))

    def _stored(
        self, conn: Link, holder: str, acks: list[bytes], chats: list[tuple[bytes, str, str, int]]
    ) -> None:
        """Mail is committed: acknowledge what we hold, mail receipts to absent authors."""
        for ident, room, author, seq in chats:
            if self.history.holds(room, author, seq):
                acks.append(ident)
                if author not in self.manager.peers:
                    self._receipts[(author, room)] = holder
        if conn.is_open:
            for ids in mb.chunks(acks):
                conn.send_frame(m.MailAck(ids=ids))
        if self._receipts and self._receipt_timer is None and not self._closed:
            # One receipt for a whole delivery (it comes in many frames), not one per frame.
            self._receipt_timer = self._loop.call_later(
                limits.MAILBOX_RECEIPT_DELAY_S, self._mail_receipts
            )

    def _mail_receipts(self) -> None:
        """Mail our vector of each conversation whose mail we stored to its absent author."""
        self._receipt_timer = None
        receipts, self._receipts = self._receipts, {}
        firsts: set[str] = set()
        for (author, room), holder in sorted(receipts.items()):
            if author in self.manager.peers:
                continue  # it is back: our vector reaches it the usual way
            # Only the author's entry: all it needs for `delivered`, and it stays small.
            have = {author: self.history.replica.capped_vector(room).get(author, 0)}
            if self._receipted.get((author, room)) == have:
                continue
            self._receipted[(author, room)] = have
            if len(self._receipted) > limits.MAILBOX_OUTBOX_MAX:
                del self._receipted[next(iter(self._receipted))]
            exp = int(self._clock()) + limits.MAILBOX_TTL_S
            self._queue(self._make(author, m.Vector(room=room, have=have), exp), None)
            firsts.add(holder)
        for holder in sorted(firsts):
            self._send_outbox(first=holder)

    # --- peers --------------------------------------------------------------------

    def peer_joined(self, conn: Link) -> None:
        """A peer connected: deliver what we hold for it, put what waits for holders."""
        if self._closed:
            return
        peer = conn.peer_id or ""
        self.outbox.reader_met(peer)
        self._sync_saved()
        try:
            held = self.store.mail_for(peer)
        except StoreError as exc:
            log.warning("mailbox: cannot read held mail: %s", exc)
            held = []
        if held:
            items = []
            for raw in held:
                try:
                    items.append(_item_decoder.decode(raw))
                except msgspec.DecodeError:
                    log.warning("mailbox: a held item does not decode; skipped")
            self._deliver(conn, items)
        self._seal_waiting()
        if self.outbox.pending:
            self._send_outbox()

    def peer_rooms(self, peer_id: str) -> None:
        """A peer announced its rooms: it carries those rooms' messages (no mail needed for
        them any more), and it may now be a candidate holder."""
        self._seal_waiting()
        if self.outbox.pending and not self._closed:
            # A private room counts only once the peer is admitted to it (a stranger that
            # announces it carries nothing of it: our mail must not stop for it).
            self.outbox.members_met(self.book.presence_view(peer_id))
            self._sync_saved()
            self._send_outbox()

    def members_changed(self, authors: frozenset[str]) -> None:
        """Presence records of authors changed: dial those we hold mail for (if online)."""
        if self._closed:
            return
        for peer in sorted(authors & self._held_for.keys()):
            if peer not in self.manager.peers:
                self._reach(peer)

    def peer_left(self, peer_id: str) -> None:
        """A peer left: what it never answered goes to another holder (a full plan)."""
        self.holder.peer_closed(peer_id)
        self.outbox.peer_closed(peer_id)
        if self.outbox.pending and not self._closed:
            self._send_outbox()
