"""Admission to private rooms by PAKE between real processes (docs/protocol.md section 28).

Members prove the passphrase to each other with SPAKE2 bound to their Noise channel; no
key check value travels; a private room's history goes to admitted peers only; a stranger
that announces the room cannot stop a joiner that reaches a genuine member; passphrase
guesses beyond the rate limit cost the guesser its connection.
"""

from __future__ import annotations

import asyncio
import os
import uuid

from hostile_peer import HostilePeer
from it_support import (
    PROMPT_S,
    NodeFactory,
    ask,
    start_pair,
    stderr_has_traceback,
)

from chinwag import limits
from chinwag.crypto import box
from chinwag.protocol import admit as ad
from chinwag.protocol import messages as m
from chinwag.protocol.chat import open_message


def marker(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


class Guesser:
    """A HostilePeer that announces a private room and runs the admission with its own key
    (a guessed passphrase), answering the node's `admit` frames as a member would."""

    def __init__(self, peer: HostilePeer, node_id: str, wire: str, key: bytes) -> None:
        self.peer = peer
        self.node_id = node_id
        self.wire = wire
        self.key = key
        self.machine = ad.Admission(peer.peer_id)
        self.outcomes: list[ad.Action] = []
        self._done = 0

    def pump(self) -> None:
        """Answer the admit frames received since the last pump."""
        assert self.peer.session is not None
        frames = [f for f in self.peer.frames if isinstance(f, m.Admit)]
        for frame in frames[self._done :]:
            actions = self.machine.received(
                self.node_id,
                frame,
                self.key,
                self.peer.session.handshake_hash,
                os.urandom(64),
                0.0,
            )
            self._carry(actions)
        self._done = len(frames)

    def _carry(self, actions: list[ad.Action]) -> None:
        for a in actions:
            if isinstance(a, ad.Send):
                self.peer.send_frames([a.frame])
            else:
                self.outcomes.append(a)

    async def until_outcome(self, timeout: float = PROMPT_S) -> ad.Action:
        async with asyncio.timeout(timeout):
            while True:
                self.pump()
                if self.outcomes:
                    return self.outcomes[0]
                await self.peer.changed()


async def announce(peer: HostilePeer, wire: str) -> None:
    peer.send_frames([m.Rooms(joined=[m.RoomAnnounce(room="general"), m.RoomAnnounce(wire)])])
    await peer.drain()


def room_of(frame: object) -> str | None:
    """The room a frame is about (a chat: its signed body's room)."""
    if isinstance(frame, m.Chat):
        return open_message(frame.body, frame.sig, check_signature=False).body.room
    return getattr(frame, "room", None)


async def test_members_admit_each_other_and_sync_history(node: NodeFactory) -> None:
    """A posts in a private room alone; B joins with the passphrase: they prove it to each
    other and B gets A's history; what B says reaches A."""
    a, b = await start_pair(node)
    await ask(a, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    text = marker("before")
    await a.say(text, room="secret")
    await a.wait_for("message", timeout=PROMPT_S, from_start=True, text=text)
    joined = await ask(b, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    assert joined == {"event": "joined", "room": "secret", "private": True}
    got = await b.wait_for_message(text)
    assert got["room"] == "secret"
    reply = marker("after")
    await b.say(reply, room="secret")
    await a.wait_for_message(reply)
    for n in (a, b):
        assert [e for e in n.events if e.get("event") in ("error", "warning")] == []
        assert await n.quit() == 0, n.stderr_tail()
        assert not stderr_has_traceback(n)


async def test_wrong_passphrase_is_refused_with_a_clear_error(node: NodeFactory) -> None:
    a, b = await start_pair(node)
    await ask(a, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    err = await ask(b, {"cmd": "join", "room": "secret", "passphrase": "nope"}, "error")
    assert "passphrase not accepted" in err["message"], err
    assert "secret" in err["message"] and "1 peer" in err["message"], err
    rooms = await ask(b, {"cmd": "rooms"}, "rooms")
    assert not [r for r in rooms["rooms"] if r["name"] == "secret"], rooms
    # A was told once that a peer announcing its room did not accept its passphrase.
    warning = await a.wait_for("warning", timeout=PROMPT_S, from_start=True)
    assert b.peer_id[:8] in warning["message"], warning
    # The right one is accepted at once (no back-off for a new key).
    await ask(b, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    for n in (a, b):
        assert await n.quit() == 0, n.stderr_tail()
        assert not stderr_has_traceback(n)


async def test_a_stranger_announcing_the_room_cannot_block_a_joiner(node: NodeFactory) -> None:
    """J reaches A (a member) and mallory (announces the room, proves another passphrase):
    J joins, and gets A's history. Alone with mallory, J gets the clear error."""
    a, j = await start_pair(node)
    await ask(a, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    text = marker("history")
    await a.say(text, room="secret")
    await a.wait_for("message", timeout=PROMPT_S, from_start=True, text=text)
    wire = box.private_room_id("secret")
    mallory = HostilePeer(rooms=())
    await mallory.connect(j.port)
    guesser = Guesser(mallory, j.peer_id, wire, box.derive_room_key("secret", "guess"))
    await announce(mallory, wire)
    pump = asyncio.create_task(guesser.until_outcome(3 * PROMPT_S))
    joined = await ask(j, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    assert joined["private"] is True
    await j.wait_for_message(text)
    assert await pump == ad.Refused(j.peer_id, wire)
    await mallory.close()

    # A second joiner that reaches only mallory: told the passphrase was not accepted.
    k = node("kate", discovery=False)
    await k.start()
    lone = HostilePeer(rooms=())
    await lone.connect(k.port)
    guesser2 = Guesser(lone, k.peer_id, wire, box.derive_room_key("secret", "guess"))
    await announce(lone, wire)
    pump2 = asyncio.create_task(guesser2.until_outcome(3 * PROMPT_S))
    err = await ask(k, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "error")
    assert "passphrase not accepted" in err["message"], err
    await pump2
    await lone.close()
    for n in (a, j, k):
        assert await n.quit() == 0, n.stderr_tail()
        assert not stderr_has_traceback(n)


async def test_a_non_member_gets_no_history_and_no_kcv(node: NodeFactory) -> None:
    """mallory announces the room's wire name to A (a member with history), asks for its
    history as a member would and fails the proof: she gets no vector, no message, no
    key check value; A logs the refusal once."""
    a = node("alice", discovery=False)
    await a.start()
    await ask(a, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    text = marker("hush")
    await a.say(text, room="secret")
    own = await a.wait_for("message", timeout=PROMPT_S, from_start=True, text=text)
    wire = box.private_room_id("secret")
    key = box.derive_room_key("secret", "p1")
    mallory = HostilePeer(rooms=())
    await mallory.connect(a.port)
    guesser = Guesser(mallory, a.peer_id, wire, box.derive_room_key("secret", "guess"))
    await announce(mallory, wire)
    assert await guesser.until_outcome() == ad.Refused(a.peer_id, wire)
    asks = [m.Vector(room=wire, have={}), m.Want(room=wire, author=a.peer_id, lo=1, hi=1)]
    for round_ in range(3):
        probe = bytes([round_]) * 16
        mallory.send_frames([*asks, m.FileGet(fid=probe, idx=0)])
        await mallory.wait_frame(m.FileNak, lambda f, p=probe: f.fid == p)  # type: ignore[misc]
    about = [f for f in mallory.frames if room_of(f) == wire]
    assert all(isinstance(f, m.Admit) for f in about), about
    rooms = [f for f in mallory.frames if isinstance(f, m.Rooms)]
    assert rooms and all(r.kcv == b"" for f in rooms for r in f.joined), rooms
    assert not [f for f in mallory.frames if isinstance(f, m.Chat)]
    wire_bytes = b"".join(m.encode(f) for f in mallory.frames)
    assert box.key_check(key) not in wire_bytes
    assert own["id"].encode() not in wire_bytes
    await mallory.close()
    assert await a.quit() == 0, a.stderr_tail()
    log = a.stderr_path.read_text()
    assert log.count("not admitted") == 1, log
    assert not stderr_has_traceback(a)


async def test_guessing_beyond_the_rate_is_cut(node: NodeFactory) -> None:
    """mallory starts passphrase proofs with A again and again: past ADMIT_PER_PEER in the
    window A closes her connection with `admit_flood`."""
    a = node("alice", discovery=False)
    await a.start()
    await ask(a, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    wire = box.private_room_id("secret")
    mallory = HostilePeer(rooms=())
    await mallory.connect(a.port)
    await announce(mallory, wire)
    assert mallory.session is not None
    hh = mallory.session.handshake_hash
    guess = box.derive_room_key("secret", "guess")
    for i in range(limits.ADMIT_PER_PEER + 1):
        machine = ad.Admission(mallory.peer_id)
        [start] = machine.start(a.peer_id, wire, guess, hh, os.urandom(64), float(i))
        assert isinstance(start, ad.Send)
        mallory.send_frames([start.frame])
    closed = await mallory.wait_closed()
    assert closed.code == "admit_flood", closed
    await mallory.close()
    assert await a.quit() == 0, a.stderr_tail()
    log = a.stderr_path.read_text()
    assert log.count("too many passphrase proofs") == 1, log
    assert not stderr_has_traceback(a)


async def test_guesses_read_from_our_confirmation_are_counted_members_spared(
    node: NodeFactory,
) -> None:
    """Hostile review s5 #2: fresh identities that read their answer from A's confirmation
    and hang up without sending their own use up the room's guesses
    (ADMIT_FAILURES_PER_ROOM): the next one gets no confirmation; junk step-1 frames close
    the connection; B, admitted before, is still admitted when it joins again (it is
    spared by the room's bound)."""
    a, b = await start_pair(node)
    await ask(a, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    await ask(b, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    wire = box.private_room_id("secret")
    guess = box.derive_room_key("secret", "guess")

    async def guesser() -> tuple[HostilePeer, ad.Send]:
        peer = HostilePeer(rooms=())
        await peer.connect(a.port)
        await announce(peer, wire)
        assert peer.session is not None
        hh = peer.session.handshake_hash
        [start] = ad.Admission(peer.peer_id).start(a.peer_id, wire, guess, hh, os.urandom(64), 0)
        assert isinstance(start, ad.Send)
        return peer, start

    def confirmed(peer: HostilePeer) -> bool:
        return any(isinstance(f, m.Admit) and f.step == ad.STEP_CONFIRM for f in peer.frames)

    for _ in range(limits.ADMIT_FAILURES_PER_ROOM):
        peer, start = await guesser()
        peer.send_frames([start.frame])
        async with asyncio.timeout(PROMPT_S):
            while not confirmed(peer):
                await peer.changed()
        # It knows its answer; hanging up (or timing out) does not give the guess back.
        await peer.close()
    late, start = await guesser()
    # The junk frame after the step 1 is handled after it: once it closed the connection,
    # A has decided on the step 1.
    late.send_frames([start.frame, m.Admit(room=wire, step=ad.STEP_PAKE, data=b"junk!")])
    closed = await late.wait_closed()
    assert closed.code == "malformed_frame", closed
    assert not confirmed(late)
    # B leaves and joins again: a new run, answered although the room's guesses are used up.
    await ask(b, {"cmd": "leave", "room": "secret"}, "left")
    await ask(b, {"cmd": "join", "room": "secret", "passphrase": "p1"}, "joined")
    text = marker("still-member")
    await a.say(text, room="secret")
    await b.wait_for_message(text)
    await late.close()
    for n in (a, b):
        assert await n.quit() == 0, n.stderr_tail()
        assert not stderr_has_traceback(n)
    assert "from new peers" in a.stderr_path.read_text()
