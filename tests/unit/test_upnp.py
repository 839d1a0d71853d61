"""UpnpMapper over a fake IGD: map, renew, retry, refuse a private WAN, delete, never hang.

The real miniupnpc against the distribution's miniupnpd is tested in tests/lab/test_upnp.py.
"""

from __future__ import annotations

import asyncio
import random
import threading

from chinwag.net.upnp import Mapping, UpnpMapper, is_public

#: Seconds a test waits for the mapper to act (its own delays here are tens of ms).
WITHIN_S = 5.0


class FakeIgd:
    """Records calls; `wan` is its external address, `igd` whether one answers at all."""

    def __init__(self, wan: str = "203.0.113.7", igd: bool = True, fail: bool = False) -> None:
        self.wan = wan
        self.igd = igd
        self.fail = fail
        self.finds = 0
        self.adds: list[list[int]] = []
        self.deleted: list[Mapping] = []
        self.called = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.gate: threading.Event | None = None
        self.add_gate: threading.Event | None = None

    def _note(self) -> None:
        self.loop.call_soon_threadsafe(self.called.set)

    def find(self) -> bool:
        if self.gate is not None:
            self.gate.wait(WITHIN_S)
        self.finds += 1
        self._note()
        return self.igd

    def add(self, port: int, ports: list[int], lease_s: int) -> Mapping:
        self.adds.append(ports)
        self._note()
        if self.add_gate is not None:
            self.add_gate.wait(WITHIN_S)
        if self.fail:
            raise Exception("ConflictInMappingEntry")
        return Mapping(self.wan, ports[0], "192.168.1.2", port, lease_s)

    def delete(self, mapping: Mapping) -> None:
        self.deleted.append(mapping)


async def until(fake: FakeIgd, cond: object) -> None:
    """Wait (with a timeout) until cond() holds, re-checking after each call on the fake."""
    async with asyncio.timeout(WITHIN_S):
        while not cond():  # type: ignore[operator]
            fake.called.clear()
            await fake.called.wait()


def mapper(fake: FakeIgd, told: list[str | None], lease_s: int = 3600) -> UpnpMapper:
    return UpnpMapper(
        4000, random.Random(1), told.append, lease_s=lease_s, retry_s=0.02,
        igd_factory=lambda _ms: fake,
    )  # fmt: skip


async def test_maps_renews_and_deletes() -> None:
    fake = FakeIgd()
    told: list[str | None] = []
    m = mapper(fake, told, lease_s=1)  # renewed every 0.5 s
    m.start()
    await until(fake, lambda: len(fake.adds) >= 2)
    assert m.mapping == "203.0.113.7:4000"
    assert told == ["203.0.113.7:4000"]  # a renewal at the same address is not news
    assert fake.adds[0][0] == 4000 and fake.adds[1][0] == 4000
    assert fake.finds == 1
    await m.close()
    assert [d.address for d in fake.deleted] == ["203.0.113.7:4000"]
    assert m.mapping is None


async def test_no_igd_retries_and_maps_nothing() -> None:
    fake = FakeIgd(igd=False)
    told: list[str | None] = []
    m = mapper(fake, told)
    m.start()
    await until(fake, lambda: fake.finds >= 3)
    assert m.mapping is None and told == [] and fake.adds == []
    await m.close()
    assert fake.deleted == []


async def test_refused_mapping_is_not_fatal() -> None:
    fake = FakeIgd(fail=True)
    told: list[str | None] = []
    m = mapper(fake, told)
    m.start()
    await until(fake, lambda: len(fake.adds) >= 2)
    assert m.mapping is None and told == []
    await m.close()


async def test_private_wan_is_not_advertised() -> None:
    fake = FakeIgd(wan="100.64.3.2")  # behind a carrier NAT: useless to a stranger
    told: list[str | None] = []
    m = mapper(fake, told)
    m.start()
    await until(fake, lambda: len(fake.deleted) >= 1)
    assert m.mapping is None and told == []
    await m.close()


async def test_close_does_not_wait_for_a_search() -> None:
    fake = FakeIgd()
    fake.gate = threading.Event()  # the SSDP search hangs
    m = mapper(fake, [])
    m.start()
    await asyncio.sleep(0)
    async with asyncio.timeout(1.0):
        await m.close()
    fake.gate.set()  # let the worker thread end (the leak guard checks it)


def test_is_public() -> None:
    assert is_public("203.0.113.7") and is_public("8.8.8.8")
    assert not is_public("192.168.1.1") and not is_public("100.64.0.9")
    assert not is_public("10.1.2.3") and not is_public("garbage")


async def test_a_mapping_made_while_stopping_is_deleted() -> None:
    fake = FakeIgd()
    fake.add_gate = threading.Event()  # the router is slow to answer AddPortMapping
    m = mapper(fake, [])
    m.start()
    await until(fake, lambda: len(fake.adds) >= 1)
    closing = asyncio.ensure_future(m.close())
    await asyncio.sleep(0)  # close() is now waiting for the add under way
    fake.add_gate.set()
    async with asyncio.timeout(WITHIN_S):
        await closing
    assert [d.address for d in fake.deleted] == ["203.0.113.7:4000"]
