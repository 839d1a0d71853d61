"""Units shown to people (shared by the node's messages and the UIs)."""

from __future__ import annotations


def human_size(n: float) -> str:
    """Return a byte count as a short human-readable string (1.5 MB)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
