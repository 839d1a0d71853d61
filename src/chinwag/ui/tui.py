"""The full-screen terminal UI (Textual): rooms, messages, peers, files, one input line.

Theory of operation: the app owns the Node's lifecycle (it starts the node
when mounted and stops it on quit) and runs on the same asyncio loop. Node
events arrive through Node.subscribe and are queued; a timer applies the queue
at most every FLUSH_S, so a burst of incoming messages costs one redraw per
tick and typing never waits. Typed lines go through one worker in order:
slash commands run through the line CLI's command set (LineUI with a sink),
except those that drive the TUI's own state (/switch, /join, /quit, /bell,
/keys). Peer-supplied text is always cleaned and put into rich Text objects,
never into markup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len, set_cell_size
from rich.style import Style
from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical
from textual.markup import escape as markup_escape
from textual.widgets import Input, Static

from chinwag import events as ev
from chinwag.crypto.identity import short_id
from chinwag.errors import ChinwagError
from chinwag.node import Node
from chinwag.ui import commands as c
from chinwag.ui import format as fmt
from chinwag.ui.clock import local_datetime
from chinwag.ui.commands import HELP, TUI_HELP
from chinwag.ui.format import clean
from chinwag.ui.line import LineUI
from chinwag.ui.tui_view import Entry, MessageView
from chinwag.ui.tui_widgets import (
    KEYS,
    ChatInput,
    HelpScreen,
    RoomList,
    RoomRow,
    SecretScreen,
    paste_refusal,
)
from chinwag.units import human_size

log = logging.getLogger(__name__)

#: Slash commands that drive the screen itself: their errors are shown here only.
_OWN_COMMANDS = frozenset({"switch", "join", "quit", "bell", "keys", "help"})

#: Node events are applied to the screen at most this often (seconds).
FLUSH_S = 0.05
#: Messages read from the store per page (initial view and each scroll to the top).
PAGE = 200
#: The bell rings at most once per this many seconds.
BELL_EVERY_S = 1.0
#: Peer round-trip times are refreshed this often (seconds).
PEERS_EVERY_S = 2.0

#: Nick colours: mid-tones that read on dark and light backgrounds.
NICK_COLOURS = [
    "#d9534f",
    "#2e9e4f",
    "#c77c00",
    "#3a7bd5",
    "#a64dbf",
    "#13959e",
    "#c2466e",
    "#6f8f00",
    "#8a6fdf",
    "#b8632e",
]


def set_if_changed(widget: Static, content: Text | str) -> None:
    """Update a Static only if its content changed (an update costs a layout pass)."""
    if getattr(widget, "_chinwag_shown", None) != content:
        widget._chinwag_shown = content  # type: ignore[attr-defined]
        widget.update(content)


def nick_style(peer_id: str) -> Style:
    """Return the stable colour of a peer's nick."""
    digest = hashlib.sha256(peer_id.encode()).digest()
    return Style(color=NICK_COLOURS[digest[0] % len(NICK_COLOURS)], bold=True)


def fit(text: str, cells: int) -> str:
    """Return text cut to at most `cells` cells (at least 4), with … where it was cut."""
    cells = max(4, cells)
    return text if cell_len(text) <= cells else set_cell_size(text, cells - 1) + "…"


def progress_bar(done: int, total: int, width: int = 12) -> str:
    """Return a text progress bar."""
    filled = 0 if total <= 0 else min(width, done * width // total)
    return "█" * filled + "░" * (width - filled)


def eta(remaining: int, rate: float) -> str:
    """Return the time left at `rate` bytes/s (m:ss), or ? when not moving."""
    if rate <= 0:
        return "?"
    secs = int(remaining / rate)
    return (
        f"{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}"
        if secs >= 3600
        else (f"{secs // 60}:{secs % 60:02d}")
    )


@dataclass
class Peer:
    """What the peer list shows of one peer."""

    peer_id: str
    nick: str
    online: bool = False
    address: str = ""
    rtt_ms: float | None = None
    verified: bool = False
    #: Not connected, but its messages reach us through this peer (a peer id).
    via: str = ""
    #: Not connected, but a member of the room shown, online by its presence record.
    member: bool = False
    #: Connected through a relay circuit: the relay's peer id (docs/reach.md "Paths").
    relayed_via: str = ""


@dataclass
class Transfer:
    """One file offer or transfer, as the files panel shows it."""

    offer: ev.FileOffer
    state: str = "offered"
    done: int = 0
    rate: float = 0.0
    note: str = ""


class ChinwagApp(App[int]):
    """The chinwag terminal UI over one Node."""

    TITLE = "chinwag"
    #: Below 70 columns the peer list is hidden (Screen.-narrow); from 120 it is wider.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (70, "-normal"), (120, "-wide")]
    CSS_PATH = "tui.tcss"
    #: Ctrl+P is "previous room"; Textual's command palette would take it over a modal screen.
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        # Like every other terminal chat: Ctrl+C leaves (peers see the goodbye).
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("f1", "keys", "Keys"),
        Binding("f2", "toggle_theme", "Light/dark"),
        Binding("ctrl+n", "cycle_room(1)", "Next room", priority=True),
        Binding("ctrl+p", "cycle_room(-1)", "Previous room", priority=True),
        Binding("ctrl+o", "goto_mention", "Mentions", priority=True),
        Binding("pageup", "page(-1)", "Scroll up", priority=True),
        Binding("pagedown", "page(1)", "Scroll down", priority=True),
        Binding("f6", "accept_oldest", "Accept file"),
        Binding("f7", "reject_oldest", "Reject file"),
        Binding("ctrl+b", "toggle_bell", "Bell", priority=True),
    ]

    def __init__(self, node: Node, *, bell: bool | None = None, log_path: Path | None = None):
        super().__init__()
        self.node = node
        self.log_path = log_path
        self._bell_arg = bell
        self.bell_on = True
        self.current = ""
        self.views: dict[str, MessageView] = {}
        self.rooms: dict[str, RoomRow] = {}
        self.dm_peer: dict[str, str] = {}
        self.peers: dict[str, Peer] = {}
        self.transfers: dict[str, Transfer] = {}
        self.by_id: dict[str, tuple[MessageView, Entry]] = {}
        self._nick_ids: dict[str, set[str]] = {}
        self._pending: list[ev.NodeEvent] = []
        self._events_armed = False
        self._last_bell = 0.0
        self._mention_re: re.Pattern[str] | None = None
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self.started = False
        self.start_error = ""
        self.line = LineUI(node, sink=self._command_output, ask_secret=self._ask_secret)
        self._view_seq = 0

    # --- layout -------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="main"):
            yield RoomList(id="rooms")
            with Vertical(id="centre"):
                yield Container(id="views")
                yield Static(id="files")
                yield ChatInput(self._complete, id="input", placeholder="type a message or /help")
            yield Static(id="peers")

    async def on_mount(self) -> None:
        self._w_rooms = self.query_one(RoomList)
        self._w_peers = self.query_one("#peers", Static)
        self._w_status = self.query_one("#status", Static)
        self._w_files = self.query_one("#files", Static)
        self._w_views = self.query_one("#views", Container)
        self.node.subscribe(self._on_node_event)
        try:
            ready = await self.node.start()
        except (ChinwagError, OSError) as exc:
            self.start_error = str(exc)
            self.exit(return_code=1)
            return
        self.started = True
        settings = self.node.datadir.load_settings()
        self.bell_on = (
            self._bell_arg if self._bell_arg is not None else settings.get("bell", True) is True
        )
        self._set_own_nick(ready.nick)
        for room in self.node.rooms().rooms:
            if room.joined:
                await self._ensure_view(room.name)
        for name, peer_id in self.node.conversations():
            self.dm_peer[name] = peer_id
            await self._ensure_view(name)
        if "general" in self.views:
            await self._switch(self.views["general"].room)
        elif self.views:
            await self._switch(next(iter(self.views)))
        self.note(
            f"you are {ready.nick} ({short_id(ready.peer_id)}), listening on "
            f"{self.node.config.bind}:{ready.port}; /help for commands, F1 for keys"
        )
        self.set_interval(PEERS_EVERY_S, self._refresh_peers)
        self.run_worker(self._input_loop(), group="input", exclusive=True)
        self.query_one("#input").focus()
        self._redraw_side()

    # --- node events --------------------------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        """A bug escaped a handler: log its traceback to the file, show one line on exit."""
        log.error("unexpected error in the terminal UI", exc_info=error)
        super()._handle_exception(error)
        if not self.is_headless:
            where = f"; details in {self.log_path}" if self.log_path else ""
            self._exit_renderables[:] = [Text(f"chinwag: unexpected error{where}")]

    def on_resize(self, _event: events.Resize) -> None:
        """The side lists and the files panel fit their rows to their width: redraw them."""
        self.call_after_refresh(self._redraw_side)

    async def on_unmount(self) -> None:
        """Stop the node however the app ends (quit, signal, test harness)."""
        if self.started:
            await self.node.stop("quit")

    def _on_node_event(self, event: ev.NodeEvent) -> None:
        self._pending.append(event)
        if not self._events_armed:
            self._events_armed = True
            self.set_timer(FLUSH_S, self._apply_pending)

    async def _apply_pending(self) -> None:
        self._events_armed = False
        batch, self._pending = self._pending, []
        new: dict[str, list[Entry]] = {}
        ring = False
        changed: set[MessageView] = set()
        for event in batch:
            try:
                ring |= await self._apply(event, new, changed)
            except Exception:
                log.exception("could not show event %r", event)
                self.note_error(self._internal_error())
        for name, entries in new.items():
            view = self.views.get(name)
            if view is not None:
                view.append(entries)
        for view in changed:
            view.rebuild([])
        if ring:
            self._ring()
        self._redraw_side()

    async def _apply(
        self, event: ev.NodeEvent, new: dict[str, list[Entry]], changed: set[MessageView]
    ) -> bool:
        """Apply one event; return True if it should ring the bell."""
        if isinstance(event, ev.Message | ev.DirectMessage):
            return await self._incoming(event, new)
        if isinstance(event, ev.Delivered):
            found = self.by_id.get(event.id)
            if found is not None:
                view, entry = found
                entry.mark = f" ✓{event.count}/{event.of}"
                view.rebuild([entry])
            return False
        if isinstance(event, ev.Error):
            self.note_error(f"error: {event.message}")
        elif isinstance(event, ev.Alert):
            self.note_error(f"!!! WARNING: {clean(event.message)}")
            return True
        elif isinstance(event, ev.DmHeld):
            self.note_error(fmt.held_line(event))
        elif isinstance(event, ev.Joined):
            await self._ensure_view(event.room)
        elif isinstance(event, ev.Left):
            await self._drop_view(event.room)
            self.note(fmt.left_line(event))
        elif isinstance(event, ev.Gap):
            what = fmt.gap_range(event)
            self._room_note(
                event.room, "gap", f"missing {what} from {self._who(event.peer_id)}; repairing"
            )
        elif isinstance(event, ev.GapFilled):
            self._room_note(event.room, "info", f"gap from {self._who(event.peer_id)} repaired")
        elif isinstance(event, ev.PeerJoined):
            peer = self._peer(event.peer_id, event.nick)
            peer.online, peer.address = True, event.address
            peer.relayed_via = event.via or "" if event.path == "relayed" else ""
            with contextlib.suppress(ChinwagError):
                peer.verified = self.node.whois(event.peer_id).verified
            self._saw_nick(event.peer_id, event.nick)
            self.note(fmt.peer_joined_line(event))
        elif isinstance(event, ev.PeerLeft):
            peer = self._peer(event.peer_id, event.nick)
            peer.online, peer.rtt_ms = False, None
            self.note(fmt.peer_left_line(event))
        elif isinstance(event, ev.ContactAdded):
            self.note(fmt.contact_added_line(event))
        elif isinstance(event, ev.Lookup):
            self.note(fmt.lookup_line(event))
        elif isinstance(event, ev.PathChanged):
            known = self.peers.get(event.peer_id)
            if known is not None:
                known.relayed_via = event.via or ""
            self.note(fmt.path_line(event))
        elif isinstance(event, ev.NickChanged):
            if event.own:
                self._set_own_nick(event.nick)
            else:
                self._peer(event.peer_id, event.nick).nick = event.nick
                self._saw_nick(event.peer_id, event.nick)
            self.note(fmt.nick_changed_line(event))
        elif isinstance(
            event, ev.FileOffer | ev.FileProgress | ev.FileDone | ev.FileFailed | ev.FileStalled
        ):
            return self._file_event(event)
        return False

    async def _incoming(
        self, msg: ev.Message | ev.DirectMessage, new: dict[str, list[Entry]]
    ) -> bool:
        if msg.id in self.by_id:
            return False
        name = self._room_of(msg)
        if name not in self.views:
            await self._ensure_view(name)  # loads its history, this message included
            if msg.id in self.by_id:
                entry = self.by_id[msg.id][1]
                return self._count(name, entry)
        view = self.views.get(name)
        if view is None:
            return False
        entry = self._entry(msg)
        self.by_id[msg.id] = (view, entry)
        new.setdefault(name, []).append(entry)
        return self._count(name, entry)

    def _count(self, name: str, entry: Entry) -> bool:
        msg = entry.msg
        if msg is None or msg.own:
            return False
        row = self.rooms[name]
        if name != self.current or not self._at_bottom(name):
            row.unread += 1
            if entry.highlight:
                row.mentions += 1
        return entry.highlight

    def _at_bottom(self, name: str) -> bool:
        return self.views[name].following

    def _room_of(self, msg: ev.Message | ev.DirectMessage) -> str:
        if isinstance(msg, ev.DirectMessage):
            peer = msg.to if msg.own else msg.peer_id
            name = "@" + peer[:8]
            self.dm_peer[name] = peer
            return name
        return msg.room

    def _entry(self, msg: ev.Message | ev.DirectMessage) -> Entry:
        self._saw_nick(msg.peer_id, msg.nick)
        highlight = not msg.own and (
            isinstance(msg, ev.DirectMessage)
            or (self._mention_re is not None and self._mention_re.search(msg.text) is not None)
        )
        mark = ""
        if msg.own:
            with contextlib.suppress(ChinwagError):
                count, of = self.node.delivery_of(msg)
                mark = f" ✓{count}/{of}" if of else ""
        return Entry("msg", msg=msg, highlight=highlight, mark=mark)

    def _saw_nick(self, peer_id: str, nick: str) -> None:
        ids = self._nick_ids.setdefault(nick, set())
        if peer_id not in ids:
            ids.add(peer_id)
            if len(ids) == 2:  # a new collision: short ids now show after this nick
                for view in self.views.values():
                    view.rebuild()

    def _set_own_nick(self, nick: str) -> None:
        self._mention_re = re.compile(rf"(?<![\w@])@?{re.escape(nick)}(?!\w)", re.IGNORECASE)

    def _peer(self, peer_id: str, nick: str) -> Peer:
        peer = self.peers.get(peer_id)
        if peer is None:
            peer = self.peers[peer_id] = Peer(peer_id, nick)
        peer.nick = nick
        return peer

    def _who(self, peer_id: str) -> str:
        peer = self.peers.get(peer_id)
        return f"{clean(peer.nick)} ({short_id(peer_id)})" if peer else short_id(peer_id)

    # --- rendering ----------------------------------------------------------

    def render_entry(self, entry: Entry) -> tuple[Text, int]:
        """Return the display text of one entry (peer text cleaned, never markup) and the
        indent of its wrapped and later lines (under the message text; the view wraps).

        Never raises: what a peer sent is stored and shown again at every start, so a
        message this code cannot render must not end the app (it is shown as a note).
        """
        try:
            return self._render_entry(entry)
        except Exception:
            log.exception("cannot render an entry")
            return Text("* (this message cannot be shown; see the log)", style="dim"), 2

    def _render_entry(self, entry: Entry) -> tuple[Text, int]:
        msg = entry.msg
        if msg is None:
            style = {"error": "bold red", "gap": "yellow", "info": "dim"}.get(entry.kind, "")
            prefix = "* " if entry.kind in ("info", "gap") else ""
            return Text(prefix + clean(entry.note), style=style), 2
        text = Text()
        stamp = local_datetime(msg.ts)
        text.append(stamp.strftime("%H:%M "), style="dim")
        if isinstance(msg, ev.DirectMessage):
            text.append("→ " if msg.own else "← ", style="magenta")
        if entry.highlight:
            text.append("▌", style="bold red")
        text.append(clean(msg.nick), style=nick_style(msg.peer_id))
        if len(self._nick_ids.get(msg.nick, ())) > 1:
            text.append(f" {short_id(msg.peer_id)}", style="dim")
        text.append(": ")
        hang = text.cell_len
        text.append(clean(msg.text), style="bold" if entry.highlight else "")
        if msg.late:
            text.append(" (late)", style="italic yellow")
        if msg.own:
            text.append(entry.mark or " …", style="green" if entry.mark else "dim")
        return text, hang

    def _redraw_side(self) -> None:
        if not self.started:
            return
        order = sorted(n for n in self.rooms if not n.startswith("@")) + sorted(
            n for n in self.rooms if n.startswith("@")
        )
        labels = {name: self._label(name) for name in self.dm_peer}
        self._w_rooms.show([self.rooms[n] for n in order], self.current, labels)
        self._draw_peers()
        self._draw_status()
        self._draw_files()

    def _label(self, name: str) -> str:
        """Return how a room (#name) or a conversation (@nick once known) is shown."""
        if not name.startswith("@"):
            return "#" + name
        peer = self.peers.get(self.dm_peer.get(name, ""))
        return "@" + clean(peer.nick) if peer else name

    def _draw_peers(self) -> None:
        text = Text()
        online = sum(1 for p in self.peers.values() if p.online)
        text.append(f"peers {online}/{len(self.peers)}\n", style="bold")
        for peer in sorted(
            self.peers.values(),
            key=lambda p: (not p.online, not (p.via or p.member), p.nick, p.peer_id),
        ):
            if peer.online:
                text.append("● ", style="green")
            elif peer.member and not peer.via:
                text.append("◌ ", style="green")
            else:
                text.append("◐ " if peer.via else "○ ", style="yellow" if peer.via else "dim")
            text.append(clean(peer.nick), style=nick_style(peer.peer_id))
            if peer.verified:
                text.append(" ✓", style="green")
            if len(self._nick_ids.get(peer.nick, ())) > 1:
                text.append(f" {short_id(peer.peer_id)}", style="dim")
            if peer.online and peer.rtt_ms is not None:
                text.append(f" {peer.rtt_ms:.0f}ms", style="dim")
            text.append("\n")
            if peer.online and peer.relayed_via:
                relay = self.peers.get(peer.relayed_via)
                how = "relayed via " + (clean(relay.nick) if relay else short_id(peer.relayed_via))
            elif peer.online:
                how = ("direct " if self.size.width >= 120 else "") + peer.address
            elif peer.via:
                relay = self.peers.get(peer.via)
                how = "via " + (clean(relay.nick) if relay else short_id(peer.via))
            elif peer.member:
                how = "member, through others"
            else:
                how = "offline"
            text.append(f"  {how}\n", style="dim")
        set_if_changed(self._w_peers, text)

    def _draw_status(self) -> None:
        node = self.node
        online = sum(1 for p in self.peers.values() if p.online)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {node.nick}", style="bold")
        text.append(f" ({short_id(node.identity.peer_id)})")
        text.append(f" · {node.config.bind}:{node.port}")
        text.append(f" · {online} peer{'s' if online != 1 else ''}")
        where = self._label(self.current)
        text.append(f" · {where}")
        if not self.bell_on:
            text.append(" · bell off", style="dim")
        text.append("  F1 keys", style="dim")
        set_if_changed(self._w_status, text)

    def _draw_files(self) -> None:
        # Each offer or transfer is one row at any width (a wrapped row would push the
        # [reject] action or the time left onto a row of its own): the name is cut to fit.
        width = self._w_files.content_region.width or 44
        lines: list[str] = []
        for fid, t in self.transfers.items():
            name = clean(t.offer.name)
            size = human_size(t.offer.size)
            arrow = "⇧" if t.offer.own else "⇩"
            if t.state == "offered" and not t.offer.own:
                actions = (
                    f"[@click=app.accept_file('{fid}')][b]\\[accept][/b][/] "
                    f"[@click=app.reject_file('{fid}')]\\[reject][/]"
                )
                rest = f" ({size}) from {clean(t.offer.nick)}  "
                if width - cell_len(rest) - 19 < 8:
                    rest = f" ({size}) "
                room = width - cell_len(rest) - 19  # arrow, space, "[accept] [reject]"
                lines.append(
                    f"{arrow} {markup_escape(fit(name, room))}{markup_escape(rest)}{actions}"
                )
            elif t.state in ("transferring", "stalled", "accepted"):
                pct = 0 if t.offer.size <= 0 else t.done * 100 // t.offer.size
                tail = (
                    f"{human_size(t.rate)}/s, {eta(t.offer.size - t.done, t.rate)} left"
                    if t.state == "transferring"
                    else t.state + (f": {clean(t.note)}" if t.note else "")
                )
                # The bar keeps its width while the rate and time left change length.
                fixed = 2 + 1 + len(" 100% ") + max(cell_len(tail), len("999.9 MB/s, 9:59 left"))
                bar_width = max(4, min(12, width - fixed - 12))
                bar = progress_bar(t.done, t.offer.size, bar_width)
                room = width - fixed - bar_width
                lines.append(markup_escape(f"{arrow} {fit(name, room)} {bar} {pct}% {tail}"))
        files = self._w_files
        files.display = bool(lines)
        set_if_changed(files, "\n".join(lines[-5:]))  # the border takes one of 6 rows

    def _room_note(self, room: str, kind: str, note: str) -> None:
        view = self.views.get(room) or self.views.get(self.current)
        if view is not None:
            view.append([Entry(kind, note=note)])

    def note(self, text: str) -> None:
        """Show an information line in the current view."""
        self._room_note(self.current, "info", text)

    def note_error(self, text: str) -> None:
        """Show an error line in the current view."""
        self._room_note(self.current, "error", text)

    def _command_output(self, line: str) -> None:
        self._room_note(self.current, "out", line[2:] if line.startswith("* ") else line)

    def _internal_error(self) -> str:
        where = f" (details in {self.log_path})" if self.log_path else ""
        return f"error: something went wrong inside chinwag{where}"

    def _ring(self) -> None:
        now = time.monotonic()
        if self.bell_on and now - self._last_bell >= BELL_EVERY_S:
            self._last_bell = now
            self.bell()

    def _refresh_peers(self) -> None:
        with contextlib.suppress(ChinwagError):
            listing = self.node.peers()
            for info in listing.peers:
                peer = self._peer(info.peer_id, info.nick)
                peer.online, peer.address, peer.rtt_ms = True, info.address, info.rtt_ms
                peer.via = ""
                peer.relayed_via = info.via or "" if info.path == "relayed" else ""
            relayed = {r.peer_id: r for r in listing.relayed}
            for peer in self.peers.values():
                if not peer.online:
                    peer.via = relayed[peer.peer_id].via if peer.peer_id in relayed else ""
            for r in listing.relayed:
                if r.peer_id not in self.peers:
                    self._peer(r.peer_id, r.nick).via = r.via
        # Members of the room shown that we reach only through others (presence records):
        # listed (dimmed) and completed with Tab like the peers we are connected to.
        far: set[str] = set()
        if not self.current.startswith("@"):
            with contextlib.suppress(ChinwagError):
                for member in self.node.members(self.current).members:
                    if not member.direct:
                        self._peer(member.peer_id, member.nick)
                        if member.online:
                            far.add(member.peer_id)
        for peer in self.peers.values():
            peer.member = peer.peer_id in far and not peer.online
        self._redraw_side()

    def _refresh_verified(self) -> None:
        """Read again which peers are verified (after /verify) and redraw the peer list."""
        for peer in self.peers.values():
            with contextlib.suppress(ChinwagError):
                peer.verified = self.node.whois(peer.peer_id).verified
        self._redraw_side()

    # --- rooms --------------------------------------------------------------

    async def _ensure_view(self, name: str) -> MessageView:
        view = self.views.get(name)
        if view is not None:
            return view
        self._view_seq += 1
        view = MessageView(name, self.render_entry, id=f"view{self._view_seq}")
        view.display = False
        self.views[name] = view
        self.rooms[name] = RoomRow(name)
        await self._w_views.mount(view)
        self._load_initial(view)
        return view

    def _history_name(self, name: str) -> str:
        return "@" + self.dm_peer[name] if name in self.dm_peer else name

    def _load_initial(self, view: MessageView) -> None:
        try:
            msgs = self.node.history(self._history_name(view.room), PAGE).messages
        except ChinwagError as exc:
            log.warning("no history for %s: %s", view.room, exc)
            return
        entries = []
        for msg in msgs:
            if msg.id not in self.by_id:
                entry = self._entry(msg)
                self.by_id[msg.id] = (view, entry)
                entries.append(entry)
        view.has_older = len(msgs) >= PAGE
        view.append(entries)

    async def on_message_view_need_older(self, message: MessageView.NeedOlder) -> None:
        """Load a page of older history into a view scrolled to its top."""
        view = message.view
        try:
            anchor = view.oldest_message()
            if anchor is None:
                view.has_older = False
                return
            msgs = self.node.history(self._history_name(view.room), PAGE, before=anchor.id)
            entries = []
            for msg in msgs.messages:
                if msg.id not in self.by_id:
                    entry = self._entry(msg)
                    self.by_id[msg.id] = (view, entry)
                    entries.append(entry)
            view.has_older = len(msgs.messages) >= PAGE
            view.prepend(entries)
        except ChinwagError as exc:
            view.has_older = False
            self.note_error(f"error: {exc}")
        finally:
            view.fetching = False

    def on_message_view_at_bottom(self, message: MessageView.AtBottom) -> None:
        """Reading the newest line of the current room clears its unread count."""
        row = self.rooms.get(message.view.room)
        if row is not None and message.view.room == self.current and (row.unread or row.mentions):
            row.unread = row.mentions = 0
            self._redraw_side()

    async def _drop_view(self, name: str) -> None:
        view = self.views.pop(name, None)
        self.rooms.pop(name, None)
        if view is None:
            return
        for entry in view.entries:
            if entry.msg is not None:
                self.by_id.pop(entry.msg.id, None)
        await view.remove()
        if self.current == name:
            await self._switch("general" if "general" in self.views else next(iter(self.views), ""))

    async def _switch(self, name: str) -> None:
        if name not in self.views:
            return
        for other, view in self.views.items():
            view.display = other == name
        self.current = name
        row = self.rooms[name]
        row.unread = row.mentions = 0
        self.line.room = name
        view = self.views[name]
        view.scroll_to(y=view.max_scroll_y, animate=False, immediate=True, force=True)
        self._redraw_side()

    def _ordered_rooms(self) -> list[str]:
        return sorted(n for n in self.rooms if not n.startswith("@")) + sorted(
            n for n in self.rooms if n.startswith("@")
        )

    def _main_screen_only(self) -> None:
        """Let a key bound here go to a screen shown over the main one (the key screen
        scrolls with PageUp/PageDown; rooms do not change behind it)."""
        if len(self.screen_stack) > 1:
            raise SkipAction()

    async def action_cycle_room(self, step: int) -> None:
        """Switch to the next (1) or previous (-1) room."""
        self._main_screen_only()
        order = self._ordered_rooms()
        if order:
            at = order.index(self.current) if self.current in order else 0
            await self._switch(order[(at + step) % len(order)])

    async def action_goto_mention(self) -> None:
        """Switch to a room with unread mentions or private messages."""
        self._main_screen_only()
        for name in self._ordered_rooms():
            if self.rooms[name].mentions:
                await self._switch(name)
                return

    async def on_room_list_chosen(self, message: RoomList.Chosen) -> None:
        await self._switch(message.name)

    def action_page(self, step: int) -> None:
        """Scroll the current view a page up (-1) or down (1)."""
        self._main_screen_only()
        view = self.views.get(self.current)
        if view is not None:
            height = max(1, view.scrollable_content_region.height - 1)
            view.scroll_to(
                y=view.scroll_y + step * height, animate=False, immediate=True, force=True
            )

    def action_keys(self) -> None:
        """Show the key-binding screen."""
        self.push_screen(HelpScreen(KEYS + "\n\n" + HELP + "\n" + TUI_HELP))

    def action_toggle_theme(self) -> None:
        """Switch between dark and light colours."""
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_toggle_bell(self) -> None:
        """Switch the bell on or off (saved)."""
        self._set_bell(not self.bell_on)

    def _set_bell(self, on: bool) -> None:
        self.bell_on = on
        with contextlib.suppress(OSError):
            self.node.datadir.save_setting("bell", on)
        self.note(f"bell {'on' if on else 'off'}")
        self._draw_status()

    async def action_quit(self) -> None:
        """Leave: say goodbye to peers, then close the screen."""
        if self.started:
            await self.node.stop("quit")
        self.exit(return_code=0)

    # --- files --------------------------------------------------------------

    def _file_event(
        self, event: ev.FileOffer | ev.FileProgress | ev.FileDone | ev.FileFailed | ev.FileStalled
    ) -> bool:
        if isinstance(event, ev.FileOffer):
            known = event.id in self.transfers
            t = self.transfers.setdefault(event.id, Transfer(event))
            t.offer = event
            if event.own:
                t.state = "sharing"
                if not known:
                    self.note(f"offered {clean(event.name)} [file {event.id[:8]}]; /files shows it")
                return False
            where = event.room or "@" + event.peer_id[:8]
            if where.startswith("@"):
                self.dm_peer.setdefault(where, event.peer_id)
            self._room_note(
                where if where in self.views else self.current,
                "gap",
                f"{clean(event.nick)} offers {clean(event.name)} ({human_size(event.size)}): "
                f"F6 accept, F7 reject, or /accept {event.id[:8]}",
            )
            return True
        t0 = self.transfers.get(event.id)
        if t0 is None:
            return False
        t = t0
        if isinstance(event, ev.FileProgress):
            t.state, t.done, t.rate = "transferring", event.bytes, event.rate
        elif isinstance(event, ev.FileStalled):
            t.state, t.note = "stalled", event.reason
        elif isinstance(event, ev.FileDone):
            t.state = "done"
            if t.offer.own:  # our private offer: the recipient has it
                self.note(f"{clean(t.offer.name)} delivered: the recipient has it")
            else:
                self.note(f"{clean(t.offer.name)} received: {clean(event.path)}")
        elif isinstance(event, ev.FileFailed):
            was, t.state = t.state, "failed"
            if event.reason in ("rejected", "cancelled"):  # our own doing: not an error
                if not (was == "rejected" and event.reason == "rejected"):  # already said
                    self.note(f"{clean(t.offer.name)}: {event.reason}")
            else:
                self.note_error(f"{clean(t.offer.name)}: transfer failed: {clean(event.reason)}")
        return False

    def _oldest_offer(self) -> str | None:
        return next(
            (f for f, t in self.transfers.items() if t.state == "offered" and not t.offer.own),
            None,
        )

    async def action_accept_oldest(self) -> None:
        """Accept the oldest pending file offer."""
        fid = self._oldest_offer()
        if fid is None:
            self.note("no file offer waiting")
        else:
            await self.action_accept_file(fid)

    async def action_reject_oldest(self) -> None:
        """Reject the oldest pending file offer."""
        fid = self._oldest_offer()
        if fid is None:
            self.note("no file offer waiting")
        else:
            await self.action_reject_file(fid)

    async def action_accept_file(self, fid: str) -> None:
        """Accept a file offer (saved to the node's download directory)."""
        if self._file_call(self.node.accept_file, "accept", fid):
            self.transfers[fid].state = "accepted"
        self._redraw_side()

    async def action_reject_file(self, fid: str) -> None:
        """Reject a file offer."""
        if self._file_call(self.node.reject_file, "reject", fid):
            self.transfers[fid].state = "rejected"
        self._redraw_side()

    def _file_call(self, call: Callable[[str], ev.FileInfo], command: str, fid: str) -> bool:
        """Run a node's accept_file or reject_file on a known offer; say how it went."""
        if fid not in self.transfers:
            return False
        try:
            call(fid)
        except ChinwagError as exc:
            self.note_error(f"error: {exc}")
            return False
        t = self.transfers[fid]
        self.note(f"{command}ed {clean(t.offer.name)}")
        return True

    # --- input --------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not isinstance(event.input, ChatInput):
            return
        line = event.value
        event.input.remember(line)
        event.input.value = ""
        if line.strip():
            self._lines.put_nowait(line)

    def on_chat_input_pasted(self, event: ChatInput.Pasted) -> None:
        refusal = paste_refusal(event.text)
        if refusal is not None:
            self.note_error(refusal)
            return
        self._lines.put_nowait("\x00" + event.text)

    async def _input_loop(self) -> None:
        while True:
            line = await self._lines.get()
            try:
                await self.run_line(line)
            except Exception:
                log.exception("command failed: %r", line[:80])
                self.note_error(self._internal_error())

    async def run_line(self, line: str) -> None:
        """Execute one input line: a slash command, or a message to the current room."""
        if line.startswith("\x00"):  # a multi-line paste: always a message
            await self._send(line[1:])
            return
        if not line.startswith("/") or line.startswith("//"):
            await self._send(line[1:] if line.startswith("//") else line)
            return
        name = line[1:].partition(" ")[0].lower()
        try:
            cmd = c.parse_slash(line, self.current, tui=True)
        except ChinwagError as exc:
            if name in _OWN_COMMANDS:  # the screen's own: shown here, not a node error
                self.note_error(f"error: {exc}")
            else:
                self.node.error(str(exc))
            return
        if isinstance(cmd, c.SwitchCmd):
            await self._cmd_switch(cmd.room)
        elif isinstance(cmd, c.JoinCmd):
            await self._cmd_join(cmd)
        elif isinstance(cmd, c.Quit):
            await self.action_quit()
        elif isinstance(cmd, c.BellCmd):
            self._set_bell(not self.bell_on if cmd.on is None else cmd.on)
        elif isinstance(cmd, c.KeysCmd):
            self.action_keys()
        elif isinstance(cmd, c.HelpCmd):
            self._command_output(HELP + "\n" + TUI_HELP + "\n(F1: keys)")
        else:
            self.line.room = self.current
            try:
                await self.line.run_command(cmd)
            except ChinwagError as exc:
                self.node.error(str(exc))
            if isinstance(cmd, c.VerifyCmd):
                self._refresh_verified()

    async def _send(self, text: str) -> None:
        cmd: c.Command = (
            c.DmCmd(to=self.dm_peer[self.current], text=text)
            if self.current in self.dm_peer
            else c.Send(text=text, room=self.current)
        )
        try:
            await c.execute(self.node, cmd, self.line)
        except ChinwagError as exc:
            self.note_error(f"error: {exc}")

    async def _cmd_switch(self, arg: str) -> None:
        if not arg:
            self.note_error("error: usage: /switch ROOM|@NICK")
            return
        if arg.startswith("@"):
            name = arg if arg in self.views else ""
            if not name:
                try:
                    peer_id = self.node.resolve_peer(arg)
                except ChinwagError as exc:
                    self.note_error(f"error: {exc}")
                    return
                if peer_id == self.node.identity.peer_id:
                    self.note_error("error: that is you")
                    return
                name = "@" + peer_id[:8]
                self.dm_peer[name] = peer_id
                await self._ensure_view(name)
            await self._switch(name)
            return
        name = arg.lstrip("#").lower()
        if name not in self.views or name.startswith("@"):
            self.note_error(f"error: you are not in #{name[:40]}; /join it first")
            return
        await self._switch(name)

    async def _ask_secret(self, room: str) -> str | None:
        """Ask for a room's passphrase in a dialog; None if it was cancelled or left empty."""
        passphrase: str | None = await self.push_screen(
            SecretScreen(f"passphrase for #{room}"), wait_for_dismiss=True
        )
        return passphrase or None

    async def _cmd_join(self, cmd: c.JoinCmd) -> None:
        try:
            joined = await c.execute(self.node, cmd, self.line)
        except ChinwagError as exc:
            self.note_error(f"error: {exc}")
            return
        if not isinstance(joined, ev.Joined):
            self.note("join cancelled")
            return
        await self._ensure_view(joined.room)
        await self._switch(joined.room)
        self.note(fmt.joined_line(joined))

    # --- completion ---------------------------------------------------------

    def _complete(self, value: str, cursor: int) -> tuple[int, list[str]]:
        """Return (start of the word at the cursor, candidates to replace it with)."""
        start = value.rfind(" ", 0, cursor) + 1
        word = value[start:cursor]
        first = value.split(" ", 1)[0].lower()
        rooms = sorted(n for n in self.rooms if not n.startswith("@"))
        if start == 0 and word.startswith("/"):
            commands = set(c.slash_names(tui=True))
            return 0, sorted("/" + c for c in commands if c.startswith(word[1:].lower()))
        if word.startswith("#"):
            return start, ["#" + r for r in rooms if r.startswith(word[1:].lower())]
        if first in ("/join", "/leave", "/switch") and start == len(first) + 1:
            names = rooms + ["@" + clean(p.nick) for p in self.peers.values() if first == "/switch"]
            return start, sorted(n for n in set(names) if n.lower().startswith(word.lower()))
        nicks = {clean(p.nick) for p in self.peers.values()}
        nicks |= {n for n in self._nick_ids if n != self.node.nick}
        bare = word.lstrip("@")
        found = sorted(n for n in nicks if n.lower().startswith(bare.lower()) and n)
        at = "@" if word.startswith("@") else ""
        suffix = ": " if start == 0 and not at else ""
        return start, [at + n + suffix for n in found]
