"""Private channels: frames to one peer alone, inside its pairwise Olm ratchet (issue 12).

`PrivateChannel` keeps our Olm account and one ratchet per peer (crypto/ratchet.py) in the
store (tables `olm_*`, pickles encrypted with a key derived from the identity seed), sets
sessions up when two peers meet, and carries inner frames in `pm` frames over the direct,
authenticated connection (docs/protocol.md section 26):

- at a connection's start each side sends `okeys` (its Olm identity and fallback keys, signed
  by its identity) and, without a session with the peer, an `okreq`: the answer's one-time
  key opens the first session (requests bounded per peer and per minute, OLM_OTK_*);
- `wrap` / `unwrap` turn an inner frame into padded Olm bytes and back (also for mail:
  without a one-time key a session starts from the peer's signed fallback key; ours is
  replaced on a timer once used, not on each use: OLM_FALLBACK_ROTATE_S, section 26.5);
- `send` wraps and sends a `pm`; inner frames wait (bounded) while keys are on their way;
- a received `pm` that does not decrypt is refused with a reason logged once, moves no
  ratchet, and after PM_MAX_BAD such the connection closes (`decrypt_failed`); one that no
  session of ours decrypts (the peer kept a session we lost) makes us start a new session
  (at most every OLM_REPAIR_INTERVAL_S), and `on_session` lets the node ask for re-sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from chinwag import limits
from chinwag.crypto import ratchet
from chinwag.crypto.box import BadCiphertext
from chinwag.crypto.identity import Identity, public_from_peer_id
from chinwag.errors import ChinwagError
from chinwag.logonce import WarnOnce
from chinwag.net.link import Link, Links
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import Reason
from chinwag.store.db import Store, StoreError

log = logging.getLogger(__name__)
_warn = WarnOnce(log)

#: Inner kind of a chat frame (a DM's signed chat) inside a `pm`.
CHAT = "chat"
#: Inner kind of the empty frame that opens a repaired session (nothing to hand on).
HELLO = "hi"
#: Inner frames that wait for a peer's keys, per peer (older ones go: sync re-sends them).
_MAX_WAITING = 64

_inner_decoder = msgspec.msgpack.Decoder(m.PrivateInner)

Handler = Callable[[str, bytes], None]


class NoKeys(ChinwagError):
    """We have no session with the peer and none of its Olm keys to start one."""


class TooLarge(ChinwagError):
    """An inner frame is over PM_MAX_INNER_BYTES."""


class SessionFlood(BadCiphertext):
    """A peer starts new sessions faster than OLM_INBOUND_SESSION_INTERVAL_S allows."""


@dataclass(slots=True)
class _Fallback:
    """Our current fallback key, since when (wall clock), and whether it and the previous
    one opened a session (saved in the store with the account)."""

    fb: bytes
    made: float
    used: bool
    prev_used: bool

    def encode(self) -> str:
        return f"{self.fb.hex()} {self.made!r} {int(self.used)} {int(self.prev_used)}"

    @classmethod
    def decode(cls, raw: str | None) -> _Fallback | None:
        """Parse encode()'s output; None if raw is None or not such (then start afresh)."""
        try:
            fb, made, used, prev = (raw or "").split()
            return cls(bytes.fromhex(fb), float(made), used == "1", prev == "1")
        except ValueError:
            return None


def inner(kind: str, data: bytes) -> bytes:
    """Return the plaintext of a `pm` carrying data of this kind (see PrivateChannel.on)."""
    return m.encode(m.PrivateInner(kind=kind, data=data))


class PrivateChannel:
    """Our Olm account, one ratchet per peer, and the `pm` frames that use them."""

    def __init__(
        self,
        identity: Identity,
        store: Store,
        links: Links,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.store = store
        self.links = links
        self._clock = clock
        self._wall = wall  # the fallback key's age: it must count across restarts
        self._key = ratchet.pickle_key(bytes(identity.signing_key))
        saved = store.olm_account()
        if saved is None:
            self.account = ratchet.OlmAccount.create()
            self._save_account()
        else:
            self.account = ratchet.OlmAccount.from_pickle(saved, self._key)
        fallback = _Fallback.decode(store.olm_fallback())
        if fallback is None or fallback.fb != self.account.fallback_key:
            # A new account, or one saved before fallback keys had an age: the previous
            # key of the latter may have opened sessions, so it goes at the next rotation.
            fallback = _Fallback(self.account.fallback_key, wall(), False, saved is not None)
            store.save_olm(None, "", [], [], time.time(), fallback=fallback.encode())
        self._fallback = fallback
        self._sessions: dict[str, list[ratchet.OlmSession]] = {}
        #: Sessions that decrypted in this loop turn, saved at its end: (peer, id) -> session.
        self._dirty: dict[tuple[str, str], tuple[str, ratchet.OlmSession]] = {}
        self._handlers: dict[str, Handler] = {}
        self._waiting: dict[str, deque[bytes]] = {}
        self._asked: set[str] = set()  # an okreq of ours is unanswered
        self._repairing: set[str] = set()  # the next one-time key opens a repair session
        self._repaired: dict[str, float] = {}
        self._inbound: dict[str, float] = {}  # when a peer last started a session with us
        #: Peers whose new identity key dropped our sessions: their next session replaces one.
        self._lost: dict[str, None] = {}
        self._bad: dict[str, int] = {}
        self._otk_times: dict[str, deque[float]] = {}
        self._otk_all: deque[float] = deque()
        self._keys_times: dict[str, deque[float]] = {}
        self._new_keys_times: deque[float] = deque()  # new peers' keys learned from records
        self._keys_live: dict[str, float] = {}  # when a connection last brought a peer's keys
        self._published: m.OlmKeys | None = None
        #: Called with a peer id when a new session with it starts on its side (a pre-key
        #: message we accepted) or ours (a repair): the node re-syncs the conversation, so
        #: what a broken session carried is re-sent under the new one.
        self.on_session: Callable[[str], None] | None = None
        #: Called when our fallback key changed: the node re-signs our presence record.
        self.on_rotate: Callable[[], None] | None = None
        #: Test hook: called with (peer id, pm data) for every `pm` sent or received.
        self.recorder: Callable[[str, bytes], None] | None = None
        self._rotate_fallback()  # the node may have been stopped for longer than a period

    # --- the API for other parts --------------------------------------------

    def on(self, kind: str, handler: Handler) -> None:
        """Call handler(peer_id, data) for each received inner frame of this kind."""
        self._handlers[kind] = handler

    def published_keys(self) -> m.OlmKeys:
        """Return our signed Olm identity and fallback keys (no one-time key): for anyone."""
        self._rotate_fallback()
        ident, fb = self.account.identity_key, self.account.fallback_key
        if self._published is None or self._published.fb != fb:
            # Signed once per fallback key: an `okreq` flood costs no signatures.
            sig = ratchet.sign_keys(self.identity, ident, fb)
            self._published = m.OlmKeys(ident=ident, fb=fb, sig=sig)
        return self._published

    def presence_keys(self) -> m.PublishedKeys:
        """Return published_keys() as presence records and mail carry them (26.1)."""
        keys = self.published_keys()
        return m.PublishedKeys(ident=keys.ident, fb=keys.fb, sig=keys.sig)

    def learn_published(
        self, peer_id: str, keys: m.PublishedKeys, signed_at: float, mailed: bool = False
    ) -> bool:
        """Keep keys peer_id signed at signed_at (Unix s: a presence record's seq time, a
        mail item's) unless what we hold is as new; return whether they are ours now.

        A record of a peer whose keys we lack uses up OLM_RECORD_NEW_KEYS_PER_MIN (unless a
        conversation, verified peer or contact): over it, the keys wait for its next record.
        mailed: they came in mail to us (never skipped: the item needs them to open).

        Which wins: keys are saved with when they were signed (a record, mail) or received
        (a connection, our clock); keys signed no later than that never replace them, so an
        old record cannot undo what a connection told us. Badly signed keys are ignored
        (logged once): the record or mail that carried them is not refused for it.
        """
        held = self.store.olm_peer(peer_id)
        if held is not None and held[0] == keys.ident and held[1] == keys.fb:
            # The common case (every refresh of a record): no check, at most one write per
            # OLM_SEEN_REFRESH_S, so a far peer that keeps publishing is not evicted as old.
            # The later signing also vouches that the fallback key lives on (_wrap's rule).
            now = self._wall()
            seen = self.store.olm_peer_seen(peer_id)
            if seen is not None and now - seen >= limits.OLM_SEEN_REFRESH_S:
                self.store.olm_peer_touch(peer_id, now, min(signed_at, now))
            return True
        if held is None and not mailed and not self._new_keys_allowed(peer_id):
            return False
        if held is not None and self._live_keys(peer_id):
            # The two times below are two clocks (ours, the author's): keys a connection
            # brought (now or within PRESENCE_TTL_S, a record's lifetime) always win.
            log.debug("olm: keeping the keys of %s a connection brought", peer_id[:8])
            return False
        learned = self.store.olm_peer_learned(peer_id) if held is not None else None
        if learned is not None and signed_at <= learned:
            log.debug("olm: keeping newer keys of %s than a copy signed earlier", peer_id[:8])
            return False
        olm = m.OlmKeys(ident=keys.ident, fb=keys.fb, sig=keys.sig)
        if not self.learn_keys(peer_id, olm, at=min(signed_at, self._wall())):
            _warn(("published", peer_id), "olm: %s published keys it did not sign", peer_id[:8])
            return False
        return True

    def learn_keys(self, peer_id: str, keys: m.OlmKeys, at: float | None = None) -> bool:
        """Keep a peer's Olm keys if its identity signed them; return whether it did.

        at: when they were signed or received (Unix s; default now). A new identity key
        (the peer lost its state) drops our sessions with the old one.
        """
        try:
            public = public_from_peer_id(peer_id)
        except ChinwagError:
            return False
        if not ratchet.verify_keys(public, keys.ident, keys.fb, keys.sig):
            return False
        if len(keys.otk) not in (0, 32):
            return False
        old = self.store.olm_peer(peer_id)
        otk = keys.otk or (old[3] if old is not None and old[0] == keys.ident else b"")
        when = time.time() if at is None else at
        self.store.save_olm_peer(peer_id, keys.ident, keys.fb, keys.sig, otk, when, self._wall())
        if old is not None and old[0] != keys.ident:
            log.info("olm: %s has a new identity key: its old sessions are dropped", peer_id[:8])
            self._sessions.pop(peer_id, None)
            self._lost[peer_id] = None
            if len(self._lost) > limits.OLM_MAX_PEERS:
                self._lost.pop(next(iter(self._lost)))
        elif old is not None and old[1] != keys.fb:
            self._drop_unanswered(peer_id)
        return True

    def _live_keys(self, peer_id: str) -> bool:
        """Whether peer_id is connected, or its keys came over a connection within
        PRESENCE_TTL_S (a record or mail item signed before that may still be around)."""
        conn = self.links.peers.get(peer_id)
        if conn is not None and conn.is_open:
            return True
        got = self._keys_live.get(peer_id)
        return got is not None and self._clock() - got < limits.PRESENCE_TTL_S

    def _new_keys_allowed(self, peer_id: str) -> bool:
        """Whether a record may bring keys of a peer new to us now (OLM_RECORD_NEW_KEYS_PER_MIN:
        a burst of records from throwaway identities must not evict far peers' keys)."""
        now = self._clock()
        times = self._new_keys_times
        while times and times[0] <= now - 60.0:
            times.popleft()
        if len(times) < limits.OLM_RECORD_NEW_KEYS_PER_MIN:
            times.append(now)
            return True
        if self._protected(peer_id):
            return True
        _warn(("newkeys",), "olm: too many new peers' keys in records: the rest wait")
        return False

    def _drop_unanswered(self, peer_id: str) -> None:
        """Drop our sessions with peer_id that never had a reply (they may rest on a
        fallback key the peer has since let go: all their mail would be lost); the next
        message starts one from the peer's current keys."""
        sessions = self._load(peer_id)
        gone = []
        for session in sessions:
            probe = ratchet.OlmSession.from_pickle(session.pickle(self._key), self._key)
            if probe.encrypt(b"").kind == ratchet.PRE_KEY:  # a copy: the session is unmoved
                gone.append(session)
        if gone:
            log.info("olm: %s has a new fallback key: unanswered sessions go", peer_id[:8])
            for session in gone:
                sessions.remove(session)
                self._dirty.pop((peer_id, session.session_id), None)
            self.store.save_olm(None, peer_id, [], [s.session_id for s in gone], time.time())

    def has_session(self, peer_id: str) -> bool:
        """Return whether we share a ratchet with peer_id."""
        return bool(self._load(peer_id))

    def wrap(self, peer_id: str, data: bytes) -> bytes:
        """Encrypt an inner frame (see `inner`) for peer_id alone: padded Olm bytes.

        Without a session one starts from the peer's one-time key, else its fallback key
        (a pre-key message). Raise NoKeys if we know no key of the peer, or (this is for
        mail) only keys too old to be sure the peer still has them (OLM_FALLBACK_TRUST_S).
        """
        return self._wrap(peer_id, data, fresh=False, mail=True)

    def _wrap(self, peer_id: str, data: bytes, fresh: bool, mail: bool = False) -> bytes:
        if len(data) > limits.PM_MAX_INNER_BYTES:
            # The receiver would refuse the frame (and close on us): never send it.
            raise TooLarge(f"an inner frame of {len(data)} bytes does not fit in a pm")
        sessions = self._load(peer_id)
        drop: list[str] = []
        learned = self.store.olm_peer_learned(peer_id) if mail else None
        # A session that never had a reply opens at the peer only while the key it started
        # from lives: past OLM_FALLBACK_TRUST_S its message would be refused (lost mail).
        # Not so over a connection: the peer's refusal there starts a new session (26.4).
        stale = learned is not None and self._wall() - learned > limits.OLM_FALLBACK_TRUST_S
        if sessions and not fresh:
            session = sessions[0]
        else:
            keys = self.store.olm_peer(peer_id)
            if keys is None:
                raise NoKeys(f"no olm keys of {peer_id[:8]}")
            ident, fb, _sig, otk = keys
            if stale and not otk:
                raise NoKeys(f"the fallback key of {peer_id[:8]} we hold may be gone")
            session = self.account.outbound(ident, otk or fb)
            if otk:
                self.store.olm_peer_otk_used(peer_id)
            sessions.insert(0, session)
            drop = [s.session_id for s in sessions[limits.OLM_MAX_SESSIONS_PER_PEER :]]
            del sessions[limits.OLM_MAX_SESSIONS_PER_PEER :]
            stale = False
        msg = session.encrypt(data)
        if stale and msg.kind == ratchet.PRE_KEY:
            # Never saved: the chain index skipped is harmless (the reader allows gaps).
            raise NoKeys(f"our session with {peer_id[:8]} rests on keys that may be gone")
        self._save(peer_id, session, drop=drop)
        return ratchet.pad(msg)

    def unwrap(self, peer_id: str, data: bytes) -> bytes:
        """Decrypt what peer_id wrapped for us; raise BadCiphertext (a RatchetError) if it is
        replayed, forged, truncated or for no session of ours: no ratchet state changes then."""
        return self._unwrap(peer_id, data, live=False)

    def _unwrap(self, peer_id: str, data: bytes, live: bool) -> bytes:
        """unwrap; live (a `pm` on a connection): raise SessionFlood for a new session
        sooner than OLM_INBOUND_SESSION_INTERVAL_S after the peer's last one."""
        msg = ratchet.unpad(data)
        sessions = self._load(peer_id)
        if msg.kind == ratchet.PRE_KEY:
            for session in sessions:
                if session.matches(msg):
                    plain = session.decrypt(msg)
                    self._used(peer_id, session)
                    return plain
            keys = self.store.olm_peer(peer_id)
            if keys is None:
                raise ratchet.StaleSession("a pre-key message from a peer whose keys we lack")
            now = self._clock()
            last = self._inbound.get(peer_id)
            if live and last is not None and now - last < limits.OLM_INBOUND_SESSION_INTERVAL_S:
                # Each costs a write and (replacing one) a re-sync: not in a loop. An honest
                # peer's later message of that session still opens it; sync re-sends the rest.
                raise SessionFlood("a new session too soon after the last one")
            unused = self.account.one_time_key_count
            try:
                session, plain = self.account.inbound(keys[0], msg)
            except ratchet.RatchetError as exc:
                # Forged, replayed, or made with a key we no longer have (we lost our state).
                raise ratchet.StaleSession(str(exc)) from None
            self._inbound.pop(peer_id, None)
            self._inbound[peer_id] = now
            if len(self._inbound) > limits.OLM_MAX_PEERS:
                self._inbound.pop(next(iter(self._inbound)))
            fallback = None
            if self.account.one_time_key_count == unused and not self._fallback.used:
                # It started from a fallback key: that key goes at the next rotation
                # (section 26.5), not now (mail on its way from others needs it too).
                self._fallback.used = True
                fallback = self._fallback.encode()
            replaced = bool(sessions) or peer_id in self._lost
            self._lost.pop(peer_id, None)
            sessions.insert(0, session)
            drop = [s.session_id for s in sessions[limits.OLM_MAX_SESSIONS_PER_PEER :]]
            del sessions[limits.OLM_MAX_SESSIONS_PER_PEER :]
            self._save(peer_id, session, account=True, drop=drop, fallback=fallback)
            if replaced and self.on_session is not None:
                # A new session besides ours: if the peer started anew (it lost ours), what
                # we sent under the old one may be lost too; the node re-syncs the
                # conversation. A first session replaces nothing: no re-sync push.
                self.on_session(peer_id)
            return plain
        for session in sessions:
            try:
                plain = session.decrypt(msg)
            except ratchet.RatchetError:
                continue
            self._used(peer_id, session)
            return plain
        raise ratchet.StaleSession("no session of ours decrypts it (replayed, forged or stale)")

    def send(self, peer_id: str, data: bytes) -> bool:
        """Wrap an inner frame and send it in a `pm` over the direct connection to peer_id.

        False if the peer is not connected. Without a session and a one-time key of the
        peer the frame waits (bounded) for the `okeys` we ask for.
        """
        conn = self.links.peers.get(peer_id)
        if conn is None or not conn.is_open:
            return False
        if not self.has_session(peer_id):
            keys = self.store.olm_peer(peer_id)
            if keys is None or not keys[3]:
                # The fallback key would do, but a one-time key is better forward secrecy
                # and comes within a round trip: wait for it.
                self._wait(peer_id, data)
                self._ask(conn, peer_id)
                return True
        self._send(conn, peer_id, data)
        return True

    def close(self) -> None:
        """Save what decrypted in this loop turn (before the store closes)."""
        if self._dirty:
            self._flush()

    # --- the connection side --------------------------------------------------

    def peer_joined(self, conn: Link) -> None:
        """Tell a new peer our keys; ask for a one-time key if we share no session."""
        peer_id = conn.peer_id or ""
        self._bad.pop(peer_id, None)
        conn.send_frame(self.published_keys())
        if not self.has_session(peer_id):
            self._ask(conn, peer_id)

    def peer_left(self, peer_id: str) -> None:
        """Forget what waited for this connection (sync re-sends it on the next one)."""
        self._waiting.pop(peer_id, None)
        self._asked.discard(peer_id)
        self._repairing.discard(peer_id)
        self._bad.pop(peer_id, None)
        # _otk_times stays: reconnecting must not reset a peer's one-time-key budget.
        self._keys_times.pop(peer_id, None)

    def frame(self, conn: Link, frame: m.OlmFrame) -> None:
        """Handle an `okreq`, `okeys` or `pm` from a connected peer."""
        peer_id = conn.peer_id or ""
        if isinstance(frame, m.OlmKeyRequest):
            conn.send_frame(self._answer(peer_id))
        elif isinstance(frame, m.OlmKeys):
            self._keys_received(conn, peer_id, frame)
        else:
            self._pm_received(conn, peer_id, frame.d)

    # --- internals --------------------------------------------------------

    def _send(self, conn: Link, peer_id: str, data: bytes, fresh: bool = False) -> None:
        try:
            wrapped = self._wrap(peer_id, data, fresh)
        except (ChinwagError, StoreError) as exc:
            _warn(("wrap", peer_id), "olm: cannot write to %s: %s", peer_id[:8], exc)
            return
        if self.recorder is not None:
            self.recorder(peer_id, wrapped)
        conn.send_frame(m.PrivateMessage(d=wrapped))

    def _wait(self, peer_id: str, data: bytes) -> None:
        queue = self._waiting.setdefault(peer_id, deque(maxlen=_MAX_WAITING))
        queue.append(data)

    def _ask(self, conn: Link, peer_id: str) -> None:
        if peer_id not in self._asked:
            self._asked.add(peer_id)
            conn.send_frame(m.OlmKeyRequest())

    def _answer(self, peer_id: str) -> m.OlmKeys:
        """Our keys with a fresh one-time key, unless the requests are over their bounds."""
        keys = self.published_keys()
        now = self._clock()
        mine = self._otk_times.setdefault(peer_id, deque())
        if len(self._otk_times) > limits.OLM_MAX_PEERS:
            self._otk_times.pop(next(iter(self._otk_times)))
        for times in (mine, self._otk_all):
            while times and times[0] <= now - 60.0:
                times.popleft()
        if len(mine) >= limits.OLM_OTK_PER_PEER_PER_MIN or (
            len(self._otk_all) >= limits.OLM_OTK_PER_MIN
            # Strangers' requests use up the shared budget; a conversation, a verified peer
            # or a contact (few: bounded elsewhere) keep theirs.
            and not self._protected(peer_id)
        ):
            _warn(("otk", peer_id), "olm: %s asks too often for one-time keys", peer_id[:8])
            # An answer all the same: the fallback key still opens a session.
            return m.OlmKeys(ident=keys.ident, fb=keys.fb, sig=keys.sig, re=True)
        mine.append(now)
        self._otk_all.append(now)
        otk = self.account.take_one_time_key()
        try:
            self._save_account()
        except StoreError as exc:  # ours, not the peer's
            # An unsaved key would be gone after a restart: the fallback key opens the session.
            log.error("olm: cannot save our account: %s", exc)
            otk = b""
        return m.OlmKeys(ident=keys.ident, fb=keys.fb, sig=keys.sig, otk=otk, re=True)

    def _protected(self, peer_id: str) -> bool:
        try:
            return self.store.olm_protected(peer_id)
        except StoreError as exc:  # ours, not the peer's
            log.error("olm: cannot read the store: %s", exc)
            return False

    def _keys_received(self, conn: Link, peer_id: str, keys: m.OlmKeys) -> None:
        now = self._clock()
        times = self._keys_times.setdefault(peer_id, deque())
        while times and times[0] <= now - 60.0:
            times.popleft()
        if len(times) >= limits.OLM_KEYS_PER_PEER_PER_MIN:
            # Each costs a signature check and a write: a flood of them is dropped.
            _warn(("okeys", peer_id), "olm: %s sends its keys too often", peer_id[:8])
            return
        times.append(now)
        try:
            learned = self.learn_keys(peer_id, keys)
        except StoreError as exc:  # ours, not the peer's
            log.error("olm: cannot save the keys of %s: %s", peer_id[:8], exc)
            return
        if not learned:
            _warn(("keys", peer_id), "olm: %s sent keys it did not sign", peer_id[:8])
            conn.close(Reason.BAD_SIGNATURE)
            return
        self._keys_live.pop(peer_id, None)
        self._keys_live[peer_id] = now
        if len(self._keys_live) > limits.OLM_MAX_PEERS:
            self._keys_live.pop(next(iter(self._keys_live)))
        if not keys.re:
            return  # the keys a peer sends at the start: our request's answer follows
        self._asked.discard(peer_id)
        if peer_id in self._repairing:
            # Our session with it broke: start a new one now and say so (an empty frame).
            self._repairing.discard(peer_id)
            self._send(conn, peer_id, inner(HELLO, b""), fresh=True)
            if self.on_session is not None:
                self.on_session(peer_id)
        for data in self._waiting.pop(peer_id, ()):
            self._send(conn, peer_id, data)

    def published_keys_of(self, peer_id: str) -> m.OlmKeys | None:
        """Return the keys we hold of peer_id (as it published them), or None."""
        keys = self.store.olm_peer(peer_id)
        if keys is None:
            return None
        return m.OlmKeys(ident=keys[0], fb=keys[1], sig=keys[2])

    def _pm_received(self, conn: Link, peer_id: str, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder(peer_id, data)
        try:
            plain = self._unwrap(peer_id, data, live=True)
            got = _inner_decoder.decode(plain)
        except ratchet.StaleSession as exc:
            self._refused(conn, peer_id, exc)
            self._repair(conn, peer_id)
            return
        except (BadCiphertext, msgspec.DecodeError) as exc:
            self._refused(conn, peer_id, exc)
            return
        except StoreError as exc:  # ours, not the peer's
            log.error("olm: cannot save a ratchet: %s", exc)
            return
        if got.kind == HELLO:
            return
        handler = self._handlers.get(got.kind)
        if handler is None:
            _warn(("kind", got.kind[:16]), "olm: ignoring private frames of kind %r", got.kind)
            return
        handler(peer_id, got.data)

    def _refused(self, conn: Link, peer_id: str, exc: Exception) -> None:
        bad = self._bad[peer_id] = self._bad.get(peer_id, 0) + 1
        _warn(("pm", peer_id), "olm: refusing a pm from %s: %s", peer_id[:8], exc)
        if bad >= limits.PM_MAX_BAD:
            log.warning("disconnecting %s: %d pm frames refused", peer_id[:8], bad)
            conn.close(Reason.DECRYPT_FAILED)

    def _repair(self, conn: Link, peer_id: str) -> None:
        """The peer uses a session we lack: ask for a one-time key to start a new one."""
        now = self._clock()
        last = self._repaired.get(peer_id)
        if last is not None and now - last < limits.OLM_REPAIR_INTERVAL_S:
            return
        self._repaired[peer_id] = now
        if len(self._repaired) > limits.OLM_MAX_PEERS:
            self._repaired.pop(next(iter(self._repaired)))
        log.info("olm: starting a new session with %s (it used one we do not have)", peer_id[:8])
        self._repairing.add(peer_id)
        self._asked.discard(peer_id)
        conn.send_frame(self.published_keys())  # our identity key may be new to it
        self._ask(conn, peer_id)

    def _load(self, peer_id: str) -> list[ratchet.OlmSession]:
        sessions = self._sessions.get(peer_id)
        if sessions is None:
            sessions = []
            for _sid, pickle in self.store.olm_sessions(peer_id):
                try:
                    sessions.append(ratchet.OlmSession.from_pickle(pickle, self._key))
                except ratchet.RatchetError as exc:
                    _warn(("pickle", peer_id), "olm: a saved session is unusable: %s", exc)
            if len(self._sessions) >= limits.OLM_MAX_PEERS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[peer_id] = sessions
        return sessions

    def _used(self, peer_id: str, session: ratchet.OlmSession) -> None:
        """A session decrypted a message: it goes first, and is saved within this loop turn.

        Saved with the turn's other decryptions in one transaction, like the messages they
        carry (History commits those in the same turn): after a crash before it, the message
        is not stored either, and the sender's re-send still decrypts (the chain only moves
        forward from the saved state). Sending never waits: see `_save`.
        """
        sessions = self._sessions.setdefault(peer_id, [])
        if sessions and sessions[0] is not session:
            sessions.remove(session)
            sessions.insert(0, session)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # unit tests without a loop
            self._save(peer_id, session)
            return
        if not self._dirty:
            loop.call_soon(self._flush)
        self._dirty[(peer_id, session.session_id)] = (peer_id, session)

    def _flush(self) -> None:
        """Save the sessions that decrypted in this loop turn (one transaction)."""
        dirty, self._dirty = self._dirty, {}
        if not dirty:
            return  # saved already (close(), or a send of the same session)
        try:
            self.store.save_olm_sessions(
                [(p, s.session_id, s.pickle(self._key)) for p, s in dirty.values()], time.time()
            )
        except StoreError as exc:
            log.error("olm: cannot save ratchets: %s", exc)

    def _save(
        self,
        peer_id: str,
        session: ratchet.OlmSession,
        account: bool = False,
        drop: list[str] | None = None,
        fallback: str | None = None,
    ) -> None:
        """Persist a session's new state (and the account's) now: before a message it
        encrypted is sent, a message key is never used twice (not even after a crash)."""
        self._dirty.pop((peer_id, session.session_id), None)
        self.store.save_olm(
            self.account.pickle(self._key) if account else None,
            peer_id,
            [(session.session_id, session.pickle(self._key))],
            drop or [],
            time.time(),
            fallback=fallback,
        )

    def _rotate_fallback(self) -> None:
        """Make a new fallback key once the current one is OLM_FALLBACK_ROTATE_S old, if it or
        the previous one opened a session (an unused one stays: stale copies still work)."""
        fallback = self._fallback
        now = self._wall()
        if now - fallback.made < limits.OLM_FALLBACK_ROTATE_S:
            return
        if not (fallback.used or fallback.prev_used):
            return
        self.account.rotate_fallback()  # vodozemac keeps the previous key, drops the one before
        self._fallback = _Fallback(self.account.fallback_key, now, False, fallback.used)
        log.info("olm: a new fallback key (the previous one opened sessions)")
        try:
            self.store.save_olm(
                self.account.pickle(self._key), "", [], [], time.time(), self._fallback.encode()
            )
        except StoreError as exc:  # ours: saved with the account's next write
            log.error("olm: cannot save our account: %s", exc)
        if self.on_rotate is not None:
            self.on_rotate()  # peers far away learn the new key from our presence record

    def _save_account(self) -> None:
        self.store.save_olm(self.account.pickle(self._key), "", [], [], time.time())
