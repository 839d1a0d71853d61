"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chinwag.store.db import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real SQLite store in tmp_path, closed at teardown."""
    s = Store(tmp_path / "chinwag.db")
    yield s
    s.close()
