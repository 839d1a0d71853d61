"""NAT lab tests: tests/lab and tests/ on the import path, and the `node` factory.

NAT tests need root and nftables. Without them they skip with the reason; under `CI=true`
a skipped `nat` test is a failure instead (ci_support.CI_REQUIRED_MARKERS).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(2, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(3, str(Path(__file__).resolve().parents[1] / "lan"))

from nat_support import NODE_ARGS, NodeFactory, stop
from natlab import Site

from driver import ChinwagProcess


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Factory for chinwag nodes in lab sites; every one is stopped at teardown."""
    made: list[ChinwagProcess] = []

    def make(site: Site, nick: str, *args: str) -> ChinwagProcess:
        p = ChinwagProcess(tmp_path / nick, *NODE_ARGS, *args, netns=site.netns, nick=nick)
        made.append(p)
        return p

    yield make
    await asyncio.gather(*(stop(p) for p in made))
