"""The line-mode CLI: a prompt, coloured incoming messages, slash commands.

In a terminal it uses prompt_toolkit (line editing, history, output printed
above the prompt); otherwise it reads plain lines and prints plain text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.identity import short_id
from chinwag.errors import ChinwagError
from chinwag.node import Node
from chinwag.ui import commands as c
from chinwag.ui import format as fmt
from chinwag.ui.commands import HELP
from chinwag.ui.format import clean, nick_colour, progress_line
from chinwag.ui.stdio import LineTooLong, silence_stdout, stdin_lines
from chinwag.units import human_size

log = logging.getLogger(__name__)

#: Seconds between two progress lines of a transfer when the output is not a terminal.
_PIPED_PROGRESS_EVERY_S = 2.0
#: Kept importable from here (they moved to ui/commands.py and ui/format.py).
__all__ = ["HELP", "LineUI", "clean", "nick_colour", "progress_line"]


class LineUI(c.Session):
    """Interactive line-mode chat over a Node."""

    def __init__(
        self,
        node: Node,
        colour: bool | None = None,
        sink: Callable[[str], None] | None = None,
        ask_secret: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        """With a `sink`, output lines go to it (uncoloured) and node events are not followed:
        the caller (the TUI) shows events itself and only runs commands through handle().
        `ask_secret(room)` asks for a passphrase (the TUI's own dialog)."""
        super().__init__(node)
        self._ask = ask_secret
        self.interactive = sink is None and os.isatty(0) and os.isatty(1)
        self.colour = self.interactive if colour is None else colour
        self._print: Callable[[str], None] = sink or self._plain_print
        self._stdout_gone = False
        self._delivered: list[ev.Delivered] = []
        #: Where typed lines go.
        self.room = "general"
        if sink is None:
            node.subscribe(self.on_event)
        #: Transfers under way: id -> latest progress, shown in the toolbar.
        self._transfers: dict[str, ev.FileProgress] = {}
        #: File id -> name, least recently used first (bounded: LINE_MAX_FILE_NAMES).
        self._file_names: dict[str, str] = {}
        #: Ids of our own offers among _file_names (dropped with their name).
        self._own_files: set[str] = set()
        self._progress_printed: dict[str, float] = {}

    @property
    def command_names(self) -> list[str]:
        """Return the names of the slash commands this UI runs (without the slash)."""
        return c.slash_names()

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
        return fmt.message_line(event, self.room, self._paint, mark)

    def on_event(self, event: ev.NodeEvent) -> None:
        if isinstance(event, ev.Message | ev.DirectMessage):
            self._print(self.format_message(event))
        elif isinstance(event, ev.Alert):
            self._print(self._paint("1;31", f"!!! WARNING: {event.message}"))
        elif isinstance(event, ev.DmHeld):
            self._print(self._paint("33", f"* {fmt.held_line(event)}"))
        elif isinstance(event, ev.Joined):
            self.room = event.room
            self._info(fmt.joined_line(event))
        elif isinstance(event, ev.Left):
            self._info(fmt.left_line(event))
            if self.room == event.room:
                # Type into a room we are still in (general first), not into the one just left.
                joined = [r.name for r in self.node.rooms().rooms if r.joined]
                self.room = "general" if "general" in joined or not joined else joined[0]
                if joined:
                    self._info(f"now typing in #{self.room}")
        elif isinstance(event, ev.Delivered):
            # Receipts arrive in batches; one summary line per batch, not one per message.
            self._delivered.append(event)
            if len(self._delivered) == 1:
                asyncio.get_running_loop().call_later(0.3, self._flush_delivered)
        elif isinstance(event, ev.Gap):
            what = fmt.gap_range(event)
            self._info(f"missing {what} from {short_id(event.peer_id)} in #{event.room}; repairing")
        elif isinstance(event, ev.GapFilled):
            self._info(f"gap from {short_id(event.peer_id)} in #{event.room} repaired")
        elif isinstance(event, ev.PeerJoined):
            self._info(fmt.peer_joined_line(event))
        elif isinstance(event, ev.PeerLeft):
            self._info(fmt.peer_left_line(event))
        elif isinstance(event, ev.PathChanged):
            self._info(fmt.path_line(event))
        elif isinstance(event, ev.NickChanged):
            self._info(fmt.nick_changed_line(event))
        elif isinstance(event, ev.ContactAdded):
            self._info(fmt.contact_added_line(event))
        elif isinstance(event, ev.Lookup):
            self._info(fmt.lookup_line(event))
        elif isinstance(event, ev.FileOffer | ev.FileProgress | ev.FileDone):
            self._file_event(event)
        elif isinstance(event, ev.FileFailed):
            self._transfers.pop(event.id, None)
            self._progress_printed.pop(event.id, None)
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
            self._remember_name(event.id, clean(event.name))
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
            name = self._name(event.id, "file " + event.id[:8])
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
                name = self._name(event.id, event.id[:8])
                self._info(f"{name!r} [file {event.id[:8]}] was received whole")
            else:
                self._info(f"saved file {event.id[:8]} at {clean(event.path)} (sha256 verified)")

    def _remember_name(self, fid: str, name: str) -> None:
        """Note a file's name as the most recent; forget the least recently used past the bound."""
        self._file_names.pop(fid, None)
        self._file_names[fid] = name
        while len(self._file_names) > limits.LINE_MAX_FILE_NAMES:
            oldest = next(iter(self._file_names))
            del self._file_names[oldest]
            self._own_files.discard(oldest)

    def _name(self, fid: str, default: str) -> str:
        """Return a file's remembered name (now the most recent), or default."""
        name = self._file_names.pop(fid, None)
        if name is None:
            return default
        self._file_names[fid] = name
        return name

    def toolbar(self) -> str:
        """Return the status line of transfers under way (empty when there are none)."""
        return "  ".join(
            progress_line(self._name(fid, fid[:8]), p) for fid, p in self._transfers.items()
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
                return await self.run_command(c.parse_slash(line, self.room))
            text = line[1:] if line.startswith("//") else line
            await c.execute(self.node, c.Send(text=text, room=self.room), self)
        except ChinwagError as exc:
            self.node.error(str(exc))
        return True

    async def run_command(self, cmd: c.SlashCommand) -> bool:
        """Run one parsed slash command and print what it answers; return False to quit.

        Raises ChinwagError for what the user got wrong."""
        if isinstance(cmd, c.Quit):
            return False
        if isinstance(cmd, c.HelpCmd):
            self._print(HELP)
        elif isinstance(cmd, c.IdCmd):
            for text in fmt.id_lines(self.node.identity.peer_id):
                self._info(text)
        elif isinstance(cmd, c.SwitchCmd):
            self._switch(cmd.room)
        elif isinstance(cmd, c.BellCmd | c.KeysCmd):
            raise ChinwagError("that command is only in the terminal UI; try /help")
        else:
            for text in fmt.before_lines(cmd):
                self._info(text)
            answer = await c.execute(self.node, cmd, self)
            if isinstance(answer, ev.History | ev.SearchResult):
                self._print_messages(answer.messages)
            if isinstance(answer, ev.FileInfo) and isinstance(cmd, c.AcceptFileCmd):
                self._remember_name(answer.id, clean(answer.name))
            for text in fmt.answer_lines(cmd, answer, self.node, self.room):
                self._info(text)
            if isinstance(cmd, c.JoinCmd):
                if answer is None:
                    self._info("join cancelled")
                else:
                    self.show_history(20)
        return True

    def show_history(self, limit: int) -> None:
        """Print the last messages of the room, with delivery marks on our own."""
        self._print_messages(self.node.history(self.room, limit).messages)

    def _print_messages(self, messages: list[ev.Message | ev.DirectMessage]) -> None:
        for msg in messages:
            self._print(self.format_message(msg, fmt.delivery_mark(self.node, msg)))

    async def ask_secret(self, room: str) -> str | None:
        """Ask for a room's passphrase at the prompt (or the TUI's dialog); None if cancelled."""
        if self._ask is not None:
            return await self._ask(room)
        if not self.interactive:
            raise ChinwagError("give the passphrase on the line: /join ROOM --passphrase PASS")
        from prompt_toolkit import PromptSession

        session: PromptSession[str] = PromptSession()
        try:
            secret = await session.prompt_async(f"passphrase for #{room}: ", is_password=True)
        except (EOFError, KeyboardInterrupt):
            # Ctrl-C or Ctrl-D here cancels the join, as Escape does in the TUI's dialog;
            # it used to end the whole program (exit status 130, no goodbye to peers).
            return None
        return secret or None  # nothing typed: cancelled, as in the TUI

    def _switch(self, arg: str) -> None:
        name = arg.lstrip("#").lower()
        if not any(r.name == name and r.joined for r in self.node.rooms().rooms):
            raise ChinwagError(f"you are not in #{name}; /join it first")
        self.room = name
        self._info(f"now typing in #{name}")
