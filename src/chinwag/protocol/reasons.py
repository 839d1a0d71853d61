"""The one set of reason codes: why a connection closes, what a `bye` says, why a peer is refused.

docs/protocol.md section 11 lists every member (checked by tests/unit/test_reasons.py).
A `Reason` is a `str`, so it is sent in a `bye` and compared with a received code as is.
A received `bye` may carry any valid name: a code from the peer is a `str`, not a `Reason`.
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
    #: The node stops because of an error of its own (a failed start, a broken store).
    ERROR = "error"
    #: The generic remote error, for a RemoteProtocolError raised without a code.
    PROTOCOL_ERROR = "protocol_error"

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
        Reason.ERROR,
        Reason.PROTOCOL_ERROR,
    }
)
