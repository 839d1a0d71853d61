"""History and delivery on a real LAN of network namespaces: one process per host.

A partition healed by anti-entropy (every host ends with every message exactly
once, in one order), history served by a third party to a host that never met
the author, and an outbox typed while alone that empties when the first peer
appears (with its delivery receipts).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter

import pytest
from lan_support import (
    LEFT_S,
    PROMPT_S,
    START_S,
    NodeFactory,
    delivered,
    gone,
    history,
    joins,
    mesh,
    message_events,
    start_all,
    wait_texts,
)
from netlab import NetLab

from driver import ChinwagProcess, Event

pytestmark = [pytest.mark.lan, pytest.mark.timeout(60)]

#: Seconds from restoring a cut link until every host holds every message.
HEAL_S = 30.0


def marker(label: str) -> str:
    """A message text that cannot occur by chance."""
    return f"{label}-{uuid.uuid4().hex[:12]}"


def display_key(ev: Event) -> tuple[int, str, int]:
    """The display order of a message: (author's ts in ms, author, seq)."""
    return (round(ev["ts"] * 1000), ev["peer_id"], ev["seq"])


async def say_all(sender: ChinwagProcess, texts: list[str]) -> None:
    """Send texts one by one, each once its predecessor is echoed (stored and sent)."""
    for text in texts:
        await sender.say(text)
        own = await sender.wait_for_message(text, PROMPT_S)
        assert own["own"] is True, own


def check_history(node: ChinwagProcess, hist: list[Event], texts: set[str]) -> None:
    """A node's history holds exactly `texts`, each once, in display order, seqs contiguous."""
    ids = [ev["id"] for ev in hist]
    dup_ids = [i for i, n in Counter(ids).items() if n > 1]
    assert not dup_ids, f"{node.nick}: duplicate ids in history: {dup_ids}"
    keys = [(ev["peer_id"], ev["seq"]) for ev in hist]
    dup_keys = [k for k, n in Counter(keys).items() if n > 1]
    assert not dup_keys, f"{node.nick}: duplicate (peer_id, seq) in history: {dup_keys}"
    got = [ev["text"] for ev in hist]
    lacks, extra = sorted(texts - set(got)), sorted(set(got) - texts)
    assert not lacks and not extra and len(got) == len(texts), (
        f"{node.nick}: history lacks {lacks}, has extra {extra} ({len(got)} messages)"
    )
    assert [display_key(ev) for ev in hist] == sorted(display_key(ev) for ev in hist), (
        f"{node.nick}: history not in (ts, author, seq) order"
    )
    for author, group in itertools.groupby(sorted(keys), key=lambda k: k[0]):
        seqs = [s for _, s in group]
        assert seqs == list(range(1, len(seqs) + 1)), f"{node.nick}: seqs of {author[:8]}: {seqs}"


def check_events(node: ChinwagProcess, hist: list[Event]) -> None:
    """Each message was shown once; `late` marks exactly the ones sorting before shown ones."""
    shown = node.messages()
    counts = Counter(ev["id"] for ev in shown)
    twice = {i: n for i, n in counts.items() if n > 1}
    assert not twice, f"{node.nick} showed messages more than once: {twice}"
    assert set(counts) == {ev["id"] for ev in hist}, f"{node.nick}: shown != history"
    stored_late = {ev["id"]: bool(ev.get("late")) for ev in hist}
    top: tuple[int, str, int] | None = None
    for ev in shown:
        key = display_key(ev)
        if not ev["own"]:
            expect = top is not None and key < top
            assert bool(ev.get("late")) == expect, (
                f"{node.nick}: late={ev.get('late')} but expected {expect} for {ev}"
            )
            assert stored_late[ev["id"]] == expect, (node.nick, ev, "history late flag")
        top = key if top is None or key > top else top


async def test_partition_and_heal(lab: NetLab, node: NodeFactory) -> None:
    """Cut C off, chat on both sides, restore: all hosts hold all messages once, in one order."""
    hosts = [lab.add_host(n) for n in ("a", "b", "c")]
    a, b, c = nodes = [
        node(h, nick) for h, nick in zip(hosts, ("alice", "bob", "carol"), strict=True)
    ]
    await start_all(*nodes)
    await mesh(nodes)
    first = marker("before-cut")
    await delivered(a, first, b, c)

    lab.cut("c")
    # Sent before the cut is noticed: these go into connections that are about to die.
    early = {n.nick: [marker(f"{n.nick}-early{i}") for i in range(2)] for n in nodes}
    await asyncio.gather(*(say_all(n, early[n.nick]) for n in nodes))
    await asyncio.gather(
        gone(a, c, LEFT_S), gone(b, c, LEFT_S), gone(c, a, LEFT_S), gone(c, b, LEFT_S)
    )
    # Sent while the partition is known: A and B still chat, C talks to itself.
    late = {n.nick: [marker(f"{n.nick}-cut{i}") for i in range(3)] for n in nodes}
    for i in range(3):
        for n in nodes:
            await say_all(n, [late[n.nick][i]])
    majority = [*early["alice"], *late["alice"], *early["bob"], *late["bob"]]
    minority = [*early["carol"], *late["carol"]]
    await asyncio.gather(wait_texts(a, majority, PROMPT_S), wait_texts(b, majority, PROMPT_S))
    shown_c = {ev["text"] for ev in c.messages()}
    assert not shown_c & set(majority), f"C got messages across the cut: {shown_c & set(majority)}"
    for n in (a, b):
        shown = {ev["text"] for ev in n.messages()}
        assert not shown & set(minority), f"{n.nick} got C's messages across the cut"

    loop = asyncio.get_running_loop()
    healed_at = loop.time()
    lab.restore("c")
    everything = [first, *majority, *minority]
    await asyncio.gather(*(wait_texts(n, everything, HEAL_S) for n in nodes))
    heal_s = loop.time() - healed_at
    print(f"partition healed in {heal_s:.2f}s")

    hists = await asyncio.gather(*(history(n) for n in nodes))
    for n, hist in zip(nodes, hists, strict=True):
        check_history(n, hist, set(everything))
        check_events(n, hist)
    ids = [[ev["id"] for ev in hist] for hist in hists]
    assert ids[0] == ids[1] == ids[2], "hosts hold the messages in different orders"
    # Every message kept the id its author gave it.
    for n in nodes:
        for ev in message_events(n, n):
            assert ev["id"] in ids[0], (n.nick, ev)


async def test_third_party_catch_up_on_a_line(lab: NetLab, node: NodeFactory) -> None:
    """A-B-C line: C starts after A left and gets A's messages from B, never meeting A."""
    lab.add_segment("left")
    lab.add_segment("right")
    ha = lab.add_host("a", ["left"])
    hb = lab.add_host("b", ["left", "right"])
    hc = lab.add_host("c", ["right"])
    a, b = node(ha, "alice"), node(hb, "bob")
    await start_all(a, b)
    await mesh([a, b])
    texts = [marker(f"from-a-{i}") for i in range(20)]
    for text in texts:
        await a.say(text)
    await asyncio.gather(wait_texts(a, texts, PROMPT_S), wait_texts(b, texts, PROMPT_S))
    sent = {ev["text"]: ev for ev in message_events(a, a)}
    assert await a.quit(10) == 0
    await gone(b, a, LEFT_S)

    c = node(hc, "carol")
    await c.start(START_S)
    await mesh([b, c])
    await wait_texts(c, texts, PROMPT_S)

    got = message_events(c, a)
    assert [ev["text"] for ev in got] == texts, [ev["text"] for ev in got]
    for ev in got:
        orig = sent[ev["text"]]
        assert ev["own"] is False and ev["nick"] == "alice", ev
        assert (ev["id"], ev["seq"], ev["ts"]) == (orig["id"], orig["seq"], orig["ts"]), (ev, orig)
    assert [ev["seq"] for ev in got] == list(range(1, len(texts) + 1))
    assert not joins(c, a), f"C met A: {joins(c, a)}"
    hist_b, hist_c = await asyncio.gather(history(b), history(c))
    assert [ev["id"] for ev in hist_c] == [ev["id"] for ev in hist_b]
    check_history(c, hist_c, set(texts))
    check_events(c, hist_c)


async def test_outbox_empties_when_first_peer_appears(lab: NetLab, node: NodeFactory) -> None:
    """A alone sends 5; B appears: B gets them with their seq and ts, A gets a receipt for each."""
    ha, hb = lab.add_host("a"), lab.add_host("b")
    a = node(ha, "alice")
    await a.start(START_S)
    texts = [marker(f"outbox-{i}") for i in range(5)]
    await say_all(a, texts)
    sent = message_events(a, a)
    assert [ev["text"] for ev in sent] == texts
    assert [ev["seq"] for ev in sent] == [1, 2, 3, 4, 5], sent
    assert not a.connected_peers()
    assert not [ev for ev in a.events if ev.get("event") == "delivered"]

    b = node(hb, "bob")
    await b.start(START_S)
    await mesh([a, b])
    await wait_texts(b, texts, PROMPT_S)
    got = message_events(b, a)
    assert [(ev["id"], ev["seq"], ev["ts"], ev["text"]) for ev in got] == [
        (ev["id"], ev["seq"], ev["ts"], ev["text"]) for ev in sent
    ]
    assert all(ev["own"] is False and not ev.get("late") for ev in got), got

    for ev in sent:
        receipt = await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=ev["id"])
        assert (receipt["count"], receipt["of"]) == (1, 1), receipt
    receipts = [ev for ev in a.events if ev.get("event") == "delivered"]
    assert len(receipts) == len(sent), receipts
