"""Closing in one process: a stopping node leaves no socket open behind it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_peer import HostilePeer
from it_support import PROMPT_S, until

from node_support import make_node

pytestmark = pytest.mark.timeout(60)


async def test_a_stopping_node_drops_the_socket_of_a_peer_that_never_ends_its_side(
    tmp_path: Path,
) -> None:
    """Closed connections are half-closed until the peer's end of stream; a peer that reads
    the goodbye but never ends its side must not keep the socket past the node's stop."""
    node = make_node(tmp_path / "a", "a")
    await node.start()
    h = HostilePeer()  # reads our goodbye, then never closes its side
    try:
        await h.connect(node.port, timeout=PROMPT_S)
        manager = node._running().manager
        await until(lambda: h.peer_id in manager.peers, "the peer joined")
        conn = manager.peers[h.peer_id]
        await node.stop()
        assert conn.transport is not None and conn.transport.is_closing()
        closed = await h.wait_closed(timeout=PROMPT_S)
        assert closed.code == "quit", closed
    finally:
        await h.close()
