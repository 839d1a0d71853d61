"""The TUI's message view: a virtualised scroll view that renders only visible lines.

Theory of operation: a view holds a list of entries (messages and notices),
each with its display text built once (rich Text), the cell length of each of
its logical lines and its hanging indent (the width of "HH:MM nick: ").
Lines are wrapped at word boundaries (a word longer than a row is broken);
wrapped rows and the later lines of a multi-line message are indented under
the message text. An entry's height at a width is computed when the layout
first needs it and cached with that width: a line that fits (nearly all of
them) costs a comparison, only longer ones are wrapped, so a resize of a view
of 10,000 entries stays a pass over integers plus the long messages. A prefix
sum of heights maps a screen line to an entry by bisection; only entries on
screen are laid out into strips, and those strips are cached until the width
or the entry changes.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import rich.cells
from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from chinwag import events as ev
from chinwag.ui.clock import local_datetime

#: Entries kept in memory per view; beyond it the oldest are dropped (and reload on scroll).
MAX_VIEW_ENTRIES = 20_000
#: How many entries are dropped at once when a view is over MAX_VIEW_ENTRIES.
DROP_CHUNK = 5_000
#: Within this many lines of the top, a view asks for older history.
LOAD_MARGIN = 3
#: Wrapped rows keep at least this many cells for text: a hanging indent is cut to leave them.
MIN_TEXT = 16

#: What an entry's renderer returns: its text and its hanging indent in cells.
Rendered = tuple[Text, int]

_ids = itertools.count()


@dataclass(eq=False)
class Entry:
    """One thing shown in a view: a message (`msg`) or a notice (`kind` info, error, gap)."""

    kind: str
    note: str = ""
    msg: ev.Message | ev.DirectMessage | None = None
    #: Delivery mark of our own messages (" ✓ 2/3").
    mark: str = ""
    #: A private message or a mention of our nick.
    highlight: bool = False
    #: A date separator is drawn above this entry.
    sep: bool = False
    key: int = field(default_factory=lambda: next(_ids))
    text: Text | None = None
    #: Cell length of each logical line of `text`.
    lens: list[int] = field(default_factory=list)
    #: Wrapped rows and later lines are indented by this many cells (under the message text).
    hang: int = 0
    #: Height in rows at width `at` (a cache; -1: not computed).
    rows: int = -1
    at: int = 0

    @property
    def day(self) -> dt.date | None:
        """Local date of a message entry."""
        return None if self.msg is None else local_datetime(self.msg.ts).date()


_WORD = re.compile(r"\S+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _graphemes(text: str) -> list[tuple[int, int, int]]:
    """Return (start, end, cells) of each grapheme of text (each character on an older rich)."""
    split = getattr(rich.cells, "split_graphemes", None)
    if split is not None:
        spans: list[tuple[int, int, int]] = split(text)[0]
        return spans
    return [(i, i + 1, cell_len(char)) for i, char in enumerate(text)]


def _wrap_plain(plain: str, first: int, rest: int) -> list[tuple[int, int]]:
    """wrap_spans for printable ASCII (one cell a character, words split by spaces only):
    jumps a row at a time with C-level string searches instead of walking every word."""
    n = len(plain)
    if not plain.strip(" "):
        return [(0, n)]  # no words: one row (the spaces beyond the width are cut)
    rows: list[tuple[int, int]] = []
    pos = 0
    width = first
    while n - pos > width:
        cut = plain.rfind(" ", pos, pos + width + 1)
        end = cut
        if cut > pos and plain[cut - 1] == " ":
            end = len(plain[pos:cut].rstrip(" ")) + pos
        if end > pos:
            # Wrap at the last space that fits; the spaces there are dropped.
            rows.append((pos, end))
            pos = cut + 1
            while pos < n and plain[pos] == " ":
                pos += 1
            if pos == n:  # only spaces were left: they stay at the end of the row
                rows[-1] = (rows[-1][0], n)
                return rows
        else:
            # No space after a word within the row: break the word.
            rows.append((pos, pos + width))
            pos += width
        width = rest
    rows.append((pos, n))
    return rows


def wrap_spans(plain: str, first: int, rest: int) -> list[tuple[int, int]]:
    """Return the (start, end) character ranges of the rows of a line wrapped at word boundaries.

    The first row is `first` cells wide, the others `rest`. The spaces where the line is
    wrapped are dropped; a word wider than a row is broken (between graphemes). Widths
    are cells: wide characters (CJK, emoji) count 2.
    """
    first = max(1, first)
    rest = max(1, rest)
    narrow = plain.isascii()
    if narrow and _CONTROL.search(plain) is None:
        return _wrap_plain(plain, first, rest)
    rows: list[tuple[int, int]] = []
    width = first
    start = 0  # where the current row starts
    end = 0  # the end of what is placed on the current row
    used = 0  # cells from start to end
    for match in _WORD.finditer(plain):
        word_start, word_end = match.span()
        if narrow:
            gap = word_start - end
            cells = word_end - word_start
        else:
            gap = cell_len(plain[end:word_start])
            cells = cell_len(plain[word_start:word_end])
        if used + gap + cells <= width:
            used += gap + cells
            end = word_end
            continue
        if end > start:
            # The row has words: wrap before this one (dropping the spaces between).
            rows.append((start, end))
            width = rest
            start = end = word_start
            used = 0
            if cells <= width:
                used = cells
                end = word_end
                continue
        # Break the word (with the spaces before it, at the start of a line) across rows.
        if narrow:
            pos = end
            while pos < word_end:
                if used >= width:
                    rows.append((start, pos))
                    width = rest
                    start = pos
                    used = 0
                take = min(width - used, word_end - pos)
                pos += take
                used += take
        else:
            for g_start, _g_end, g_cells in _graphemes(plain[end:word_end]):
                if used + g_cells > width and used:
                    rows.append((start, end + g_start))
                    width = rest
                    start = end + g_start
                    used = 0
                used += g_cells
        end = word_end
    rows.append((start, len(plain)))
    return rows


class MessageView(ScrollView, can_focus=True):
    """A scrollable list of entries; renders only what is on screen."""

    DEFAULT_CSS = """
    MessageView {
        height: 1fr;
        overflow-x: hidden;
        /* The wrap width must not change when the scrollbar comes and goes. */
        scrollbar-gutter: stable;
    }
    """

    class NeedOlder(Message):
        """The view is scrolled near its top and older history may exist."""

        def __init__(self, view: MessageView) -> None:
            super().__init__()
            self.view = view

    class AtBottom(Message):
        """The view was scrolled back to its newest line."""

        def __init__(self, view: MessageView) -> None:
            super().__init__()
            self.view = view

    def __init__(
        self, name: str, render_entry: Callable[[Entry], Rendered], *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.room = name
        self.entries: list[Entry] = []
        self._render_entry = render_entry
        self._cum: list[int] = [0]
        self._width = 0
        self._strips: dict[int, list[Strip]] = {}
        #: Older history may exist in the store beyond the first entry.
        self.has_older = False
        self.fetching = False
        #: The view shows its newest line and keeps doing so when content is added or the
        #: view's height changes (a resize, the files panel coming and going).
        self.following = True

    # --- content ------------------------------------------------------------

    def _build(self, entry: Entry) -> None:
        text, entry.hang = self._render_entry(entry)
        if "\t" in text.plain:
            text.expand_tabs(4)
        entry.text = text
        entry.lens = [cell_len(part) for part in text.plain.split("\n")]
        entry.rows = -1
        self._strips.pop(entry.key, None)

    def _indent(self, entry: Entry) -> int:
        """Return the hanging indent of an entry at the current width."""
        return max(0, min(entry.hang, self._width - MIN_TEXT))

    def _height(self, entry: Entry) -> int:
        """Return the rows of an entry at the current width (cached with the width)."""
        if entry.rows >= 0 and entry.at == self._width:
            return entry.rows
        width = self._width
        lens = entry.lens
        rows = 1 if entry.sep else 0
        if width <= 0:
            rows += len(lens)  # not laid out yet: measured again at the first resize
        elif len(lens) == 1 and lens[0] <= width:
            rows += 1  # the common case: one line that fits
        else:
            indent = self._indent(entry)
            lines: list[str] | None = None
            for i, length in enumerate(lens):
                if length <= (width if i == 0 else width - indent):
                    rows += 1
                    continue
                if lines is None:
                    assert entry.text is not None
                    lines = entry.text.plain.split("\n")
                first = width if i == 0 else width - indent
                rows += len(wrap_spans(lines[i], first, width - indent))
        entry.at = width
        entry.rows = rows
        return rows

    def _fix_sep(self, index: int) -> bool:
        """Recompute whether entry `index` starts a new day; return True if it changed."""
        entry = self.entries[index]
        if entry.msg is None:
            return False
        prev = next((e.day for e in reversed(self.entries[:index]) if e.msg is not None), None)
        want = prev != entry.day
        if want != entry.sep:
            entry.sep = want
            return True
        return False

    def append(self, entries: Iterable[Entry]) -> None:
        """Add entries at the bottom; stay at the bottom if the view was there."""
        new = list(entries)
        if not new:
            return
        follow = self.following or self.scroll_y >= self.max_scroll_y - 1
        last_day = next((e.day for e in reversed(self.entries) if e.msg is not None), None)
        self._build_run(new, last_day)
        for entry in new:
            self.entries.append(entry)
            self._cum.append(self._cum[-1] + self._height(entry))
        if len(self.entries) > MAX_VIEW_ENTRIES:
            self._drop_oldest()
        self._resized()
        if follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        self.refresh()

    def _build_run(self, entries: list[Entry], last_day: dt.date | None) -> None:
        """Build consecutive entries; a message starting a day after `last_day` gets a separator."""
        for entry in entries:
            if entry.msg is not None:
                day = entry.day
                entry.sep = day != last_day
                last_day = day
            self._build(entry)

    def prepend(self, entries: Iterable[Entry]) -> None:
        """Add older entries at the top without moving what is on screen."""
        new = list(entries)
        if not new:
            return
        was_y = self.scroll_y
        self._build_run(new, None)
        self.entries[:0] = new
        first_old = len(new)
        if first_old < len(self.entries) and self._fix_sep(first_old):
            self._build(self.entries[first_old])
        self._relayout()
        # Keep the old first entry where it was on screen.
        self.scroll_to(y=was_y + self._cum[first_old], animate=False, immediate=True, force=True)
        self.refresh()

    def _drop_oldest(self) -> None:
        del self.entries[:DROP_CHUNK]
        self.has_older = True
        if self.entries and self._fix_sep(0):
            self._build(self.entries[0])
        self._relayout()

    def oldest_message(self) -> ev.Message | ev.DirectMessage | None:
        """Return the oldest message held (the anchor for loading older history)."""
        return next((e.msg for e in self.entries if e.msg is not None), None)

    def rebuild(self, entries: Iterable[Entry] | None = None) -> None:
        """Rebuild the text of some entries (all if None) after their look changed."""
        for entry in self.entries if entries is None else entries:
            self._build(entry)
        self._relayout()
        self.refresh()

    def _relayout(self) -> None:
        cum = [0]
        total = 0
        for entry in self.entries:
            total += self._height(entry)
            cum.append(total)
        self._cum = cum
        self._resized()

    def _resized(self) -> None:
        size = Size(self._width, self._cum[-1])
        old = self.virtual_size
        if size == old:
            return
        view = self.scrollable_content_region.height
        if (size.height > view) == (old.height > view) and size.width == old.width:
            # Only the length changed, not whether a scrollbar is needed: no layout pass
            # of the whole screen (it would cost ~20 ms per batch of incoming messages).
            self.set_reactive(MessageView.virtual_size, size)
            self._scroll_update(size)
            self.refresh()
        else:
            self.virtual_size = size

    # --- textual ------------------------------------------------------------

    def on_resize(self) -> None:
        width = max(1, self.scrollable_content_region.width)
        # The height may have changed already: whether the view was at its bottom is
        # what it was following before, not where scroll_y is now.
        at_bottom = self.following
        if width == self._width:
            if at_bottom:
                self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
            return
        # Keep the line at the top of the screen at the top: same entry, same row if it has it.
        anchor: tuple[int, int] | None = None
        if not at_bottom and self.entries and self._width > 0:
            top = round(self.scroll_y)
            index = bisect.bisect_right(self._cum, top) - 1
            if 0 <= index < len(self.entries):
                anchor = (index, top - self._cum[index])
        self._width = width
        self._strips.clear()
        self._relayout()
        if at_bottom:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        elif anchor is not None:
            index, row = anchor
            row = min(row, self._height(self.entries[index]) - 1)
            self.scroll_to(y=self._cum[index] + row, animate=False, immediate=True, force=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.following = new_value >= self.max_scroll_y - 1
        if new_value >= self.max_scroll_y - 1 > old_value:
            self.post_message(self.AtBottom(self))
        if new_value < LOAD_MARGIN and self.has_older and not self.fetching:
            self.fetching = True
            self.post_message(self.NeedOlder(self))

    def _entry_strips(self, entry: Entry) -> list[Strip]:
        strips = self._strips.get(entry.key)
        if strips is not None:
            return strips
        if entry.text is None:
            self._build(entry)
        assert entry.text is not None
        console = self.app.console
        width = max(1, self._width)
        indent = self._indent(entry)
        pad = [Segment(" " * indent)] if indent else []

        def strip(part: Text, indented: bool) -> Strip:
            segments = list(part.render(console, end=""))
            if indented and pad:
                return Strip(pad + segments, indent + part.cell_len)
            return Strip(segments, part.cell_len)

        strips = []
        day = entry.day
        if entry.sep and day is not None:
            strips.append(strip(sep_text(day), False))
        lines = entry.text.split("\n", allow_blank=True)
        for i, line in enumerate(lines):
            first = width if i == 0 else width - indent
            if entry.lens[i] <= first:
                strips.append(strip(line, i > 0))
                continue
            for row, (start, end) in enumerate(wrap_spans(line.plain, first, width - indent)):
                strips.append(strip(line[start:end], i > 0 or row > 0))
        if len(self._strips) > 2_000:
            self._strips.clear()
        self._strips[entry.key] = strips
        return strips

    def render_line(self, y: int) -> Strip:
        """Return screen line `y` (only visible entries are ever folded)."""
        line = y + round(self.scroll_y)
        width = self.scrollable_content_region.width
        base = self.rich_style
        if line >= self._cum[-1] or not self.entries:
            return Strip.blank(width, base)
        index = bisect.bisect_right(self._cum, line) - 1
        entry = self.entries[index]
        strips = self._entry_strips(entry)
        sub = line - self._cum[index]
        strip = strips[sub] if sub < len(strips) else Strip([Segment("")])
        return strip.crop_extend(0, width, base).apply_style(base)

    def plain_lines(self) -> list[str]:
        """Return every entry's text (for tests and the tmux check)."""
        return [e.text.plain if e.text is not None else "" for e in self.entries]

    def screen_lines(self) -> list[str]:
        """Return the text of the rows on screen, as drawn (for tests)."""
        height = self.scrollable_content_region.height
        return [self.render_line(y).text.rstrip() for y in range(height)]


def sep_text(day: dt.date) -> Text:
    """Return the date separator line for a day."""
    return Text(f"── {day.strftime('%A %d %B %Y')} ──", style=Style(dim=True))
