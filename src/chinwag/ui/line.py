"""The line-mode CLI: a prompt, coloured incoming messages, slash commands.

In a terminal it uses prompt_toolkit (line editing, history, output printed
above the prompt); otherwise it reads plain lines and prints plain text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import sys
import unicodedata
from collections.abc import Awaitable, Callable

from chinwag import events as ev
from chinwag.crypto.identity import fingerprint, short_id
from chinwag.errors import ChinwagError
from chinwag.node import Node
from chinwag.ui.clock import local_datetime
from chinwag.ui.stdio import LineTooLong, silence_stdout, stdin_lines
from chinwag.units import human_size

log = logging.getLogger(__name__)

#: Seconds between two progress lines of a transfer when the output is not a terminal.
_PIPED_PROGRESS_EVERY_S = 2.0
_COLOURS = ["31", "32", "33", "34", "35", "36", "91", "92", "93", "94", "95", "96"]


def _is_control(char: str) -> bool:
    # Cc, Cf (bidi overrides), Co, Cs, Cn: nothing a peer may use to drive our terminal.
    return char not in "\t\n" and unicodedata.category(char)[0] == "C"


HELP = """commands:
  /help            this help
  /peers           connected peers (nick, short id, address, connected since)
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
  /block WHO, /unblock WHO   hide (and do not store) a peer's messages
  /history [N]     the last N messages of the room (default 20)
  /search TEXT     messages containing TEXT
  /info MSGID      who holds a message (ids are shown as [abcd1234] after yours)
  /send WHO|#ROOM PATH   offer a file to a peer or to a room
  /accept ID [DIR] fetch an offered file (into DIR, default your downloads folder)
  /reject ID       decline an offered file
  /files           offers and transfers with their state
  /cancel ID [--keep]   stop a transfer (--keep keeps the partial data) or withdraw your offer
  /quit            leave (peers see you go at once)
anything else is sent to the room"""


def clean(text: str) -> str:
    """Strip terminal control characters so a peer cannot drive our terminal."""
    if text.isprintable():  # the common case: nothing to strip
        return text
    return "".join(c for c in text if not _is_control(c))


def nick_colour(peer_id: str) -> str:
    """Return a stable ANSI colour code for a peer."""
    return _COLOURS[hashlib.sha256(peer_id.encode()).digest()[0] % len(_COLOURS)]


class LineUI:
    """Interactive line-mode chat over a Node."""

    def __init__(
        self,
        node: Node,
        colour: bool | None = None,
        sink: Callable[[str], None] | None = None,
    ) -> None:
        """With a `sink`, output lines go to it (uncoloured) and node events are not followed:
        the caller (the TUI) shows events itself and only runs commands through handle()."""
        self.node = node
        self.interactive = sink is None and os.isatty(0) and os.isatty(1)
        self.colour = self.interactive if colour is None else colour
        self._print: Callable[[str], None] = sink or self._plain_print
        self._stdout_gone = False
        self._delivered: list[ev.Delivered] = []
        #: Where typed lines go.
        self.room = "general"
        if sink is None:
            node.subscribe(self.on_event)
        self._commands: dict[str, Callable[[str], Awaitable[bool]]] = {
            "help": self._help,
            "peers": self._peers,
            "nick": self._nick,
            "id": self._id,
            "quit": self._quit,
            "history": self._history,
            "search": self._search,
            "info": self._info_cmd,
            "join": self._join,
            "leave": self._leave,
            "rooms": self._rooms,
            "switch": self._switch,
            "msg": self._msg,
            "whois": self._whois,
            "verify": self._verify,
            "block": self._block,
            "unblock": self._unblock,
            "send": self._send_file,
            "accept": self._accept,
            "reject": self._reject,
            "files": self._files,
            "cancel": self._cancel,
        }
        #: Transfers under way: id -> latest progress, shown in the toolbar.
        self._transfers: dict[str, ev.FileProgress] = {}
        self._file_names: dict[str, str] = {}
        self._own_files: set[str] = set()
        self._progress_printed: dict[str, float] = {}

    @property
    def command_names(self) -> list[str]:
        """Return the names of the slash commands this UI runs (without the slash)."""
        return list(self._commands)

    # --- output ---------------------------------------------------------

    def _plain_print(self, line: str) -> None:
        if self._stdout_gone:
            return
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            # The reader went away (`chinwag --plain | head -1`): carry on without output,
            # like the JSON-lines API, rather than a traceback per line.
            self._stdout_gone = True
            log.debug("standard output is gone; printing nothing more")
            silence_stdout()

    def _paint(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def format_message(self, event: ev.Message | ev.DirectMessage, mark: str = "") -> str:
        """Return one message as a display line: time, room, nick, short id, text, marks."""
        stamp = local_datetime(event.ts)
        when = stamp.strftime("%H:%M:%S" if stamp.date() == dt.date.today() else "%m-%d %H:%M")
        who = self._paint(nick_colour(event.peer_id), clean(event.nick))
        sid = self._paint("2", short_id(event.peer_id))
        if isinstance(event, ev.DirectMessage):
            room = self._paint(
                "35", f"[private to {short_id(event.to)}] " if event.own else "[private] "
            )
        else:
            room = "" if event.room == self.room else f"#{event.room} "
        text = clean(event.text).replace("\n", "\n    ")
        late = self._paint("33", " (late)") if event.late else ""
        tail = self._paint("2", f"  [{event.id[:8]}{mark}]") if event.own or mark else ""
        return f"{self._paint('2', when)} {room}{who} {sid}: {text}{late}{tail}"

    def on_event(self, event: ev.NodeEvent) -> None:
        if isinstance(event, ev.Message | ev.DirectMessage):
            self._print(self.format_message(event))
        elif isinstance(event, ev.Alert):
            self._print(self._paint("1;31", f"!!! WARNING: {event.message}"))
        elif isinstance(event, ev.Joined):
            self.room = event.room
            what = "private room" if event.private else "room"
            self._info(f"joined {what} #{event.room}; messages you type now go there")
        elif isinstance(event, ev.Left):
            if self.room == event.room:
                self.room = "general"
            self._info(f"left #{event.room}")
        elif isinstance(event, ev.Delivered):
            # Receipts arrive in batches; one summary line per batch, not one per message.
            self._delivered.append(event)
            if len(self._delivered) == 1:
                asyncio.get_running_loop().call_later(0.3, self._flush_delivered)
        elif isinstance(event, ev.Gap):
            lo, hi = event.missing
            what = f"{lo}" if lo == hi else f"{lo}-{hi}"
            self._info(f"missing {what} from {short_id(event.peer_id)} in #{event.room}; repairing")
        elif isinstance(event, ev.GapFilled):
            self._info(f"gap from {short_id(event.peer_id)} in #{event.room} repaired")
        elif isinstance(event, ev.PeerJoined):
            self._info(
                f"{clean(event.nick)} ({short_id(event.peer_id)}) joined from {event.address}"
            )
        elif isinstance(event, ev.PeerLeft):
            self._info(
                f"{clean(event.nick)} ({short_id(event.peer_id)}) left: {clean(event.reason)}"
            )
        elif isinstance(event, ev.NickChanged):
            if event.own:
                self._info(f"you are now known as {event.nick}")
            else:
                self._info(
                    f"{clean(event.old)} ({short_id(event.peer_id)}) is now {clean(event.nick)}"
                )
        elif isinstance(event, ev.FileOffer | ev.FileProgress | ev.FileDone):
            self._file_event(event)
        elif isinstance(event, ev.FileFailed):
            self._transfers.pop(event.id, None)
            self._print(self._paint("31", f"* file {event.id[:8]}: {clean(event.reason)}"))
        elif isinstance(event, ev.FileStalled):
            self._info(f"file {event.id[:8]} stalled: {clean(event.reason)}")
        elif isinstance(event, ev.Error):
            self._print(self._paint("31", f"error: {event.message}"))
        elif isinstance(event, ev.Ready):
            self.show_history(20)
            self._info(
                f"you are {event.nick} ({short_id(event.peer_id)}), listening on port {event.port};"
                " type /help for commands"
            )

    def _file_event(self, event: ev.FileOffer | ev.FileProgress | ev.FileDone) -> None:
        if isinstance(event, ev.FileOffer):
            self._file_names[event.id] = clean(event.name)
            if event.own:
                self._own_files.add(event.id)
                self._info(f"offered {clean(event.name)!r} [file {event.id[:8]}]; /files shows it")
                return
            where = f" in #{event.room}" if event.room else ""
            self._print(
                self._paint(
                    "1;36",
                    f"* {clean(event.nick)} ({short_id(event.peer_id)}) offers "
                    f"{clean(event.name)!r}{where}: {human_size(event.size)}, "
                    f"sha256 {event.sha256[:16]}...",
                )
            )
            self._info(f"/accept {event.id[:8]} to fetch it, /reject {event.id[:8]} to decline")
        elif isinstance(event, ev.FileProgress):
            name = self._file_names.get(event.id, "file " + event.id[:8])
            if event.bytes >= event.total:
                self._transfers.pop(event.id, None)
            else:
                self._transfers[event.id] = event
            if not self.interactive:
                # Without a toolbar, a line now and then (not one per event).
                now = asyncio.get_running_loop().time()
                if now - self._progress_printed.get(event.id, -1e9) >= _PIPED_PROGRESS_EVERY_S:
                    self._progress_printed[event.id] = now
                    self._info(progress_line(name, event))
        else:
            self._transfers.pop(event.id, None)
            self._progress_printed.pop(event.id, None)
            if event.id in self._own_files:
                name = self._file_names.get(event.id, event.id[:8])
                self._info(f"{name!r} [file {event.id[:8]}] was received whole")
            else:
                self._info(f"saved file {event.id[:8]} at {clean(event.path)} (sha256 verified)")

    def toolbar(self) -> str:
        """Return the status line of transfers under way (empty when there are none)."""
        return "  ".join(
            progress_line(self._file_names.get(fid, fid[:8]), p)
            for fid, p in self._transfers.items()
        )

    def _flush_delivered(self) -> None:
        batch, self._delivered = self._delivered, []
        if not batch:
            return
        last = batch[-1]
        ids = ", ".join(d.id[:8] for d in batch[-3:])
        more = f" and {len(batch) - 3} more" if len(batch) > 3 else ""
        self._info(f"\u2713 {ids}{more} held by {last.count}/{last.of} peers")

    def flush(self) -> None:
        """Print anything still pending (receipt summaries)."""
        self._flush_delivered()

    def _info(self, text: str) -> None:
        self._print(self._paint("2", f"* {text}"))

    # --- input ----------------------------------------------------------

    async def run(self) -> None:
        """Read and execute lines until /quit or end of input."""
        if self.interactive:
            await self._run_prompt()
        else:
            async for line in stdin_lines():
                if isinstance(line, LineTooLong):
                    self.node.error("line too long")
                    continue
                if not await self.handle(line.decode("utf-8", "replace")):
                    return

    async def _run_prompt(self) -> None:
        from prompt_toolkit import PromptSession, print_formatted_text
        from prompt_toolkit.formatted_text import ANSI
        from prompt_toolkit.patch_stdout import patch_stdout

        session: PromptSession[str] = PromptSession(
            bottom_toolbar=lambda: self.toolbar() or None, refresh_interval=0.5
        )
        self._print = lambda line: print_formatted_text(ANSI(line))
        with patch_stdout(raw=True):
            while True:
                try:
                    line = await session.prompt_async(f"{self.node.nick} #{self.room}> ")
                except (EOFError, KeyboardInterrupt):
                    return
                if not await self.handle(line):
                    return

    async def handle(self, line: str) -> bool:
        """Execute one input line; return False to quit."""
        if not line.strip():
            return True
        try:
            if line.startswith("/") and not line.startswith("//"):
                name, _, arg = line[1:].partition(" ")
                command = self._commands.get(name.lower())
                if command is None:
                    raise ChinwagError(f"unknown command /{name[:20]}; try /help")
                return await command(arg.strip())
            await self.node.send(line[1:] if line.startswith("//") else line, self.room)
        except ChinwagError as exc:
            self.node.error(str(exc))
        return True

    async def _help(self, _arg: str) -> bool:
        self._print(HELP)
        return True

    async def _peers(self, _arg: str) -> bool:
        peers = self.node.peers().peers
        if not peers:
            self._info("no peers connected")
        for p in peers:
            since = local_datetime(p.since).strftime("%H:%M:%S")
            rtt = "" if p.rtt_ms is None else f", rtt {p.rtt_ms:.1f} ms"
            self._info(f"{clean(p.nick)} {short_id(p.peer_id)} {p.address} since {since}{rtt}")
        return True

    async def _nick(self, arg: str) -> bool:
        if not arg:
            raise ChinwagError("usage: /nick NAME")
        self.node.set_nick(arg)
        return True

    async def _id(self, _arg: str) -> bool:
        pid = self.node.identity.peer_id
        self._info(f"peer id {pid}")
        self._info(f"fingerprint {fingerprint(pid)}")
        return True

    async def _quit(self, _arg: str) -> bool:
        return False

    async def _history(self, arg: str) -> bool:
        if arg and not arg.isdigit():
            raise ChinwagError("usage: /history [N]")
        self.show_history(int(arg) if arg else 20)
        return True

    def show_history(self, limit: int) -> None:
        """Print the last messages of the room, with delivery marks on our own."""
        for msg in self.node.history(self.room, limit).messages:
            self._print(self.format_message(msg, self._mark(msg)))

    def _mark(self, msg: ev.Message | ev.DirectMessage) -> str:
        if not msg.own:
            return ""
        count, of = self.node.delivery_of(msg)
        return f" \u2713 {count}/{of}" if of else " (not delivered yet)"

    async def _search(self, arg: str) -> bool:
        result = self.node.search(arg)
        if not result.messages:
            self._info(f"nothing contains {arg!r}")
        for msg in result.messages:
            self._print(self.format_message(msg, self._mark(msg)))
        return True

    async def _join(self, arg: str) -> bool:
        name, _, rest = arg.partition(" ")
        if not name:
            raise ChinwagError("usage: /join ROOM [--passphrase [PASS]]")
        rest = rest.strip()
        passphrase: str | None = None
        if rest.startswith("--passphrase"):
            passphrase = rest[len("--passphrase") :].strip() or await self._ask_secret(
                f"passphrase for #{name}: "
            )
        elif rest:
            raise ChinwagError("usage: /join ROOM [--passphrase [PASS]]")
        await self.node.join(name, passphrase)
        self.show_history(20)
        return True

    async def _ask_secret(self, prompt: str) -> str:
        if not self.interactive:
            raise ChinwagError("give the passphrase on the line: /join ROOM --passphrase PASS")
        from prompt_toolkit import PromptSession

        session: PromptSession[str] = PromptSession()
        return await session.prompt_async(prompt, is_password=True)

    async def _leave(self, arg: str) -> bool:
        self.node.leave(arg or self.room)
        return True

    async def _rooms(self, _arg: str) -> bool:
        for room in self.node.rooms().rooms:
            mark = "*" if room.name == self.room else (" " if room.joined else "-")
            self._info(f"{mark} #{clean(room.name)}  {room.members} online")
        return True

    async def _switch(self, arg: str) -> bool:
        name = arg.lstrip("#").lower()
        if not any(r.name == name and r.joined for r in self.node.rooms().rooms):
            raise ChinwagError(f"you are not in #{name}; /join it first")
        self.room = name
        self._info(f"now typing in #{name}")
        return True

    async def _msg(self, arg: str) -> bool:
        who, _, text = arg.partition(" ")
        if not who or not text.strip():
            raise ChinwagError("usage: /msg NICK|PEERID TEXT")
        await self.node.dm(who, text)
        return True

    async def _whois(self, arg: str) -> bool:
        if not arg:
            raise ChinwagError("usage: /whois NICK|PEERID")
        self._print_whois(self.node.whois(arg))
        return True

    def _print_whois(self, w: ev.Whois) -> None:
        state = "verified" if w.verified else "not verified"
        extra = ", blocked" if w.blocked else ""
        self._info(
            f"{clean(w.nick)}: {w.peer_id} ({state}{extra}, {'online' if w.online else 'offline'})"
        )
        self._info(f"fingerprint {w.fingerprint}")

    async def _verify(self, arg: str) -> bool:
        who, _, confirm = arg.partition(" ")
        if not who:
            raise ChinwagError("usage: /verify NICK|PEERID [yes]")
        w = self.node.verify(who, confirm.strip().lower() in ("yes", "y", "confirm"))
        self._info(f"safety number with {clean(w.nick)}: {w.safety_number}")
        if w.verified:
            self._info(f"{clean(w.nick)} ({short_id(w.peer_id)}) is verified")
        else:
            self._info(f"compare it aloud; if it matches, type /verify {who} yes")
        return True

    async def _block(self, arg: str) -> bool:
        if not arg:
            raise ChinwagError("usage: /block NICK|PEERID")
        w = self.node.block(arg, True)
        self._info(f"blocked {clean(w.nick)} ({short_id(w.peer_id)})")
        return True

    async def _unblock(self, arg: str) -> bool:
        if not arg:
            raise ChinwagError("usage: /unblock NICK|PEERID")
        w = self.node.block(arg, False)
        self._info(f"unblocked {clean(w.nick)} ({short_id(w.peer_id)})")
        return True

    async def _info_cmd(self, arg: str) -> bool:
        if not arg:
            raise ChinwagError("usage: /info MSGID")
        info = self.node.info(arg)
        who = ", ".join(f"{clean(h.nick)} {short_id(h.peer_id)}" for h in info.holders)
        self._info(
            f"{info.id} by {short_id(info.peer_id)} #{info.room} seq {info.seq}: "
            f"held by {len(info.holders)} peer(s){': ' + who if who else ''}"
        )
        return True

    # --- files ----------------------------------------------------------

    async def _send_file(self, arg: str) -> bool:
        who, _, path = arg.partition(" ")
        if not who or not path.strip():
            raise ChinwagError("usage: /send NICK|PEERID|#ROOM PATH")
        self._info(f"hashing {path.strip()} ...")
        await self.node.send_file(who, path.strip())
        return True

    async def _accept(self, arg: str) -> bool:
        ident, _, directory = arg.partition(" ")
        if not ident:
            raise ChinwagError("usage: /accept ID [DIR]")
        info = self.node.accept_file(ident, directory.strip() or None)
        self._file_names[info.id] = clean(info.name)
        self._info(f"fetching {clean(info.name)!r} ({human_size(info.size)})")
        return True

    async def _reject(self, arg: str) -> bool:
        if not arg:
            raise ChinwagError("usage: /reject ID")
        info = self.node.reject_file(arg)
        self._info(f"declined {clean(info.name)!r}")
        return True

    async def _cancel(self, arg: str) -> bool:
        ident, _, flag = arg.partition(" ")
        if not ident or flag.strip() not in ("", "--keep"):
            raise ChinwagError("usage: /cancel ID [--keep]")
        self.node.cancel_file(ident, keep=flag.strip() == "--keep")
        return True

    async def _files(self, _arg: str) -> bool:
        files = self.node.files().files
        if not files:
            self._info("no file offers yet; /send WHO PATH offers one")
        for f in files:
            arrow = "\u2191" if f.direction == "out" else "\u2193"
            if f.room:
                who = f"#{f.room}"
            elif f.direction == "out":  # our private offer: name its recipient
                who = "to " + clean(self.node.whois(f.peer_id).nick)
            else:
                who = "from " + clean(f.nick)
            done = f" {100 * f.bytes // f.size}%" if f.size and f.state != "done" else ""
            where = f" -> {clean(f.path)}" if f.path and f.direction == "in" else ""
            self._info(
                f"{arrow} [{f.id[:8]}] {clean(f.name)!r} {human_size(f.size)} {who}: "
                f"{f.state}{done}{where}"
            )
        return True


def progress_line(name: str, p: ev.FileProgress) -> str:
    """Return `name 45% 12.0 MB/26.7 MB 110.2 MB/s 0:00:05 left` for a transfer."""
    percent = 100 * p.bytes // p.total if p.total else 100
    left = ""
    if p.rate > 0 and p.total > p.bytes:
        seconds = int((p.total - p.bytes) / p.rate)
        left = f" {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} left"
    rate = f" {human_size(p.rate)}/s" if p.rate > 0 else ""
    return f"{clean(name)} {percent}% {human_size(p.bytes)}/{human_size(p.total)}{rate}{left}"
