"""net/dht.py over real libtorrent: the routing table saved at stop brings a restarted node
back into the DHT with no bootstrap node at all (docs/dht.md "Bootstrap nodes").

A small private DHT of libtorrent sessions runs in this process on addresses added to `lo`
of the test's own network namespace (root only; tests/conftest.py refuses to run outside
a fresh namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chinwag.net import dht as dhtmod
from chinwag.net.dht import DhtNode

lt = pytest.importorskip("libtorrent")

pytestmark = pytest.mark.dht

IPS = [f"10.61.{i}.1" for i in range(1, 7)]
PORT = 6881
#: Seconds a node may take to fill its routing table from the nodes it was given.
FILL_S = 10.0


@pytest.fixture
def swarm() -> Iterator[list[Any]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to add addresses to lo")
    for ip in IPS:
        subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
    sessions = []
    for ip in IPS:
        ses = lt.session({
            "listen_interfaces": f"{ip}:{PORT}", "enable_dht": True, "dht_bootstrap_nodes": "",
            "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
            "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        })  # fmt: skip
        sessions.append(ses)
    for ses in sessions:
        for ip in IPS:
            ses.add_dht_node((ip, PORT))
    yield sessions
    for ses in sessions:
        ses.pause()
    sessions.clear()
    for ip in IPS:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", "lo"], check=True)


def table_size(node: DhtNode) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return int(node._ses.status().dht_nodes)


async def filled(node: DhtNode, at_least: int) -> int:
    """Wait until the node's routing table holds at_least nodes; return its size."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FILL_S
    # libtorrent has no event for "node added": poll, bounded.
    while table_size(node) < at_least and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return table_size(node)


async def test_a_restarted_node_rejoins_through_its_saved_table(
    swarm: list[Any], tmp_path: Path
) -> None:
    state = tmp_path / dhtmod.STATE_FILE
    first = DhtNode("127.0.0.1", 0, [(IPS[0], PORT)], state)
    await first.start()
    try:
        assert await filled(first, 4) >= 4
    finally:
        await first.close()
    assert state.exists()
    assert len(dhtmod.saved_nodes(lt.bdecode(state.read_bytes()))) >= 4

    again = DhtNode("127.0.0.1", 0, [], state)  # no bootstrap node at all
    await again.start()
    try:
        assert await filled(again, 4) >= 4
    finally:
        await again.close()


def test_saved_nodes_reads_only_well_formed_endpoints() -> None:
    good = b"\x0a\x3d\x01\x01\x1a\xe1"
    six = bytes(15) + b"\x01" + b"\x1a\xe1"
    state = {b"dht state": {b"nodes": [good, b"short", 7], b"nodes6": [six, good]}}
    assert dhtmod.saved_nodes(state) == [("10.61.1.1", 6881), ("::1", 6881)]
    for bad in (None, [], {b"dht state": []}, {b"dht state": {b"nodes": b"x"}}):
        assert dhtmod.saved_nodes(bad) == []
