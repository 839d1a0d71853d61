"""Self-tests of the namespace lab itself (no chinwag involved).

They prove the properties the chinwag LAN tests rely on: hosts on one bridge
reach each other by unicast and by broadcast, a cut link really cuts, and
hosts on different segments cannot reach each other at the IP level.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from capture import BridgeCapture, tcp_payloads
from netlab import NetLab

pytestmark = [pytest.mark.lan, pytest.mark.timeout(60)]

PROBE_TIMEOUT = 2.0  # seconds for one connect / receive inside the lab

UDP_LISTEN = textwrap.dedent(
    """
    import socket, sys
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    u.bind(("0.0.0.0", int(sys.argv[1])))
    u.settimeout(float(sys.argv[2]))
    print("listening", flush=True)
    try:
        data, addr = u.recvfrom(1000)
        print(data.decode(), addr[0], flush=True)
    except TimeoutError:
        print("timeout", flush=True)
    """
)

UDP_SEND = textwrap.dedent(
    """
    import socket, sys
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    u.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
    """
)

TCP_LISTEN = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen()
    s.settimeout(float(sys.argv[2]))
    print("listening", flush=True)
    try:
        c, addr = s.accept()
        c.settimeout(float(sys.argv[2]))
        print(c.recv(1000).decode(), addr[0], flush=True)
    except TimeoutError:
        print("timeout", flush=True)
    """
)

TCP_SEND = textwrap.dedent(
    """
    import socket, sys
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
        s.sendall(sys.argv[3].encode())
        s.close()
        print("sent", flush=True)
    except OSError as exc:
        print("unreachable", type(exc).__name__, flush=True)
    """
)


def run_py(lab: NetLab, host: str, script: str, *args: str) -> str:
    """Run a Python snippet inside a host and return its stdout."""
    argv = lab.exec_argv(host, sys.executable, "-c", script, *args)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return res.stdout.strip()


def udp_probe(lab: NetLab, src: str, dst: str, dst_addr: str, port: int = 5599) -> str:
    """Send one datagram from src to dst_addr; return what dst's listener printed."""
    listener = subprocess.Popen(
        lab.exec_argv(dst, sys.executable, "-c", UDP_LISTEN, str(port), str(PROBE_TIMEOUT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"
        run_py(lab, src, UDP_SEND, dst_addr, str(port), f"hi-from-{src}")
        out, _ = listener.communicate(timeout=PROBE_TIMEOUT + 10)
        return out.strip()
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()


def tcp_probe(lab: NetLab, src: str, dst: str, port: int = 5598) -> tuple[str, str]:
    """Connect from src to dst's first address; return (sender output, listener output)."""
    listener = subprocess.Popen(
        lab.exec_argv(dst, sys.executable, "-c", TCP_LISTEN, str(port), str(PROBE_TIMEOUT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"
        addr = lab.hosts[dst].address
        sent = run_py(lab, src, TCP_SEND, addr, str(port), f"tcp-from-{src}", str(PROBE_TIMEOUT))
        out, _ = listener.communicate(timeout=PROBE_TIMEOUT + 10)
        return sent, out.strip()
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()


def test_one_segment_unicast_and_broadcast(lab: NetLab) -> None:
    """Hosts on one bridge reach each other by TCP, subnet and limited broadcast."""
    a, b, c = (lab.add_host(n) for n in "abc")
    assert tcp_probe(lab, "a", "b") == ("sent", f"tcp-from-a {a.address}")
    seg = lab.segments["lan"]
    assert udp_probe(lab, "a", "c", f"{seg.prefix}.255") == f"hi-from-a {a.address}"
    assert udp_probe(lab, "c", "b", "255.255.255.255") == f"hi-from-c {c.address}"
    assert b.address == f"{seg.prefix}.2"


def test_cut_and_restore(lab: NetLab) -> None:
    """A cut link carries nothing; a restored one carries traffic again."""
    lab.add_host("a")
    lab.add_host("b")
    lab.cut("b")
    sent, got = tcp_probe(lab, "a", "b")
    assert sent.startswith("unreachable") and got == "timeout"
    lab.restore("b")
    # The sender's failed ARP entry for b can answer "unreachable" for a moment after the
    # cable is back (as on a real LAN): wait for the restored link, with a bound.
    results = []
    for _ in range(5):
        results.append(tcp_probe(lab, "a", "b")[0])
        if results[-1] == "sent":
            break
    assert results[-1] == "sent", results


def test_segments_are_separate(lab: NetLab) -> None:
    """In the A-B-C line, B reaches both sides but A cannot reach C at all."""
    lab.add_segment("left")
    lab.add_segment("right")
    a = lab.add_host("a", ["left"])
    b = lab.add_host("b", ["left", "right"])
    lab.add_host("c", ["right"])
    assert set(b.addresses) == {"left", "right"}
    assert tcp_probe(lab, "a", "b")[0] == "sent"
    assert tcp_probe(lab, "c", "b")[0] == "sent"
    # C's address is on another subnet; A has no path to it (B does not forward).
    sent, got = tcp_probe(lab, "a", "c")
    assert sent.startswith("unreachable") and got == "timeout"
    assert udp_probe(lab, "a", "c", "255.255.255.255") == "timeout"
    assert udp_probe(lab, "b", "c", f"{lab.segments['right'].prefix}.255") == (
        f"hi-from-b {b.addresses['right']}"
    )
    assert a.address != b.address


async def test_bridge_capture_sees_forwarded_tcp(lab: NetLab, tmp_path: Path) -> None:
    """A capture on the bridge sees plaintext TCP sent between two of its ports."""
    lab.add_host("a")
    lab.add_host("b")
    cap = BridgeCapture(lab.switch_ns, lab.segments["lan"].bridge, tmp_path / "cap.bin")
    await cap.start()
    try:
        assert (await asyncio.to_thread(tcp_probe, lab, "a", "b"))[0] == "sent"
    finally:
        await cap.stop()
    payload = b"".join(seg.payload for seg in tcp_payloads(cap.frames()))
    assert b"tcp-from-a" in payload
