"""Owner-only permissions of the data directory and the database (real files, real SQLite).

The data directory holds the identity key and the database, which holds the
messages of private rooms and conversations and the keys of private rooms: it
is 0700 and the database files (with -wal and -shm) 0600, also when they exist
already with looser modes. A umask of 022 is set so that loose modes would show.
"""

from __future__ import annotations

import logging
import os
import stat
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from chinwag import datadir
from chinwag.datadir import DataDir, load_or_create_identity
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


def test_an_existing_loose_identity_key_is_made_0600_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key copied with a loose mode (cp without -p, an archive): tightened, and said so."""
    first = load_or_create_identity(tmp_path)
    key = tmp_path / "identity.key"
    assert mode(key) == 0o600
    os.chmod(key, 0o644)
    with caplog.at_level(logging.WARNING):
        again = load_or_create_identity(tmp_path)
    assert again.peer_id == first.peer_id
    assert mode(key) == 0o600
    assert "identity key" in caplog.text and "644" in caplog.text, caplog.text


def test_opening_a_loose_data_dir_tightens_every_file_in_it_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """identity key, web token, DHT state, settings, a folder: all owner-only after open."""
    path = tmp_path / "chinwag"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    names = ["identity.key", "web-token", "dht.state", "settings.json", "chinwag.log"]
    for name in names:
        (path / name).write_bytes(b"x")
        os.chmod(path / name, 0o644)
    (path / "uploads").mkdir(mode=0o755)
    d = DataDir(path)
    with caplog.at_level(logging.WARNING):
        d.open()
    try:
        assert mode(path) == 0o700
        assert {n: mode(path / n) for n in names} == {n: 0o600 for n in names}
        assert mode(path / "uploads") == 0o700
        for name in names:
            assert name in caplog.text, caplog.text
    finally:
        d.close()


def test_a_private_data_dir_opens_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = DataDir(tmp_path / "chinwag")
    d.open()
    load_or_create_identity(d.path)
    d.close()
    with caplog.at_level(logging.WARNING):
        d.open()
    d.close()
    assert "readable" not in caplog.text


def test_write_private_is_0600_also_over_a_loose_leftover_temporary(tmp_path: Path) -> None:
    leftover = tmp_path / "web-token.tmp"
    leftover.write_bytes(b"old")
    os.chmod(leftover, 0o644)
    datadir.write_private(tmp_path / "web-token", b"secret")
    assert mode(tmp_path / "web-token") == 0o600
    assert (tmp_path / "web-token").read_bytes() == b"secret"


def test_the_saved_dht_state_is_0600(tmp_path: Path) -> None:
    """The routing table saved at stop (a real libtorrent session) is owner-only."""
    lt = pytest.importorskip("libtorrent")
    from chinwag.net import dht
    from chinwag.net.dht import DhtNode

    dht._import_libtorrent()
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0", "enable_dht": True, "dht_bootstrap_nodes": "",
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    })  # fmt: skip
    holder = types.SimpleNamespace(_state_path=tmp_path / "dht.state")
    DhtNode._save_and_stop(holder, ses)  # type: ignore[arg-type]
    assert (tmp_path / "dht.state").exists()
    assert mode(tmp_path / "dht.state") == 0o600
