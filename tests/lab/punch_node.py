"""A chinwag node for the NAT lab: the JSON-lines API, plus a relayed connection at start.

    python punch_node.py --data-dir D --nick N [--peer H:P ...] [--join ROOM]
                         [--splice HOST:PORT:TOKEN:initiator|responder:VIA]

It runs the node as `chinwag --json --no-discovery` does. With --splice, once a peer has
told it its observed address (the `--peer` relay node) it opens the stand-in relay circuit
(tests/lab/splice.py) and runs a chinwag session through it, as net/relay.py's dial_via
will: that is the relayed connection the hole punch upgrades.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from splice import splice_socket

from chinwag.node import Node, NodeConfig
from chinwag.protocol.reasons import Reason
from chinwag.ui.jsonl import JsonLinesUI


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


async def _main(args: argparse.Namespace) -> int:
    config = NodeConfig(
        data_dir=Path(args.data_dir),
        nick=args.nick,
        port=args.port,
        port_fallback=False,
        peers=[_host_port(p) for p in args.peer],
        discovery=False,
    )
    node = Node(config)
    ui = JsonLinesUI(node)
    await node.start()
    if args.join:
        await node.join(args.join)
    if args.splice:
        host, port, token, role, via = args.splice.split(":")
        run = node._run
        assert run is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not run.manager.observed and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # our own state: no event tells it
        sock = await loop.run_in_executor(None, splice_socket, host, int(port), token)
        await run.manager.adopt(sock, role == "initiator", None, "relayed", via)
    ui_task = asyncio.ensure_future(ui.run())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(sig, ui_task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await ui_task
    await node.stop(Reason.QUIT)
    ui.flush()
    return 0


def _test_limits() -> None:
    """CHINWAG_LAB_LIMITS="NAME=VALUE,...": shorten limits for a lab test (e.g. the back-off)."""
    from chinwag import limits

    for item in filter(None, os.environ.get("CHINWAG_LAB_LIMITS", "").split(",")):
        name, _, value = item.partition("=")
        assert hasattr(limits, name), name
        setattr(limits, name, float(value))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--nick")
    parser.add_argument("--port", type=int, default=47475)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--join")
    parser.add_argument("--splice")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    _test_limits()
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
