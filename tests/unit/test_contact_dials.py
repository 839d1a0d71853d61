"""ConnectionManager.dial_contact: relays are tried through the relay helper's `dial_via`
when this build has it (with the relay's address as (host, port)), and skipped otherwise."""

from __future__ import annotations

import asyncio
import random
import typing

import pytest
from unit_support import make_info

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.net.manager import ConnectionManager, ManagerListener

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


async def test_without_relay_support_relays_are_skipped() -> None:
    m = manager(ConnectionManager)
    m._dial_relays(TARGET, [(RELAY, "198.51.100.9:47475")])  # the delayed step: no-op
    assert not m._dial_tasks
    await m.close()
