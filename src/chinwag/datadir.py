"""The data directory: lock, identity key and small settings file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import platformdirs

from chinwag.crypto.identity import BadIdentity, Identity
from chinwag.errors import ChinwagError, DataDirLocked

_SETTINGS = "settings.json"
_KEY_FILE = "identity.key"
_LOCK = "lock"


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

        A directory that exists with a looser mode is made 0700: it holds the
        identity key and the database (private messages, private room keys).
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ChinwagError(f"cannot create data directory {self.path}: {exc}") from exc
        try:
            if self.path.stat().st_mode & 0o077:
                os.chmod(self.path, 0o700)
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
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, bytes(ident.signing_key))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return ident
    if len(seed) != 32:
        raise BadIdentity(f"{path} is not a chinwag identity key ({len(seed)} bytes, expected 32)")
    return Identity.from_seed(seed)
