"""Helpers shared by the NAT lab tests: building a lab for a module-scoped fixture."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from natlab import NatLab, built, unavailable_reason

from ci_support import skip_or_fail


def lab_of(*sites: tuple[str, str]) -> Iterator[NatLab]:
    """Build a lab with these (name, kind) sites for a fixture, or skip (fail under CI)."""
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail("NAT tests", reason)
    with built(*sites) as lab:
        yield lab
