"""Reading stdin line by line without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import threading
from collections.abc import AsyncIterator
from typing import BinaryIO

from chinwag import limits


class LineTooLong(Exception):
    """A line exceeded MAX_COMMAND_LINE bytes; it was discarded."""


async def stdin_lines(
    max_line: int = limits.MAX_COMMAND_LINE,
) -> AsyncIterator[bytes | LineTooLong]:
    """Yield stdin lines (without newline); an over-long line yields LineTooLong instead."""
    async for chunk in _stdin_chunks():
        for item in _splitter.feed(chunk, max_line):
            yield item
    for item in _splitter.finish(max_line):
        yield item


class _Splitter:
    """Split a byte stream into bounded lines."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skipping = False

    def feed(self, chunk: bytes, max_line: int) -> list[bytes | LineTooLong]:
        out: list[bytes | LineTooLong] = []
        self.buf += chunk
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > max_line:
                    if not self.skipping:
                        out.append(LineTooLong())
                    self.skipping = True
                    self.buf.clear()
                return out
            line = bytes(self.buf[:nl])
            del self.buf[: nl + 1]
            if self.skipping:
                self.skipping = False
                continue
            if len(line) > max_line:
                out.append(LineTooLong())
            else:
                out.append(line)

    def finish(self, max_line: int) -> list[bytes | LineTooLong]:
        if self.buf and not self.skipping:
            line = bytes(self.buf)
            self.buf.clear()
            return [line if len(line) <= max_line else LineTooLong()]
        return []


_splitter = _Splitter()


def _stdin_kind() -> str:
    """Return "pipe" (FIFO or socket), "other" (file, tty, device) or "closed"."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return "closed"
    return "pipe" if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else "other"


def _stdin_file() -> BinaryIO:
    """Return fd 0 as a file the loop may watch (and close) without closing fd 0."""
    return open(0, "rb", buffering=0, closefd=False)


async def _stdin_chunks() -> AsyncIterator[bytes]:
    kind = _stdin_kind()
    if kind == "closed":
        return
    if kind == "other":
        # The loop can watch only pipes and sockets (uvloop even aborts on files
        # and /dev/null): read everything else from a thread.
        async for chunk in _threaded_chunks():
            yield chunk
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    pipe = _stdin_file()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    while chunk := await reader.read(2**16):
        yield chunk


def _pump(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes], fd: int = 0) -> None:
    """Read fd into queue until end of input (b"" queued last) or until the loop is closed."""
    while True:
        try:
            chunk = os.read(fd, 2**16)
        except (OSError, ValueError):
            chunk = b""
        put = queue.put(chunk)
        try:
            fut = asyncio.run_coroutine_threadsafe(put, loop)
        except RuntimeError:  # the loop is closed (chinwag is stopping): nobody reads
            put.close()
            return
        with contextlib.suppress(Exception):
            fut.result()
        if not chunk:
            return


async def _threaded_chunks() -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
    threading.Thread(target=_pump, args=(loop, queue), name="stdin", daemon=True).start()
    while chunk := await queue.get():
        yield chunk


def silence_stdout() -> None:
    """Point standard output at /dev/null (its reader went away), so that later writes and
    the interpreter's flush at exit do not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
