"""Starting the browser and showing the login URL as a QR code in the terminal."""

from __future__ import annotations

import html
import logging
import os
import sys
import threading
import webbrowser
from pathlib import Path
from typing import TextIO

import segno

log = logging.getLogger(__name__)

#: An owner-only page in the data directory that forwards the browser to the login URL.
OPEN_PAGE = "web-open.html"


def display_available() -> bool:
    """Return whether a browser window could be shown (a desktop session on Linux/BSD)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def write_open_page(url: str, data_dir: Path) -> Path:
    """Write (mode 0600) a page that forwards to url; return its path.

    The browser is given this file rather than the URL itself: a command line
    is readable by every user of the machine (`ps`), a 0600 file is not.
    """
    path = data_dir / OPEN_PAGE
    body = (
        '<!doctype html><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={html.escape(url, quote=True)}">'
        "<title>chinwag</title><p>Opening chinwag…</p>"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    os.chmod(path, 0o600)
    return path


def open_browser(url: str, data_dir: Path) -> bool:
    """Open the login URL in the user's browser (in a thread: it may block); False if no display."""
    if not display_available():
        return False
    try:
        page = write_open_page(url, data_dir)
    except OSError as exc:
        log.warning("cannot write %s: %s", OPEN_PAGE, exc)
        return False
    threading.Thread(
        target=webbrowser.open, args=(page.as_uri(),), name="open-browser", daemon=True
    ).start()
    return True


def print_qr(url: str, out: TextIO) -> None:
    """Print url as a QR code a phone can scan from the terminal."""
    try:
        segno.make(url, error="l").terminal(out=out, compact=True)
    except (OSError, ValueError) as exc:  # a closed stream or an odd encoding: the URL is printed
        log.info("cannot print the QR code: %s", exc)
