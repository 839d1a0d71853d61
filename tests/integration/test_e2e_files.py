"""File sharing between real processes on loopback (issue #5).

Every node runs with discovery off; topologies are built with --peer, and every
node saves accepted files into a `--downloads` directory of its own. File
contents are random bytes, compared by SHA-256 with what arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_peer import HostilePeer
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    Event,
    NodeFactory,
    ask,
    chat_works,
    connected,
    free_tcp_port,
    stderr_has_traceback,
)

from chinwag.protocol import messages as m
from chinwag.protocol.transfer import Offer, digest_root, encode_offer, new_offer

MB = 1_000_000
#: Seconds for hashing, sending and checking a file of up to 300 MB on 2 busy cores.
TRANSFER_S = 60.0
#: Size of the shared file for the tests that act mid-transfer: progress events come
#: every 0.25 s and loopback runs at 200-500 MB/s; they act at a fifth of it or less,
#: so the rest (240 MB or more, about half a second at least) is the margin for acting
#: before the transfer ends. (A loaded machine slows the nodes too, not only the test.)
BIG = 300 * MB


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A BIG-byte random file and its SHA-256, shared by the tests of this module."""
    directory = tmp_path_factory.mktemp("files")
    path = directory / "big.bin"
    sha = random_file(path, BIG)
    yield path, sha
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def remove_big_files(tmp_path: Path) -> Iterator[None]:
    """Delete what a test transferred once its nodes are stopped (pytest keeps tmp dirs)."""
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > MB:
            path.unlink()


# --- helpers ----------------------------------------------------------------


def random_file(path: Path, size: int) -> str:
    """Write size random bytes to path; return their SHA-256 (hex)."""
    whole = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 16 << 20))
            f.write(block)
            whole.update(block)
            left -= len(block)
    return whole.hexdigest()


def sha256_of(path: Path) -> str:
    whole = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(16 << 20):
            whole.update(block)
    return whole.hexdigest()


def downloads(node: ChinwagProcess) -> Path:
    """The node's --downloads directory (see start())."""
    return node.data_dir.with_name(node.data_dir.name + "-downloads")


def node_args(name: str, tmp: Path, *args: str) -> tuple[str, ...]:
    return ("--downloads", str(tmp / f"{name}-downloads"), *args)


async def start(
    node: NodeFactory, tmp: Path, name: str, *args: str, data_dir: Path | None = None
) -> ChinwagProcess:
    """Start a node (discovery off) saving files into <tmp>/<name>-downloads."""
    p = node(name, *node_args(name, tmp, *args), discovery=False, data_dir=data_dir)
    await p.start()
    return p


async def start_pair(node: NodeFactory, tmp: Path) -> tuple[ChinwagProcess, ChinwagProcess]:
    """alice listening on a fixed port, bob dialling her with --peer."""
    a = await start(node, tmp, "alice")
    b = await start(node, tmp, "bob", "--peer", f"127.0.0.1:{a.port}")
    await connected(a, b)
    return a, b


def file_events(node: ChinwagProcess, name: str, fid: str) -> list[Event]:
    return [ev for ev in node.events if ev.get("event") == name and ev.get("id") == fid]


async def offer(sender: ChinwagProcess, to: str, path: Path, *receivers: ChinwagProcess) -> str:
    """Offer path from sender; wait for its own file_offer and each receiver's; return the id."""
    before = {id(ev) for ev in sender.events}
    await sender.send({"cmd": "send_file", "to": to, "path": str(path)})
    own = await sender.wait_for(
        "file_offer",
        pred=lambda ev: id(ev) not in before and ev.get("own") is True,
        timeout=TRANSFER_S,
        from_start=True,
    )
    fid = str(own["id"])
    for r in receivers:
        got = await r.wait_for("file_offer", timeout=PROMPT_S, from_start=True, id=fid)
        assert got["own"] is False and got["peer_id"] == sender.peer_id, got
        assert got["name"] == own["name"] and got["size"] == own["size"], (got, own)
        assert got["sha256"] == own["sha256"], (got, own)
    return fid


async def accept(node: ChinwagProcess, fid: str, **extra: object) -> None:
    await node.send({"cmd": "accept_file", "id": fid, **extra})


async def done(node: ChinwagProcess, fid: str, timeout: float = TRANSFER_S, skip: int = 0) -> Event:
    """Wait for the file_done of fid (failing at once on a file_failed), past the first skip
    events of the node."""
    old = {id(ev) for ev in node.events[:skip]}
    ev = await node.wait_for(
        pred=lambda e: (
            e.get("id") == fid
            and e.get("event") in ("file_done", "file_failed")
            and id(e) not in old
        ),
        timeout=timeout,
        from_start=True,
    )
    assert ev["event"] == "file_done", ev
    return ev


async def progress_at_least(node: ChinwagProcess, fid: str, nbytes: int) -> Event:
    """Wait for a file_progress of fid with at least nbytes verified."""
    return await node.wait_for(
        "file_progress",
        pred=lambda e: e["bytes"] >= nbytes,
        timeout=TRANSFER_S,
        from_start=True,
        id=fid,
    )


def check_progress(node: ChinwagProcess, fid: str, total: int) -> list[Event]:
    """fid's progress events are monotonic and within total; return them."""
    events = file_events(node, "file_progress", fid)
    seen = [ev["bytes"] for ev in events]
    assert seen == sorted(seen), f"progress not monotonic: {seen}"
    assert all(ev["total"] == total for ev in events), events[:3]
    assert all(0 <= b <= total for b in seen), seen
    return events


async def listing(node: ChinwagProcess) -> list[Event]:
    before = {id(ev) for ev in node.events}
    await node.send({"cmd": "files"})
    reply = await node.wait_for(
        "files", pred=lambda ev: id(ev) not in before, timeout=PROMPT_S, from_start=True
    )
    return list(reply["files"])


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- tests ------------------------------------------------------------------


async def test_200mb_file_arrives_identical(node: NodeFactory, tmp_path: Path) -> None:
    """A 200 MB file offered by nick: nothing written before accept; then identical, in place."""
    a, b = await start_pair(node, tmp_path)
    src = tmp_path / "big.bin"
    sha = random_file(src, 200 * MB)
    fid = await offer(a, "bob", src, b)
    assert entries(downloads(b)) == [], "data written before accept"
    assert not file_events(b, "file_progress", fid)

    await accept(b, fid)
    got = await done(b, fid)
    path = Path(got["path"])
    assert got["sha256"] == sha
    assert path.parent == downloads(b).resolve(), path
    assert path.name == "big.bin"
    assert sha256_of(path) == sha
    events = check_progress(b, fid, 200 * MB)
    assert events and events[-1]["bytes"] == 200 * MB, events[-3:]
    assert entries(downloads(b)) == ["big.bin"], "leftover partial files"
    # The sender of a private offer hears that it arrived.
    sent = await a.wait_for("file_done", timeout=PROMPT_S, from_start=True, id=fid)
    assert sent["sha256"] == sha
    no_tracebacks(a, b)


async def test_hostile_names_land_inside_downloads(node: NodeFactory, tmp_path: Path) -> None:
    """Offers named `../../evil.sh`, `.hidden`, `CON`, with escapes: saved safely, no overwrite."""
    b = await start(node, tmp_path, "bob")
    dl = downloads(b)
    dl.mkdir()
    (dl / "evil.sh").write_bytes(b"the original\n")
    peer = HostilePeer()
    await peer.connect(b.port)
    names = [
        "../../evil.sh",
        "..\\..\\evil.sh",
        "/etc/evil.sh",
        ".hidden",
        "..",
        "CON",
        "con.txt",
        "a\x1b[31mred\x07\nb\r.txt",
        "\u202etxt.exe",
    ]
    contents = {name: os.urandom(5000 + i) for i, name in enumerate(names)}
    offers = {name: hostile_offer(peer, name, data) for name, data in contents.items()}
    server = asyncio.create_task(serve_files(peer, {o.fid: contents[n] for n, o in offers.items()}))
    try:
        for seq, o in enumerate(offers.values(), start=1):
            peer.send_chat(peer.message(seq, encode_offer(o)))
        for name, o in offers.items():
            got = await b.wait_for("file_offer", timeout=PROMPT_S, from_start=True, id=o.fid)
            assert got["name"] == name, got
        for o in offers.values():
            await accept(b, o.fid[:8])
        paths = {name: Path((await done(b, o.fid))["path"]) for name, o in offers.items()}
    finally:
        server.cancel()
        await peer.close()

    for name, path in paths.items():
        assert path.parent == dl.resolve(), (name, path)
        assert path.read_bytes() == contents[name], name
        assert not path.name.startswith("."), (name, path)
        assert path.name.isprintable(), (name, path)
        assert path.name.lower() not in ("con", "con.txt"), (name, path)
    assert (dl / "evil.sh").read_bytes() == b"the original\n"
    evil = sorted(paths[n].name for n in ("../../evil.sh", "..\\..\\evil.sh", "/etc/evil.sh"))
    assert evil == ["evil (1).sh", "evil (2).sh", "evil (3).sh"], evil
    assert not (tmp_path / "evil.sh").exists() and not (tmp_path.parent / "evil.sh").exists()
    assert sorted(p.name for p in dl.iterdir()) == sorted(
        ["evil.sh", *(p.name for p in paths.values())]
    )
    assert b.returncode is None and not stderr_has_traceback(b), b.stderr_tail()


async def test_sender_killed_mid_transfer_resumes(
    node: NodeFactory, tmp_path: Path, big_file: tuple[Path, str]
) -> None:
    """The sender is SIGKILLed half-way and restarted: the download completes, no new accept."""
    src, sha = big_file
    port = free_tcp_port()
    a = await start(node, tmp_path, "alice", "--port", str(port))
    b = await start(node, tmp_path, "bob", "--peer", f"127.0.0.1:{port}")
    await connected(a, b)
    fid = await offer(a, "bob", src, b)
    await accept(b, fid)
    await progress_at_least(b, fid, BIG // 5)
    await a.kill()
    await b.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=a.peer_id)
    before = file_events(b, "file_progress", fid)[-1]["bytes"]
    assert before < BIG, "the transfer ended before the sender was killed"
    assert not file_events(b, "file_done", fid)

    a2 = await start(node, tmp_path, "alice", "--port", str(port), data_dir=a.data_dir)
    assert a2.peer_id == a.peer_id
    got = await done(b, fid)
    assert sha256_of(Path(got["path"])) == sha
    check_progress(b, fid, BIG)
    assert not file_events(b, "file_failed", fid)
    assert entries(downloads(b)) == ["big.bin"]
    no_tracebacks(a2, b)


@pytest.mark.parametrize("to", ["bob", "#secret"])
async def test_receiver_killed_mid_transfer_resumes(
    node: NodeFactory, tmp_path: Path, big_file: tuple[Path, str], to: str
) -> None:
    """The receiver is SIGKILLed half-way and restarted: it goes on from where it was.
    Also for a private room's file, whose chunks travel sealed (the partial file holds
    plaintext, checked at restart against the digests of the sealed chunks)."""
    src, sha = big_file
    a, b = await start_pair(node, tmp_path)
    if to.startswith("#"):
        await join_private(to[1:], a, b)
    fid = await offer(a, to, src, b)
    await accept(b, fid)
    await progress_at_least(b, fid, BIG // 5)
    await b.kill()
    earlier = file_events(b, "file_progress", fid)[-1]["bytes"]
    assert not file_events(b, "file_done", fid), "the transfer ended before the kill"

    b2 = await start(node, tmp_path, "bob", "--peer", f"127.0.0.1:{a.port}", data_dir=b.data_dir)
    first = await b2.wait_for("file_progress", timeout=PROMPT_S, from_start=True, id=fid)
    assert earlier <= first["bytes"] < BIG, (earlier, first)
    got = await done(b2, fid)
    assert sha256_of(Path(got["path"])) == sha
    check_progress(b2, fid, BIG)
    assert not [ev for ev in b2.events if ev.get("event") == "file_offer" and ev["id"] == fid]
    assert entries(downloads(b)) == ["big.bin"]
    no_tracebacks(a, b2)


async def test_room_file_from_two_sources(
    node: NodeFactory, tmp_path: Path, big_file: tuple[Path, str]
) -> None:
    """A offers to #general, B fetches it; C then fetches from A and B at once."""
    src, sha = big_file
    a = await start(node, tmp_path, "alice")
    b = await start(node, tmp_path, "bob", "--peer", f"127.0.0.1:{a.port}")
    c = await start(
        node, tmp_path, "carol", "--peer", f"127.0.0.1:{a.port}", "--peer", f"127.0.0.1:{b.port}"
    )
    await asyncio.gather(connected(a, b), connected(a, c), connected(b, c))
    fid = await offer(a, "#general", src, b, c)
    assert (await b.wait_for("file_offer", from_start=True, id=fid))["room"] == "general"
    await accept(b, fid)
    got_b = await done(b, fid)
    assert sha256_of(Path(got_b["path"])) == sha

    await accept(c, fid)
    two = None
    while two is None:
        ev = await c.wait_for(
            pred=lambda e: e.get("id") == fid and e.get("event") != "file_offer",
            timeout=TRANSFER_S,
        )
        if ev["event"] == "file_progress" and ev["sources"] == 2:
            two = ev
        elif ev["event"] != "file_progress":
            break
        else:
            listed = [f for f in await listing(c) if f["id"] == fid]
            if listed and listed[0]["sources"] == 2:
                two = listed[0]
    got_c = await done(c, fid)
    sources = [ev["sources"] for ev in file_events(c, "file_progress", fid)]
    assert two is not None, f"never two sources at once: {sources}"
    assert sha256_of(Path(got_c["path"])) == sha
    check_progress(c, fid, BIG)
    no_tracebacks(a, b, c)


async def test_reject_and_cancel(
    node: NodeFactory, tmp_path: Path, big_file: tuple[Path, str]
) -> None:
    """Reject tells the sender; cancel drops (or keeps, to resume) the partial; withdraw stops B."""
    src, sha = big_file
    a, b = await start_pair(node, tmp_path)
    dl = downloads(b)

    fid = await offer(a, "bob", src, b)
    await b.send({"cmd": "reject_file", "id": fid})
    told = await a.wait_for("file_failed", timeout=PROMPT_S, from_start=True, id=fid)
    assert "rejected" in told["reason"], told
    assert "rejected" in (await b.wait_for("file_failed", from_start=True, id=fid))["reason"]
    assert entries(dl) == []

    for keep in (False, True):
        fid = await offer(a, "bob", src, b)
        await accept(b, fid)
        await progress_at_least(b, fid, BIG // 10)
        await b.send({"cmd": "cancel_file", "id": fid, "keep": keep})
        failed = await b.wait_for("file_failed", timeout=PROMPT_S, from_start=True, id=fid)
        assert failed["reason"] == "cancelled", failed
        told = await a.wait_for("file_failed", timeout=PROMPT_S, from_start=True, id=fid)
        assert "cancelled" in told["reason"], told
        assert not file_events(b, "file_done", fid), "the transfer ended before the cancel"
        parts = [p for p in dl.iterdir() if p.name.startswith(".chinwag-") and fid[:16] in p.name]
        if keep:
            assert len(parts) == 1 and parts[0].stat().st_size > 0, entries(dl)
        else:
            assert parts == [], entries(dl)
        state = next(f for f in await listing(b) if f["id"] == fid)
        assert state["state"] == "cancelled", state

    # Accepted again, the kept download goes on from its partial file.
    kept = file_events(b, "file_progress", fid)[-1]["bytes"]
    seen = len(file_events(b, "file_progress", fid))
    skip = len(b.events)
    await accept(b, fid)
    got = await done(b, fid, skip=skip)
    assert sha256_of(Path(got["path"])) == sha
    again = [ev["bytes"] for ev in file_events(b, "file_progress", fid)[seen:]]
    assert again and again[0] >= kept, (kept, again)
    assert not [p for p in dl.iterdir() if p.name.startswith(".chinwag-")], entries(dl)

    fid = await offer(a, "bob", src, b)
    await accept(b, fid)
    await progress_at_least(b, fid, BIG // 10)
    await a.send({"cmd": "cancel_file", "id": fid})
    failed = await b.wait_for("file_failed", timeout=PROMPT_S, from_start=True, id=fid)
    assert "withdrawn" in failed["reason"], failed
    assert not file_events(b, "file_done", fid), "the transfer ended before the withdrawal"
    assert not [p for p in dl.iterdir() if fid[:16] in p.name], entries(dl)
    assert entries(dl) == ["big.bin"], "only the file accepted again is saved"
    for n in (a, b):
        assert n.returncode is None and not stderr_has_traceback(n), n.stderr_tail()


async def test_bad_input(node: NodeFactory, tmp_path: Path) -> None:
    """Missing paths, directories and unknown ids give clear errors; the node keeps running."""
    a, b = await start_pair(node, tmp_path)
    cases = [
        ({"cmd": "send_file", "to": "bob", "path": str(tmp_path / "nope.bin")}, "no such file"),
        ({"cmd": "send_file", "to": "bob", "path": str(tmp_path)}, "directory"),
        ({"cmd": "send_file", "to": "nobody", "path": __file__}, "nobody"),
        ({"cmd": "accept_file", "id": "0123456789abcdef"}, "no file"),
        ({"cmd": "accept_file", "id": "01"}, "4 characters"),
        ({"cmd": "reject_file", "id": "fedcba98"}, "no file"),
        ({"cmd": "cancel_file", "id": "fedcba98"}, "no file"),
    ]
    for cmd, expect in cases:
        err = await ask_error(a, cmd)
        assert expect in err["message"], (cmd, err)
    fid = await offer(a, "bob", Path(__file__), b)
    err = await ask_error(a, {"cmd": "accept_file", "id": fid})
    assert "your own" in err["message"], err
    await accept(b, fid)
    await done(b, fid)
    err = await ask_error(b, {"cmd": "accept_file", "id": fid})
    assert "saved already" in err["message"], err
    await chat_works(a, b, text="still here")
    for n in (a, b):
        assert n.returncode is None and not stderr_has_traceback(n), n.stderr_tail()


async def test_auto_accept_from_verified_peers_only(node: NodeFactory, tmp_path: Path) -> None:
    """--auto-accept-mb fetches small files from verified peers without asking; others wait."""
    a = await start(node, tmp_path, "alice", "--auto-accept-mb", "1")
    b = await start(node, tmp_path, "bob", "--peer", f"127.0.0.1:{a.port}")
    await connected(a, b)
    small = tmp_path / "small.txt"
    small.write_bytes(os.urandom(50_000))
    # Not verified yet: the offer waits for an answer.
    first = await offer(b, "alice", small, a)
    await a.send({"cmd": "verify", "who": b.peer_id, "confirm": True})
    await a.wait_for("whois", timeout=PROMPT_S, verified=True)
    second = await offer(b, "alice", small, a)
    got = await done(a, second)
    assert sha256_of(Path(got["path"])) == sha256_of(small)
    # Too big for the limit: asked, not fetched.
    big = tmp_path / "big.bin"
    random_file(big, 2 * MB)
    third = await offer(b, "alice", big, a)
    await chat_works(b, a, text="after the offers")
    states = {f["id"]: f["state"] for f in await listing(a)}
    assert states[first] == "offered" and states[third] == "offered", states
    assert states[second] == "done", states
    no_tracebacks(a, b)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_unreadable_file(node: NodeFactory, tmp_path: Path) -> None:
    a, _ = await start_pair(node, tmp_path)
    path = tmp_path / "secret.bin"
    path.write_bytes(b"x")
    path.chmod(0)
    err = await ask_error(a, {"cmd": "send_file", "to": "bob", "path": str(path)})
    assert "not readable" in err["message"] or "cannot read" in err["message"], err


async def test_full_disk(node: NodeFactory, tmp_path: Path) -> None:
    """Downloads on an 8 MB tmpfs: a 20 MB file is refused; overcommitted ones fail cleanly."""
    a = await start(node, tmp_path, "alice")
    dl = tmp_path / "small-disk"
    dl.mkdir()
    mount = 'mount -t tmpfs -o size=8m tmpfs "$0" && exec "$@"'
    b = ChinwagProcess(
        tmp_path / "bob",
        *("--bind", "127.0.0.1", "--port", "0", "--no-discovery"),
        *("--downloads", str(dl), "--peer", f"127.0.0.1:{a.port}"),
        nick="bob",
        wrapper=["unshare", "-m", "sh", "-c", mount, str(dl)],
    )
    try:
        await b.start()
        await connected(a, b)
        big = tmp_path / "twenty.bin"
        random_file(big, 20 * MB)
        fid = await offer(a, "bob", big, b)
        err = await ask_error(b, {"cmd": "accept_file", "id": fid})
        assert "not enough space" in err["message"], err
        assert await entries_in(b, dl) == []

        # Two 5 MB files accepted at once: each fits alone, not both. Depending on how
        # far the first got when the second accept is handled, the second is refused
        # at once (an error) or fails when its space is reserved or written.
        shas = {}
        fids = []
        for name in ("one.bin", "two.bin"):
            shas[name] = random_file(tmp_path / name, 5 * MB)
            fids.append(await offer(a, "bob", tmp_path / name, b))
        before = {id(ev) for ev in b.events}
        for fid in fids:
            await accept(b, fid)

        def outcomes() -> tuple[list[Event], list[Event]]:
            ends = [
                ev
                for ev in b.events
                if ev.get("id") in fids and ev.get("event") in ("file_done", "file_failed")
            ]
            refused = [ev for ev in b.events if id(ev) not in before and ev.get("event") == "error"]
            return ends, refused

        await b.wait_for(
            pred=lambda _ev: sum(map(len, outcomes())) >= len(fids),
            timeout=TRANSFER_S,
            from_start=True,
        )
        ends, refused = outcomes()
        failed = [ev for ev in ends if ev["event"] == "file_failed"]
        assert failed or refused, f"10 MB fitted on an 8 MB disk: {ends}"
        for ev in refused:
            assert "not enough space" in ev["message"], ev
        for ev in failed:
            assert "space" in ev["reason"], ev
        listed = await entries_in(b, dl)
        done_paths = [Path(ev["path"]) for ev in ends if ev["event"] == "file_done"]
        assert sorted(listed) == sorted(p.name for p in done_paths), listed
        for path in done_paths:
            assert path.parent == dl and path.name in shas, path
            sha = (await in_mounts_of(b, "sha256sum", str(path))).split()[0]
            assert sha == shas[path.name], path
        assert b.returncode is None and not stderr_has_traceback(b), b.stderr_tail()
        await chat_works(a, b, text="disk full, chat fine")
    finally:
        if b.proc is not None and b.returncode is None:
            try:
                await b.quit(timeout=5)
            except Exception:
                await b.kill()


async def test_chat_flows_during_transfer(
    node: NodeFactory, tmp_path: Path, big_file: tuple[Path, str]
) -> None:
    """Messages both ways during a big transfer arrive while it is under way.

    How fast is for bench/bench_files.py (chat p50/p99 during a transfer); here
    the only bound is PROMPT_S, which a loaded machine cannot break. What keeps
    chat fast, file data written only below the send buffer's high-water mark,
    is tested without timing in tests/unit/test_files_share.py.
    """
    src, sha = big_file
    a, b = await start_pair(node, tmp_path)
    fid = await offer(a, "bob", src, b)
    await accept(b, fid)
    await progress_at_least(b, fid, 1)
    during = 0
    for i in range(3):
        for sender, receiver in ((a, b), (b, a)):
            text = f"during transfer {i} from {sender.nick}"
            await sender.say(text)
            await receiver.wait_for_message(text, timeout=PROMPT_S)
            during += not file_events(b, "file_done", fid)
    assert during >= 2, "the transfer was over before chat could be tested alongside it"
    got = await done(b, fid)
    assert sha256_of(Path(got["path"])) == sha
    no_tracebacks(a, b)


async def test_private_room_file_from_a_member_who_fetched_it(
    node: NodeFactory, tmp_path: Path
) -> None:
    """A offers a file to a private room; B fetches it; A quits; C (a member) fetches it
    from B alone: every holder seals a chunk to the same bytes, so B's match the digests
    of A's offer."""
    a = await start(node, tmp_path, "alice")
    b = await start(node, tmp_path, "bob", "--peer", f"127.0.0.1:{a.port}")
    c = await start(node, tmp_path, "carol", "--peer", f"127.0.0.1:{b.port}")
    await asyncio.gather(connected(a, b), connected(b, c))
    await join_private("secret", a, b, c)
    src = tmp_path / "plans.bin"
    sha = random_file(src, 3 * MB + 12345)
    fid = await offer(a, "#secret", src, b)
    await accept(b, fid)
    got_b = await done(b, fid)
    assert sha256_of(Path(got_b["path"])) == sha
    await a.quit()
    await c.wait_for("file_offer", timeout=PROMPT_S, from_start=True, id=fid)
    await accept(c, fid)
    got_c = await done(c, fid)
    assert got_c["sha256"] == sha and sha256_of(Path(got_c["path"])) == sha
    no_tracebacks(b, c)


# --- more helpers -------------------------------------------------------------


async def join_private(room: str, *nodes: ChinwagProcess) -> None:
    """Join the private room on every node, with one passphrase."""
    for n in nodes:
        cmd = {"cmd": "join", "room": room, "passphrase": "correct horse"}
        joined = await ask(n, cmd, "joined")
        assert joined["private"] is True, joined


def no_tracebacks(*nodes: ChinwagProcess) -> None:
    for n in nodes:
        assert not stderr_has_traceback(n), f"{n.nick}: {n.stderr_tail()}"


async def ask_error(node: ChinwagProcess, cmd: Event) -> Event:
    """Send a command expected to fail; return the error event it caused."""
    before = {id(ev) for ev in node.events}
    await node.send(cmd)
    return await node.wait_for(
        "error", pred=lambda ev: id(ev) not in before, timeout=PROMPT_S, from_start=True
    )


async def in_mounts_of(node: ChinwagProcess, *argv: str) -> str:
    """Run a command in the node's mount namespace; return its output."""
    assert node.proc is not None
    proc = await asyncio.create_subprocess_exec(
        *("nsenter", "-t", str(node.proc.pid), "-m", *argv), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, argv
    return out.decode()


async def entries_in(node: ChinwagProcess, directory: Path) -> list[str]:
    """Names in directory as the node sees it (inside its mount namespace)."""
    return (await in_mounts_of(node, "ls", "-A", str(directory))).split()


def hostile_offer(peer: HostilePeer, name: str, data: bytes) -> Offer:
    """An offer of data (one chunk) under any name, as a hostile peer may make it."""
    return new_offer(
        peer.identity.public,
        os.urandom(16),
        name,
        len(data),
        hashlib.sha256(data).hexdigest(),
        digest_root(hashlib.sha256(data).digest()),
    )


async def serve_files(peer: HostilePeer, files: dict[str, bytes]) -> None:
    """Answer a node's requests for one-chunk files (fid -> contents) until cancelled."""
    seen = 0
    while True:
        while seen < len(peer.frames):
            frame: object = peer.frames[seen]
            seen += 1
            if not isinstance(frame, m.FileWho | m.FileHashesReq | m.FileGet):
                continue
            data = files.get(frame.fid.hex())
            if data is None:
                continue
            if isinstance(frame, m.FileWho):
                peer.send_frames([m.FileHave(fid=frame.fid)])
            elif isinstance(frame, m.FileHashesReq):
                digest = hashlib.sha256(data).digest()
                peer.send_frames([m.FileHashes(fid=frame.fid, lo=0, hashes=digest)])
            else:
                peer.send_frames(
                    m.FileData(fid=frame.fid, idx=0, off=off, data=data[off : off + 60_000])
                    for off in range(0, len(data), 60_000)
                )
        peer._changed.clear()
        await peer._changed.wait()
