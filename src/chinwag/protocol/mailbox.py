"""Mail that waits for its reader: the sans-IO rules of mailboxes (docs/dht.md "Mailboxes").

Theory of operation
-------------------
A private message (or a receipt) for a peer that is offline is signed by its
author, sealed to that peer (crypto_box_seal) with the author's key and signature
inside, and handed in an `mput` to online peers that will likely meet the reader
(holders). A holder cannot look inside: it checks what it can, cheapest first
(`Holder.put`: the depositor's put budget, the expiry is within MAILBOX_TTL_S,
the per-depositor and total quotas have room, it is no replay), keeps it, and
delivers it in a `mail` frame when the reader connects (the reader budgets
those: `Inbox`); the reader opens it and checks the author's signature
(`open_item`), stores what it carries (the history store dedups by message id,
so a copy from a second holder or from sync is dropped), then answers `mack`
and the holder deletes the item (keeping its id as a tombstone until the expiry,
at most MAILBOX_MAX_TOMBSTONES, so the item cannot be replayed).

The author keeps what it handed out in an `Outbox` until MAILBOX_HOLDERS
holders took it; a holder that refuses (`mno`, e.g. `full`) is not asked
again and the next candidate is.

What a holder learns: the reader's id, the depositor's id (the Noise-authenticated
peer that handed the item over: the author itself today, but nothing says so),
the expiry, the time it arrived and a size bucket (plaintexts are padded to a
power of two, at least MAILBOX_MIN_BUCKET bytes). Not the author, the room, the
nick, the text, the author's timestamp or seq: those are inside the seal.

No asyncio, sockets, SQLite, clocks or randomness of its own: `now` comes in;
sealing draws its ephemeral key inside libsodium (crypto/box.py), as seal_dm does.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from chinwag import limits
from chinwag.crypto import box
from chinwag.crypto.identity import Identity, peer_id_from_public, verify
from chinwag.errors import ChinwagError, RemoteProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol.chat import open_message
from chinwag.protocol.reasons import MailRefusal, Reason
from chinwag.protocol.replica import Bucket

log = logging.getLogger(__name__)

_inner_decoder = msgspec.msgpack.Decoder(m.MailInner)
_payload_decoder = msgspec.msgpack.Decoder(m.Chat | m.Vector)


class MailDropped(ChinwagError):
    """A delivered item that is not for us to read (sealed to another key, or malformed inside).

    The holder is not to blame (it cannot look inside): the item is acknowledged and dropped.
    `frm` is the author's key when its signature verified (the author wrote the bad inside).
    """

    def __init__(self, message: str, frm: bytes | None = None) -> None:
        super().__init__(message)
        self.frm = frm


# --- items ------------------------------------------------------------------------


def mail_id(sealed: bytes) -> bytes:
    """Return the 16-byte id of an item with this sealed box."""
    return hashlib.sha256(m.MAIL_CONTEXT + sealed).digest()[:16]


def signed_part(to: bytes, frm: bytes, exp: int, frame: bytes) -> bytes:
    """Return what the author of an item signs (the reader, the expiry and the frame)."""
    return m.MAIL_CONTEXT + to + frm + exp.to_bytes(8, "big") + frame


def bucket(size: int) -> int:
    """Return the padded size of a plaintext of size bytes (a power of two, at least the min)."""
    padded = limits.MAILBOX_MIN_BUCKET
    while padded < size:
        padded *= 2
    return padded


def make_item(
    identity: Identity,
    recipient_public: bytes,
    frame: m.Chat | m.Vector,
    exp: int,
    wrap: Callable[[bytes], bytes] | None = None,
    okeys: m.PublishedKeys | None = None,
) -> m.MailItem:
    """Sign frame for the recipient and seal it with its author and signature, padded to
    its size bucket: the item shows the reader and the expiry, not the author.

    wrap: puts the encoded frame inside the pair's Olm ratchet (forward secrecy); its
    output comes padded to a bucket, so it is sealed as it is (the box's size is then that
    bucket plus a constant). okeys: our signed Olm keys, sealed with a wrapped frame (in
    every one: the same size each time), so a reader that never met us can open a pre-key
    message. Raises what wrap raises.
    """
    if wrap is not None:
        body = wrap(m.encode(frame))
        sig = identity.sign(signed_part(recipient_public, identity.public, exp, body))
        inner = m.encode(
            m.MailInner(frm=identity.public, sig=sig, frame=body, olm=True, okeys=okeys)
        )
        sealed = box.seal_to(recipient_public, inner)
        if okeys is not None and len(sealed) > limits.MAILBOX_MAX_BOX_BYTES:
            # The largest bucket has no room for them (holders refuse bigger boxes): every
            # item of that bucket goes without (the same size each time), as before them.
            inner = m.encode(m.MailInner(frm=identity.public, sig=sig, frame=body, olm=True))
            sealed = box.seal_to(recipient_public, inner)
        return m.MailItem(to=recipient_public, exp=exp, box=sealed)
    frame_bytes = m.encode(frame)
    sig = identity.sign(signed_part(recipient_public, identity.public, exp, frame_bytes))
    # Without the (empty) pad's 2 bytes; the pad's own length prefix is 2, 3 or 5 bytes.
    base = len(m.encode(m.MailInner(frm=identity.public, sig=sig, frame=frame_bytes))) - 2
    target = bucket(base + 2)
    pad = b""
    for head, most in ((2, 0xFF), (3, 0xFFFF), (5, 0xFFFFFFFF)):
        if 0 <= target - base - head <= most:
            pad = bytes(target - base - head)
            break
    inner = m.encode(m.MailInner(frm=identity.public, sig=sig, frame=frame_bytes, pad=pad))
    return m.MailItem(to=recipient_public, exp=exp, box=box.seal_to(recipient_public, inner))


@dataclass(frozen=True, slots=True)
class Opened:
    """A delivered item, opened: who wrote it and the frame it carries."""

    id: bytes
    frm: str
    frame: m.Chat | m.Vector


def open_item(
    identity: Identity,
    item: m.MailItem,
    sender: bytes | None = None,
    unwrap: Callable[[str, bytes], bytes] | None = None,
    learn: Callable[[str, m.PublishedKeys, float], object] | None = None,
) -> Opened:
    """Open an item delivered to us by sender (its public key); unwrap(author, body) takes
    the frame of an Olm item out of the pair's ratchet (raising BadCiphertext if it cannot:
    replayed, forged or stale), after the author's signature verified; before it,
    learn(author, keys, signed_at) is given the Olm keys the item carries (its author's
    signature of them is learn's to check; signed_at: the item's expiry less its TTL).

    Raises RemoteProtocolError: malformed_frame if it is for another reader (the holder
    knows `to`) or if the sender signed it itself and its inside is bad (no holder keeps
    mail it wrote: it is junk of its own).
    Raises MailDropped if it does not open, its author's signature does not verify (the
    holder cannot check it: the depositor's fault, or the holder's, we cannot tell), or its
    inside is not a valid chat (signature checked) or vector by its author: dropped,
    acknowledged.
    """
    if item.to != identity.public:
        raise RemoteProtocolError("delivered mail for another peer", Reason.MALFORMED_FRAME)
    try:
        return _open_inside(identity, item, unwrap, learn)
    except MailDropped as exc:
        if sender is not None and exc.frm == sender:
            raise RemoteProtocolError(
                f"delivered mail of the sender's own is bad: {exc}", Reason.MALFORMED_FRAME
            ) from None
        raise


def _open_inside(
    identity: Identity,
    item: m.MailItem,
    unwrap: Callable[[str, bytes], bytes] | None,
    learn: Callable[[str, m.PublishedKeys, float], object] | None = None,
) -> Opened:
    ident = mail_id(item.box)
    try:
        inner = _inner_decoder.decode(box.open_sealed(identity, item.box))
    except (box.BadCiphertext, msgspec.DecodeError) as exc:
        raise MailDropped(f"mail does not open: {exc}") from None
    if not verify(inner.frm, signed_part(item.to, inner.frm, item.exp, inner.frame), inner.sig):
        # A forgery, another reader's mail re-sealed to us, or an altered expiry.
        raise MailDropped("mail's signature does not verify")
    frm = peer_id_from_public(inner.frm)
    encoded = inner.frame
    if inner.olm:
        if unwrap is None:
            raise MailDropped("mail inside a ratchet we do not keep")
        if learn is not None and inner.okeys is not None:
            # A reader that never met its author needs its keys for a pre-key message.
            learn(frm, inner.okeys, float(item.exp - limits.MAILBOX_TTL_S))
        try:
            # Only now, signature checked: junk never reaches the ratchet.
            encoded = unwrap(frm, inner.frame)
        except (box.BadCiphertext, msgspec.DecodeError) as exc:
            # A second holder's copy (its message key is used), or a stale session.
            raise MailDropped(f"mail does not decrypt in its ratchet: {exc}") from None
    try:
        frame = _payload_decoder.decode(encoded)
    except msgspec.DecodeError as exc:
        raise MailDropped(f"mailed frame does not decode: {exc}", inner.frm) from None
    if isinstance(frame, m.Chat):
        try:
            # Checked here, not left to history: a bad chat inside good mail is its
            # author's doing, and must not get the (innocent) holder disconnected.
            author = open_message(frame.body, frame.sig, check_signature=True).body.author
        except RemoteProtocolError as exc:
            raise MailDropped(f"mailed chat is malformed or forged: {exc}", inner.frm) from None
        if author != inner.frm:
            raise MailDropped("mailed chat by another author than the mail's", inner.frm)
    return Opened(ident, frm, frame)


def pack(items: Iterable[m.MailItem]) -> list[list[m.MailItem]]:
    """Split items into frames within MAILBOX_DELIVER_FRAME_BYTES and MAILBOX_ITEMS_PER_FRAME."""
    frames: list[list[m.MailItem]] = []
    current: list[m.MailItem] = []
    size = 0
    for item in items:
        cost = len(item.box) + 64  # key, expiry and msgpack framing
        if current and (
            size + cost > limits.MAILBOX_DELIVER_FRAME_BYTES
            or len(current) >= limits.MAILBOX_ITEMS_PER_FRAME
        ):
            frames.append(current)
            current, size = [], 0
        current.append(item)
        size += cost
    if current:
        frames.append(current)
    return frames


def chunks(ids: list[bytes]) -> list[list[bytes]]:
    """Split ids into lists of at most MAILBOX_IDS_PER_FRAME."""
    n = limits.MAILBOX_IDS_PER_FRAME
    return [ids[i : i + n] for i in range(0, len(ids), n)]


# --- the holder ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Held:
    """An item a holder takes: to store (then answer `mok`); `by`: its depositor's tag."""

    id: bytes
    to: str
    by: str
    exp: int
    size: int
    item: m.MailItem


@dataclass(slots=True)
class PutVerdict:
    """What to do with an `mput`: store `keep`, refuse `refused` (reason -> ids), or close."""

    keep: list[Held] = field(default_factory=list)
    refused: dict[str, list[bytes]] = field(default_factory=dict)
    #: A reason code: close the connection, take nothing of the frame.
    close: str | None = None


class Budgets:
    """Token buckets by peer id, kept across reconnects (a reconnect refills nothing),
    the least recently used dropped beyond `most` peers."""

    def __init__(self, burst: float, rate: float, most: int = limits.MAILBOX_BUDGET_PEERS) -> None:
        """burst: tokens a peer starts with; rate: tokens per second it regains."""
        self.burst = burst
        self.rate = rate
        self.most = most
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, peer: str, now: float, cost: float) -> bool:
        """Take cost tokens from peer's bucket; return whether there were enough."""
        bucket = self._buckets.pop(peer, None)
        if bucket is None:
            bucket = Bucket(now, self.burst, self.rate)
        self._buckets[peer] = bucket
        while len(self._buckets) > self.most:
            self._buckets.popitem(last=False)
        return bucket.take(now, cost)


class Holder:
    """The admission rules of one mailbox: budgets per depositor and in all, floods, replays.

    A depositor is the peer that puts an item (authenticated by its connection); it is
    counted under tag(peer id), which is what the store keeps, so that the database does
    not name who deposited what (the adapter's tag is keyed by a secret of the process).
    """

    def __init__(
        self,
        me: bytes,
        max_items: int = limits.MAILBOX_MAX_ITEMS,
        max_bytes: int = limits.MAILBOX_MAX_BYTES,
        max_items_per_sender: int = limits.MAILBOX_MAX_ITEMS_PER_SENDER,
        max_bytes_per_sender: int = limits.MAILBOX_MAX_BYTES_PER_SENDER,
        tag: Callable[[str], str] = lambda peer: peer,
    ) -> None:
        """me: our public key (mail to us is not held but read); tag: depositor -> its key."""
        self.me = me
        self.tag = tag
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_items_per_sender = max_items_per_sender
        self.max_bytes_per_sender = max_bytes_per_sender
        self.items = 0
        self.bytes = 0
        #: Depositor's tag -> (items, bytes) held for it.
        self.per_sender: dict[str, tuple[int, int]] = {}
        self._budget = Budgets(limits.MAILBOX_PUT_BURST, limits.MAILBOX_PUT_PER_S)
        #: All peers' puts together (fresh identities each bring a fresh bucket); starts full.
        self._all = Bucket(0.0, limits.MAILBOX_PUT_ALL_BURST, limits.MAILBOX_PUT_ALL_PER_S)

    def load(self, held: Iterable[tuple[str, int]]) -> None:
        """Count what the store holds: (depositor's tag, size) of each item."""
        self.items = self.bytes = 0
        self.per_sender = {}
        for sender, size in held:
            self._count(sender, size, 1)

    def _count(self, sender: str, size: int, sign: int) -> None:
        items, nbytes = self.per_sender.get(sender, (0, 0))
        items, nbytes = items + sign, nbytes + sign * size
        self.items += sign
        self.bytes += sign * size
        if items <= 0:
            self.per_sender.pop(sender, None)
        else:
            self.per_sender[sender] = (items, nbytes)

    def put(
        self, peer: str, frame: m.MailPut, now: float, known: Callable[[bytes], bool]
    ) -> PutVerdict:
        """Judge the items peer deposits at Unix time now; known(id): held or tombstoned here.

        Cheap checks first (budgets, expiry, quotas), then the replay lookup. There is no
        signature to check: the author's is inside the seal, for the reader alone.
        """
        verdict = PutVerdict()
        cost = max(len(frame.items), 1)
        if not self._budget.take(peer, now, cost):
            verdict.close = Reason.MAIL_FLOOD
            return verdict
        if not self._all.take(now, cost):
            # Busy: refused unchecked, not closed (the peer may be an honest one).
            if frame.items:
                verdict.refused[MailRefusal.FULL] = [mail_id(i.box) for i in frame.items]
            return verdict
        seen: set[bytes] = set()
        by = self.tag(peer)
        for item in frame.items:
            ident = mail_id(item.box)
            reason = self._refusal(by, item, ident, now, known, seen)
            if reason is not None:
                verdict.refused.setdefault(reason, []).append(ident)
                continue
            seen.add(ident)
            size = len(item.box)
            self._count(by, size, 1)
            to = peer_id_from_public(item.to)
            verdict.keep.append(Held(ident, to, by, item.exp, size, item))
        return verdict

    def _refusal(
        self,
        by: str,
        item: m.MailItem,
        ident: bytes,
        now: float,
        known: Callable[[bytes], bool],
        seen: set[bytes],
    ) -> str | None:
        if item.to == self.me:
            return MailRefusal.SELF
        if not now < item.exp <= now + limits.MAILBOX_TTL_S + limits.MAILBOX_TTL_SKEW_S:
            return MailRefusal.BAD_EXPIRY
        size = len(item.box)
        if self.items + 1 > self.max_items or self.bytes + size > self.max_bytes:
            return MailRefusal.FULL
        items, nbytes = self.per_sender.get(by, (0, 0))
        if items + 1 > self.max_items_per_sender or nbytes + size > self.max_bytes_per_sender:
            return MailRefusal.SENDER_FULL
        # Last of the refusals: the only one that costs SQLite lookups.
        if ident in seen or known(ident):
            return MailRefusal.REPLAYED
        return None

    def not_stored(self, held: Iterable[Held]) -> None:
        """These items were taken but could not be stored: give their budget back."""
        for h in held:
            self._count(h.by, h.size, -1)

    def removed(self, gone: Iterable[tuple[str, int]]) -> None:
        """Items left the mailbox (acknowledged or expired): (depositor's tag, size) of each."""
        for sender, size in gone:
            self._count(sender, size, -1)

    def peer_closed(self, peer: str) -> None:
        """The peer left. Its put budget is kept (by peer id, LRU-bounded): a reconnect
        costs it a handshake and refills nothing."""


class Inbox:
    """The reader's rules for `mail` frames: a delivery budget per holder, kept across
    reconnects, and mail no holder could have taken closes the connection."""

    def __init__(self, me: bytes) -> None:
        """me: our public key."""
        self.me = me
        self._budget = Budgets(limits.MAILBOX_DELIVER_BURST, limits.MAILBOX_DELIVER_PER_S)

    def check(self, holder: str, frame: m.MailDeliver, now: float) -> str | None:
        """Return a reason code to close holder's connection with, or None to open the items."""
        if not self._budget.take(holder, now, max(len(frame.items), 1)):
            return Reason.MAIL_FLOOD
        if any(item.to != self.me for item in frame.items):
            return Reason.MALFORMED_FRAME
        return None


# --- the author ---------------------------------------------------------------------


@dataclass(slots=True)
class _Out:
    item: m.MailItem
    to: str
    #: The chat message's id (None for a receipt).
    msg_id: str | None
    asked: set[str] = field(default_factory=set)
    holders: set[str] = field(default_factory=set)
    #: Peers that refused it (`mno`): asked, never holders.
    no: set[str] = field(default_factory=set)
    #: The room of a mailed room message (its members carry it once one is connected).
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Mailed:
    """Our message msg_id is now held by `holders` holders (report it)."""

    msg_id: str
    holders: int


class Outbox:
    """Items we wrote for offline readers, until MAILBOX_HOLDERS holders keep each."""

    def __init__(self) -> None:
        self.pending: OrderedDict[bytes, _Out] = OrderedDict()
        #: Ids that no longer wait for a first holder (kept by one, or given up): the
        #: adapter forgets them from its saved queue (`take_settled`).
        self._settled: list[bytes] = []

    def take_settled(self) -> list[bytes]:
        """Return and clear the ids settled since the last call."""
        settled, self._settled = self._settled, []
        return settled

    def _drop(self, ident: bytes) -> None:
        if self.pending.pop(ident, None) is not None:
            self._settled.append(ident)

    def add(self, item: m.MailItem, msg_id: str | None, room: str | None = None) -> bytes:
        """Queue an item for holders; return its id. The oldest is dropped beyond the bound.

        room: the item carries a message of this room (not a conversation's).
        """
        ident = mail_id(item.box)
        self.pending[ident] = _Out(item, peer_id_from_public(item.to), msg_id, room=room)
        while len(self.pending) > limits.MAILBOX_OUTBOX_MAX:
            self._drop(next(iter(self.pending)))
        return ident

    def plan(
        self, candidates: Callable[[str], list[str]], only: Iterable[bytes] | None = None
    ) -> dict[str, list[m.MailItem]]:
        """Return peer -> items to put to it now: each item to holders not asked yet.

        candidates(to): connected peers that may meet reader `to`, best first.
        only: plan these ids alone (new items: O(new), not O(pending), per post).
        """
        out: dict[str, list[m.MailItem]] = {}
        cache: dict[str, list[str]] = {}
        if only is None:
            items: Iterable[_Out] = self.pending.values()
        else:
            items = [o for o in map(self.pending.get, dict.fromkeys(only)) if o is not None]
        for out_item in items:
            wanted = limits.MAILBOX_HOLDERS - len(out_item.holders)
            waiting = len(out_item.asked - out_item.holders - out_item.no)
            if wanted - waiting <= 0:
                continue
            peers = cache.get(out_item.to)
            if peers is None:
                peers = cache[out_item.to] = candidates(out_item.to)
            for peer in peers:
                if wanted - waiting <= 0:
                    break
                if peer in out_item.asked or peer == out_item.to:
                    continue
                out_item.asked.add(peer)
                out.setdefault(peer, []).append(out_item.item)
                waiting += 1
        return out

    def kept(self, peer: str, ids: Iterable[bytes]) -> list[Mailed]:
        """peer keeps these items (`mok`); return what to report."""
        reports = []
        for ident in ids:
            out_item = self.pending.get(ident)
            if out_item is None or peer not in out_item.asked:
                continue
            out_item.holders.add(peer)
            if len(out_item.holders) == 1:
                self._settled.append(ident)
            if out_item.msg_id is not None:
                reports.append(Mailed(out_item.msg_id, len(out_item.holders)))
            if len(out_item.holders) >= limits.MAILBOX_HOLDERS:
                del self.pending[ident]
        return reports

    def refused(self, peer: str, ids: Iterable[bytes], reason: str) -> bool:
        """peer refused these items (`mno`): it stays asked, so the next plan picks another.

        Return whether anything changed (only then is a new plan worth making).
        """
        changed = False
        for ident in ids:
            out_item = self.pending.get(ident)
            if out_item is not None and peer in out_item.asked and peer not in out_item.no:
                out_item.no.add(peer)
                changed = True
                log.info("holder %s refused mail for %s: %s", peer[:8], out_item.to[:8], reason)
        return changed

    def peer_closed(self, peer: str) -> None:
        """peer left: what it never answered may be asked of it again later."""
        for out_item in self.pending.values():
            if peer not in out_item.holders:
                out_item.asked.discard(peer)
                out_item.no.discard(peer)

    def reader_met(self, to: str) -> None:
        """We are connected to reader `to`: sync carries what waits for it, not mail."""
        for ident in [i for i, o in self.pending.items() if o.to == to]:
            self._drop(ident)

    def members_met(self, rooms: Iterable[str]) -> None:
        """A member of these rooms is connected: it carries their messages, not mail."""
        met = set(rooms)
        for ident in [i for i, o in self.pending.items() if o.room in met and not o.holders]:
            self._drop(ident)
