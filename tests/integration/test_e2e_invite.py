"""Invites and contacts between real processes on loopback (issue 14, docs/reach.md).

Discovery is off everywhere: the only way the nodes find each other is the invite.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from hostile_peer import HostilePeer
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    NodeFactory,
    ask,
    chat_works,
    connected,
    count,
    free_tcp_port,
    until,
)

from chinwag import limits
from chinwag.datadir import load_or_create_identity
from chinwag.protocol import messages as m
from chinwag.protocol.invite import make_invite
from node_support import make_node


async def cli_invite(data_dir: Path) -> str:
    """Run `chinwag invite` (output not a terminal: the code alone) and return the code."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "chinwag", "invite", "--data-dir", str(data_dir)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), PROMPT_S)
    assert proc.returncode == 0, err
    lines = out.decode().split()
    assert len(lines) == 1 and lines[0].startswith("chinwag:"), out
    return lines[0]


async def cli_add(code: str, data_dir: Path) -> tuple[int, str]:
    """Run `chinwag add CODE`; return its exit status and its output (stdout, else stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "chinwag", "add", code, "--data-dir", str(data_dir)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), PROMPT_S)
    assert proc.returncode is not None
    return proc.returncode, (out or err).decode()


async def test_invite_add_chat_restart_forget(node: NodeFactory, tmp_path: Path) -> None:
    """A's `chinwag invite` code, added on B, connects them; B dials A again after a restart;
    `forget` removes the contact."""
    a = node("alice", discovery=False)
    b = node("bob", discovery=False)
    await a.start()
    await b.start()
    code = await cli_invite(a.data_dir)
    answer = await ask(a, {"cmd": "invite"}, "invite")
    assert f"127.0.0.1:{a.port}" in answer["addresses"], answer
    assert answer["peer_id"] == a.peer_id and answer["relays"] == [], answer

    await b.send({"cmd": "add", "code": code})
    added = await b.wait_for("contact_added", timeout=PROMPT_S, from_start=True)
    assert added["peer_id"] == a.peer_id and added["nick"] == "alice", added
    await connected(a, b)
    await chat_works(a, b, text="hello through an invite")
    await chat_works(b, a, text="and back")
    listing = await ask(b, {"cmd": "contacts"}, "contacts")
    [contact] = listing["contacts"]
    assert contact["peer_id"] == a.peer_id and contact["online"] is True, contact
    assert contact["path"] == "lan" and contact["last_seen"] > 0, contact

    # B stops and starts again: its contact list makes it dial A, no discovery, no --peer.
    await b.quit()
    b2 = node("bob", discovery=False, data_dir=b.data_dir)
    await b2.start()
    await b2.wait_for_peers([a.peer_id], timeout=PROMPT_S)
    await chat_works(b2, a, text="back after a restart")

    gone = await ask(b2, {"cmd": "forget", "peer": "alice"}, "contact_forgotten")
    assert gone["peer_id"] == a.peer_id, gone
    assert (await ask(b2, {"cmd": "contacts"}, "contacts"))["contacts"] == []


async def test_bad_codes_get_a_clear_error_and_the_node_runs_on(
    node: NodeFactory, tmp_path: Path
) -> None:
    """Garbage, a tampered code, an expired one, our own: one clear `error` each."""
    a = node("alice", discovery=False)
    await a.start()
    code = (await ask(a, {"cmd": "invite"}, "invite"))["code"]
    other = tmp_path / "carol-dir"
    other.mkdir()
    carol = load_or_create_identity(other)
    expired = make_invite(carol, "carol", ["127.0.0.1:9"], [], expires=1_000_000)
    last, mid = code[-1], code[-50]  # code[-50]: a character of the signature
    tampered = code[:-50] + ("b" if mid != "b" else "c") + code[-49:]
    cases = {
        "hello": "must start with 'chinwag:'",
        "chinwag:abc": "damaged or cut short",
        tampered: "altered",
        expired: "expired",
        code: "your own invite",
        code[:-1] + ("a" if last != "a" else "b"): "",  # damaged or altered: either is clear
    }
    for bad, why in cases.items():
        error = await ask(a, {"cmd": "add", "code": bad}, "error")
        assert why in error["message"], (bad, error)
    assert count(a, "contact_added") == 0
    assert (await ask(a, {"cmd": "contacts"}, "contacts"))["contacts"] == []


async def test_cli_add_stores_a_contact_dialled_at_start(node: NodeFactory, tmp_path: Path) -> None:
    """`chinwag add CODE` with no node running stores the contact; the next start dials it."""
    a = node("alice", discovery=False)
    await a.start()
    code = (await ask(a, {"cmd": "invite"}, "invite"))["code"]
    b_dir = tmp_path / "bob"
    rc, out = await cli_add(code, b_dir)
    assert rc == 0 and a.peer_id in out, out
    # While a node runs on the data directory: a clear message, nothing stored.
    rc, err = await cli_add(code, a.data_dir)
    assert rc == 1 and "type /add CODE in it instead" in err, err
    rc, err = await cli_add(code[:-9], b_dir)
    assert rc == 1 and "damaged or cut short" in err and "Traceback" not in err, err
    b: ChinwagProcess = node("bob", discovery=False, data_dir=b_dir)
    await b.start()
    await connected(a, b)


async def test_each_side_says_where_it_sees_the_other_and_a_bogus_report_closes(
    node: NodeFactory,
) -> None:
    """Right after the handshake the node sends `obs` with our address; an implausible
    report is ignored, an unparseable one closes that connection (`malformed_frame`)."""
    a = node("alice", discovery=False)
    await a.start()
    h = HostilePeer()
    await h.connect(a.port, timeout=PROMPT_S)
    assert h._writer is not None
    local = h._writer.get_extra_info("sockname")
    obs = await h.wait_frame(m.Observed, timeout=PROMPT_S)
    assert obs.addr == f"127.0.0.1:{local[1]}", obs
    h.send_frames([m.Observed(addr="192.168.1.9:47475")])  # private: ignored
    h.send_chat(h.message(1, "still connected"))
    await a.wait_for_message("still connected", timeout=PROMPT_S)
    assert h.closed is None
    h.send_frames([m.Observed(addr="no address at all")])
    closed = await h.wait_closed(PROMPT_S)
    assert h.reset or closed.code == "malformed_frame", closed
    await h.close()
    # The node runs on: another peer connects and is told where it is seen too.
    h2 = HostilePeer(nick="trent")
    await h2.connect(a.port, timeout=PROMPT_S)
    await h2.wait_frame(m.Observed, timeout=PROMPT_S)
    await h2.close()


async def test_a_contact_takes_a_strangers_place_at_the_peer_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process node full of strangers: a contact connecting in evicts one."""
    monkeypatch.setattr(limits, "MAX_PEERS", 2)
    a = make_node(tmp_path / "alice", "alice")
    await a.start()
    strangers: list[HostilePeer] = []
    try:
        for _ in range(2):
            strangers.append(HostilePeer())
            await strangers[-1].connect(a.port, timeout=PROMPT_S)
        await until(lambda: len(a.peers().peers) == 2, "two strangers in")
        friend = HostilePeer(nick="carol")
        code = make_invite(friend.identity, "carol", ["127.0.0.1:9"], [], int(time.time()) + 60)
        a.add_contact(code)
        await friend.connect(a.port, timeout=PROMPT_S)
        closed = [await h.wait_closed(PROMPT_S) for h in strangers[:1]]
        assert closed[0].code == "evicted", closed
        await until(
            lambda: friend.peer_id in {p.peer_id for p in a.peers().peers}, "the contact is in"
        )
        assert [c.online for c in a.contacts().contacts] == [True]
        await friend.close()
    finally:
        for h in strangers:
            await h.close()
        await a.stop()


async def test_a_contact_added_while_connected_is_redialled_when_it_comes_back(
    node: NodeFactory,
) -> None:
    """B adds A while A's own dial connects them; A restarts (no --peer): B dials it."""
    port_a = free_tcp_port()
    b = node("bob", discovery=False)
    await b.start()
    a = node("alice", "--port", str(port_a), "--peer", f"127.0.0.1:{b.port}", discovery=False)
    await a.start()
    await connected(a, b)
    code = (await ask(a, {"cmd": "invite"}, "invite"))["code"]
    await b.send({"cmd": "add", "code": code})
    await b.wait_for("contact_added", timeout=PROMPT_S, from_start=True)
    await a.quit()
    a2 = node("alice", "--port", str(port_a), discovery=False, data_dir=a.data_dir)
    await a2.start()
    await a2.wait_for_peers([b.peer_id], timeout=PROMPT_S)
    await chat_works(a2, b, text="found again through the contact")


async def test_every_route_is_tried_and_a_wrong_key_at_one_is_refused(
    node: NodeFactory,
) -> None:
    """An invite naming a closed port, another node's address and the right one: B connects
    to A only; the other node, reached at an address A's invite named, is not taken for A."""
    a = node("alice", discovery=False)
    c = node("carol", discovery=False)
    b = node("bob", discovery=False)
    for n in (a, c, b):
        await n.start()
    identity = load_or_create_identity(a.data_dir)
    closed_port = free_tcp_port()
    addrs = [f"127.0.0.1:{closed_port}", f"127.0.0.1:{c.port}", f"127.0.0.1:{a.port}"]
    code = make_invite(identity, "alice", addrs, [], int(time.time()) + 60)
    await b.send({"cmd": "add", "code": code})
    await connected(a, b)
    await chat_works(b, a, text="the right alice")
    listing = await ask(b, {"cmd": "contacts"}, "contacts")
    assert [(x["peer_id"], x["online"]) for x in listing["contacts"]] == [(a.peer_id, True)]
    assert count(b, "peer_joined", peer_id=c.peer_id) == 0
    assert count(c, "peer_joined") == 0
