"""The Olm double ratchet for private messages: a typed wrapper over vodozemac (Matrix's
audited Rust implementation of Olm). docs/protocol.md section 26.

- `OlmAccount`: our Curve25519 Olm identity key, one-time keys (handed out one at a time
  over an authenticated connection) and a fallback key (for peers that reach us while we
  have none to hand out). Its identity and fallback keys are bound to our Ed25519 chinwag
  identity by a signature (`sign_keys` / `verify_keys`), so a peer id vouches for them.
- `OlmSession`: one pairwise ratchet; `encrypt` / `decrypt`. vodozemac deletes each message
  key once used and never changes a session's state when a message fails to decrypt, so
  a replayed, reordered-beyond-window, truncated or forged message is refused and leaves
  the ratchet where it was.
- Pickles (the state saved in the store) are encrypted with `pickle_key(seed)`, a key
  derived from the identity seed: whoever copies the database without the identity gets
  nothing; with both (`chinwag export`, keymove.py) the sessions move along.
- `pad` / `unpad`: an Olm message as the bytes of a `pm` frame, padded to a power-of-two
  bucket (at least PM_MIN_BUCKET bytes) so its size tells little about the text.

Pure: no IO and no clock; the randomness of new keys is vodozemac's own (the OS's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import vodozemac

from chinwag import limits
from chinwag.crypto.box import BadCiphertext
from chinwag.crypto.identity import Identity, verify

#: Domain separation of the signature binding Olm keys to a chinwag identity.
OLM_KEYS_CONTEXT: Final = b"chinwag/1 olm keys\x00"
_PICKLE_CONTEXT: Final = b"chinwag/1 olm pickle\x00"
#: Olm message types (vodozemac's numbering).
PRE_KEY: Final = 0
NORMAL: Final = 1
_HEADER: Final = 5  # 1 byte message type + 4 bytes ciphertext length


class RatchetError(BadCiphertext):
    """An Olm message was refused (replayed, forged, truncated, or no session for it)."""


class StaleSession(RatchetError):
    """A message that no session of ours decrypts (the peer may have lost its state)."""


def pickle_key(seed: bytes) -> bytes:
    """Return the 32-byte key that encrypts our pickles, derived from the identity seed."""
    return hashlib.blake2b(_PICKLE_CONTEXT, key=seed, digest_size=32).digest()


def keys_message(ident: bytes, fallback: bytes) -> bytes:
    """Return what the identity signs to vouch for its Olm identity and fallback keys."""
    return OLM_KEYS_CONTEXT + ident + fallback


def sign_keys(identity: Identity, ident: bytes, fallback: bytes) -> bytes:
    """Return our identity's signature over our Olm identity key and fallback key."""
    return identity.sign(keys_message(ident, fallback))


def verify_keys(public: bytes, ident: bytes, fallback: bytes, sig: bytes) -> bool:
    """Return whether the identity `public` vouched for these Olm keys."""
    return verify(public, keys_message(ident, fallback), sig)


@dataclass(frozen=True, slots=True)
class OlmMessage:
    """One Olm message: its type (PRE_KEY or NORMAL) and ciphertext."""

    kind: int
    ciphertext: bytes


class OlmSession:
    """One pairwise Olm ratchet with a peer."""

    def __init__(self, session: vodozemac.Session) -> None:
        self._s = session

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> OlmSession:
        """Restore a session; raise RatchetError if the pickle is not ours or is damaged."""
        try:
            return cls(vodozemac.Session.from_pickle(pickle, key))
        except ValueError as exc:
            raise RatchetError(f"session pickle does not open ({type(exc).__name__})") from None

    @property
    def session_id(self) -> str:
        return self._s.session_id

    def pickle(self, key: bytes) -> str:
        """Return the session's state encrypted with key."""
        return self._s.pickle(key)

    def encrypt(self, plaintext: bytes) -> OlmMessage:
        """Encrypt plaintext; advances the sending chain."""
        kind, ciphertext = self._s.encrypt(plaintext).to_parts()
        return OlmMessage(kind, bytes(ciphertext))

    def matches(self, msg: OlmMessage) -> bool:
        """Return whether a pre-key message belongs to this session."""
        if msg.kind != PRE_KEY:
            return False
        pre = _any(msg).to_pre_key()
        return pre is not None and self._s.session_matches(pre)

    def decrypt(self, msg: OlmMessage) -> bytes:
        """Decrypt msg; raise RatchetError (state unchanged) if it does not."""
        try:
            return bytes(self._s.decrypt(_any(msg)))
        except ValueError as exc:
            raise RatchetError(f"olm message refused: {exc}") from None


class OlmAccount:
    """Our Olm identity: identity key, one-time keys, fallback key."""

    def __init__(self, account: vodozemac.Account) -> None:
        self._a = account
        if not self._fallback():
            self._a.generate_fallback_key()  # type: ignore[attr-defined]

    @classmethod
    def create(cls) -> OlmAccount:
        """Make a new account (fresh keys)."""
        return cls(vodozemac.Account())

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> OlmAccount:
        """Restore an account; raise RatchetError if the pickle is not ours or is damaged."""
        try:
            return cls(vodozemac.Account.from_pickle(pickle, key))
        except ValueError as exc:
            raise RatchetError(f"account pickle does not open ({type(exc).__name__})") from None

    def pickle(self, key: bytes) -> str:
        """Return the account's state encrypted with key."""
        return self._a.pickle(key)

    @property
    def identity_key(self) -> bytes:
        """Our Curve25519 Olm identity key (32 bytes)."""
        return self._a.curve25519_key.to_bytes()

    @property
    def fallback_key(self) -> bytes:
        """Our current fallback key (32 bytes), for peers that have no one-time key of ours."""
        return next(iter(self._fallback().values())).to_bytes()

    def rotate_fallback(self) -> None:
        """Make a new fallback key (the previous one still opens sessions until the next)."""
        self._a.generate_fallback_key()  # type: ignore[attr-defined]

    @property
    def one_time_key_count(self) -> int:
        """How many one-time keys we made that no session used yet."""
        return len(self._a.one_time_keys)

    def take_one_time_key(self) -> bytes:
        """Make one fresh one-time key and return it (it opens one session, then is gone)."""
        # Keys are never marked published (vodozemac lists only unpublished ones, and the
        # fallback key must stay listed): the new key is the one that was not there before.
        before = set(self._a.one_time_keys)
        self._a.generate_one_time_keys(1)
        (new,) = (v for k, v in self._a.one_time_keys.items() if k not in before)
        return new.to_bytes()

    def _fallback(self) -> dict[str, vodozemac.Curve25519PublicKey]:
        # vodozemac 0.10 has the fallback key but its type stubs do not list it.
        keys: dict[str, vodozemac.Curve25519PublicKey] = self._a.fallback_key  # type: ignore[attr-defined]
        return keys

    def outbound(self, peer_ident: bytes, peer_key: bytes) -> OlmSession:
        """Start a session to a peer from its identity key and a one-time (or fallback) key."""
        try:
            session = self._a.create_outbound_session(
                vodozemac.Curve25519PublicKey.from_bytes(peer_ident),
                vodozemac.Curve25519PublicKey.from_bytes(peer_key),
            )
        except ValueError as exc:
            raise RatchetError(f"cannot start a session: {exc}") from None
        return OlmSession(session)

    def inbound(self, peer_ident: bytes, msg: OlmMessage) -> tuple[OlmSession, bytes]:
        """Accept a peer's pre-key message: return the new session and the plaintext.

        The one-time key it used is removed (only if the message decrypts).
        """
        if msg.kind != PRE_KEY:
            raise RatchetError("not a pre-key message")
        try:
            pre = _any(msg).to_pre_key()
            if pre is None:
                raise RatchetError("not a pre-key message")
            session, plaintext = self._a.create_inbound_session(
                vodozemac.Curve25519PublicKey.from_bytes(peer_ident), pre
            )
        except ValueError as exc:
            raise RatchetError(f"pre-key message refused: {exc}") from None
        return OlmSession(session), bytes(plaintext)


def _any(msg: OlmMessage) -> vodozemac.AnyOlmMessage:
    try:
        return vodozemac.AnyOlmMessage.from_parts(msg.kind, msg.ciphertext)
    except ValueError as exc:
        raise RatchetError(f"malformed olm message: {exc}") from None


def bucket(size: int) -> int:
    """Return the padded size for `size` bytes: a power of two, at least PM_MIN_BUCKET."""
    out = limits.PM_MIN_BUCKET
    while out < size:
        out *= 2
    return out


def pad(msg: OlmMessage) -> bytes:
    """Return msg as `pm` frame data: type, length, ciphertext, zeros up to a bucket."""
    body = bytes([msg.kind]) + len(msg.ciphertext).to_bytes(4, "big") + msg.ciphertext
    return body + bytes(bucket(len(body)) - len(body))


def unpad(data: bytes) -> OlmMessage:
    """Parse `pm` frame data; raise RatchetError if it is truncated or not padded as pad() does."""
    if len(data) < _HEADER or len(data) != bucket(len(data)):
        raise RatchetError("pm data is not a whole bucket (truncated?)")
    kind = data[0]
    if kind not in (PRE_KEY, NORMAL):
        raise RatchetError("unknown olm message type")
    length = int.from_bytes(data[1:_HEADER], "big")
    end = _HEADER + length
    if length == 0 or end > len(data):
        raise RatchetError("olm message length beyond the data (truncated?)")
    if any(data[end:]):
        raise RatchetError("padding is not zero (altered)")
    return OlmMessage(kind, data[_HEADER:end])
