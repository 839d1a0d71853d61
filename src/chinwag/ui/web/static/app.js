// chinwag's web page: wires the WebSocket, the state and the DOM together.
//
// Rule of this file: peer-supplied text (nicks, messages, file and room names) only
// reaches the DOM through textContent and attribute setters (see dom.js), never as HTML.

import { Connection } from "./conn.js";
import {
  clear, clock, dayKey, dayLabel, el, eta, fullTime, hue, humanSize, icon, shortId,
} from "./dom.js";
import { PAGE, Room, dmKey, farMembers, keyOf, mentionRe, toItem } from "./store.js";

const $ = (id) => document.getElementById(id);
/** Seconds between two `peers` refreshes (round-trip times change). */
const PEERS_EVERY_MS = 5000;
/** Messages of one author within this many seconds are grouped under one name. */
const GROUP_S = 300;
/** Scroll distance from the top (px) at which older history is fetched. */
const OLDER_AT_PX = 400;

const state = {
  me: { peer_id: "", nick: "" },
  mention: null,
  rooms: new Map(),
  current: "general",
  peers: new Map(), // connected peers: peer_id -> {peer_id, nick, address, rtt_ms}
  relayed: [],
  members: [], // members of the room shown reached through others (farMembers)
  nicks: new Map(), // every nick seen: peer_id -> nick
  verified: new Map(), // peer_id -> bool, from whois answers
  asked: new Set(), // peer ids whose whois we asked for in the background
  files: new Map(),
  netRooms: [],
  roomsAsked: 0, // `rooms` commands sent
  roomsAnswered: 0, // `rooms` answers received
  changed: new Map(), // room joined or left -> `rooms` commands sent before that
  pendingHistory: [],
  wantWhois: null, // {who, then: "show" | "verify"} while the user waits for a whois
  following: true,
  focusMsg: null, // a message to show once its room is rendered (search results)
  started: false,
};

/** Delivery marks seen, kept for messages shown later (and for answers without counts). */
const marks = new Map();
const MAX_MARKS = 5000;

/** Remember a message's latest delivery mark, dropping the oldest beyond MAX_MARKS. */
function rememberMark(id, mark) {
  marks.delete(id);
  marks.set(id, mark);
  if (marks.size > MAX_MARKS) marks.delete(marks.keys().next().value);
}

const conn = new Connection(onEvent, onConnState);
window.chinwag = { state, conn }; // for tests and curious people; holds no secret

// --- rendering scheduler ------------------------------------------------------

const dirty = { rooms: false, peers: false, files: false, full: false, header: false };
let pendingAppend = [];
let frameAsked = false;
let readyMarked = false;

function schedule(what) {
  dirty[what] = true;
  askFrame();
}

function askFrame() {
  if (frameAsked) return;
  frameAsked = true;
  requestAnimationFrame(flush);
}

function flush() {
  frameAsked = false;
  if (dirty.full) {
    dirty.full = false;
    pendingAppend = [];
    renderMessages();
  } else if (pendingAppend.length) {
    const items = pendingAppend;
    pendingAppend = [];
    appendMessages(items);
  }
  if (dirty.rooms) { dirty.rooms = false; renderRooms(); }
  if (dirty.header) { dirty.header = false; renderHeader(); }
  if (dirty.peers) { dirty.peers = false; renderPeers(); }
  if (dirty.files) { dirty.files = false; renderFiles(); }
  if (!readyMarked && state.rooms.get(state.current)?.loaded) {
    // The open room's last screen is shown and the composer takes input (bench_web.py).
    readyMarked = true;
    performance.mark("chinwag-ready");
  }
}

// --- connection -----------------------------------------------------------------

function onConnState(s) {
  const status = $("status");
  status.dataset.state = s;
  status.textContent = {
    online: "● connected",
    connecting: "connecting…",
    offline: "offline — reconnecting…",
    loggedout: "logged out: open the link chinwag printed in its terminal",
  }[s];
}

/** Queries asked again anyway after a reconnect: not queued while offline. */
const QUERIES = new Set(["rooms", "peers", "files", "members"]);

function send(cmd) {
  if (!conn.open && QUERIES.has(cmd.cmd)) return;
  if (cmd.cmd === "rooms") state.roomsAsked += 1;
  conn.send(cmd);
}

/** Fetch everything the page shows: at the start and after a `resync`. */
/** Ask for the members of the room shown (a conversation has none). */
function askMembers() {
  if (!state.current.startsWith("@")) send({ cmd: "members", room: state.current });
}

function refetch() {
  send({ cmd: "rooms" });
  send({ cmd: "peers" });
  askMembers();
  send({ cmd: "files" });
  for (const room of state.rooms.values()) {
    room.loaded = false;
    room.loading = false;
  }
  state.pendingHistory = [];
  loadConversations();
}

// --- events -----------------------------------------------------------------------

// A transfer that failed or stalled: its card shows the state and the reason.
function fileEnded(e, stateName) {
  const f = state.files.get(e.id);
  if (!f) return;
  f.state = stateName;
  f.reason = e.reason;
  schedule("files");
}

const handlers = {
  hello(e) {
    setMe(e.peer_id, e.nick);
    // A new socket: answers to queries sent on the old one will never come.
    state.roomsAsked = state.roomsAnswered = 0;
    state.changed.clear();
    // Private conversations the node holds, if the server lists them (a list of peer ids,
    // or of [name, peer id] pairs); the page also remembers the ones it saw.
    for (const c of Array.isArray(e.conversations) ? e.conversations : []) {
      const peerId = typeof c === "string" ? c : Array.isArray(c) ? c[1] : c && c.peer_id;
      if (typeof peerId === "string" && peerId) ensureRoom(dmKey(peerId));
    }
    if (!state.started) {
      state.started = true;
      refetch();
    }
  },
  resync() {
    refetch();
  },
  message: (e) => incoming(e),
  dm: (e) => incoming(e),
  history(e) {
    // A conversation's answer names it "@" + the peer id's first characters.
    let i = state.pendingHistory.findIndex((p) => p.key === e.room);
    if (i < 0 && e.room.startsWith("@")) i = state.pendingHistory.findIndex((p) => p.key.startsWith(e.room));
    if (i < 0) i = state.pendingHistory.findIndex((p) => p.key.startsWith("@"));
    const req = i >= 0 ? state.pendingHistory.splice(i, 1)[0] : null;
    const key = req ? req.key : e.room;
    const room = state.rooms.get(key);
    if (!room) return;
    const items = e.messages.map((m) => toItem(m, true, state.me.peer_id));
    for (const item of items) {
      noteNick(item.peer_id, item.nick);
      // The answer's counts are newer than any `delivered` event read before it.
      if (item.own && item.mark) rememberMark(item.id, item.mark);
      else if (item.own) item.mark = marks.get(item.id) || "";
      item.mention = isMention(item);
    }
    // Messages already shown keep their item: after a resync (events missed) the
    // answer's counts are the only news of receipts that came meanwhile.
    const fresh = new Map(items.filter((it) => it.mark && room.ids.has(it.id)).map((it) => [it.id, it.mark]));
    if (fresh.size) for (const it of room.items) if (fresh.has(it.id)) it.mark = fresh.get(it.id);
    room.loading = false;
    room.loaded = true;
    if (items.length < (req ? req.limit : PAGE)) room.complete = true;
    room.add(items);
    if (key === state.current) {
      if (req && req.before) keepScrollWhile(() => renderMessages());
      else schedule("full");
      $("older").hidden = true;
    }
  },
  delivered(e) {
    rememberMark(e.id, `✓ ${e.count}/${e.of}`);
    for (const room of state.rooms.values()) {
      if (!room.ids.has(e.id)) continue;
      const item = room.items.find((it) => it.id === e.id);
      if (item) item.mark = `✓ ${e.count}/${e.of}`;
      const node = document.querySelector(`[data-msgid="${CSS.escape(e.id)}"] .mark`);
      if (node) {
        node.textContent = item ? item.mark : "";
        node.classList.add("done");
      }
    }
  },
  rooms(e) {
    // Answers come in the order they were asked for; one asked for before a join or a
    // leave of ours does not know of it, so it must neither drop nor bring back that room.
    state.roomsAnswered += 1;
    const asked = new Set();
    for (const [name, n] of state.changed) {
      if (state.roomsAnswered <= n) asked.add(name);
      else state.changed.delete(name);
    }
    const joined = new Set();
    state.netRooms = [];
    for (const r of e.rooms) {
      if (r.joined && !(asked.has(r.name) && !state.rooms.has(r.name))) {
        joined.add(r.name);
        const room = ensureRoom(r.name);
        room.members = r.members;
      } else if (r.name !== "(private)") {
        state.netRooms.push(r);
      }
    }
    for (const key of [...state.rooms.keys()]) {
      if (!key.startsWith("@") && !joined.has(key) && !asked.has(key)) state.rooms.delete(key);
    }
    if (!state.rooms.has(state.current)) {
      state.current = state.rooms.has("general") ? "general" : [...state.rooms.keys()][0] ?? "general";
    }
    openRoom(state.current);
    schedule("rooms");
    schedule("header");
  },
  joined(e) {
    state.changed.set(e.room, state.roomsAsked);
    const room = ensureRoom(e.room);
    room.private = e.private;
    note(`joined ${e.private ? "private room" : "room"} #${e.room}`);
    switchTo(e.room);
    send({ cmd: "rooms" });
  },
  left(e) {
    state.changed.set(e.room, state.roomsAsked);
    state.rooms.delete(e.room);
    if (state.current === e.room) switchTo(state.rooms.has("general") ? "general" : [...state.rooms.keys()][0]);
    // As the TUI says it (ui/format.py left_line): a conversation is closed, not a #room left.
    note(e.room.startsWith("@") ? `closed the private conversation ${e.room}` : `left #${e.room}`);
    send({ cmd: "rooms" });
  },
  peers(e) {
    state.peers = new Map(e.peers.map((p) => [p.peer_id, p]));
    state.relayed = e.relayed || [];
    for (const p of e.peers) {
      noteNick(p.peer_id, p.nick);
      askVerified(p.peer_id);
    }
    schedule("peers");
    schedule("rooms");
    schedule("header");
  },
  members(e) {
    if (e.room !== state.current) return; // an answer for the room shown before
    for (const m of e.members) noteNick(m.peer_id, m.nick);
    state.members = farMembers(e.members, state.relayed);
    schedule("peers");
  },
  peer_joined(e) {
    state.peers.set(e.peer_id, {
      peer_id: e.peer_id, nick: e.nick, address: e.address, rtt_ms: null, path: e.path, via: e.via,
    });
    noteNick(e.peer_id, e.nick);
    askVerified(e.peer_id);
    note(`${e.nick} (${shortId(e.peer_id)}) joined from ${e.address}`);
    schedule("peers");
    schedule("rooms");
    send({ cmd: "rooms" });
  },
  path(e) {
    // The peer is reached another way now (docs/reach.md "Paths").
    const p = state.peers.get(e.peer_id);
    if (p) { p.path = e.path; p.via = e.via; schedule("peers"); }
  },
  peer_left(e) {
    state.peers.delete(e.peer_id);
    note(`${e.nick} (${shortId(e.peer_id)}) left: ${e.reason}`);
    schedule("peers");
  },
  nick(e) {
    if (e.own) {
      setMe(e.peer_id, e.nick);
      note(`you are now known as ${e.nick}`);
    } else {
      const p = state.peers.get(e.peer_id);
      if (p) p.nick = e.nick;
      noteNick(e.peer_id, e.nick);
      note(`${e.old} (${shortId(e.peer_id)}) is now ${e.nick}`);
      schedule("peers");
      schedule("rooms");
    }
    schedule("header");
  },
  whois(e) {
    state.verified.set(e.peer_id, e.verified);
    noteNick(e.peer_id, e.nick);
    schedule("peers");
    const want = state.wantWhois;
    if (want && (want.who === e.peer_id || want.who.toLowerCase() === e.nick.toLowerCase() ||
        e.peer_id.startsWith(want.who))) {
      state.wantWhois = null;
      showWhois(e, want.then);
    }
  },
  info(e) {
    showInfo(e);
  },
  search(e) {
    showSearch(e);
  },
  line(e) {
    note(e.text, "line");
  },
  error(e) {
    state.wantWhois = null;
    note(`error: ${e.message}`, "error");
    toast(e.message, "error");
  },
  warning(e) {
    note(`WARNING: ${e.message}`, "error");
    toast(e.message, "error");
  },
  dm_held(e) {
    // A private message to a verified nick whose key changed: held, not sent (docs/rooms.md).
    const text = `held (not sent) to ${e.nick}: "${e.text}" — ${e.nick} is now key ` +
      `${e.peer_id.slice(0, 8)}, not the verified ${e.old_peer_id.slice(0, 8)}; ` +
      `/acceptkey ${e.nick} sends it, /discardheld ${e.nick} deletes it`;
    note(text, "error");
    toast(`message to ${e.nick} held: their key changed`, "error");
  },
  gap(e) {
    const [lo, hi] = e.missing;
    noteIn(e.room, `missing ${lo === hi ? lo : `${lo}-${hi}`} from ${who(e.peer_id)}; repairing`, "gap");
  },
  gap_filled(e) {
    noteIn(e.room, `gap from ${who(e.peer_id)} repaired`);
  },
  file_offer(e) {
    const f = state.files.get(e.id) || {};
    Object.assign(f, {
      id: e.id, name: e.name, size: e.size, peer_id: e.peer_id, nick: e.nick, room: e.room,
      direction: e.own ? "out" : "in", state: f.state || (e.own ? "sharing" : "offered"),
      bytes: f.bytes || 0, rate: 0, path: "",
    });
    state.files.set(e.id, f);
    schedule("files");
  },
  file_progress(e) {
    const f = state.files.get(e.id);
    if (!f) return;
    f.bytes = e.bytes;
    f.size = e.total;
    f.rate = e.rate;
    if (f.direction === "in") f.state = "transferring";
    else f.progressOut = true;
    updateFileCard(f);
  },
  file_done(e) {
    const f = state.files.get(e.id);
    if (!f) return;
    f.bytes = f.size;
    f.path = e.path;
    f.state = f.direction === "in" ? "done" : "delivered";
    schedule("files");
  },
  file_failed(e) {
    fileEnded(e, "failed");
  },
  file_stalled(e) {
    fileEnded(e, "stalled");
  },
  files(e) {
    for (const info of e.files) {
      if (!["offered", "transferring", "stalled", "sharing"].includes(info.state) &&
          !state.files.has(info.id)) continue;
      const f = state.files.get(info.id) || {};
      Object.assign(f, {
        id: info.id, name: info.name, size: info.size, peer_id: info.peer_id, nick: info.nick,
        room: info.room, direction: info.direction, state: info.state, bytes: info.bytes,
        rate: info.rate, path: info.path,
      });
      state.files.set(info.id, f);
    }
    schedule("files");
  },
};

function onEvent(e) {
  const handler = handlers[e.event];
  if (!handler) return; // forward compatible: unknown events are ignored
  try {
    handler(e);
  } catch (err) {
    console.error("could not handle", e.event, err);
  }
}

function setMe(peerId, nick) {
  state.me = { peer_id: peerId, nick };
  state.mention = mentionRe(nick);
  $("me-nick").textContent = nick;
  $("me-id").textContent = shortId(peerId);
  const avatar = $("me-avatar");
  avatar.textContent = nick.slice(0, 1).toUpperCase();
  avatar.style.backgroundColor = `hsl(${hue(peerId)} 55% 50%)`;
  document.title = `chinwag — ${nick}`;
}

function noteNick(peerId, nick) {
  if (peerId && state.nicks.get(peerId) !== nick) {
    state.nicks.set(peerId, nick);
    if (state.rooms.has(dmKey(peerId))) {
      saveConversations();
      schedule("rooms");
    }
  }
}

function who(peerId) {
  const nick = state.nicks.get(peerId);
  return nick ? `${nick} (${shortId(peerId)})` : shortId(peerId);
}

function askVerified(peerId) {
  if (state.asked.has(peerId)) return;
  state.asked.add(peerId);
  send({ cmd: "whois", who: peerId });
}

// --- messages -----------------------------------------------------------------------

function ensureRoom(key) {
  let room = state.rooms.get(key);
  if (!room) {
    room = new Room(key);
    state.rooms.set(key, room);
    if (room.kind === "dm") saveConversations();
    schedule("rooms");
  }
  return room;
}

function incoming(e) {
  const item = toItem(e, false, state.me.peer_id);
  noteNick(item.peer_id, item.nick);
  const key = keyOf(item, state.me.peer_id);
  const room = ensureRoom(key);
  if (room.ids.has(item.id)) return; // a replayed or already fetched message
  item.mention = isMention(item);
  item.live = true;
  const how = room.add([item]);
  if (key === state.current) {
    if (how === "append") {
      pendingAppend.push(item);
      askFrame();
    } else {
      schedule("full");
    }
    if (room.trim()) schedule("full");
  } else {
    room.trim();
  }
  if (!item.own && (key !== state.current || !state.following || document.hidden)) {
    room.unread += 1;
    if (item.mention) room.mentions += 1;
    schedule("rooms");
  }
  if (item.mention && document.hidden) notify(item, key);
}

/** A message that calls for attention: private and not ours, or naming our nick. */
function isMention(item) {
  return !item.own && (item.dm || (state.mention !== null && state.mention.test(item.text)));
}

function note(text, level = "info") {
  noteIn(state.current, text, level);
}

function noteIn(key, text, level = "info") {
  const room = state.rooms.get(key) || state.rooms.get(state.current);
  if (!room) return;
  const last = room.items[room.items.length - 1];
  const ts = Math.max(Date.now() / 1000, last ? last.ts : 0);
  const item = { kind: "note", ts, peer_id: "", aseq: 0, text, level };
  room.add([item]);
  if (room.key === state.current) {
    pendingAppend.push(item);
    askFrame();
  }
}

function messageNode(item, prev) {
  if (item.kind === "note") {
    return el("div", { class: `note ${item.level}`, testid: "system", text: item.text });
  }
  const grouped = prev && prev.kind === "msg" && prev.peer_id === item.peer_id &&
    item.ts - prev.ts < GROUP_S && dayKey(prev.ts) === dayKey(item.ts);
  const classes = ["msg"];
  if (item.own) classes.push("own");
  if (item.mention) classes.push("mention");
  if (grouped) classes.push("cont");
  const nick = el("span", { class: "nick", text: item.nick });
  nick.style.color = `hsl(${hue(item.peer_id)} 60% var(--nick-l))`;
  const avatar = el("span", { class: "avatar", text: item.nick.slice(0, 1).toUpperCase() });
  avatar.style.backgroundColor = `hsl(${hue(item.peer_id)} 55% 50%)`;
  const node = el("div", { class: classes.join(" "), testid: "message", data: { msgid: item.id } },
    avatar,
    el("div", { class: "body" },
      el("div", { class: "meta" },
        nick,
        el("span", { class: "time", title: fullTime(item.ts), text: clock(item.ts) }),
        item.late ? el("span", { class: "late", text: "late", title: "arrived after newer messages" }) : null),
      el("div", { class: "text", testid: "message-text", text: item.text }),
      fileChip(item),
    ),
    el("span", { class: "hover-time", text: clock(item.ts), title: fullTime(item.ts) }),
    // "…" only for what we sent while the page was open: older messages' marks are not known.
    item.own ? el("span", { class: item.mark ? "mark done" : "mark", testid: "delivery", text: item.mark || (item.live ? "…" : "") }) : null,
  );
  return node;
}

/** The text the node gives a file offer's message (docs/files.md). */
const OFFER_TEXT = /^offers file '(.*)' \([^)]*\) \[file ([0-9a-f]{4,})\]$/s;

/** A chip under a file offer's message that shows the offer's card in the files tray. */
function fileChip(item) {
  const m = OFFER_TEXT.exec(item.text);
  if (!m) return null;
  return el("button", {
    type: "button", class: "file-chip", testid: "file-chip", data: { file: m[2] },
    title: "show this file", onclick: (e) => { e.stopPropagation(); showFileCard(m[2], item.peer_id); },
  }, icon("file", 16), el("span", { text: m[1] }));
}

function showFileCard(prefix, author) {
  const f = [...state.files.values()].find((x) => x.id.startsWith(prefix) && x.peer_id === author);
  if (!f) {
    toast("this offer is no longer listed (see /files)");
    return;
  }
  f.dismissed = false;
  renderFiles();
  const card = fileCards.get(f.id);
  if (card) {
    card.scrollIntoView({ block: "nearest" });
    card.classList.remove("flash");
    void card.offsetWidth; // restart the animation
    card.classList.add("flash");
  }
}

function daySeparator(ts) {
  return el("div", { class: "day", testid: "day-separator" }, el("span", { text: dayLabel(ts) }));
}

/** Render a run of items after `prev` into a fragment, with day separators. */
function buildNodes(items, prev) {
  const frag = document.createDocumentFragment();
  for (const item of items) {
    if (!prev || dayKey(prev.ts) !== dayKey(item.ts)) frag.append(daySeparator(item.ts));
    frag.append(messageNode(item, prev));
    prev = item;
  }
  return frag;
}

let lastRendered = null;

function renderMessages() {
  const list = $("message-list");
  const room = state.rooms.get(state.current);
  clear(list);
  lastRendered = null;
  if (!room) return;
  list.append(buildNodes(room.items, null));
  lastRendered = room.items[room.items.length - 1] || null;
  if (state.focusMsg) {
    // Coming from a search result: show that message, if this page of history holds it.
    const node = list.querySelector(`[data-msgid="${CSS.escape(state.focusMsg)}"]`);
    state.focusMsg = null;
    if (node) {
      state.following = false;
      node.scrollIntoView({ block: "center" });
      node.classList.add("flash");
      return;
    }
  }
  if (state.following) scrollToBottom();
  maybeLoadOlder();
}

function appendMessages(items) {
  const list = $("message-list");
  list.append(buildNodes(items, lastRendered));
  lastRendered = items[items.length - 1];
  if (state.following) scrollToBottom();
}

function scrollToBottom() {
  const pane = $("messages");
  pane.scrollTop = pane.scrollHeight;
}

/** Run a re-render that adds content above, keeping what the reader sees in place. */
function keepScrollWhile(fn) {
  const pane = $("messages");
  const fromBottom = pane.scrollHeight - pane.scrollTop;
  const following = state.following;
  state.following = false;
  fn();
  state.following = following;
  pane.scrollTop = pane.scrollHeight - fromBottom;
}

function maybeLoadOlder() {
  const room = state.rooms.get(state.current);
  const pane = $("messages");
  if (!room || !room.loaded || room.loading || room.complete) return;
  if (pane.scrollTop > OLDER_AT_PX) return;
  const before = room.oldestId();
  if (!before) return;
  room.loading = true;
  $("older").hidden = false;
  requestHistory(room, before);
}

function requestHistory(room, before = null) {
  const cmd = { cmd: "history", room: room.key, limit: PAGE };
  if (before) cmd.before = before;
  state.pendingHistory.push({ key: room.key, before, limit: PAGE });
  room.loading = true;
  send(cmd);
}

function onScroll() {
  const pane = $("messages");
  state.following = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 40;
  if (state.following) {
    const room = state.rooms.get(state.current);
    if (room && (room.unread || room.mentions) && !document.hidden) {
      room.unread = room.mentions = 0;
      schedule("rooms");
    }
  }
  maybeLoadOlder();
}

// --- rooms ----------------------------------------------------------------------------

function label(room) {
  if (room.kind === "room") return `#${room.key}`;
  return `@${state.nicks.get(room.peerId) || shortId(room.peerId)}`;
}

function openRoom(key) {
  const room = ensureRoom(key);
  if (!room.loaded && !room.loading) requestHistory(room);
}

function switchTo(key) {
  if (!key) return;
  state.current = key;
  state.members = [];
  askMembers();
  openRoom(key);
  const room = state.rooms.get(key);
  room.unread = room.mentions = 0;
  state.following = true;
  document.body.classList.remove("rooms-open", "peers-open");
  schedule("full");
  schedule("rooms");
  schedule("header");
}

function renderRooms() {
  const roomList = $("room-list");
  const dmList = $("dm-list");
  clear(roomList);
  clear(dmList);
  const keys = [...state.rooms.keys()].sort();
  for (const key of keys) {
    const room = state.rooms.get(key);
    const badge = [];
    if (room.mentions) badge.push(el("span", { class: "mention-mark", testid: "mention-mark", text: "!", title: "mentions you" }));
    if (room.unread) badge.push(el("span", { class: "unread", testid: "unread-count", text: String(room.unread) }));
    const online = room.kind === "dm" && state.peers.has(room.peerId);
    const item = el("li", {},
      el("button", {
        class: `room${key === state.current ? " active" : ""}${room.unread ? " has-unread" : ""}`,
        testid: "room", data: { room: key }, onclick: () => switchTo(key),
      },
        room.kind === "dm" ? el("span", { class: `presence${online ? " on" : ""}` }) : el("span", { class: "hash" }, icon(room.private ? "lock" : "hash", 15)),
        el("span", { class: "room-name", text: label(room).slice(1) }),
        ...badge));
    (room.kind === "dm" ? dmList : roomList).append(item);
  }
  const net = $("net-list");
  clear(net);
  $("net-head").hidden = state.netRooms.length === 0;
  for (const r of state.netRooms) {
    net.append(el("li", {}, el("button", {
      class: "room", testid: "net-room", data: { room: r.name },
      title: `join #${r.name}`, onclick: () => send({ cmd: "join", room: r.name }),
    }, el("span", { class: "hash", text: "#" }), el("span", { class: "room-name", text: r.name }),
    el("span", { class: "count-muted", text: String(r.members) }))));
  }
  const unread = [...state.rooms.values()].reduce((n, r) => n + r.unread, 0);
  $("open-rooms").dataset.unread = unread ? String(unread) : "";
  const title = `chinwag — ${state.me.nick}`;
  document.title = unread ? `(${unread}) ${title}` : title;
}

function renderHeader() {
  const room = state.rooms.get(state.current);
  if (!room) return;
  $("room-title").textContent = label(room);
  let sub = "";
  if (room.kind === "dm") {
    const p = state.peers.get(room.peerId);
    sub = `private, end-to-end encrypted · ${p ? "online" : "offline"} · ${shortId(room.peerId)}`;
  } else {
    sub = room.members ? `${room.private ? "private room · " : ""}${room.members} online`
      : room.private ? "private room" : "";
  }
  $("room-sub").textContent = sub;
  $("composer").placeholder = `Message ${label(room)}`;
  $("leave-button").hidden = room.kind === "dm";
}

// --- conversations remembered by this browser --------------------------------------
// The API has no list of private conversations, so the page remembers the peers it
// talked with (ids and nicks only; no message text) per node identity.

function storageKey() {
  return `chinwag.conversations.${state.me.peer_id}`;
}

function saveConversations() {
  if (!state.me.peer_id) return;
  const list = [...state.rooms.values()].filter((r) => r.kind === "dm")
    .map((r) => [r.peerId, state.nicks.get(r.peerId) || ""]);
  try {
    localStorage.setItem(storageKey(), JSON.stringify(list.slice(-200)));
  } catch { /* storage full or disabled: the list is a convenience */ }
}

function loadConversations() {
  let list = [];
  try {
    list = JSON.parse(localStorage.getItem(storageKey()) || "[]");
  } catch { list = []; }
  if (!Array.isArray(list)) return;
  for (const entry of list) {
    if (!Array.isArray(entry) || typeof entry[0] !== "string") continue;
    if (typeof entry[1] === "string" && entry[1] && !state.nicks.has(entry[0])) state.nicks.set(entry[0], entry[1]);
    ensureRoom(dmKey(entry[0]));
  }
}

// --- peers ----------------------------------------------------------------------------

/** How a connected peer is reached: "relayed via NICK", or "direct · ADDRESS". */
function peerPath(p) {
  if (p.path === "relayed" && p.via) {
    const relay = state.peers.get(p.via);
    return `relayed via ${relay ? relay.nick : shortId(p.via)}`;
  }
  return `direct · ${p.address}`;
}

function renderPeers() {
  const list = $("peer-list");
  clear(list);
  const peers = [...state.peers.values()].sort((a, b) => a.nick.localeCompare(b.nick));
  $("peer-count").textContent = String(peers.length);
  if (!peers.length) list.append(el("li", { class: "empty", text: "nobody connected yet" }));
  for (const p of peers) {
    const verified = state.verified.get(p.peer_id) === true;
    const avatar = el("span", { class: "avatar", text: p.nick.slice(0, 1).toUpperCase() });
    avatar.style.backgroundColor = `hsl(${hue(p.peer_id)} 55% 50%)`;
    list.append(el("li", {}, el("button", {
      class: "peer", testid: "peer", data: { peer: p.peer_id }, onclick: () => peerMenu(p.peer_id),
      title: p.peer_id,
    },
      avatar,
      el("span", { class: "peer-text" },
        el("span", { class: "peer-nick" }, el("span", { text: p.nick }),
          verified ? el("span", { class: "verified", testid: "verified-mark", title: "verified" }, icon("check", 14)) : null),
        el("small", { class: "peer-path", testid: "peer-path", text: peerPath(p) })),
      el("span", { class: "rtt", testid: "peer-rtt", text: p.rtt_ms == null ? "–" : `${p.rtt_ms < 10 ? p.rtt_ms.toFixed(1) : Math.round(p.rtt_ms)} ms` }),
    )));
  }
  const relayed = $("relayed-list");
  clear(relayed);
  $("relayed-head").hidden = state.relayed.length === 0 && state.members.length === 0;
  for (const r of state.relayed) {
    const via = state.nicks.get(r.via) || shortId(r.via);
    relayed.append(el("li", {}, el("button", {
      class: "peer relayed", testid: "peer", data: { peer: r.peer_id }, onclick: () => peerMenu(r.peer_id),
    }, el("span", { class: "peer-text" }, el("span", { class: "peer-nick", text: r.nick }),
      el("small", { class: "peer-path", testid: "peer-path", text: `via ${via}` })))));
  }
  // Members known by their presence records only, dimmed (CSS: .member).
  for (const m of state.members) {
    relayed.append(el("li", {}, el("button", {
      class: "peer relayed member", testid: "peer", data: { peer: m.peer_id, online: String(m.online) },
      onclick: () => peerMenu(m.peer_id), title: m.peer_id,
    }, el("span", { class: "peer-text" }, el("span", { class: "peer-nick", text: m.nick }),
      el("small", { class: "peer-path", testid: "peer-path", text: m.online ? "member · online" : "member · offline" })))));
  }
}

function peerMenu(peerId) {
  const nick = state.nicks.get(peerId) || shortId(peerId);
  const blockLabel = "Block";
  dialog(nick, [
    el("p", { class: "mono small", text: peerId }),
    actionRow([
      ["Message privately", "peer-dm", () => { closeDialog(); switchTo(dmKey(peerId)); focusComposer(); }],
      ["Who is this?", "peer-whois", () => askWhois(peerId, "show")],
      ["Verify", "peer-verify", () => askWhois(peerId, "verify")],
      [blockLabel, "peer-block", () => { closeDialog(); send({ cmd: "block", who: peerId }); }],
    ]),
  ]);
}

function askWhois(whoArg, then) {
  state.wantWhois = { who: whoArg, then };
  send(then === "verify" ? { cmd: "verify", who: whoArg } : { cmd: "whois", who: whoArg });
}

function showWhois(e, then) {
  const rows = [
    ["Nick", e.nick],
    ["Peer id", e.peer_id],
    ["Fingerprint", e.fingerprint],
    ["Status", `${e.online ? "online" : "offline"}${e.verified ? " · verified" : " · not verified"}${e.blocked ? " · blocked" : ""}`],
  ];
  const body = [el("dl", { class: "facts" }, ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]))];
  body.push(el("p", { text: "Safety number — read it aloud with them; if both screens show the same digits, nobody is in the middle:" }));
  body.push(el("p", { class: "safety", testid: "safety-number", text: e.safety_number }));
  const actions = [];
  if (!e.verified) {
    actions.push(["They match: mark verified", "verify-confirm", () => {
      closeDialog();
      send({ cmd: "verify", who: e.peer_id, confirm: true });
      state.verified.set(e.peer_id, true);
      schedule("peers");
      toast(`${e.nick} is verified`);
    }, "primary"]);
  }
  actions.push([e.blocked ? "Unblock" : "Block", "block-toggle", () => {
    closeDialog();
    send({ cmd: e.blocked ? "unblock" : "block", who: e.peer_id });
  }]);
  actions.push(["Message privately", "whois-dm", () => { closeDialog(); switchTo(dmKey(e.peer_id)); }]);
  body.push(actionRow(actions));
  dialog(then === "verify" ? `Verify ${e.nick}` : e.nick, body, "whois");
}

// --- files ------------------------------------------------------------------------------

const fileCards = new Map();

function fileWhere(f) {
  if (f.room) return `#${f.room}`;
  return f.direction === "out" ? "private" : "private, to you";
}

function renderFiles() {
  const box = $("files");
  clear(box);
  fileCards.clear();
  const files = [...state.files.values()].filter((f) => !f.dismissed);
  box.hidden = files.length === 0;
  for (const f of files) {
    const card = fileCard(f);
    fileCards.set(f.id, card);
    box.append(card);
  }
}

function fileCard(f) {
  const incoming = f.direction === "in";
  const head = el("div", { class: "file-head" },
    el("span", { class: "file-icon" }, icon("file", 22)),
    el("span", { class: "file-title" },
      el("span", { class: "file-name", testid: "file-name", text: f.name }),
      el("small", { class: "file-sub", text: `${humanSize(f.size)} · ${incoming ? `from ${f.nick}` : "your offer"} · ${fileWhere(f)}` })),
    el("button", { class: "icon small", title: "Hide", "aria-label": "Hide", testid: "dismiss", onclick: () => { f.dismissed = true; schedule("files"); } }, icon("close", 14)),
  );
  const card = el("div", { class: `file ${f.state}`, testid: "offer", data: { file: f.id, state: f.state } }, head);
  const pct = f.size ? Math.floor((100 * f.bytes) / f.size) : 0;
  const showBar = f.state === "transferring" || f.state === "stalled" || (f.direction === "out" && f.progressOut) ||
    f.state === "done" || f.state === "delivered";
  if (showBar) {
    const bar = el("progress", { testid: "progress", max: String(f.size || 1), value: String(f.bytes) });
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    card.append(bar);
  }
  const line = el("div", { class: "file-line", testid: "file-status" });
  fillFileLine(line, f, pct);
  card.append(line);
  const buttons = [];
  if (incoming && f.state === "offered") {
    buttons.push(el("button", { class: "primary", testid: "accept", onclick: () => send({ cmd: "accept_file", id: f.id }) }, "Accept"));
    buttons.push(el("button", { testid: "reject", onclick: () => send({ cmd: "reject_file", id: f.id }) }, "Reject"));
  }
  if (f.state === "transferring" || f.state === "stalled" || (!incoming && f.state === "sharing")) {
    buttons.push(el("button", { testid: "cancel", onclick: () => send({ cmd: "cancel_file", id: f.id }) }, incoming ? "Cancel" : "Withdraw"));
  }
  if (f.state === "done" && f.path) {
    buttons.push(el("button", { class: "primary", testid: "open-folder", onclick: () => openFolder(f) }, "Open folder"));
  }
  if (buttons.length) card.append(el("div", { class: "file-buttons" }, ...buttons));
  return card;
}

function fillFileLine(line, f, pct) {
  let text;
  switch (f.state) {
    case "offered": text = "offered — accept to download"; break;
    case "transferring": {
      const left = eta(f.size - f.bytes, f.rate);
      text = `${pct}% · ${humanSize(f.bytes)} of ${humanSize(f.size)}` +
        (f.rate > 0 ? ` · ${humanSize(Math.round(f.rate))}/s` : "") + (left ? ` · ${left} left` : "");
      break;
    }
    case "stalled": text = `waiting for a source (${f.reason || "stalled"}) · ${pct}%`; break;
    case "done": text = `saved at ${f.path}`; break;
    case "delivered": text = "received whole by the other side"; break;
    case "sharing": text = f.progressOut
      ? `offered · ${pct}% sent${f.rate > 0 ? ` · ${humanSize(Math.round(f.rate))}/s` : ""}`
      : "offered — waiting for takers"; break;
    case "failed": text = `stopped: ${f.reason || "failed"}`; break;
    default: text = f.state;
  }
  line.textContent = text;
}

/** Update one card in place (progress comes several times a second per transfer). */
function updateFileCard(f) {
  const card = fileCards.get(f.id);
  const bar = card && card.querySelector("progress");
  if (!card || card.dataset.state !== f.state || !bar) {
    schedule("files");
    return;
  }
  const pct = f.size ? Math.floor((100 * f.bytes) / f.size) : 0;
  bar.max = f.size || 1;
  bar.value = f.bytes;
  bar.setAttribute("aria-valuenow", String(pct));
  fillFileLine(card.querySelector(".file-line"), f, pct);
}

async function openFolder(f) {
  try {
    const resp = await fetch("/open-folder", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: f.id }),
      credentials: "same-origin",
    });
    const answer = await resp.json().catch(() => ({}));
    if (answer.ok && answer.opened) toast(`opened the folder of ${f.name}`);
    else if (answer.ok) toast(`saved at ${answer.path || f.path}`);
    else toast(`${answer.error || "could not open the folder"} — saved at ${answer.path || f.path}`, "error");
  } catch {
    toast(`saved at ${f.path}`);
  }
}

function uploadTarget() {
  const room = state.rooms.get(state.current);
  if (!room) return null;
  return room.kind === "dm" ? room.peerId : `#${room.key}`;
}

function upload(file) {
  const to = uploadTarget();
  if (!to) return;
  const url = `/upload?to=${encodeURIComponent(to)}&name=${encodeURIComponent(file.name)}`;
  const local = { id: `upload-${Math.random().toString(36).slice(2)}`, name: file.name, size: file.size, direction: "out",
    state: "uploading", bytes: 0, nick: state.me.nick, room: to.startsWith("#") ? to.slice(1) : "", rate: 0 };
  const xhr = new XMLHttpRequest();
  xhr.open("POST", url);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  const started = performance.now();
  xhr.upload.onprogress = (e) => {
    local.bytes = e.loaded;
    local.rate = e.loaded / Math.max(0.001, (performance.now() - started) / 1000);
    showUpload(local);
  };
  xhr.onload = () => {
    removeUpload(local);
    let answer = {};
    try { answer = JSON.parse(xhr.responseText); } catch { /* not JSON: shown below */ }
    if (xhr.status === 200 && answer.ok) toast(`offering ${file.name}…`);
    else toast(`could not offer ${file.name}: ${answer.error || xhr.status}`, "error");
  };
  xhr.onerror = () => {
    removeUpload(local);
    toast(`could not offer ${file.name}: connection failed`, "error");
  };
  showUpload(local);
  xhr.send(file);
}

const uploads = new Map();

function showUpload(u) {
  let card = uploads.get(u.id);
  const box = $("files");
  if (!card) {
    card = el("div", { class: "file uploading", testid: "upload" },
      el("div", { class: "file-head" }, el("span", { class: "file-icon" }, icon("upload", 22)),
        el("span", { class: "file-title" }, el("span", { class: "file-name", text: u.name }),
          el("small", { class: "file-sub", text: `${humanSize(u.size)} · preparing the offer` }))),
      el("progress", { testid: "upload-progress", max: String(u.size || 1), value: "0" }));
    uploads.set(u.id, card);
    box.hidden = false;
    box.prepend(card);
  }
  const bar = card.querySelector("progress");
  bar.value = u.bytes;
  bar.setAttribute("aria-valuenow", String(u.size ? Math.floor((100 * u.bytes) / u.size) : 0));
}

function removeUpload(u) {
  const card = uploads.get(u.id);
  if (card) card.remove();
  uploads.delete(u.id);
  schedule("files");
}

// --- notifications ------------------------------------------------------------------------

function notify(item, key) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const room = state.rooms.get(key);
  const title = item.dm ? `${item.nick} (private)` : `${item.nick} in ${room ? label(room) : key}`;
  try {
    const n = new Notification(title, { body: item.text.slice(0, 200), tag: item.id, icon: "/static/icon.svg" });
    n.onclick = () => { window.focus(); switchTo(key); n.close(); };
  } catch { /* some platforms only allow notifications from a service worker */ }
}

function askNotifications() {
  if (!("Notification" in window) || Notification.permission !== "default") return;
  Notification.requestPermission().then(renderNotifyButton);
}

function renderNotifyButton() {
  const b = $("notify-button");
  const p = "Notification" in window ? Notification.permission : "denied";
  b.dataset.permission = p;
  b.title = p === "granted" ? "Desktop notifications are on for private messages and mentions"
    : p === "denied" ? "Notifications are blocked in this browser's site settings" : "Turn on desktop notifications";
}

// --- dialogs and toasts -----------------------------------------------------------------

function dialog(title, body, testid = "dialog-body") {
  const d = $("dialog");
  clear(d);
  d.append(el("form", { method: "dialog", class: "dialog-form", testid },
    el("header", {}, el("h2", { text: title }),
      el("button", { class: "icon", value: "cancel", "aria-label": "Close", testid: "dialog-close" }, icon("close", 18))),
    ...body));
  if (!d.open) d.showModal();
  return d;
}

function closeDialog() {
  const d = $("dialog");
  if (d.open) d.close();
}

function actionRow(actions) {
  return el("div", { class: "actions" }, ...actions.map(([text, testid, fn, cls]) =>
    el("button", { type: "button", testid, onclick: fn, class: cls }, text)));
}

/** A small form; resolves with {name: value} on submit. */
function ask(title, fields, submit, hint = "") {
  const inputs = fields.map((f) => el("label", {}, el("span", { text: f.label }),
    el("input", { name: f.name, type: f.type || "text", placeholder: f.placeholder || "", value: f.value || "",
      testid: `dialog-input-${f.name}`, required: f.required || false, autocomplete: "off" })));
  const d = dialog(title, [
    ...(hint ? [el("p", { class: "hint", text: hint })] : []),
    ...inputs,
    el("div", { class: "actions" },
      el("button", { value: "cancel", type: "submit", formnovalidate: true, testid: "dialog-cancel" }, "Cancel"),
      el("button", { value: "ok", type: "submit", class: "primary", testid: "dialog-submit" }, submit)),
  ]);
  const form = d.querySelector("form");
  form.querySelector("input")?.focus();
  return new Promise((resolve) => {
    d.addEventListener("close", () => {
      if (d.returnValue !== "ok") return resolve(null);
      resolve(Object.fromEntries(fields.map((f) => [f.name, form.elements[f.name].value])));
    }, { once: true });
  });
}

function toast(text, level = "info") {
  const t = el("div", { class: `toast ${level}`, testid: "toast", text });
  $("toasts").append(t);
  setTimeout(() => t.remove(), 4000);
}

function showInfo(e) {
  const room = [...state.rooms.values()].find((r) => r.ids.has(e.id));
  const item = room ? room.items.find((it) => it.id === e.id) : null;
  const rows = [
    ["Id", e.id],
    ["In", room ? label(room) : e.room],
    ["Author", who(e.peer_id)],
    ["Number", String(e.author_seq ?? e.seq)],
  ];
  if (item) rows.push(["Written", fullTime(item.ts)]);
  if (item && item.mark) rows.push(["Delivered", item.mark]);
  const holders = e.holders.length
    ? el("ul", { class: "holders" }, ...e.holders.map((h) => el("li", { text: `${h.nick} (${shortId(h.peer_id)})` })))
    : el("p", { class: "hint", text: "No peer is known to hold it yet." });
  dialog("Message info", [
    el("dl", { class: "facts" }, ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
    el("h3", { text: "Held by" }), holders,
  ], "message-info");
}

function showSearch(e) {
  const results = e.messages.map((m) => {
    const item = toItem(m, true, state.me.peer_id);
    if (item.own && item.mark) rememberMark(item.id, item.mark);
    const key = keyOf(item, state.me.peer_id);
    const where = key.startsWith("@") ? `@${state.nicks.get(key.slice(1)) || shortId(key.slice(1))}` : `#${key}`;
    return el("li", {}, el("button", {
      class: "result", testid: "search-result", data: { msgid: item.id },
      onclick: () => {
        closeDialog();
        if (!state.rooms.has(key)) return;
        state.focusMsg = item.id;
        switchTo(key);
      },
    }, el("small", { text: `${where} · ${item.nick} · ${fullTime(item.ts)}${item.mark ? ` · ${item.mark}` : ""}` }), el("span", { text: item.text })));
  });
  dialog(`Search: ${e.text}`, [
    results.length ? el("ul", { class: "results" }, ...results.reverse()) : el("p", { class: "hint", text: "Nothing found." }),
  ], "search-results");
}

// --- composer and buttons -------------------------------------------------------------------

function focusComposer() {
  $("composer").focus();
}

function submitComposer() {
  const box = $("composer");
  const text = box.value;
  if (!text.trim()) return;
  askNotifications();
  const room = state.rooms.get(state.current);
  if (text.startsWith("/") && !text.startsWith("//")) {
    send({ cmd: "line", text, room: state.current });
  } else {
    const body = text.startsWith("//") ? text.slice(1) : text;
    if (room && room.kind === "dm") send({ cmd: "dm", to: room.peerId, text: body });
    else send({ cmd: "send", text: body, room: state.current });
  }
  box.value = "";
  autosize();
  state.following = true;
}

/** The slash commands of ui/commands.py (SLASH, less quit), for Tab completion. */
const COMMANDS = [
  "help", "peers", "members", "nick", "id", "history", "search", "info", "join", "leave", "rooms",
  "switch", "msg", "whois", "verify", "acceptkey", "discardheld", "held", "block", "unblock",
  "send", "accept", "reject", "files", "cancel", "invite", "add", "lookup", "contacts", "forget",
  "connect",
];

/** Tab completes a slash command at the start, or a nick anywhere (as the TUI does). */
function complete(box) {
  const end = box.selectionStart;
  if (end !== box.selectionEnd) return false;
  const before = box.value.slice(0, end);
  const word = /(\S*)$/.exec(before)[1];
  if (!word) return false;
  let options;
  let stem = word;
  let prefix = "";
  if (word.startsWith("/") && before.length === word.length) {
    options = COMMANDS.map((c) => `/${c}`);
  } else {
    if (word.startsWith("@")) { prefix = "@"; stem = word.slice(1); }
    const nicks = new Set([...state.peers.values()].map((p) => p.nick));
    for (const nick of state.nicks.values()) nicks.add(nick);
    nicks.delete(state.me.nick);
    options = [...nicks].map((n) => prefix + n);
  }
  const lower = word.toLowerCase();
  const found = options.filter((o) => o.toLowerCase().startsWith(lower) && o !== word).sort();
  if (!found.length || !stem) return false;
  // The longest common prefix of all matches; a single match gets a space after it.
  let common = found[0];
  for (const o of found) while (!o.toLowerCase().startsWith(common.toLowerCase())) common = common.slice(0, -1);
  const insert = found.length === 1 ? `${found[0]} ` : common.length > word.length ? common : null;
  if (insert === null) {
    toast(found.slice(0, 8).join("  "));
    return true;
  }
  box.setRangeText(insert, end - word.length, end, "end");
  autosize();
  return true;
}

function autosize() {
  const box = $("composer");
  box.style.height = "auto";
  box.style.height = `${Math.min(box.scrollHeight, 160)}px`;
}

async function joinDialog() {
  const v = await ask("Join a room", [
    { name: "room", label: "Room", placeholder: "e.g. lunch", required: true },
    { name: "passphrase", label: "Passphrase (only for a private room)", type: "password" },
  ], "Join", "A room is created when the first person joins it. With a passphrase the room is private: only people with the same passphrase can read it.");
  if (!v || !v.room.trim()) return;
  const cmd = { cmd: "join", room: v.room.trim().replace(/^#/, "") };
  if (v.passphrase) cmd.passphrase = v.passphrase;
  send(cmd);
}

async function dmDialog() {
  const v = await ask("Private conversation", [
    { name: "who", label: "Nick or peer id", required: true },
  ], "Open", "Private messages are end-to-end encrypted to the other person.");
  if (!v || !v.who.trim()) return;
  const whoArg = v.who.trim().replace(/^@/, "");
  const found = [...state.peers.values(), ...state.relayed, ...state.members].find(
    (p) => p.peer_id === whoArg || p.nick.toLowerCase() === whoArg.toLowerCase() || p.peer_id.startsWith(whoArg));
  if (found) {
    switchTo(dmKey(found.peer_id));
    focusComposer();
  } else {
    askWhois(whoArg, "show"); // resolves the name; the whois card offers "Message privately"
  }
}

async function searchDialog() {
  const v = await ask("Search messages", [{ name: "text", label: "Text", required: true }], "Search");
  if (v && v.text.trim()) send({ cmd: "search", text: v.text, limit: 100 });
}

async function nickDialog() {
  const v = await ask("Your nick", [{ name: "nick", label: "Nick", value: state.me.nick, required: true }], "Change",
    "1-32 letters, digits, '_', '.' or '-'. Your peers see the new nick at once.");
  if (v && v.nick.trim() && v.nick.trim() !== state.me.nick) send({ cmd: "nick", nick: v.nick.trim() });
}

function leaveCurrent() {
  const room = state.rooms.get(state.current);
  if (room && room.kind === "room") send({ cmd: "leave", room: room.key });
}

// --- phone: drawers and the on-screen keyboard --------------------------------------------

function toggleDrawer(which) {
  const cls = `${which}-open`;
  const open = !document.body.classList.contains(cls);
  document.body.classList.remove("rooms-open", "peers-open");
  if (open) document.body.classList.add(cls);
}

function trackViewport() {
  const vv = window.visualViewport;
  if (!vv) return;
  const apply = () => {
    document.documentElement.style.setProperty("--app-height", `${Math.round(vv.height)}px`);
    if (state.following) scrollToBottom();
  };
  vv.addEventListener("resize", apply);
  apply();
}

// --- start ------------------------------------------------------------------------------------

function start() {
  for (const b of document.querySelectorAll("[data-icon]")) b.append(icon(b.dataset.icon));
  const box = $("composer");
  $("composer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitComposer();
    focusComposer();
  });
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submitComposer();
    } else if (e.key === "Tab" && !e.shiftKey && !e.altKey && !e.ctrlKey && complete(box)) {
      e.preventDefault(); // otherwise Tab moves the focus on, as everywhere
    }
  });
  box.addEventListener("input", autosize);
  $("messages").addEventListener("scroll", onScroll, { passive: true });
  $("message-list").addEventListener("click", (e) => {
    if (window.getSelection()?.toString()) return; // selecting text, not asking for info
    const msg = e.target.closest("[data-msgid]");
    if (msg) send({ cmd: "info", id: msg.dataset.msgid });
  });
  $("join-button").addEventListener("click", joinDialog);
  $("dm-button").addEventListener("click", dmDialog);
  $("search-button").addEventListener("click", searchDialog);
  $("leave-button").addEventListener("click", leaveCurrent);
  $("me").addEventListener("click", nickDialog);
  $("notify-button").addEventListener("click", () => {
    askNotifications();
    renderNotifyButton();
    if ("Notification" in window && Notification.permission === "denied") toast($("notify-button").title);
  });
  $("open-rooms").addEventListener("click", () => toggleDrawer("rooms"));
  $("open-peers").addEventListener("click", () => toggleDrawer("peers"));
  $("backdrop").addEventListener("click", () => document.body.classList.remove("rooms-open", "peers-open"));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") document.body.classList.remove("rooms-open", "peers-open");
    // Alt+Up / Alt+Down: the previous or next room or conversation, as in the TUI's list.
    if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
      e.preventDefault();
      const order = [...document.querySelectorAll("#room-list [data-room], #dm-list [data-room]")]
        .map((b) => b.dataset.room);
      const i = order.indexOf(state.current);
      const next = order[(i + (e.key === "ArrowUp" ? -1 : 1) + order.length) % order.length];
      if (next) switchTo(next);
    }
  });
  $("attach-button").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", (e) => {
    for (const f of e.target.files) upload(f);
    e.target.value = "";
  });
  const pane = $("chat");
  pane.addEventListener("dragover", (e) => {
    if (![...e.dataTransfer.types].includes("Files")) return;
    e.preventDefault();
    $("drop-hint").hidden = false;
  });
  pane.addEventListener("dragleave", (e) => {
    if (e.target === pane || !pane.contains(e.relatedTarget)) $("drop-hint").hidden = true;
  });
  pane.addEventListener("drop", (e) => {
    e.preventDefault();
    $("drop-hint").hidden = true;
    for (const f of e.dataTransfer.files) upload(f);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.following) onScroll();
  });
  trackViewport();
  renderNotifyButton();
  setInterval(() => {
    if (conn.open) {
      send({ cmd: "peers" });
      send({ cmd: "rooms" });
      askMembers();
    }
  }, PEERS_EVERY_MS);
  ensureRoom("general");
  schedule("header");
  conn.connect();
  focusComposer();
  document.body.dataset.ready = "1";
}

start();
