"""The one set of reason codes: why a connection closes, what a `bye` says, why a peer is refused,
why a file chunk will not come (`fnak`) and why a file transfer stops (`fend`).

docs/protocol.md section 11 lists every `Reason`, section 6 every `FileRefusal` and
`FileEndReason` (both checked by tests/unit/test_reasons.py). Each is a `str`, so it is
sent as is and compared with a received code as is. A received code may be any short
string: a code from the peer is a `str`, not a member (an unknown one is not an error).
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """A reason code; `SENT` says which of them travel in a `bye`."""

    # --- sent in a bye (docs/protocol.md section 11, first table) ---
    QUIT = "quit"
    DUPLICATE = "duplicate"
    TOO_SLOW = "too_slow"
    TOO_MANY_PEERS = "too_many_peers"
    EVICTED = "evicted"
    DECRYPT_FAILED = "decrypt_failed"
    MALFORMED_FRAME = "malformed_frame"
    TOO_LARGE = "too_large"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_SIGNATURE = "bad_signature"
    EQUIVOCATION = "equivocation"
    SYNC_FLOOD = "sync_flood"
    #: The peer tried to prove a private room's passphrase more often than ADMIT_* allow.
    ADMIT_FLOOD = "admit_flood"
    #: The peer sent presence records faster than PRESENCE_PEER_* allows.
    PRESENCE_FLOOD = "presence_flood"
    #: The peer's mesh score fell below the close threshold (docs/mesh.md).
    LOW_SCORE = "low_score"
    #: The node holds more connections than its mesh needs and this one is in no mesh.
    MESH_FULL = "mesh_full"
    #: The node stops because of an error of its own (a failed start, a broken store).
    ERROR = "error"
    #: The generic remote error, for a RemoteProtocolError raised without a code.
    PROTOCOL_ERROR = "protocol_error"
    #: The peer put mail faster than MAILBOX_PUT_* allows (docs/protocol.md section 24).
    MAIL_FLOOD = "mail_flood"

    # --- never sent: the handshake was refused (section 5.5) ---
    HANDSHAKE_FAILED = "handshake_failed"
    MALFORMED_HANDSHAKE = "malformed_handshake"
    NOT_CHINWAG = "not_chinwag"
    VERSION_MISMATCH = "version_mismatch"
    BAD_IDENTITY = "bad_identity"
    SELF = "self"
    UNEXPECTED_PEER = "unexpected_peer"

    # --- never sent: the connection was lost ---
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    EOF = "eof"
    TIMEOUT = "timeout"
    #: A peer's goodbye whose reason was empty or not a valid name (its text is not kept).
    BYE = "bye"


#: The codes a node may send in a `bye` (the others are only logged and reported locally).
SENT: frozenset[Reason] = frozenset(
    {
        Reason.QUIT,
        Reason.DUPLICATE,
        Reason.TOO_SLOW,
        Reason.TOO_MANY_PEERS,
        Reason.EVICTED,
        Reason.DECRYPT_FAILED,
        Reason.MALFORMED_FRAME,
        Reason.TOO_LARGE,
        Reason.BAD_TIMESTAMP,
        Reason.BAD_SIGNATURE,
        Reason.EQUIVOCATION,
        Reason.SYNC_FLOOD,
        Reason.ADMIT_FLOOD,
        Reason.PRESENCE_FLOOD,
        Reason.LOW_SCORE,
        Reason.MESH_FULL,
        Reason.ERROR,
        Reason.PROTOCOL_ERROR,
        Reason.MAIL_FLOOD,
    }
)


# --- file transfers (docs/protocol.md section 6, "File codes") ---------------------
# Separate enums, not members of Reason: they never close a connection or travel in a
# `bye`, and each frame field takes only its own set (mypy rejects an `fend` code in an
# `fnak`). The wire field stays a bounded `str`, so a peer's unknown code still decodes.


class FileRefusal(enum.StrEnum):
    """Why a chunk will not come: the `reason` of an `fnak`."""

    #: The receiver knows no file with this id.
    UNKNOWN = "unknown"
    #: Not given to this asker, no such chunk, or the file cannot be read.
    UNAVAILABLE = "unavailable"
    #: Too many chunk requests are queued for the asker, or no file can be opened now.
    BUSY = "busy"
    #: The file changed since it was offered; it is no longer served.
    CHANGED = "changed"
    #: The only connection to the asker is a byte-limited relay circuit: files wait for a
    #: better path (docs/reach.md "Relays").
    RELAY_LIMITED = "relay_limited"


class FileEndReason(enum.StrEnum):
    """Why the sender stops a transfer: the `reason` of an `fend`."""

    #: The receiver saved the file whole (receiver to its sources and to a private offer's author).
    DONE = "done"
    #: The receiver cancelled (or failed) the download.
    CANCELLED = "cancelled"
    #: The recipient of a private offer rejected it.
    REJECTED = "rejected"
    #: The offerer withdrew its offer (to the room's members, or to a private offer's recipient).
    WITHDRAWN = "withdrawn"


# --- relays (docs/protocol.md section 11, "Relay codes") ----------------------------------


class RelayRefusal(enum.StrEnum):
    """Why a relay refuses a reservation (`rsvno`) or a circuit (`cno`)."""

    #: The node is not a relay (started without `--relay`).
    NOT_RELAY = "not_relay"
    #: A bound on reservations or circuits was reached (limits.py, RELAY_*).
    RESOURCE_LIMIT = "resource_limit"
    #: The target holds no reservation at this relay.
    NO_RESERVATION = "no_reservation"
    #: The target did not accept in time, or its reservation connection went away.
    TARGET_GONE = "target_gone"
    #: An Accept named no circuit waiting for this peer.
    UNKNOWN_CIRCUIT = "unknown_circuit"
    #: A peer asked for a circuit to itself.
    SELF = "circuit_to_self"


# --- mailboxes (docs/protocol.md section 24) ------------------------------------------


class MailRefusal(enum.StrEnum):
    """Why a holder does not keep an item of an `mput`: the `reason` of an `mno`."""

    #: The holder keeps MAILBOX_MAX_ITEMS or MAILBOX_MAX_BYTES already: try another holder.
    FULL = "full"
    #: The sender has MAILBOX_MAX_*_PER_SENDER waiting here already.
    SENDER_FULL = "sender_full"
    #: The expiry is past, or further than MAILBOX_TTL_S (+ skew) from now.
    BAD_EXPIRY = "bad_expiry"
    #: This item was held here already (and maybe delivered): a replay.
    REPLAYED = "replayed"
    #: The item is addressed to the holder itself (it reads it instead).
    SELF = "mail_to_self"
