"""What third parties see of private messages (issue 12 item 3; docs/rooms.md, "What others
can see").

Real nodes in a namespace LAN. A LAN observer is a capture on the bridge; a relay and
mailbox holder is a third node whose database files, JSON-lines event stream and log
are searched afterwards. Each search looks for everything that would link a private
message to its two ends: both peer ids (base32, raw key, hex), both nicks, the
conversation id (`dm.` + a hash of the two ids, which anyone can compute) and the text.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import struct
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest
from capture import BridgeCapture, tcp_payloads
from lan_support import PROMPT_S, NodeFactory, mesh, start_all
from netlab import NetLab

from chinwag.crypto import box
from chinwag.crypto.identity import public_from_peer_id
from driver import ChinwagProcess, Event

pytestmark = [pytest.mark.lan, pytest.mark.timeout(120)]

#: Nicks that cannot occur on the wire or on disk by chance.
NICKS = ("annika7q", "bertil9x", "cecilia4z")


def marker(label: str) -> str:
    """A message text that cannot occur on the wire or on disk by chance."""
    return f"{label}-{uuid.uuid4().hex}"


def identifiers(node: ChinwagProcess, label: str) -> dict[str, bytes]:
    """Every form in which node's identity could show: base32 id, raw key, hex, nick."""
    key = public_from_peer_id(node.peer_id)
    assert node.nick is not None
    return {
        f"{label} id": node.peer_id.encode(),
        f"{label} key": key,
        f"{label} hex": key.hex().encode(),
        f"{label} HEX": key.hex().upper().encode(),
        f"{label} nick": node.nick.encode(),
    }


def link_needles(a: ChinwagProcess, b: ChinwagProcess, texts: Iterable[str]) -> dict[str, bytes]:
    """What would tie a conversation of a and b to them: ids, nicks, conversation id, texts."""
    found = {**identifiers(a, "a"), **identifiers(b, "b")}
    found["conversation"] = box.dm_room(a.peer_id, b.peer_id).encode()
    for i, text in enumerate(texts):
        found[f"text {i}"] = text.encode()
    return found


async def dm(sender: ChinwagProcess, to: str, text: str) -> Event:
    """Send a private message; return the sender's own `dm` event."""
    await sender.send({"cmd": "dm", "to": to, "text": text})
    return await sender.wait_for("dm", timeout=PROMPT_S, from_start=True, text=text, own=True)


async def received(node: ChinwagProcess, own: Event) -> None:
    """Wait until node shows the private message of which own is the sender's event."""
    got = await node.wait_for("dm", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert got["text"] == own["text"] and not got["own"], got


# --- the wire ---------------------------------------------------------------------


def udp_datagrams(frames: Iterable[bytes]) -> list[tuple[str, bytes]]:
    """(source address, payload) of the IPv4 UDP datagrams among Ethernet frames."""
    out = []
    for frame in frames:
        if len(frame) < 14 + 20 or struct.unpack_from(">H", frame, 12)[0] != 0x0800:
            continue
        ip_hdr = frame[14:]
        ihl = (ip_hdr[0] & 0x0F) * 4
        total = struct.unpack_from(">H", ip_hdr, 2)[0]
        if ip_hdr[9] != socket.IPPROTO_UDP:
            continue
        out.append((socket.inet_ntoa(ip_hdr[12:16]), bytes(ip_hdr[ihl + 8 : total])))
    return out


def wire_leaks(
    frames: list[bytes], needles: dict[str, bytes], own: dict[str, dict[str, bytes]]
) -> list[str]:
    """Needles on the wire, except a node's own identity in a datagram it sent (its beacon).

    own: source address -> the needles that address may show about itself.
    """
    found = []
    for src, payload in udp_datagrams(frames):
        allowed = own.get(src, {})
        found += [
            f"udp from {src}: {k}" for k, n in needles.items() if n in payload and k not in allowed
        ]
    streams: dict[tuple[str, int, str, int], bytearray] = {}
    for s in tcp_payloads(frames):
        streams.setdefault((s.src, s.sport, s.dst, s.dport), bytearray()).extend(s.payload)
    for flow, data in streams.items():
        found += [f"tcp {flow}: {k}" for k, n in needles.items() if n in data]
    return found


async def test_a_lan_observer_sees_who_is_present_not_who_writes_to_whom(
    lab: NetLab, node: NodeFactory, tmp_path: Path
) -> None:
    """A capture on the bridge while a and b write to each other, c looking on: the TCP
    streams carry no id, nick, conversation id or text; the datagrams are the beacons,
    each showing its own sender's id and nick only (who is present, not who talks)."""
    lab.add_segment("lan")
    hosts = [lab.add_host(n, ["lan"]) for n in ("a", "b", "c")]
    cap = BridgeCapture(lab.switch_ns, lab.segments["lan"].bridge, tmp_path / "lan.cap")
    await cap.start()
    try:
        a, b, c = (node(h, nick) for h, nick in zip(hosts, NICKS, strict=True))
        await start_all(a, b, c)
        await mesh([a, b, c])
        texts = [marker("short"), marker("long " + "x" * 300), marker("reply")]
        await received(b, await dm(a, b.peer_id, texts[0]))
        await received(b, await dm(a, b.peer_id, texts[1]))
        await received(a, await dm(b, a.peer_id, texts[2]))
    finally:
        await cap.stop()
    frames = cap.frames()
    assert frames and cap.frame_count == len(frames), (cap.frame_count, len(frames))
    payload = sum(len(s.payload) for s in tcp_payloads(frames))
    assert payload > 3 * 300, f"only {payload} TCP payload bytes captured"

    needles = {**link_needles(a, b, texts), **identifiers(c, "c")}
    own = {
        h.addresses["lan"]: identifiers(n, label)
        for h, n, label in ((hosts[0], a, "a"), (hosts[1], b, "b"), (hosts[2], c, "c"))
    }
    leaks = wire_leaks(frames, needles, {addr: {} for addr in own})
    # The search finds what is in clear: each beacon shows its sender's id and nick.
    assert any("udp" in f and "a id" in f for f in leaks), leaks[:5]
    assert any("udp" in f and "b nick" in f for f in leaks), leaks[:5]
    leaks = wire_leaks(frames, needles, own)
    assert not leaks, f"in clear on the bridge: {leaks[:8]}"
    for n in (a, b, c):
        assert await n.quit() == 0, n.stderr_tail()


# --- a third node ------------------------------------------------------------------


def store_hits(data_dir: Path, needles: dict[str, bytes]) -> dict[str, set[str]]:
    """needle label -> where a stopped node's store holds it ("file X" or "TABLE.COLUMN")."""
    db = data_dir / "chinwag.db"
    hits: dict[str, set[str]] = {}
    for path in sorted(data_dir.glob("chinwag.db*")):
        raw = path.read_bytes()
        for label, n in needles.items():
            if n in raw:
                hits.setdefault(label, set()).add(f"file {path.name}")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            cols = [d[0] for d in cur.description]
            for row in cur:
                for col, cell in zip(cols, row, strict=True):
                    data = cell.encode() if isinstance(cell, str) else cell
                    if not isinstance(data, bytes):
                        continue
                    for label, n in needles.items():
                        if n in data:
                            hits.setdefault(label, set()).add(f"{table}.{col}")
    finally:
        conn.close()
    return hits


async def test_a_relay_and_mail_holder_learns_only_the_reader_of_held_mail(
    lab: NetLab, node: NodeFactory, tmp_path: Path
) -> None:
    """c holds a's mail for b while b is away, then relays while all three are on: c's
    database files, event stream and log never hold the text or the conversation id, and
    nothing there ties a to b (a's id is only where c records a peer it met); a capture
    of the whole shows nothing in clear but each node's own beacon."""
    lab.add_segment("lan")
    ha, hb, hc = (lab.add_host(n, ["lan"]) for n in ("a", "b", "c"))
    a, b, c = node(ha, NICKS[0]), node(hb, NICKS[1]), node(hc, NICKS[2])
    cap = BridgeCapture(lab.switch_ns, lab.segments["lan"].bridge, tmp_path / "lan.cap")
    await cap.start()
    await start_all(a, b, c)
    await mesh([a, b, c])
    b_id = b.peer_id
    assert await b.quit() == 0
    await asyncio.gather(
        *(n.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=b_id) for n in (a, c))
    )
    texts = [marker("held"), marker("live"), marker("reply")]
    held = await dm(a, b_id, texts[0])
    mailed = await a.wait_for("mailed", timeout=PROMPT_S, from_start=True, id=held["id"])
    assert mailed["holders"] == 1, mailed  # c, the only candidate
    assert await a.quit() == 0
    # While c holds the item (committed before `mok`): its reader is named, its author not.
    holding = mailbox_hits(c.data_dir, link_needles(a, b, texts))
    assert holding == {"b id": {"mailbox.recipient"}, "b key": {"mailbox.item"}}, holding
    b2 = node(hb, NICKS[1])
    await b2.start()
    await received(b2, held)  # through c: a is gone
    a2 = node(ha, NICKS[0])
    await a2.start()
    await mesh([a2, b2, c])
    await received(b2, await dm(a2, b_id, texts[1]))
    await received(a2, await dm(b2, a.peer_id, texts[2]))
    for n in (a2, b2, c):
        assert await n.quit() == 0, n.stderr_tail()
    await cap.stop()

    needles = link_needles(a, b, texts)
    # The wire (mail put, held, delivered; receipts; live messages): as in the test above.
    own = {h.addresses["lan"]: identifiers(n, k) for h, n, k in ((ha, a, "a"), (hb, b, "b"))}
    own[hc.addresses["lan"]] = {}
    leaks = wire_leaks(cap.frames(), needles, own)
    assert not leaks, f"in clear on the bridge: {leaks[:8]}"
    hits = store_hits(c.data_dir, needles)
    # a and b each only where c records a peer it met (and its vector of their shared room).
    met = {
        "file chinwag.db",
        "peers.peer_id",
        "peer_vectors.peer_id",
        "peers.nick",
        "olm_peers.peer_id",
    }
    assert set(hits) <= {"a id", "b id", "a nick", "b nick"}, hits
    assert all(where <= met for where in hits.values()), hits
    events = [json.dumps(ev) for ev in c.events]
    log = c.stderr_path.read_bytes()
    for label, needle in needles.items():
        if label.startswith(("conversation", "text")):
            assert not [e for e in events if needle.decode() in e], label
        if label.endswith(("key", "hex", "HEX")) or not label.startswith(("a ", "b ")):
            assert needle not in log, label
    # c's events name a and b one at a time (joined, left...), never together.
    both = [e for e in events if a.peer_id in e and b_id in e]
    assert not both, both[:3]
    # Its log names peers by short id at most; never both in one line.
    for line in log.splitlines():
        assert not (a.peer_id[:8].encode() in line and b_id[:8].encode() in line), line


def mailbox_hits(data_dir: Path, needles: dict[str, bytes]) -> dict[str, set[str]]:
    """Like store_hits, of the mailbox tables of a running node (read-only, WAL included)."""
    conn = sqlite3.connect(f"file:{data_dir / 'chinwag.db'}?mode=ro", uri=True)
    hits: dict[str, set[str]] = {}
    try:
        for table in ("mailbox", "mail_gone"):
            cur = conn.execute(f"SELECT * FROM {table}")
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
            assert table != "mailbox" or rows, "c holds nothing"
            for row in rows:
                for col, cell in zip(cols, row, strict=True):
                    data = cell.encode() if isinstance(cell, str) else cell
                    for label, n in needles.items():
                        if isinstance(data, bytes) and n in data:
                            hits.setdefault(label, set()).add(f"{table}.{col}")
    finally:
        conn.close()
    return hits
