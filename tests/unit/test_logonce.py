"""logonce.WarnOnce: warnings a peer can trigger go out once at warning level, then at debug."""

from __future__ import annotations

import logging

import pytest

from chinwag.logonce import WarnOnce


def test_each_key_is_warned_once_then_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="t")
    warn = WarnOnce(logging.getLogger("t"))
    assert warn(("kcv", "p1"), "bad %s", 1) is True
    for _ in range(100):
        assert warn(("kcv", "p1"), "bad %s", 2) is False
    assert warn(("kcv", "p2"), "bad %s", 3) is True
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [m for lvl, m in levels if lvl == logging.WARNING] == ["bad 1", "bad 3"]
    assert len([m for lvl, m in levels if lvl == logging.DEBUG]) == 100


def test_keys_remembered_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    warn = WarnOnce(logging.getLogger("t"), capacity=3)
    for i in range(10):
        warn(i, "x")
    assert len(warn._warned) == 3
    assert warn(0, "x") is True  # forgotten long ago: warned again, once
