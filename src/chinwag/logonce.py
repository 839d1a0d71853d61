"""Warnings a peer can trigger, logged once at warning level and then at debug level.

Model: python-zeroconf's QuietLogger. A hostile peer that repeats what caused a
warning must not flood the log: each key (usually the peer and the kind of fault)
is logged at warning once, later at debug; at most MAX_WARNED_KEYS keys are
remembered, the oldest forgotten first (and then warned about again, once).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from chinwag import limits


class WarnOnce:
    """Log each key's first message at warning level, the next ones at debug level."""

    def __init__(self, logger: logging.Logger, capacity: int = limits.MAX_WARNED_KEYS) -> None:
        self._log = logger
        self._capacity = capacity
        self._warned: OrderedDict[object, None] = OrderedDict()

    def __call__(self, key: object, msg: str, *args: object) -> bool:
        """Log msg % args for key; return True if it went out at warning level."""
        if key in self._warned:
            self._log.debug(msg, *args)
            return False
        self._warned[key] = None
        if len(self._warned) > self._capacity:
            self._warned.popitem(last=False)
        self._log.warning(msg, *args)
        return True

    def __len__(self) -> int:
        """Return how many keys are remembered (at most the capacity)."""
        return len(self._warned)
