"""Capture every frame crossing a bridge, and read the capture back.

Run as a script inside the bridge's namespace:

    ip netns exec SWITCH_NS python capture.py br0 OUT_FILE [MAX_SECONDS]

It opens an AF_PACKET raw socket bound to the device (in promiscuous mode, so
frames forwarded between bridge ports are seen too, not only those for the
bridge itself), prints `ready` on stdout once capturing, and appends each frame
to OUT_FILE as a 4-byte big-endian length followed by the frame. It stops when
its stdin closes, on SIGTERM, or after MAX_SECONDS, then prints `done N`.

Imported, it offers `BridgeCapture` (run the script from asyncio, inside a
namespace) and `read_frames` / `tcp_payloads` to analyse the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
SCRIPT = Path(__file__).resolve()
MAX_FRAME = 65536  # bytes per recv; larger than any frame on a 1500-byte-MTU veth


def capture(ifname: str, out: Path, max_seconds: float) -> int:
    """Capture frames on ifname into out until stdin closes, SIGTERM or max_seconds."""
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    mreq = struct.pack("iHH8s", socket.if_nametoindex(ifname), PACKET_MR_PROMISC, 0, b"")
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    count = 0
    deadline = time.monotonic() + max_seconds
    with out.open("ab") as f:
        print("ready", flush=True)
        while not stop and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                if key.data == "stdin":
                    if not os.read(sys.stdin.fileno(), 4096):
                        stop = True
                        sel.unregister(key.fileobj)
                    continue
                count += _drain(sock, f)
        count += _drain(sock, f)
    print(f"done {count}", flush=True)
    return count


def _drain(sock: socket.socket, f: BinaryIO) -> int:
    """Write every frame waiting on the socket to f; return how many."""
    n = 0
    while True:
        try:
            frame = sock.recv(MAX_FRAME)
        except BlockingIOError:
            return n
        f.write(struct.pack(">I", len(frame)) + frame)
        n += 1


def read_frames(path: Path) -> Iterator[bytes]:
    """Yield the frames stored in a capture file."""
    data = path.read_bytes()
    pos = 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        yield data[pos : pos + n]
        pos += n


@dataclass(frozen=True)
class TcpSegment:
    """The parts of a captured IPv4 TCP segment the tests look at."""

    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def tcp_payloads(frames: Iterable[bytes]) -> list[TcpSegment]:
    """The IPv4 TCP segments (with their payloads) among Ethernet frames."""
    out: list[TcpSegment] = []
    for frame in frames:
        if len(frame) < 14 + 20 or struct.unpack_from(">H", frame, 12)[0] != ETH_P_IP:
            continue
        ip_hdr = frame[14:]
        ihl = (ip_hdr[0] & 0x0F) * 4
        total_len = struct.unpack_from(">H", ip_hdr, 2)[0]
        if ip_hdr[9] != socket.IPPROTO_TCP or len(ip_hdr) < ihl + 20:
            continue
        tcp = ip_hdr[ihl:total_len]
        sport, dport = struct.unpack_from(">HH", tcp, 0)
        data_off = (tcp[12] >> 4) * 4
        out.append(
            TcpSegment(
                socket.inet_ntoa(ip_hdr[12:16]),
                sport,
                socket.inet_ntoa(ip_hdr[16:20]),
                dport,
                bytes(tcp[data_off:]),
            )
        )
    return out


class BridgeCapture:
    """Run this script inside a namespace from asyncio: start, then stop, then read."""

    def __init__(self, netns: str, ifname: str, out: Path, max_seconds: float = 120.0) -> None:
        self.netns = netns
        self.ifname = ifname
        self.out = out
        self.max_seconds = max_seconds
        self.proc: asyncio.subprocess.Process | None = None
        self.frame_count: int | None = None

    async def start(self, within: float = 10.0) -> None:
        """Start capturing; return once the socket is bound and capturing."""
        argv = ["ip", "netns", "exec", self.netns, sys.executable, str(SCRIPT),
                self.ifname, str(self.out), str(self.max_seconds)]  # fmt: skip
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if line.strip() != b"ready":
            await self.stop()
            raise RuntimeError(f"capture on {self.netns}/{self.ifname} did not start: {line!r}")

    async def stop(self, within: float = 10.0) -> None:
        """Stop capturing (close its stdin) and wait until the file is complete."""
        if self.proc is None or self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            rest = await asyncio.wait_for(self.proc.stdout.read(), within)
            await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
            raise
        for word in rest.split(b"\n"):
            if word.startswith(b"done "):
                self.frame_count = int(word.split()[1])

    def frames(self) -> list[bytes]:
        """Every frame captured so far."""
        return list(read_frames(self.out)) if self.out.exists() else []


def main(argv: list[str]) -> int:
    """Command-line entry: capture.py IFNAME OUT_FILE [MAX_SECONDS]."""
    if len(argv) not in (2, 3):
        print("usage: capture.py IFNAME OUT_FILE [MAX_SECONDS]", file=sys.stderr)
        return 2
    max_seconds = float(argv[2]) if len(argv) == 3 else 120.0
    capture(argv[0], Path(argv[1]), max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
