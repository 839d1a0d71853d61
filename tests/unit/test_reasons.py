"""The one reason-code enum: docs/protocol.md lists it, and the code uses no other codes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from chinwag.errors import RemoteProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import SENT, FileEndReason, FileRefusal, Reason, RelayRefusal

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
_FID = bytes(range(16))


def _section_11_tables() -> tuple[set[str], set[str]]:
    """Return (codes of the 'sent in bye' table, codes of the 'never sent' table)."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 11. Closing") : text.index("## 12. Connection management")]
    sent_part, never_part = section.split("Codes that are **never sent**", 1)
    never_part = never_part.split("**Relay codes.**", 1)[0]  # their own enum, tested below

    def first_cells(part: str) -> set[str]:
        codes: set[str] = set()
        for line in part.splitlines():
            row = re.match(r"\| ([^|]+) \|", line)
            if row is not None:
                codes.update(re.findall(r"`([a-z_]+)`", row.group(1)))
        return codes

    return first_cells(sent_part), first_cells(never_part)


def test_docs_list_exactly_the_reason_enum() -> None:
    """Section 11 lists every Reason once: SENT in the first table, the rest in the second."""
    sent, never = _section_11_tables()
    assert sent == {r.value for r in SENT}
    assert never == {r.value for r in Reason} - sent
    assert not sent & never


def test_remote_error_default_code_is_a_reason() -> None:
    assert RemoteProtocolError("x").code in set(Reason)


def _strings(args: list[ast.expr]) -> list[tuple[int, str]]:
    """Return (line, text) of the string literals among args."""
    consts = [c for c in args if isinstance(c, ast.Constant)]
    return [(c.lineno, c.value) for c in consts if isinstance(c.value, str)]


def _literal_codes(path: Path) -> list[tuple[int, str]]:
    """Return string literals used as reason codes: RemoteProtocolError(_, "x"), x.close("x")."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        args: list[ast.expr] = []
        if name == "RemoteProtocolError":
            args = node.args[1:2] + [k.value for k in node.keywords if k.arg == "code"]
        elif name in ("close", "stop") and isinstance(func, ast.Attribute):
            args = node.args[:1] + [k.value for k in node.keywords if k.arg == "reason"]
        elif name == "Bye":
            args = [k.value for k in node.keywords if k.arg == "reason"]
        found += _strings(args)
    return found


def test_every_literal_reason_code_in_the_source_is_a_member() -> None:
    """A code written as a bare string anywhere in src/ must still be one of the enum."""
    members = {r.value for r in Reason}
    stray = [
        f"{path.relative_to(ROOT)}:{line}: {code!r}"
        for path in sorted((ROOT / "src" / "chinwag").rglob("*.py"))
        for line, code in _literal_codes(path)
        if code not in members
    ]
    assert not stray, f"reason codes missing from protocol/reasons.py: {stray}"


def test_the_literal_scanner_sees_codes(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        'conn.close("nope")\nraise RemoteProtocolError("m", "bad_x")\nBye(reason="zz")\n',
        encoding="utf-8",
    )
    assert [code for _, code in _literal_codes(probe)] == ["nope", "bad_x", "zz"]


# --- file codes: fnak (FileRefusal) and fend (FileEndReason) --------------------------


def _file_code_tables() -> dict[str, set[str]]:
    """Return the codes of section 6's "File codes" tables, by frame (`fnak`, `fend`)."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("**File codes.**") : text.index("## 7. Chat messages")]
    tables: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in section.splitlines():
        header = re.match(r"\| `(f[a-z]+)` reason \|", line)
        if header is not None:
            current = tables.setdefault(header.group(1), set())
        elif not line.startswith("|"):
            current = None
        elif current is not None:
            row = re.match(r"\| ([^|]+) \|", line)
            if row is not None:
                current.update(re.findall(r"`([a-z_]+)`", row.group(1)))
    return tables


def test_docs_list_exactly_the_file_code_enums() -> None:
    """Section 6 lists every FileRefusal in the `fnak` table and every FileEndReason in `fend`."""
    tables = _file_code_tables()
    assert tables == {
        "fnak": {r.value for r in FileRefusal},
        "fend": {r.value for r in FileEndReason},
    }


def test_file_codes_are_not_connection_reasons() -> None:
    """A file code never reads as a close reason (they are separate sets)."""
    reasons = {r.value for r in Reason}
    assert not reasons & {r.value for r in FileRefusal}
    assert not reasons & {r.value for r in FileEndReason}


@pytest.mark.parametrize("code", ["unknown", "done", "some_newer_code", "x" * 64])
def test_a_file_code_the_receiver_does_not_know_still_decodes(code: str) -> None:
    """The codec bounds `reason` but takes any code: a newer peer's is no malformed frame."""
    for frame in (m.FileNak(fid=_FID, idx=3, reason=code), m.FileEnd(fid=_FID, reason=code)):
        back = m.decode_frame(m.encode(frame))
        assert type(back) is type(frame) and back.reason == code


def test_file_codes_round_trip_as_their_member() -> None:
    for nak in FileRefusal:
        assert m.decode_frame(m.encode(m.FileNak(fid=_FID, idx=0, reason=nak))) == m.FileNak(
            fid=_FID, idx=0, reason=nak
        )
    for end in FileEndReason:
        back = m.decode_frame(m.encode(m.FileEnd(fid=_FID, reason=end)))
        assert isinstance(back, m.FileEnd) and back.reason == end


#: Calls whose argument (by position, or keyword) is a file code: m.FileNak/m.FileEnd's
#: reason, Offers.tell_author's reason, Downloader.stop's tell.
_FILE_CODE_ARGS: dict[str, tuple[int, str]] = {
    "FileNak": (2, "reason"),
    "FileEnd": (1, "reason"),
    "tell_author": (1, "reason"),
    "stop": (1, "tell"),
}
#: Names (variables, parameters, attributes) that hold a file code where files/ compares one.
_FILE_CODE_NAMES = {"reason", "tell", "result"}


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def _bare_file_codes(path: Path) -> list[tuple[int, str]]:
    """Return string literals written where a file code goes (they must be enum members)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        args: list[ast.expr] = []
        if isinstance(node, ast.Call) and _name_of(node.func) in _FILE_CODE_ARGS:
            pos, kw = _FILE_CODE_ARGS[_name_of(node.func)]
            args = node.args[pos : pos + 1] + [k.value for k in node.keywords if k.arg == kw]
        elif isinstance(node, ast.Compare) and _name_of(node.left) in _FILE_CODE_NAMES:
            for right in node.comparators:
                args += right.elts if isinstance(right, ast.Tuple | ast.List | ast.Set) else [right]
        found += _strings(args)
    return found


def test_no_file_code_is_written_as_a_bare_string() -> None:
    """files/ writes and compares file codes as FileRefusal/FileEndReason members only."""
    paths = [*sorted((ROOT / "src" / "chinwag" / "files").glob("*.py"))]
    paths.append(ROOT / "src" / "chinwag" / "protocol" / "transfer.py")
    stray = [
        f"{path.relative_to(ROOT)}:{line}: {code!r}"
        for path in paths
        for line, code in _bare_file_codes(path)
    ]
    assert not stray, f"file codes written as bare strings (use protocol/reasons.py): {stray}"


def test_the_file_code_scanner_sees_codes(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        'conn.send_frame(m.FileNak(fid=f, idx=0, reason="busy"))\n'
        'm.FileEnd(f, "gone")\n'
        'self.offers.tell_author(t, "done")\n'
        'self.stop(t, "cancelled", remove=True)\n'
        'if reason == "withdrawn" or frame.reason in ("rejected", "x"):\n    pass\n'
        "m.FileEnd(fid=f, reason=FileEndReason.DONE)\n",
        encoding="utf-8",
    )
    found = sorted(code for _, code in _bare_file_codes(probe))
    assert found == ["busy", "cancelled", "done", "gone", "rejected", "withdrawn", "x"]


# --- relay codes: rsvno / cno (RelayRefusal) ------------------------------------------


def test_docs_list_exactly_the_relay_refusal_enum() -> None:
    """Section 11's "Relay codes" table lists every RelayRefusal, and no other code."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("**Relay codes.**") : text.index("## 12. Connection management")]
    codes: set[str] = set()
    for line in section.splitlines():
        row = re.match(r"\| ([^|]+) \|", line)
        if row is not None:
            codes.update(re.findall(r"`([a-z_]+)`", row.group(1)))
    assert codes == {r.value for r in RelayRefusal}
    assert not codes & {r.value for r in Reason}


def test_relay_codes_round_trip_and_unknown_ones_decode() -> None:
    for code in [*RelayRefusal, "some_newer_code"]:
        for frame in (m.ReserveNo(reason=code), m.CircuitNo(reason=code)):
            assert m.decode_frame(m.encode(frame)) == frame
