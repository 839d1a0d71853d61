"""Web UI authentication: the token file, browser sessions, Host and Origin checks.

The token (in the data directory, mode 0600) proves that whoever opens the web UI
could read the terminal or the data directory. Opening `/?token=T` trades it for
a session cookie; scripts send `Authorization: Bearer T` instead.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from pathlib import Path

from chinwag import limits
from chinwag.datadir import ensure_private_dir, make_private, write_private

#: The token file in the data directory.
TOKEN_FILE = "web-token"
#: The session cookie's name.
COOKIE = "chinwag_session"


def load_or_create_token(data_dir: Path, rotate: bool = False) -> str:
    """Return the web token, creating it (mode 0600) on first use or when `rotate`."""
    path = data_dir / TOKEN_FILE
    if not rotate:
        try:
            token = path.read_text("ascii").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            token = ""
        # A token too short to be ours (hand-edited, truncated) is replaced, not trusted.
        if len(token) >= limits.WEB_TOKEN_BYTES:
            make_private(path, "web token")
            return token
    ensure_private_dir(data_dir)
    token = secrets.token_urlsafe(limits.WEB_TOKEN_BYTES)
    write_private(path, token.encode("ascii") + b"\n")
    return token


def token_matches(given: str, token: str) -> bool:
    """Return whether `given` is the token (constant time: no timing oracle)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("ascii"))


class Sessions:
    """Session ids handed out as cookies: random, in memory only, bounded, expiring."""

    def __init__(self, ttl: float = limits.WEB_SESSION_TTL_S) -> None:
        self._ttl = ttl
        self._created: OrderedDict[str, float] = OrderedDict()

    def new(self) -> str:
        """Return a fresh session id; the oldest session is forgotten beyond the bound."""
        sid = secrets.token_urlsafe(limits.WEB_TOKEN_BYTES)
        self._created[sid] = time.monotonic()
        while len(self._created) > limits.WEB_MAX_SESSIONS:
            self._created.popitem(last=False)
        return sid

    def valid(self, sid: str) -> bool:
        """Return whether sid is a live session (an expired one is forgotten)."""
        created = self._created.get(sid)
        if created is None:
            return False
        if time.monotonic() - created > self._ttl:
            del self._created[sid]
            return False
        return True

    def clear(self) -> None:
        """Forget every session (after the token was rotated)."""
        self._created.clear()

    def __len__(self) -> int:
        return len(self._created)


def host_literal(addr: str) -> str:
    """Return an address as it appears in a Host header (IPv6 in brackets)."""
    try:
        ip = ipaddress.ip_address(addr.strip("[]"))
    except ValueError:
        return addr.lower()
    return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed


def is_loopback(addr: str) -> bool:
    """Return whether a bind address is a loopback address."""
    try:
        return ipaddress.ip_address(addr.strip("[]")).is_loopback
    except ValueError:
        return addr.lower() == "localhost"


def allowed_hosts(bind: str, port: int, local_addresses: list[str]) -> frozenset[str]:
    """Return the Host header values we answer: loopback names and the bound address(es).

    For a wildcard bind (0.0.0.0, ::) the bound addresses are the machine's own
    (`local_addresses`). Anything else is refused: a DNS-rebinding page's Host is
    its own name.
    """
    names = {"127.0.0.1", "localhost", "[::1]"}
    wildcard = bind in ("0.0.0.0", "::", "")
    if wildcard:
        names.update(host_literal(a) for a in local_addresses)
    else:
        names.add(host_literal(bind))
    return frozenset(f"{n}:{port}" for n in names)


def origin_ok(origin: str, hosts: frozenset[str], scheme: str = "http") -> bool:
    """Return whether an Origin header names this server (scheme, one of our hosts, port)."""
    prefix = scheme + "://"
    if not origin.startswith(prefix):
        return False
    return origin[len(prefix) :].lower() in hosts
