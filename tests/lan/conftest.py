"""Fixtures for LAN tests: a namespace LAN, torn down whatever happens.

LAN tests need root. Without it they skip with the reason; under `CI=true` a
skipped LAN test is a failure instead, so CI cannot pass by not running them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lan_support import NODE_ARGS, NodeFactory, stop
from netlab import Host, NetLab, unavailable_reason

from ci_support import skip_or_fail
from driver import ChinwagProcess  # tests/ is on sys.path once lan_support is imported


@pytest.fixture
def lab() -> Iterator[NetLab]:
    """A fresh, empty namespace LAN; every namespace is deleted at teardown."""
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail("LAN tests", reason)
    netlab = NetLab()
    try:
        yield netlab
    finally:
        netlab.close()


@pytest.fixture
async def node(lab: NetLab, tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Factory for chinwag nodes inside lab hosts; all are stopped before the lab goes."""
    made: list[ChinwagProcess] = []

    def make(host: Host, nick: str, *args: str) -> ChinwagProcess:
        p = ChinwagProcess(tmp_path / nick, *NODE_ARGS, *args, netns=host.netns, nick=nick)
        made.append(p)
        return p

    yield make
    await asyncio.gather(*(stop(p) for p in made))
