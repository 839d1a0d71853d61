"""Mailbox rules (protocol/mailbox.py), sans-IO: sealing, admission limits, the author's outbox."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chinwag import limits
from chinwag.crypto import box
from chinwag.crypto.identity import Identity
from chinwag.errors import RemoteProtocolError
from chinwag.mailbox import Mailbox
from chinwag.protocol import mailbox as mb
from chinwag.protocol import messages as m
from chinwag.protocol.chat import make_message
from chinwag.protocol.reasons import MailRefusal, Reason
from chinwag.store.db import Store

NOW = 1_800_000_000.0
EXP = int(NOW) + 3600

AUTHOR = Identity.generate()
READER = Identity.generate()
HOLDER = Identity.generate()


def chat(text: str = "hello", seq: int = 1, author: Identity = AUTHOR) -> m.Chat:
    msg = make_message(author, "general", "ann", int(NOW * 1000), seq, text)
    return m.Chat(body=msg.raw_body, sig=msg.sig)


def item(
    text: str = "hello", seq: int = 1, exp: int = EXP, author: Identity = AUTHOR
) -> m.MailItem:
    return mb.make_item(author, READER.public, chat(text, seq, author), exp)


def never(_ident: bytes) -> bool:
    return False


def sealed_inner(inner: m.MailInner, to: Identity = READER, exp: int = EXP) -> m.MailItem:
    """An item whose sealed inside is exactly inner (to forge what make_item would not)."""
    return m.MailItem(to=to.public, exp=exp, box=box.seal_to(to.public, m.encode(inner)))


def signed_inner(
    frame: m.Chat | m.Vector, author: Identity = AUTHOR, signed_for: Identity = READER
) -> m.MailInner:
    raw = m.encode(frame)
    sig = author.sign(mb.signed_part(signed_for.public, author.public, EXP, raw))
    return m.MailInner(frm=author.public, sig=sig, frame=raw)


def test_an_item_opens_for_its_reader_only_and_hides_the_size() -> None:
    short, long = item("hi"), item("x" * 3000, seq=2)
    opened = mb.open_item(READER, short)
    assert opened.frm == AUTHOR.peer_id and opened.frame == chat("hi")
    assert opened.id == mb.mail_id(short.box)
    # Padded to a bucket: the holder sees 512 (+ the seal's 48 bytes), not the text's length.
    assert len(short.box) == limits.MAILBOX_MIN_BUCKET + 48
    assert len(long.box) == 4096 + 48
    assert len(item("hello there").box) == len(short.box)
    with pytest.raises(RemoteProtocolError):
        mb.open_item(HOLDER, short)  # not ours to read: the holder knew
    # Sealed to another key under our `to`: dropped, not blamed on the holder.
    wrong = mb.make_item(AUTHOR, HOLDER.public, chat(), EXP)
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, m.MailItem(READER.public, EXP, wrong.box))
    # Signed for another reader (who re-seals it to us): not its words to us.
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, sealed_inner(signed_inner(chat(), signed_for=HOLDER)))
    # A text long enough not to occur in random ciphertext by chance (b"hi" did, 1.5%).
    assert b"a secret text" not in m.encode(item("a secret text"))


def test_a_holder_that_alters_an_item_is_caught() -> None:
    good = item()
    # The expiry is signed inside: a holder that extends it makes the item junk (dropped:
    # the reader cannot tell the holder's doing from the depositor's).
    forged = m.MailItem(good.to, good.exp + 1, good.box)
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, forged)
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, forged, sender=AUTHOR.public)  # its author unproven: kept open


def test_the_item_names_no_author_and_a_box_re_signed_by_another_is_not_its_words() -> None:
    good = item()
    encoded = m.encode(good)
    # What a holder sees: the reader's key, the expiry, the box; the author in no form.
    assert AUTHOR.public not in encoded and AUTHOR.peer_id.encode() not in encoded
    assert AUTHOR.public.hex().encode() not in encoded
    assert READER.public in encoded
    thief = Identity.generate()
    inner = signed_inner(chat(), author=AUTHOR)
    stolen = m.MailInner(frm=thief.public, sig=inner.sig, frame=inner.frame)
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, sealed_inner(stolen))
    # Its own signature on another's chat: dropped too (the chat's author differs).
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, sealed_inner(signed_inner(chat(), author=thief)))


def test_holder_keeps_good_items_and_refuses_the_rest_with_reasons() -> None:
    holder = mb.Holder(HOLDER.public)
    seen_before = item(seq=3)
    known = {mb.mail_id(seen_before.box)}
    frame = m.MailPut(
        items=[
            item(seq=1),
            item(seq=2, exp=int(NOW) - 1),
            item(seq=4, exp=int(NOW) + limits.MAILBOX_TTL_S + limits.MAILBOX_TTL_SKEW_S + 5),
            mb.make_item(AUTHOR, HOLDER.public, chat(seq=5), EXP),
        ]
    )
    verdict = holder.put(AUTHOR.peer_id, frame, NOW, known.__contains__)
    assert verdict.close is None
    assert [h.id for h in verdict.keep] == [mb.mail_id(frame.items[0].box)]
    assert verdict.keep[0].to == READER.peer_id and verdict.keep[0].by == AUTHOR.peer_id
    assert set(verdict.refused) == {MailRefusal.BAD_EXPIRY, MailRefusal.SELF}
    assert len(verdict.refused[MailRefusal.BAD_EXPIRY]) == 2
    # A replay (held, or delivered and tombstoned) and a repeat within a frame.
    again = item(seq=6)
    replay = holder.put(
        AUTHOR.peer_id, m.MailPut(items=[seen_before, again, again]), NOW, known.__contains__
    )
    assert replay.refused == {
        MailRefusal.REPLAYED: [mb.mail_id(seen_before.box), mb.mail_id(again.box)]
    }
    assert holder.items == 2


def test_any_peer_may_deposit_and_is_counted_under_its_tag_not_its_id() -> None:
    tags = {AUTHOR.peer_id: "t-author", HOLDER.peer_id: "t-other"}
    holder = mb.Holder(HOLDER.public, max_items_per_sender=1, tag=tags.__getitem__)
    good, other = item(), item(seq=2)
    verdict = holder.put(HOLDER.peer_id, m.MailPut(items=[good, other]), NOW, never)
    assert [h.item for h in verdict.keep] == [good] and verdict.keep[0].by == "t-other"
    assert verdict.refused == {MailRefusal.SENDER_FULL: [mb.mail_id(other.box)]}
    verdict = holder.put(AUTHOR.peer_id, m.MailPut(items=[other]), NOW, never)
    assert [h.by for h in verdict.keep] == ["t-author"]
    assert holder.per_sender == {"t-other": (1, len(good.box)), "t-author": (1, len(other.box))}


def test_per_sender_and_total_limits() -> None:
    other = Identity.generate()
    holder = mb.Holder(HOLDER.public, max_items=3, max_items_per_sender=2)
    verdict = holder.put(
        AUTHOR.peer_id, m.MailPut(items=[item(seq=i) for i in (1, 2, 3)]), NOW, never
    )
    assert len(verdict.keep) == 2 and len(verdict.refused[MailRefusal.SENDER_FULL]) == 1
    verdict = holder.put(
        other.peer_id,
        m.MailPut(items=[item(seq=i, author=other) for i in (1, 2)]),
        NOW,
        never,
    )
    assert len(verdict.keep) == 1 and len(verdict.refused[MailRefusal.FULL]) == 1
    # Delivered items free their sender's share and the total.
    holder.removed([(AUTHOR.peer_id, h.size) for h in []] + [(AUTHOR.peer_id, 560)])
    assert holder.items == 2 and holder.per_sender[AUTHOR.peer_id][0] == 1
    # Bytes count too.
    small = mb.Holder(HOLDER.public, max_bytes_per_sender=1000)
    verdict = small.put(AUTHOR.peer_id, m.MailPut(items=[item(seq=1), item(seq=2)]), NOW, never)
    assert len(verdict.keep) == 1 and MailRefusal.SENDER_FULL in verdict.refused
    total = mb.Holder(HOLDER.public, max_bytes=1000)
    verdict = total.put(AUTHOR.peer_id, m.MailPut(items=[item(seq=1), item(seq=2)]), NOW, never)
    assert len(verdict.keep) == 1 and MailRefusal.FULL in verdict.refused


def test_a_put_flood_closes_the_connection() -> None:
    holder = mb.Holder(HOLDER.public, max_items=10**9, max_items_per_sender=10**9)
    one = item()
    # Expired items cost no storage but still cost the flooder its put budget.
    stale = [item(seq=i, exp=int(NOW) - 1) for i in range(1, 9)]
    frames = int(limits.MAILBOX_PUT_BURST) // len(stale) + 1
    closes = [
        holder.put(AUTHOR.peer_id, m.MailPut(items=stale), NOW, never).close for _ in range(frames)
    ]
    assert closes[-1] == Reason.MAIL_FLOOD and closes[0] is None
    # Another peer is unaffected; the flooder's budget refills with time.
    assert holder.put(HOLDER.peer_id, m.MailPut(items=[]), NOW, never).close is None
    later = NOW + 10
    assert holder.put(AUTHOR.peer_id, m.MailPut(items=[one]), later, never).close is None


def test_oversized_mail_is_a_malformed_frame() -> None:
    good = item()
    big = m.MailItem(good.to, good.exp, bytes(limits.MAILBOX_MAX_BOX_BYTES + 1))
    with pytest.raises(RemoteProtocolError) as exc:
        m.decode_frame(m.encode(m.MailPut(items=[big])))
    assert exc.value.code == Reason.MALFORMED_FRAME
    assert m.decode_frame(m.encode(m.MailPut(items=[good]))) == m.MailPut(items=[good])


def test_pack_keeps_frames_within_bounds() -> None:
    items = [item(seq=i) for i in range(1, 301)]
    frames = mb.pack(items)
    assert [i for f in frames for i in f] == items
    for f in frames:
        assert len(f) <= limits.MAILBOX_ITEMS_PER_FRAME
        assert len(m.encode(m.MailDeliver(items=f))) <= limits.MAX_FRAME
    biggest = [item("x" * 4000, seq=i) for i in range(1, 30)]
    for f in mb.pack(biggest):
        assert len(m.encode(m.MailPut(items=f))) <= limits.MAX_FRAME


def test_outbox_asks_holders_and_moves_on_after_a_refusal() -> None:
    box = mb.Outbox()
    first = box.add(item(seq=1), "msg1")
    peers = ["p1", "p2", "p3"]
    plan = box.plan(lambda to: list(peers))
    assert sorted(plan) == ["p1", "p2"]  # MAILBOX_HOLDERS of them
    assert box.plan(lambda to: list(peers)) == {}  # asked, waiting for answers
    box.refused("p1", [first], MailRefusal.FULL)
    assert list(box.plan(lambda to: list(peers))) == ["p3"]
    assert box.kept("p2", [first]) == [mb.Mailed("msg1", 1)]
    assert box.kept("p9", [first]) == []  # never asked: ignored
    assert box.kept("p3", [first]) == [mb.Mailed("msg1", 2)]
    assert first not in box.pending


def test_outbox_forgets_mail_for_a_reader_met_and_re_asks_a_holder_that_left() -> None:
    box = mb.Outbox()
    ident = box.add(item(seq=1), "msg1")
    assert list(box.plan(lambda to: ["p1"])) == ["p1"]
    box.peer_closed("p1")
    assert list(box.plan(lambda to: ["p1"])) == ["p1"]
    box.reader_met(READER.peer_id)
    assert ident not in box.pending
    # The reader itself is never a holder of its own mail.
    box.add(item(seq=2), "msg2")
    assert box.plan(lambda to: [READER.peer_id]) == {}


def test_docs_list_exactly_the_mail_refusal_codes() -> None:
    """docs/protocol.md section 24.3 lists every MailRefusal code, and no other."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = doc[doc.index("### 24.3") : doc.index("### 24.4")]
    codes = {c for line in section.splitlines() for c in re.findall(r"^\| `([a-z_]+)` \|", line)}
    assert codes == {r.value for r in MailRefusal}


@settings(max_examples=60, deadline=None)
@given(inner=st.binary(max_size=600), sealed=st.booleans())
def test_any_signed_item_opens_or_is_dropped_never_another_error(
    inner: bytes, sealed: bool
) -> None:
    """An item with any content: opened or MailDropped, nothing else."""
    content = box.seal_to(READER.public, inner) if sealed else inner
    with contextlib.suppress(mb.MailDropped):
        mb.open_item(READER, m.MailItem(READER.public, EXP, content))


def test_outbox_drops_room_mail_once_a_member_is_met() -> None:
    box = mb.Outbox()
    room_item = box.add(item(seq=1), "msg1", room="club")
    dm_item = box.add(item(seq=2), "msg2")
    box.members_met(["general"])
    assert room_item in box.pending
    box.members_met(["club"])
    assert room_item not in box.pending and dm_item in box.pending


def test_outbox_settles_items_once_held_or_given_up() -> None:
    box = mb.Outbox()
    held = box.add(item(seq=1), "msg1")
    gone = box.add(item(seq=2), "msg2", room="club")
    box.plan(lambda to: ["p1"])
    assert box.take_settled() == []
    box.kept("p1", [held])
    assert box.take_settled() == [held]  # a first holder keeps it: no need to save it
    box.members_met(["club"])
    assert box.take_settled() == [gone]
    assert held in box.pending  # still looking for its second holder


def test_the_largest_valid_chat_fits_in_one_item() -> None:
    """MAX_TEXT_BYTES of text and MAX_ENC_BYTES of ciphertext, the longest names."""
    nick = "\U00010400" * limits.MAX_NICK_CHARS  # a letter of 4 UTF-8 bytes
    body = m.ChatBody(
        room="r" * limits.MAX_ROOM_CHARS,
        author=AUTHOR.public,
        nick=nick,
        ts=2**62,
        seq=2**62,
        text="x" * limits.MAX_TEXT_BYTES,
        enc=bytes(limits.MAX_ENC_BYTES),
    )
    raw = m.encode(body)
    big = m.Chat(body=raw, sig=AUTHOR.sign(m.CHAT_CONTEXT + raw))
    sealed = mb.make_item(AUTHOR, READER.public, big, EXP)
    assert len(sealed.box) <= limits.MAILBOX_MAX_BOX_BYTES
    assert m.decode_frame(m.encode(m.MailPut(items=[sealed]))) == m.MailPut(items=[sealed])
    assert mb.open_item(READER, sealed).frame == big
    assert len(mb.pack([sealed] * 5)) >= 2  # at most a few of them per frame


def test_a_forged_chat_inside_good_mail_is_dropped_not_blamed_on_the_holder() -> None:
    real = chat()
    forged = m.Chat(body=real.body, sig=bytes(64))
    sealed = mb.make_item(AUTHOR, READER.public, forged, EXP)
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, sealed)
    other = mb.make_item(AUTHOR, READER.public, chat(author=HOLDER), EXP)
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, other)  # a chat by someone else than the mail's author


# --- the review's findings (issue 15, mailfix) ---------------------------------------


def test_tombstones_are_bounded_oldest_expiry_dropped_first(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Throwaway X puts items for throwaway Y, Y acknowledges them (freeing X's quota), repeat:
    # every round left its tombstones behind, without bound.
    monkeypatch.setattr(limits, "MAILBOX_MAX_TOMBSTONES", 50)
    exp = int(NOW) + 3600
    for rnd in range(4):
        ids = [bytes([rnd, i]) * 8 for i in range(40)]
        store.hold_mail((i, "y", "x", exp + rnd, 10, b"item") for i in ids)
        assert len(store.mail_delivered("y", ids)) == 40
    gone = store.db.execute("SELECT COUNT(*) FROM mail_gone").fetchone()[0]
    assert gone == 50
    # The newest tombstones (the latest expiries) stay; the oldest went first.
    assert store.mail_known(bytes([3, 39]) * 8) and not store.mail_known(bytes([0, 0]) * 8)


def test_put_checks_cheap_things_first_and_no_signature_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    holder = mb.Holder(HOLDER.public, max_items=1)
    verified: list[bytes] = []
    monkeypatch.setattr(mb, "verify", lambda *a: verified.append(a[1]) or True)
    looked: list[bytes] = []

    def known(ident: bytes) -> bool:
        looked.append(ident)
        return False

    good = item(seq=1)
    stale = item(seq=2, exp=int(NOW) - 1)
    # Expired, or beyond the quota: refused without a replay lookup.
    over = [item(seq=i) for i in (3, 4, 5)]
    verdict = holder.put(AUTHOR.peer_id, m.MailPut(items=[good, stale, *over]), NOW, known)
    assert verdict.close is None and [h.item for h in verdict.keep] == [good]
    assert len(verdict.refused[MailRefusal.FULL]) == 3
    assert looked == [mb.mail_id(good.box)]
    # The author's signature is inside the seal: the holder verifies nothing.
    assert verified == []


def test_a_reconnect_does_not_refill_the_put_budget_and_all_peers_share_a_ceiling() -> None:
    holder = mb.Holder(HOLDER.public, max_items=10**9, max_items_per_sender=10**9)
    stale = [item(seq=i, exp=int(NOW) - 1) for i in range(1, 9)]
    frames = int(limits.MAILBOX_PUT_BURST) // len(stale)
    for _ in range(frames):
        assert holder.put(AUTHOR.peer_id, m.MailPut(items=stale), NOW, never).close is None
    holder.peer_closed(AUTHOR.peer_id)  # it disconnects and comes straight back
    assert holder.put(AUTHOR.peer_id, m.MailPut(items=stale), NOW, never).close == (
        Reason.MAIL_FLOOD
    )
    # Fresh identities each get a burst, but not beyond the ceiling of all peers: refused
    # (`full`, nothing checked), not closed (an honest peer may be the one who meets it).
    refused = 0
    for _ in range(int(limits.MAILBOX_PUT_ALL_BURST) // int(limits.MAILBOX_PUT_BURST) + 1):
        other = Identity.generate()
        theirs = [item(seq=i, exp=int(NOW) - 1, author=other) for i in range(1, 9)]
        for _ in range(frames):
            verdict = holder.put(other.peer_id, m.MailPut(items=theirs), NOW, never)
            assert verdict.close is None
            refused += len(verdict.refused.get(MailRefusal.FULL, []))
    assert refused > 0


def test_delivered_mail_is_budgeted_and_junk_a_holder_could_not_have_taken_closes() -> None:
    inbox = mb.Inbox(READER.public)
    good = item()
    # Mail for another reader: the holder knows `to`, so it sent junk.
    stray = mb.make_item(AUTHOR, HOLDER.public, chat(), EXP)
    assert inbox.check(HOLDER.peer_id, m.MailDeliver(items=[good]), NOW) is None
    assert inbox.check(HOLDER.peer_id, m.MailDeliver(items=[good, stray]), NOW) == (
        Reason.MALFORMED_FRAME
    )
    with pytest.raises(RemoteProtocolError) as exc:
        mb.open_item(READER, stray)
    assert exc.value.code == Reason.MALFORMED_FRAME
    # A bad inside is the author's fault: dropped if a holder passes it on, but the sender
    # closed if it signed it itself (no holder keeps mail it wrote).
    forged = mb.make_item(AUTHOR, READER.public, m.Chat(body=chat().body, sig=bytes(64)), EXP)
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, forged, sender=HOLDER.public)
    with pytest.raises(RemoteProtocolError) as exc:
        mb.open_item(READER, forged, sender=AUTHOR.public)
    assert exc.value.code == Reason.MALFORMED_FRAME
    # A flood of `mail` frames closes, and a reconnect refills nothing.
    junk = m.MailDeliver(items=[good] * limits.MAILBOX_ITEMS_PER_FRAME)
    frames = int(limits.MAILBOX_DELIVER_BURST) // limits.MAILBOX_ITEMS_PER_FRAME + 1
    closes = [inbox.check(AUTHOR.peer_id, junk, NOW) for _ in range(frames)]
    assert closes[0] is None and closes[-1] == Reason.MAIL_FLOOD
    assert inbox.check(AUTHOR.peer_id, junk, NOW) == Reason.MAIL_FLOOD
    assert inbox.check(AUTHOR.peer_id, junk, NOW + 60) is None


def test_a_refusal_that_changes_nothing_asks_for_no_new_plan() -> None:
    out = mb.Outbox()
    one = item()
    ident = out.add(one, "msg1")
    assert out.plan(lambda _to: ["h1"]) == {"h1": [one]}
    assert out.refused("h1", [], "full") is False  # an empty `mno`: a re-plan would be waste
    assert out.refused("h2", [ident], "full") is False  # never asked
    assert out.refused("h1", [bytes(16)], "full") is False  # unknown id
    assert out.refused("h1", [ident], "full") is True
    assert out.refused("h1", [ident], "full") is False  # a repeat


def _author_mailbox(store: Store, manager: object, book: object, members: list[str]) -> Mailbox:
    """AUTHOR's mailbox, loaded, over stand-in parts: room members as given, no receipts."""
    history = SimpleNamespace(replica=SimpleNamespace(room_receipts=lambda _w: {}))
    mailbox = Mailbox(
        store,
        AUTHOR,
        manager,  # type: ignore[arg-type]
        history,  # type: ignore[arg-type]
        book,  # type: ignore[arg-type]
        emit=lambda _e: None,
        room_members=lambda _w: members,
        clock=lambda: NOW,
    )
    mailbox.load()
    return mailbox


async def test_presence_changes_read_the_held_readers_from_memory_not_sqlite(
    store: Store,
) -> None:
    from types import SimpleNamespace
    from typing import Any

    from chinwag.mailbox import Mailbox

    y, z = Identity.generate().peer_id, Identity.generate().peer_id
    exp = int(NOW) + 3600
    store.hold_mail([(b"1" * 16, y, "x", exp, 10, b"a"), (b"2" * 16, y, "x", exp, 10, b"b")])
    reached: list[str] = []
    manager: Any = SimpleNamespace(peers={})
    mailbox = Mailbox(
        store,
        HOLDER,
        manager,
        history=None,
        book=None,  # type: ignore[arg-type]
        emit=lambda _e: None,
        reach=reached.append,
        clock=lambda: NOW,
    )
    mailbox.load()
    queries: list[str] = []
    store.db.set_trace_callback(queries.append)
    try:
        mailbox.members_changed(frozenset({y, z}))
        assert reached == [y] and queries == []  # at 50 records/s a peer: no SELECT each
        # Acknowledged: no longer held for y, and the set follows.
        conn: Any = SimpleNamespace(peer_id=y)
        mailbox.frame(conn, m.MailAck(ids=[b"1" * 16, b"2" * 16]))
        mailbox.members_changed(frozenset({y}))
        assert reached == [y]
    finally:
        store.db.set_trace_callback(None)
        mailbox.close()


class _Conn:
    """A connected peer that records the frames sent to it."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.sent: list[object] = []
        self.is_open = True

    def send_frame(self, frame: object) -> None:
        self.sent.append(frame)


async def test_a_post_while_no_holder_is_connected_seals_nothing_until_one_connects(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from chinwag.protocol.chat import make_message

    sealed: list[bytes] = []
    real_seal = mb.box.seal_to

    def counting_seal(public: bytes, data: bytes) -> bytes:
        sealed.append(public)
        return real_seal(public, data)

    monkeypatch.setattr(mb.box, "seal_to", counting_seal)
    members = [Identity.generate().peer_id for _ in range(20)]
    manager: Any = SimpleNamespace(peers={})
    book: Any = SimpleNamespace(
        announced={},
        joined={"club": None, "general": None},
        blocked=set(),
        peer_in=lambda _p, _w: False,
        wires=lambda: ["club", "general"],
    )
    book.presence_view = lambda p: book.announced.get(p, {})
    mailbox = _author_mailbox(store, manager, book, members)
    try:
        for seq in range(1, 4):  # alone in the room: three posts
            msg = make_message(AUTHOR, "club", "ann", int(NOW * 1000), seq, f"post {seq}")
            mailbox.own_room_committed("club", msg)
        await asyncio.sleep(0)
        assert sealed == [] and not mailbox.outbox.pending
        # A holder connects (it shares a room with us, not club): the posts are mailed now.
        holder = _Conn(HOLDER.peer_id)
        manager.peers[HOLDER.peer_id] = holder
        book.announced[HOLDER.peer_id] = {"general": None}
        mailbox.peer_rooms(HOLDER.peer_id)
        assert len(sealed) == 3 * limits.MAILBOX_ROOM_READERS
        puts = [f for f in holder.sent if isinstance(f, m.MailPut)]
        assert sum(len(p.items) for p in puts) == 3 * limits.MAILBOX_ROOM_READERS
        # The next post plans its own items only, not all that wait for holders.
        planned: list[object] = []
        real_plan = mailbox.outbox.plan

        def spy(candidates: Any, only: Any = None) -> Any:
            planned.append(only)
            return real_plan(candidates, only)

        monkeypatch.setattr(mailbox.outbox, "plan", spy)
        msg = make_message(AUTHOR, "club", "ann", int(NOW * 1000), 4, "post 4")
        mailbox.own_room_committed("club", msg)
        await asyncio.sleep(0)
        assert [len(p) for p in planned] == [limits.MAILBOX_ROOM_READERS]  # type: ignore[arg-type]
    finally:
        mailbox.close()


def test_planning_new_items_does_not_walk_all_that_wait() -> None:
    out = mb.Outbox()
    old = [out.add(item(seq=i), f"m{i}") for i in range(1, 4)]
    asked: list[str] = []

    def candidates(to: str) -> list[str]:
        asked.append(to)
        return []  # nobody: the old items stay plannable

    out.plan(candidates)
    new = item(seq=9)
    ident = out.add(new, "m9")
    assert out.plan(lambda _to: ["h1"], only=[ident]) == {"h1": [new]}
    assert all(o in out.pending and not out.pending[o].asked for o in old)


async def test_history_takes_a_stale_mailed_receipt_without_lowering_delivered(
    store: Store,
) -> None:
    from typing import Any

    from unit_support import BOB, ME, ROOM, FakeManager, new

    from chinwag.history import History
    from chinwag.rooms import RoomBook

    store.insert_messages([new(ME, s) for s in range(1, 8)])
    book = RoomBook(store, ME)
    book.load()
    manager: Any = FakeManager()
    history = History(store, ME, manager, lambda _e: None, book)
    history.load()
    try:
        # Bob's full vector came live; then his receipts by mail: the live one, the stale copy
        # from the second holder, each carrying only our entry.
        history.replica.vector_received(BOB.peer_id, m.Vector(ROOM, {ME.peer_id: 3, "x": 2}), 0)
        history.mail_vector(BOB.peer_id, m.Vector(room=ROOM, have={ME.peer_id: 7}))
        history.mail_vector(BOB.peer_id, m.Vector(room=ROOM, have={ME.peer_id: 5}))
        assert history.replica.room_receipts(ROOM)[BOB.peer_id] == {ME.peer_id: 7, "x": 2}
        assert history.replica.delivery(ROOM, 7) == (1, 1)
    finally:
        await history.close()


# --- inside the pair's Olm ratchet (issue 12 item 2) ---------------------------------


def test_an_olm_item_is_unwrapped_only_after_its_signature_verifies() -> None:
    wrapped: dict[bytes, bytes] = {}

    def wrap(data: bytes) -> bytes:
        body = bytes(256 * (1 + len(data) // 256))  # stands for a padded Olm body
        body = len(wrapped).to_bytes(4, "big") + body[4:]
        wrapped[body] = data
        return body

    asked: list[tuple[str, bytes]] = []

    def unwrap(author: str, body: bytes) -> bytes:
        asked.append((author, body))
        if body not in wrapped:
            raise box.BadCiphertext("replayed")
        return wrapped.pop(body)  # a message key opens once

    sealed = mb.make_item(AUTHOR, READER.public, chat("hi"), EXP, wrap=wrap)
    opened = mb.open_item(READER, sealed, unwrap=unwrap)
    assert opened.frm == AUTHOR.peer_id and opened.frame == chat("hi")
    assert [a for a, _b in asked] == [AUTHOR.peer_id]
    # A second holder's copy: its message key is used. Dropped, not blamed on the holder.
    with pytest.raises(mb.MailDropped) as exc:
        mb.open_item(READER, sealed, sender=AUTHOR.public, unwrap=unwrap)
    assert exc.value.frm is None
    # No ratchet here: dropped too.
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, mb.make_item(AUTHOR, READER.public, chat(), EXP, wrap=wrap))
    # A forged or altered item never reaches the ratchet.
    asked.clear()
    other = mb.make_item(AUTHOR, READER.public, chat("x"), EXP, wrap=wrap)
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, m.MailItem(other.to, other.exp + 1, other.box), unwrap=unwrap)
    assert asked == []
    # The box is the Olm bucket plus a constant: no second padding (one size per bucket).
    sizes = {len(mb.make_item(AUTHOR, READER.public, chat(t), EXP, wrap=wrap).box) for t in "ab"}
    assert sizes == {len(sealed.box)}
    big = mb.make_item(AUTHOR, READER.public, chat("x" * 600), EXP, wrap=wrap)
    olm_bytes = len(wrap(m.encode(chat("x" * 600))))
    assert len(big.box) - len(sealed.box) == olm_bytes - 256
    # The largest `pm` body fits in an item.
    largest = mb.make_item(
        AUTHOR, READER.public, chat(), EXP, wrap=lambda _d: bytes(limits.PM_MAX_BYTES)
    )
    assert len(largest.box) <= limits.MAILBOX_MAX_BOX_BYTES
    assert m.decode_frame(m.encode(m.MailPut(items=[largest]))) == m.MailPut(items=[largest])


async def test_a_stranger_announcing_a_private_room_does_not_stop_its_mail(
    store: Store,
) -> None:
    """Mail of a private room waits for a holder; a peer that announces the room's wire name
    but is not admitted to it (docs/protocol.md section 28) does not carry the room's
    messages, so the mail is not dropped as if a member had come: it goes out."""
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from chinwag.rooms import RoomBook

    book = RoomBook(store, AUTHOR)
    book.load()
    room = book.join_private("club", bytes(32))
    members = [READER.peer_id]
    manager: Any = SimpleNamespace(peers={})
    mailbox = _author_mailbox(store, manager, book, members)
    try:
        enc = bytes(64)  # stands for the room's ciphertext: the mailbox never opens it
        msg = make_message(AUTHOR, room.wire, "ann", int(NOW * 1000), 1, "", enc)
        mailbox.own_room_committed(room.wire, msg)
        await asyncio.sleep(0)
        stranger = _Conn(HOLDER.peer_id)
        manager.peers[HOLDER.peer_id] = stranger
        # It shares general with us (a holder candidate) and names the private room.
        joined = [m.RoomAnnounce("general"), m.RoomAnnounce(room.wire)]
        book.set_announced(HOLDER.peer_id, m.Rooms(joined=joined))
        mailbox.peer_rooms(HOLDER.peer_id)
        puts = [f for f in stranger.sent if isinstance(f, m.MailPut)]
        assert sum(len(p.items) for p in puts) == 1, stranger.sent
    finally:
        mailbox.close()


def test_an_olm_item_carries_its_author_s_keys_to_learn_before_unwrapping() -> None:
    """prekeys (docs/protocol.md 26.6): a reader that never met the author learns its keys
    from the item (after the item's signature verified, before the ratchet); the largest
    bucket has no room for them: every item of it goes without, within the box bound."""
    keys = m.PublishedKeys(ident=b"i" * 32, fb=b"f" * 32, sig=b"s" * 64)
    order: list[str] = []

    def learn(author: str, got: m.PublishedKeys, signed_at: float) -> None:
        assert (author, got, signed_at) == (AUTHOR.peer_id, keys, EXP - limits.MAILBOX_TTL_S)
        order.append("learn")

    def unwrap(_author: str, body: bytes) -> bytes:
        order.append("unwrap")
        return m.encode(chat("hi"))

    def wrap(_data: bytes) -> bytes:
        return bytes(256)

    sealed = mb.make_item(AUTHOR, READER.public, chat("hi"), EXP, wrap=wrap, okeys=keys)
    plain = mb.make_item(AUTHOR, READER.public, chat("hi"), EXP, wrap=wrap)
    other = mb.make_item(AUTHOR, READER.public, chat("a"), EXP, wrap=wrap, okeys=keys)
    assert len(sealed.box) == len(other.box) > len(plain.box)  # one size per bucket still
    assert mb.open_item(READER, sealed, unwrap=unwrap, learn=learn).frame == chat("hi")
    assert order == ["learn", "unwrap"]
    # A forged item teaches nothing.
    order.clear()
    with pytest.raises(mb.MailDropped):
        mb.open_item(READER, m.MailItem(sealed.to, sealed.exp + 1, sealed.box), unwrap, learn)
    assert order == []
    largest = mb.make_item(
        AUTHOR, READER.public, chat(), EXP, wrap=lambda _d: bytes(limits.PM_MAX_BYTES), okeys=keys
    )
    assert len(largest.box) <= limits.MAILBOX_MAX_BOX_BYTES
    inside = msgspec.msgpack.decode(box.open_sealed(READER, largest.box), type=m.MailInner)
    assert inside.okeys is None
