"""One command layer for every interface: command structs, their two parsers, one executor.

The JSON-lines API and the WebSocket decode commands from JSON (`parse_json`); line
mode, the TUI and the web page's composer parse slash commands (`parse_slash`) into
the same structs. `execute` runs any of them against the Node; what differs between
interfaces (whether a send is awaited, whether slow work runs in the background, how
a passphrase is asked) is a `Session` method each interface may override. Adding a
command: its struct, its slash parser in `SLASH`, its branch in `execute`, its `HELP` line.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Coroutine
from typing import Annotated, Any, ClassVar

import msgspec

from chinwag import events as ev
from chinwag import limits
from chinwag.errors import ChinwagError
from chinwag.node import Node

# --- the JSON-lines API's commands (docs/api.md, section 3) ---------------------


class Send(msgspec.Struct, frozen=True, tag_field="cmd", tag="send"):
    text: str
    room: str | None = None
    #: Whether the JSON-lines API writes what the command returns as its answer.
    answered: ClassVar[bool] = False


class PeersCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="peers"):
    answered: ClassVar[bool] = True


class NickCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="nick"):
    nick: str
    answered: ClassVar[bool] = False


class Quit(msgspec.Struct, frozen=True, tag_field="cmd", tag="quit"):
    answered: ClassVar[bool] = False


class HistoryCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="history"):
    room: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_HISTORY)] = 100
    before: str | None = None
    answered: ClassVar[bool] = True


class SearchCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="search"):
    text: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_HISTORY)] = 50
    answered: ClassVar[bool] = True


class InfoCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="info"):
    id: str
    answered: ClassVar[bool] = True


class JoinCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="join"):
    room: str
    #: From a slash command, "" means "ask for it" (`/join ROOM --passphrase`).
    passphrase: str | None = None
    answered: ClassVar[bool] = False


class LeaveCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="leave"):
    room: str
    answered: ClassVar[bool] = False


class RoomsCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="rooms"):
    answered: ClassVar[bool] = True


class DmCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="dm"):
    to: str
    text: str
    answered: ClassVar[bool] = False


class WhoisCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="whois"):
    who: str
    answered: ClassVar[bool] = True


class VerifyCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="verify"):
    who: str
    confirm: bool = False
    answered: ClassVar[bool] = True


class BlockCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="block"):
    who: str
    answered: ClassVar[bool] = True


class UnblockCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="unblock"):
    who: str
    answered: ClassVar[bool] = True


class SendFileCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="send_file"):
    to: str
    path: str
    answered: ClassVar[bool] = False


class AcceptFileCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="accept_file"):
    id: str
    dir: str | None = None
    answered: ClassVar[bool] = False


class RejectFileCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="reject_file"):
    id: str
    answered: ClassVar[bool] = False


class CancelFileCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="cancel_file"):
    id: str
    keep: bool = False
    answered: ClassVar[bool] = False


class FilesCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="files"):
    answered: ClassVar[bool] = True


Command = (
    Send
    | PeersCmd
    | NickCmd
    | Quit
    | HistoryCmd
    | SearchCmd
    | InfoCmd
    | JoinCmd
    | LeaveCmd
    | RoomsCmd
    | DmCmd
    | WhoisCmd
    | VerifyCmd
    | BlockCmd
    | UnblockCmd
    | SendFileCmd
    | AcceptFileCmd
    | RejectFileCmd
    | CancelFileCmd
    | FilesCmd
)
#: The command names, read off the command structs' tags (one place to add a command).
COMMANDS: frozenset[str] = frozenset(
    str(cmd.__struct_config__.tag) for cmd in typing.get_args(Command)
)

_decoder = msgspec.json.Decoder(Command)
_raw_decoder = msgspec.json.Decoder()


def parse_json(line: bytes) -> Command:
    """Decode one JSON command; raise ChinwagError with a readable message if invalid."""
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


# --- the executor -------------------------------------------------------------------


class Session:
    """One interface's side of `execute`; the defaults are those of line mode and the TUI."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def sent(self, fut: asyncio.Future[ev.NodeEvent], to_room: bool) -> None:
        """Take a posted message: by default wait until it is stored and sent, and for a
        room message also until congested peers have drained (as `Node.send`)."""
        await fut
        if to_room:
            await self.node.wait_drained()

    async def slow(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run a slow command (hashing a file to offer); by default wait for it."""
        await coro

    async def ask_secret(self, room: str) -> str | None:
        """Return a passphrase for `room` asked from the user (None: the user cancelled).

        By default nothing is asked: the empty passphrase goes to the node, which refuses it.
        """
        return ""


async def execute(node: Node, cmd: Command, session: Session) -> msgspec.Struct | None:
    """Run one command; return what the node answered (written to JSON clients when
    `cmd.answered`), or None. Raises ChinwagError for what the user got wrong; `Quit`
    is the caller's to handle and is refused here."""
    if isinstance(cmd, Send):
        await session.sent(node.post(cmd.text, cmd.room), True)
    elif isinstance(cmd, DmCmd):
        await session.sent(node.dm(cmd.to, cmd.text), False)
    elif isinstance(cmd, HistoryCmd):
        return node.history(cmd.room, cmd.limit, cmd.before)
    elif isinstance(cmd, SearchCmd):
        return node.search(cmd.text, cmd.limit)
    elif isinstance(cmd, InfoCmd):
        return node.info(cmd.id)
    elif isinstance(cmd, JoinCmd):
        passphrase = cmd.passphrase
        if passphrase == "":
            passphrase = await session.ask_secret(cmd.room)
            if passphrase is None:
                return None  # the user cancelled
        return await node.join(cmd.room, passphrase)
    elif isinstance(cmd, LeaveCmd):
        return node.leave(cmd.room)
    elif isinstance(cmd, RoomsCmd):
        return node.rooms()
    elif isinstance(cmd, WhoisCmd):
        return node.whois(cmd.who)
    elif isinstance(cmd, VerifyCmd):
        return node.verify(cmd.who, cmd.confirm)
    elif isinstance(cmd, BlockCmd | UnblockCmd):
        return node.block(cmd.who, isinstance(cmd, BlockCmd))
    elif isinstance(cmd, PeersCmd):
        return node.peers()
    elif isinstance(cmd, NickCmd):
        node.set_nick(cmd.nick)
    elif isinstance(cmd, SendFileCmd):
        # Hashing a big file takes a while: an API does not hold up the commands behind it.
        await session.slow(node.send_file(cmd.to, cmd.path))
    elif isinstance(cmd, AcceptFileCmd):
        return node.accept_file(cmd.id, cmd.dir)
    elif isinstance(cmd, RejectFileCmd):
        return node.reject_file(cmd.id)
    elif isinstance(cmd, CancelFileCmd):
        return node.cancel_file(cmd.id, cmd.keep)
    elif isinstance(cmd, FilesCmd):
        return node.files()
    elif isinstance(cmd, Quit):
        raise ChinwagError("quit is handled by the interface")
    else:  # pragma: no cover - mypy checks that every command has its branch
        typing.assert_never(cmd)
    return None
