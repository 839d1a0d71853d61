"""Hostile peers against file sharing (docs/files.md, "Bad input").

A HostilePeer completes a real handshake with a `chinwag --json` node and then
plays a file holder, a requester or a forger: corrupt chunks, data nobody asked
for, pieces out of order, floods of requests, malformed file frames, requests
for a private offer's file, offers whose id collides with another's. After
each attack the node must still run, log no traceback and never save a wrong
file. The hostile offers use 64 KiB chunks so that every file is small and
the whole module runs in seconds; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from hostile_peer import HostilePeer
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    Event,
    NodeFactory,
    ask,
    chat_works,
    connected,
    stderr_has_traceback,
    until,
)

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.crypto.noise import generate_static_private, static_public
from chinwag.protocol import messages as m
from chinwag.protocol.session import LocalInfo
from chinwag.protocol.transfer import Offer, digest_root, encode_offer, new_offer

#: Chunk size of the hostile offers: two pieces per chunk (FILE_PIECE is 64,000 bytes).
CHUNK = 64 * 1024

Answer = Callable[[m.FileGet, bytes], list[m.Frame]]


# --- helpers ----------------------------------------------------------------


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def make_offer(data: bytes, name: str, author: HostilePeer | Identity) -> Offer:
    """An offer of data in CHUNK-byte chunks by author, as any peer may make it."""
    identity = author.identity if isinstance(author, HostilePeer) else author
    return new_offer(
        identity.public,
        os.urandom(16),
        name,
        len(data),
        hashlib.sha256(data).hexdigest(),
        digest_root(b"".join(hashlib.sha256(c).digest() for c in chunks_of(data))),
        chunk=CHUNK,
    )


def pieces(get: m.FileGet, chunk: bytes) -> list[m.FileData]:
    """The FileData frames of one chunk, in order."""
    return [
        m.FileData(
            fid=get.fid, idx=get.idx, off=off, data=memoryview(chunk[off : off + limits.FILE_PIECE])
        )
        for off in range(0, len(chunk), limits.FILE_PIECE)
    ]


def honest(get: m.FileGet, chunk: bytes) -> list[m.Frame]:
    return list(pieces(get, chunk))


def corrupt(get: m.FileGet, chunk: bytes) -> list[m.Frame]:
    """The chunk with its first byte flipped: right length, wrong digest."""
    return list(pieces(get, bytes([chunk[0] ^ 0xFF]) + chunk[1:]))


def out_of_order(get: m.FileGet, chunk: bytes) -> list[m.Frame]:
    return list(reversed(pieces(get, chunk)))


class FileServer:
    """Answers the fwho, fhreq and fget of the node a HostilePeer is connected to.

    `answer` makes the data frames of a chunk request; requests for a fid in
    `hold` wait until release(fid).
    """

    def __init__(self, peer: HostilePeer, files: dict[str, bytes], answer: Answer = honest) -> None:
        self.peer = peer
        self.files = {bytes.fromhex(fid): data for fid, data in files.items()}
        self.answer = answer
        self.hold: set[bytes] = set()
        self.gets: list[m.FileGet] = []
        self._held: list[m.FileGet] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        seen = 0
        while True:
            while seen < len(self.peer.frames):
                frame = self.peer.frames[seen]
                seen += 1
                if isinstance(frame, m.FileWho | m.FileHashesReq | m.FileGet):
                    self._handle(frame)
            if self.peer.closed is not None:
                return
            await self.peer.changed()

    def _handle(self, frame: m.FileWho | m.FileHashesReq | m.FileGet) -> None:
        data = self.files.get(frame.fid)
        if data is None:
            return
        if isinstance(frame, m.FileWho):
            self.peer.send_frames([m.FileHave(fid=frame.fid)])
        elif isinstance(frame, m.FileHashesReq):
            digests = b"".join(hashlib.sha256(c).digest() for c in chunks_of(data))
            lo = frame.lo * 32
            page = digests[lo : lo + 32 * limits.FILE_HASHES_PER_FRAME]
            self.peer.send_frames([m.FileHashes(fid=frame.fid, lo=frame.lo, hashes=page)])
        else:
            self.gets.append(frame)
            if frame.fid in self.hold:
                self._held.append(frame)
            else:
                self._send_chunk(frame)

    def _send_chunk(self, get: m.FileGet) -> None:
        chunk = chunks_of(self.files[get.fid])[get.idx]
        self.peer.send_frames(self.answer(get, chunk))

    def release(self, fid: str) -> None:
        """Answer the held requests for fid, and the later ones at once."""
        raw = bytes.fromhex(fid)
        self.hold.discard(raw)
        for get in [g for g in self._held if g.fid == raw]:
            self._held.remove(get)
            self._send_chunk(get)

    def asked(self, fid: str) -> int:
        return sum(1 for g in self.gets if g.fid.hex() == fid)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.peer.close()


async def peer_until(peer: HostilePeer, cond: Callable[[], bool], what: str) -> None:
    """Wait until cond() holds, re-checking whenever the peer receives a frame."""
    try:
        async with asyncio.timeout(PROMPT_S):
            while not cond():
                await peer.changed()
    except TimeoutError:
        raise AssertionError(f"not within {PROMPT_S}s: {what}; got {peer.frames[-5:]}") from None


def log_of(node: ChinwagProcess) -> str:
    try:
        return node.stderr_path.read_text(errors="replace")
    except OSError:
        return ""


def downloads(node: ChinwagProcess) -> Path:
    return node.data_dir.with_name(node.data_dir.name + "-downloads")


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


async def start(node: NodeFactory, name: str, *args: str) -> ChinwagProcess:
    """A node with discovery off, saving files into its own downloads directory."""
    p = node(name, discovery=False)
    p.args += ["--downloads", str(downloads(p)), *args]
    await p.start()
    return p


async def start_pair(node: NodeFactory) -> tuple[ChinwagProcess, ChinwagProcess]:
    a = await start(node, "alice")
    b = await start(node, "bob", "--peer", f"127.0.0.1:{a.port}")
    await connected(a, b)
    return a, b


async def hostile(node: ChinwagProcess, nick: str = "mallory") -> HostilePeer:
    peer = HostilePeer(nick=nick)
    await peer.connect(node.port)
    return peer


async def offered(node: ChinwagProcess, peer: HostilePeer, seq: int, offer: Offer) -> None:
    """Post a room offer from peer; wait until node has it."""
    peer.send_chat(peer.message(seq, encode_offer(offer)))
    await node.wait_for("file_offer", timeout=PROMPT_S, from_start=True, id=offer.fid)


async def accept(node: ChinwagProcess, fid: str) -> None:
    await node.send({"cmd": "accept_file", "id": fid})


async def outcome(node: ChinwagProcess, fid: str) -> Event:
    """The file_done or file_failed of fid."""
    return await node.wait_for(
        pred=lambda ev: ev.get("event") in ("file_done", "file_failed") and ev.get("id") == fid,
        timeout=PROMPT_S,
        from_start=True,
    )


async def done(node: ChinwagProcess, fid: str) -> Path:
    ev = await outcome(node, fid)
    assert ev["event"] == "file_done", ev
    return Path(ev["path"])


async def file_info(node: ChinwagProcess, fid: str) -> dict[str, Any]:
    listing = await ask(node, {"cmd": "files"}, "files")
    [info] = [f for f in listing["files"] if f["id"] == fid]
    return dict(info)


def healthy(*nodes: ChinwagProcess) -> None:
    for n in nodes:
        assert n.returncode is None, n.stderr_tail()
        assert not stderr_has_traceback(n), f"{n.nick}: {n.stderr_tail()}"


def frames_for(peer: HostilePeer, kind: type[Any], fid: bytes) -> list[Any]:
    return [f for f in peer.frames if isinstance(f, kind) and f.fid == fid]


# --- tests --------------------------------------------------------------------


async def test_corrupt_source_is_banned_and_an_honest_holder_finishes(
    node: NodeFactory,
) -> None:
    """A holder sending corrupt chunks is banned after 3; nothing wrong is saved; the
    transfer waits with no source, then completes from an honest holder."""
    b = await start(node, "bob")
    mallory = await hostile(b)
    data = os.urandom(8 * CHUNK + 1234)
    offer = make_offer(data, "corrupt.bin", mallory)
    liar = FileServer(mallory, {offer.fid: data}, answer=corrupt)
    await offered(b, mallory, 1, offer)
    await accept(b, offer.fid)
    banned = f"dropping {mallory.peer_id[:8]} as a source of corrupt.bin: corrupt data"
    await until(lambda: banned in log_of(b), "the corrupt source is banned")
    assert log_of(b).count(f"chunk 0 of {offer.fid[:8]} from {mallory.peer_id[:8]} is corrupt")
    assert liar.asked(offer.fid) >= limits.FILE_MAX_BAD_CHUNKS

    # No source left: under way, nothing under the final name.
    info = await file_info(b, offer.fid)
    assert info["state"] == "transferring" and info["sources"] == 0, info
    assert info["bytes"] == 0, info
    assert [e for e in entries(downloads(b)) if not e.startswith(".chinwag-")] == []

    carol = await hostile(b, "carol")
    good = FileServer(carol, {offer.fid: data})
    path = await done(b, offer.fid)
    assert path.read_bytes() == data
    assert entries(downloads(b)) == ["corrupt.bin"]
    assert good.asked(offer.fid) >= len(chunks_of(data)) - 1
    healthy(b)
    await liar.close()
    await good.close()


async def test_unrequested_unknown_and_out_of_order_data(node: NodeFactory) -> None:
    """Data nobody asked for is ignored (the source stays); pieces out of order ban the
    source; frames for unknown fids do nothing; the node keeps running."""
    b = await start(node, "bob")
    mallory = await hostile(b)
    data = os.urandom(4 * CHUNK)
    offer = make_offer(data, "order.bin", mallory)
    raw = bytes.fromhex(offer.fid)
    stranger = os.urandom(16)
    server = FileServer(mallory, {offer.fid: data})
    server.hold.add(raw)
    await offered(b, mallory, 1, offer)
    first = chunks_of(data)[0]

    def junk(fid: bytes) -> list[m.Frame]:
        return [
            m.FileData(fid=fid, idx=0, off=0, data=memoryview(first[:1000])),
            m.FileData(fid=fid, idx=2**40, off=2**40, data=memoryview(b"x")),
            m.FileHashes(fid=fid, lo=0, hashes=b"\x00" * 32),
            m.FileHave(fid=fid),
            m.FileNak(fid=fid, idx=0, reason="busy"),
        ]

    # Before the offer is accepted, and for a fid nobody offered.
    mallory.send_frames([*junk(raw), *junk(stranger), m.FileEnd(fid=stranger, reason="done")])
    await accept(b, offer.fid)
    await peer_until(mallory, lambda: server.asked(offer.fid) >= 2, "two chunks asked")
    asked = {g.idx for g in server.gets}
    assert asked == {0, 1}, asked

    # A whole chunk that was not asked for, then a good chunk 0: the source is kept.
    unasked = m.FileGet(fid=raw, idx=3)
    mallory.send_frames([*pieces(unasked, chunks_of(data)[3]), *junk(stranger)])
    mallory.send_frames(pieces(m.FileGet(fid=raw, idx=0), first))
    await b.wait_for("file_progress", timeout=PROMPT_S, id=offer.fid, bytes=CHUNK)
    assert "bad data" not in log_of(b)

    # Chunk 1's pieces out of order: banned.
    mallory.send_frames(out_of_order(m.FileGet(fid=raw, idx=1), chunks_of(data)[1]))
    banned = f"dropping {mallory.peer_id[:8]} as a source of order.bin: bad data"
    await until(lambda: banned in log_of(b), "the out-of-order source is banned")

    carol = await hostile(b, "carol")
    good = FileServer(carol, {offer.fid: data})
    path = await done(b, offer.fid)
    assert path.read_bytes() == data
    assert entries(downloads(b)) == ["order.bin"]
    assert mallory.closed is None, mallory.closed  # ignored or banned, not disconnected
    healthy(b)
    await server.close()
    await good.close()


async def test_fget_flood_gets_busy_naks(node: NodeFactory, tmp_path: Path) -> None:
    """Thousands of chunk requests: at most FILE_MAX_QUEUED are served, the rest get
    `busy`; fwho and fhreq floods are answered; memory stays bounded; chat works."""
    a, b = await start_pair(node)
    path = tmp_path / "small.bin"
    path.write_bytes(os.urandom(20_000))
    await a.send({"cmd": "send_file", "to": "#general", "path": str(path)})
    own = await a.wait_for("file_offer", timeout=PROMPT_S, from_start=True, own=True)
    raw = bytes.fromhex(own["id"])
    mallory = await hostile(a)
    assert a.proc is not None
    rss_before = rss_kb(a.proc.pid)

    n = 20_000
    for _ in range(0, n, 5_000):
        mallory.send_frames(m.FileGet(fid=raw, idx=0) for _ in range(5_000))
        await mallory.drain()

    def counts() -> tuple[int, int]:
        served = sum(1 for f in frames_for(mallory, m.FileData, raw) if f.off == 0)
        busy = sum(1 for f in frames_for(mallory, m.FileNak, raw) if f.reason == "busy")
        return served, busy

    await peer_until(mallory, lambda: sum(counts()) == n, "every request answered")
    served, busy = counts()
    assert served <= 2 * limits.FILE_MAX_QUEUED, (served, busy)
    assert busy >= n - 2 * limits.FILE_MAX_QUEUED, (served, busy)
    assert not [f for f in frames_for(mallory, m.FileNak, raw) if f.reason != "busy"]

    mallory.send_frames(m.FileWho(fid=raw) for _ in range(5_000))
    mallory.send_frames(m.FileHashesReq(fid=raw, lo=0) for _ in range(5_000))
    await peer_until(
        mallory,
        lambda: len(frames_for(mallory, m.FileHashes, raw)) == 5_000,
        "every hash request answered",
    )
    assert len(frames_for(mallory, m.FileHave, raw)) == 5_000
    grown_mb = (rss_kb(a.proc.pid) - rss_before) / 1024
    assert grown_mb < 16, f"alice grew by {grown_mb:.1f} MB under a request flood"
    assert mallory.closed is None, mallory.closed
    await chat_works(a, b, text="after the flood a->b")
    await chat_works(b, a, text="after the flood b->a")
    healthy(a, b)
    await mallory.close()


async def test_malformed_file_frames_disconnect(node: NodeFactory) -> None:
    """Wrong fid lengths, oversized data, lists and reasons, wrong types: the peer is
    disconnected with malformed_frame; the node keeps running and chatting."""
    a, b = await start_pair(node)
    fid = os.urandom(16)
    wrong_type: Any = "0123456789abcdef"
    frames: list[m.Frame] = [
        m.FileGet(fid=fid[:15], idx=0),
        m.FileWho(fid=fid + b"\x00"),
        m.FileHave(fid=b""),
        m.FileData(fid=fid, idx=0, off=0, data=memoryview(b"\x00" * (limits.FILE_PIECE + 1))),
        m.FileHashes(fid=fid, lo=0, hashes=b"\x00" * (32 * limits.FILE_HASHES_PER_FRAME + 32)),
        m.FileGet(fid=fid, idx=-1),
        m.FileHashesReq(fid=fid, lo=-5),
        m.FileNak(fid=fid, idx=0, reason="x" * 65),
        m.FileEnd(fid=wrong_type, reason="done"),
    ]
    peers = [await hostile(a, f"bad{i}") for i in range(len(frames))]
    for peer, frame in zip(peers, frames, strict=True):
        peer.send_frames([frame])
    for peer, frame in zip(peers, frames, strict=True):
        closed = await peer.wait_closed()
        assert closed.by_peer and closed.code == "malformed_frame", (frame, closed)
    await chat_works(a, b, text="after malformed a->b")
    await chat_works(b, a, text="after malformed b->a")
    healthy(a, b)


async def test_private_file_is_not_served_to_a_third_peer(
    node: NodeFactory, tmp_path: Path
) -> None:
    """A peer that learned a private offer's fid gets `fnak unavailable` from its sender
    (before and after the recipient fetched it) and from the recipient; no fhave, no
    digests, no data. Withdrawing a private offer tells only its recipient."""
    a, b = await start_pair(node)
    path = tmp_path / "secret.bin"
    secret = os.urandom(3 * limits.FILE_CHUNK // 2)
    path.write_bytes(secret)
    await a.send({"cmd": "send_file", "to": "bob", "path": str(path)})
    own = await a.wait_for("file_offer", timeout=PROMPT_S, from_start=True, own=True)
    fid = own["id"]
    raw = bytes.fromhex(fid)
    await b.wait_for("file_offer", timeout=PROMPT_S, from_start=True, id=fid)
    eve_a = await hostile(a, "eve")
    eve_b = await hostile(b, "eve")

    async def refused(eve: HostilePeer) -> None:
        before = len(frames_for(eve, m.FileNak, raw))
        eve.send_frames(
            [
                m.FileWho(fid=raw),
                m.FileHashesReq(fid=raw, lo=0),
                m.FileGet(fid=raw, idx=0),
                m.FileGet(fid=raw, idx=1),
            ]
        )
        await peer_until(eve, lambda: len(frames_for(eve, m.FileNak, raw)) == before + 2, "naks")
        naks = frames_for(eve, m.FileNak, raw)[before:]
        assert [(f.idx, f.reason) for f in naks] == [(0, "unavailable"), (1, "unavailable")]
        for kind in (m.FileHave, m.FileHashes, m.FileData):
            assert not frames_for(eve, kind, raw), frames_for(eve, kind, raw)

    await refused(eve_a)
    await accept(b, fid)
    assert (await done(b, fid)).read_bytes() == secret
    await a.wait_for("file_done", timeout=PROMPT_S, from_start=True, id=fid)
    await refused(eve_a)
    await refused(eve_b)

    # Withdrawing a private offer: bob is told, eve (connected to alice) is not.
    path2 = tmp_path / "secret2.bin"
    path2.write_bytes(os.urandom(1000))
    await a.send({"cmd": "send_file", "to": "bob", "path": str(path2)})
    own2 = await a.wait_for(
        "file_offer",
        pred=lambda ev: ev["name"] == "secret2.bin",
        timeout=PROMPT_S,
        from_start=True,
        own=True,
    )
    fid2 = own2["id"]
    await b.wait_for("file_offer", timeout=PROMPT_S, from_start=True, id=fid2)
    await a.send({"cmd": "cancel_file", "id": fid2})
    failed = await b.wait_for("file_failed", timeout=PROMPT_S, from_start=True, id=fid2)
    assert failed["reason"] == "withdrawn by the sender", failed
    # A probe answered after the withdrawal: anything sent before it has arrived.
    probe = os.urandom(16)
    eve_a.send_frames([m.FileGet(fid=probe, idx=7)])
    await eve_a.wait_frame(m.FileNak, lambda f: f.fid == probe)
    assert not frames_for(eve_a, m.FileEnd, bytes.fromhex(fid2)), "the private fid leaked"
    healthy(a, b)
    await eve_a.close()
    await eve_b.close()


async def test_offers_with_a_file_id_not_their_authors_are_ignored(
    node: NodeFactory,
) -> None:
    """A peer cannot stand in for another's file: an offer whose id is bound to another
    author (or is half of another offer's id) is ignored; the real offer arrives intact."""
    b = await start(node, "bob")
    mallory = await hostile(b)
    x_data = os.urandom(3 * CHUNK)
    x = make_offer(x_data, "x.bin", mallory)
    stolen = make_offer(os.urandom(CHUNK), "y.bin", Identity.generate())
    half = msgspec.structs.replace(
        make_offer(os.urandom(CHUNK), "z.bin", mallory), fid=x.fid[:16] + os.urandom(8).hex()
    )
    server = FileServer(mallory, {x.fid: x_data})
    await offered(b, mallory, 1, x)
    mallory.send_chat(mallory.message(2, encode_offer(stolen)))
    mallory.send_chat(mallory.message(3, encode_offer(half)))
    await b.wait_for(
        "message", pred=lambda ev: "'z.bin'" in ev["text"], timeout=PROMPT_S, from_start=True
    )
    offers = [ev["id"] for ev in b.events if ev.get("event") == "file_offer"]
    assert offers == [x.fid], offers
    await accept(b, x.fid)
    x_path = await done(b, x.fid)
    assert x_path.read_bytes() == x_data
    assert entries(downloads(b)) == ["x.bin"]
    healthy(b)
    await server.close()


async def test_partial_file_removed_before_the_end(node: NodeFactory) -> None:
    """The partial file disappears mid-way: the transfer fails with a clear reason and
    leaves no (empty) file under the final name."""
    b = await start(node, "bob")
    mallory = await hostile(b)
    data = os.urandom(2 * CHUNK)
    offer = make_offer(data, "gone.bin", mallory)
    server = FileServer(mallory, {offer.fid: data})
    server.hold.add(bytes.fromhex(offer.fid))
    await offered(b, mallory, 1, offer)
    await accept(b, offer.fid)
    await peer_until(mallory, lambda: server.asked(offer.fid) > 0, "a chunk asked")
    part = downloads(b) / f".chinwag-{offer.fid}.part"
    [found] = [p for p in downloads(b).iterdir() if offer.fid[:16] in p.name]
    found.unlink()
    server.release(offer.fid)
    ev = await outcome(b, offer.fid)
    assert ev["event"] == "file_failed", ev
    assert "cannot save 'gone.bin'" in ev["reason"], ev
    assert entries(downloads(b)) == [], entries(downloads(b))
    assert not part.exists()
    healthy(b)
    await server.close()


async def test_empty_file_offer_completes(node: NodeFactory) -> None:
    """An offer of an empty file needs no data: accepting it saves an empty file."""
    b = await start(node, "bob")
    mallory = await hostile(b)
    offer = make_offer(b"", "empty.txt", mallory)
    await offered(b, mallory, 1, offer)
    await accept(b, offer.fid)
    path = await done(b, offer.fid)
    assert path.read_bytes() == b"" and path.name == "empty.txt"
    assert entries(downloads(b)) == ["empty.txt"]
    healthy(b)
    await mallory.close()


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_private_room_file_is_not_served_for_a_replayed_announcement(
    node: NodeFactory, tmp_path: Path
) -> None:
    """alice and bob share a private room; mallory lacks its passphrase but replays alice's
    room announcement (the room id: no key check value travels any more) to both. Neither
    admits her (she cannot prove the passphrase), so bob never asks her for the file (she
    does not learn its id from a `fwho`), and alice, asked with the id (leaked to her
    here by the test), serves nothing: no `fhave`, no digests, no chunk. bob, a member,
    gets the file intact (docs/protocol.md section 28)."""
    a, b = await start_pair(node)
    for n in (a, b):
        await ask(n, {"cmd": "join", "room": "secret", "passphrase": "open sesame"}, "joined")
    mallory = HostilePeer(rooms=())
    await mallory.connect(a.port)
    announced = await mallory.wait_frame(
        m.Rooms, lambda f: any(r.room.startswith("p.") for r in f.joined)
    )
    [secret] = [r for r in announced.joined if r.room.startswith("p.")]
    assert secret.kcv == b"", announced
    replayed = m.Rooms(joined=[secret])
    mallory.send_frames([replayed])
    mallory_b = HostilePeer(identity=mallory.identity, rooms=())
    await mallory_b.connect(b.port)
    mallory_b.send_frames([replayed])

    path = tmp_path / "plans.bin"
    plain = os.urandom(3 * limits.FILE_CHUNK // 2)
    path.write_bytes(plain)
    await a.send({"cmd": "send_file", "to": "#secret", "path": str(path)})
    own = await a.wait_for("file_offer", timeout=PROMPT_S, from_start=True, own=True)
    fid = own["id"]
    await b.wait_for("file_offer", timeout=PROMPT_S, from_start=True, id=fid)
    await accept(b, fid)
    assert (await done(b, fid)).read_bytes() == plain
    # bob asked the room's members only: mallory did not learn the file id.
    assert not [f for f in mallory_b.frames if isinstance(f, m.FileWho)], mallory_b.frames

    raw = bytes.fromhex(fid)
    mallory.send_frames(
        [
            m.FileWho(fid=raw),
            m.FileHashesReq(fid=raw, lo=0),
            m.FileGet(fid=raw, idx=0),
            m.FileGet(fid=raw, idx=1),
        ]
    )

    def refused() -> bool:
        return len(frames_for(mallory, m.FileNak, raw)) >= 2

    await peer_until(mallory, refused, "alice refused the chunk requests")
    assert not frames_for(mallory, m.FileHave, raw), "a non-member was told alice has it"
    assert not frames_for(mallory, m.FileData, raw), "a non-member got file data"
    assert not frames_for(mallory, m.FileHashes, raw), "a non-member got the digests"
    healthy(a, b)
    await mallory.close()
    await mallory_b.close()


async def test_private_offer_is_not_served_over_a_replayed_identity(
    node: NodeFactory, tmp_path: Path
) -> None:
    """mallory claims bob's identity with bob's binding signature over a channel key she
    does not hold (as if captured off the wire): alice refuses the handshake
    (`bad_identity`), so a file offered privately to bob never reaches her."""
    a, b = await start_pair(node)
    path = tmp_path / "for-bob.bin"
    secret = os.urandom(100_000)
    path.write_bytes(secret)
    await a.send({"cmd": "send_file", "to": "bob", "path": str(path)})
    own = await a.wait_for("file_offer", timeout=PROMPT_S, from_start=True, own=True)
    fid = own["id"]
    await b.wait_for("file_offer", timeout=PROMPT_S, from_start=True, id=fid)

    bob_identity = Identity.from_seed((b.data_dir / "identity.key").read_bytes())
    assert bob_identity.peer_id == b.peer_id
    bobs_channel_key = generate_static_private()  # bob's; mallory never holds it
    binding = bob_identity.sign(m.STATIC_KEY_CONTEXT + static_public(bobs_channel_key))
    mallory = HostilePeer(nick="bob", rooms=())
    mallory.local = LocalInfo(
        identity=bob_identity,  # only its public half goes on the wire
        noise_static=generate_static_private(),
        nick="bob",
        listen_port=0,
        caps=mallory.local.caps,
        binding_sig=binding,
    )
    # As the initiator she sends her hello last, so her side completes: she asks at once.
    await mallory.connect(a.port)
    raw = bytes.fromhex(fid)
    mallory.send_frames(
        [m.FileWho(fid=raw), m.FileHashesReq(fid=raw, lo=0), m.FileGet(fid=raw, idx=0)]
    )
    closed = await mallory.wait_closed()
    assert closed.by_peer, closed
    assert "identity signature does not match its channel key" in log_of(a)
    assert mallory.frames == [], mallory.frames
    await mallory.close()

    # bob himself still fetches it.
    await accept(b, fid)
    assert (await done(b, fid)).read_bytes() == secret
    healthy(a, b)
