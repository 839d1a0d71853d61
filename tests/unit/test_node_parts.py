"""node.py: the running parts are one object, built whole in start() or not at all.

Real parts (store, sockets on loopback inside the test's network namespace); no discovery.
"""

from __future__ import annotations

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
