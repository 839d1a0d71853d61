"""`chinwag id | head -1`: a reader that goes away ends the command quietly (hardening)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_into_closed_pipe(args: list[str], stdin: bytes | None = None) -> None:
    """Run `chinwag ARGS` with stdout a pipe whose reader is gone; expect exit 0, no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head -1`) is gone before anything is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "chinwag", *args],
            input=stdin,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0


def test_id_into_a_closed_pipe_ends_without_a_traceback(tmp_path: Path) -> None:
    run_into_closed_pipe(["--data-dir", str(tmp_path / "d"), "id"])


def test_line_mode_into_a_closed_pipe_runs_on_without_tracebacks(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path / "d"), "--plain", "--no-discovery", "--bind", "127.0.0.1"]
    run_into_closed_pipe(
        [*args, "--port", "0", "--no-dht"], stdin=b"hello\n/peers\nsecond\n/quit\n"
    )
