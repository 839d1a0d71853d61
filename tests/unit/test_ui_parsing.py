"""ui/stdio.py's line splitter and ui/jsonl.py's command parser."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit_support import FUZZ

from chinwag import limits
from chinwag.errors import ChinwagError
from chinwag.ui.jsonl import NickCmd, PeersCmd, Quit, Send, parse_command
from chinwag.ui.stdio import LineTooLong, _Splitter

Item = bytes | type[LineTooLong]


def split(chunks: list[bytes], max_line: int) -> list[Item]:
    """Run a fresh splitter over chunks; LineTooLong instances become the class (comparable)."""
    s = _Splitter()
    out: list[bytes | LineTooLong] = []
    for chunk in chunks:
        out += s.feed(chunk, max_line)
    out += s.finish(max_line)
    return [LineTooLong if isinstance(x, LineTooLong) else x for x in out]


def reference(data: bytes, max_line: int) -> list[Item]:
    """What the splitter must produce, from the whole input at once."""
    *lines, tail = data.split(b"\n")
    out: list[Item] = [LineTooLong if len(x) > max_line else x for x in lines]
    if tail:
        out.append(LineTooLong if len(tail) > max_line else tail)
    return out


# --- _Splitter ------------------------------------------------------------------


def test_lines_in_one_chunk() -> None:
    assert split([b"one\ntwo\n\nthree\n"], 100) == [b"one", b"two", b"", b"three"]


def test_lines_split_across_chunks() -> None:
    s = _Splitter()
    assert s.feed(b"hel", 100) == []
    assert s.feed(b"lo\nwor", 100) == [b"hello"]
    assert s.feed(b"ld", 100) == []
    assert s.feed(b"\n", 100) == [b"world"]
    assert s.finish(100) == []


def test_unterminated_last_line_is_returned_at_the_end() -> None:
    assert split([b"a\nlast"], 100) == [b"a", b"last"]


def test_byte_by_byte_equals_whole() -> None:
    data = b"short\n" + b"x" * 20 + b"\nok\n\n" + b"y" * 30 + b"\nend"
    per_byte = [data[i : i + 1] for i in range(len(data))]
    assert split(per_byte, 8) == split([data], 8) == reference(data, 8)


def test_line_of_exactly_max_is_accepted() -> None:
    assert split([b"x" * 8 + b"\n"], 8) == [b"x" * 8]
    assert split([b"x" * 9 + b"\n"], 8) == [LineTooLong]


def test_over_long_line_gives_one_error_then_resyncs_at_the_newline() -> None:
    s = _Splitter()
    out = s.feed(b"x" * 20, 8)
    assert len(out) == 1 and isinstance(out[0], LineTooLong)
    assert s.buf == b""  # nothing over the bound is kept
    assert s.feed(b"y" * 20, 8) == []  # the same line goes on: no second error
    assert s.feed(b"zz", 8) == []
    assert s.feed(b"\nok\n", 8) == [b"ok"]  # the rest of the long line is dropped
    assert s.finish(8) == []


def test_over_long_line_within_one_chunk() -> None:
    assert split([b"x" * 20 + b"\nok\n"], 8) == [LineTooLong, b"ok"]


def test_over_long_line_that_grows_across_chunks() -> None:
    assert split([b"x" * 6, b"xxxx\nok\n"], 8) == [LineTooLong, b"ok"]


def test_over_long_unterminated_line_at_the_end() -> None:
    assert split([b"ok\n" + b"x" * 20], 8) == [b"ok", LineTooLong]


def test_buffer_stays_bounded() -> None:
    s = _Splitter()
    for _ in range(1000):
        s.feed(b"x" * 1000, limits.MAX_COMMAND_LINE)
        assert len(s.buf) <= limits.MAX_COMMAND_LINE + 1000


@FUZZ
@given(
    st.lists(st.sampled_from([b"a", b"bb", b"\n", b"ccccccccc", b"\n\n"]), max_size=30),
    st.lists(st.integers(1, 7), min_size=1, max_size=10),
    st.integers(1, 10),
)
def test_any_chunking_gives_the_reference_lines(
    parts: list[bytes], sizes: list[int], max_line: int
) -> None:
    data = b"".join(parts)
    chunks, i, k = [], 0, 0
    while i < len(data):
        chunks.append(data[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    assert split(chunks, max_line) == reference(data, max_line)


# --- parse_command ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b'{"cmd": "send", "text": "hi"}', Send(text="hi")),
        (b'{"cmd": "send", "text": "hi", "room": "dev"}', Send(text="hi", room="dev")),
        (b'{"cmd": "send", "text": "hi", "room": null}', Send(text="hi")),
        (b'{"cmd": "peers"}', PeersCmd()),
        (b'{"cmd": "nick", "nick": "bob"}', NickCmd(nick="bob")),
        (b'{"cmd": "quit"}', Quit()),
        (b'  {"cmd": "quit"}  ', Quit()),  # surrounding whitespace is fine
        (b'{"text": "hi", "cmd": "send"}', Send(text="hi")),  # any field order
        (b'{"cmd": "quit", "future": 1}', Quit()),  # unknown fields ignored
    ],
)
def test_commands(line: bytes, command: object) -> None:
    assert parse_command(line) == command


def error_of(line: bytes) -> str:
    with pytest.raises(ChinwagError) as info:
        parse_command(line)
    return str(info.value)


@pytest.mark.parametrize("line", [b'{"cmd": "dance"}', b'{"cmd": "SEND", "text": "x"}'])
def test_unknown_command(line: bytes) -> None:
    message = error_of(line)
    assert "unknown command" in message
    assert (
        "join, leave, lookup, members, nick, peers, quit, reject_file, rooms, search, send"
        in message
    )


def test_unknown_command_name_is_truncated_in_the_error() -> None:
    line = msgspec.json.encode({"cmd": "x" * 10_000})
    message = error_of(line)
    assert "x" * 41 not in message
    # The known commands are listed after the (truncated) name: the bound grows with them.
    assert len(message) < 400


@pytest.mark.parametrize("line", [b'{"cmd": "send"}', b'{"cmd": "nick"}'])
def test_missing_field(line: bytes) -> None:
    assert "malformed" in error_of(line)


@pytest.mark.parametrize(
    "line",
    [
        b'{"cmd": "send", "text": 5}',
        b'{"cmd": "send", "text": "hi", "room": 1}',
        b'{"cmd": "nick", "nick": ["bob"]}',
        b'{"cmd": "send", "text": null}',
    ],
)
def test_wrong_type(line: bytes) -> None:
    assert "malformed" in error_of(line)


@pytest.mark.parametrize(
    "line", [b"", b"{", b"not json", b'{"cmd": "quit"', b"\xff\xfe", b'{"cmd": "quit"}}']
)
def test_invalid_json(line: bytes) -> None:
    assert error_of(line) == "invalid JSON"


@pytest.mark.parametrize(
    "line", [b"[]", b"5", b'"quit"', b"null", b"{}", b'{"command": "quit"}', b"[1, 2]"]
)
def test_non_object_or_no_cmd(line: bytes) -> None:
    assert '"cmd" field' in error_of(line)


@pytest.mark.parametrize("cmd", ["5", "null", "true", "1.5"])
def test_non_string_command_name(cmd: str) -> None:
    assert "unknown command" in error_of(b'{"cmd": ' + cmd.encode() + b"}")


@pytest.mark.parametrize("cmd", ["[]", "{}", '["send"]'])
def test_unhashable_command_name_is_a_chinwag_error(cmd: str) -> None:
    """Regression: a list or object as cmd once raised TypeError (unhashable)."""
    assert "unknown command" in error_of(b'{"cmd": ' + cmd.encode() + b"}")


def test_every_truncation_of_a_command_is_an_error_never_a_crash() -> None:
    line = b'{"cmd": "send", "text": "hello", "room": "dev"}'
    for i in range(len(line)):
        with pytest.raises(ChinwagError):
            parse_command(line[:i])


@pytest.mark.parametrize("garbage", [b"x", b"{}", b'{"cmd": "quit"}', b"\x00"])
def test_trailing_garbage_is_invalid_json(garbage: bytes) -> None:
    assert error_of(b'{"cmd": "quit"}' + garbage) == "invalid JSON"


def test_progress_line_shows_bytes_rate_and_time_left() -> None:
    from chinwag import events as ev
    from chinwag.ui.format import progress_line

    p = ev.FileProgress(id="ab" * 16, bytes=250_000_000, total=1_000_000_000, rate=50_000_000.0)
    assert progress_line("big.iso", p) == "big.iso 25% 250.0 MB/1.0 GB 50.0 MB/s 0:00:15 left"
    start = ev.FileProgress(id="ab" * 16, bytes=0, total=10, rate=0.0)
    assert progress_line("x\x1b[2J", start) == "x[2J 0% 0 B/10 B"


# --- impossible message times (hardening) -----------------------------------------


@pytest.mark.parametrize("ts", [1e18, -1e18, float("nan"), float("inf"), 253_402_300_800.0])
def test_line_mode_and_json_clients_get_a_time_they_can_render(ts: float, tmp_path: Path) -> None:
    from chinwag import events as ev
    from chinwag.node import Node, NodeConfig
    from chinwag.ui.line import LineUI

    node = Node(NodeConfig(data_dir=tmp_path, discovery=False))
    got: list[ev.NodeEvent] = []
    node.subscribe(got.append)
    msg = ev.Message(
        id="0" * 32,
        room="general",
        peer_id="b" * 52,
        nick="bob",
        ts=ts,
        text="hi",
        own=False,
        seq=1,
    )
    node._emit(msg)  # what the JSON-lines API and every UI receive
    [out] = got
    assert isinstance(out, ev.Message)
    assert limits.MIN_TS_MS / 1000 <= out.ts <= limits.MAX_TS_MS / 1000
    # Line mode renders even an unclamped time.
    line = LineUI(node, sink=lambda _line: None).format_message(msg)
    assert "bob" in line and "hi" in line
