"""The TUI's message view: a virtualised scroll view that renders only visible lines.

Theory of operation: a view holds a list of entries (messages and notices),
each with its display text built once (rich Text) and the cell length of each
of its logical lines. The height of an entry at a width is then arithmetic
(lines are folded at the width, never word-wrapped), so a resize of a view of
10,000 entries costs a pass over integers. A prefix sum of heights maps a
screen line to an entry by bisection; only entries on screen are folded into
strips, and those strips are cached until the width or the entry changes.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from chinwag import events as ev

#: Entries kept in memory per view; beyond it the oldest are dropped (and reload on scroll).
MAX_VIEW_ENTRIES = 20_000
#: How many entries are dropped at once when a view is over MAX_VIEW_ENTRIES.
DROP_CHUNK = 5_000
#: Within this many lines of the top, a view asks for older history.
LOAD_MARGIN = 3

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
    lens: list[int] = field(default_factory=list)
    #: Height in rows at width `_at` (a cache; -1: not computed).
    rows: int = -1
    at: int = 0

    @property
    def day(self) -> dt.date | None:
        """Local date of a message entry."""
        return None if self.msg is None else dt.datetime.fromtimestamp(self.msg.ts).date()


def fold_offsets(plain: str, width: int) -> list[int]:
    """Return the character offsets where a line of text is folded at `width` cells."""
    if width < 1:
        width = 1
    if plain.isascii():
        return list(range(width, len(plain), width))
    offsets: list[int] = []
    used = 0
    for i, char in enumerate(plain):
        w = cell_len(char)
        if used + w > width and used:
            offsets.append(i)
            used = 0
        used += w
    return offsets


def rows_of(length: int, width: int) -> int:
    """Return how many rows a line of `length` cells takes when folded at `width`."""
    return max(1, -(-length // max(1, width)))


class MessageView(ScrollView, can_focus=True):
    """A scrollable list of entries; renders only what is on screen."""

    DEFAULT_CSS = """
    MessageView { height: 1fr; }
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
        self, name: str, render_entry: Callable[[Entry], Text], *, id: str | None = None
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

    # --- content ------------------------------------------------------------

    def _build(self, entry: Entry) -> None:
        entry.text = self._render_entry(entry)
        entry.lens = [cell_len(part) for part in entry.text.plain.split("\n")]
        entry.rows = -1
        self._strips.pop(entry.key, None)

    def _height(self, entry: Entry) -> int:
        if entry.rows < 0 or entry.at != self._width:
            entry.at = self._width
            lens = entry.lens
            entry.rows = (
                rows_of(lens[0], self._width)
                if len(lens) == 1
                else sum(rows_of(n, self._width) for n in lens)
            )
        return entry.rows

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
        follow = self.scroll_y >= self.max_scroll_y - 1
        last_day = next((e.day for e in reversed(self.entries) if e.msg is not None), None)
        for entry in new:
            if entry.msg is not None:
                day = entry.day
                entry.sep = day != last_day
                last_day = day
            self._build(entry)
            self.entries.append(entry)
            self._cum.append(self._cum[-1] + self._height(entry))
        if len(self.entries) > MAX_VIEW_ENTRIES:
            self._drop_oldest()
        self._resized()
        if follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        self.refresh()

    def prepend(self, entries: Iterable[Entry]) -> None:
        """Add older entries at the top without moving what is on screen."""
        new = list(entries)
        if not new:
            return
        was_y = self.scroll_y
        last_day: dt.date | None = None
        for entry in new:
            if entry.msg is not None:
                day = entry.day
                entry.sep = day != last_day
                last_day = day
            self._build(entry)
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
        if width != self._width:
            at_bottom = self.scroll_y >= self.max_scroll_y - 1
            self._width = width
            self._strips.clear()
            self._relayout()
            if at_bottom:
                self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
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
        strips = []
        for line in entry.text.split("\n", allow_blank=True):
            offsets = fold_offsets(line.plain, self._width)
            parts = line.divide(offsets) if offsets else [line]
            for part in parts:
                segments = list(part.render(console, end=""))
                strips.append(Strip(segments, part.cell_len))
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


def sep_text(day: dt.date) -> Text:
    """Return the date separator line for a day."""
    return Text(f"── {day.strftime('%A %d %B %Y')} ──", style=Style(dim=True))
