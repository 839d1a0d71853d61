"""`chinwag export FILE` / `chinwag import FILE`: move an identity with its store to another
machine, in one file encrypted with a passphrase (crypto/archive.py).

The archive holds the identity key, a consistent copy of the SQLite store (history,
rooms and their keys, contacts, verified and blocked marks, ratchet sessions: tables
`olm_*`, whose pickles are encrypted with a key derived from the identity) and the
settings (nick, and the seq of our last presence record, which the next one must
exceed). Not moved: the web token, the DHT routing table, uploads (this machine's).

Export locks the data directory, so it refuses while chinwag runs there: a copy of a
running node is stale at its next message (ratchets advance), and the point of a move
is that the old copy stops. So once the archive is written, export retires the source:
it writes the `exported` mark into the data directory, and a node refuses to start on a
marked directory unless forced (DataDir.check_not_exported), since two running copies
fork the Olm and Megolm ratchets. It copies the store with SQLite's backup API (consistent,
also after a kill: it reads through the write-ahead log). Import decrypts and checks
everything before it writes anything; it refuses to replace an identity or a store
unless forced, and then keeps the old files as `*.before-import`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nacl.utils

from chinwag import limits
from chinwag.crypto import archive
from chinwag.crypto.identity import BadIdentity, Identity
from chinwag.datadir import EXPORTED_MARK, DataDir, load_or_create_identity, write_private
from chinwag.errors import UsageError
from chinwag.store.db import APPLICATION_ID, SCHEMA_VERSION

_DB = "chinwag.db"
_KEY = "identity.key"
_SETTINGS = "settings.json"
#: Settings that belong to the identity (moved); the others stay with the machine.
_MOVED_SETTINGS = ("nick", "presence_seq")


class _Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the archive's ciphertext holds (msgpack)."""

    peer_id: str
    identity: bytes
    settings: dict[str, str | int]
    db: bytes
    exported_ms: int


_decoder = msgspec.msgpack.Decoder(_Payload)


@dataclass(frozen=True, slots=True)
class Moved:
    """What an export or import did: whose identity, how big the store was."""

    peer_id: str
    db_bytes: int
    nick: str | None


def check_passphrase(passphrase: str) -> bytes:
    """Return the passphrase as bytes; raise UsageError if too short or too long."""
    if (
        not limits.MIN_EXPORT_PASSPHRASE_CHARS
        <= len(passphrase)
        <= (limits.MAX_EXPORT_PASSPHRASE_CHARS)
    ):
        raise UsageError(
            f"an export passphrase has {limits.MIN_EXPORT_PASSPHRASE_CHARS}-"
            f"{limits.MAX_EXPORT_PASSPHRASE_CHARS} characters"
        )
    return passphrase.encode("utf-8")


def _snapshot(db_path: Path) -> bytes:
    """Return a consistent copy of the store as bytes (SQLite backup API, via memory)."""
    src = sqlite3.connect(f"file:{urllib.parse.quote(str(db_path))}?mode=ro", uri=True)
    mem = sqlite3.connect(":memory:")
    try:
        src.backup(mem)
        # A store copied from a killed run carries its "open on boot X" mark: not ours.
        mem.execute("DELETE FROM meta WHERE key='open_boot'")
        mem.commit()
        return _rollback_mode(mem.serialize())
    finally:
        mem.close()
        src.close()


def _rollback_mode(db: bytes) -> bytes:
    """Return db with its header's write-ahead-log flag cleared (file format bytes 18-19:
    2 -> 1), so that it deserializes in memory; a backup copy has no WAL content to lose,
    and Store turns WAL on again at its first open."""
    if len(db) >= 20 and db[18:20] == b"\x02\x02":
        return db[:18] + b"\x01\x01" + db[20:]
    return db


def export_identity(data_dir: Path, target: Path, passphrase: bytes, force: bool) -> Moved:
    """Write the archive of data_dir to target (0600), then retire data_dir (its `exported`
    mark: nodes refuse to start there without --force); raise ChinwagError if impossible.

    Refuses while chinwag runs on data_dir (DataDirLocked), when it has no identity, or
    when target exists and not force. A retired data_dir may be exported again (the file
    was lost, say): it is the same state, and the mark stays.
    """
    if not (data_dir / _KEY).exists():
        raise UsageError(f"{data_dir} has no chinwag identity to export")
    if target.exists() and not force:
        raise UsageError(f"{target} exists; choose another name or add --force")
    datadir = DataDir(data_dir)
    datadir.open()  # the lock: no node may advance the ratchets while we copy
    try:
        identity = load_or_create_identity(data_dir)
        db = _snapshot(data_dir / _DB) if (data_dir / _DB).exists() else b""
        if len(db) > limits.MAX_ARCHIVE_BYTES - 1_000_000:
            raise UsageError(f"the store is too big to export ({len(db)} bytes)")
        settings = datadir.load_settings()
        moved = {k: settings[k] for k in _MOVED_SETTINGS if isinstance(settings.get(k), str | int)}
        payload = msgspec.msgpack.encode(
            _Payload(
                peer_id=identity.peer_id,
                identity=bytes(identity.signing_key),
                settings=moved,
                db=db,
                exported_ms=int(time.time() * 1000),
            )
        )
        sealed = archive.seal(
            passphrase,
            payload,
            nacl.utils.random(archive.SALT_BYTES),
            nacl.utils.random(archive.NONCE_BYTES),
        )
        try:
            write_private(target, sealed)
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
        try:
            # Still under the lock: no node can start between the copy and the mark.
            datadir.mark_exported(target, identity.peer_id)
        except OSError as exc:
            # An archive without the mark would let both copies run: take it back.
            with contextlib.suppress(OSError):
                target.unlink()
            raise UsageError(
                f"cannot mark {data_dir} as exported ({exc.strerror or exc}); {target} was not kept"
            ) from None
    finally:
        datadir.close()
    nick = moved.get("nick")
    return Moved(identity.peer_id, len(db), nick if isinstance(nick, str) else None)


def read_archive(source: Path, passphrase: bytes) -> _Payload:
    """Return the payload of an export file; raise ChinwagError if it is none, is damaged,
    or the passphrase is wrong. Reads at most MAX_ARCHIVE_BYTES, writes nothing."""
    try:
        with source.open("rb") as f:
            data = f.read(limits.MAX_ARCHIVE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    if len(data) > limits.MAX_ARCHIVE_BYTES:
        raise archive.BadArchive(f"{source} is too big to be a chinwag export")
    try:
        payload = _decoder.decode(archive.open_sealed(passphrase, data))
    except msgspec.DecodeError as exc:
        # Authenticated, so written by a chinwag: a newer one with another payload?
        raise archive.BadArchive(f"cannot read the export's content: {exc}") from None
    try:
        identity = Identity.from_seed(payload.identity)
    except BadIdentity as exc:
        raise archive.BadArchive(f"the export's identity is unusable: {exc}") from None
    if identity.peer_id != payload.peer_id:
        raise archive.BadArchive("the export's identity does not match its peer id")
    if payload.db:
        _check_store(payload.db)
    return payload


def _check_store(db: bytes) -> None:
    """Raise BadArchive unless db is a chinwag store this version reads, intact."""
    mem = sqlite3.connect(":memory:")
    try:
        mem.deserialize(_rollback_mode(db))
        app_id = mem.execute("PRAGMA application_id").fetchone()[0]
        version = mem.execute("PRAGMA user_version").fetchone()[0]
        check = mem.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise archive.BadArchive(f"the export's store is damaged: {exc}") from None
    finally:
        mem.close()
    if app_id != APPLICATION_ID:
        raise archive.BadArchive("the export's store is not a chinwag database")
    if version != SCHEMA_VERSION:
        raise archive.BadArchive(
            f"the export's store has schema version {version}; this chinwag reads "
            f"{SCHEMA_VERSION} (import it with the same chinwag version as the export)"
        )
    if check != "ok":
        raise archive.BadArchive(f"the export's store is damaged: {check}")


def import_identity(data_dir: Path, source: Path, passphrase: bytes, force: bool) -> Moved:
    """Install the archive at source into data_dir; raise ChinwagError, changing nothing,
    if it cannot be read, or data_dir has an identity or a store and not force."""
    payload = read_archive(source, passphrase)
    datadir = DataDir(data_dir)
    datadir.open()  # refuses while chinwag runs there
    try:
        existing = [n for n in (_KEY, _DB) if (data_dir / n).exists()]
        if existing and not force:
            raise UsageError(
                f"{data_dir} has {' and '.join(existing)} already (another identity or its "
                "history); import into an empty data directory, or add --force to replace "
                "them (kept as *.before-import)"
            )
        _install(data_dir, payload, existing)
        settings = datadir.load_settings()
        for key in _MOVED_SETTINGS:
            settings.pop(key, None)
            if key in payload.settings:
                settings[key] = payload.settings[key]
        write_private(data_dir / _SETTINGS, json.dumps(settings).encode("utf-8"))
    finally:
        datadir.close()
    nick = payload.settings.get("nick")
    return Moved(payload.peer_id, len(payload.db), nick if isinstance(nick, str) else None)


def _install(data_dir: Path, payload: _Payload, existing: list[str]) -> None:
    """Write the new store and identity to temporary files, then move the old ones aside
    and the new ones in: a crash leaves at worst a window of a few renames."""
    tmp = data_dir / (_DB + ".import")
    key_tmp = data_dir / (_KEY + ".import")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    write_private(key_tmp, payload.identity)
    if payload.db:
        mem = sqlite3.connect(":memory:")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        dst = sqlite3.connect(tmp)
        try:
            mem.deserialize(_rollback_mode(payload.db))
            mem.backup(dst)
        finally:
            dst.close()
            mem.close()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in existing:
        os.replace(data_dir / name, data_dir / f"{name}.before-import-{stamp}")
    mark = data_dir / EXPORTED_MARK
    if mark.exists():
        # The mark retired the old store; the imported one is the live copy (moving back).
        os.replace(mark, data_dir / f"{EXPORTED_MARK}.before-import-{stamp}")
    for suffix in ("-wal", "-shm"):
        # The old store's log must not be replayed into the new one.
        side = data_dir / (_DB + suffix)
        if side.exists():
            os.replace(side, data_dir / f"{_DB}{suffix}.before-import-{stamp}")
    if payload.db:
        os.replace(tmp, data_dir / _DB)
    os.replace(key_tmp, data_dir / _KEY)
