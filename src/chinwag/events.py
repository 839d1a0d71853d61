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
    """A peer completed the handshake; `address` is `host:port` of the connection."""

    peer_id: str
    nick: str
    address: str


class PeerLeft(msgspec.Struct, frozen=True, tag_field="event", tag="peer_left"):
    """The connection to a peer ended; `reason` says why."""

    peer_id: str
    nick: str
    reason: str = ""


class Message(msgspec.Struct, frozen=True, tag_field="event", tag="message"):
    """A chat message, received or our own (`own`); `ts` is the author's Unix time in seconds."""

    id: str
    room: str
    peer_id: str
    nick: str
    ts: float
    text: str
    own: bool
    seq: int = 0


class PeerInfo(msgspec.Struct, frozen=True):
    """One connected peer; `since` is the Unix time the connection opened."""

    peer_id: str
    nick: str
    address: str
    since: float = 0.0
    rtt_ms: float | None = None


class Peers(msgspec.Struct, frozen=True, tag_field="event", tag="peers"):
    """The connected peers, answering a `peers` command."""

    peers: list[PeerInfo]


class NickChanged(msgspec.Struct, frozen=True, tag_field="event", tag="nick"):
    """A peer (or we, when `own`) changed nick."""

    peer_id: str
    nick: str
    old: str
    own: bool = False


class Error(msgspec.Struct, frozen=True, tag_field="event", tag="error"):
    """A command failed or input was refused; the node keeps running."""

    message: str


NodeEvent = Ready | PeerJoined | PeerLeft | Message | Peers | NickChanged | Error
