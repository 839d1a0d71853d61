"""Kinds of rooms, as data: a room's kind follows from its wire name (docs/rooms.md)."""

from __future__ import annotations

from enum import StrEnum

from chinwag.errors import LocalProtocolError


class RoomKind(StrEnum):
    """What a room is: a public room, a private room (passphrase) or a private conversation."""

    PUBLIC = "public"
    PRIVATE = "private"
    DM = "dm"


#: The wire-name prefix of each kind that has one (a public room's name has neither).
WIRE_PREFIX: dict[RoomKind, str] = {RoomKind.PRIVATE: "p.", RoomKind.DM: "dm."}


def kind_of_wire(wire: str) -> RoomKind:
    """Return the kind of the room with this wire name."""
    for kind, prefix in WIRE_PREFIX.items():
        if wire.startswith(prefix):
            return kind
    return RoomKind.PUBLIC


def room_kind(kind: str, wire: str) -> RoomKind:
    """Return a stored kind as a RoomKind; LocalProtocolError if unknown or not the wire's."""
    try:
        known = RoomKind(kind)
    except ValueError:
        raise LocalProtocolError(f"no room kind {kind!r}") from None
    if kind_of_wire(wire) is not known:
        raise LocalProtocolError(f"room {wire!r} cannot be of kind {kind!r}")
    return known
