"""A first DM mailed to a reader never met is forward-secret too (issue 12 item 1;
docs/protocol.md 23.1, 26.6): its presence record carries its signed Olm keys, so the
author starts a session from its fallback key instead of sealing the DM to its long-term
key alone."""

from __future__ import annotations

import asyncio

from it_support import (
    PROMPT_S,
    ChinwagProcess,
    Event,
    NodeFactory,
    ask_until,
    connected,
    stderr_has_traceback,
)
from test_e2e_mail_olm import _mailed_once
from test_e2e_members import MEMBERS, shows
from test_e2e_rooms import dm, got_dm, marker

from chinwag.crypto import ratchet


async def test_a_first_dm_to_a_far_offline_reader_goes_inside_olm(node: NodeFactory) -> None:
    """Line a - c - b: a and b never connect; b goes offline; a's DM waits at c inside an
    Olm pre-key message (not the plain frame), and b reads it once back."""
    c = node("carol", discovery=False)
    await c.start()
    hub = ("--peer", f"127.0.0.1:{c.port}")
    a = node("ann", *hub, discovery=False)
    b = node("bob", *hub, discovery=False)
    await asyncio.gather(a.start(), b.start())
    await asyncio.gather(connected(a, c), connected(b, c))
    # a knows b by its presence record alone (and b knows a the same way).
    await ask_until(a, MEMBERS, "members", shows(b.peer_id, online=True))
    await ask_until(b, MEMBERS, "members", shows(a.peer_id, online=True))
    assert b.peer_id not in a.connected_peers()
    assert await b.quit() == 0
    await c.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=b.peer_id)

    secret = marker("first")
    own = await dm(a, b.peer_id, secret)
    inside = await _mailed_once(a, own, c, b)
    # Inside b's Olm ratchet, started from its fallback key: b's long-term key alone
    # yields a pre-key message, not the frame.
    assert inside.olm and secret.encode() not in inside.frame, inside
    assert ratchet.unpad(inside.frame).kind == ratchet.PRE_KEY
    assert inside.okeys is not None  # a's keys: b can open it without a's record
    assert await a.quit() == 0
    await _back_and_read(node, hub, own, a, b, c)


async def test_keys_from_a_leave_and_from_the_mail_itself_suffice(node: NodeFactory) -> None:
    """b leaves before a ever starts: a knows b only by b's signed leave (it carries b's
    keys), and b, back, opens a's pre-key message with the keys sealed in the mail (it
    never held a record of a's when the mail arrives)."""
    c = node("carol", discovery=False)
    await c.start()
    hub = ("--peer", f"127.0.0.1:{c.port}")
    b = node("bob", *hub, discovery=False)
    await b.start()
    await connected(b, c)
    await ask_until(c, MEMBERS, "members", shows(b.peer_id, online=True, direct=True))
    assert await b.quit() == 0
    await ask_until(c, MEMBERS, "members", shows(b.peer_id, online=False))

    a = node("ann", *hub, discovery=False)
    await a.start()
    await connected(a, c)
    await ask_until(a, MEMBERS, "members", shows(b.peer_id, online=False))
    secret = marker("after-leave")
    own = await dm(a, b.peer_id, secret)
    inside = await _mailed_once(a, own, c, b)
    assert inside.olm and ratchet.unpad(inside.frame).kind == ratchet.PRE_KEY
    assert await a.quit() == 0  # its leave (and keys) reach c: b must not need them
    await _back_and_read(node, hub, own, a, b, c)


async def _back_and_read(
    node: NodeFactory,
    hub: tuple[str, str],
    own: Event,
    a: ChinwagProcess,
    b: ChinwagProcess,
    c: ChinwagProcess,
) -> None:
    """b restarts with its store (a already quit) and reads own; then all stop cleanly."""
    b2 = node("bob", *hub, discovery=False, data_dir=b.data_dir)
    await b2.start()
    await got_dm(b2, own, to=b2)
    for n in (b2, c):
        assert await n.quit() == 0
    for n in (a, b, b2, c):
        assert not stderr_has_traceback(n), n.stderr_tail()
