"""A Mainline DHT node: libtorrent's session in a worker thread, driven from asyncio.

libtorrent runs its own network thread; ours only waits for alerts (`wait_for_alert`) and
hands what they say, copied into plain Python values, to the event loop with
`call_soon_threadsafe`. Commands (put, get) are libtorrent calls that only post work to its
thread, so the loop never blocks on the network. Only the DHT is on: no torrents, no local
peer discovery, no UPnP/NAT-PMP (chinwag has its own), no TCP or uTP peer connections.

The routing table (libtorrent's session state, DHT part) is saved in the data directory at
close and loaded at start, so a restart does not bootstrap from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chinwag import limits
from chinwag.datadir import write_private
from chinwag.errors import ChinwagError
from chinwag.logonce import WarnOnce

log = logging.getLogger(__name__)

#: libtorrent, imported by the first DhtNode (a native module: not at every chinwag start).
lt: Any = None

#: The public Mainline bootstrap nodes (docs/dht.md): used unless --dht-bootstrap is given.
PUBLIC_BOOTSTRAP: tuple[tuple[str, int], ...] = (
    ("router.bittorrent.com", 6881),
    ("dht.transmissionbt.com", 6881),
    ("router.utorrent.com", 6881),
    ("dht.libtorrent.org", 25401),
)
#: Where the routing table is saved, in the data directory.
STATE_FILE = "dht.state"


class DhtUnavailable(ChinwagError):
    """The DHT cannot run here (libtorrent missing or its port unusable)."""


def _import_libtorrent() -> None:
    """Import libtorrent once; DhtUnavailable if it cannot be (the node runs on, DHT off)."""
    global lt
    if lt is not None:
        return
    try:
        import libtorrent
    except Exception as exc:  # ImportError, or a broken native library (OSError)
        raise DhtUnavailable(
            f"libtorrent cannot be imported ({type(exc).__name__}: {exc})"
        ) from None
    lt = libtorrent


@dataclass(frozen=True, slots=True)
class Item:
    """One BEP 44 mutable item as a get found it: `value` is the content of its `v` string
    (b"" when nothing was found, None when `v` is not a byte string)."""

    key: bytes
    salt: bytes
    seq: int
    value: bytes | None
    signature: bytes
    authoritative: bool


@dataclass
class _Get:
    future: asyncio.Future[Item | None]
    accept: Callable[[Item], bool]
    settle: float
    #: The acceptable item of the highest sequence number seen so far.
    best: Item | None = None
    timer: asyncio.TimerHandle | None = None

    def resolve(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.future.done():
            self.future.set_result(self.best)


class DhtNode:
    """One DHT node; start() before use, close() saves the routing table."""

    def __init__(
        self,
        bind: str,
        port: int,
        bootstrap: list[tuple[str, int]],
        state_path: Path | None,
        restrict_ips: bool = True,
    ) -> None:
        """`port` 0: any free port; a taken default port falls back to any (like TCP).

        `restrict_ips=False` lets nodes of one /24 into the routing table (labs only)."""
        _import_libtorrent()
        self._bind = bind if bind not in ("", "::") else "0.0.0.0"
        self._port = port
        self._bootstrap = bootstrap
        self._state_path = state_path
        self._restrict = restrict_ips
        self._ses: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gets: dict[tuple[bytes, bytes], list[_Get]] = {}
        self._puts: dict[tuple[bytes, bytes], list[asyncio.Future[int]]] = {}
        self._warn = WarnOnce(log)
        self.port = 0

    def _settings(self, port: int) -> dict[str, Any]:
        assert lt is not None
        cats = lt.alert.category_t
        return {
            "listen_interfaces": f"{self._bind}:{port}",
            "enable_dht": True,
            "dht_bootstrap_nodes": ",".join(f"{h}:{p}" for h, p in self._bootstrap),
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_incoming_tcp": False,
            "enable_outgoing_tcp": False,
            "enable_incoming_utp": False,
            "enable_outgoing_utp": False,
            "dht_restrict_routing_ips": self._restrict,
            "dht_restrict_search_ips": self._restrict,
            "alert_mask": cats.dht_notification
            | cats.error_notification
            | cats.status_notification,
            "user_agent": "chinwag",
        }

    def _free_port(self) -> int:
        """Return the UDP port to listen on: ours if free, else (the default only) any."""
        if self._port == 0:
            return 0
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((self._bind, self._port))
            return self._port
        except OSError:
            if self._port != limits.DEFAULT_DHT_PORT:
                raise DhtUnavailable(f"UDP port {self._port} is taken") from None
            log.info("DHT port %d is taken; using any free port", self._port)
            return 0
        finally:
            probe.close()

    async def start(self) -> int:
        """Start the session and its alert thread; return the UDP port it listens on."""
        assert lt is not None
        self._loop = asyncio.get_running_loop()
        port = self._free_port()
        params, saved_nodes = self._load_state()
        settings = self._settings(port)
        if params is not None:
            params.settings = settings
            self._ses = await asyncio.to_thread(lt.session, params)
        else:
            self._ses = await asyncio.to_thread(lt.session, settings)
        # The saved nodes first: libtorrent keeps our node id from the state but does not
        # bootstrap from its nodes by itself (seen with 2.1.1), so we hand them over.
        for host, bport in [*saved_nodes, *self._bootstrap]:
            self._ses.add_dht_node((host, bport))
        self.port = int(self._ses.listen_port()) or port
        self._thread = threading.Thread(target=self._pump, name="chinwag-dht", daemon=True)
        self._thread.start()
        return self.port

    async def close(self) -> None:
        """Save the routing table and stop the session (pending calls resolve as failed)."""
        if self._ses is None:
            return
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2.0)
        ses, self._ses = self._ses, None
        await asyncio.to_thread(self._save_and_stop, ses)
        for gets in self._gets.values():
            for get in gets:
                if not get.future.done():
                    get.future.set_result(None)
        for puts in self._puts.values():
            for fut in puts:
                if not fut.done():
                    fut.set_result(0)
        self._gets.clear()
        self._puts.clear()

    # --- commands ---------------------------------------------------------------------

    async def put(self, private: bytes, public: bytes, value: bytes, salt: bytes) -> int:
        """Store a mutable item whose `v` is the byte string value; return how many nodes
        took it, 0 if libtorrent did not say within DHT_PUT_TIMEOUT_S."""
        assert self._ses is not None and self._loop is not None
        fut: asyncio.Future[int] = self._loop.create_future()
        key = (public, salt)
        self._puts.setdefault(key, []).append(fut)
        self._ses.dht_put_mutable_item(private, public, value, salt)
        limit = limits.DHT_PUT_TIMEOUT_S
        try:
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:
            # The alert was lost (alert queue overflow, shutdown): the item may well be
            # stored, but we cannot tell; the next put is not held up by this one. (A late
            # alert then answers the next put of this key early: a count, nothing more.)
            self._warn(("dht-put-timeout",), "DHT put got no answer within %.0f s; going on", limit)
            return 0
        finally:
            puts = self._puts.get(key)
            if puts is not None:
                with contextlib.suppress(ValueError):
                    puts.remove(fut)
                if not puts:
                    del self._puts[key]

    async def get(
        self,
        public: bytes,
        salt: bytes,
        accept: Callable[[Item], bool],
        within: float,
        settle: float = limits.DHT_LOOKUP_SETTLE_S,
    ) -> Item | None:
        """Return the newest item under (public, salt) that `accept` takes: once the lookup
        ended, or `settle` seconds after the first acceptable one; None if none came
        within `within` seconds."""
        assert self._ses is not None and self._loop is not None
        fut: asyncio.Future[Item | None] = self._loop.create_future()
        pending = _Get(fut, accept, settle)
        self._gets.setdefault((public, salt), []).append(pending)
        self._ses.dht_get_mutable_item(public, salt)
        try:
            return await asyncio.wait_for(fut, within)
        except TimeoutError:
            return pending.best
        finally:
            if pending.timer is not None:
                pending.timer.cancel()
            gets = self._gets.get((public, salt))
            if gets is not None:
                with contextlib.suppress(ValueError):
                    gets.remove(pending)
                if not gets:
                    del self._gets[(public, salt)]

    # --- the alert thread -------------------------------------------------------------

    def _pump(self) -> None:
        """Wait for alerts and pass what they say to the loop (runs in its own thread)."""
        assert lt is not None and self._loop is not None
        ses = self._ses
        while not self._stop.is_set():
            if ses.wait_for_alert(500) is None:
                continue
            for alert in ses.pop_alerts():
                if isinstance(alert, lt.dht_mutable_item_alert):
                    item = Item(
                        bytes(alert.key),
                        bytes(alert.salt),
                        int(alert.seq),
                        _string_of(alert.item),
                        bytes(alert.signature),
                        bool(alert.authoritative),
                    )
                    self._call(self._got_item, item)
                elif isinstance(alert, lt.dht_put_alert):
                    self._call(
                        self._put_done,
                        bytes(alert.public_key),
                        bytes(alert.salt),
                        int(alert.num_success),
                    )
                elif isinstance(alert, lt.listen_failed_alert | lt.udp_error_alert):
                    log.warning("DHT: %s", alert.message())

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed under us at shutdown
            self._loop.call_soon_threadsafe(fn, *args)

    def _got_item(self, item: Item) -> None:
        assert self._loop is not None
        for get in list(self._gets.get((item.key, item.salt), [])):
            if get.future.done():
                continue
            newer = get.best is None or item.seq > get.best.seq
            if item.value != b"" and newer and get.accept(item):
                get.best = item
                if get.timer is None and not item.authoritative:
                    get.timer = self._loop.call_later(get.settle, get.resolve)
            if item.authoritative:
                get.resolve()

    def _put_done(self, public: bytes, salt: bytes, num_success: int) -> None:
        puts = self._puts.get((public, salt))
        if puts:
            fut = puts.pop(0)
            if not puts:
                del self._puts[(public, salt)]
            if not fut.done():
                fut.set_result(num_success)

    # --- saved routing table ----------------------------------------------------------

    def _load_state(self) -> tuple[Any, list[tuple[str, int]]]:
        """Return (session params, saved nodes) from the state file, (None, []) if none."""
        assert lt is not None
        if self._state_path is None:
            return None, []
        try:
            with self._state_path.open("rb") as f:
                data = f.read(limits.MAX_DHT_STATE_BYTES + 1)
        except OSError:
            return None, []
        if len(data) > limits.MAX_DHT_STATE_BYTES:
            log.warning("ignoring the saved DHT routing table: too big")
            return None, []
        try:
            params = lt.read_session_params(data, lt.save_state_flags_t.save_dht_state)
            state = lt.bdecode(data)
        except Exception as exc:  # libtorrent raises its own error types for a bad file
            log.warning("ignoring the saved DHT routing table: %s", exc)
            return None, []
        return params, saved_nodes(state)

    def _save_and_stop(self, ses: Any) -> None:
        assert lt is not None
        if self._state_path is not None:
            try:
                state = ses.session_state(lt.save_state_flags_t.save_dht_state)
                data = lt.write_session_params_buf(state, lt.save_state_flags_t.save_dht_state)
                # Owner-only like every file of the data dir: it lists the nodes we talk to.
                write_private(self._state_path, bytes(data))
            except Exception as exc:  # a save that fails must not stop the node's shutdown
                log.warning("cannot save the DHT routing table: %s", exc)
        ses.pause()
        del ses


def _string_of(item: object) -> bytes | None:
    """Return an alert's item as bytes if it is a byte string (libtorrent gives the decoded
    entry: bytes for a string, else an int, list or dict), None otherwise."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8", "surrogateescape")
    return None if item else b""


def saved_nodes(state: object) -> list[tuple[str, int]]:
    """Return the (ip, port) of the nodes in a bdecoded DHT state (compact IPv4 and IPv6
    endpoints under "nodes" and "nodes6"), at most MAX_DHT_SAVED_NODES; [] if malformed."""
    if not isinstance(state, dict):
        return []
    dht = state.get(b"dht state")
    if not isinstance(dht, dict):
        return []
    out: list[tuple[str, int]] = []
    for key, size, family in ((b"nodes", 6, socket.AF_INET), (b"nodes6", 18, socket.AF_INET6)):
        nodes = dht.get(key)
        if not isinstance(nodes, list):
            continue
        for raw in nodes:
            if isinstance(raw, bytes) and len(raw) == size:
                host = socket.inet_ntop(family, raw[:-2])
                out.append((host, int.from_bytes(raw[-2:], "big")))
    return out[: limits.MAX_DHT_SAVED_NODES]
