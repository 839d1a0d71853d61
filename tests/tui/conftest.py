"""Fixtures for the TUI tests: real Nodes on temporary data dirs, loopback only, no discovery."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tui_support import AppFactory, make_node

from chinwag.ui.tui import ChinwagApp


@pytest.fixture
def app(tmp_path: Path) -> AppFactory:
    """Return a factory of apps over fresh nodes (the app starts and stops its node)."""

    def make(nick: str = "me", bell: bool | None = False, **kw: object) -> ChinwagApp:
        node = make_node(tmp_path / nick, nick, **kw)
        return ChinwagApp(node, bell=bell, log_path=tmp_path / nick / "chinwag.log")

    return make
