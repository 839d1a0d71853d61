"""Helpers shared by the NAT lab tests: building a lab for a module-scoped fixture."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from natlab import NatLab, Site, built, unavailable_reason

from ci_support import skip_or_fail
from driver import ChinwagProcess

#: Arguments every lab node gets: any TCP port, logs at info (the lab's LANs have one host).
NODE_ARGS = ("--port", "0", "--log-level", "info")
#: Seconds for a process to start and print `ready` (2 cores, several nodes at once).
START_S = 20.0
#: Seconds for a connection or a message to arrive on the lab.
PROMPT_S = 10.0


class NodeFactory(Protocol):
    """Signature of the `node` fixture: a (not yet started) chinwag in one lab site."""

    def __call__(self, site: Site, nick: str, *args: str) -> ChinwagProcess: ...


async def stop(node: ChinwagProcess) -> None:
    """Quit a node if it runs, killing it if it does not go."""
    if node.proc is None or node.proc.returncode is not None:
        return
    try:
        await node.quit(5)
    except Exception:
        with contextlib.suppress(Exception):
            await node.kill()


def lab_of(*sites: tuple[str, ...]) -> Iterator[NatLab]:
    """Build a lab with these (name, kind[, bridge]) sites for a fixture, or skip (CI: fail)."""
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail("NAT tests", reason)
    with built(*sites) as lab:
        yield lab
