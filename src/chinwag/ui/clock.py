"""Message times made into local dates without ever raising.

A timestamp comes from a peer's clock: it may be stored from before the range
check on receipt existed, or come from a buggy peer. Rendering it must not end
the app (a stamp past year 9999 made `datetime.fromtimestamp` raise at every start).
"""

from __future__ import annotations

import datetime as dt

from chinwag.protocol.messages import clamp_ts_s


def local_datetime(ts: float) -> dt.datetime:
    """Return the local date and time of ts (seconds since the epoch), clamped; never raises."""
    try:
        return dt.datetime.fromtimestamp(clamp_ts_s(ts))
    except (OverflowError, OSError, ValueError):  # a platform that cannot show the range
        return dt.datetime(2000, 1, 1)
