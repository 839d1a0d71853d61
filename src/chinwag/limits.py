"""Every bound in chinwag, with its unit and the attack or accident it stops.

Model: python-zeroconf's const.py. Change a bound here, nowhere else.
"""

# --- wire -------------------------------------------------------------------
#: Bytes in one Noise message (handshake or transport), set by the Noise spec.
#: The 2-byte length prefix cannot express more, so a peer cannot make us buffer more per frame.
MAX_NOISE_MESSAGE = 65_535
#: Bytes of AEAD tag added to each Noise transport message.
NOISE_TAG = 16
#: Bytes of plaintext in one application frame (one Noise transport message).
MAX_FRAME = MAX_NOISE_MESSAGE - NOISE_TAG
#: Bytes of handshake payload we accept; stops a peer from making us parse big blobs pre-auth.
MAX_HANDSHAKE_PAYLOAD = 1_024

# --- content ----------------------------------------------------------------
#: Bytes (UTF-8) of one chat message text; refuses oversized messages at the sender.
MAX_TEXT_BYTES = 4_096
#: Characters in a nick; keeps the display and every frame small.
MAX_NICK_CHARS = 32
#: Characters in a room name.
MAX_ROOM_CHARS = 64
#: Capability strings in a hello, and characters in each; stops hello bloat.
MAX_CAPS = 16
MAX_CAP_CHARS = 32

# --- connections ------------------------------------------------------------
#: Connected peers at once; stops a flood of identities from exhausting memory and fds.
MAX_PEERS = 64
#: Connections still in their handshake at once; stops a SYN/half-open flood from starving peers.
MAX_PENDING_HANDSHAKES = 32
#: Seconds a connection may take to finish its handshake; stops half-open connections.
HANDSHAKE_TIMEOUT_S = 5.0
#: Seconds of silence after which we send a ping.
KEEPALIVE_INTERVAL_S = 3.0
#: Seconds of silence after which a peer is declared dead (documented: detection within 10 s).
DEAD_PEER_TIMEOUT_S = 10.0
#: Bytes queued for one peer before our own sends wait for it to drain (back-pressure).
SEND_HIGH_WATER = 1 << 20
#: Bytes queued for one peer before it is disconnected as too slow; stops a
#: reader that never reads from growing our memory without bound.
MAX_PENDING_BYTES = 16 << 20
#: Seconds our own send waits for a congested peer before giving up on it.
SEND_DRAIN_TIMEOUT_S = 10.0
#: Seconds a TCP connect may take before the dial counts as failed.
CONNECT_TIMEOUT_S = 3.0
#: Seconds a stopping node waits for its peers to end their side of the closed connections
#: (they are half-closed, so a goodbye is not lost) before it drops the sockets.
CLOSE_FINISH_S = 1.0

# --- reconnects -------------------------------------------------------------
#: Seconds of the first reconnect delay; doubles per failure.
RECONNECT_BASE_S = 0.5
#: Seconds of the longest reconnect delay.
RECONNECT_CAP_S = 30.0
#: Fraction of random jitter added to each reconnect delay (avoids thundering herds).
RECONNECT_JITTER = 0.25
#: Failures counted for back-off; beyond this the delay stays at the cap.
MAX_BACKOFF_STEPS = 16
#: Seconds a connection must have lasted for its back-off to reset.
STABLE_CONNECTION_S = 30.0
#: Seconds the higher peer id waits before dialling a discovered peer itself
#: (the lower id dials first; this only matters when one direction is blocked).
DIAL_YIELD_S = 1.0

# --- discovery --------------------------------------------------------------
#: Default UDP port of discovery beacons.
DISCOVERY_PORT = 47474
#: Default TCP listen port (falls back to any free port if taken).
DEFAULT_TCP_PORT = 47475
#: Bytes of one beacon datagram we parse; larger datagrams are dropped unread.
MAX_BEACON_BYTES = 512
#: Seconds between periodic beacons, before jitter.
BEACON_INTERVAL_S = 3.0
#: Fraction of jitter on the beacon interval.
BEACON_JITTER = 0.3
#: Seconds between two immediate "answer" beacons; stops a beacon flood from making us flood.
BEACON_ANSWER_MIN_GAP_S = 0.2
#: Discovered-but-unconnected peers remembered; stops spoofed beacons from growing memory.
MAX_DISCOVERED = 256
#: Seconds after which an unconnected discovered peer that stopped beaconing is forgotten.
FORGET_DISCOVERED_S = 30.0

# --- forwarding -------------------------------------------------------------
#: Message ids remembered for dedup; stops unbounded growth while still catching loops.
SEEN_IDS = 100_000
#: Authors remembered as heard through another peer (the terminal UI's peer list).
MAX_RELAYED_REMEMBERED = 1_000
#: Seconds after its last relayed message an author stops being listed as reachable.
RELAYED_FRESH_S = 600.0
# --- rooms and private messages ---------------------------------------------
#: Rooms one node may join (and announce); stops announcement bloat.
MAX_ROOMS = 256
#: Bytes of ciphertext in one private message or private room message
#: (two sealed copies of a MAX_TEXT_BYTES text plus overhead).
MAX_ENC_BYTES = 2 * MAX_TEXT_BYTES + 256
#: Characters of a passphrase.
MAX_PASSPHRASE_CHARS = 1_024

# --- history and sync -------------------------------------------------------
#: Authors in one vector frame (about 63 bytes each: must fit in MAX_FRAME); stops a
#: peer from making us hold a huge map.
MAX_VECTOR_AUTHORS = 1_000
#: Messages of one author (per room) offered to a peer that lacks them: a new
#: node on a busy network gets the recent past, not everything (documented default).
HISTORY_OFFER = 10_000
#: Messages read from the store and sent per batch of a sync push (then we wait for the socket).
SYNC_BATCH = 500
#: Seqs one Want may ask for; larger ranges are clipped.
MAX_WANT_RANGE = 10_000
#: Authors tracked per room; a floor may not add authors beyond it (stops fake-author growth).
MAX_AUTHORS_PER_ROOM = 10_000
#: Private conversations a node keeps; beyond it, messages opening a new one are dropped
#: (stops strangers from growing our rooms and the vectors we send on every connect).
MAX_CONVERSATIONS = 1_000
#: Sync requests (vectors + wants) a peer may send per second, sustained, and in a burst;
#: a peer that exceeds them is disconnected (stops sync-request floods).
SYNC_REQUESTS_PER_S = 200.0
SYNC_REQUESTS_BURST = 2_000.0
#: Seconds between periodic vector exchanges with each peer (anti-entropy safety net).
SYNC_INTERVAL_S = 15.0
#: Seconds new messages are batched before our updated vector (receipt) goes out.
VECTOR_DELAY_S = 0.1
#: Seconds between WAL checkpoints (done in a background thread).
CHECKPOINT_INTERVAL_S = 1.0
#: Seconds peers' vectors (receipts) are kept in memory before being saved, in one batch.
RECEIPT_SAVE_DELAY_S = 2.0
#: Seconds between two vectors sent to a peer in reply to one showing it is ahead of us.
VECTOR_REPLY_GAP_S = 1.0
#: Seconds a gap may stay before we ask peers to fill it (a sync push may be filling it).
GAP_REPAIR_DELAY_S = 0.5
#: Held-but-not-contiguous seqs tracked per author; beyond it, the highest are forgotten
#: (still stored; counted again when re-sent) (stops memory growth from sparse seqs).
MAX_ABOVE_PER_AUTHOR = 100_000
#: Messages returned by one history or search command.
MAX_HISTORY = 10_000

# --- sync hardening against hostile peers -------------------------------------
#: Orphan authors (of whom we hold nothing contiguous, only seqs across a hole) per room;
#: a message that would add one beyond it is refused (not stored, not relayed): stops fresh
#: keys with made-up seqs from filling every node with gaps no one can repair (want storms).
MAX_ORPHAN_AUTHORS_PER_ROOM = 256
#: Orphan authors one sending peer may introduce into one room (see above); a peer cannot
#: use up the room's whole allowance alone.
MAX_ORPHAN_AUTHORS_PER_PEER = 64
#: Wants we send one peer per second, sustained, and in a burst: a tenth of what the peer
#: tolerates of all sync frames (SYNC_REQUESTS_*), so our gap repair never gets us cut off.
WANTS_PER_S = 20.0
WANTS_BURST = 200.0
#: Times one gap (an unchanged first missing range) is asked for before we give up on it:
#: stops endless wants for holes no peer can fill (a new message of the author asks anew).
GAP_MAX_ASKS = 3
#: Seconds before a want that no peer had budget for is tried again.
WANT_RETRY_S = 1.0
#: Authors remembered as equivocating (each warned about once); stops alert floods.
MAX_EQUIVOCATORS = 1_000
#: Failed WAL checkpoints in a row after which the failure is reported to the user (and
#: logged again): a checkpointer that silently stops lets the WAL grow without bound.
CHECKPOINT_FAILURES_REPORTED = 60
#: Peers whose receipts (vectors) we keep per room, in memory and in the store; beyond it the
#: least recently heard peer that is not connected is forgotten (stops fresh identities that
#: each send a vector from growing memory and the store without bound).
MAX_RECEIPT_PEERS_PER_ROOM = 256
#: Bytes of chat messages (body + signature) one connected peer may make us store per second,
#: sustained, and in a burst; beyond it its messages are refused (not stored, not relayed) until
#: the budget refills, and sync fetches them again later. Stops one peer from filling the disk
#: at line rate. Honest traffic stays far below it (the benchmarks: ~5 MB/s, 2.5 MB catch-up).
STORE_BYTES_PER_S = 8 << 20
STORE_BYTES_BURST = 256 << 20
#: How many times the store budget above a known peer gets (one we met directly in an earlier
#: run, or whose identity the user verified): strangers are refused first.
KNOWN_PEER_STORE_FACTOR = 4
#: Seconds at most that our own new messages wait, after a start that may have lost some of
#: our sent messages (power cut, deleted store), for peers to give them back, so that we never
#: number a new message with a seq we already used (peers would refuse it as equivocation).
UNSURE_MAX_WAIT_S = 10.0
#: Own messages held while we wait (above); more are refused with an error (stops a script
#: that sends in a loop from growing memory while no peer is around).
MAX_HELD_OWN = 10_000

# --- file sharing -----------------------------------------------------------
#: Bytes of one chunk: the unit of hashing, requesting, resuming and re-fetching.
FILE_CHUNK = 1 << 20
#: Bytes of file data in one frame (a chunk travels as pieces that fit MAX_FRAME).
FILE_PIECE = 64_000
#: Chunk hashes (32 bytes each) in one hash-list frame.
FILE_HASHES_PER_FRAME = 1_900
#: Chunks requested from one source and not yet received: bounds the receiver's
#: in-flight data (and so memory) per source whatever the file size, and how much
#: file data a chat message can queue behind (2 MiB: about 6 ms at 350 MB/s).
FILE_WINDOW = 2
#: Chunks received and waiting for their check and write: bounds memory when the
#: disk is slower than the network (new requests wait).
FILE_MAX_CHECKING = 4
#: Sources one download fetches from at once.
FILE_MAX_SOURCES = 4
#: Chunk requests queued by one peer at our side; more are refused ("busy").
FILE_MAX_QUEUED = 64
#: Chunks failing their hash from one source before it is dropped as a source.
FILE_MAX_BAD_CHUNKS = 3
#: Seconds a requested chunk may take before it is asked of another source.
FILE_REQUEST_TIMEOUT_S = 20.0
#: Seconds between asks for sources while a download has fewer than it could use.
FILE_ASK_INTERVAL_S = 3.0
#: Seconds with no source before a download is reported stalled (it keeps trying).
FILE_STALL_S = 30.0
#: Seconds between two progress refreshes of a download with sources while no chunk
#: completes (its shown rate falls); its other timers fire at their own deadlines.
FILE_TICK_S = 1.0
#: Seconds a requested page of chunk digests may take before another source is asked.
FILE_HASHES_TIMEOUT_S = 10.0
#: Seconds (at least) over which a transfer's rate is measured before smoothing.
FILE_RATE_WINDOW_S = 0.5
#: Seconds between two progress events of one transfer.
FILE_PROGRESS_INTERVAL_S = 0.25
#: Bytes of a file offer (largest file we offer or accept): 1 TiB.
FILE_MAX_SIZE = 1 << 40
#: Files we serve that are open at once; the least recently read idle one is closed
#: to open another (stops a peer asking for many files from exhausting our fds).
FILE_MAX_OPEN = 32
#: Chunks of one offered file; an offer with more (a tiny chunk size) is not an offer.
FILE_MAX_CHUNKS = 1 << 20
#: Characters of an offered file name after sanitising.
FILE_MAX_NAME_CHARS = 200
#: Transfers (offers included) remembered; the oldest finished ones are forgotten beyond it
#: (the oldest unanswered offers when none is finished).
FILE_MAX_KNOWN = 10_000

#: Distinct unknown frame types logged at info level; later ones go to debug (stops log floods).
MAX_UNKNOWN_TAGS_LOGGED = 64

# --- local API --------------------------------------------------------------
#: Bytes of one JSON-lines command; a longer line is refused with an error.
MAX_COMMAND_LINE = 64 * 1024

# --- hardening: timestamps, discovery, peers, conversations, warnings ---------
#: Milliseconds since the epoch: the earliest chat `ts` accepted (2000-01-01T00:00:00Z);
#: an older one is never accepted (stops messages pinned above all history on every peer).
MIN_TS_MS = 946_684_800_000
#: Milliseconds since the epoch: chat `ts` must be below this (2100-01-01T00:00:00Z); stops a
#: stamp past year 9999 from making every date rendering raise (a TUI that died at each start).
MAX_TS_MS = 4_102_444_800_000
#: Milliseconds a chat `ts` may be ahead of the receiver's clock; a message dated later is not
#: accepted yet (stops a message pinned below all others for decades).
MAX_TS_AHEAD_MS = 86_400_000
#: Keys (peer and kind of fault) remembered as already warned about; repeats go to debug
#: (stops a peer from flooding the log by repeating what caused a warning).
MAX_WARNED_KEYS = 1_024
#: Strangers (peers only heard in beacons) one source address may claim; stops one host
#: from filling the discovered-peer table with throwaway ids.
MAX_IDS_PER_HOST = 16
#: Seconds without a beacon after which a stranger may be evicted for a newcomer when the
#: table is full (a live peer beacons every 2.1-3.9 s); stops a flood evicting live peers.
DISCOVERED_IDLE_S = 5.0
#: First dials of strangers per second, sustained, and in a burst; later ones wait
#: (stops a beacon flood from making us dial anyone, fast).
NEW_DIALS_PER_S = 4.0
NEW_DIALS_BURST = 8.0
#: Seconds without a chat or file frame after which a connected peer (not verified) may be
#: replaced at the peer limit by a newcomer of its own rank (stops 64 throwaway ids from
#: holding every slot for good).
PEER_IDLE_EVICT_S = 60.0
#: Inbound connections in their handshake from one source address; stops one host from
#: holding every handshake slot with silent sockets.
MAX_PENDING_PER_HOST = 8
#: Inbound handshakes one source address may start per second, sustained, and in a burst;
#: stops a host from making us do Noise and Ed25519 work for throwaway identities at will.
HANDSHAKES_PER_HOST_PER_S = 10.0
HANDSHAKES_PER_HOST_BURST = 30.0
#: Source addresses whose handshake rate is tracked; the least recently seen is forgotten
#: (bounds the memory a flood of source addresses can take).
MAX_TRACKED_HOSTS = 1_024
#: Seconds between two nick-change notices of one peer; changes in between are shown as
#: one at the end of the gap (stops a peer from flooding the UI with nick changes).
NICK_CHANGE_MIN_GAP_S = 10.0

# --- web UI (ui/web) ----------------------------------------------------------
#: Default TCP port of the local web UI (`--web-port`), on 127.0.0.1 unless `--web-bind`.
WEB_DEFAULT_PORT = 47480
#: Bytes of randomness in the web token (256 bits): guessing it is hopeless.
WEB_TOKEN_BYTES = 32
#: Browser sessions (cookies) remembered at once; the oldest is forgotten beyond it
#: (stops a token holder, or a loop of logins, from growing the session table without end).
WEB_MAX_SESSIONS = 64
#: Seconds a browser session stays valid after its login (then open the printed link again).
WEB_SESSION_TTL_S = 30 * 24 * 3600.0
#: WebSocket clients (tabs) connected at once; more are refused (stops fd/memory exhaustion).
WEB_MAX_CLIENTS = 16
#: Bytes of one WebSocket message from the page; a bigger one closes that socket (1009).
WEB_MAX_WS_MESSAGE = MAX_COMMAND_LINE
#: Events kept for replay to a reconnecting page; an older `since` gets `resync` instead.
WEB_REPLAY_EVENTS = 5_000
#: Characters of JSON (about bytes) the replay ring holds at most (4 KiB messages add up).
WEB_REPLAY_CHARS = 4 * (1 << 20)
#: Event frames queued for one tab; a tab that falls this far behind gets `resync`
#: (and is closed if it is still stuck) so a slow or dead tab never holds the node's memory.
WEB_CLIENT_QUEUE = 10_000
#: Characters of JSON (about bytes) queued for one tab, the same rule in size (a frame
#: bigger than this still goes out when the queue is empty: a long history answer).
#: At least WEB_REPLAY_CHARS, so a full replay always fits.
WEB_CLIENT_QUEUE_CHARS = 8 * (1 << 20)
#: Seconds between WebSocket pings; a tab that does not answer one in time is closed.
WEB_HEARTBEAT_S = 20.0
#: Seconds a tab's socket (or a request under way, such as an upload) may take to finish
#: when closing before it is cut (a dead or stuck tab would otherwise hold the stop for ever).
WEB_CLOSE_TIMEOUT_S = 2.0
#: Bytes of one file uploaded by drag and drop (stops a page filling the disk in one go).
WEB_MAX_UPLOAD = 16 * (1 << 30)
#: Uploads running at once (each holds a file descriptor and disk bandwidth).
WEB_MAX_UPLOADS = 4
#: Bytes of an HTTP request body read into memory (small JSON bodies such as /open-folder).
WEB_MAX_BODY = 64 * 1024
#: Commands from one tab not yet finished (sends being committed); reading pauses beyond it.
WEB_MAX_IN_FLIGHT = 2_000

# --- leftovers: bounded per-run caches and the web socket's first message --------------

#: Seconds a WebSocket may stay open without sending `resume` (the page sends it at
#: once); then it is closed (stops a client holding sockets that are never counted as tabs).
WEB_RESUME_TIMEOUT_S = 10.0
#: File names the line UI remembers (file id -> name), least recently used dropped first
#: (stops a flood of file offers growing the line UI's memory for the whole run).
LINE_MAX_FILE_NAMES = 1_000
#: Authors whose last stored nick history.py remembers (saves a store write per message),
#: least recently used dropped first (stops a flood of fresh authors growing it per run).
HISTORY_MAX_AUTHOR_NICKS = 4_096

# --- natlab: the UPnP-IGD port mapping (net/upnp.py) --------------------------------------

#: Milliseconds miniupnpc waits for SSDP answers per search (a silent LAN costs this once
#: or twice per try; stops a start on a LAN without an IGD holding a thread for long).
UPNP_DISCOVER_MS = 1_000
#: Seconds of the lease asked for; the mapping is renewed at half of it (a node that dies
#: without deleting leaves an open port on the router for at most this long).
UPNP_LEASE_S = 3_600
#: Seconds between tries when no IGD answered or the mapping failed (a LAN without UPnP
#: costs one SSDP search per this interval, not a storm).
UPNP_RETRY_S = 600.0
#: External ports tried for one mapping: ours first, then random ones (stops a router full
#: of conflicting mappings keeping the worker busy for ever).
UPNP_PORT_TRIES = 4
#: Seconds stop() waits for the router to delete our mapping (a router gone silent must not
#: hold the node's exit).
UPNP_DELETE_S = 3.0

# --- reach: invites, contacts, observed addresses (issue 14, invite) -----------------
#: Seconds an invite code stays valid after it is made (a leaked old code stops working).
INVITE_TTL_S = 7 * 24 * 3600
#: Characters of an invite code read at all (stops a pasted megabyte from being decoded).
MAX_INVITE_CHARS = 2_000
#: Addresses in one invite (and stored per contact): stops a code making us dial a list.
MAX_INVITE_ADDRS = 8
#: Relays in one invite (and stored per contact), for the same reason.
MAX_INVITE_RELAYS = 4
#: Contacts kept; adding more is refused (each is dialled at every start, with back-off).
MAX_CONTACTS = 256
#: Peers whose report of our address is kept (the oldest report is dropped beyond it):
#: bounds what throwaway identities can make us store.
MAX_OBS_REPORTERS = 64
#: Seconds a report of our address counts; a network change makes the old ones wrong.
OBS_MAX_AGE_S = 3_600.0
#: Distinct reporters (from different networks, below) needed to believe a public address,
#: and to call the NAT symmetric: one liar alone cannot make us publish an address.
OBS_CONFIRMATIONS = 2
#: Reporters in the same IPv4 /24 (IPv6 /48) count as one: one host with many addresses
#: cannot confirm a lie by itself.
OBS_GROUP_PREFIX_V4 = 24
OBS_GROUP_PREFIX_V6 = 48
#: Public addresses of ours put in an invite and persisted for the next run.
MAX_PUBLIC_ADDRS = 4
#: Seconds between two looks at the interface addresses (a changed network redials contacts).
NETWORK_POLL_S = 3.0
#: Seconds a contact's direct addresses get before its relays are tried too.
CONTACT_RELAY_DELAY_S = 0.25
#: Seconds between two redials of the contacts caused by a new public address (peers that
#: flip their reports of our address cannot make us dial every contact again and again).
PUBLIC_CHANGE_REDIAL_MIN_S = 10.0

# --- reach review: contacts reached through relays (issue 14, reach-review) -----------
#: Seconds before the first retry of an offline contact's relays after every one failed;
#: doubled each failed round. A contact behind a NAT comes back once its relay does.
CONTACT_RELAY_RETRY_BASE_S = 2.0
#: Most seconds between two rounds of circuit dials to an offline contact's relays; stops
#: an offline contact (or a dead relay) costing us a connection attempt more often.
CONTACT_RELAY_RETRY_CAP_S = 120.0
#: Circuits (open or being set up) asked for from one IP address, and circuit connections
#: from one IP address not yet past `cconn`/`cacc`; stops one host taking every circuit
#: (or setup slot) of a relay by dialling its own reserved ids from fresh ids.
RELAY_MAX_CIRCUITS_PER_IP = 16

# --- relays: reservations and circuits (issue 14; docs/reach.md "Relays") -------------
# libp2p circuit v2's defaults as the start. Grants are counted over the last
# RELAY_RESERVATION_TTL_S (a renewal is a grant), as go-libp2p's constraints do.

#: Seconds a reservation lasts unless renewed; a peer that vanished stops holding a slot.
RELAY_RESERVATION_TTL_S = 3_600.0
#: Reservation grants in the last TTL, in all; stops strangers filling the relay's memory.
RELAY_MAX_RESERVATIONS = 128
#: Grants to one peer id in the last TTL; stops one peer churning reservations (each costs work).
RELAY_MAX_RESERVATIONS_PER_PEER = 4
#: Grants to one IP address in the last TTL; stops one host taking every slot with fresh ids.
RELAY_MAX_RESERVATIONS_PER_IP = 8
#: Seconds a limited circuit may stay open; stops a stranger using the relay as a free tunnel.
RELAY_CIRCUIT_MAX_S = 120.0
#: Bytes a limited circuit carries each way; stops bulk transfer through a stranger's relay.
RELAY_CIRCUIT_MAX_BYTES = 128 * 1024
#: Circuits (open or being set up) one peer takes part in; stops one peer hogging the relay.
RELAY_MAX_CIRCUITS_PER_PEER = 16
#: Circuits (open or being set up) in all; bounds the relay's sockets and buffers.
RELAY_MAX_CIRCUITS = 64
#: Seconds between Connect and the target's Accept, and for a circuit connection to say
#: Connect/Accept after its handshake; stops half-made circuits holding sockets.
RELAY_CIRCUIT_SETUP_S = 5.0
#: Bytes read from one side of a circuit before reading pauses until the other side drained.
RELAY_SPLICE_HIGH_WATER = 256 * 1024
#: Relays a client keeps a reservation at; stops a long contact list making us dial everyone.
RELAY_MAX_KNOWN = 8
#: Fraction of a reservation's TTL after which the client renews it (well before expiry).
RELAY_RENEW_AT = 0.75
#: Seconds of the first retry after a refused or dropped reservation; doubles per failure.
RELAY_RETRY_BASE_S = 2.0
#: Seconds of the longest retry delay for a reservation.
RELAY_RETRY_CAP_S = 300.0

# --- punch: port reuse and hole punching (issue 14, docs/reach.md "Hole punching") ------

#: Addresses in one PunchConnect/Observed frame; stops a peer from making us dial a long list
#: of third parties (a SYN flood by proxy).
MAX_PUNCH_ADDRS = 8
#: Characters of one "host:port" address on the wire ("[v6]:port" fits).
MAX_ADDR_CHARS = 64
#: Dial attempts in one punch round (DCUtR: 3), each a Connect/Connect/Sync exchange.
PUNCH_ATTEMPTS = 3
#: Seconds the punch initiator waits for the answer to its PunchConnect before the attempt fails.
PUNCH_REPLY_TIMEOUT_S = 5.0
#: Seconds the punch responder waits for PunchSync after answering; then it forgets the attempt.
PUNCH_SYNC_TIMEOUT_S = 5.0
#: Seconds one attempt's simultaneous open (TCP connect and Noise handshake) may take.
PUNCH_DIAL_TIMEOUT_S = 3.0
#: Seconds before a new round after a failed one; doubles per failed round, up to the cap
#: (a pair behind symmetric NATs retries rarely instead of dialling all day).
PUNCH_RETRY_BASE_S = 30.0
PUNCH_RETRY_CAP_S = 1_800.0
#: PunchConnect frames the responder answers per window; stops a peer from using us to send
#: SYNs to third parties at the rate it likes (a well-behaved initiator needs 3 per round).
PUNCH_RESPONDER_MAX_CONNECTS = 6
PUNCH_RESPONDER_WINDOW_S = 60.0
#: Frames held from a new (direct) connection while the old (relayed) one drains, so that
#: nothing is reordered across the switch; beyond it they are let through (sync repairs order).
MIGRATION_HOLD_MAX_FRAMES = 10_000
#: Peers whose observed address of us we keep (one per connected peer is enough).
MAX_OBSERVERS = 64
# --- presence: signed membership records (issue 16, protocol/presence.py) ----------------
#: Seconds a presence record lives after its author signed it (`expires` <= seq time + this):
#: a peer that vanished without a signed leave drops out of every member list after it.
PRESENCE_TTL_S = 600
#: Seconds between re-signings of our own record (well inside the TTL, so it never lapses).
PRESENCE_REFRESH_S = 200.0
#: Seconds our own record is re-signed at most once per (joins, leaves and nick changes in a
#: row are sent as one): keeps us under the per-author rate peers grant (PRESENCE_AUTHOR_*).
PRESENCE_OWN_MIN_GAP_S = 2.5
#: Seconds a record's `expires` may lie beyond our clock + PRESENCE_TTL_S (clock skew);
#: beyond it the record is dropped (stops a signed record from living for ever).
PRESENCE_MAX_SKEW_S = 300
#: Bytes of one encoded record body; stops a peer making us store and forward big blobs.
PRESENCE_MAX_BYTES = 4_096
#: Rooms listed in one record (ours: the first ones, sorted); stops announcement bloat.
PRESENCE_MAX_ROOMS = 32
#: Addresses ("host:port") in one record, and characters in each.
PRESENCE_MAX_ADDRS = 8
PRESENCE_MAX_ADDR_CHARS = 64
#: Records in one `pres` frame (12 full ones fit in MAX_FRAME).
PRESENCE_PER_FRAME = 12
#: Records sent to a peer when it announces rooms it shares with us (newest first);
#: stops one connect from costing a whole member table.
PRESENCE_CONNECT_BATCH = 256
#: Records held in all (one per author); stops throwaway identities growing our memory.
PRESENCE_MAX_RECORDS = 4_096
#: Records held per room; a full room takes a new author only if it is a connected or known
#: peer, in place of a stranger's record (stops a Sybil flood from pushing members out).
PRESENCE_MAX_PER_ROOM = 1_024
#: New records of one author accepted per second, sustained, and in a burst (a leave always
#: passes once); stops an author making honest peers forward its records as a flood.
PRESENCE_AUTHOR_PER_S = 0.5
PRESENCE_AUTHOR_BURST = 8.0
#: Records one peer may send us per second, sustained, and in a burst; a peer that exceeds
#: them is disconnected (`presence_flood`).
PRESENCE_PEER_PER_S = 50.0
PRESENCE_PEER_BURST = 2_048.0
#: Seconds the presence timer waits at least (a wall clock behind the loop's cannot spin it).
PRESENCE_TIMER_MIN_S = 0.05

# --- gossip mesh (protocol/mesh.py, docs/mesh.md; issue 16) ---------------------------
# gossipsub v1.1 parameters (names as in its spec) and the bounds on what a peer can make us hold.
#: Peers in the mesh of one room we aim for (eager push targets).
MESH_D = 6
#: Fewest mesh peers per room before the heartbeat grafts more.
MESH_D_LO = 4
#: Most mesh peers per room before the heartbeat prunes (stops a GRAFT storm growing our fan-out).
MESH_D_HI = 12
#: Mesh peers kept by score when pruning down to D (the rest are picked at random: no eclipse).
MESH_D_SCORE = 4
#: Outbound (we dialled) mesh peers kept per room (an attacker cannot fill the mesh by dialling us).
MESH_D_OUT = 2
#: Non-mesh room peers that get IHAVE gossip at each heartbeat.
MESH_D_LAZY = 6
#: Links from its author within which a live copy is pushed on eagerly: a copy that came over
#: this many is only announced (IHAVE), so no first copy takes a longer path than this while a
#: shorter one exists (docs/mesh.md, "A hop limit").
MESH_MAX_HOPS = 8
#: Largest relay count a chat frame may carry (a hint outside the signature; one byte).
MAX_RELAYS = 255
#: Mesh peers of a room kept pushing to us (the rest are choked: they announce by IHAVE).
#: Duplicates grow with it (about one per pushing peer), the hop depth of the eager graph
#: shrinks: 4 keeps first copies within the hop limit with 1.9 duplicates per node per message
#: at 10,000 nodes (3 left 1% of them to gossip: docs/mesh.md, "A hop limit").
MESH_CHOKE_KEEP = 4
#: Seconds between heartbeats (mesh maintenance, gossip, score decay).
MESH_HEARTBEAT_S = 1.0
#: Heartbeats a message id stays in the gossip history (mcache: ids only, per room).
MESH_HISTORY_LEN = 5
#: Of those, the heartbeats whose ids are announced in IHAVE.
MESH_HISTORY_GOSSIP = 3
#: Message ids one room's gossip history holds at most (stops a fast room growing memory).
MESH_MAX_HISTORY_IDS = 5_000
#: Seconds a pruned peer must wait before grafting again (sent in PRUNE).
MESH_PRUNE_BACKOFF_S = 60
#: Seconds of backoff after leaving a room (shorter: rejoining is normal).
MESH_LEAVE_BACKOFF_S = 10
#: Seconds of backoff a PRUNE may ask of us at most (a longer one is a malformed frame).
MESH_MAX_BACKOFF_S = 3_600
#: Seconds after its backoff ends within which a GRAFT still counts as a flood (gossipsub's 10 s).
MESH_GRAFT_FLOOD_S = 10.0
#: Peer ids in one PRUNE's peer exchange (stops a PRUNE from flooding our candidates).
MESH_MAX_PX = 16
#: Message ids in one IHAVE frame (gossipsub max_ihave_length; stops "IHAVE for millions of ids").
MESH_MAX_IHAVE_IDS = 500
#: IHAVE frames heeded per peer per heartbeat (gossipsub max_ihave_messages); more: penalty.
MESH_MAX_IHAVE_PER_HEARTBEAT = 10
#: Message ids asked per peer per heartbeat by IWANT (what one peer's IHAVEs make us fetch).
MESH_MAX_IWANT_PER_HEARTBEAT = 500
#: Message ids in one IWANT frame.
MESH_MAX_IWANT_IDS = 500
#: Message ids served per peer per heartbeat (stops an IWANT flood making us resend everything).
MESH_MAX_SERVE_PER_HEARTBEAT = 500
#: Message ids in one IDONTWANT frame.
MESH_MAX_IDONTWANT_IDS = 500
#: IDONTWANT ids remembered per peer (oldest dropped: it only saves a duplicate).
MESH_MAX_DONTWANT_PER_PEER = 1_000
#: Seconds after an IWANT within which the message must arrive (else a broken promise).
MESH_IWANT_FOLLOWUP_S = 3.0
#: Dial candidates remembered (discovery, presence, PX); oldest dropped (stops PX floods).
MESH_MAX_CANDIDATES = 512
#: Dials asked per heartbeat (a slow ramp: no dial storm when a node joins a big room).
MESH_MAX_DIALS_PER_HEARTBEAT = 4
#: Connections kept beyond D_HI (churn slack) before the lowest-scoring non-mesh ones are closed.
MESH_CONN_MARGIN = 0
#: Rooms of one peer the mesh tracks (its Rooms frame is bounded by MAX_ROOMS too).
MESH_MAX_PEER_ROOMS = 256
#: Backoff entries (peer, room) remembered; oldest dropped (stops PRUNE floods growing memory).
MESH_MAX_BACKOFFS = 4_096
#: Score below which a peer gets no gossip and its gossip is ignored (gossipsub gossip_threshold).
MESH_GOSSIP_THRESHOLD = -10.0
#: Score below which every frame of a peer is ignored (gossipsub graylist_threshold).
MESH_GRAYLIST_THRESHOLD = -80.0
#: Score below which the connection is closed (and the peer dropped from candidates).
MESH_CLOSE_THRESHOLD = -100.0
#: Score a peer needs for its PRUNE's peer exchange to be heeded (gossipsub accept_px_threshold).
MESH_ACCEPT_PX_THRESHOLD = 0.0
#: Control frames (GRAFT, PRUNE) heeded per peer per heartbeat; more: penalty (GRAFT storms).
MESH_MAX_CONTROL_PER_HEARTBEAT = 64
#: Seconds a dial the mesh asked for may take before the candidate is dropped (no redial loop).
MESH_DIAL_TIMEOUT_S = 10.0
#: Seconds a new connection is safe from being closed for the degree (time to send its rooms).
MESH_CONN_GRACE_S = 5.0
#: Disconnected peers whose penalties are kept (so reconnecting does not wash a bad score).
MESH_MAX_RETAINED = 1_024
#: Seconds the penalties of a disconnected peer are kept.
MESH_RETAIN_S = 600.0
#: Seconds from a stored message to our vector when a mesh routes (VECTOR_DELAY_S without):
#: live delivery through the mesh finishes first, so sync does not push duplicates of it.
MESH_VECTOR_DELAY_S = 2.0
#: Seconds after we saw a message live during which a vector-triggered push skips it: the
#: mesh most likely has it in flight to that peer (a push would only duplicate it).
MESH_IN_FLIGHT_S = 2.0
#: Seconds of backoff in the PRUNE answering a GRAFT for a room the peer's Rooms frame has not
#: named (yet): short, the frame may still be on its way.
MESH_UNKNOWN_ROOM_BACKOFF_S = 1

# --- mesh-wire: discovery with the gossip mesh (node.py) ------------------------------------

#: Seconds a discovered, unconnected peer must have been silent before its beacon is
#: answered at once again (with the mesh most peers heard stay unconnected: answering
#: each of their beacons would make every beacon of a big LAN draw an answer from
#: nearly every host). Two beacon intervals: a peer that restarted is answered.
BEACON_ANSWER_SILENT_S = 2 * BEACON_INTERVAL_S * (1 + BEACON_JITTER)

# --- mailboxes: mail that waits for its reader (issue 15 item 4, docs/dht.md "Mailboxes") -----

#: Seconds a holder keeps mail (7 days); an author asks for at most this: a mailbox that
#: never forgets would let anyone fill strangers' disks for ever.
MAILBOX_TTL_S = 7 * 24 * 3600
#: Seconds an expiry may lie beyond now + MAILBOX_TTL_S (clocks differ); more is refused.
MAILBOX_TTL_SKEW_S = 600
#: Bytes of one sealed mail box: the largest valid chat (MAX_TEXT_BYTES of text and
#: MAX_ENC_BYTES of ciphertext, about 13 KB) padded to its 16 KiB bucket, plus the seal's 48;
#: a bigger one is a malformed frame (stops one item from eating a mailbox's byte budget).
#: An item inside the pair's Olm ratchet is a padded `pm` body (at most PM_MAX_BYTES) plus
#: its author, signature and framing (107 bytes) and the seal's 48: hence 16 KiB + 256.
MAILBOX_MAX_BOX_BYTES = 16_384 + 256
#: Bytes a sealed plaintext is padded up to, at least (then powers of two up to the max):
#: the holder learns a size bucket, not the length of the text.
MAILBOX_MIN_BUCKET = 512
#: Items in one `mput` or `mail` frame (the frame is bounded by MAX_FRAME anyway).
MAILBOX_ITEMS_PER_FRAME = 256
#: Ids in one `mok`, `mno` or `mack` frame.
MAILBOX_IDS_PER_FRAME = 1_024
#: Items one holder keeps in all; stops strangers together from filling our disk.
MAILBOX_MAX_ITEMS = 20_000
#: Bytes (sealed boxes) one holder keeps in all (64 MiB).
MAILBOX_MAX_BYTES = 64 << 20
#: Items one depositor (the peer that puts them) may have waiting at a holder; stops one peer
#: from taking the whole mailbox.
MAILBOX_MAX_ITEMS_PER_SENDER = 2_000
#: Bytes one sender may have waiting at a holder (4 MiB).
MAILBOX_MAX_BYTES_PER_SENDER = 4 << 20
#: Items per second one peer may put (token bucket) and the burst; beyond: `mail_flood`.
#: Stops a peer from making us unpack items and write SQLite without pause.
MAILBOX_PUT_PER_S = 200.0
MAILBOX_PUT_BURST = 4_000.0
#: Holders an author hands each item to (redundancy; the reader dedups by message id).
MAILBOX_HOLDERS = 2
#: Items an author keeps in memory waiting for a holder; oldest dropped (the message itself
#: stays in the outbox and still goes out by sync when both ends meet).
MAILBOX_OUTBOX_MAX = 4_096
#: Offline members one room message is mailed to when no member of the room is connected
#: (one sealed item each); stops a big room's message from turning into thousands of items.
MAILBOX_ROOM_READERS = 16
#: Seconds a reader waits after storing mail before mailing its receipt to the absent author
#: (one receipt for a delivery of many frames, not one per frame).
MAILBOX_RECEIPT_DELAY_S = 0.5
#: Seconds between purges of expired mail and tombstones at a holder.
MAILBOX_PURGE_INTERVAL_S = 600.0
#: Bytes of mail items in one `mail` delivery frame (under MAX_FRAME with framing to spare).
MAILBOX_DELIVER_FRAME_BYTES = 48_000
# --- mailfix: the review's findings on mailboxes (issue 15, docs/dht.md "Mailboxes") ------------
#: Tombstones (ids of delivered items, kept until their expiry against replays) a holder keeps;
#: the earliest to expire are dropped beyond it. Stops put-ack-repeat by throwaway peers from
#: growing the table without bound (a dropped one only allows a replay the reader dedups).
MAILBOX_MAX_TOMBSTONES = 20_000
#: Items per second all peers together may put, and the burst; beyond it puts are refused
#: (`full`) unchecked. Stops fresh identities (a handshake each) from each bringing a full
#: MAILBOX_PUT_BURST of signatures to verify.
MAILBOX_PUT_ALL_PER_S = 1_000.0
MAILBOX_PUT_ALL_BURST = 8_000.0
#: Peers whose mail budgets (put, deliver) a node remembers across reconnects, least recently
#: used dropped; stops a reconnect from refilling a flooder's burst.
MAILBOX_BUDGET_PEERS = 4_096
#: Items per second one peer may deliver to us (`mail`, token bucket) and the burst: all a
#: holder keeps (MAILBOX_MAX_ITEMS) plus what may be put to it meanwhile; beyond: `mail_flood`.
#: Stops junk deliveries (a signature check and an unseal each) without pause.
MAILBOX_DELIVER_PER_S = 1_000.0
MAILBOX_DELIVER_BURST = 28_000.0
#: Our room messages kept unsealed while no holder is connected (mailed once one connects),
#: oldest dropped (the message stays in history; sync carries it when members meet).
#: Stops a user alone from sealing and signing MAILBOX_ROOM_READERS items at every post.
MAILBOX_UNSEALED_MAX = 256
# --- dht: where a peer is, on the Mainline DHT (protocol/dhtrecord.py, net/dht.py, docs/dht.md) --

#: UDP port of our DHT node (the TCP chat port's number, on UDP); taken: any free port.
DEFAULT_DHT_PORT = 47475
#: Bytes of a record's bencoded BEP 44 value (BEP 44's own bound: DHT nodes refuse more).
MAX_DHT_VALUE_BYTES = 1_000
#: Seconds a published record says it is valid (`exp`): a stale record (a moved peer that
#: stopped publishing) is not dialled forever. Mainline nodes drop items after about 2 h.
DHT_RECORD_TTL_S = 2 * 3600
#: Seconds between republishing our record while nothing changes (before it fades at ~2 h).
DHT_REPUBLISH_S = 3600.0
#: Seconds at least between two publishes (address changes come in bursts: a flapping
#: interface must not make us put a record every second).
DHT_PUBLISH_MIN_GAP_S = 5.0
#: Seconds a lookup may take before it is reported not found (a DHT traversal that never ends).
DHT_LOOKUP_TIMEOUT_S = 10.0
#: Seconds between lookups of one contact whose dials keep failing, doubling from the base
#: to the cap while no newer record turns up (an offline contact must not make us walk the
#: DHT at every redial; a contact that just moved is found again within seconds).
DHT_LOOKUP_RETRY_BASE_S = 2.0
DHT_LOOKUP_RETRY_CAP_S = 600.0
#: Seconds a lookup waits, after the first acceptable record, for a newer one from other
#: nodes (a node that missed our last put answers first with an older record), unless the
#: lookup ends sooner.
DHT_LOOKUP_SETTLE_S = 0.3
#: Lookups in flight at once (a burst of failing contacts queues, not floods the DHT).
DHT_MAX_LOOKUPS = 8
#: Seconds `exp` may lie in the future: a record claiming validity for years is malformed.
DHT_MAX_RECORD_AHEAD_S = 7 * 24 * 3600
#: Bytes of the saved routing table we read back (a corrupt or hostile state file).
MAX_DHT_STATE_BYTES = 1_000_000
#: Saved DHT nodes we ping at start (a full routing table holds a few hundred).
MAX_DHT_SAVED_NODES = 500

# --- dhtfix: bounds added by the DHT review fixes (issue 15 review) ----------------------

#: Seconds a DHT put may wait for libtorrent's `dht_put_alert` (a traversal ends within
#: a few 15 s request timeouts): an alert lost to a full alert queue or a shutdown must not
#: hold the put lock, so publishing, for ever.
DHT_PUT_TIMEOUT_S = 60.0
#: Seconds of one blinding period: the private record's DHT key A' changes every period
#: (docs/dht.md), so DHT nodes cannot follow one pseudonym for longer, and whoever learns a
#: peer id later cannot find its older keys in DHT logs without trying each day.
DHT_BLIND_PERIOD_S = 86_400
#: Seconds before a period ends from which we publish under the next period's key too
#: (lookers whose day has begun find us at once). Longer than DHT_REPUBLISH_S, so at least
#: one hourly put falls in it.
DHT_BLIND_NEXT_S = 5_400

# --- olm: private messages over pairwise Olm ratchets (issue 12, docs/protocol.md 26) -------

#: Bytes of the smallest `pm` padding bucket (buckets are powers of two from here): a short
#: DM and a long one look alike to whoever sees frame sizes.
PM_MIN_BUCKET = 256
#: Bytes of the data of one `pm` frame (an 8 KiB bucket holds the largest DM with room to
#: spare; 16 KiB for other inner frames): a peer cannot make us decrypt megabytes.
PM_MAX_BYTES = 16_384
#: Bytes of one inner frame a peer may wrap in a `pm` (the plaintext we handle).
PM_MAX_INNER_BYTES = PM_MAX_BYTES - 512
#: `pm` frames of one connection that may fail to decrypt before we close it: one peer's
#: garbage or replays cost us one failed MAC each, then the connection.
PM_MAX_BAD = 16
#: One-time-key requests (`okreq`) a peer may make per minute: each makes a key we keep
#: until used, so a flood of requests would churn our keys (answered with no key beyond).
OLM_OTK_PER_PEER_PER_MIN = 6
#: `okeys` frames we take from one peer per minute (one at the start, one per `okreq` of
#: ours): each costs a signature check and a write, so a flood of them is dropped.
OLM_KEYS_PER_PEER_PER_MIN = 20
#: One-time keys we hand out per minute to all peers together (many peers flooding at once);
#: a conversation, a verified peer or a contact gets one beyond it (its own bound above).
OLM_OTK_PER_MIN = 60
#: Olm sessions kept per peer (both ends starting one at once makes two; older ones go):
#: bounds the sessions a peer's pre-key messages can make us store and try.
OLM_MAX_SESSIONS_PER_PEER = 4
#: Peers whose Olm keys and sessions we keep (the least recently used are forgotten first),
#: not counting conversations, verified peers and contacts (never forgotten: bounded elsewhere).
OLM_MAX_PEERS = 4_096
#: Seconds between two session repairs (a new session after a message no session decrypts)
#: towards one peer: a peer replaying old ciphertext cannot make us start sessions in a loop.
OLM_REPAIR_INTERVAL_S = 10.0

# --- olmfix: Olm state under hostile peers (findings 3, 4 of the issue-12 review) ---------

#: Peers whose keys we keep although we share no session, conversation, verification or
#: contact with them (any peer that connects sends its keys): throwaway identities churn
#: only this quota, never a real contact's keys and sessions.
OLM_MAX_STRANGER_KEYS = 256
#: Seconds (of wall clock, while the node runs) a fallback key that opened a session stays
#: current; then a new one is made and it stays usable one more period (vodozemac keeps the
#: previous one). Not rotated on each use: any peer could then make two starts and break the
#: mail on its way to us; rotated at all so that a thief of the account cannot redo a
#: session started from it more than about two periods back (forward secrecy).
OLM_FALLBACK_ROTATE_S = 24 * 3600
#: Seconds between two new sessions a peer may start with us over a connection (pre-key
#: `pm` frames of sessions we do not have): each costs a write and a re-sync push.
OLM_INBOUND_SESSION_INTERVAL_S = 10.0

# --- prekeyfix: stale fallback keys, far peers' keys (findings 2-4 of the second review) ---

#: Seconds after its author signed it (a record's, a mail's time; a connection's: when it
#: came) we start or keep using a fallback key for a session that never had a reply: it is
#: sure to live OLM_FALLBACK_ROTATE_S (26.5); the hour covers clock skew and mail in transit.
#: Older, mail goes sealed only (no forward secrecy) rather than into a key the reader lost.
OLM_FALLBACK_TRUST_S = OLM_FALLBACK_ROTATE_S - 3600
#: Peers new to us whose keys presence records may bring per minute (not counting
#: conversations, verified peers, contacts): a burst of records from throwaway identities
#: cannot churn OLM_MAX_STRANGER_KEYS faster than once per 16 min, while a far peer that
#: keeps publishing is seen again (OLM_SEEN_REFRESH_S) and so is never the least recent.
OLM_RECORD_NEW_KEYS_PER_MIN = 16
#: Seconds between two writes of the time a peer's unchanged keys were seen again (the
#: eviction order): every refresh of every record must not cost a write.
OLM_SEEN_REFRESH_S = 300.0

# --- megolm: private rooms with a group ratchet (crypto/group.py, roomkeys.py, protocol.md 27) ---

#: Messages one outbound Megolm session encrypts before a new one is made (Matrix's default):
#: whoever steals a session key reads at most this many messages onward.
MEGOLM_ROTATE_MSGS = 100
#: Seconds one outbound Megolm session lives before a new one is made (Matrix's default, a week).
MEGOLM_ROTATE_S = 7 * 24 * 3600
#: Seconds an inbound Megolm session is kept (history is stored as plaintext at receipt): recorded
#: traffic older than this cannot be decrypted with what a seized node holds (forward secrecy).
MEGOLM_KEEP_INBOUND_S = 30 * 24 * 3600
#: Inbound sessions kept per (room, author): an author rotating at a high rate (or a member
#: forwarding made-up keys) cannot grow the key table without bound; the oldest go first.
MEGOLM_MAX_INBOUND_PER_AUTHOR = 64
#: Messages kept while their session's key is unknown (retried when an `rk` arrives; sync brings
#: the rest again later): a flood of messages under made-up session ids costs bounded memory.
MEGOLM_MAX_PENDING_MSGS = 512
#: Key requests (`rkq`) we answer per peer per MEGOLM_RKQ_WINDOW_S: a member asking again and
#: again cannot make us export and send keys without end.
MEGOLM_RKQ_PER_WINDOW = 32
MEGOLM_RKQ_WINDOW_S = 60.0
#: Peers whose request count we remember (the oldest forgotten first): bounded memory.
MEGOLM_RKQ_PEERS = 256
#: Members asked at once for a key whose author is not connected (a request is not a flood).
MEGOLM_RKQ_FANOUT = 3
#: Seconds before we ask again for the key of one (room, author, session): a message pushed
#: again and again by sync does not turn into a flood of requests.
MEGOLM_RKQ_RETRY_S = 30.0
#: Seconds after our first request for a session's key from which a message of that session is
#: stored unread (a placeholder text, filled in if its key comes later) instead of kept: sync
#: would otherwise bring history no member can decrypt (keys past MEGOLM_KEEP_INBOUND_S) again
#: every SYNC_INTERVAL_S for ever, and hold newer messages of its author behind it.
MEGOLM_GIVE_UP_S = 120.0
#: Characters of a session key (base64) in an `rk` frame (a session key has 306, an export 220).
MEGOLM_MAX_KEY_CHARS = 512

# --- roomfix: private rooms against strangers and leavers (review of issue 12, findings 1, 5) ---

#: Key requests (`rkq`) we send to one member per MEGOLM_RKQ_WINDOW_S: half of what a member
#: answers (MEGOLM_RKQ_PER_WINDOW), so messages under made-up session ids never use up our
#: budget at a member and leave our genuine requests ignored.
MEGOLM_RKQ_OUT_PER_PEER = 16
#: Key requests we send in all per MEGOLM_RKQ_WINDOW_S: each costs an Olm encryption and a
#: store write, so junk session ids cannot turn us into an amplifier.
MEGOLM_RKQ_OUT_PER_WINDOW = 64
#: Sessions of messages stored unread whose keys we ask a member for again when it is admitted:
#: a member who holds a key we gave up on can still give it, boundedly (well under
#: MEGOLM_RKQ_OUT_PER_PEER, so requests for messages kept now still go).
MEGOLM_REASK_UNREAD = 8

# --- keys: export/import and held private messages (issue 12 item 5) ---------------------

#: Argon2id passes and bytes of memory an export file may ask for (libsodium's SENSITIVE
#: limits): the parameters sit in the file's header, so a crafted file must not make
#: `chinwag import` run for hours or allocate gigabytes before the tag says "wrong".
MAX_ARCHIVE_OPSLIMIT = 4
MAX_ARCHIVE_MEMLIMIT = 1 << 30
#: Bytes of an export file `chinwag import` reads (checked before reading: it is held in
#: memory with its plaintext), and of the store `chinwag export` packs.
MAX_ARCHIVE_BYTES = 1 << 30
#: Characters of an export passphrase: at least 8 (the file may be guessed offline for ever),
#: at most 1,024 (bytes read from --passphrase-file).
MIN_EXPORT_PASSPHRASE_CHARS = 8
MAX_EXPORT_PASSPHRASE_CHARS = 1_024
#: Private messages held (not sent) while verified peers' keys changed, in all: a user or a
#: script typing into an unresolved key change cannot grow the store without bound.
MAX_HELD_DMS = 1_000
# --- join: admission to private rooms by PAKE (issue 12 item 4, protocol/admit.py) ----------
#: Bytes of an `admit` frame's data (a SPAKE2 message is 33, a confirmation 32): stops a peer
#: from making us buffer or hash large blobs.
ADMIT_MAX_DATA_BYTES = 64
#: Passphrase proofs one peer may start with us per room in ADMIT_WINDOW_S; one more and it
#: is disconnected (ADMIT_FLOOD): each proof is one online guess of the passphrase.
ADMIT_PER_PEER = 5
#: Guesses per room (runs we sent our confirmation in that did not end in admission, still
#: running ones included; all peers together) in ADMIT_WINDOW_S; beyond it runs with peers not
#: admitted before nor verified are refused: fresh identities cannot multiply the online
#: guessing rate (and cannot lock members out: those are spared).
ADMIT_FAILURES_PER_ROOM = 20
#: Seconds of the sliding window of the two bounds above.
ADMIT_WINDOW_S = 60.0
#: Seconds after a failed proof before we start one again with the same peer for that room,
#: doubled per failure up to ADMIT_BACKOFF_MAX_S: a stranger announcing the room cannot
#: make us run proofs (online guesses for it) in a loop.
ADMIT_BACKOFF_S = 2.0
ADMIT_BACKOFF_MAX_S = 60.0
#: Seconds a started proof may wait for the peer's answer; then it counts as unanswered
#: (an older peer that ignores `admit`), and its state is dropped.
ADMIT_TIMEOUT_S = 10.0
#: Seconds a join of a private room waits for the peers announcing it to accept or refuse
#: the passphrase before it settles (joined unless every answer was a refusal).
ADMIT_JOIN_WAIT_S = 12.0
#: (peer, room) pairs whose recent proofs we count (above); beyond it the ones whose window
#: has passed are forgotten, then the oldest: fresh identities cannot grow it without bound.
ADMIT_MAX_TRACKED = 4_096
#: Seconds between sweeps that start runs again with connected peers announcing one of our
#: private rooms without being admitted (after a back-off, a full room window, a timeout):
#: admission recovers by itself; each run is still bounded by the limits above.
ADMIT_RETRY_S = 30.0
# --- movefix: the "exported" mark on a data directory (review of issue 12, finding 7) -------
#: Bytes of the `exported` mark read to word the refusal (its presence alone retires the
#: directory): a mark replaced by a huge file cannot make every start read all of it.
MAX_EXPORTED_MARK_BYTES = 4_096
# --- admitfix: guesses counted when we confirm, spared members, CPU (hostile review s5 #2, #6) --
#: Runs (SPAKE2: 10-15 ms of CPU on the event loop each, measured) we open with peers never
#: admitted to the room and not verified, all rooms together, per ADMIT_WINDOW_S; beyond it
#: none is started or answered: fresh identities cannot keep the loop busy with key exchanges.
ADMIT_RUNS_PER_WINDOW = 120
#: Peers remembered per private room as admitted before (under the current passphrase): they
#: are exempt from the room's guess bound, so guessers cannot lock members out; the least
#: recently admitted are forgotten beyond it (throwaway identities cannot grow it: each one
#: here had to prove the passphrase).
ADMIT_KNOWN_PER_ROOM = 1_024
