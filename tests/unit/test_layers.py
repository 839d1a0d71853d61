"""The house's layer rules, checked by parsing imports (DESIGN.md section 1)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "chinwag"

#: What protocol/ may never import: I/O, clocks, threads, and the adapter layers.
FORBIDDEN_IN_PROTOCOL = (
    "asyncio",
    "socket",
    "sqlite3",
    "selectors",
    "threading",
    "time",
    "chinwag.net",
    "chinwag.store",
    "chinwag.ui",
    "chinwag.node",
)


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Return every module a file imports (absolute names; relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if package is None:
        package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parents = parts[: len(parts) - node.level + 1]
                base = ".".join([*parents, base] if base else parents)
            found.add(base)
            # `from chinwag import net` imports the package chinwag.net.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def forbidden(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_protocol_imports_no_io_and_no_adapter() -> None:
    """protocol/ stays sans-IO: no asyncio, socket, sqlite3, clock, thread, net/, store/, ui/."""
    files = sorted((SRC / "protocol").glob("*.py"))
    assert files
    bad = {
        f"{path.name}: {module}"
        for path in files
        for module in imported_modules(path)
        if forbidden(module, FORBIDDEN_IN_PROTOCOL)
    }
    assert not bad, f"protocol/ imports what it must not: {sorted(bad)}"


def test_the_import_checker_sees_forbidden_imports(tmp_path: Path) -> None:
    """The checker is not blind: each import form is caught."""
    sample = tmp_path / "probe.py"
    text = (
        "import asyncio\nfrom socket import socket\nimport sqlite3 as db\n"
        "from chinwag.net import connection\nfrom ..store import db as store\n"
        "from chinwag import ui\n"
    )
    sample.write_text(text, encoding="utf-8")
    found = {
        m
        for m in imported_modules(sample, "chinwag.protocol")
        if forbidden(m, FORBIDDEN_IN_PROTOCOL)
    }
    assert {"asyncio", "socket", "sqlite3", "chinwag.net", "chinwag.store", "chinwag.ui"} <= {
        m.split(".")[0] if not m.startswith("chinwag") else ".".join(m.split(".")[:2])
        for m in found
    }


def test_net_has_no_import_circle() -> None:
    """connection.py does not import manager.py (its owner is a Protocol it declares)."""
    conn = imported_modules(SRC / "net" / "connection.py")
    assert not any(forbidden(m, ("chinwag.net.manager",)) for m in conn)


def test_the_layers_above_net_see_only_net_link() -> None:
    """history, files and rooms depend on net/link.py, not on the concrete net classes."""
    concrete = ("chinwag.net.connection", "chinwag.net.manager", "chinwag.net.discovery")
    paths = [SRC / "history.py", SRC / "rooms.py", SRC / "files.py"]
    paths += sorted((SRC / "files").glob("*.py"))  # if files.py becomes a package
    bad = {
        f"{path.name}: {module}"
        for path in paths
        if path.exists()
        for module in imported_modules(path)
        if forbidden(module, concrete)
    }
    assert not bad, sorted(bad)
