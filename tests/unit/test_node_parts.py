"""node.py: the running parts are one object, built whole in start() or not at all.

Real parts (store, sockets on loopback inside the test's network namespace); no discovery.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from chinwag.errors import UsageError
from chinwag.node import Node, NodeConfig


def config(data_dir: Path, port: int = 0, fallback: bool = True) -> NodeConfig:
    return NodeConfig(
        data_dir=data_dir,
        nick="alice",
        port=port,
        port_fallback=fallback,
        bind="127.0.0.1",
        discovery=False,
    )


async def test_a_node_not_started_refuses_commands(tmp_path: Path) -> None:
    node = Node(config(tmp_path))
    with pytest.raises(UsageError, match="not started"):
        node.peers()
    with pytest.raises(UsageError, match="not started"):
        node.post("hello")


async def test_a_failed_start_leaves_nothing_running(tmp_path: Path) -> None:
    """The port is taken: start fails, every part built so far is closed (the thread guard
    checks the store's checkpointer), and the data directory can be used again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = Node(config(tmp_path, port, fallback=False))
        with pytest.raises(OSError):
            await node.start()
    with pytest.raises(UsageError, match="not started"):
        node.peers()
    again = Node(config(tmp_path))
    ready = await again.start()
    try:
        assert ready.nick == "alice"
        assert again.peers().peers == []
    finally:
        await again.stop()


@pytest.mark.parametrize("mesh", [True, False])
async def test_beacons_feed_the_mesh_and_only_a_new_peer_is_answered(
    tmp_path: Path, mesh: bool
) -> None:
    """With the mesh a beacon makes a candidate, not a dial, and is answered at once only
    when its peer is new (or was silent): most peers heard stay unconnected, and answering
    all their beacons would make each beacon of a big LAN draw an answer from every host."""
    from chinwag.crypto.identity import Identity

    cfg = config(tmp_path)
    cfg.mesh = mesh
    node = Node(cfg)
    await node.start()
    try:
        other = Identity.generate().peer_id
        assert node._beacon_heard(other, "127.0.0.9", 4000) is True
        assert node._beacon_heard(other, "127.0.0.9", 4000) is (not mesh)
        run = node._running()
        history = run.history
        if mesh:
            assert history.mesh is not None and other in history.mesh.candidates()
            later = asyncio.get_running_loop().time() + 100
            assert run.manager.table.due_dials(later) == []  # the mesh dials, not the table
        else:
            assert history.mesh is None
    finally:
        await node.stop()


async def test_a_private_message_to_a_peer_not_connected_dials_it(tmp_path: Path) -> None:
    """A conversation goes over a direct connection: /msg to a peer we are not connected
    to asks the connection manager for it (the outbox holds the message meanwhile)."""
    from chinwag.crypto.identity import Identity

    node = Node(config(tmp_path))
    await node.start()
    try:
        other = Identity.generate().peer_id
        wanted: list[str] = []
        node._running().manager.want = wanted.append  # type: ignore[method-assign]
        event = await node.dm(other, "hello")
        assert event.text == "hello"  # type: ignore[union-attr]
        assert wanted == [other]
    finally:
        await node.stop()
