"""net/dht.py's bookkeeping of puts over a fake libtorrent session (no network)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chinwag import limits
from chinwag.net.dht import DhtNode

KEY = bytes(32)
SALT = b"chinwag/1"


class SilentSession:
    """A libtorrent session whose puts never raise their alert (queue overflow, shutdown)."""

    def __init__(self) -> None:
        self.puts = 0

    def dht_put_mutable_item(
        self, private: bytes, public: bytes, value: bytes, salt: bytes
    ) -> None:
        self.puts += 1


def node_on(session: object) -> DhtNode:
    node = DhtNode("127.0.0.1", 0, [], None)
    node._ses = session
    node._loop = asyncio.get_running_loop()
    return node


async def test_a_put_whose_alert_never_comes_ends_and_frees_its_slot(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(limits, "DHT_PUT_TIMEOUT_S", 0.05)
    session = SilentSession()
    node = node_on(session)
    with caplog.at_level(logging.DEBUG, logger="chinwag.net.dht"):
        for _ in range(3):
            assert await asyncio.wait_for(node.put(bytes(64), KEY, b"v", SALT), 5.0) == 0
    assert session.puts == 3
    assert node._puts == {}, "a timed-out put leaves nothing pending"
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "no answer" in warned[0].getMessage()


async def test_an_answered_put_returns_the_count() -> None:
    node: DhtNode

    class Answering(SilentSession):
        def dht_put_mutable_item(
            self, private: bytes, public: bytes, value: bytes, salt: bytes
        ) -> None:
            asyncio.get_running_loop().call_soon(node._put_done, public, salt, 7)

    node = node_on(Answering())
    assert await node.put(bytes(64), KEY, b"v", SALT) == 7
    assert node._puts == {}
