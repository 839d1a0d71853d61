"""The gossip mesh on 40 real hosts: bounded degree, every message exactly once, churn.

40 namespace hosts on one bridge, one chinwag each, all in "general", discovery on:
every node settles between D_lo and D_hi + a few connections (discovery feeds the mesh's
candidates; it no longer dials everyone it hears); 500 messages from random authors reach
all 40 exactly once; 10 hosts are killed mid-run and the other 30 still get everything;
restarted, the 10 catch up (history sync is the backstop).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mesh_lab import MeshLab, history_texts
from netlab import NetLab

from chinwag import limits

pytestmark = [pytest.mark.lan, pytest.mark.mesh40, pytest.mark.timeout(240)]

HOSTS = 40
MESSAGES = 500
KILLED = 10
#: Connections a node may hold beyond D_hi ("a few": inbound dials that cross before the
#: mesh refuses or closes the extra ones; direct connections, none here).
SLACK = 4
#: Messages per second sent into the room (each from a random author).
RATE = 60.0
#: Seconds for all 40 nodes to start, and for the mesh to settle.
START_S = 90.0
SETTLE_S = 45.0
#: Seconds after the last message until every running node holds every message.
DELIVER_S = 45.0


async def test_forty_hosts_mesh(lab: NetLab, tmp_path: Path) -> None:
    rng = random.Random(16)
    mesh = MeshLab(lab, tmp_path, HOSTS)
    mesh.build()
    try:
        await mesh.start(within=START_S)
        counts = await mesh.settle(limits.MESH_D_LO, limits.MESH_D_HI + SLACK, SETTLE_S)
        assert max(counts) < HOSTS - 1, f"everyone dialled everyone: {counts}"

        victims = rng.sample(range(HOSTS), KILLED)
        survivors = [i for i in range(HOSTS) if i not in victims]
        # The first half from anyone; the victims die once what they wrote reached a
        # survivor (on 2 busy cores a node may lag seconds behind its stdin), while the
        # survivors keep writing.
        first = await mesh.send(MESSAGES // 2, rng, RATE, label="a")
        await mesh.wait_left([t for t in first if mesh.sent_by[t] in victims], survivors, DELIVER_S)
        await mesh.kill(victims)
        second = await mesh.send(MESSAGES // 2, rng, RATE, authors=survivors, label="c")
        texts = first + second
        await mesh.wait_held(texts, DELIVER_S, indices=survivors)

        await mesh.start(victims, within=START_S)
        await mesh.wait_stored(texts, DELIVER_S, victims)
        await mesh.settle(1, limits.MESH_D_HI + SLACK, SETTLE_S)

        assert mesh.shown_more_than_once(texts) == {}
        for p in mesh.nodes:
            held = await history_texts(p)
            assert sorted(held) == sorted(texts), (p.nick, len(held), len(set(held)))
        most = mesh.max_peers()
        assert most <= limits.MESH_D_HI + SLACK, f"a node held {most} connections"
    finally:
        await mesh.stop_all()
