"""Membership across a line x - y - z (issue 16): presence records reach beyond connections.

x and z each connect only to y (`--peer`, no discovery): x knows z by its signed
presence record alone. Replayed and forged records are sent by a HostilePeer.
"""

from __future__ import annotations

import asyncio
import time

from hostile_peer import HostilePeer
from it_support import PROMPT_S, ChinwagProcess, NodeFactory, ask, ask_until, connected

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.protocol import messages as m
from chinwag.protocol.presence import make_record, open_record


async def line(node: NodeFactory) -> tuple[ChinwagProcess, ChinwagProcess, ChinwagProcess]:
    """Start y, then x and z each given only y's address."""
    y = node("yara", discovery=False)
    await y.start()
    x = node("xavi", "--peer", f"127.0.0.1:{y.port}", discovery=False)
    z = node("zoe", "--peer", f"127.0.0.1:{y.port}", discovery=False)
    await asyncio.gather(x.start(), z.start())
    await asyncio.gather(connected(x, y), connected(z, y))
    return x, y, z


def member(answer: dict[str, object], peer_id: str) -> dict[str, object] | None:
    members = answer["members"]
    assert isinstance(members, list)
    return next((e for e in members if e["peer_id"] == peer_id), None)


def shows(peer_id: str, online: bool, direct: bool = False) -> object:
    def cond(answer: dict[str, object]) -> bool:
        e = member(answer, peer_id)
        return e is not None and e["online"] is online and e["direct"] is direct

    return cond


MEMBERS = {"cmd": "members", "room": "general"}


async def test_a_far_member_is_listed_and_known_and_its_leave_sticks(node: NodeFactory) -> None:
    x, y, z = await line(node)
    answer = await ask_until(x, MEMBERS, "members", shows(z.peer_id, online=True))
    far = member(answer, z.peer_id)
    assert far is not None and far["nick"] == "zoe", answer
    assert abs(float(str(far["last_seen"])) - time.time()) < 60
    near = member(answer, y.peer_id)
    assert near is not None and near["online"] and near["direct"], answer
    assert member(answer, x.peer_id) is None  # not ourselves
    # `peers` still lists direct connections only.
    listing = await ask(x, {"cmd": "peers"}, "peers")
    assert [p["peer_id"] for p in listing["peers"]] == [y.peer_id], listing

    # whois answers for a member we have no connection to, by nick or by id prefix.
    who = await ask(x, {"cmd": "whois", "who": "zoe"}, "whois")
    assert who["peer_id"] == z.peer_id and who["online"] is True, who
    who = await ask(x, {"cmd": "whois", "who": z.peer_id[:10]}, "whois")
    assert who["peer_id"] == z.peer_id and len(who["fingerprint"]) == 39, who
    verify = await ask(x, {"cmd": "verify", "who": "zoe"}, "whois")
    assert verify["safety_number"] == who["safety_number"], verify

    # A spy at y captures z's record as it travels.
    spy = HostilePeer(nick="spy")
    await spy.connect(y.port)
    frame = await spy.wait_frame(
        m.Presence, lambda f: any(open_record(r).author == z.peer_id for r in f.recs)
    )
    captured = next(r for r in frame.recs if open_record(r).author == z.peer_id)
    await spy.close()

    # z leaves cleanly: its signed leave reaches x through y.
    assert await z.quit() == 0
    await ask_until(x, MEMBERS, "members", shows(z.peer_id, online=False))

    # The captured record replayed to x does not bring z back.
    replayer = HostilePeer(nick="replayer")
    await replayer.connect(x.port)
    replayer.send_frames([m.Presence(recs=[captured])])
    # A forged newer record of z (signed by the wrong key) cuts the sender; being sent
    # after the replay, it also tells us the replay was handled.
    forged = make_record(
        Identity.generate(),
        "zoe",
        int(time.time() * 1000),
        int(time.time()) + 60,
        False,
        [("general", b"")],
        ["127.0.0.1:9"],
    )
    body = m.decode_presence(forged.signed.body)
    zbody = m.encode(
        m.PresenceBody(
            author=m.decode_presence(captured.body).author,
            nick=body.nick,
            seq=body.seq,
            expires=body.expires,
            gone=False,
            rooms=body.rooms,
            addrs=body.addrs,
        )
    )
    replayer.send_frames([m.Presence(recs=[m.SignedPresence(body=zbody, sig=forged.signed.sig)])])
    closed = await replayer.wait_closed(PROMPT_S)
    assert closed.code == "bad_signature", closed
    answer = await ask(x, MEMBERS, "members")
    assert shows(z.peer_id, online=False)(answer), answer  # type: ignore[operator]
    # x keeps serving y.
    assert y.peer_id in x.connected_peers()


async def test_msg_to_a_far_member_dials_it(node: NodeFactory) -> None:
    x, _y, z = await line(node)
    await ask_until(x, MEMBERS, "members", shows(z.peer_id, online=True))
    await x.send({"cmd": "dm", "to": "zoe", "text": "hello far zoe"})
    got = await z.wait_for("dm", timeout=PROMPT_S, from_start=True, text="hello far zoe")
    assert got["peer_id"] == x.peer_id, got
    # x dialled z at the address z's record gives: they are now connected directly.
    await x.wait_for_peers([z.peer_id], timeout=PROMPT_S)
    await ask_until(x, MEMBERS, "members", shows(z.peer_id, online=True, direct=True))


async def test_a_presence_flood_cuts_the_sender_and_the_node_serves_on(node: NodeFactory) -> None:
    """Records beyond the per-peer budget close the connection (`presence_flood`), once."""
    a = node("ann", discovery=False)
    await a.start()
    flooder = HostilePeer(nick="flooder")
    await flooder.connect(a.port)
    own = make_record(
        flooder.identity, "flooder", int(time.time() * 1000), int(time.time()) + 60, False,
        [("general", b"")], [],
    )  # fmt: skip
    frame = m.Presence(recs=[own.signed] * limits.PRESENCE_PER_FRAME)
    frames = int(limits.PRESENCE_PEER_BURST) // limits.PRESENCE_PER_FRAME + 2
    flooder.send_frames([frame] * frames)
    closed = await flooder.wait_closed(PROMPT_S)
    assert closed.code == "presence_flood", closed
    # Its one record was taken, the repeats only cost it its budget.
    answer = await ask(a, MEMBERS, "members")
    assert member(answer, flooder.peer_id) is not None, answer
    assert a.stderr_path.read_text().count("presence flood") == 1
    # The node serves everyone else.
    later = HostilePeer(nick="later")
    await later.connect(a.port)
    await later.wait_frame(m.Presence, lambda f: open_record(f.recs[0]).author == a.peer_id)
    await later.close()


async def test_members_of_a_room_no_peer_carries_find_each_other(node: NodeFactory) -> None:
    """x and z share a private room that y (their only link) is not in: with the mesh only
    members carry a room, so each dials the other at its presence record's address."""
    x, y, z = await line(node)
    for n in (x, z):
        await n.send({"cmd": "join", "room": "vault", "passphrase": "pw"})
        await n.wait_for("joined", timeout=PROMPT_S, from_start=True, room="vault")
    await x.send({"cmd": "send", "text": "in the vault", "room": "vault"})
    got = await z.wait_for("message", timeout=PROMPT_S, from_start=True, text="in the vault")
    assert got["room"] == "vault" and got["peer_id"] == x.peer_id, got
    assert z.peer_id in x.connected_peers()
    assert not [e for e in y.events if e.get("event") == "message" and e.get("room") == "vault"]
