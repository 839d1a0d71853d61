"""Small widgets of the TUI: the input line, the side lists, the files panel, the help screen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from chinwag import limits

#: Earlier input lines kept for Up/Down recall.
MAX_INPUT_HISTORY = 500

KEYS = """keys:
  Enter            send the line (or run the /command)
  Tab              complete a command, nick or room name (again: next candidate)
  Up / Down        recall earlier input
  PageUp/PageDown  scroll the messages (older history loads at the top)
  Ctrl+N / Ctrl+P  next / previous room or conversation
  Ctrl+O           switch to the conversation with unread mentions
  F1               this screen
  F2               dark / light colours
  F6 / F7          accept / reject the oldest file offer
  Ctrl+B           bell on or off
  Ctrl+Q, Ctrl+C, /quit   quit
mouse (optional): click a room to switch to it, wheel to scroll, click [accept] or [reject]"""


class ChatInput(Input):
    """The input line: Tab completion, Up/Down recall, multi-line paste sent as one message."""

    BINDINGS = [
        Binding("tab", "complete", "Complete", show=False, priority=True),
        Binding("up", "recall(-1)", "Earlier input", show=False),
        Binding("down", "recall(1)", "Later input", show=False),
    ]

    class Pasted(Message):
        """A multi-line paste to send as one message."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, completer: Callable[[str, int], tuple[int, list[str]]], **kw: str) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self._completer = completer
        self.recall: list[str] = []
        self._recall_at = 0
        self._draft = ""
        self._cycle: tuple[int, list[str], int, str] | None = None

    def remember(self, line: str) -> None:
        """Add a sent line to the recall list."""
        if line and (not self.recall or self.recall[-1] != line):
            self.recall.append(line)
            del self.recall[:-MAX_INPUT_HISTORY]
        self._recall_at = len(self.recall)
        self._draft = ""

    def action_recall(self, step: int) -> None:
        """Show an earlier (step -1) or later (step 1) input line."""
        if not self.recall:
            return
        if self._recall_at == len(self.recall):
            self._draft = self.value
        at = min(max(self._recall_at + step, 0), len(self.recall))
        self._recall_at = at
        self.value = self._draft if at == len(self.recall) else self.recall[at]
        self.cursor_position = len(self.value)

    def action_complete(self) -> None:
        """Complete the word before the cursor; pressed again, cycle through candidates."""
        cursor = self.cursor_position
        if self._cycle is not None and self._cycle[3] == self.value and cursor == self._cycle[2]:
            start, cands, _end, _value = self._cycle
            current = self.value[start:cursor]
            index = (cands.index(current) + 1) % len(cands) if current in cands else 0
            choice = cands[index]
        else:
            start, cands = self._completer(self.value, cursor)
            if not cands:
                self._cycle = None
                self.app.bell()
                return
            choice = cands[0] if len(cands) == 1 else _common_prefix(cands)
            if len(cands) > 1 and choice == self.value[start:cursor]:
                choice = cands[0]
        if len(cands) == 1 and not choice.endswith(" "):
            choice += " "
        self.value = self.value[:start] + choice + self.value[cursor:]
        self.cursor_position = start + len(choice)
        self._cycle = (start, cands, self.cursor_position, self.value) if len(cands) > 1 else None

    def _on_paste(self, event: events.Paste) -> None:
        # Terminals send the line breaks of a paste as CR (what Enter sends), some as CRLF.
        text = event.text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text.rstrip("\n"):
            return  # one line: Input._on_paste (called after this one) inserts it
        event.stop()
        event.prevent_default()
        self.post_message(self.Pasted(self.value + text.rstrip("\n")))
        self.value = ""


def _common_prefix(words: list[str]) -> str:
    first, last = min(words), max(words)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def paste_refusal(text: str) -> str | None:
    """Return why a pasted text cannot be sent as one message, or None if it can."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.MAX_TEXT_BYTES:
        return (
            f"paste not sent: {size} bytes, a message holds at most {limits.MAX_TEXT_BYTES} "
            f"(split it, or share it as a file)"
        )
    return None


@dataclass
class RoomRow:
    """One line of the room list."""

    name: str
    unread: int = 0
    mentions: int = 0


class RoomList(Static):
    """Rooms and private conversations with unread counts and mention marks."""

    class Chosen(Message):
        """The user clicked a room."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self, **kw: str) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.rows: list[str] = []
        self._shown = Text()

    def show(self, rows: list[RoomRow], current: str, labels: dict[str, str]) -> None:
        """Draw the list; `labels` gives the shown name of a conversation (its nick)."""
        # One row per room, never wrapped (a click maps a row to a room): a long name is
        # cut to leave room for the mark and the unread count.
        width = self.content_region.width or 13
        text = Text(no_wrap=True, overflow="crop")
        self.rows = []
        for row in rows:
            label = labels.get(row.name, row.name if row.name.startswith("@") else "#" + row.name)
            count = f" {row.unread}" if row.unread else ""
            room = max(2, width - 1 - len(count))
            if cell_len(label) > room:
                label = set_cell_size(label, room - 1) + "…"
            mark = "!" if row.mentions else " "
            text.append(mark, style="bold red" if row.mentions else "")
            text.append(label, style="reverse bold" if row.name == current else "")
            if count:
                text.append(count, style="bold")
            text.append("\n")
            self.rows.append(row.name)
        if text != self._shown:
            self._shown = text
            self.update(text)

    def on_click(self, event: events.Click) -> None:
        if 0 <= event.y < len(self.rows):
            self.post_message(self.Chosen(self.rows[event.y]))


class HelpScreen(ModalScreen[None]):
    """Keys and commands; any of Escape, F1 or q closes it."""

    BINDINGS = [
        Binding("escape,f1,q", "dismiss", "Close"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 90; height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self._text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text(self._text))
            yield Static(Text("Escape closes this screen", style="dim"))

    def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)


class SecretScreen(ModalScreen[str | None]):
    """Ask for a passphrase (hidden); Enter answers it, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    SecretScreen { align: center middle; }
    SecretScreen > Input { width: 60; border: round $accent; }
    """

    def __init__(self, prompt: str) -> None:
        super().__init__()
        self._prompt = prompt

    def compose(self) -> ComposeResult:
        yield Input(placeholder=self._prompt, password=True, id="secret")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        """Close without a passphrase."""
        self.dismiss(None)
