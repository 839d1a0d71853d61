"""Megolm room keys of private rooms: our outbound sessions, members' inbound ones, `rk`/`rkq`.

The I/O side of crypto/group.py (docs/protocol.md 27). What the rules are:

- each member encrypts its messages in a private room with an outbound Megolm session of its
  own; before the first message of a new session, the session key goes to every admitted
  member (`admitted(wire)`) over the pairwise channel (`send(peer, inner)`), and to a member
  admitted later when it is;
- a new session is made when a member left (its `rooms` frame drops the room, or we block
  it), after MEGOLM_ROTATE_MSGS messages and after MEGOLM_ROTATE_S seconds: it is shared only
  with the members admitted then, so a member who left reads nothing written after;
- the passphrase never changes, so whoever holds it is admitted (again) and gets our current
  session from index 0, and the sessions other members still hold by `rkq`: the passphrase is
  the membership (docs/rooms.md says how to shut someone out for good);
- a message of a session whose key we lack is kept (bounded) and its key asked for (`rkq`, to
  its author if admitted, else to a few admitted members; bounded per member and in all); it
  is read once the key comes, and one stored unread has its key asked again of new members;
- a key from a peer that is not an admitted member is refused (logged once); a key forwarded
  by a member for another author's session is taken only if it reads a message we keep;
- inbound sessions are deleted MEGOLM_KEEP_INBOUND_S after they came: history is stored as
  plaintext at receipt, so it stays readable, and recorded traffic older than that window
  cannot be read with what this node holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from chinwag import limits
from chinwag.crypto import group
from chinwag.crypto.box import BadCiphertext
from chinwag.crypto.identity import Identity
from chinwag.errors import RemoteProtocolError
from chinwag.logonce import WarnOnce
from chinwag.net.link import Link
from chinwag.protocol import groupkeys as gk
from chinwag.protocol import messages as m
from chinwag.protocol.chat import ChatMessage
from chinwag.store.db import Store, StoreError
from chinwag.store.groupkeys import GroupKeyStore, OutboundRow

log = logging.getLogger(__name__)

#: The text stored and shown for a private-room message no member gave the key of in
#: MEGOLM_GIVE_UP_S (replaced by the real text if the key comes later).
UNREADABLE = "(cannot decrypt this message: no member has given its key)"

#: Seconds between two sweeps of expired inbound sessions.
_EXPIRE_EVERY_S = 3600.0

#: Messages stored unread that a forwarded key is tried on before it is refused.
_UNREAD_TRIED = 8

PendingKey = tuple[str, str, str]  # (room, author, session id)


@dataclass(slots=True)
class _Out:
    session: group.Outbound
    row: OutboundRow


@dataclass(slots=True)
class _Held:
    conn: Link
    frame: m.Chat
    msg: ChatMessage


class RoomKeys:
    """Megolm sessions of our private rooms and the room-key frames that carry them."""

    def __init__(
        self,
        store: Store,
        identity: Identity,
        send: Callable[[str, str, bytes], bool],
        admitted: Callable[[str], set[str]],
        room_key: Callable[[str], bytes | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """send(peer, kind, data): one room-key frame over the pairwise channel (False: no way);
        admitted(wire): the peers we hold as admitted members of private room wire;
        room_key(wire): its passphrase key (room keys travel sealed under it)."""
        self.me = identity.peer_id
        self._keys = GroupKeyStore(store)
        self._pickle_key = group.pickle_key(bytes(identity.signing_key))
        self._send_inner = send
        self._admitted = admitted
        self._passkey = room_key
        self._clock = clock
        #: Re-feeds a kept message once its key came (History.chat_received; set by the node).
        self.retry: Callable[[Link, m.Chat], object] | None = None
        self._out: dict[str, _Out] = {}
        self._held: dict[PendingKey, list[_Held]] = {}
        self._held_count = 0
        self._asked: dict[PendingKey, float] = {}
        #: When we first asked for a session's key (bounded; kept when kept messages are
        #: dropped, so a message brought again and again is stored unread in the end).
        self._first_asked: dict[PendingKey, float] = {}
        self._rkq_window: dict[str, tuple[float, int]] = {}
        #: Requests we sent per member, and in all, in the current MEGOLM_RKQ_WINDOW_S.
        self._rkq_out: dict[str, tuple[float, int]] = {}
        self._rkq_out_all: dict[str, tuple[float, int]] = {}
        #: Room -> authors whose presence record named it (bounded like the presence book).
        self._presence_members: dict[str, set[str]] = {}
        self._warn = WarnOnce(log)
        self._last_expire = 0.0
        self.expire()

    # --- our messages -------------------------------------------------------

    def seal(self, wire: str, seq: int, text: str) -> bytes:
        """Return the `enc` of our message seq in private room wire (rotating first if due).

        The session's new state is saved before the message exists: a crash never makes
        us encrypt two messages at one Megolm index.
        """
        self.expire()
        now = self._clock()
        out = self._outbound(wire)
        reason = (
            "new"
            if out is None
            else group.rotation_due(
                group.Rotation(out.row.created, out.row.sent), now, out.row.left
            )
        )
        if out is None or reason is not None:
            out = self._rotate(wire, now, reason or "new")
        enc = out.session.seal(wire, self.me, seq, text)
        out.row = OutboundRow(
            wire,
            out.row.sid,
            out.session.pickle(self._pickle_key),
            out.row.created,
            out.row.sent + 1,
            out.row.left,
        )
        self._keys.save_outbound(out.row)
        return enc

    def _outbound(self, wire: str) -> _Out | None:
        out = self._out.get(wire)
        if out is not None:
            return out
        row = self._keys.outbound(wire)
        if row is None:
            return None
        try:
            session = group.Outbound.from_pickle(row.pickle, self._pickle_key)
        except group.GroupError as exc:  # another identity's store: start afresh
            log.warning("room %s: our Megolm session is unusable (%s); making a new one", wire, exc)
            return None
        out = self._out[wire] = _Out(session, row)
        return out

    def _rotate(self, wire: str, now: float, reason: str) -> _Out:
        """Make a new outbound session, keep its key for ourselves, give it to the members."""
        session = group.Outbound.create()
        own = group.Inbound.from_key(session.session_key)
        self._save_inbound(wire, self.me, own, now)
        row = OutboundRow(wire, session.session_id, session.pickle(self._pickle_key), now, 0, False)
        self._keys.save_outbound(row)
        out = self._out[wire] = _Out(session, row)
        members = sorted(self._admitted(wire) - {self.me})
        log.info(
            "room %s: new Megolm session %s (%s), key to %d members",
            wire,
            session.session_id[:8],
            reason,
            len(members),
        )
        key = self._key_frame(wire, self.me, own)
        for peer in members:
            if key is not None:
                self._send(peer, key)
        return out

    # --- membership ------------------------------------------------------------

    def on_admitted(self, wire: str, peer_id: str) -> None:
        """peer_id is an admitted member of wire now: give it our current key, ask it for
        the keys of messages we keep."""
        out = self._outbound(wire)
        if out is not None and not out.row.left:
            own = self._inbound(wire, self.me, out.row.sid)
            key = self._key_frame(wire, self.me, own) if own is not None else None
            if key is not None:
                self._send(peer_id, key)
        for room, author, sid in list(self._held):
            if room == wire:
                self._ask(peer_id, gk.RoomKeyRequest(room=room, author=author, sid=sid))
        # Keys we gave up waiting for: a new member may hold them (never asked for good).
        try:
            unread = self._keys.unread_sessions(wire, limits.MEGOLM_REASK_UNREAD)
        except StoreError as exc:
            log.warning("cannot list messages stored unread: %s", exc)
            unread = []
        for author, sid in unread:
            self._ask(peer_id, gk.RoomKeyRequest(room=wire, author=author, sid=sid))

    def member_left(self, wire: str, peer_id: str) -> None:
        """peer_id left private room wire (or was blocked): our next message rotates."""
        out = self._outbound(wire)
        if out is None or out.row.left:
            return
        log.info("room %s: member %s left; the next message uses a new session", wire, peer_id[:8])
        r = out.row
        out.row = OutboundRow(r.room, r.sid, r.pickle, r.created, r.sent, True)
        self._keys.mark_left(wire)

    def presence(self, wire: str, author: str, member: bool) -> None:
        """author's signed presence record names private room wire (member) or no longer does.

        A member we do not share a connection with leaves without a `rooms` frame to us:
        its record, passed on by others, dropping the room counts as leaving (rotate).
        """
        seen = self._presence_members.setdefault(wire, set())
        if member:
            if len(seen) < limits.PRESENCE_MAX_PER_ROOM:
                seen.add(author)
        elif author in seen:
            seen.discard(author)
            self.member_left(wire, author)

    def forget_room(self, wire: str) -> None:
        """We left the room: drop our outbound session and what we keep for it."""
        self._out.pop(wire, None)
        self._presence_members.pop(wire, None)
        self._keys.forget_room(wire)
        for key in [k for k in self._held if k[0] == wire]:
            self._drop_held(key)

    # --- reading -------------------------------------------------------------------

    def open(self, wire: str, author: str, seq: int, enc: bytes) -> str:
        """Return the text of author's message seq in private room wire.

        UnknownSession (its key is not here yet; keep the message) or BadCiphertext.
        """
        sid, _raw = group.envelope(enc)
        inbound = self._inbound(wire, author, sid)
        if inbound is None:
            raise group.UnknownSession(f"no key of session {sid[:8]} of {author[:8]}")
        text, _index = inbound.open(enc, wire, author, seq)
        return text

    def gave_key(self, wire: str, author: str) -> bool:
        """Return whether author gave us a key of a session of its own in wire (is a member)."""
        return author == self.me or self._keys.has_author(wire, author)

    def _inbound(self, wire: str, author: str, sid: str) -> group.Inbound | None:
        found = self._keys.inbound(wire, author, sid)
        if found is None:
            return None
        try:
            return group.Inbound.from_pickle(found[0], self._pickle_key)
        except group.GroupError as exc:
            self._warn(("pickle", wire), "room %s: an inbound session is unusable: %s", wire, exc)
            return None

    def _save_inbound(self, wire: str, author: str, inbound: group.Inbound, now: float) -> None:
        self._keys.save_inbound(
            wire,
            author,
            inbound.session_id,
            inbound.pickle(self._pickle_key),
            inbound.first_known_index,
            now,
            limits.MEGOLM_MAX_INBOUND_PER_AUTHOR,
        )

    def hold(self, conn: Link, frame: m.Chat, msg: ChatMessage) -> bool:
        """Keep a (signature-checked) message whose session key we lack, and ask for it.

        False: its key was asked for MEGOLM_GIVE_UP_S ago and has not come; the caller
        stores it with the text UNREADABLE (noted here: filled in if the key comes).
        """
        body = msg.body
        try:
            sid, _raw = group.envelope(body.enc)
        except group.BadGroupMessage:
            return True  # (cannot happen: it raised UnknownSession) nothing to keep
        key = (body.room, msg.author_id, sid)
        first = self._first_asked.get(key)
        if first is not None and abs(self._clock() - first) >= limits.MEGOLM_GIVE_UP_S:
            self._keys.add_unread(msg.id, body.room, msg.author_id, sid)
            self._drop_held(key)  # stored now; its key is asked again of new members
            return False
        held = self._held.setdefault(key, [])
        if any(h.msg.id == msg.id for h in held):
            held[:] = [h for h in held if h.msg.id != msg.id]  # the newest copy's connection
            self._held_count -= 1
        while self._held_count >= limits.MEGOLM_MAX_PENDING_MSGS:
            self._drop_oldest()
        held = self._held.setdefault(key, [])
        held.append(_Held(conn, frame, msg))
        self._held_count += 1
        self._request(key)
        return True

    def _drop_oldest(self) -> None:
        oldest = next(iter(self._held))
        held = self._held[oldest]
        held.pop(0)
        self._held_count -= 1
        if not held:
            self._drop_held(oldest)

    def _drop_held(self, key: PendingKey) -> None:
        self._held_count -= len(self._held.pop(key, []))
        self._asked.pop(key, None)

    def _request(self, key: PendingKey) -> None:
        now = self._clock()
        last = self._asked.get(key)
        if last is not None and abs(now - last) < limits.MEGOLM_RKQ_RETRY_S:
            return
        room, author, sid = key
        members = self._admitted(room) - {self.me}
        targets = [author] if author in members else sorted(members)[: limits.MEGOLM_RKQ_FANOUT]
        frame = gk.RoomKeyRequest(room=room, author=author, sid=sid)
        if not [peer for peer in targets if self._ask(peer, frame)]:
            return  # nobody asked (none to ask, or over our bounds): the wait has not begun
        self._asked[key] = now
        if key not in self._first_asked:
            self._first_asked[key] = now
            if len(self._first_asked) > limits.MEGOLM_MAX_PENDING_MSGS:
                del self._first_asked[next(iter(self._first_asked))]

    def _ask(self, peer_id: str, frame: gk.RoomKeyRequest) -> bool:
        """Send an `rkq` within our bounds (per member and in all); return whether it went."""
        now = self._clock()
        if not _count(self._rkq_out_all, "", now, limits.MEGOLM_RKQ_OUT_PER_WINDOW):
            self._warn("rkq out", "not asking for more room keys now: too many asked")
            return False
        if not _count(self._rkq_out, peer_id, now, limits.MEGOLM_RKQ_OUT_PER_PEER):
            self._warn((peer_id, "rkq out"), "not asking %s for more room keys now", peer_id[:8])
            return False
        self._send(peer_id, frame)
        return True

    # --- room-key frames ---------------------------------------------------------

    def _send(self, peer_id: str, frame: gk.Inner) -> None:
        """Send an `rk` or `rkq` to peer_id over the pairwise channel."""
        kind = gk.RK if isinstance(frame, gk.RoomKey) else gk.RKQ
        self._send_inner(peer_id, kind, gk.encode(frame))

    def _key_frame(self, wire: str, author: str, inbound: group.Inbound) -> gk.RoomKey | None:
        """Return an `rk` giving inbound (sealed under wire's passphrase key)."""
        room_key = self._passkey(wire)
        if room_key is None:
            return None
        sealed = group.seal_key(room_key, inbound.export())
        return gk.RoomKey(room=wire, author=author, key=sealed)

    def received(self, peer_id: str, data: bytes) -> None:
        """Handle a room-key frame from peer_id; RemoteProtocolError if it is malformed."""
        frame = gk.decode(data)
        self.expire()
        if peer_id not in self._admitted(frame.room):
            self._warn(
                (peer_id, frame.room, "rk"),
                "refusing %r from %s: not an admitted member of %s",
                frame.__struct_config__.tag,
                peer_id[:8],
                frame.room,
            )
            return
        try:
            if isinstance(frame, gk.RoomKey):
                self._room_key(peer_id, frame)
            else:
                self._key_request(peer_id, frame)
        except StoreError as exc:  # ours, not the peer's
            log.error("cannot keep a room key: %s", exc)

    def _room_key(self, peer_id: str, frame: gk.RoomKey) -> None:
        if frame.author == self.me:
            return  # we hold our own sessions
        room_key = self._passkey(frame.room)
        try:
            if room_key is None:
                raise group.GroupError("not a room of ours")
            inbound = group.Inbound.from_export(group.open_key(room_key, frame.key))
        except group.GroupError as exc:
            self._warn((peer_id, "rk bad"), "refusing a room key from %s: %s", peer_id[:8], exc)
            return
        key = (frame.room, frame.author, inbound.session_id)
        if frame.author != peer_id and not (
            self._reads_held(key, inbound) or self._reads_unread(key, inbound)
        ):
            # Only the author's own key is taken unasked; a forwarded one must prove itself.
            self._warn(
                (peer_id, "rk fwd"),
                "refusing a forwarded room key from %s: it reads no message we keep",
                peer_id[:8],
            )
            return
        held = self._keys.inbound(*key)
        if held is None or inbound.first_known_index < held[1]:
            self._save_inbound(frame.room, frame.author, inbound, self._clock())
        self._release(key)
        self._read_unread(key, inbound)

    def _read_unread(self, key: PendingKey, inbound: group.Inbound) -> None:
        """Fill in the text of messages of this session stored unread before its key came."""
        room, author, _sid = key
        for msg_id, raw_body in self._keys.unread(*key):
            try:
                body = m.decode_body(raw_body)
                text, _index = inbound.open(body.enc, room, author, body.seq)
            except (BadCiphertext, RemoteProtocolError):
                continue
            self._keys.read_at_last(msg_id, text)
            log.info("room %s: a message stored unread (%s) is readable now", room, msg_id[:8])

    def _reads_unread(self, key: PendingKey, inbound: group.Inbound) -> bool:
        """Return whether inbound opens a message of its session we stored unread."""
        room, author, _sid = key
        for _msg_id, raw_body in self._keys.unread(*key)[:_UNREAD_TRIED]:
            try:
                body = m.decode_body(raw_body)
                inbound.open(body.enc, room, author, body.seq)
            except (BadCiphertext, RemoteProtocolError):
                continue
            return True
        return False

    def _reads_held(self, key: PendingKey, inbound: group.Inbound) -> bool:
        for h in self._held.get(key, []):
            body = h.msg.body
            try:
                inbound.open(body.enc, body.room, h.msg.author_id, body.seq)
            except BadCiphertext:
                continue
            return True
        return False

    def _release(self, key: PendingKey) -> None:
        held = self._held.pop(key, [])
        self._held_count -= len(held)
        self._asked.pop(key, None)
        self._first_asked.pop(key, None)
        if self.retry is None:
            return
        for h in held:
            self.retry(h.conn, h.frame)

    def _key_request(self, peer_id: str, frame: gk.RoomKeyRequest) -> None:
        now = self._clock()
        start, count = self._rkq_window.get(peer_id, (now, 0))
        if abs(now - start) >= limits.MEGOLM_RKQ_WINDOW_S:
            start, count = now, 0
        if count >= limits.MEGOLM_RKQ_PER_WINDOW:
            self._warn(
                (peer_id, "rkq flood"), "ignoring key requests from %s: too many", peer_id[:8]
            )
            return
        self._rkq_window[peer_id] = (start, count + 1)
        if len(self._rkq_window) > limits.MEGOLM_RKQ_PEERS:
            del self._rkq_window[next(iter(self._rkq_window))]
        inbound = self._inbound(frame.room, frame.author, frame.sid)
        if inbound is None:
            return
        answer = self._key_frame(frame.room, frame.author, inbound)
        if answer is not None:
            self._send(peer_id, answer)

    # --- expiry -----------------------------------------------------------------------

    def expire(self) -> None:
        """Delete inbound sessions past MEGOLM_KEEP_INBOUND_S (at most once an hour)."""
        now = self._clock()
        if self._last_expire and abs(now - self._last_expire) < _EXPIRE_EVERY_S:
            return
        self._last_expire = now
        try:
            gone = self._keys.expire_inbound(now - limits.MEGOLM_KEEP_INBOUND_S)
        except StoreError as exc:
            log.warning("cannot delete old room keys: %s", exc)
            return
        if gone:
            log.info("deleted %d Megolm sessions older than the kept window", gone)


def _count(table: dict[str, tuple[float, int]], key: str, now: float, cap: int) -> bool:
    """Count one event of key in its MEGOLM_RKQ_WINDOW_S window; False (not counted) at cap.

    At most MEGOLM_RKQ_PEERS keys are remembered (the oldest forgotten first).
    """
    start, count = table.get(key, (now, 0))
    if abs(now - start) >= limits.MEGOLM_RKQ_WINDOW_S:
        start, count = now, 0
    if count >= cap:
        return False
    table[key] = (start, count + 1)
    if len(table) > limits.MEGOLM_RKQ_PEERS:
        del table[next(iter(table))]
    return True
