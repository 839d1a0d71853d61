"""Rendezvous on the Mainline DHT (issue 15, docs/dht.md): publish where we are, look up
where a contact is.

Publishes our record (protocol/dhtrecord.py) at start, whenever our addresses or relays
change (at most every DHT_PUBLISH_MIN_GAP_S) and every DHT_REPUBLISH_S. Looks a peer up on
demand (`/add PEER_ID`, a contact whose dials fail), reading its private record (under
today's and yesterday's blinded key) and its public record at once and taking the first
acceptable one (yesterday's only if no other); each lookup is reported as a `lookup`
event, and each record refused is counted by reason (`ignored`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.identity import BadIdentity, Identity, key_from_peer_id, short_id
from chinwag.logonce import WarnOnce
from chinwag.net.dht import DhtNode, Item
from chinwag.protocol import dhtrecord as rec

log = logging.getLogger(__name__)

#: The settings key of the last sequence number published (kept monotonic across runs).
SEQ_SETTING = "dht_seq"


class Rendezvous:
    """Our record on the DHT, and lookups of others'; owns the DhtNode."""

    def __init__(
        self,
        identity: Identity,
        dht: DhtNode,
        private: bool,
        where: Callable[[], tuple[list[str], list[tuple[str, str]]]],
        emit: Callable[[ev.NodeEvent], None],
        last_seq: int,
        save_seq: Callable[[int], None],
    ) -> None:
        """`where()` returns (our addresses, our relays) now; `save_seq` persists a seq."""
        self._identity = identity
        self.dht = dht
        self._private = private
        self._where = where
        self._emit = emit
        self._last_seq = last_seq
        self._save_seq = save_seq
        self._published: tuple[list[str], list[tuple[str, str]]] | None = None
        self._last_publish = -limits.DHT_PUBLISH_MIN_GAP_S
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._lookups = asyncio.Semaphore(limits.DHT_MAX_LOOKUPS)
        self._put_lock = asyncio.Lock()
        #: Highest record seq accepted per peer (an older one is a replay: OLD_SEQ).
        self._seqs: dict[str, int] = {}
        #: Per peer: (when the next lookup for a failing dial may run, failures so far).
        self._retry: dict[str, tuple[float, int]] = {}
        #: Per peer: the seq of the last record whose addresses were dialled.
        self._acted: dict[str, int] = {}
        #: Records refused, by reason.
        self.ignored: collections.Counter[str] = collections.Counter()
        self.published = 0
        self.last_lookup = ev.Lookup(peer_id="", found=False, ms=0)
        self._warn = WarnOnce(log)
        self._closing = False
        #: Unix time (the blinding period and record times derive from it); tests move it.
        self._clock: Callable[[], float] = time.time

    async def start(self) -> int:
        """Start the DHT node and publish; return its UDP port."""
        port = await self.dht.start()
        log.info(
            "DHT node on UDP port %d (%s record)", port, "private" if self._private else "public"
        )
        self.changed()
        return port

    async def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dht.close()

    # --- publishing -------------------------------------------------------------------

    def changed(self) -> None:
        """Our addresses may have changed: publish now if they did (or the record is due)."""
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._last_publish + limits.DHT_REPUBLISH_S
        if self._where() == self._published and now < due:
            self._arm(due)
            return
        wait = self._last_publish + limits.DHT_PUBLISH_MIN_GAP_S - now
        if wait > 0:
            self._arm(now + wait)
            return
        self._last_publish = now
        self._spawn(self._publish())
        self._arm(now + limits.DHT_REPUBLISH_S)

    def _arm(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.changed()

    async def _publish(self) -> None:
        # One put at a time: libtorrent numbers an item one above the highest it finds
        # before putting, so two puts in flight could both take one number and the older
        # record could win on the DHT.
        async with self._put_lock:
            await self._put()

    async def _put(self) -> None:
        addrs, relays = self._where()
        self._published = (addrs, relays)
        now = self._clock()
        seq = max(int(now), self._last_seq + 1)
        self._last_seq = seq
        self._save_seq(seq)
        # Private: under today's blinded key, and tomorrow's too near the day's end (lookers
        # whose day began already). Public: one key for every period.
        periods = rec.publish_periods(now) if self._private else [rec.period_of(now)]
        stored = 0
        for period in periods:
            record, value = rec.seal_record(
                self._identity,
                addrs,
                relays,
                seq,
                int(now) + limits.DHT_RECORD_TTL_S,
                self._private,
                os.urandom(rec.NONCE_BYTES),  # one per sealing: keys differ, nonces too
                period=period,
            )
            took = await self.dht.put(
                rec.signing_key(self._identity, self._private, period),
                rec.target(self._identity.public, self._private, period),
                value,
                rec.SALT,
            )
            if period == periods[0]:
                stored = took  # what `published` reports: the current period's put
        self.published += 1
        self._emit(
            ev.Published(
                seq=seq,
                addresses=list(record.addrs),
                relays=[ev.RelayAddr(peer_id=r, address=a) for r, a in record.relays],
                private=self._private,
                stored=stored,
            )
        )
        log.info(
            "DHT record %d published (%d bytes, %d node(s) took it): %s, relays %s",
            seq,
            len(value),
            stored,
            record.addrs,
            [a for _r, a in record.relays],
        )

    # --- lookups ----------------------------------------------------------------------

    def lookup_soon(
        self, peer_id: str, found: Callable[[str, rec.DhtRecord], None], new: bool = False
    ) -> bool:
        """Look a contact up unless one ran lately (`new`: a contact just added, at once);
        `found` hears of a record newer than the last one it heard of. Return whether a
        lookup started."""
        if self._closing:
            return False
        now = asyncio.get_running_loop().time()
        when, _failures = self._retry.get(peer_id, (0.0, 0))
        if now < when and not new:
            return False
        if new:
            self._acted.pop(peer_id, None)
        self._spawn(self._lookup_then(peer_id, found))
        return True

    def forget_retry(self, peer_id: str) -> None:
        """Let the next failing dial of peer_id look it up at once (it just went away)."""
        self._retry.pop(peer_id, None)

    def acted(self, peer_id: str, seq: int) -> None:
        """Note that a record of seq was dialled (a lookup finding it again dials nothing)."""
        self._acted[peer_id] = max(seq, self._acted.get(peer_id, -1))
        while len(self._acted) > limits.MAX_CONTACTS * 2:
            del self._acted[next(iter(self._acted))]

    async def _lookup_then(self, peer_id: str, found: Callable[[str, rec.DhtRecord], None]) -> None:
        record = await self.lookup(peer_id)
        now = asyncio.get_running_loop().time()
        _when, failures = self._retry.get(peer_id, (0.0, 0))
        if record is not None and record.seq > self._acted.get(peer_id, -1):
            self._retry[peer_id] = (now + limits.DHT_LOOKUP_RETRY_BASE_S, 0)
            self.acted(peer_id, record.seq)
            found(peer_id, record)
            return
        delay = min(
            limits.DHT_LOOKUP_RETRY_BASE_S * 2 ** min(failures, 16), limits.DHT_LOOKUP_RETRY_CAP_S
        )
        self._retry[peer_id] = (now + delay, failures + 1)
        while len(self._retry) > limits.MAX_CONTACTS * 2:
            del self._retry[next(iter(self._retry))]

    async def lookup(self, peer_id: str) -> rec.DhtRecord | None:
        """Return the newest acceptable record of peer_id, or None; emits a `lookup` event."""
        start = time.monotonic()
        reasons: list[str] = []
        record: rec.DhtRecord | None = None
        try:
            public = key_from_peer_id(peer_id)
        except BadIdentity:
            reasons.append(rec.MALFORMED)  # still reported: a lookup always ends in an event
        else:
            async with self._lookups:
                start = time.monotonic()
                record = await self._find(peer_id, public, reasons)
        ms = int((time.monotonic() - start) * 1000)
        if record is not None:
            self._seqs[peer_id] = max(record.seq, self._seqs.get(peer_id, 0))
        reason = "" if record is not None else (reasons[-1] if reasons else "")
        log.info(
            "DHT lookup of %s: %s in %d ms%s",
            short_id(peer_id),
            f"found record {record.seq} ({record.addrs}, relays {[a for _r, a in record.relays]})"
            if record is not None
            else "not found",
            ms,
            f" ({reason})" if reason else "",
        )
        self.last_lookup = ev.Lookup(
            peer_id=peer_id, found=record is not None, ms=ms, reason=reason
        )
        self._emit(self.last_lookup)
        return record

    async def _find(self, peer_id: str, public: bytes, reasons: list[str]) -> rec.DhtRecord | None:
        #: Per item found: its record and the period of the key it was read under.
        opened: dict[int, tuple[rec.DhtRecord, int]] = {}
        now = self._clock()
        periods = rec.lookup_periods(now)

        def accept(private: bool, period: int) -> Callable[[Item], bool]:
            def check(item: Item) -> bool:
                try:
                    record = rec.open_record(
                        public,
                        item.value,
                        private,
                        self._clock(),
                        self._seqs.get(peer_id),
                        (item.seq, item.signature),
                        period,
                    )
                except rec.DhtRecordError as exc:
                    self.ignored[exc.reason] += 1
                    reasons.append(exc.reason)
                    self._warn(
                        ("dht-ignored", peer_id, exc.reason),
                        "ignoring a DHT record of %s: %s",
                        short_id(peer_id),
                        exc,
                    )
                    return False
                opened[id(item)] = (record, period)
                return True

            return check

        try:
            # The private record under today's and yesterday's keys, the public one.
            targets = [(rec.target(public, True, p), True, p) for p in periods]
            targets.append((rec.target(public, False, periods[0]), False, periods[0]))
        except (ValueError, RuntimeError, TypeError) as exc:
            # Not a usable key (nacl raises): no DHT key to read, but the lookup still ends
            # with its `lookup` event instead of killing the task.
            reasons.append(rec.MALFORMED)
            self._warn(("dht-target", peer_id), "cannot look %s up: %r", short_id(peer_id), exc)
            return None
        gets = [
            asyncio.ensure_future(
                self.dht.get(key, rec.SALT, accept(private, period), limits.DHT_LOOKUP_TIMEOUT_S)
            )
            for key, private, period in targets
        ]
        older: rec.DhtRecord | None = None
        try:
            for next_done in asyncio.as_completed(gets):
                item = await next_done
                found = opened.get(id(item)) if item is not None else None
                if found is None:
                    continue
                record, period = found
                if period == periods[0]:
                    return record  # the current period's: the first one found wins
                # Yesterday's key: a record put before the day began; used if nothing
                # newer turns up under today's.
                if older is None or record.seq > older.seq:
                    older = record
            return older
        finally:
            for get in gets:
                get.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("DHT task failed: %r", task.exception())
