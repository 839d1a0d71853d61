"""Fixtures for LAN tests: a namespace LAN, torn down whatever happens.

LAN tests need root. Without it they skip with the reason; under `CI=true` a
skipped LAN test is a failure instead, so CI cannot pass by not running them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lan_support import NODE_ARGS, NodeFactory, stop
from netlab import Host, NetLab, unavailable_reason

from driver import ChinwagProcess  # tests/ is on sys.path once lan_support is imported


def in_ci() -> bool:
    """Whether we run under CI (CI=true), where skipping LAN tests is not allowed."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture
def lab() -> Iterator[NetLab]:
    """A fresh, empty namespace LAN; every namespace is deleted at teardown."""
    reason = unavailable_reason()
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI=true and LAN tests cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI=true, turn a skipped LAN test (for any reason) into a failure."""
    report = yield
    lan = item.get_closest_marker("lan") is not None
    if report.skipped and lan and in_ci() and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: LAN test skipped, which counts as a failure: {reason}"
    return report
