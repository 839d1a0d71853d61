"""A scripted peer against a real node's Olm ratchets (issue 12, "Bad input"): a DM in a
plain chat frame, a replayed `pm`, a flood of one-time-key requests and garbage `pm` frames.
The node refuses each, moves no ratchet, and closes only the offender's connection."""

from __future__ import annotations

from hostile_peer import HostilePeer
from it_support import PROMPT_S, NodeFactory, count, until

from chinwag import limits
from chinwag.crypto import box, ratchet
from chinwag.crypto.identity import public_from_peer_id
from chinwag.private import CHAT, inner
from chinwag.protocol import messages as m


async def test_a_scripted_peer_gets_its_dms_through_only_inside_the_ratchet(
    node: NodeFactory,
) -> None:
    a = node("alice", discovery=False)
    await a.start()
    h = HostilePeer()
    await h.connect(a.port, timeout=PROMPT_S)
    await a.wait_for_peers([h.peer_id], timeout=PROMPT_S)
    first = await h.wait_frame(m.OlmKeys, timeout=PROMPT_S)
    assert not first.otk and not first.re
    assert ratchet.verify_keys(public_from_peer_id(a.peer_id), first.ident, first.fb, first.sig)
    wire = box.dm_room(h.peer_id, a.peer_id)

    # A DM in a plain chat frame is refused (never shown), the connection stays.
    h.send_chat(h.message(1, "in clear", room=wire))

    # One-time keys: a flood of requests gets answers, with keys only up to the bound.
    h.send_frames([m.OlmKeyRequest()] * (3 * limits.OLM_OTK_PER_PEER_PER_MIN))
    await until(
        lambda: (
            sum(1 for f in h.frames if isinstance(f, m.OlmKeys) and f.re)
            >= 3 * limits.OLM_OTK_PER_PEER_PER_MIN
        ),
        "every request answered",
    )
    answers = [f for f in h.frames if isinstance(f, m.OlmKeys) and f.re]
    otks = [f.otk for f in answers if f.otk]
    assert len(otks) == limits.OLM_OTK_PER_PEER_PER_MIN, len(otks)

    # A real session from one of those keys: the DM inside a pm is shown, once.
    mine = ratchet.OlmAccount.create()
    ident, fb = mine.identity_key, mine.fallback_key
    h.send_frames([m.OlmKeys(ident=ident, fb=fb, sig=ratchet.sign_keys(h.identity, ident, fb))])
    session = mine.outbound(first.ident, otks[0])
    msg = h.message(1, "inside the ratchet", room=wire)
    pm = m.PrivateMessage(
        d=ratchet.pad(
            session.encrypt(inner(CHAT, m.encode(m.Chat(body=msg.raw_body, sig=msg.sig))))
        )
    )
    h.send_frames([pm])
    await a.wait_for("dm", timeout=PROMPT_S, text="inside the ratchet", own=False)
    # Replayed: refused, nothing shown twice; the next message still decrypts.
    h.send_frames([pm])
    msg2 = h.message(2, "second, after a replay", room=wire)
    h.send_frames(
        [
            m.PrivateMessage(
                d=ratchet.pad(
                    session.encrypt(inner(CHAT, m.encode(m.Chat(body=msg2.raw_body, sig=msg2.sig))))
                )
            )
        ]
    )
    await a.wait_for("dm", timeout=PROMPT_S, text="second, after a replay", own=False)
    assert count(a, "dm", text="inside the ratchet") == 1
    assert count(a, "dm", text="in clear") == 0
    assert h.closed is None

    # Garbage pm frames: the connection closes with decrypt_failed after the bound.
    garbage = m.PrivateMessage(d=bytes([1, 0, 0, 0, 3]) + bytes(251))
    h.send_frames([garbage] * limits.PM_MAX_BAD)
    closed = await h.wait_closed(PROMPT_S)
    assert h.reset or closed.code == "decrypt_failed", closed
    await h.close()

    # The node runs on: another peer connects and is answered.
    h2 = HostilePeer(nick="trudy")
    await h2.connect(a.port, timeout=PROMPT_S)
    await h2.wait_frame(m.OlmKeys, timeout=PROMPT_S)
    await h2.close()
    log = a.stderr_path.read_text()
    assert "refusing a private message" in log and "refusing a pm" in log, log[-2000:]
    assert "Traceback" not in log
    assert await a.quit() == 0
