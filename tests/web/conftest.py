"""Fixtures for the browser tests: one Chromium per module, real nodes per test.

Browser tests need Playwright and the distribution's Chromium. Without them they
skip with the reason; under `CI=true` a skipped browser test is a failure instead,
so CI cannot pass by not running them. They start real nodes, so they only run
inside a network namespace with nothing but loopback (`unshare -n`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_support import WebNode, chromium_missing, isolated_network, launch_chromium

from ci_support import skip_or_fail


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to start real nodes and a browser where they could reach a real network."""
    browser = [i for i in items if i.get_closest_marker("browser") is not None]
    if browser and not isolated_network() and not os.environ.get("CHINWAG_HOST_NET_OK"):
        pytest.exit(
            "browser tests start real nodes and Chromium: run them inside a fresh network "
            "namespace (scripts/test.sh does: unshare -n), never on the host network",
            returncode=2,
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole module (launching one costs about 0.2 s)."""
    reason = chromium_missing()
    if reason is not None:
        skip_or_fail("browser tests", reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch_chromium(p)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[WebNode]]:
    """Nodes started by a test (append to this list); all are stopped at teardown."""
    made: list[WebNode] = []
    yield made
    for node in reversed(made):
        node.stop()
