// The page's state: rooms and conversations with their messages, peers and files.
// Pure data (no DOM): app.js renders it.

/** Messages kept per room or conversation; older ones are dropped and re-fetched on scroll. */
export const MAX_ITEMS = 3000;
/** Messages fetched per history page. */
export const PAGE = 100;

/** Display order of the node (docs/history.md): ts, then author, then the author's seq. */
export function compareItems(a, b) {
  return a.ts - b.ts || (a.peer_id < b.peer_id ? -1 : a.peer_id > b.peer_id ? 1 : 0) ||
    a.aseq - b.aseq;
}

/**
 * Members of a `members` answer to list under "Heard through others": those we hold no
 * connection to and that are not listed as relayed already; online ones first.
 */
export function farMembers(members, relayed) {
  const listed = new Set(relayed.map((r) => r.peer_id));
  return members
    .filter((m) => !m.direct && !listed.has(m.peer_id))
    .sort((a, b) => (b.online - a.online) || a.nick.localeCompare(b.nick));
}

/** The key of a private conversation with a peer. */
export const dmKey = (peerId) => "@" + peerId;

/**
 * A message event (`message` or `dm`) as an item. Top-level events carry the author's
 * number as `author_seq` (the WebSocket's own `seq` numbers the stream); messages nested
 * in history and search answers keep the JSON-lines `seq`.
 */
export function toItem(ev, nested, myId) {
  const dm = ev.event === "dm";
  return {
    kind: "msg",
    id: ev.id,
    ts: ev.ts,
    peer_id: ev.peer_id,
    nick: ev.nick,
    text: ev.text,
    own: ev.own === true || ev.peer_id === myId,
    aseq: nested ? ev.seq : ev.author_seq ?? 0,
    late: ev.late === true,
    dm,
    to: dm ? ev.to : "",
    room: dm ? "" : ev.room,
    // History and search answers carry our own messages' delivery counts; live events do not.
    mark: Number.isInteger(ev.of) && ev.of > 0 ? `✓ ${ev.delivered ?? 0}/${ev.of}` : "",
  };
}

/** The room key an item belongs to: its room name, or @PEERID for a conversation. */
export function keyOf(item, myId) {
  if (!item.dm) return item.room;
  return dmKey(item.own || item.peer_id === myId ? item.to : item.peer_id);
}

export class Room {
  constructor(key) {
    this.key = key;
    this.kind = key.startsWith("@") ? "dm" : "room";
    this.peerId = this.kind === "dm" ? key.slice(1) : "";
    this.items = [];
    this.ids = new Set();
    this.unread = 0;
    this.mentions = 0;
    this.loaded = false; // the first history page arrived
    this.loading = false;
    this.complete = false; // nothing older to fetch
    this.private = false;
  }

  /** Add items (any order); return "append" if all went after the last one, else "reorder". */
  add(items) {
    let how = "none";
    for (const item of items) {
      if (item.kind === "msg") {
        if (this.ids.has(item.id)) continue;
        this.ids.add(item.id);
      }
      const last = this.items[this.items.length - 1];
      if (!last || compareItems(last, item) <= 0) {
        this.items.push(item);
        if (how === "none") how = "append";
      } else {
        // Late arrival or an older page: insert at its place (binary search).
        let lo = 0;
        let hi = this.items.length;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (compareItems(this.items[mid], item) <= 0) lo = mid + 1;
          else hi = mid;
        }
        this.items.splice(lo, 0, item);
        how = "reorder";
      }
    }
    return how;
  }

  /** Drop the oldest items beyond MAX_ITEMS; return how many went. */
  trim() {
    const extra = this.items.length - MAX_ITEMS;
    if (extra <= 0) return 0;
    const gone = this.items.splice(0, extra + MAX_ITEMS / 4);
    for (const item of gone) if (item.kind === "msg") this.ids.delete(item.id);
    this.complete = false;
    return gone.length;
  }

  /** The oldest message id held, for paging back. */
  oldestId() {
    for (const item of this.items) if (item.kind === "msg") return item.id;
    return null;
  }
}

/** A regular expression that finds a mention of `nick` (as the TUI does). */
export function mentionRe(nick) {
  const escaped = nick.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(?<![\\w@])@?${escaped}(?!\\w)`, "iu");
}
