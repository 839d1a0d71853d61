"""The web UI's HTTP side: aiohttp in the node's own event loop.

Routes: `/` (the page; `/?token=T` logs in), `/static/<path>`, `/ws` (the
bridge), `POST /upload`, `POST /open-folder`. Every request passes the Host
check (DNS rebinding), the Origin check (cross-site requests) and
authentication (session cookie or Bearer token); every response carries the
security headers. See docs/web.md for the threat model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import ifaddr
import msgspec
from aiohttp import hdrs, web

from chinwag import events as ev
from chinwag import limits
from chinwag.errors import ChinwagError
from chinwag.node import Node
from chinwag.protocol.names import safe_filename
from chinwag.ui.web import auth
from chinwag.ui.web.bridge import Bridge, Client

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where dropped files are kept while their offer can still be fetched (under the data
#: directory); see WebServer.sweep_uploads for when they go.
UPLOADS_DIR = "uploads"
#: States of an outgoing offer whose file may still be fetched (as Offers.serves says).
_SERVED_STATES = frozenset({"sharing", "done"})

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}

UNAUTHORIZED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chinwag: open the link</title></head>
<body><h1>chinwag</h1>
<p>This page needs the link printed in the terminal where chinwag runs:
<code>http://HOST:PORT/?token=...</code>. Open that link (it logs this browser in).</p>
<p>Lost it? Run <code>chinwag web</code> again, or <code>chinwag web --new-token</code>
to make a new one (old links and sessions stop working).</p></body></html>
"""

_PLACEHOLDER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chinwag</title></head>
<body><p>The web page is not installed (static/index.html is missing).</p></body></html>
"""

#: Opens a folder in the desktop's file manager.
Opener = Callable[[Path], Awaitable[None]]


async def open_in_file_manager(folder: Path) -> None:
    """Open folder with xdg-open / open / explorer (no shell); raise ChinwagError if none."""
    if sys.platform == "win32":
        os.startfile(folder)  # type: ignore[attr-defined,unused-ignore]
        return
    tool = "open" if sys.platform == "darwin" else "xdg-open"
    exe = shutil.which(tool)
    if exe is None:
        raise ChinwagError(f"cannot open folders here ({tool} not found)")
    proc = await asyncio.create_subprocess_exec(
        exe,
        str(folder),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    # xdg-open returns once the file manager is started; do not wait for more than that.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 5.0)


def local_addresses() -> list[str]:
    """Return the machine's own IP addresses (for a wildcard bind's Host check)."""
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            addr = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            if "%" not in addr:  # link-local IPv6 with a scope cannot be a Host header
                out.append(addr)
    return out


class WebServer:
    """The web UI of one node: start() listens and returns the login URL; stop() closes."""

    def __init__(
        self,
        node: Node,
        token: str,
        bind: str = "127.0.0.1",
        port: int = limits.WEB_DEFAULT_PORT,
        opener: Opener | None = None,
        port_fallback: bool = False,
    ) -> None:
        """With `port_fallback`, a taken `port` is replaced by any free one."""
        self.node = node
        self.token = token
        self.bind = bind
        self.port = port
        self.port_fallback = port_fallback
        self.opener: Opener = opener or open_in_file_manager
        self.sessions = auth.Sessions()
        self.bridge = Bridge(node)
        self.hosts: frozenset[str] = frozenset()
        self._runner: web.AppRunner | None = None
        self._uploads = asyncio.Semaphore(limits.WEB_MAX_UPLOADS)
        #: Upload folders not offered yet (being received or hashed): no sweep touches them.
        self._receiving: set[Path] = set()
        self._stopped = False

    # --- lifecycle ----------------------------------------------------------

    def app(self) -> web.Application:
        """Return the aiohttp application (also used by tests)."""
        app = web.Application(middlewares=[self._guard], client_max_size=limits.WEB_MAX_BODY)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{path:.+}", self._static)
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/upload", self._upload)
        app.router.add_post("/open-folder", self._open_folder)
        app.on_response_prepare.append(_add_headers)
        return app

    async def start(self) -> str:
        """Listen; return the login URL `http://HOST:PORT/?token=...`."""
        runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=limits.WEB_CLOSE_TIMEOUT_S,
        )
        if self._stopped:
            # Started again: the old bridge let go of the node when it stopped.
            self.bridge = Bridge(self.node)
            self._stopped = False
        self.node.subscribe(self._on_event)
        self.sweep_uploads()
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, self.bind, self.port, reuse_address=True).start()
            except OSError:
                if not self.port_fallback or self.port == 0:
                    raise
                await web.TCPSite(runner, self.bind, 0, reuse_address=True).start()
        except BaseException:
            self.node.unsubscribe(self._on_event)
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.hosts = auth.allowed_hosts(self.bind, self.port, local_addresses())
        return self.url

    @property
    def url(self) -> str:
        """The login URL (the address to open, with the token)."""
        return f"http://{auth.host_literal(self.display_host)}:{self.port}/?token={self.token}"

    @property
    def display_host(self) -> str:
        """The address a browser should open: the bound one, or one of ours for a wildcard."""
        if self.bind not in ("0.0.0.0", "::", ""):
            return self.bind
        for addr in local_addresses():
            if ":" not in addr and not auth.is_loopback(addr):
                return addr
        return "127.0.0.1"

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the server."""
        return auth.is_loopback(self.bind)

    async def stop(self) -> None:
        """Close every tab and stop listening."""
        self._stopped = True
        self.node.unsubscribe(self._on_event)
        await self.bridge.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- uploaded copies -------------------------------------------------------

    def sweep_uploads(self) -> None:
        """Delete every upload folder whose file no outgoing offer can still serve
        (withdrawn, failed, forgotten, or left by an earlier run), except uploads under way."""
        root = self.node.config.data_dir / UPLOADS_DIR
        try:
            folders = list(root.iterdir())
            files = self.node.files().files
        except (OSError, ChinwagError):  # no uploads yet, or the node is not running
            return
        keep = {
            Path(f.path).resolve().parent
            for f in files
            if f.direction == "out" and f.state in _SERVED_STATES and f.path
        }
        busy = {p.resolve() for p in self._receiving}
        for folder in folders:
            resolved = folder.resolve()
            if resolved not in keep and resolved not in busy:
                shutil.rmtree(folder, ignore_errors=True)

    def _on_event(self, event: ev.NodeEvent) -> None:
        # An offer ending (withdrawn, failed) may free an uploaded copy at once.
        if isinstance(event, ev.FileFailed):
            self.sweep_uploads()

    # --- the guard: Host, Origin, authentication -------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        host = request.headers.get(hdrs.HOST, "").lower()
        if host not in self.hosts:
            # DNS rebinding: a page of evil.example resolved to 127.0.0.1 still says its name.
            return web.Response(status=403, text="unknown Host\n")
        bearer = self._bearer(request)
        upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if upgrade or request.method not in ("GET", "HEAD"):
            origin = request.headers.get(hdrs.ORIGIN)
            if origin is None:
                # Browsers always send Origin on these; without one only a script may come in.
                if not bearer:
                    return web.Response(status=403, text="Origin required\n")
            elif not auth.origin_ok(origin, self.hosts):
                return web.Response(status=403, text="cross-origin request refused\n")
        if request.path == "/" and "token" in request.query:
            return self._login(request)
        sid = request.cookies.get(auth.COOKIE, "")
        if not bearer and not (sid and self.sessions.valid(sid)):
            return web.Response(status=401, text=UNAUTHORIZED_PAGE, content_type="text/html")
        return await handler(request)

    def _bearer(self, request: web.Request) -> bool:
        value = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, given = value.partition(" ")
        return scheme.lower() == "bearer" and auth.token_matches(given.strip(), self.token)

    def _login(self, request: web.Request) -> web.StreamResponse:
        if not auth.token_matches(request.query.get("token", ""), self.token):
            return web.Response(status=401, text=UNAUTHORIZED_PAGE, content_type="text/html")
        # A redirect to "/" takes the token out of the address bar and the history.
        response = web.Response(status=302, headers={hdrs.LOCATION: "/"})
        response.set_cookie(
            auth.COOKIE, self.sessions.new(), httponly=True, samesite="Strict", path="/"
        )
        return response

    # --- pages ------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            return web.Response(text=_PLACEHOLDER_PAGE, content_type="text/html")
        return web.FileResponse(index, headers={hdrs.CONTENT_TYPE: _CONTENT_TYPES[".html"]})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        root = STATIC_DIR
        path = (root / request.match_info["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        ctype = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: ctype})

    # --- the WebSocket --------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        # Every socket counts from the upgrade on, not only tabs that sent `resume`.
        if len(self.bridge.sockets) >= limits.WEB_MAX_CLIENTS:
            return web.Response(status=503, text="too many tabs open\n")
        ws = web.WebSocketResponse(
            max_msg_size=limits.WEB_MAX_WS_MESSAGE, heartbeat=limits.WEB_HEARTBEAT_S
        )
        transport = request.transport
        client = Client(self.bridge, ws, transport.abort if transport is not None else None)
        # Counted before the first await, so concurrent upgrades cannot overshoot the bound.
        self.bridge.sockets.add(client)
        try:
            await ws.prepare(request)
            await client.run()
        finally:
            self.bridge.sockets.discard(client)
        return ws

    # --- files ----------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        to = request.query.get("to", "")
        name = safe_filename(request.query.get("name", ""))
        if not to:
            return _json({"ok": False, "error": "missing ?to=WHO or ?to=#ROOM"}, 400)
        if request.content_length is not None and request.content_length > limits.WEB_MAX_UPLOAD:
            return _json({"ok": False, "error": "file too large"}, 413)
        if self._uploads.locked():
            return _json({"ok": False, "error": "too many uploads at once"}, 503)
        async with self._uploads:
            self.sweep_uploads()
            folder = self.node.config.data_dir / UPLOADS_DIR / secrets.token_hex(8)
            self._receiving.add(folder)
            try:
                folder.mkdir(parents=True, mode=0o700)
                return await self._offer_upload(request, folder, to, name)
            finally:
                self._receiving.discard(folder)

    async def _offer_upload(
        self, request: web.Request, folder: Path, to: str, name: str
    ) -> web.StreamResponse:
        """Receive the body into folder/name and offer it to `to`; no folder is left on failure."""
        path = folder / name
        try:
            await _receive(request, path)
        except _TooLarge:
            shutil.rmtree(folder, ignore_errors=True)
            return _json({"ok": False, "error": "file too large"}, 413)
        except Exception as exc:  # the tab went away mid-body, the disk is full, ...
            shutil.rmtree(folder, ignore_errors=True)
            log.info("web: upload failed: %r", exc)
            return _json({"ok": False, "error": "upload failed"}, 400)
        except BaseException:  # cancelled (the server stops): leave no partial file
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            offer = await self.node.send_file(to, str(path))
        except ChinwagError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            return _json({"ok": False, "error": str(exc)}, 400)
        return _json({"ok": True, "id": offer.id})

    async def _open_folder(self, request: web.Request) -> web.StreamResponse:
        try:
            body = msgspec.json.decode(await request.read(), type=_OpenFolder)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return _json({"ok": False, "error": 'expected {"id": FILE_ID}'}, 400)
        matches = [f for f in self.node.files().files if f.id.startswith(body.id) and body.id]
        exact = [f for f in matches if f.id == body.id]
        found = exact or matches
        if len(found) != 1:
            return _json({"ok": False, "error": "no such file"}, 404)
        if not found[0].path:
            return _json({"ok": False, "error": "the file is not saved yet"}, 409)
        folder = Path(found[0].path).parent
        if not self.loopback:
            # Someone on another machine: opening a window here would help nobody.
            return _json({"ok": True, "path": found[0].path, "opened": False})
        try:
            await self.opener(folder)
        except (ChinwagError, OSError) as exc:
            return _json({"ok": False, "path": found[0].path, "error": str(exc)}, 500)
        return _json({"ok": True, "path": found[0].path, "opened": True})


class _OpenFolder(msgspec.Struct, frozen=True):
    id: str


class _TooLarge(Exception):
    pass


async def _receive(request: web.Request, path: Path) -> None:
    """Stream a request body to a new file (0600); raise _TooLarge beyond WEB_MAX_UPLOAD."""
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limits.WEB_MAX_UPLOAD:
                raise _TooLarge
            # Page-cache writes of 64 KiB take microseconds: not worth a thread hop each.
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(obj), status=status, content_type="application/json"
    )


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Put the security headers on every response (errors and the WebSocket handshake too)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
