"""What a relay and a non-member see (issue 12 item 3; docs/rooms.md, "What others can see").

Real nodes over loopback, and a scripted peer (mallory) that records every frame a
node sends it after the Noise layer: exactly what a mesh peer or relay running
modified code would learn. The LAN captures and the holder's files are searched in
tests/lan/test_lan_observers.py.
"""

from __future__ import annotations

import os

import msgspec
from hostile_peer import HostilePeer
from it_support import PROMPT_S, ChinwagProcess, NodeFactory, ask, connected

from chinwag.crypto import box
from chinwag.crypto.identity import public_from_peer_id
from chinwag.protocol import messages as m

TEXT = "meet me by the old mill at nine"


def link_needles(a: ChinwagProcess, b: str) -> dict[str, bytes]:
    """What would tie a conversation of a and b to them: the conversation id, the text."""
    return {"conversation": box.dm_room(a.peer_id, b).encode(), "text": TEXT.encode()}


def author_needles(a: ChinwagProcess) -> dict[str, bytes]:
    """a's identity in every form."""
    key = public_from_peer_id(a.peer_id)
    return {"a id": a.peer_id.encode(), "a key": key, "a hex": key.hex().encode()}


async def test_a_relay_between_two_peers_learns_nothing_that_links_them(
    node: NodeFactory,
) -> None:
    """a writes to b, which met a before but is not connected now; mallory, connected to
    a (as a relay or a mail holder would be), records every frame a sends her. None names
    the conversation or carries the text; a mail item names its reader, never a."""
    a = node("ann", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    mallory = HostilePeer(nick="mallory")
    await mallory.connect(a.port)
    await connected_hostile(a, mallory)
    bob = public_from_peer_id(b.peer_id)
    assert await b.quit() == 0
    await a.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=b.peer_id)
    start = len(mallory.frames)

    await a.send({"cmd": "dm", "to": b.peer_id, "text": TEXT})
    await a.wait_for("dm", timeout=PROMPT_S, from_start=True, text=TEXT)
    # A later room message reaches mallory after all a sent about the private one.
    await a.send({"cmd": "send", "room": "general", "text": "a public word"})
    await mallory.wait_frame(m.Chat, lambda f: _room(f) == "general", timeout=PROMPT_S)

    needles = link_needles(a, b.peer_id)
    authors = author_needles(a)
    leaks = []
    for i, frame in enumerate(mallory.frames[start:], start):
        raw = m.encode(frame)
        name = type(frame).__name__
        leaks += [f"#{i} {name}: {k}" for k in ("conversation", "text") if needles[k] in raw]
        if isinstance(frame, m.MailPut):
            # A holder learns the reader (it must deliver), not the author.
            assert all(item.to == bob for item in frame.items), frame
            leaks += [f"#{i} mput: {k}" for k, n in authors.items() if n in raw]
        if isinstance(frame, m.Chat) and _room(frame).startswith("dm."):
            leaks.append(f"#{i} chat of conversation {_room(frame)}")
    assert not leaks, leaks
    await mallory.close()


async def test_a_third_peer_gets_nothing_of_a_conversation_between_connected_peers(
    node: NodeFactory,
) -> None:
    """a and b are connected and write to each other; mallory, connected to both, gets no
    frame that names their conversation or carries its text."""
    a = node("ann", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    watchers = [HostilePeer(nick="mallory"), HostilePeer(nick="mallory")]
    for n, w in zip((a, b), watchers, strict=True):
        await w.connect(n.port)
        await connected_hostile(n, w)
    await a.send({"cmd": "dm", "to": b.peer_id, "text": TEXT})
    own = await a.wait_for("dm", timeout=PROMPT_S, from_start=True, text=TEXT)
    await b.wait_for("dm", timeout=PROMPT_S, from_start=True, id=own["id"])
    # b's receipt reaches a (a's delivered count), then a room message marks the end.
    await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=own["id"])
    for n, w in zip((a, b), watchers, strict=True):
        await n.send({"cmd": "send", "room": "general", "text": f"end {n.nick}"})
        await w.wait_frame(m.Chat, lambda f: _room(f) == "general", timeout=PROMPT_S)
    needles = link_needles(a, b.peer_id)
    for w in watchers:
        leaks = [
            f"#{i} {type(f).__name__}: {k}"
            for i, f in enumerate(w.frames)
            for k, n in needles.items()
            if n in m.encode(f)
        ]
        assert not leaks, leaks
        await w.close()


async def connected_hostile(node: ChinwagProcess, peer: HostilePeer) -> None:
    """Wait until node reports the scripted peer as joined."""
    await node.wait_for("peer_joined", timeout=PROMPT_S, from_start=True, peer_id=peer.peer_id)


async def test_a_non_member_sees_no_key_check_value_and_no_history(node: NodeFactory) -> None:
    """alice and bob share a private room with history; mallory, not a member, connects to
    alice: no announcement shows her the room's check value, and asking for its history
    (announcing the room, with the value alice announced if she saw one) brings none."""
    a = node("alice", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    for n in (a, b):
        await ask(n, {"cmd": "join", "room": "secret", "passphrase": "open sesame"}, "joined")
    wire = box.private_room_id("secret")
    for i in range(2):
        await a.send({"cmd": "send", "room": "secret", "text": f"{TEXT} #{i}"})
        await b.wait_for_message(f"{TEXT} #{i}", PROMPT_S)
    await a.send({"cmd": "send", "room": "general", "text": "a public word"})
    await b.wait_for_message("a public word", PROMPT_S)

    mallory = HostilePeer(nick="mallory", rooms=())
    await mallory.connect(a.port)
    await mallory.wait_frame(m.Rooms, timeout=PROMPT_S)
    seen = [r for f in mallory.frames if isinstance(f, m.Rooms) for r in f.joined]
    kcvs = [r.kcv for r in seen if r.room == wire and r.kcv]
    # The strongest ask: replay the value if she saw it, else guess one.
    mallory.send_frames(
        [
            m.Rooms(
                joined=[
                    m.RoomAnnounce(room="general"),
                    m.RoomAnnounce(room=wire, kcv=kcvs[0] if kcvs else os.urandom(16)),
                ]
            ),
            m.Vector(room=wire, have={}),
            m.Vector(room="general", have={}),
        ]
    )
    # Her later question is answered: the earlier one was handled before it.
    await mallory.wait_frame(m.Chat, lambda f: _room(f) == "general", timeout=PROMPT_S)
    history = [f for f in mallory.frames if isinstance(f, m.Chat) and _room(f) == wire]
    assert not history, f"a non-member got {len(history)} messages of {wire}"
    assert not kcvs, f"a non-member saw the check value of {wire}"
    await mallory.close()


def _room(chat: m.Chat) -> str:
    return msgspec.msgpack.decode(chat.body, type=m.ChatBody).room
