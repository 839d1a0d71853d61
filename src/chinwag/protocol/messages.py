"""Wire schemas of protocol version 1 and their codec (MessagePack via msgspec).

Every transport frame is one MessagePack map tagged by its `t` field. Decoding
validates types and bounds; a frame with an unknown tag is reported as
`UnknownFrame` (ignored by the session), anything else malformed raises
RemoteProtocolError. The encoding of each struct is documented in docs/protocol.md.
"""

from __future__ import annotations

import math
from typing import Annotated, Final

import msgspec

from chinwag import limits
from chinwag.errors import RemoteProtocolError
from chinwag.protocol.reasons import Reason as Code

PROTOCOL_NAME: Final = "chinwag"
PROTOCOL_VERSION: Final = 1
#: Bound into the Noise handshake hash: a peer of another version cannot complete it.
PROLOGUE: Final = b"chinwag/1"
#: Domain separation of the signature binding a Noise static key to an identity.
STATIC_KEY_CONTEXT: Final = b"chinwag/1 noise-static-key\x00"
#: Domain separation of chat message signatures.
CHAT_CONTEXT: Final = b"chinwag/1 chat\x00"
#: Domain separation of presence record signatures (docs/protocol.md section 23).
PRESENCE_CONTEXT: Final = b"chinwag/1 presence\x00"
#: Domain separation of mail item signatures and ids (docs/protocol.md section 24).
MAIL_CONTEXT: Final = b"chinwag/1 mail\x00"

Nick = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_NICK_CHARS)]
Room = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_ROOM_CHARS)]
Key32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Sig64 = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
U64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Cap = Annotated[str, msgspec.Meta(max_length=limits.MAX_CAP_CHARS)]
#: A canonical peer id: lowercase unpadded base32 of a 32-byte key. The last character
#: holds one bit and four zero bits, so it is `a` or `q`; this pattern accepts exactly the
#: strings `crypto.identity.public_from_peer_id` accepts, so no adapter re-checks them.
PEER_ID_PATTERN: Final = "^[a-z2-7]{51}[aq]$"
PeerIdStr = Annotated[str, msgspec.Meta(min_length=52, max_length=52, pattern=PEER_ID_PATTERN)]


# --- handshake payloads -----------------------------------------------------


class Prelude(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Payload of Noise message 1 (sent in clear, but hashed into the handshake)."""

    proto: str
    v: int


class Hello(msgspec.Struct, frozen=True):
    """Payload of Noise messages 2 and 3: who I am, proven by `sig`.

    `sig` is the Ed25519 signature by `identity` of STATIC_KEY_CONTEXT + the
    sender's Noise static public key, binding the channel to the identity.
    """

    identity: Key32
    sig: Sig64
    nick: Nick
    port: Port
    v: int
    caps: Annotated[list[Cap], msgspec.Meta(max_length=limits.MAX_CAPS)] = []


# --- transport frames -------------------------------------------------------


class Chat(msgspec.Struct, frozen=True, tag_field="t", tag="chat", omit_defaults=True):
    """A signed group message: `body` is an encoded ChatBody, `sig` its author's signature.

    `hist` marks a message sent by history sync rather than live: it is stored
    and shown but not relayed (peers get history from their own sync). `relays`
    counts the nodes that passed this copy on before its sender sent it (0: from
    its author); outside the signature, so only a hint: the mesh relays a copy
    eagerly only within limits.MESH_MAX_HOPS links of its author (docs/mesh.md).
    """

    body: Annotated[bytes, msgspec.Meta(max_length=limits.MAX_FRAME)]
    sig: Sig64
    hist: bool = False
    relays: Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_RELAYS)] = 0


class Ping(msgspec.Struct, frozen=True, tag_field="t", tag="ping"):
    """Keepalive probe; answered by a Pong with the same n."""

    n: U64


class Pong(msgspec.Struct, frozen=True, tag_field="t", tag="pong"):
    """Keepalive answer."""

    n: U64


class NickChange(msgspec.Struct, frozen=True, tag_field="t", tag="nick"):
    """The sender's new nick (authenticated by the channel)."""

    nick: Nick


class Bye(msgspec.Struct, frozen=True, tag_field="t", tag="bye"):
    """The sender closes the connection; `reason` is a short code such as `quit`."""

    reason: Annotated[str, msgspec.Meta(max_length=64)]


class Vector(msgspec.Struct, frozen=True, tag_field="t", tag="vec"):
    """What the sender holds of a room: author peer id -> highest contiguous seq.

    Sent when a connection opens, after new messages were stored (batched) and
    periodically; it is both the anti-entropy summary and the delivery receipt.
    """

    room: Room
    have: Annotated[dict[PeerIdStr, U64], msgspec.Meta(max_length=limits.MAX_VECTOR_AUTHORS)]


class Want(msgspec.Struct, frozen=True, tag_field="t", tag="want"):
    """Ask for the messages lo..hi (inclusive) of one author in a room (gap repair)."""

    room: Room
    author: PeerIdStr
    lo: U64
    hi: U64


class Floor(msgspec.Struct, frozen=True, tag_field="t", tag="floor"):
    """The sender offers no history of this author below seq: do not wait for it."""

    room: Room
    author: PeerIdStr
    seq: U64


class RoomAnnounce(msgspec.Struct, frozen=True, array_like=True):
    """One room the sender has joined; `kcv` is always sent empty (kept for compatibility:
    a key check value let anyone test passphrases offline; members prove the passphrase
    to each other with `admit`, docs/protocol.md section 28)."""

    room: Room
    kcv: Annotated[bytes, msgspec.Meta(max_length=16)] = b""


class Rooms(msgspec.Struct, frozen=True, tag_field="t", tag="rooms"):
    """Every room the sender has joined (sent on connect and after each join or leave)."""

    joined: Annotated[list[RoomAnnounce], msgspec.Meta(max_length=limits.MAX_ROOMS)]


class Admit(msgspec.Struct, frozen=True, tag_field="t", tag="admit"):
    """One step of the passphrase proof between two members of a private room (section 28):
    step 1 carries a SPAKE2 message, step 2 a key confirmation."""

    room: Room
    step: Annotated[int, msgspec.Meta(ge=1, le=2)]
    data: Annotated[bytes, msgspec.Meta(max_length=limits.ADMIT_MAX_DATA_BYTES)]


# --- presence (docs/protocol.md section 23) ----------------------------------

PresenceAddr = Annotated[str, msgspec.Meta(min_length=3, max_length=limits.PRESENCE_MAX_ADDR_CHARS)]


class SignedPresence(msgspec.Struct, frozen=True, array_like=True):
    """One presence record: `body` an encoded PresenceBody, `sig` its author's signature."""

    body: Annotated[bytes, msgspec.Meta(max_length=limits.PRESENCE_MAX_BYTES)]
    sig: Sig64


class Presence(msgspec.Struct, frozen=True, tag_field="t", tag="pres"):
    """Presence records of members (the sender's own or forwarded), each signed by its author."""

    recs: Annotated[
        list[SignedPresence], msgspec.Meta(min_length=1, max_length=limits.PRESENCE_PER_FRAME)
    ]


class PublishedKeys(msgspec.Struct, frozen=True, array_like=True):
    """An author's Olm identity and fallback keys and its identity's signature of them
    (OLM_KEYS_CONTEXT + ident + fb), as carried in presence records and mail (26.1)."""

    ident: Key32
    fb: Key32
    sig: Sig64


class PresenceBody(msgspec.Struct, frozen=True, array_like=True):
    """The signed content of a presence record (see protocol/presence.py).

    `seq` is the author's clock in ms, strictly increasing per author; `expires` is a
    Unix time in seconds, at most seq / 1000 + PRESENCE_TTL_S; `gone` is a signed leave.
    """

    author: Key32
    nick: Nick
    seq: U64
    expires: U64
    gone: bool
    rooms: Annotated[list[RoomAnnounce], msgspec.Meta(max_length=limits.PRESENCE_MAX_ROOMS)]
    addrs: Annotated[list[PresenceAddr], msgspec.Meta(max_length=limits.PRESENCE_MAX_ADDRS)]
    #: The author's signed Olm keys (docs/protocol.md 26.1): a first DM mailed to it while
    #: it is offline starts a session from its fallback key. Optional (older records lack it).
    okeys: PublishedKeys | None = None


class _PresenceBodyWithoutKeys(msgspec.Struct, frozen=True, array_like=True):
    """PresenceBody without its optional last field: a record without keys is encoded as
    before it existed (seven elements, no trailing nil; msgspec writes every field)."""

    author: bytes
    nick: str
    seq: int
    expires: int
    gone: bool
    rooms: list[RoomAnnounce]
    addrs: list[str]


def encode_presence(body: PresenceBody) -> bytes:
    """Encode a presence record body (without `okeys` when it has none)."""
    if body.okeys is not None:
        return encode(body)
    return encode(
        _PresenceBodyWithoutKeys(
            body.author, body.nick, body.seq, body.expires, body.gone, body.rooms, body.addrs
        )
    )


# --- file transfer (docs/files.md) --------------------------------------------

Fid = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
Reason = Annotated[str, msgspec.Meta(max_length=64)]


class FileWho(msgspec.Struct, frozen=True, tag_field="t", tag="fwho"):
    """Who holds file `fid` whole? Holders answer FileHave."""

    fid: Fid


class FileHave(msgspec.Struct, frozen=True, tag_field="t", tag="fhave"):
    """The sender holds file `fid` whole and will serve its chunks to us."""

    fid: Fid


class FileHashesReq(msgspec.Struct, frozen=True, tag_field="t", tag="fhreq"):
    """Send the chunk hashes of `fid` starting at chunk `lo`."""

    fid: Fid
    lo: U64


class FileHashes(msgspec.Struct, frozen=True, tag_field="t", tag="fhash"):
    """SHA-256 digests of chunks lo, lo+1, ... of `fid`, concatenated."""

    fid: Fid
    lo: U64
    hashes: Annotated[bytes, msgspec.Meta(max_length=32 * limits.FILE_HASHES_PER_FRAME)]


class FileGet(msgspec.Struct, frozen=True, tag_field="t", tag="fget"):
    """Send chunk `idx` of `fid` (answered by FileData pieces in order, or FileNak)."""

    fid: Fid
    idx: U64


class FileData(msgspec.Struct, frozen=True, tag_field="t", tag="fdata"):
    """Bytes of chunk `idx` of `fid` starting `off` bytes into the chunk."""

    fid: Fid
    idx: U64
    off: U64
    #: A view into the decrypted frame (no copy); msgspec encodes it as bytes.
    data: Annotated[memoryview, msgspec.Meta(max_length=limits.FILE_PIECE)]


class FileNak(msgspec.Struct, frozen=True, tag_field="t", tag="fnak"):
    """Chunk `idx` of `fid` will not come from the sender; `reason` is a `FileRefusal` code.

    Any short str decodes (an enum here would close the connection on a newer peer's code).
    """

    fid: Fid
    idx: U64
    reason: Reason


class FileEnd(msgspec.Struct, frozen=True, tag_field="t", tag="fend"):
    """The sender stops this transfer; `reason` is a `FileEndReason` code (or any short str)."""

    fid: Fid
    reason: Reason


# --- gossip mesh (docs/mesh.md) -----------------------------------------------

#: One message id in a mesh frame: [author peer id, seq] (the room is the frame's).
MeshId = tuple[PeerIdStr, U64]


class Graft(msgspec.Struct, frozen=True, tag_field="t", tag="graft"):
    """The sender adds us to its mesh of room (eager push); answered by a Prune if refused."""

    room: Room


class Prune(msgspec.Struct, frozen=True, tag_field="t", tag="prune"):
    """The sender drops us from its mesh of room; do not graft again for backoff_s seconds.

    `px` names other peers of the room we may dial instead (peer exchange).
    """

    room: Room
    px: Annotated[list[PeerIdStr], msgspec.Meta(max_length=limits.MESH_MAX_PX)] = []
    backoff_s: Annotated[int, msgspec.Meta(ge=0, le=limits.MESH_MAX_BACKOFF_S)] = 0


class IHave(msgspec.Struct, frozen=True, tag_field="t", tag="ihave"):
    """The sender holds these recent messages of room (lazy gossip); ask with IWant."""

    room: Room
    ids: Annotated[list[MeshId], msgspec.Meta(max_length=limits.MESH_MAX_IHAVE_IDS)]


class IWant(msgspec.Struct, frozen=True, tag_field="t", tag="iwant"):
    """Send these messages of room (announced by our IHave) as live chats."""

    room: Room
    ids: Annotated[list[MeshId], msgspec.Meta(max_length=limits.MESH_MAX_IWANT_IDS)]


class IDontWant(msgspec.Struct, frozen=True, tag_field="t", tag="idontwant"):
    """The sender holds these messages of room already: do not send them to it."""

    room: Room
    ids: Annotated[list[MeshId], msgspec.Meta(max_length=limits.MESH_MAX_IDONTWANT_IDS)]


class Choke(msgspec.Struct, frozen=True, tag_field="t", tag="choke"):
    """Stay in my mesh of room but stop pushing its messages to me: send IHave instead.

    Sent to a mesh peer whose copies nearly always arrive after another's (episub).
    """

    room: Room


class Unchoke(msgspec.Struct, frozen=True, tag_field="t", tag="unchoke"):
    """Push the messages of room to me again (undoes Choke)."""

    room: Room


MeshFrame = Graft | Prune | IHave | IWant | IDontWant | Choke | Unchoke

# --- relays (docs/protocol.md section 22, docs/reach.md "Relays") -------------------

RelayCode = Annotated[str, msgspec.Meta(max_length=64)]
#: Hello capability of a node that relays for others (`--relay`).
RELAY_CAP: Final = "relay/1"
#: Hello capability of a circuit connection: after the handshake it says only `cconn` or
#: `cacc` (to the relay) and gets `cok`/`cno`; then the stream is raw (section 22).
CIRCUIT_CAP: Final = "circuit/1"


class Reserve(msgspec.Struct, frozen=True, tag_field="t", tag="rsv"):
    """Ask the relay (over our ordinary connection to it) to hold a reservation for us."""


class ReserveOk(msgspec.Struct, frozen=True, tag_field="t", tag="rsvok"):
    """Reservation granted: until `expires` (Unix s), `ttl` s from now; circuits to us are
    limited to `max_bytes` per direction and `max_s` seconds (0: unlimited)."""

    expires: U64
    ttl: U64
    max_bytes: U64 = 0
    max_s: U64 = 0


class ReserveNo(msgspec.Struct, frozen=True, tag_field="t", tag="rsvno"):
    """Reservation refused; `reason` is a `RelayRefusal` code (or any short str)."""

    reason: RelayCode


class Connect(msgspec.Struct, frozen=True, tag_field="t", tag="cconn"):
    """On a fresh circuit connection to the relay: connect me to `target` (a peer id)."""

    target: PeerIdStr


class Incoming(msgspec.Struct, frozen=True, tag_field="t", tag="cinc"):
    """From the relay over a reservation: `src` wants a circuit to us; answer with Accept."""

    circuit: U64
    src: PeerIdStr


class Accept(msgspec.Struct, frozen=True, tag_field="t", tag="cacc"):
    """On a fresh circuit connection to the relay: I take circuit `circuit`."""

    circuit: U64


class CircuitOk(msgspec.Struct, frozen=True, tag_field="t", tag="cok"):
    """The circuit is spliced: the next byte on this TCP stream is the other end's.

    `max_bytes` per direction and `max_s` seconds are the circuit's limits (0: unlimited).
    """

    max_bytes: U64 = 0
    max_s: U64 = 0


class CircuitNo(msgspec.Struct, frozen=True, tag_field="t", tag="cno"):
    """No circuit; `reason` is a `RelayRefusal` code (or any short str)."""

    reason: RelayCode


RelayFrame = Reserve | ReserveOk | ReserveNo | Connect | Incoming | Accept | CircuitOk | CircuitNo
#: Frames after which a circuit connection's session stops reading: what follows is raw.
HANDOFF_FRAMES: Final = (Connect, Accept, CircuitOk, CircuitNo)


FileFrame = FileWho | FileHave | FileHashesReq | FileHashes | FileGet | FileData | FileNak | FileEnd

# --- reach: observed addresses and hole punching (docs/protocol.md, docs/reach.md) ----

Addr = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_ADDR_CHARS)]
Addrs = Annotated[list[Addr], msgspec.Meta(max_length=limits.MAX_PUNCH_ADDRS)]


class Observed(msgspec.Struct, frozen=True, tag_field="t", tag="obs"):
    """The address ("host:port") the sender sees us at; sent once after the handshake."""

    addr: Addr


class PunchConnect(msgspec.Struct, frozen=True, tag_field="t", tag="pcon"):
    """Hole punch attempt `n`: the sender's public addresses (observed, UPnP) to dial."""

    addrs: Addrs
    n: U64


class PunchSync(msgspec.Struct, frozen=True, tag_field="t", tag="psync"):
    """Attempt `n`: the punch initiator dials half a round trip after sending this; we dial now."""

    n: U64


ReachFrame = Observed | PunchConnect | PunchSync

# --- mailboxes (docs/protocol.md section 24, docs/dht.md "Mailboxes") -----------------

MailId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
MailIds = Annotated[list[MailId], msgspec.Meta(max_length=limits.MAILBOX_IDS_PER_FRAME)]


class MailItem(msgspec.Struct, frozen=True, array_like=True):
    """One sealed item for peer `to`, kept by a holder until `exp` (Unix s).

    `box` is sealed to `to` (crypto_box_seal) and holds a `MailInner`: the author,
    its signature and the frame travel inside, so a holder never learns who wrote
    it (only who deposited it). Its id is SHA-256(MAIL_CONTEXT + box)[:16].
    """

    to: Key32
    exp: U64
    box: Annotated[bytes, msgspec.Meta(max_length=limits.MAILBOX_MAX_BOX_BYTES)]


MailItems = Annotated[list[MailItem], msgspec.Meta(max_length=limits.MAILBOX_ITEMS_PER_FRAME)]


class MailPut(msgspec.Struct, frozen=True, tag_field="t", tag="mput"):
    """Keep these items (written by the sender) until their reader connects; answered by
    `mok` and/or `mno`."""

    items: MailItems


class MailOk(msgspec.Struct, frozen=True, tag_field="t", tag="mok"):
    """The holder keeps these items (ids)."""

    ids: MailIds


class MailNo(msgspec.Struct, frozen=True, tag_field="t", tag="mno"):
    """The holder does not keep these items; `reason` is a `MailRefusal` code (or any short str)."""

    ids: MailIds
    reason: Reason


class MailDeliver(msgspec.Struct, frozen=True, tag_field="t", tag="mail"):
    """Items held for us (the reader): answered by `mack` once they are stored."""

    items: MailItems


class MailAck(msgspec.Struct, frozen=True, tag_field="t", tag="mack"):
    """The reader has these items (ids): the holder deletes them."""

    ids: MailIds


MailFrame = MailPut | MailOk | MailNo | MailDeliver | MailAck


class MailInner(msgspec.Struct, frozen=True, array_like=True):
    """The sealed plaintext of a mail item: its author `frm`, `frm`'s signature `sig` of
    MAIL_CONTEXT + to + frm + exp (8 bytes big-endian) + frame, and `frame`: one encoded
    frame (a `chat` or a `vec`) if `olm` is false, else that frame inside the pair's Olm
    ratchet (a padded `pm` body of a `PrivateInner` of kind `mail`); then zero bytes
    padding a plain frame to a size bucket (an Olm one comes padded)."""

    frm: Key32
    sig: Sig64
    frame: bytes
    olm: bool = False
    pad: bytes = b""
    #: The author's signed Olm keys (an `olm` item): a reader that never met its author
    #: can open a pre-key message all the same (docs/protocol.md 26.6).
    okeys: PublishedKeys | None = None


# --- private messages over Olm (docs/protocol.md section 26) ---------------------


class OlmKeyRequest(msgspec.Struct, frozen=True, tag_field="t", tag="okreq"):
    """Send me your Olm keys with a fresh one-time key (answered by `okeys`)."""


class OlmKeys(msgspec.Struct, frozen=True, tag_field="t", tag="okeys", omit_defaults=True):
    """The sender's Olm identity key and fallback key, vouched for by `sig` (its identity's
    signature of OLM_KEYS_CONTEXT + ident + fb), and a one-time key (`otk`, or empty) that
    only this authenticated connection vouches for; `re`: the answer to an `okreq`."""

    ident: Key32
    fb: Key32
    sig: Sig64
    otk: Annotated[bytes, msgspec.Meta(max_length=32)] = b""
    re: bool = False


class PrivateMessage(msgspec.Struct, frozen=True, tag_field="t", tag="pm"):
    """An Olm message to the receiver alone, padded to a bucket (crypto/ratchet.py pad)."""

    d: Annotated[bytes, msgspec.Meta(max_length=limits.PM_MAX_BYTES)]


class PrivateInner(msgspec.Struct, frozen=True, array_like=True):
    """The plaintext of a `pm`: a kind (`chat`: an encoded chat frame) and its data."""

    kind: Annotated[str, msgspec.Meta(max_length=16)]
    data: Annotated[bytes, msgspec.Meta(max_length=limits.PM_MAX_INNER_BYTES)]


OlmFrame = OlmKeyRequest | OlmKeys | PrivateMessage


Frame = (
    Chat
    | Ping
    | Pong
    | NickChange
    | Bye
    | Vector
    | Want
    | Floor
    | Rooms
    | Presence
    | FileWho
    | FileHave
    | FileHashesReq
    | FileHashes
    | FileGet
    | FileData
    | FileNak
    | FileEnd
    | Graft
    | Prune
    | IHave
    | IWant
    | IDontWant
    | Choke
    | Unchoke
    | Observed
    | Reserve
    | ReserveOk
    | ReserveNo
    | Connect
    | Incoming
    | Accept
    | CircuitOk
    | CircuitNo
    | PunchConnect
    | PunchSync
    | MailPut
    | MailOk
    | MailNo
    | MailDeliver
    | MailAck
    | OlmKeyRequest
    | OlmKeys
    | PrivateMessage
    | Admit
)
SyncFrame = Vector | Want | Floor | Rooms
#: Frames a connection hands to the layers above it (history, mesh, files, members, mailbox);
#: one name, so a new kind is added in one place.
PeerFrame = (
    Chat | NickChange | SyncFrame | MeshFrame | FileFrame | Presence | MailFrame | OlmFrame | Admit
)
KNOWN_TAGS: Final = frozenset(
    {"chat", "ping", "pong", "nick", "bye", "vec", "want", "floor", "rooms", "pres"}
    | {"fwho", "fhave", "fhreq", "fhash", "fget", "fdata", "fnak", "fend"}
    | {"graft", "prune", "ihave", "iwant", "idontwant", "choke", "unchoke"}
    | {"rsv", "rsvok", "rsvno", "cconn", "cinc", "cacc", "cok", "cno"}
    | {"obs", "pcon", "psync"}
    | {"mput", "mok", "mno", "mail", "mack"}
    | {"okreq", "okeys", "pm"}
    | {"admit"}
)


class UnknownFrame(msgspec.Struct, frozen=True):
    """A well-formed frame of a type this version does not know; ignored."""

    tag: str


class _TagOnly(msgspec.Struct):
    t: str


# --- signed chat body -------------------------------------------------------


class ChatBody(msgspec.Struct, frozen=True, array_like=True):
    """The signed content of a chat message; its id is SHA-256 over the encoded body.

    `ts` is the author's clock in milliseconds since the Unix epoch; `seq`
    numbers the author's messages (per room). In a private conversation or a
    private room `text` is empty and `enc` holds the ciphertext (crypto/box.py).
    """

    room: Room
    author: Key32
    nick: Nick
    ts: U64
    seq: U64
    text: Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT_BYTES)]
    enc: Annotated[bytes, msgspec.Meta(max_length=limits.MAX_ENC_BYTES)] = b""


_encoder = msgspec.msgpack.Encoder()
_frame_decoder = msgspec.msgpack.Decoder(Frame)
_tag_decoder = msgspec.msgpack.Decoder(_TagOnly)
_prelude_decoder = msgspec.msgpack.Decoder(Prelude)
_hello_decoder = msgspec.msgpack.Decoder(Hello)
_body_decoder = msgspec.msgpack.Decoder(ChatBody)
_presence_decoder = msgspec.msgpack.Decoder(PresenceBody)


def encode(obj: msgspec.Struct) -> bytes:
    """Encode any wire struct to MessagePack."""
    return _encoder.encode(obj)


def decode_frame(data: bytes) -> Frame | UnknownFrame:
    """Decode one transport frame; raise RemoteProtocolError if it is malformed."""
    try:
        frame: Frame = _frame_decoder.decode(data)
        return frame
    except msgspec.DecodeError as exc:
        try:
            tag = _tag_decoder.decode(data).t
        except msgspec.DecodeError:
            raise RemoteProtocolError(f"malformed frame: {exc}", Code.MALFORMED_FRAME) from None
        if tag not in KNOWN_TAGS:
            return UnknownFrame(tag[:32])
        raise RemoteProtocolError(f"malformed {tag!r} frame: {exc}", Code.MALFORMED_FRAME) from None


def decode_prelude(data: bytes) -> Prelude:
    """Decode the message-1 payload; raise RemoteProtocolError if malformed."""
    try:
        return _prelude_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"malformed prelude: {exc}", Code.MALFORMED_HANDSHAKE) from None


def decode_hello(data: bytes) -> Hello:
    """Decode a hello payload; raise RemoteProtocolError if malformed."""
    try:
        return _hello_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"malformed hello: {exc}", Code.MALFORMED_HANDSHAKE) from None


def decode_body(data: bytes) -> ChatBody:
    """Decode a chat body; raise RemoteProtocolError if malformed."""
    try:
        body = _body_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"malformed chat body: {exc}", Code.MALFORMED_FRAME) from None
    if len(body.text.encode()) > limits.MAX_TEXT_BYTES:
        raise RemoteProtocolError("chat text too long", Code.TOO_LARGE)
    if not body.text and not body.enc:
        raise RemoteProtocolError("empty chat message", Code.MALFORMED_FRAME)
    return body


def decode_presence(data: bytes) -> PresenceBody:
    """Decode a presence record body; raise RemoteProtocolError if it is malformed."""
    try:
        return _presence_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"malformed presence: {exc}", Code.MALFORMED_FRAME) from None


# --- timestamps on receipt (hardening) ----------------------------------------

#: ts_verdict: outside the fixed range, the same on every peer (never accepted).
BAD_TIMESTAMP: Final = Code.BAD_TIMESTAMP
#: ts_verdict: more than MAX_TS_AHEAD_MS ahead of the receiver's clock (not accepted yet).
TS_AHEAD: Final = "ts_ahead"


def ts_verdict(ts_ms: int, now_ms: int) -> str | None:
    """Return why a received chat's `ts` is not acceptable (BAD_TIMESTAMP, TS_AHEAD) or None.

    The fixed range is the same on every peer, so no compatible peer stores, relays or
    offers a message another refuses; the receiver's clock only defers a message.
    """
    if not limits.MIN_TS_MS <= ts_ms < limits.MAX_TS_MS:
        return BAD_TIMESTAMP
    if ts_ms - now_ms > limits.MAX_TS_AHEAD_MS:
        return TS_AHEAD
    return None


def clamp_ts_s(ts: float) -> float:
    """Return a time in seconds (as events carry it) clamped into the accepted range (NaN: min).

    For times stored before the range was checked on receipt: shown, never raising.
    """
    if math.isnan(ts):
        return limits.MIN_TS_MS / 1000
    return min(max(ts, limits.MIN_TS_MS / 1000), limits.MAX_TS_MS / 1000)
