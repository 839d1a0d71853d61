"""Owner-only permissions of the data directory and the database (real files, real SQLite).

The data directory holds the identity key and the database, which holds the
messages of private rooms and conversations and the keys of private rooms: it
is 0700 and the database files (with -wal and -shm) 0600, also when they exist
already with looser modes. A umask of 022 is set so that loose modes would show.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from chinwag.datadir import DataDir
from chinwag.store.db import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def write_some(store: Store) -> None:
    """A write, so that SQLite has made its -wal and -shm files."""
    store.join_room("general", "general", "public", None, None)


def test_a_new_data_directory_is_0700(tmp_path: Path) -> None:
    d = DataDir(tmp_path / "new" / "chinwag")
    d.open()
    try:
        assert mode(d.path) == 0o700
    finally:
        d.close()


def test_an_existing_loose_data_directory_is_made_0700(tmp_path: Path) -> None:
    path = tmp_path / "chinwag"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o777)
    d = DataDir(path)
    d.open()
    try:
        assert mode(path) == 0o700
    finally:
        d.close()


def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "chinwag.db"
    store = Store(path)
    try:
        write_some(store)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        store.close()


def test_existing_loose_database_files_are_made_0600(tmp_path: Path) -> None:
    """A database left 0644 by an earlier version (its -wal and -shm too, held open by
    another connection so that they stay): opening it makes all three 0600."""
    path = tmp_path / "chinwag.db"
    first = Store(path)
    try:
        write_some(first)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        for f in files:
            os.chmod(f, 0o644)
        second = Store(path)
        try:
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        finally:
            second.close()
    finally:
        first.close()
