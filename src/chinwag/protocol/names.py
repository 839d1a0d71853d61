"""Rules for user-chosen names and texts (nicks, rooms, message text)."""

from __future__ import annotations

import re

from chinwag import limits
from chinwag.errors import UsageError

DEFAULT_ROOM = "general"
#: Wire names of private conversations ("dm.") and private rooms ("p.").
RESERVED_PREFIXES = ("dm.", "p.")
_NAME_RE = re.compile(r"[\w.\-]+")
_ALLOWED = "letters, digits, '_', '.' or '-'"


def is_valid_name(name: str) -> bool:
    """Return whether name uses only letters, digits, `_`, `.` and `-` (any length)."""
    return _NAME_RE.fullmatch(name) is not None


def validate_nick(nick: str) -> str:
    """Return nick if it is 1-32 letters, digits, `_`, `.` or `-`; else raise UsageError."""
    if not nick or len(nick) > limits.MAX_NICK_CHARS or not _NAME_RE.fullmatch(nick):
        raise UsageError(f"invalid nick {nick[:40]!r}: use 1-{limits.MAX_NICK_CHARS} {_ALLOWED}")
    return nick


def validate_room(room: str) -> str:
    """Return the canonical (lowercase) room name, or raise UsageError."""
    canonical = room.lower()
    if canonical.startswith(RESERVED_PREFIXES):
        raise UsageError(f"room names may not start with {' or '.join(RESERVED_PREFIXES)}")
    if not canonical or len(canonical) > limits.MAX_ROOM_CHARS or not _NAME_RE.fullmatch(canonical):
        raise UsageError(f"invalid room {room[:40]!r}: use 1-{limits.MAX_ROOM_CHARS} {_ALLOWED}")
    return canonical


def validate_text(text: str) -> str:
    """Return text if it can be sent as a message, else raise UsageError."""
    if not text or not text.strip():
        raise UsageError("empty message")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.MAX_TEXT_BYTES:
        raise UsageError(f"message too long: {size} bytes, at most {limits.MAX_TEXT_BYTES}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("message is not valid Unicode text") from None
    return text


_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul", "clock$"}
    | {f"com{i}" for i in range(10)}
    | {f"lpt{i}" for i in range(10)}
)
_FORBIDDEN_CHARS = frozenset('<>:"|?*')
#: Bytes (UTF-8) of a saved file name: below every common filesystem's 255.
_MAX_NAME_BYTES = 240


def safe_filename(offered: str) -> str:
    """Return an offered file name made safe to create in the downloads directory.

    No directories (only the last component survives), no `..`, no hidden or
    device names, no control or reserved characters, length-limited; never empty.
    """
    name = offered.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in _FORBIDDEN_CHARS)
    name = name.strip().lstrip(".").rstrip(". ")
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    ext = ext[:16]
    limit = limits.FILE_MAX_NAME_CHARS - len(ext) - 2  # room for "." and a "_" below
    stem = stem[:limit]
    while len(f"_{stem}.{ext}".encode()) > _MAX_NAME_BYTES and stem:
        stem = stem[:-1]
    # (Cutting may have left a trailing dot or space.)
    name = (f"{stem}.{ext}" if ext else stem).rstrip(". ")
    # Windows takes NUL.txt, NUL.tar.gz and "NUL .txt" all for the device NUL.
    if name.split(".", 1)[0].rstrip(" ").lower() in _DEVICE_NAMES:
        name = "_" + name
    return name if name.strip(". ") else "file"
