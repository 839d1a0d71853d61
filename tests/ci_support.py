"""Under `CI=true` a LAN or browser test that cannot run fails instead of skipping.

So CI cannot pass by not running them. Shared by the LAN and browser fixtures;
tests/conftest.py turns any other skip of a test marked in `CI_REQUIRED_MARKERS`
into a failure.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

#: Marker -> what its tests are called in the failure message.
CI_REQUIRED_MARKERS = {
    "lan": "LAN test",
    "browser": "browser test",
    "nat": "NAT test",
    "dht": "DHT test",
}


def in_ci() -> bool:
    """Whether we run under CI (CI=true), where skipping required tests is not allowed."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(what: str, reason: str) -> NoReturn:
    """Skip with the reason, or fail under CI=true (`what` names the tests, e.g. "LAN tests")."""
    if in_ci():
        pytest.fail(f"CI=true and {what} cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def ci_skip_as_failure(item: pytest.Item, report: pytest.TestReport) -> None:
    """Under CI=true, turn a skipped test of a required marker (for any reason) into a failure."""
    if not report.skipped or not in_ci() or hasattr(report, "wasxfail"):
        return
    for marker, what in CI_REQUIRED_MARKERS.items():
        if item.get_closest_marker(marker) is not None:
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            report.outcome = "failed"
            report.longrepr = f"CI=true: {what} skipped, which counts as a failure: {reason}"
            return
