"""The data directory: lock, identity key and small settings file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import platformdirs

from chinwag import limits
from chinwag.crypto.identity import BadIdentity, Identity
from chinwag.errors import ChinwagError, DataDirExported, DataDirLocked

_SETTINGS = "settings.json"
_KEY_FILE = "identity.key"
_LOCK = "lock"
#: Written by `chinwag export` once the archive is out: this copy is retired.
EXPORTED_MARK = "exported"

log = logging.getLogger(__name__)


def make_private(path: Path, what: str) -> bool:
    """Make path owner-only (a directory 0700, a file 0600) if group or others have any
    access; warn once with the old mode; return whether it was tightened.

    We tighten rather than refuse to start: the loose mode usually comes from a copy
    (cp without -p, an archive, a backup tool) or an old version, not from a wish to
    share; refusing would lock the owner out of their own chat over a mode bit that
    one chmod fixes. The warning says so, since someone may have read the file already.
    """
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
        return False
    new = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
    os.chmod(path, new, follow_symlinks=False)
    log.warning(
        "%s %s was readable by other users (mode %o); made it %o. If others could log in "
        "here, they may have copied it: for the identity key, start afresh with a new one",
        what,
        path,
        stat.S_IMODE(st.st_mode),
        new,
    )
    return True


def ensure_private_dir(path: Path) -> None:
    """Create the data directory (mode 0700) if missing; tighten it and its files if looser
    (for the commands that use it without locking it: `chinwag id`, `invite`, the log)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    tighten_data_dir(path)


def write_private(path: Path, data: bytes) -> None:
    """Write data to path atomically, owner-only (0600) from the first byte, fsynced.

    The temporary file gets fchmod too: O_CREAT's mode does not apply to a leftover one.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def tighten_data_dir(path: Path) -> None:
    """Make the data directory and every file and folder in it owner-only (warning for each).

    It holds the identity key, the database (private messages, room keys, ratchet
    pickles), the web token and the DHT state: none of them is for other users.
    """
    make_private(path, "data directory")
    with os.scandir(path) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                make_private(Path(entry.path), "file" if entry.is_file() else "folder")


def default_data_dir() -> Path:
    """Return the platform's user data directory for chinwag."""
    return Path(platformdirs.user_data_dir("chinwag", appauthor=False))


def default_downloads_dir() -> Path:
    """Return the platform's downloads directory (where accepted files are saved)."""
    return Path(platformdirs.user_downloads_dir())


class DataDir:
    """An opened data directory, locked against a second process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create (mode 0700) and lock the directory; raise DataDirLocked if in use.

        A directory that exists with a looser mode is made 0700, and its files 0600,
        with a warning (make_private): it holds the identity key and the database
        (private messages, private room keys, ratchet state).
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ChinwagError(f"cannot create data directory {self.path}: {exc}") from exc
        try:
            tighten_data_dir(self.path)
        except OSError as exc:
            raise ChinwagError(f"cannot make data directory {self.path} private: {exc}") from exc
        fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirLocked(
                f"data directory {self.path} is in use by another chinwag (pid {holder}); "
                "stop it or choose another one with --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None

    def check_not_exported(self, force: bool) -> None:
        """Raise DataDirExported if the directory carries the `exported` mark, unless force,
        which removes the mark (this copy is the live one again). Call it under the lock.

        Two running copies of one export fork the Olm and Megolm ratchets (the same message
        keys encrypt different plaintexts; peers' sessions split), so the copy left behind
        by `chinwag export` refuses to start until its owner says otherwise.
        """
        mark = self.path / EXPORTED_MARK
        try:
            with mark.open("rb") as f:
                raw = f.read(limits.MAX_EXPORTED_MARK_BYTES)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ChinwagError(f"cannot read {mark}: {exc.strerror or exc}") from None
        try:
            info = json.loads(raw)
        except ValueError:
            info = {}
        when = info.get("exported") if isinstance(info, dict) else None
        target = info.get("file") if isinstance(info, dict) else None
        what = f"was exported{f' on {when}' if isinstance(when, str) else ''}"
        what += f" to {target}" if isinstance(target, str) else ""
        if not force:
            raise DataDirExported(
                f"data directory {self.path} {what}: the identity runs elsewhere now, and "
                "two copies running would fork their encrypted sessions. If the export was "
                "never imported (or that copy is gone for good), start again with --force "
                "to make this copy the live one"
            )
        try:
            mark.unlink()
        except OSError as exc:
            raise ChinwagError(f"cannot remove {mark}: {exc.strerror or exc}") from None
        log.warning(
            "data directory %s %s; started anyway (--force): this copy is the live one now, "
            "never start the imported one",
            self.path,
            what,
        )

    def mark_exported(self, target: Path, peer_id: str) -> None:
        """Write the `exported` mark (0600, fsynced): later starts refuse without --force."""
        info = {
            "exported": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "file": str(target.resolve()),
            "peer_id": peer_id,
        }
        write_private(self.path / EXPORTED_MARK, json.dumps(info).encode("utf-8"))

    def load_settings(self) -> dict[str, Any]:
        """Return the saved settings (empty if none or unreadable)."""
        try:
            data = json.loads((self.path / _SETTINGS).read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_setting(self, key: str, value: Any) -> None:
        """Persist one setting atomically (mode 0600)."""
        data = self.load_settings()
        data[key] = value
        tmp = self.path / (_SETTINGS + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, self.path / _SETTINGS)


def load_or_create_identity(data_dir: Path) -> Identity:
    """Load the identity key from data_dir, creating it (mode 0600) on first start."""
    path = data_dir / _KEY_FILE
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        ident = Identity.generate()
        write_private(path, bytes(ident.signing_key))
        return ident
    make_private(path, "identity key")
    if len(seed) != 32:
        raise BadIdentity(f"{path} is not a chinwag identity key ({len(seed)} bytes, expected 32)")
    return Identity.from_seed(seed)
