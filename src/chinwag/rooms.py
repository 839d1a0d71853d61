"""Rooms a node holds: public rooms, private rooms (passphrase) and private conversations.

A room has a wire name (what messages and vectors carry) and a display name.
Public rooms: both are the validated, lowercase name. Private rooms: the wire
name is `p.` + a hash of the name (crypto/box.py), so peers without the
passphrase never see the name, and the key comes from the passphrase.
Private conversations: the wire name is `dm.` + a hash of both peer ids; a
node holds the ones it takes part in.

The book also tracks which rooms connected peers announced (for `/rooms` and
for starting admissions), which peers proved a private room's passphrase to us
(protocol/admit.py: only those get the room's history, vectors and files), and
which peers are blocked or verified.

At MAX_CONVERSATIONS, a message opening a new conversation replaces the
stranger's conversation least recently active (hardening: a thousand throwaway
keys sending one message each must not shut real people out for good). A
conversation is never replaced if its peer is verified or if we wrote in it;
if only such ones are kept, the new one is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chinwag import limits
from chinwag.crypto import box, group
from chinwag.crypto.identity import Identity
from chinwag.errors import LocalProtocolError, UsageError
from chinwag.logonce import WarnOnce
from chinwag.protocol import messages as m
from chinwag.protocol.admit import Admission
from chinwag.protocol.chat import ChatMessage
from chinwag.protocol.kinds import RoomKind, room_kind
from chinwag.protocol.names import DEFAULT_ROOM, is_valid_name
from chinwag.store.db import Store

if TYPE_CHECKING:
    from chinwag.roomkeys import RoomKeys

log = logging.getLogger(__name__)

PUBLIC, PRIVATE, DM = RoomKind.PUBLIC, RoomKind.PRIVATE, RoomKind.DM


@dataclass(frozen=True, slots=True)
class Room:
    """A room this node holds."""

    wire: str
    name: str
    kind: RoomKind
    key: bytes | None = None
    #: The other party of a private conversation.
    peer: str | None = None

    @property
    def kcv(self) -> bytes:
        """Return the key check value (local use only: it never goes on the wire)."""
        return box.key_check(self.key) if self.key is not None else b""


class RoomBook:
    """Joined rooms, peers' announcements, blocked and verified peers."""

    def __init__(self, store: Store, identity: Identity) -> None:
        self.store = store
        self.identity = identity
        self.me = identity.peer_id
        self.joined: dict[str, Room] = {}
        self.announced: dict[str, dict[str, bytes]] = {}
        self.blocked: set[str] = set()
        self.verified: dict[str, str] = {}
        #: Keys the user replaced by a new key of the same nick (Node.accept_key).
        self.replaced: set[str] = set()
        #: Rooms whose undecryptable message was reported (bounded: a conversation is
        #: opened by any key, so throwaway keys would grow a plain set for ever).
        self._undecryptable_logged = WarnOnce(log)
        #: Conversations we wrote in: never replaced by a stranger's.
        self._ours: set[str] = set()
        #: Conversation wires, least recently active first.
        self._dm_activity: dict[str, None] = {}
        #: Who proved which private room's passphrase to us (PAKE runs and their limits).
        self.admission = Admission(self.me, lambda peer: peer in self.verified)
        self._warn = WarnOnce(log)
        #: Megolm sessions of private rooms (set by the node once built; docs/protocol.md 27).
        self.group: RoomKeys | None = None

    def load(self) -> None:
        for wire, name, stored_kind, key, peer in self.store.rooms_joined():
            try:
                kind = room_kind(stored_kind, wire)
            except LocalProtocolError as exc:
                log.warning("dropping joined room %s: %s", wire[:40], exc)
                continue
            self.joined[wire] = Room(wire, name, kind, key, peer)
            if kind == DM:
                self._dm_activity[wire] = None
        self._ours = {
            room
            for room, author, *_ in self.store.author_stats()
            if author == self.me and room in self._dm_activity
        }
        if DEFAULT_ROOM not in self.joined and DEFAULT_ROOM not in self.store.rooms_left():
            self.join_public(DEFAULT_ROOM)
        self.blocked = self.store.blocked()
        self.verified = self.store.verified()
        self.replaced = self.store.replaced_keys()

    # --- joining --------------------------------------------------------

    def join_public(self, name: str) -> Room:
        room = Room(name, name, PUBLIC)
        self._save(room)
        return room

    def join_private(self, name: str, key: bytes) -> Room:
        """Join a private room (whether peers accept the passphrase is for the admission)."""
        wire = box.private_room_id(name)
        if any(r.name == name and r.kind != PRIVATE for r in self.joined.values()):
            raise UsageError(f"you are in the public room {name!r}: /leave it first")
        existing = self.joined.get(wire)
        if existing is not None and existing.key != key:
            raise UsageError(
                f"wrong passphrase for private room {name!r} (to change it: /leave {name} first)"
            )
        if existing is None:
            self.admission.room_left(wire)  # a fresh key: earlier refusals say nothing of it
        room = Room(wire, name, PRIVATE, key)
        self._save(room)
        return room

    def join_dm(self, peer_id: str) -> Room:
        wire = box.dm_room(self.me, peer_id)
        room = self.joined.get(wire)
        if room is None:
            room = Room(wire, "@" + peer_id[:8], DM, None, peer_id)
            self._save(room)
        return room

    def wrote_in(self, room: Room) -> None:
        """We sent a message in room: a conversation of ours is never replaced by a stranger's."""
        if room.kind == DM:
            self._ours.add(room.wire)

    def leave(self, name: str) -> Room:
        room = self.find(name)
        if room is None:
            raise UsageError(f"you are not in room {name!r}")
        del self.joined[room.wire]
        self.admission.room_left(room.wire)
        self._dm_activity.pop(room.wire, None)
        self._ours.discard(room.wire)
        self.store.leave_room(room.wire)
        return room

    def _save(self, room: Room) -> None:
        self.joined[room.wire] = room
        if room.kind == DM:
            self._dm_activity[room.wire] = None
        self.store.join_room(room.wire, room.name, room.kind, room.key, room.peer)

    # --- lookups --------------------------------------------------------

    def find(self, name: str) -> Room | None:
        """Return the joined room with this display or wire name."""
        lowered = name.lower().lstrip("#")
        for room in self.joined.values():
            if room.wire == name or room.name == lowered:
                return room
        return None

    def holds(self, wire: str, author: str) -> Room | None:
        """Return the room if we store and show messages of wire by author.

        A conversation only takes messages from its two participants. One with
        a peer we never talked to is returned unsaved: the caller saves it
        (remember()) once a message has verified and decrypted.
        """
        room = self.joined.get(wire)
        if room is not None:
            if room.kind == DM and author not in (self.me, room.peer):
                return None
            return room
        if wire.startswith("dm.") and author != self.me and box.dm_room(self.me, author) == wire:
            return Room(wire, "@" + author[:8], DM, None, author)
        return None

    def from_member(self, room: Room, via: str, author: str) -> bool:
        """Return whether to take a message of private room `room` by author that came from
        connected peer via (docs/protocol.md 27.4): via proved the passphrase to us (a member
        stores only what passed this test), or author is a member we know: ourselves,
        admitted to us now, or it gave us a key of its own. A signed presence record naming
        the room does not count: anyone can name a room id it saw announced."""
        if room.kind != PRIVATE or author == self.me:
            return True
        if via not in self.blocked and self.admission.is_admitted(via, room.wire):
            return True
        if self.admission.is_admitted(author, room.wire):
            return True
        return self.group is not None and self.group.gave_key(room.wire, author)

    def remember(self, room: Room) -> bool:
        """Save a conversation returned unsaved by holds() (and note it active).

        At MAX_CONVERSATIONS a stranger's conversation least recently active makes room;
        False if none may (the message is then dropped).
        """
        if room.wire in self.joined:
            if room.wire in self._dm_activity:  # most recently active last
                del self._dm_activity[room.wire]
                self._dm_activity[room.wire] = None
            return True
        if room.kind == DM and len(self._dm_activity) >= limits.MAX_CONVERSATIONS:
            victim = self._stranger_conversation()
            if victim is None:
                self._warn(
                    "conversations",
                    "not opening a new conversation: %d kept already, none with a stranger",
                    len(self._dm_activity),
                )
                return False
            log.debug("replacing the idle conversation %s with a new one", victim.name)
            self.leave(victim.wire)
        self._save(room)
        return True

    def _stranger_conversation(self) -> Room | None:
        """Return the least recently active conversation we may drop, if any."""
        for wire in self._dm_activity:
            room = self.joined[wire]
            if wire not in self._ours and room.peer not in self.verified:
                return room
        return None

    def holds_vector(self, wire: str, peer_id: str, connected: bool = True) -> bool:
        """Return whether to sync room wire with peer_id (conversations: only the other party;
        private rooms: only a connected peer admitted to it, or a receipt that came by mail
        from a peer not connected: nothing is sent back to one, docs/protocol.md 28)."""
        room = self.holds(wire, peer_id)
        if room is None:
            return False
        if room.kind == PRIVATE:
            return not connected or self._admitted_log(peer_id, wire)
        if room.kind == DM:
            # The other party has messages of our conversation: hold it to receive them.
            return room.peer == peer_id and self.remember(room)
        return True

    def display(self, wire: str) -> str:
        room = self.joined.get(wire)
        return room.name if room is not None else wire

    def wires(self) -> list[str]:
        return sorted(self.joined)

    def announcement(self) -> m.Rooms:
        """Return the rooms frame we send: public and private rooms, not conversations."""
        # No key check value: it would let anyone test passphrases offline (section 28).
        return m.Rooms(
            joined=[m.RoomAnnounce(room=r.wire) for r in self.joined.values() if r.kind != DM]
        )

    def admitted(self, wire: str) -> frozenset[str]:
        """Return the connected peers that proved private room wire's passphrase to us."""
        return self.admission.admitted(wire)

    def _admitted_log(self, peer_id: str, wire: str) -> bool:
        """Return whether peer_id is admitted to private room wire; log a refusal once."""
        if self.admission.is_admitted(peer_id, wire):
            return True
        self._warn(
            ("not admitted", peer_id, wire),
            "not syncing private room %s with %s: not admitted",
            self.display(wire),
            peer_id[:8],
        )
        return False

    def peer_in(self, peer_id: str, wire: str) -> bool:
        """Return whether a connected peer holds room wire (announced it, or is our DM party;
        a private room: proved its passphrase to us)."""
        room = self.joined.get(wire)
        if room is not None and room.kind == DM:
            return room.peer == peer_id
        if room is not None and room.kind == PRIVATE:
            return self.admission.is_admitted(peer_id, wire)
        return wire in self.announced.get(peer_id, {})

    def shares_room(self, peer_id: str, name: str) -> bool:
        """Return whether a connected peer is in our joined room `name` (display or wire name).

        For a private room the peer must have proved the passphrase to us (admission).
        """
        room = self.find(name)
        if room is None:
            return False
        if room.kind == DM:
            return room.peer == peer_id
        if room.kind == PRIVATE:
            return self.admission.is_admitted(peer_id, room.wire)
        return room.wire in self.announced.get(peer_id, {})

    def set_announced(self, peer_id: str, frame: m.Rooms) -> list[str]:
        """Record a peer's rooms (a kcv it sends is ignored); return the wire names of our
        private rooms it announces and is not admitted to (to start admissions with)."""
        before = self.announced.get(peer_id, {})
        now = self.announced[peer_id] = {a.room: b"" for a in frame.joined if is_valid_name(a.room)}
        for wire in before:
            if wire not in now:
                self.admission.peer_dropped(peer_id, wire)
        return self.to_admit(peer_id)

    def to_admit(self, peer_id: str) -> list[str]:
        """Return our private rooms peer_id announces and has not proved to us."""
        announced = self.announced.get(peer_id, {})
        return [
            r.wire
            for r in self.joined.values()
            if r.kind == PRIVATE
            and r.wire in announced
            and not self.admission.is_admitted(peer_id, r.wire)
        ]

    def presence_view(self, peer_id: str) -> dict[str, bytes]:
        """Return the rooms of peer_id whose presence records it may get: what it announced,
        less the private rooms it has not proved to us."""
        return {
            w: k
            for w, k in self.announced.get(peer_id, {}).items()
            if not w.startswith("p.") or self.admission.is_admitted(peer_id, w)
        }

    def forget_peer(self, peer_id: str) -> None:
        self.announced.pop(peer_id, None)
        self.admission.peer_closed(peer_id)

    def listing(self) -> list[tuple[str, int, bool]]:
        """Return (display name, members online including us, joined) of every known room."""
        counts: dict[str, int] = {}
        for rooms in self.announced.values():
            for wire in rooms:
                counts[wire] = counts.get(wire, 0) + 1
        out = []
        for wire in sorted(set(counts) | {w for w, r in self.joined.items() if r.kind != DM}):
            joined = wire in self.joined
            name = (
                self.joined[wire].name
                if joined
                else ("(private)" if wire.startswith("p.") else wire)
            )
            out.append((name, counts.get(wire, 0) + int(joined), joined))
        return out

    # --- content --------------------------------------------------------

    def plaintext(self, room: Room, msg: ChatMessage) -> str | None:
        """Return the readable text of a message of a room we hold, or None (logged once).

        Raises group.UnknownSession for a private-room message whose Megolm key is not
        here yet (the caller keeps it and asks for the key).
        """
        body = msg.body
        if room.kind == PUBLIC:
            return body.text if not body.enc else None
        try:
            if room.kind == DM:
                if not body.enc:  # the Olm ratchet protected it on the way (private.py)
                    return body.text
                return box.open_dm(self.identity, body.enc, msg.author_id == self.me)
            if self.group is None:
                raise box.BadCiphertext("no room keys here")
            return self.group.open(room.wire, msg.author_id, body.seq, body.enc)
        except group.UnknownSession:
            raise
        except box.BadCiphertext as exc:
            self._undecryptable_logged(
                room.wire, "dropping a message in %s that does not decrypt: %s", room.name, exc
            )
            return None

    def seal(self, room: Room, text: str, seq: int) -> tuple[str, bytes]:
        """Return (clear text field, ciphertext) for our new message seq in room."""
        if room.kind == PUBLIC:
            return text, b""
        if room.kind == DM:
            # The signed body stays plain in our store: on the wire it travels only inside
            # the pair's Olm ratchet (a `pm` frame, docs/protocol.md section 26).
            return text, b""
        assert self.group is not None
        return "", self.group.seal(room.wire, seq, text)

    # --- blocking and verification ---------------------------------------

    def set_blocked(self, peer_id: str, blocked: bool) -> None:
        self.store.set_blocked(peer_id, blocked)
        if blocked:
            self.blocked.add(peer_id)
        else:
            self.blocked.discard(peer_id)

    def set_verified(self, peer_id: str, nick: str) -> None:
        self.store.set_verified(peer_id, nick)
        self.verified[peer_id] = nick

    def replace_verified(self, old: str, new: str, nick: str) -> None:
        """The user accepted new as nick's key: it is verified, old no longer (and old
        counts as replaced: messages to the nick no longer wait on it)."""
        self.store.replace_verified(old, new, nick)
        self.verified.pop(old, None)
        self.verified[new] = nick
        self.replaced.discard(new)
        self.replaced.add(old)

    def impostor_of(self, peer_id: str, nick: str) -> str | None:
        """Return the verified peer id that used to have this nick, if peer_id is another key."""
        for verified_id, verified_nick in self.verified.items():
            if verified_nick == nick and verified_id != peer_id:
                return verified_id
        return None
