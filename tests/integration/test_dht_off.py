"""`--no-dht` sends nothing on the DHT port (issue 15, docs/dht.md "Flags").

A UDP socket listens where the node is told its bootstrap node is. With `--no-dht` it hears
nothing and the process holds no UDP socket at all (beacons and UPnP are off too); the same
node without `--no-dht` sends its first DHT query there at once, which shows the listener
would have heard one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chinwag.crypto.identity import Identity
from driver import ChinwagProcess

#: Seconds the would-be bootstrap node listens for a node that must stay silent.
SILENT_S = 2.0
#: Seconds a node with the DHT on may take to send its first query to the bootstrap node.
QUERY_S = 10.0
ARGS = ("--bind", "127.0.0.1", "--port", "0", "--no-discovery", "--no-upnp")


@pytest.fixture
def bootstrap() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def udp_sockets(pid: int) -> list[str]:
    """The UDP sockets (IPv4 and IPv6) the process holds, as local "addr:port" hex."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                found.append(fields[1])
    return found


async def test_no_dht_sends_nothing_on_the_dht_port(
    bootstrap: socket.socket, tmp_path: Path
) -> None:
    where = f"127.0.0.1:{bootstrap.getsockname()[1]}"
    off = ChinwagProcess(tmp_path / "off", *ARGS, "--no-dht", "--dht-bootstrap", where)
    await off.start()
    try:
        assert off.proc is not None
        assert udp_sockets(off.proc.pid) == []
        bootstrap.settimeout(SILENT_S)
        with pytest.raises(TimeoutError):
            bootstrap.recvfrom(2048)
    finally:
        await off.quit()

    on = ChinwagProcess(tmp_path / "on", *ARGS, "--dht-port", "0", "--dht-bootstrap", where)
    await on.start()
    try:
        assert on.proc is not None
        assert udp_sockets(on.proc.pid), "the DHT node listens on UDP"
        bootstrap.settimeout(QUERY_S)
        data, _ = bootstrap.recvfrom(2048)
        assert data.startswith(b"d") and b"1:y1:q" in data, data  # a KRPC query (bencoded)
    finally:
        await on.quit()


async def test_add_by_peer_id_checks_the_id(tmp_path: Path) -> None:
    """`add` with a peer id: garbage gets a clear error; a good id becomes a contact (with
    the DHT off, a warning says it can only be reached when it connects)."""
    from it_support import ask

    node = ChinwagProcess(tmp_path / "n", *ARGS, "--no-dht")
    await node.start()
    try:
        error = await ask(node, {"cmd": "add", "peer_id": "not-a-peer-id"}, "error")
        assert "not a peer id" in error["message"], error
        error = await ask(node, {"cmd": "add", "peer_id": node.peer_id}, "error")
        assert "your own peer id" in error["message"], error
        # Base32-canonical but not an Ed25519 point: refused here, not a crash later.
        error = await ask(node, {"cmd": "add", "peer_id": "a" * 52}, "error")
        assert "not a valid Ed25519 key" in error["message"], error
        error = await ask(node, {"cmd": "dm", "to": "a" * 52, "text": "hi"}, "error")
        assert "not a valid Ed25519 key" in error["message"], error
        other = Identity.from_seed(bytes(32)).peer_id
        added = await ask(node, {"cmd": "add", "peer_id": other}, "contact_added")
        assert added["peer_id"] == other
        warning = await node.wait_for("warning", timeout=5, from_start=True)
        assert "DHT is off" in warning["message"], warning
        listed = await ask(node, {"cmd": "contacts"}, "contacts")
        assert [c["peer_id"] for c in listed["contacts"]] == [other]
    finally:
        await node.quit()


async def test_without_libtorrent_the_node_runs_with_the_dht_off(tmp_path: Path) -> None:
    """An import of libtorrent that fails leaves the node running, with one warning line."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "libtorrent.py").write_text("raise ImportError('simulated: no libtorrent here')\n")
    env = {"PYTHONPATH": str(shadow)}
    node = ChinwagProcess(
        tmp_path / "n", *ARGS, "--log-level", "warning", "--dht-port", "0",
        "--dht-bootstrap", "127.0.0.1:9", env=env,
    )  # fmt: skip
    await node.start()
    try:
        assert node.proc is not None
        assert udp_sockets(node.proc.pid) == []
    finally:
        await node.quit()
    lines = [line for line in node.stderr_tail().splitlines() if "DHT off" in line]
    assert len(lines) == 1 and "libtorrent cannot be imported" in lines[0], lines
