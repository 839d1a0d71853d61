"""Command line: `chinwag [options]` to chat, `chinwag id` to show who you are."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from chinwag import __version__, limits
from chinwag.protocol.reasons import Reason

if TYPE_CHECKING:
    from chinwag.node import Node, NodeConfig
    from chinwag.ui.web.server import WebServer


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address, got {value!r}") from None


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}")
    return int(value)


def default_bootstrap() -> list[tuple[str, int]]:
    """Return the DHT bootstrap nodes when --dht-bootstrap is not given: the public ones, or
    CHINWAG_DHT_BOOTSTRAP (comma-separated HOST:PORT; empty: none; the test suite sets it)."""
    from chinwag.net.dht import PUBLIC_BOOTSTRAP

    env = os.environ.get("CHINWAG_DHT_BOOTSTRAP")
    if env is None:
        return list(PUBLIC_BOOTSTRAP)
    return [_host_port(v.strip()) for v in env.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (also used to generate the docs)."""
    p = argparse.ArgumentParser(
        prog="chinwag",
        description="Serverless, encrypted peer-to-peer chat for the LAN. "
        "Start it on two machines of one network and they find each other.",
    )
    p.add_argument(
        "command",
        nargs="?",
        choices=["chat", "id", "web", "invite", "add", "relay", "export", "import"],
        default="chat",
        help="chat (default); id: print your peer id and fingerprint; "
        "web: run the node with the web UI in the browser (no terminal UI); "
        "invite: print your invite code (and its QR code) for a friend elsewhere; "
        "add CODE: make the peer of an invite code a contact (dialled when chinwag runs); "
        "relay: a headless relay for peers behind NATs (no chat; logs to stderr); "
        "export FILE: write your identity with its history, contacts and sessions to FILE, "
        "encrypted with a passphrase (chinwag must not be running); import FILE: install "
        "such a file into the data dir (then never run the old copy again)",
    )
    p.add_argument("code", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"chinwag {__version__}")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--json",
        action="store_true",
        help="JSON-lines API on stdin/stdout instead of the terminal UI",
    )
    mode.add_argument(
        "--plain",
        action="store_true",
        help="line mode instead of the full-screen terminal UI "
        "(chosen by itself when stdin or stdout is not a terminal)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where identity and settings live (default: the platform's user data dir)",
    )
    p.add_argument("--nick", help="your display name (saved in the data dir; default: login name)")
    p.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"TCP listen port, 0 = any free port (default {limits.DEFAULT_TCP_PORT}, "
        "or any free port if taken)",
    )
    p.add_argument(
        "--bind",
        default="0.0.0.0",
        type=_ip,
        help="address to listen on; also limits discovery to that interface",
    )
    p.add_argument(
        "--peer",
        type=_host_port,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a peer to connect to directly (repeatable)",
    )
    p.add_argument("--no-discovery", action="store_true", help="do not send or hear UDP beacons")
    p.add_argument(
        "--no-punch",
        action="store_true",
        help="stay on relayed connections: do not try to upgrade them by hole punching",
    )
    p.add_argument(
        "--no-upnp",
        action="store_true",
        help="do not map our TCP port on the home router with UPnP-IGD",
    )
    p.add_argument(
        "--discovery-port",
        type=_port,
        default=limits.DISCOVERY_PORT,
        help=f"UDP port of discovery beacons (default {limits.DISCOVERY_PORT})",
    )
    p.add_argument(
        "--downloads",
        type=Path,
        default=None,
        metavar="DIR",
        help="where accepted files are saved (default: the platform's downloads folder)",
    )
    p.add_argument(
        "--auto-accept-mb",
        type=float,
        default=0.0,
        metavar="MB",
        help="accept files up to MB megabytes from verified peers without asking (default: off)",
    )
    relay = p.add_argument_group("relays (see docs/reach.md)")
    relay.add_argument(
        "--relay",
        action="store_true",
        help="relay circuits for peers behind NATs (bounded: docs/reach.md); "
        "`chinwag relay` implies it",
    )
    relay.add_argument(
        "--relay-contacts-unlimited",
        action="store_true",
        help="with --relay: circuits between two of your contacts have no byte or time limit",
    )
    relay.add_argument(
        "--relay-peer",
        type=_host_port,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a relay to connect to and keep a reservation at, so peers can reach you "
        "through it (repeatable)",
    )
    dht = p.add_argument_group("the Mainline DHT (see docs/dht.md)")
    dht.add_argument(
        "--no-dht",
        action="store_true",
        help="run no DHT node: publish nothing, look nobody up (nothing is sent on the DHT port)",
    )
    dht.add_argument(
        "--dht-port",
        type=_port,
        default=limits.DEFAULT_DHT_PORT,
        metavar="N",
        help=f"UDP port of the DHT node (default {limits.DEFAULT_DHT_PORT}, any free port "
        "if taken; 0: any)",
    )
    dht.add_argument(
        "--dht-bootstrap",
        type=_host_port,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a DHT node to join the DHT through (repeatable; default: the public "
        "bootstrap nodes listed in docs/dht.md)",
    )
    dht.add_argument(
        "--dht-private",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publish our record encrypted under a blinded key, readable only by those who "
        "know our peer id (default: on; --no-dht-private publishes it in the clear)",
    )
    web = p.add_argument_group("web UI (see docs/web.md)")
    web.add_argument(
        "--web",
        action="store_true",
        help="also serve the web UI (with any mode, --json included); `chinwag web` implies it",
    )
    web.add_argument(
        "--web-port",
        type=_port,
        default=None,
        help=f"web UI port, 0 = any free port (default {limits.WEB_DEFAULT_PORT}, "
        "or any free port if taken)",
    )
    web.add_argument(
        "--web-bind",
        type=_ip,
        default="127.0.0.1",
        metavar="ADDR",
        help="address the web UI listens on (default 127.0.0.1: this machine only); "
        "0.0.0.0 serves phones on the LAN over plain HTTP (read docs/web.md first)",
    )
    web.add_argument(
        "--no-browser", action="store_true", help="do not open a browser (`chinwag web`)"
    )
    web.add_argument(
        "--new-token",
        action="store_true",
        help="make a new web token: old links and browser sessions stop working",
    )
    move = p.add_argument_group("export and import")
    move.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="read the export passphrase from the first line of FILE "
        "(default: ask on the terminal, twice for export)",
    )
    move.add_argument(
        "--force",
        action="store_true",
        help="export: overwrite FILE; import: replace the data dir's identity and store "
        "(the old ones are kept as *.before-import-*); chat, web, relay: start on a data dir "
        "that was exported (makes this copy the live one: never start the imported one)",
    )
    p.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (stderr; in the terminal UI, chinwag.log in the data dir)",
    )
    return p


def _reopen_closed_std_fds() -> None:
    # A closed stdin/stdout/stderr would be reused by the event loop's own fds
    # (and uvloop aborts when it later closes "fd 0"): park them on /dev/null.
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def main(argv: list[str] | None = None) -> int:
    """Run chinwag; return the process exit status (a reader that went away is no error)."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # inside the try: the last lines may only now meet a closed pipe
    except BrokenPipeError:
        # `chinwag id | head -1`: the reader left; end quietly.
        from chinwag.ui.stdio import silence_stdout

        silence_stdout()
        return 0
    return status


def _main(argv: list[str] | None) -> int:
    _reopen_closed_std_fds()
    args = build_parser().parse_args(argv)
    from chinwag.datadir import default_data_dir

    data_dir: Path = args.data_dir or default_data_dir()
    if args.command == "id":
        return _print_id(data_dir)
    if args.command == "invite":
        return _print_invite(data_dir, args)
    if args.command == "add":
        if not args.code:
            build_parser().error("usage: chinwag add CODE|PEER_ID")
        return _add_contact(data_dir, args.code)
    if args.command in ("export", "import"):
        if not args.code:
            build_parser().error(f"usage: chinwag {args.command} FILE")
        return _move(args.command, data_dir, Path(args.code), args)
    if args.passphrase_file is not None:
        build_parser().error("--passphrase-file goes with export and import")
    if args.code is not None:
        build_parser().error(f"unexpected argument {args.code[:40]!r}")
    if args.command == "web":
        args.web = True
    if args.command == "relay":
        args.relay = True
        if args.web or args.json or args.plain:
            build_parser().error("`chinwag relay` has no chat interface: no --web, --json, --plain")
    if args.new_token and not args.web:
        build_parser().error("--new-token goes with `chinwag web` or --web")
    if args.command == "relay":
        mode = "relay"
    elif args.command == "web" and not (args.json or args.plain):
        mode = "headless"
    else:
        mode = choose_mode(args.json, args.plain)
    level = args.log_level or ("info" if mode != "line" else "warning")
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if mode == "tui":
        # The screen is the TUI's: logs (and tracebacks) go to a file in the data dir.
        try:
            from chinwag.datadir import ensure_private_dir

            ensure_private_dir(data_dir)
            # Owner-only: the log names peers, rooms and addresses (basicConfig would use
            # the umask's mode).
            os.close(os.open(data_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        except OSError as exc:
            print(f"chinwag: {exc}", file=sys.stderr)
            return 1
        logging.basicConfig(
            level=getattr(logging, level.upper()),
            filename=data_dir / LOG_FILE,
            format=log_format,
        )
    else:
        logging.basicConfig(
            level=getattr(logging, level.upper()), stream=sys.stderr, format=log_format
        )
    return _run(args, data_dir, mode)


#: The terminal UI's log file, in the data directory.
LOG_FILE = "chinwag.log"


def choose_mode(json_mode: bool, plain: bool) -> str:
    """Return "json", "line" or "tui": the TUI only when stdin and stdout are terminals."""
    if json_mode:
        return "json"
    if plain or os.environ.get("TERM", "") == "dumb":
        return "line"
    return "tui" if os.isatty(0) and os.isatty(1) else "line"


def _print_id(data_dir: Path) -> int:
    from chinwag.crypto.identity import BadIdentity, fingerprint
    from chinwag.datadir import ensure_private_dir, load_or_create_identity

    try:
        ensure_private_dir(data_dir)
        ident = load_or_create_identity(data_dir)
    except (OSError, BadIdentity) as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return 1
    print(f"peer id:     {ident.peer_id}")
    print(f"fingerprint: {fingerprint(ident.peer_id)}")
    return 0


def _print_invite(data_dir: Path, args: argparse.Namespace) -> int:
    """`chinwag invite`: print a fresh invite code, and in a terminal its QR code.

    Works while chinwag runs (nothing is locked): the addresses are those the last
    run saw (its port, its confirmed public addresses), or `--port`/`--bind`.
    """
    from chinwag.contacts import offline_invite
    from chinwag.crypto.identity import BadIdentity
    from chinwag.datadir import DataDir, ensure_private_dir, load_or_create_identity
    from chinwag.node import default_nick
    from chinwag.ui.format import invite_lines
    from chinwag.ui.web.launch import print_qr

    try:
        ensure_private_dir(data_dir)
        ident = load_or_create_identity(data_dir)
    except (OSError, BadIdentity) as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return 1
    settings = DataDir(data_dir).load_settings()
    nick = str(args.nick or settings.get("nick") or default_nick())
    bind = args.bind if args.bind != "0.0.0.0" else None
    invite = offline_invite(data_dir, ident, nick, args.port, bind)
    if sys.stdout.isatty():
        for line in invite_lines(invite):
            print(line)
        # Capitals: a QR code holds them (and ':') in its compact alphanumeric mode.
        print_qr(invite.code.upper(), sys.stdout)
    else:
        print(invite.code)
    return 0


def _add_contact(data_dir: Path, code: str) -> int:
    """`chinwag add CODE`: store the contact for the next start; needs the data dir free."""
    from chinwag.contacts import store_contact
    from chinwag.errors import ChinwagError

    try:
        added = store_contact(data_dir, code)
    except ChinwagError as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return 1
    print(f"added contact {added.nick} ({added.peer_id}); it is dialled when chinwag runs")
    return 0


def _read_passphrase(args: argparse.Namespace, twice: bool) -> str:
    """Return the passphrase: from --passphrase-file, else asked on the terminal (twice
    when it protects a new file); raise UsageError if neither is possible."""
    import getpass

    from chinwag.errors import UsageError

    if args.passphrase_file is not None:
        try:
            with args.passphrase_file.open("rb") as f:
                raw = f.read(limits.MAX_EXPORT_PASSPHRASE_CHARS * 4 + 2)
        except OSError as exc:
            raise UsageError(f"cannot read {args.passphrase_file}: {exc.strerror}") from None
        try:
            return raw.decode("utf-8").splitlines()[0] if raw.strip() else ""
        except UnicodeDecodeError:
            raise UsageError(f"{args.passphrase_file} is not UTF-8 text") from None
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask the passphrase on: use --passphrase-file FILE")
    first = getpass.getpass("export passphrase: ")
    if twice and getpass.getpass("the same again: ") != first:
        raise UsageError("the two passphrases differ; nothing was written")
    return first


def _move(command: str, data_dir: Path, path: Path, args: argparse.Namespace) -> int:
    """`chinwag export FILE` / `chinwag import FILE` (chinwag/keymove.py)."""
    from chinwag.crypto.identity import short_id
    from chinwag.errors import ChinwagError
    from chinwag.keymove import check_passphrase, export_identity, import_identity

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="chinwag: %(message)s")
    try:
        passphrase = check_passphrase(_read_passphrase(args, twice=command == "export"))
        if command == "export":
            done = export_identity(data_dir, path, passphrase, args.force)
            print(
                f"exported {done.nick or '?'} ({short_id(done.peer_id)}), store "
                f"{done.db_bytes} bytes, to {path}. Import it elsewhere with "
                "`chinwag import FILE`; from then on do not start chinwag on this data "
                "directory again (the two copies would fork their sessions): it refuses "
                "to start there now, unless --force"
            )
        else:
            done = import_identity(data_dir, path, passphrase, args.force)
            print(
                f"imported {done.nick or '?'} ({done.peer_id}), store {done.db_bytes} bytes, "
                f"into {data_dir}. Never run the exported copy again"
            )
    except ChinwagError as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace, data_dir: Path, mode: str) -> int:
    from chinwag.errors import ChinwagError
    from chinwag.node import NodeConfig

    config = NodeConfig(
        data_dir=data_dir,
        nick=args.nick,
        port=limits.DEFAULT_TCP_PORT if args.port is None else args.port,
        port_fallback=args.port is None,
        bind=args.bind,
        peers=list(args.peer),
        discovery=not args.no_discovery,
        discovery_port=args.discovery_port,
        downloads=args.downloads,
        auto_accept=max(0, int(args.auto_accept_mb * 1_000_000)),
        upnp=not args.no_upnp,
        punch=not args.no_punch,
        relay=args.relay,
        relay_contacts_unlimited=args.relay_contacts_unlimited,
        relay_peers=list(args.relay_peer),
        dht=not args.no_dht,
        dht_port=args.dht_port,
        dht_bootstrap=list(args.dht_bootstrap) or default_bootstrap(),
        dht_private=args.dht_private,
        chat=mode != "relay",
        force_exported=args.force,
    )
    web = _web_options(args, data_dir) if args.web else None
    try:
        with _runner() as runner:
            if mode == "tui":
                return runner.run(_tui_session(config, data_dir / LOG_FILE, web))
            if mode == "relay":
                return runner.run(_relay_session(config))
            if mode == "headless":
                assert web is not None
                return runner.run(_headless_session(config, web))
            return runner.run(_session(config, mode == "json", web))
    except ChinwagError as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # not on every platform; asyncio's loop is fine, just slower
        return asyncio.Runner()


class _UI(Protocol):
    async def run(self) -> None: ...
    def flush(self) -> None: ...


async def _session(config: NodeConfig, json_mode: bool, web: WebOptions | None = None) -> int:
    from chinwag.node import Node

    node = Node(config)
    ui: _UI
    if json_mode:
        from chinwag.ui.jsonl import JsonLinesUI

        ui = jsonl_ui = JsonLinesUI(node)
    else:
        from chinwag.ui.line import LineUI

        ui = LineUI(node)
    await node.start()
    server = None
    if web is not None:
        try:
            server = await _start_web(node, web)
        except BaseException:
            await node.stop(Reason.ERROR)
            raise
        if json_mode:
            # After `ready` (flushed first), so `ready` stays the first event.
            jsonl_ui.flush()
            line = json.dumps({"event": "web", "url": server.url}, separators=(",", ":"))
            jsonl_ui.out.write(line.encode() + b"\n")
            jsonl_ui.out.flush()
        _announce(server, web, to_stderr=not json_mode)
    loop = asyncio.get_running_loop()
    ui_task = asyncio.ensure_future(ui.run())
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, ui_task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await ui_task
    if server is not None:
        await server.stop()
    await node.stop(Reason.QUIT)
    ui.flush()
    return 0


async def _headless_session(config: NodeConfig, web: WebOptions) -> int:
    """`chinwag web`: the node and its web UI, no terminal UI; stops on SIGINT or SIGTERM."""
    from chinwag.node import Node

    node = Node(config)
    await node.start()
    try:
        server = await _start_web(node, web)
    except BaseException:
        await node.stop(Reason.ERROR)
        raise
    _announce(server, web, to_stderr=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        await node.stop(Reason.QUIT)
    return 0


async def _relay_session(config: NodeConfig) -> int:
    """`chinwag relay`: a node that only relays (no rooms, no chat); stops on SIGINT/SIGTERM.

    Prints its peer id, addresses (what clients need for --relay-peer) and an invite code
    (for `chinwag add`) once on stdout.
    """
    from chinwag.net.relay import local_networks
    from chinwag.node import Node

    node = Node(config)
    ready = await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if config.bind not in ("0.0.0.0", "::"):
        hosts = [config.bind]
    else:
        hosts = [a for a, _ in local_networks() if ":" not in a and not a.startswith("127.")]
        hosts = hosts or ["127.0.0.1"]
    print(f"chinwag relay: peer id {ready.peer_id}", flush=True)
    for host in hosts:
        print(f"chinwag relay: address {host}:{ready.port}", flush=True)
    # As `chinwag invite` prints it: the relay's id, LAN and public addresses, signed.
    print(f"chinwag relay: invite {node.invite().code}", flush=True)
    try:
        await stop.wait()
    finally:
        await node.stop(Reason.QUIT)
    return 0


async def _tui_session(config: NodeConfig, log_path: Path, web: WebOptions | None = None) -> int:
    from chinwag import events as ev
    from chinwag.errors import ChinwagError
    from chinwag.node import Node
    from chinwag.ui.tui import ChinwagApp

    node = Node(config)
    app = ChinwagApp(node, log_path=log_path)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, app.exit)
    servers: list[WebServer] = []
    servers_tasks: set[asyncio.Task[None]] = set()
    if web is not None:
        # The TUI starts the node itself: start the web UI once the node is ready.
        async def start_web() -> None:
            try:
                servers.append(await _start_web(node, web))
            except (OSError, ChinwagError) as exc:
                app.note_error(f"error: web UI not started: {exc}")
                return
            app.note(f"web UI: {servers[0].url}")

        def on_event(event: ev.NodeEvent) -> None:
            if isinstance(event, ev.Ready):
                task = loop.create_task(start_web())
                servers_tasks.add(task)
                task.add_done_callback(servers_tasks.discard)

        node.subscribe(on_event)
    try:
        await app.run_async()
    finally:
        # The app may end while the web UI is still starting: a server started after
        # the loop below would be left listening.
        for task in tuple(servers_tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in servers:
            await server.stop()
        await node.stop(Reason.QUIT)
    if app.start_error:
        print(f"chinwag: {app.start_error}", file=sys.stderr)
        return 1
    return app.return_code or 0


# --- the web UI -----------------------------------------------------------------


@dataclass(frozen=True)
class WebOptions:
    """How to serve the web UI: token, address, port, whether to open a browser."""

    token: str
    bind: str
    port: int
    port_fallback: bool
    open_browser: bool
    data_dir: Path


def _web_options(args: argparse.Namespace, data_dir: Path) -> WebOptions:
    from chinwag.ui.web.auth import load_or_create_token

    return WebOptions(
        token=load_or_create_token(data_dir, rotate=args.new_token),
        bind=args.web_bind,
        port=limits.WEB_DEFAULT_PORT if args.web_port is None else args.web_port,
        port_fallback=args.web_port is None,
        open_browser=args.command == "web" and not args.no_browser,
        data_dir=data_dir,
    )


async def _start_web(node: Node, web: WebOptions) -> WebServer:
    """Start the web UI on the node's loop (on any free port if the default one is taken)."""
    from chinwag.errors import ChinwagError
    from chinwag.ui.web.server import WebServer

    server = WebServer(node, web.token, web.bind, web.port, port_fallback=web.port_fallback)
    try:
        await server.start()
    except OSError as exc:
        raise ChinwagError(f"web UI: cannot listen on {web.bind}:{web.port}: {exc}") from exc
    return server


def _announce(server: WebServer, web: WebOptions, to_stderr: bool) -> None:
    """Print the login URL (and a QR code for a LAN address); open the browser if asked."""
    from chinwag.ui.web.launch import open_browser, print_qr

    if to_stderr:
        print(f"chinwag web UI: open {server.url}", file=sys.stderr, flush=True)
    if not server.loopback:
        print(
            "chinwag web UI: served to the LAN over plain HTTP: anyone on this network can read "
            "it and copy your login (see docs/web.md)",
            file=sys.stderr,
        )
        print_qr(server.url, sys.stderr)
    if web.open_browser:
        open_browser(server.url, web.data_dir)
