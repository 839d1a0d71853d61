"""Fixtures for integration tests: real `chinwag --json` processes on loopback only.

Every node binds to 127.0.0.1; discovery (when on) uses a random UDP port per
test so that tests cannot hear each other's beacons. Run the suite inside a
fresh network namespace (`unshare -n`) so nothing can leave the machine.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from it_support import ChinwagProcess, NodeFactory


@pytest.fixture
def discovery_port() -> int:
    """A random UDP discovery port for this test, so tests never share beacons."""
    return random.randint(40000, 60000)


@pytest.fixture
async def node(tmp_path: Path, discovery_port: int) -> AsyncIterator[NodeFactory]:
    """Factory for nodes on loopback; every node made is stopped at teardown."""
    made: list[ChinwagProcess] = []

    def make(
        name: str,
        *args: str,
        nick: str | None = None,
        discovery: bool = True,
        data_dir: Path | None = None,
    ) -> ChinwagProcess:
        base = ["--bind", "127.0.0.1"]
        if "--port" not in args:
            base += ["--port", "0"]
        if discovery:
            base += ["--discovery-port", str(discovery_port)]
        else:
            base += ["--no-discovery"]
        p = ChinwagProcess(data_dir or tmp_path / name, *base, *args, nick=nick or name)
        made.append(p)
        return p

    yield make
    for p in reversed(made):
        if p.proc is not None and p.proc.returncode is None:
            try:
                await p.quit(timeout=5)
            except Exception:
                with contextlib.suppress(Exception):
                    await p.kill()
