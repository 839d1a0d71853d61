"""net/netwatch.py: our LAN addresses for invites, and the watch that notices a new network."""

from __future__ import annotations

import asyncio

import pytest

from chinwag import limits
from chinwag.net import netwatch


def test_lan_addresses_skip_loopback_unless_there_is_nothing_else() -> None:
    ips = ["127.0.0.1", "192.168.1.20", "169.254.3.3", "10.0.0.2"]
    assert netwatch.lan_addrs("0.0.0.0", 47475, ips) == ["192.168.1.20:47475", "10.0.0.2:47475"]
    assert netwatch.lan_addrs("0.0.0.0", 5, ["127.0.0.1"]) == ["127.0.0.1:5"]
    assert netwatch.lan_addrs("10.0.0.2", 5, ips) == ["10.0.0.2:5"]  # --bind: that one only


async def test_a_change_of_interface_addresses_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current = ["192.168.1.20"]
    monkeypatch.setattr(netwatch, "interface_ips", lambda: list(current))
    monkeypatch.setattr(limits, "NETWORK_POLL_S", 0.01)
    changes: asyncio.Queue[list[str]] = asyncio.Queue()
    polled = asyncio.Event()
    watch = netwatch.NetWatch(changes.put_nowait, polled.set)
    watch.start()
    try:
        await asyncio.wait_for(polled.wait(), 5)  # every poll, changed or not
        assert changes.empty()
        current[:] = ["192.168.1.20", "172.20.10.3"]  # a phone's hotspot came up
        assert await asyncio.wait_for(changes.get(), 5) == ["192.168.1.20", "172.20.10.3"]
        current[:] = ["172.20.10.3"]
        assert await asyncio.wait_for(changes.get(), 5) == ["172.20.10.3"]
        assert changes.empty()
    finally:
        watch.close()
