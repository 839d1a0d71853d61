"""One command layer for every interface: command structs, their two parsers, one executor.

The JSON-lines API and the WebSocket decode commands from JSON (`parse_json`); line
mode, the TUI and the web page's composer parse slash commands (`parse_slash`) into
the same structs. `execute` runs any of them against the Node; what differs between
interfaces (whether a send is awaited, whether slow work runs in the background, how
a passphrase is asked) is a `Session` method each interface may override. Adding a
command: its struct, its slash parser in `SLASH`, its branch in `execute`, its `HELP` line
(tests/unit/test_ui_commands.py checks HELP and the web page's completion list against SLASH).
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, ClassVar

import msgspec

from chinwag import events as ev
from chinwag import limits
from chinwag.errors import ChinwagError, UsageError
from chinwag.node import Node

# --- the JSON-lines API's commands (docs/api.md, section 3) ---------------------


class Send(msgspec.Struct, frozen=True, tag_field="cmd", tag="send"):
    text: str
    room: str | None = None
    #: Whether the JSON-lines API writes what the command returns as its answer.
    answered: ClassVar[bool] = False


class PeersCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="peers"):
    answered: ClassVar[bool] = True


class MembersCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="members"):
    room: str | None = None
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


# --- reach: invites and contacts (issue 14, docs/reach.md) ---


class InviteCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="invite"):
    answered: ClassVar[bool] = True


class AddCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="add", omit_defaults=True):
    """An invite code, or a peer id alone (looked up on the DHT, docs/dht.md)."""

    code: str = ""
    peer_id: str = ""
    #: The node emits `contact_added` itself (every interface sees it).
    answered: ClassVar[bool] = False


class ContactsCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="contacts"):
    answered: ClassVar[bool] = True


class ForgetCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="forget"):
    peer: str
    answered: ClassVar[bool] = True


class ConnectCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="connect"):
    """Connect to `peer_id` through a circuit at relay `via` (docs/reach.md "Relays")."""

    peer_id: str
    via: str
    #: The relay's "host:port", if it is not a relay we are connected to.
    addr: str | None = None
    answered: ClassVar[bool] = False


class LookupCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="lookup"):
    """Look a peer's record up on the DHT now (docs/dht.md); the node emits `lookup`."""

    peer_id: str
    answered: ClassVar[bool] = False


class HeldCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="held"):
    """The private messages held on key changes (docs/rooms.md, "When a verified key changes")."""

    answered: ClassVar[bool] = True


class AcceptKeyCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="accept_key"):
    """Accept the new key of a verified nick (`who`: the nick or the new key); send the held."""

    who: str
    answered: ClassVar[bool] = True


class DiscardHeldCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="discard_held"):
    """Delete the messages held for the new key `who` names, unsent."""

    who: str
    answered: ClassVar[bool] = True


Command = (
    Send
    | PeersCmd
    | MembersCmd
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
    | InviteCmd
    | AddCmd
    | ContactsCmd
    | ForgetCmd
    | ConnectCmd
    | LookupCmd
    | HeldCmd
    | AcceptKeyCmd
    | DiscardHeldCmd
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


#: What a command returns: an event (the API's answer when `answered`), or the file
#: an accept or reject acted on (shown by the text interfaces only).
Answer = ev.NodeEvent | ev.FileInfo


async def execute(node: Node, cmd: Command, session: Session) -> Answer | None:
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
    elif isinstance(cmd, MembersCmd):
        return node.members(cmd.room)
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
    elif isinstance(cmd, InviteCmd):
        return node.invite()
    elif isinstance(cmd, AddCmd):
        if cmd.peer_id or _is_peer_id_like(cmd.code):
            return node.add_peer(cmd.peer_id or cmd.code)
        if not cmd.code:
            raise UsageError("add needs an invite code or a peer id")
        return node.add_contact(cmd.code)
    elif isinstance(cmd, LookupCmd):
        await session.slow(node.lookup(cmd.peer_id))
    elif isinstance(cmd, ContactsCmd):
        return node.contacts()
    elif isinstance(cmd, ForgetCmd):
        return node.forget_contact(cmd.peer)
    elif isinstance(cmd, ConnectCmd):
        # A relay may take seconds to answer (or never): not a reason to hold up the rest.
        await session.slow(node.connect_via(cmd.peer_id, cmd.via, cmd.addr))
    elif isinstance(cmd, HeldCmd):
        return node.held()
    elif isinstance(cmd, AcceptKeyCmd):
        return node.accept_key(cmd.who)
    elif isinstance(cmd, DiscardHeldCmd):
        return node.discard_held(cmd.who)
    elif isinstance(cmd, Quit):
        raise ChinwagError("quit is handled by the interface")
    else:  # pragma: no cover - mypy checks that every command has its branch
        typing.assert_never(cmd)
    return None


# --- slash commands (line mode, the TUI, the web page's composer) --------------------


class HelpCmd(msgspec.Struct, frozen=True):
    """`/help`: the interface prints HELP."""


class IdCmd(msgspec.Struct, frozen=True):
    """`/id`: the interface prints our peer id and fingerprint."""


class SwitchCmd(msgspec.Struct, frozen=True):
    """`/switch ROOM`: where typed lines go, an interface's own state (`room` as typed)."""

    room: str


class BellCmd(msgspec.Struct, frozen=True):
    """`/bell [on|off]` (TUI only): None toggles."""

    on: bool | None


class KeysCmd(msgspec.Struct, frozen=True):
    """`/keys` (TUI only): the key-binding screen."""


#: Commands that only an interface can run (they touch its own state or print help).
LocalCommand = HelpCmd | IdCmd | SwitchCmd | BellCmd | KeysCmd
SlashCommand = Command | LocalCommand


def _usage(text: str) -> UsageError:
    return UsageError(f"usage: {text}")


def _nick(arg: str, _room: str) -> NickCmd:
    if not arg:
        raise _usage("/nick NAME")
    return NickCmd(nick=arg)


def _history(arg: str, room: str) -> HistoryCmd:
    if arg and not arg.isdigit():
        raise _usage("/history [N]")
    return HistoryCmd(room=room, limit=int(arg) if arg else 20)


def _info(arg: str, _room: str) -> InfoCmd:
    if not arg:
        raise _usage("/info MSGID")
    return InfoCmd(id=arg)


def _join(arg: str, _room: str) -> JoinCmd:
    name, _, rest = arg.partition(" ")
    flag, _, passphrase = rest.strip().partition(" ")
    # The flag is a word of its own: `--passphrasexyz` is a typo, not the passphrase "xyz".
    if not name or flag not in ("", "--passphrase"):
        raise _usage("/join ROOM [--passphrase [PASS]]")
    # `--passphrase` alone gives "": the interface asks for it.
    return JoinCmd(room=name, passphrase=passphrase.strip() if flag else None)


def _msg(arg: str, _room: str) -> DmCmd:
    who, _, text = arg.partition(" ")
    if not who or not text.strip():
        raise _usage("/msg NICK|PEERID TEXT")
    return DmCmd(to=who, text=text)


def _who(
    usage: str,
    make: Callable[[str], WhoisCmd | BlockCmd | UnblockCmd | AcceptKeyCmd | DiscardHeldCmd],
) -> _Parser:
    def parse(arg: str, _room: str) -> SlashCommand:
        if not arg:
            raise _usage(usage)
        return make(arg)

    return parse


def _verify(arg: str, _room: str) -> VerifyCmd:
    who, _, confirm = arg.partition(" ")
    if not who:
        raise _usage("/verify NICK|PEERID [yes]")
    return VerifyCmd(who=who, confirm=confirm.strip().lower() in ("yes", "y", "confirm"))


def _send_file(arg: str, _room: str) -> SendFileCmd:
    who, _, path = arg.partition(" ")
    if not who or not path.strip():
        raise _usage("/send NICK|PEERID|#ROOM PATH")
    return SendFileCmd(to=who, path=path.strip())


def _accept(arg: str, _room: str) -> AcceptFileCmd:
    ident, _, directory = arg.partition(" ")
    if not ident:
        raise _usage("/accept ID [DIR]")
    return AcceptFileCmd(id=ident, dir=directory.strip() or None)


def _reject(arg: str, _room: str) -> RejectFileCmd:
    if not arg:
        raise _usage("/reject ID")
    return RejectFileCmd(id=arg)


def _connect(arg: str, _room: str) -> ConnectCmd:
    parts = arg.split()
    if len(parts) > 2 and parts[1] == "via":  # "via" may be written, for reading aloud
        del parts[1]
    if len(parts) not in (2, 3):
        raise _usage("/connect WHO [via] RELAY [HOST:PORT]")
    return ConnectCmd(peer_id=parts[0], via=parts[1], addr=parts[2] if len(parts) == 3 else None)


def _cancel(arg: str, _room: str) -> CancelFileCmd:
    ident, _, flag = arg.partition(" ")
    if not ident or flag.strip() not in ("", "--keep"):
        raise _usage("/cancel ID [--keep]")
    return CancelFileCmd(id=ident, keep=flag.strip() == "--keep")


def _add(arg: str, _room: str) -> AddCmd:
    if not arg:
        raise _usage("/add CODE|PEER_ID")
    if _is_peer_id_like(arg):
        return AddCmd(peer_id=arg.strip())
    return AddCmd(code=arg)


def _is_peer_id_like(arg: str) -> bool:
    """Whether arg has the shape of a peer id (52 base32 characters), not of an invite code."""
    text = arg.strip()
    return len(text) == 52 and text.isascii() and text.isalnum()


def _forget(arg: str, _room: str) -> ForgetCmd:
    if not arg:
        raise _usage("/forget NICK|PEERID")
    return ForgetCmd(peer=arg)


def _bell(arg: str, _room: str) -> BellCmd:
    if arg not in ("", "on", "off"):
        raise _usage("/bell [on|off]")
    return BellCmd(on=None if not arg else arg == "on")


#: A slash command's parser: (its argument, stripped; the room typed in) -> its struct.
_Parser = Callable[[str, str], SlashCommand]

#: Every slash command, in help order: name -> parser.
SLASH: dict[str, _Parser] = {
    "help": lambda _arg, _room: HelpCmd(),
    "peers": lambda _arg, _room: PeersCmd(),
    "members": lambda arg, room: MembersCmd(room=arg or room),
    "nick": _nick,
    "id": lambda _arg, _room: IdCmd(),
    "quit": lambda _arg, _room: Quit(),
    "history": _history,
    "search": lambda arg, _room: SearchCmd(text=arg),
    "info": _info,
    "join": _join,
    "leave": lambda arg, room: LeaveCmd(room=arg or room),
    "rooms": lambda _arg, _room: RoomsCmd(),
    "switch": lambda arg, _room: SwitchCmd(room=arg),
    "msg": _msg,
    "whois": _who("/whois NICK|PEERID", lambda who: WhoisCmd(who=who)),
    "verify": _verify,
    "acceptkey": _who("/acceptkey NICK|PEERID", lambda who: AcceptKeyCmd(who=who)),
    "discardheld": _who("/discardheld NICK|PEERID", lambda who: DiscardHeldCmd(who=who)),
    "held": lambda _arg, _room: HeldCmd(),
    "block": _who("/block NICK|PEERID", lambda who: BlockCmd(who=who)),
    "unblock": _who("/unblock NICK|PEERID", lambda who: UnblockCmd(who=who)),
    "send": _send_file,
    "accept": _accept,
    "reject": _reject,
    "files": lambda _arg, _room: FilesCmd(),
    "cancel": _cancel,
    "invite": lambda _arg, _room: InviteCmd(),
    "add": _add,
    "lookup": lambda arg, _room: LookupCmd(peer_id=arg.strip()),
    "contacts": lambda _arg, _room: ContactsCmd(),
    "forget": _forget,
    "connect": _connect,
}
#: Slash commands of the terminal UI only (they drive its screen).
TUI_SLASH: dict[str, _Parser] = {
    "bell": _bell,
    "keys": lambda _arg, _room: KeysCmd(),
}


def slash_names(tui: bool = False) -> list[str]:
    """Return the slash command names (without the slash) of line mode, or of the TUI."""
    return list(SLASH) + (list(TUI_SLASH) if tui else [])


def parse_slash(line: str, room: str, tui: bool = False) -> SlashCommand:
    """Parse one `/command args` line typed in `room`; raise ChinwagError (usage) if invalid."""
    name, _, arg = line[1:].partition(" ")
    parse = SLASH.get(name.lower()) or (TUI_SLASH.get(name.lower()) if tui else None)
    if parse is None:
        raise ChinwagError(f"unknown command /{name[:20]}; try /help")
    return parse(arg.strip(), room)


HELP = """commands:
  /help            this help
  /peers           connected peers (nick, short id, address, connected since)
  /members [ROOM]  members of the room, also those reached through others (online or not)
  /nick NAME       change your nick
  /id              your peer id and fingerprint
  /join ROOM [--passphrase [PASS]]
                   join (or create) a room; with a passphrase, a private room
  /leave ROOM      leave a room
  /rooms           rooms on the network, with members online
  /switch ROOM     send what you type to another joined room
  /msg WHO TEXT    private message (end-to-end encrypted) to a nick or peer id
  /whois WHO       full peer id, fingerprint, verified or not
  /verify WHO [yes]  safety number to compare aloud; "yes" marks the peer verified
  /acceptkey WHO   a verified nick has a new key: make it the verified one, send the held
  /discardheld WHO delete, unsent, the private messages held for a new key
  /held            private messages held while a verified nick's key changed
  /block WHO, /unblock WHO   hide (and do not store) a peer's messages
  /history [N]     the last N messages of the room (default 20)
  /search TEXT     messages containing TEXT
  /info MSGID      who holds a message (ids are shown as [abcd1234] after yours)
  /send WHO|#ROOM PATH   offer a file to a peer or to a room
  /accept ID [DIR] fetch an offered file (into DIR, default your downloads folder)
  /reject ID       decline an offered file
  /files           offers and transfers with their state
  /cancel ID [--keep]   stop a transfer (--keep keeps the partial data) or withdraw your offer
  /invite          your invite code: give it to a friend elsewhere, who types /add CODE
  /add CODE        make the peer of an invite code a contact and connect to it
  /add PEER_ID     make a peer known only by its id a contact: found on the DHT
  /lookup PEER_ID  find a peer's record on the DHT (where it says it can be reached)
  /contacts        your contacts: online or not, how they are reached, last seen
  /forget WHO      remove a contact (it is no longer dialled)

  /connect WHO [via] RELAY [HOST:PORT]   reach a peer through a relay's circuit
  /quit            leave (peers see you go at once)
anything else is sent to the room"""

TUI_HELP = """in this terminal UI also:
  /bell [on|off]   ring the terminal bell on private messages and mentions
  /keys            the key bindings (also F1)
  /switch @NICK    open the private conversation with NICK"""
