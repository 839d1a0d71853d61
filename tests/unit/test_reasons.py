"""The one reason-code enum: docs/protocol.md lists it, and the code uses no other codes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from chinwag.errors import RemoteProtocolError
from chinwag.protocol.reasons import SENT, Reason

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"


def _section_11_tables() -> tuple[set[str], set[str]]:
    """Return (codes of the 'sent in bye' table, codes of the 'never sent' table)."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 11. Closing") : text.index("## 12. Connection management")]
    sent_part, never_part = section.split("Codes that are **never sent**", 1)

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
        found += [
            (a.lineno, a.value)
            for a in args
            if isinstance(a, ast.Constant) and isinstance(a.value, str)
        ]
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
