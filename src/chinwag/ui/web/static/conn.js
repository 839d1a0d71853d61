// The page's one WebSocket: commands out, events in; reconnects by itself and resumes.
//
// Protocol (docs/web.md, docs/api.md): on every (re)connect the page sends
// {"cmd":"resume","since":LAST_SEQ,"server_run":RUN} first; the server answers with
// `hello`, then replays the events it numbered after LAST_SEQ, or sends `resync` when it
// cannot (the page then re-fetches its state). Replies to our commands carry the current
// seq without a new number, so a seq is never used to drop a frame: messages are
// deduplicated by their id instead.

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;

export class Connection {
  /** onEvent(obj) gets every event; onState(state) gets "connecting" | "online" | "offline". */
  constructor(onEvent, onState) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastSeq = 0;
    this.serverRun = null;
    this.ws = null;
    this.retryMs = RETRY_MIN_MS;
    this.queue = []; // commands typed while offline, sent after the resume
    this.open = false;
    this.loggedOut = false;
  }

  connect() {
    this.onState(this.loggedOut ? "loggedout" : "connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    this.ws = ws;
    ws.addEventListener("open", () => {
      const resume = { cmd: "resume", since: this.lastSeq };
      if (this.serverRun) resume.server_run = this.serverRun;
      ws.send(JSON.stringify(resume));
      this.open = true;
      this.loggedOut = false;
      this.retryMs = RETRY_MIN_MS;
      const queued = this.queue.splice(0);
      for (const cmd of queued) ws.send(JSON.stringify(cmd));
      this.onState("online");
    });
    ws.addEventListener("message", (e) => {
      let obj;
      try {
        obj = JSON.parse(e.data);
      } catch {
        return;
      }
      if (typeof obj.seq === "number" && obj.event !== "hello") {
        this.lastSeq = Math.max(this.lastSeq, obj.seq);
      }
      if (obj.event === "hello") {
        if (this.serverRun !== null && obj.server_run !== this.serverRun) this.lastSeq = 0;
        this.serverRun = obj.server_run;
        // Everything up to hello.seq is either replayed next or covered by resync.
      }
      this.onEvent(obj);
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.open = false;
      this.onState(this.loggedOut ? "loggedout" : "offline");
      this.checkSession();
      const wait = this.retryMs * (0.75 + Math.random() * 0.5);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      setTimeout(() => this.connect(), wait);
    });
  }

  /**
   * A WebSocket refused for want of a session looks like any closed socket: ask the
   * page itself. 401 means chinwag restarted (sessions live in its memory) or the token
   * was rotated: the page says to open the printed link, and keeps retrying, so logging
   * in again in another tab brings this one back.
   */
  checkSession() {
    fetch("/", { method: "GET", credentials: "same-origin", cache: "no-store" })
      .then((resp) => {
        this.loggedOut = resp.status === 401;
        if (this.loggedOut && !this.open) this.onState("loggedout");
      })
      .catch(() => { /* the server is down: "offline" says it */ });
  }

  /** Send one command object; while offline it waits for the next connection. */
  send(cmd) {
    if (this.open && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(cmd));
    else if (this.queue.length < 1000) this.queue.push(cmd);
  }

  /** Drop the socket (tests and the "reconnect" path use it); it comes back by itself. */
  drop() {
    if (this.ws) this.ws.close();
  }
}
