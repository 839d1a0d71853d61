"""Suite-wide guards: tests that start nodes only run inside an isolated network namespace."""

from __future__ import annotations

import os
import socket

import pytest


def isolated_network() -> bool:
    """Return True if this process sees no network interface but loopback."""
    return all(name == "lo" for _, name in socket.if_nameindex())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to start real nodes where their beacons could reach a real network."""
    needs_net = [
        i for i in items if any(d in str(i.path) for d in ("/integration/", "/lan/", "/tui/"))
    ]
    if needs_net and not isolated_network() and not os.environ.get("CHINWAG_HOST_NET_OK"):
        pytest.exit(
            "integration and LAN tests start real nodes: run them inside a fresh network "
            "namespace (scripts/test.sh does: unshare -n), never on the host network",
            returncode=2,
        )
