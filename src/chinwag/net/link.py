"""The typed interface the layers above net/ depend on: one peer link, and all of them.

history, files and rooms see a connection only as a `Link` and the connection
manager only as `Links`; net/connection.py and net/manager.py implement them, the
test fakes (tests/unit/unit_support.py) implement them too, and neither side imports
the other's concrete classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from chinwag.protocol import messages as m


@runtime_checkable
class Link(Protocol):
    """One authenticated connection to a peer."""

    @property
    def peer_id(self) -> str | None:
        """The peer's id once its handshake completed, else None."""
        ...

    @property
    def is_open(self) -> bool:
        """True while frames may be sent (handshake done, no goodbye said or heard)."""
        ...

    def send_frame(self, frame: m.Frame) -> None:
        """Queue one frame; a no-op when the link is not open."""
        ...

    def send_encoded(self, plaintext: bytes) -> None:
        """Queue an already encoded frame (encode once, send to many); no-op if not open."""
        ...

    def close(self, reason: str, linger: bool = False) -> None:
        """Say goodbye with a reason code (protocol/reasons.py) and close; never raises."""
        ...

    async def wait_drained(self, limit_s: float) -> bool:
        """Wait until the send buffer is below its high-water mark; False on timeout."""
        ...


@runtime_checkable
class Links(Protocol):
    """Every open link of a node, by peer id, and the ways to reach them."""

    @property
    def peers(self) -> Mapping[str, Link]:
        """The open link of each connected peer (read only: the manager owns it)."""
        ...

    def broadcast(self, plaintext: bytes, exclude: frozenset[str] = frozenset()) -> None:
        """Send an encoded frame to every connected peer not in exclude."""
        ...

    def broadcast_frame(self, frame: m.Frame) -> None:
        """Send one frame to every connected peer."""
        ...

    def want(self, peer_id: str) -> None:
        """Dial peer_id soon if its address is known and it is not connected."""
        ...
