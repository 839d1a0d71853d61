"""ConnectionManager.dial_contact: relays are tried through `dial_via` (with the relay's
address as (host, port)), and again with back-off while the contact stays offline."""

from __future__ import annotations

import asyncio
import itertools
import random
import typing

import pytest
from unit_support import make_info

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.net.manager import ConnectionManager, ManagerListener
from chinwag.net.relay import RelayError

TARGET = Identity.from_seed(b"t" * 32).peer_id
RELAY = Identity.from_seed(b"r" * 32).peer_id


class WithRelays(ConnectionManager):
    """A manager of a build with relay support: records its relay dials."""

    dialled: asyncio.Queue[tuple[str, tuple[str, int], str]]

    async def dial_via(self, relay_id: str, relay_addr: tuple[str, int], target: str) -> None:
        self.dialled.put_nowait((relay_id, relay_addr, target))


def manager(cls: type[ConnectionManager]) -> ConnectionManager:
    info = make_info()
    listener = typing.cast(ManagerListener, object())
    return cls(lambda: info, listener, random.Random(1))


async def test_relays_are_dialled_through_dial_via_when_there_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "CONTACT_RELAY_DELAY_S", 0.0)
    m = manager(WithRelays)
    assert isinstance(m, WithRelays)
    m.dialled = asyncio.Queue()
    m.dial_contact(TARGET, [], [(RELAY, "198.51.100.9:47475"), (RELAY, "not an address")])
    got = await asyncio.wait_for(m.dialled.get(), 5)
    assert got == (RELAY, ("198.51.100.9", 47475), TARGET)
    await m.close()
    assert m.dialled.empty()  # the bad address was skipped


class FailingRelays(ConnectionManager):
    """A manager whose every relay is down: records when it dials one."""

    dialled: asyncio.Queue[float]

    async def dial_via(self, relay_id: str, relay_addr: tuple[str, int], target: str) -> None:
        self.dialled.put_nowait(asyncio.get_running_loop().time())
        raise RelayError("relay down")


async def test_an_offline_contacts_relays_are_tried_again_backing_off_until_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "CONTACT_RELAY_DELAY_S", 0.0)
    monkeypatch.setattr(limits, "CONTACT_RELAY_RETRY_BASE_S", 0.02)
    monkeypatch.setattr(limits, "CONTACT_RELAY_RETRY_CAP_S", 0.08)
    m = manager(FailingRelays)
    assert isinstance(m, FailingRelays)
    m.dialled = asyncio.Queue()
    m.dial_contact(TARGET, [], [(RELAY, "198.51.100.9:47475")])
    times = [await asyncio.wait_for(m.dialled.get(), 5) for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.015 and gaps[1] >= 0.035  # doubling ...
    assert max(gaps) < 1.0  # ... up to the cap
    m.forget_contact(TARGET)
    assert not m._relay_redials  # no round armed any more
    await m.close()
