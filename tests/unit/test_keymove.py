"""The export archive (crypto/archive.py, pure) and export/import of a data directory
(keymove.py) on real files and a real SQLite store: every failure changes nothing."""

from __future__ import annotations

import hashlib
import os
import re
import struct
from pathlib import Path

import nacl.pwhash
import pytest

from chinwag import limits
from chinwag.crypto import archive
from chinwag.datadir import DataDir, load_or_create_identity
from chinwag.errors import ChinwagError, DataDirExported, DataDirLocked, UsageError
from chinwag.keymove import export_identity, import_identity
from chinwag.store.db import Store

PP = b"correct horse battery staple"
FAST = {
    "opslimit": nacl.pwhash.argon2id.OPSLIMIT_MIN,
    "memlimit": nacl.pwhash.argon2id.MEMLIMIT_MIN,
}
SALT, NONCE = b"s" * archive.SALT_BYTES, b"n" * archive.NONCE_BYTES


def sealed(payload: bytes = b"payload") -> bytes:
    return archive.seal(PP, payload, SALT, NONCE, **FAST)


def test_an_archive_opens_with_its_passphrase_only() -> None:
    data = sealed()
    assert archive.open_sealed(PP, data) == b"payload"
    with pytest.raises(archive.BadArchive, match="wrong passphrase"):
        archive.open_sealed(b"correct horse battery stapler", data)


def test_every_changed_header_or_ciphertext_byte_is_refused() -> None:
    """The header is the AEAD's associated data: no byte of it can change unnoticed."""
    data = sealed()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(archive.BadArchive):
            archive.open_sealed(PP, bytes(bad))


def test_truncated_or_extended_archives_are_refused() -> None:
    data = sealed()
    for cut in (0, 8, archive.HEADER_BYTES, len(data) - 1):
        with pytest.raises(archive.BadArchive):
            archive.open_sealed(PP, data[:cut])
    with pytest.raises(archive.BadArchive):
        archive.open_sealed(PP, data + b"\0")


def test_a_header_asking_for_too_much_memory_is_refused_before_any_work() -> None:
    data = bytearray(sealed())
    struct.pack_into(">I", data, 14, (limits.MAX_ARCHIVE_MEMLIMIT // 1024) * 2)
    with pytest.raises(archive.BadArchive, match="out of range"):
        archive.check_header(bytes(data))


def test_export_uses_argon2id_moderate_limits() -> None:
    assert archive.check_header(archive.seal(PP, b"", SALT, NONCE)[:100] + b"\0" * 16) == (
        nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
        nacl.pwhash.argon2id.MEMLIMIT_MODERATE,
    )


# --- keymove on real files --------------------------------------------------------------


def snapshot(path: Path) -> dict[str, str]:
    """Every file under path with a hash of its bytes (to show that nothing changed)."""
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def make_dir(path: Path) -> str:
    """Create a private data dir with an identity (unlocked again); return its peer id."""
    d = DataDir(path)
    d.open()
    d.close()
    return load_or_create_identity(path).peer_id


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A data dir with an identity and a store holding a joined room."""
    d = tmp_path / "src"
    make_dir(d)
    store = Store(d / "chinwag.db")
    store.join_room("lunch", "lunch", "public", None, None)
    store.close()
    return d


def test_export_then_import_gives_the_same_identity_and_store(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.chinwag"
    done = export_identity(source, out, PP, force=False)
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    target = tmp_path / "dst"
    imported = import_identity(target, out, PP, force=False)
    assert imported.peer_id == done.peer_id == load_or_create_identity(target).peer_id
    store = Store(target / "chinwag.db")
    try:
        assert "lunch" in [row[0] for row in store.rooms_joined()]
    finally:
        store.close()


def test_export_refuses_while_chinwag_runs_and_will_not_overwrite(
    source: Path, tmp_path: Path
) -> None:
    running = DataDir(source)
    running.open()
    try:
        with pytest.raises(DataDirLocked):
            export_identity(source, tmp_path / "x", PP, force=False)
    finally:
        running.close()
    (tmp_path / "x").write_bytes(b"keep me")
    with pytest.raises(UsageError, match="exists"):
        export_identity(source, tmp_path / "x", PP, force=False)
    assert (tmp_path / "x").read_bytes() == b"keep me"


def test_a_failed_import_changes_nothing(source: Path, tmp_path: Path) -> None:
    """Wrong passphrase, tampered or truncated file: an error, and no file is written."""
    out = tmp_path / "x.chinwag"
    export_identity(source, out, PP, force=False)
    good = out.read_bytes()
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 0x40
    cases = {
        "wrong": (good, b"not the passphrase"),
        "tampered": (bytes(tampered), PP),
        "truncated": (good[: len(good) - 7], PP),
    }
    other = tmp_path / "other"
    make_dir(other)
    before = snapshot(other)
    for name, (data, pp) in cases.items():
        path = tmp_path / f"{name}.chinwag"
        path.write_bytes(data)
        with pytest.raises(archive.BadArchive):
            import_identity(tmp_path / f"new-{name}", path, pp, force=True)
        assert not (tmp_path / f"new-{name}").exists()
        with pytest.raises(archive.BadArchive):
            import_identity(other, path, pp, force=True)
        assert snapshot(other) == before


def test_import_refuses_to_replace_an_identity_unless_forced(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.chinwag"
    moved = export_identity(source, out, PP, force=False)
    other = tmp_path / "other"
    old = make_dir(other)
    before = snapshot(other)
    with pytest.raises(UsageError, match="--force"):
        import_identity(other, out, PP, force=False)
    assert snapshot(other) == before
    import_identity(other, out, PP, force=True)
    assert load_or_create_identity(other).peer_id == moved.peer_id
    kept = [p for p in other.iterdir() if p.name.startswith("identity.key.before-import")]
    assert len(kept) == 1 and kept[0].read_bytes() != (other / "identity.key").read_bytes()
    assert old != moved.peer_id


def test_export_copies_what_is_still_in_the_write_ahead_log(source: Path, tmp_path: Path) -> None:
    """A store left by a killed node (commits only in -wal, never checkpointed): the export
    holds them (the backup API reads through the log)."""
    running = Store(source / "chinwag.db")  # never closed, like a killed process
    running.join_room("only-in-the-wal", "only-in-the-wal", "public", None, None)
    assert Path(f"{source}/chinwag.db-wal").stat().st_size > 0
    out = tmp_path / "x.chinwag"
    export_identity(source, out, PP, force=False)
    import_identity(tmp_path / "dst", out, PP, force=False)
    store = Store(tmp_path / "dst" / "chinwag.db")
    try:
        assert "only-in-the-wal" in [row[0] for row in store.rooms_joined()]
    finally:
        store.close()
        running.db.close()


# --- the source copy is retired by its export (review finding 7) ------------------------


def live(path: Path, force: bool = False) -> bool:
    """Return whether a node may start on path (DataDir.check_not_exported under the lock)."""
    d = DataDir(path)
    d.open()
    try:
        d.check_not_exported(force)
        return True
    except DataDirExported:
        return False
    finally:
        d.close()


def test_export_retires_the_source_until_forced(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.chinwag"
    done = export_identity(source, out, PP, force=False)
    assert oct(os.stat(source / "exported").st_mode & 0o777) == "0o600"
    d = DataDir(source)
    d.open()
    try:
        said = rf"was exported on .* to {re.escape(str(out))}: .*--force"
        with pytest.raises(DataDirExported, match=said):
            d.check_not_exported(False)
    finally:
        d.close()
    assert done.peer_id in (source / "exported").read_text()
    # A retired directory may be exported again (the file was lost): still retired.
    export_identity(source, out, PP, force=True)
    assert not live(source)
    assert live(source, force=True)  # the owner's decision: the mark is gone
    assert not (source / "exported").exists() and live(source)


def test_a_mark_that_is_not_ours_still_retires_the_directory(source: Path) -> None:
    """Only its presence counts; its content only words the message (read up to a bound)."""
    (source / "exported").write_bytes(b"\xff" * (limits.MAX_EXPORTED_MARK_BYTES * 4))
    assert not live(source)


def test_an_export_that_cannot_mark_the_source_keeps_no_file(source: Path, tmp_path: Path) -> None:
    """No archive without the mark (else both copies could run), no mark without an archive
    (else the only copy would refuse to start)."""
    with pytest.raises(UsageError, match="cannot write"):
        export_identity(source, tmp_path / "no such dir" / "x", PP, force=False)
    assert live(source)
    (source / "exported").mkdir()  # the mark cannot be written there
    out = tmp_path / "x.chinwag"
    with pytest.raises(UsageError, match=r"cannot mark .* was not kept"):
        export_identity(source, out, PP, force=False)
    assert not out.exists()
    with pytest.raises(ChinwagError, match="cannot read"):
        DataDir(source).check_not_exported(False)


def test_moving_back_makes_the_old_directory_live_again(source: Path, tmp_path: Path) -> None:
    """src -> dst, then dst -> src (import --force over the retired src): src runs, dst is
    retired, the old mark is kept aside like the old store."""
    export_identity(source, tmp_path / "there", PP, force=False)
    dst = tmp_path / "dst"
    import_identity(dst, tmp_path / "there", PP, force=False)
    assert live(dst) and not live(source)
    export_identity(dst, tmp_path / "back", PP, force=False)
    import_identity(source, tmp_path / "back", PP, force=True)
    assert live(source) and not live(dst)
    assert (
        [p.name for p in source.iterdir() if p.name.startswith("exported")]
        == [p.name for p in source.iterdir() if p.name.startswith("exported.before-import-")]
        != []
    )
