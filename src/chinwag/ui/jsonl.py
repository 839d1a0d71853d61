"""The JSON-lines API: one command per stdin line, one event per stdout line.

Documented in docs/api.md. Commands are decoded into tagged structs; a line
that is not JSON or not a known, well-formed command gets an `error` event and
the node keeps running.
"""

from __future__ import annotations

import logging
import sys
from typing import BinaryIO

import msgspec

from chinwag import events as ev
from chinwag.errors import ChinwagError
from chinwag.node import Node
from chinwag.ui.stdio import LineTooLong, stdin_lines

log = logging.getLogger(__name__)

API_VERSION = 1


class Send(msgspec.Struct, frozen=True, tag_field="cmd", tag="send"):
    text: str
    room: str | None = None


class PeersCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="peers"):
    pass


class NickCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="nick"):
    nick: str


class Quit(msgspec.Struct, frozen=True, tag_field="cmd", tag="quit"):
    pass


Command = Send | PeersCmd | NickCmd | Quit
COMMANDS = frozenset({"send", "peers", "nick", "quit"})

_decoder = msgspec.json.Decoder(Command)
_raw_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def parse_command(line: bytes) -> Command:
    """Decode one command line; raise ChinwagError with a readable message if invalid."""
    try:
        cmd: Command = _decoder.decode(line)
        return cmd
    except msgspec.ValidationError as exc:
        try:
            raw = _raw_decoder.decode(line)
        except msgspec.DecodeError:
            raw = None
        if not isinstance(raw, dict) or "cmd" not in raw:
            raise ChinwagError('a command is a JSON object with a "cmd" field') from None
        if not isinstance(raw["cmd"], str) or raw["cmd"] not in COMMANDS:
            raise ChinwagError(
                f"unknown command {str(raw['cmd'])[:40]!r}; known: {', '.join(sorted(COMMANDS))}"
            ) from None
        raise ChinwagError(f"malformed {raw['cmd']!r} command: {exc}") from None
    except msgspec.DecodeError:
        raise ChinwagError("invalid JSON") from None


class JsonLinesUI:
    """Connects a Node to stdin/stdout as the JSON-lines API."""

    def __init__(self, node: Node, out: BinaryIO | None = None) -> None:
        self.node = node
        self.out = out if out is not None else sys.stdout.buffer
        node.subscribe(self.write_event)

    def write_event(self, event: ev.NodeEvent) -> None:
        """Write one event line (blocking if the reader is slow: that is back-pressure)."""
        try:
            self.out.write(_encoder.encode(event) + b"\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass

    async def run(self) -> None:
        """Process commands until quit or end of input."""
        async for line in stdin_lines():
            if isinstance(line, LineTooLong):
                self.node.error("command line too long")
                continue
            if not line.strip():
                continue
            try:
                cmd = parse_command(line)
                if isinstance(cmd, Quit):
                    return
                await self.handle(cmd)
            except ChinwagError as exc:
                self.node.error(str(exc))
            except Exception as exc:  # a bug: report it, keep the node running
                log.exception("command failed")
                self.node.error(f"internal error: {type(exc).__name__}")

    async def handle(self, cmd: Command) -> None:
        if isinstance(cmd, Send):
            await self.node.send(cmd.text, cmd.room)
        elif isinstance(cmd, PeersCmd):
            self.write_event(self.node.peers())
        elif isinstance(cmd, NickCmd):
            self.node.set_nick(cmd.nick)
