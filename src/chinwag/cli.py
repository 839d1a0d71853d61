"""Command line: `chinwag [options]` to chat, `chinwag id` to show who you are."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from chinwag import __version__, limits

if TYPE_CHECKING:
    from chinwag.node import NodeConfig


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
        choices=["chat", "id"],
        default="chat",
        help="chat (default) or id: print your peer id and fingerprint",
    )
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
    mode = choose_mode(args.json, args.plain)
    level = args.log_level or ("info" if mode != "line" else "warning")
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if mode == "tui":
        # The screen is the TUI's: logs (and tracebacks) go to a file in the data dir.
        try:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
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
    from chinwag.datadir import load_or_create_identity

    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ident = load_or_create_identity(data_dir)
    except (OSError, BadIdentity) as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return 1
    print(f"peer id:     {ident.peer_id}")
    print(f"fingerprint: {fingerprint(ident.peer_id)}")
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
    )
    try:
        with _runner() as runner:
            if mode == "tui":
                return runner.run(_tui_session(config, data_dir / LOG_FILE))
            return runner.run(_session(config, mode == "json"))
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


async def _session(config: NodeConfig, json_mode: bool) -> int:
    from chinwag.node import Node

    node = Node(config)
    ui: _UI
    if json_mode:
        from chinwag.ui.jsonl import JsonLinesUI

        ui = JsonLinesUI(node)
    else:
        from chinwag.ui.line import LineUI

        ui = LineUI(node)
    await node.start()
    loop = asyncio.get_running_loop()
    ui_task = asyncio.ensure_future(ui.run())
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, ui_task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await ui_task
    await node.stop("quit")
    ui.flush()
    return 0


async def _tui_session(config: NodeConfig, log_path: Path) -> int:
    from chinwag.node import Node
    from chinwag.ui.tui import ChinwagApp

    node = Node(config)
    app = ChinwagApp(node, log_path=log_path)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, app.exit)
    try:
        await app.run_async()
    finally:
        await node.stop("quit")
    if app.start_error:
        print(f"chinwag: {app.start_error}", file=sys.stderr)
        return 1
    return app.return_code or 0
