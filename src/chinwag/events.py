"""Node events: what a UI sees. Encoded as-is by the JSON-lines API.

Each event is a frozen msgspec Struct tagged by its `event` field; the field
names are the public JSON-lines API (docs/api.md) and must not change.
"""

from __future__ import annotations

import msgspec


class Ready(msgspec.Struct, frozen=True, tag_field="event", tag="ready"):
    """The node is listening; `port` is its TCP listen port."""

    peer_id: str
    nick: str
    port: int


class PeerJoined(msgspec.Struct, frozen=True, tag_field="event", tag="peer_joined"):
    """A peer completed the handshake; `address` is `host:port` of the connection.

    `path` is how it is reached ("lan", "direct", "relayed"); `via` the relay's peer id.
    """

    peer_id: str
    nick: str
    address: str
    path: str = "direct"
    via: str | None = None


class PathChanged(msgspec.Struct, frozen=True, tag_field="event", tag="path"):
    """A connected peer is now reached another way (docs/reach.md "Paths")."""

    peer_id: str
    path: str
    via: str | None = None


class PeerLeft(msgspec.Struct, frozen=True, tag_field="event", tag="peer_left"):
    """The connection to a peer ended; `reason` says why."""

    peer_id: str
    nick: str
    reason: str = ""


class Message(msgspec.Struct, frozen=True, tag_field="event", tag="message", omit_defaults=True):
    """A chat message, received or our own (`own`); `ts` is the author's Unix time in seconds.

    `seq` is the author's number for it in the room; `late` (only present when
    true) marks a message that sorts before messages already shown. `delivered`
    of `of` peers known in the room hold it: set only on our own messages inside
    `history` and `search` answers (absent from live events and others' messages).
    """

    id: str
    room: str
    peer_id: str
    nick: str
    ts: float
    text: str
    own: bool
    seq: int
    late: bool = False
    delivered: int | None = None
    of: int | None = None


class DirectMessage(msgspec.Struct, frozen=True, tag_field="event", tag="dm", omit_defaults=True):
    """A private message; `peer_id` is its author, `to` its recipient, `own` if we wrote it.

    `delivered`/`of` as in `Message`: only on our own, inside history and search answers.
    """

    id: str
    peer_id: str
    nick: str
    ts: float
    text: str
    own: bool
    to: str
    seq: int
    late: bool = False
    delivered: int | None = None
    of: int | None = None


class Joined(msgspec.Struct, frozen=True, tag_field="event", tag="joined"):
    """We joined a room (its history is being fetched from peers)."""

    room: str
    private: bool


class Left(msgspec.Struct, frozen=True, tag_field="event", tag="left"):
    """We left a room: its messages are no longer stored or shown."""

    room: str


class RoomInfo(msgspec.Struct, frozen=True):
    """One room: `members` counts connected peers in it, plus us if `joined`."""

    name: str
    members: int
    joined: bool


class RoomList(msgspec.Struct, frozen=True, tag_field="event", tag="rooms"):
    """Rooms known on the network, answering a `rooms` command."""

    rooms: list[RoomInfo]


class Whois(msgspec.Struct, frozen=True, tag_field="event", tag="whois"):
    """Who a peer is: full id, fingerprint, whether we verified it, and its safety number."""

    peer_id: str
    nick: str
    fingerprint: str
    verified: bool
    safety_number: str
    blocked: bool = False
    online: bool = False


class Alert(msgspec.Struct, frozen=True, tag_field="event", tag="warning"):
    """Something the user must notice (e.g. a verified nick now used by another key)."""

    message: str
    peer_id: str = ""


class DmHeld(msgspec.Struct, frozen=True, tag_field="event", tag="dm_held"):
    """A private message to `nick` held, not sent: `peer_id`, the key now using that nick,
    is not `old_peer_id`, the key verified under it. It waits for `accept_key` (then it
    is sent to `peer_id`) or `discard_held`; `id` numbers it among the held ones."""

    id: int
    nick: str
    peer_id: str
    old_peer_id: str
    text: str
    ts: float


class HeldDms(msgspec.Struct, frozen=True, tag_field="event", tag="held"):
    """The private messages held on key changes, answering a `held` command."""

    held: list[DmHeld]


class KeyAccepted(msgspec.Struct, frozen=True, tag_field="event", tag="key_accepted"):
    """`peer_id` is now the verified key of `nick` (`old_peer_id` no longer verified); the
    `sent` messages held for it went out (each also as a `dm` event)."""

    nick: str
    peer_id: str
    old_peer_id: str
    sent: int


class HeldDiscarded(msgspec.Struct, frozen=True, tag_field="event", tag="held_discarded"):
    """The `count` messages held for `peer_id` (under `nick`) were deleted, unsent."""

    nick: str
    peer_id: str
    count: int


class PeerInfo(msgspec.Struct, frozen=True):
    """One connected peer; `since` is the Unix time the connection opened.

    `path`: "lan", "direct" or "relayed" (then `via` is the relay's peer id).
    """

    peer_id: str
    nick: str
    address: str
    since: float = 0.0
    rtt_ms: float | None = None
    path: str = "direct"
    via: str | None = None


class RelayedPeer(msgspec.Struct, frozen=True):
    """A peer we are not connected to whose messages reach us through `via` (a peer id)."""

    peer_id: str
    nick: str
    via: str
    seen: float


class Peers(msgspec.Struct, frozen=True, tag_field="event", tag="peers"):
    """The connected peers, answering a `peers` command; `relayed`: peers heard through them."""

    peers: list[PeerInfo]
    relayed: list[RelayedPeer] = []


class Member(msgspec.Struct, frozen=True):
    """One member of a room: `online` its record is fresh and not a leave (or we hold a
    connection to it: `direct`); `last_seen` the Unix time of its latest record (or now)."""

    peer_id: str
    nick: str
    online: bool
    direct: bool
    last_seen: float


class Members(msgspec.Struct, frozen=True, tag_field="event", tag="members"):
    """The members of a room we know of (us excluded), answering a `members` command."""

    room: str
    members: list[Member]


class NickChanged(msgspec.Struct, frozen=True, tag_field="event", tag="nick"):
    """A peer (or we, when `own`) changed nick."""

    peer_id: str
    nick: str
    old: str
    own: bool = False


class History(msgspec.Struct, frozen=True, tag_field="event", tag="history"):
    """The last messages of a room in display order, answering a `history` command."""

    room: str
    messages: list[Message | DirectMessage]


class Delivered(msgspec.Struct, frozen=True, tag_field="event", tag="delivered"):
    """`count` of the `of` peers known in the message's room now hold our message `id`."""

    id: str
    count: int
    of: int


class Mailed(msgspec.Struct, frozen=True, tag_field="event", tag="mailed"):
    """Our private message `id`, for a peer that is offline, is now kept by `holders` online
    peers (mailboxes) that deliver it when the peer connects (docs/dht.md "Mailboxes")."""

    id: str
    holders: int


class Gap(msgspec.Struct, frozen=True, tag_field="event", tag="gap"):
    """Messages `missing` = [from, to] of author `peer_id` in `room` are missing; repair started."""

    room: str
    peer_id: str
    missing: list[int]


class GapFilled(msgspec.Struct, frozen=True, tag_field="event", tag="gap_filled"):
    """The gap reported earlier for (room, peer_id) is repaired."""

    room: str
    peer_id: str


class Info(msgspec.Struct, frozen=True, tag_field="event", tag="info"):
    """Who holds a message, answering an `info` command."""

    id: str
    room: str
    peer_id: str
    seq: int
    holders: list[PeerInfo]


class SearchResult(msgspec.Struct, frozen=True, tag_field="event", tag="search"):
    """Messages containing a text, answering a `search` command (oldest first)."""

    text: str
    messages: list[Message | DirectMessage]


class Error(msgspec.Struct, frozen=True, tag_field="event", tag="error"):
    """A command failed or input was refused; the node keeps running."""

    message: str


class FileOffer(msgspec.Struct, frozen=True, tag_field="event", tag="file_offer"):
    """A file offered to us (or to a room we are in): answer with accept_file or reject_file.

    `id` is the transfer id (a unique prefix of 4+ characters is accepted by commands);
    `room` is empty for a file offered to us alone; `own` marks our own offers.
    """

    id: str
    peer_id: str
    nick: str
    name: str
    size: int
    sha256: str
    room: str = ""
    own: bool = False


class FileProgress(msgspec.Struct, frozen=True, tag_field="event", tag="file_progress"):
    """`bytes` of `total` of transfer `id` are verified; `rate` in bytes/s (a few per second)."""

    id: str
    bytes: int
    total: int
    rate: float = 0.0
    sources: int = 0


class FileDone(msgspec.Struct, frozen=True, tag_field="event", tag="file_done"):
    """Transfer `id` is complete: the whole file matched `sha256` and was saved at `path`."""

    id: str
    path: str
    sha256: str


class FileFailed(msgspec.Struct, frozen=True, tag_field="event", tag="file_failed"):
    """Transfer `id` stopped for good (cancelled, rejected, disk full, ...); `reason` says why."""

    id: str
    reason: str


class FileStalled(msgspec.Struct, frozen=True, tag_field="event", tag="file_stalled"):
    """Transfer `id` has had no reachable source for a while; it resumes when one appears."""

    id: str
    reason: str


class FileInfo(msgspec.Struct, frozen=True):
    """One offer or transfer: `direction` is "in" or "out"; `state` one of offered,
    transferring, stalled, done, failed, rejected, cancelled, sharing."""

    id: str
    name: str
    size: int
    sha256: str
    peer_id: str
    nick: str
    direction: str
    state: str
    bytes: int = 0
    room: str = ""
    path: str = ""
    sources: int = 0
    rate: float = 0.0


class FileList(msgspec.Struct, frozen=True, tag_field="event", tag="files"):
    """Every known offer and transfer, newest first, answering a `files` command."""

    files: list[FileInfo]


class Upnp(msgspec.Struct, frozen=True, tag_field="event", tag="upnp"):
    """Our TCP port's UPnP mapping on the home router changed: public "host:port" or None."""

    mapping: str | None


# --- reach: invites and contacts (issue 14, docs/reach.md) ---------------------------


class RelayAddr(msgspec.Struct, frozen=True):
    """A relay named in an invite: its peer id and address ("host:port")."""

    peer_id: str
    address: str


class Invite(msgspec.Struct, frozen=True, tag_field="event", tag="invite"):
    """Our invite code, answering an `invite` command, and what it names.

    `addresses`: where we believe we are reachable (LAN, observed public, UPnP);
    `relays`: where we hold a reservation; `expires`: Unix time the code stops working.
    """

    code: str
    addresses: list[str]
    relays: list[RelayAddr]
    peer_id: str
    expires: float


class ContactAdded(msgspec.Struct, frozen=True, tag_field="event", tag="contact_added"):
    """A peer was added (or refreshed) as a contact from its invite; it is being dialled."""

    peer_id: str
    nick: str


class Lookup(msgspec.Struct, frozen=True, tag_field="event", tag="lookup", omit_defaults=True):
    """A DHT lookup of a peer's record ended (docs/dht.md): found or not, after `ms`.

    `reason`: why the last record seen was refused when none was found (e.g. "bad_signature",
    "old_seq", "oversized"); empty when found or when there was no record at all.
    """

    peer_id: str
    found: bool
    ms: int
    reason: str = ""


class Published(msgspec.Struct, frozen=True, tag_field="event", tag="published"):
    """Our DHT record was stored by `stored` DHT nodes (docs/dht.md): what it says."""

    seq: int
    addresses: list[str]
    relays: list[RelayAddr]
    private: bool
    stored: int


class ContactInfo(msgspec.Struct, frozen=True):
    """One contact: `path` is how it is reached while `online` ("lan", "direct",
    "relayed"; "" when offline), `last_seen` the Unix time it was last connected (0: never)."""

    peer_id: str
    nick: str
    online: bool
    path: str
    last_seen: float


class Contacts(msgspec.Struct, frozen=True, tag_field="event", tag="contacts"):
    """Every contact, answering a `contacts` command."""

    contacts: list[ContactInfo]


class ContactForgotten(msgspec.Struct, frozen=True, tag_field="event", tag="contact_forgotten"):
    """A contact was removed (`forget`): it is no longer dialled (a connection stays)."""

    peer_id: str
    nick: str


NodeEvent = (
    PathChanged
    | Ready
    | PeerJoined
    | PeerLeft
    | Message
    | Peers
    | Members
    | NickChanged
    | Error
    | History
    | Delivered
    | Mailed
    | Gap
    | GapFilled
    | Info
    | SearchResult
    | DirectMessage
    | Joined
    | Left
    | RoomList
    | Whois
    | Alert
    | FileOffer
    | FileProgress
    | FileDone
    | FileFailed
    | FileStalled
    | FileList
    | Upnp
    | Invite
    | ContactAdded
    | Contacts
    | ContactForgotten
    | Lookup
    | Published
    | DmHeld
    | HeldDms
    | KeyAccepted
    | HeldDiscarded
)
