"""In-process nodes for tests: a real Node on loopback with discovery off."""

from __future__ import annotations

from pathlib import Path

from chinwag.node import Node, NodeConfig


def make_node(
    data_dir: Path, nick: str = "me", port: int = 0, peers: list[tuple[str, int]] | None = None
) -> Node:
    """Return an unstarted Node that listens on loopback with discovery off."""
    config = NodeConfig(
        data_dir=data_dir,
        nick=nick,
        port=port,
        port_fallback=False,
        bind="127.0.0.1",
        peers=peers or [],
        discovery=False,
        downloads=data_dir / "downloads",
    )
    return Node(config)
