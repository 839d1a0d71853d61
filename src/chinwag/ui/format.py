"""Text shared by line mode and the terminal UI: cleaning peer text, message lines,
the answers of commands and the information lines of node events.

Everything a peer controls (texts, nicks, reasons, room and file names) goes
through `clean` before it is shown.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata
from collections.abc import Callable

from chinwag import events as ev
from chinwag.crypto.identity import fingerprint, short_id
from chinwag.node import Node
from chinwag.ui import commands as c
from chinwag.ui.clock import local_datetime
from chinwag.units import human_size

_COLOURS = ["31", "32", "33", "34", "35", "36", "91", "92", "93", "94", "95", "96"]

#: Wraps text in an ANSI colour code (or leaves it as it is): (code, text) -> text.
Paint = Callable[[str, str], str]


def no_paint(_code: str, text: str) -> str:
    """Return text uncoloured."""
    return text


def _is_control(char: str) -> bool:
    # Cc, Cf (bidi overrides), Co, Cs, Cn: nothing a peer may use to drive our terminal.
    return char not in "\t\n" and unicodedata.category(char)[0] == "C"


def clean(text: str) -> str:
    """Strip terminal control characters so a peer cannot drive our terminal."""
    if text.isprintable():  # the common case: nothing to strip
        return text
    return "".join(c for c in text if not _is_control(c))


def nick_colour(peer_id: str) -> str:
    """Return a stable ANSI colour code for a peer."""
    return _COLOURS[hashlib.sha256(peer_id.encode()).digest()[0] % len(_COLOURS)]


def progress_line(name: str, p: ev.FileProgress) -> str:
    """Return `name 45% 12.0 MB/26.7 MB 110.2 MB/s 0:00:05 left` for a transfer."""
    percent = 100 * p.bytes // p.total if p.total else 100
    left = ""
    if p.rate > 0 and p.total > p.bytes:
        seconds = int((p.total - p.bytes) / p.rate)
        left = f" {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} left"
    rate = f" {human_size(p.rate)}/s" if p.rate > 0 else ""
    return f"{clean(name)} {percent}% {human_size(p.bytes)}/{human_size(p.total)}{rate}{left}"


def message_line(
    event: ev.Message | ev.DirectMessage, room: str, paint: Paint = no_paint, mark: str = ""
) -> str:
    """Return one message as a display line: time, room (unless `room`), nick, short id,
    text, marks."""
    stamp = local_datetime(event.ts)
    when = stamp.strftime("%H:%M:%S" if stamp.date() == dt.date.today() else "%m-%d %H:%M")
    who = paint(nick_colour(event.peer_id), clean(event.nick))
    sid = paint("2", short_id(event.peer_id))
    if isinstance(event, ev.DirectMessage):
        where = paint("35", f"[private to {short_id(event.to)}] " if event.own else "[private] ")
    else:
        where = "" if event.room == room else f"#{event.room} "
    text = clean(event.text).replace("\n", "\n    ")
    late = paint("33", " (late)") if event.late else ""
    tail = paint("2", f"  [{event.id[:8]}{mark}]") if event.own or mark else ""
    return f"{paint('2', when)} {where}{who} {sid}: {text}{late}{tail}"


def delivery_mark(node: Node, msg: ev.Message | ev.DirectMessage) -> str:
    """Return the delivery mark of a message in history output (empty if not ours)."""
    if not msg.own:
        return ""
    count, of = node.delivery_of(msg)
    return f" \u2713 {count}/{of}" if of else " (not delivered yet)"


def id_lines(peer_id: str) -> list[str]:
    """Return the information lines of `/id`."""
    return [f"peer id {peer_id}", f"fingerprint {fingerprint(peer_id)}"]


def answer_lines(cmd: c.Command, answer: c.Answer | None, node: Node, room: str) -> list[str]:
    """Return the information lines that show a command's answer (`room`: the room typed in).

    Messages (history, search) are not among them: they are message lines.
    """
    if isinstance(answer, ev.Peers):
        return _peers(answer)
    if isinstance(answer, ev.Members):
        return _members(answer)
    if isinstance(answer, ev.RoomList):
        return [
            f"{'*' if r.name == room else (' ' if r.joined else '-')} #{clean(r.name)}  "
            f"{r.members} online"
            for r in answer.rooms
        ]
    if isinstance(answer, ev.SearchResult) and isinstance(cmd, c.SearchCmd):
        return [] if answer.messages else [f"nothing contains {cmd.text!r}"]
    if isinstance(answer, ev.Whois):
        return _whois(cmd, answer)
    if isinstance(answer, ev.Info):
        who = ", ".join(f"{clean(h.nick)} {short_id(h.peer_id)}" for h in answer.holders)
        return [
            f"{answer.id} by {short_id(answer.peer_id)} #{answer.room} seq {answer.seq}: "
            f"held by {len(answer.holders)} peer(s){': ' + who if who else ''}"
        ]
    if isinstance(answer, ev.FileInfo) and isinstance(cmd, c.AcceptFileCmd):
        return [f"fetching {clean(answer.name)!r} ({human_size(answer.size)})"]
    if isinstance(answer, ev.FileInfo) and isinstance(cmd, c.RejectFileCmd):
        return [f"declined {clean(answer.name)!r}"]
    if isinstance(answer, ev.FileList):
        return _files(answer, node)
    if isinstance(answer, ev.Invite):
        return invite_lines(answer)
    if isinstance(answer, ev.Contacts):
        return _contacts(answer)
    if isinstance(answer, ev.ContactForgotten):
        return [f"forgot contact {clean(answer.nick)} ({short_id(answer.peer_id)})"]
    if isinstance(answer, ev.HeldDms):
        return [held_line(h) for h in answer.held] or ["no private message is held"]
    if isinstance(answer, ev.KeyAccepted):
        return [
            f"{clean(answer.nick)} is now verified as {short_id(answer.peer_id)} "
            f"(was {short_id(answer.old_peer_id)}); {answer.sent} held message(s) sent"
        ]
    if isinstance(answer, ev.HeldDiscarded):
        return [
            f"discarded {answer.count} message(s) held for {clean(answer.nick)} "
            f"({short_id(answer.peer_id)})"
        ]
    return []


def held_line(event: ev.DmHeld) -> str:
    """Return the line of a private message held on a key change (pending, not sent)."""
    nick = clean(event.nick)
    return (
        f"held (not sent) to {nick}: {clean(event.text)!r}: {nick} is now key "
        f"{short_id(event.peer_id)}, not the verified {short_id(event.old_peer_id)}; "
        f"/acceptkey {nick} sends it, /discardheld {nick} deletes it"
    )


def invite_lines(invite: ev.Invite) -> list[str]:
    """Return the lines showing our invite code and what it names."""
    expires = local_datetime(invite.expires).strftime("%Y-%m-%d %H:%M")
    where = ", ".join(invite.addresses) or "no address"
    relays = f"; relays: {', '.join(r.address for r in invite.relays)}" if invite.relays else ""
    return [
        f"your invite code (valid until {expires}; a friend types /add CODE):",
        invite.code,
        f"it names: {where}{relays}",
    ]


def _contacts(answer: ev.Contacts) -> list[str]:
    if not answer.contacts:
        return ["no contacts yet; /invite gives your code, /add CODE adds a friend's"]
    lines = []
    for ct in answer.contacts:
        if ct.online:
            state = f"online ({ct.path})"
        elif ct.last_seen:
            state = f"offline, last seen {local_datetime(ct.last_seen).strftime('%Y-%m-%d %H:%M')}"
        else:
            state = "never connected yet"
        lines.append(f"{clean(ct.nick)} {short_id(ct.peer_id)}: {state}")
    return lines


def contact_added_line(event: ev.ContactAdded) -> str:
    """Return the line shown when a contact was added."""
    return f"added contact {clean(event.nick)} ({short_id(event.peer_id)}); connecting"


def lookup_line(event: ev.Lookup) -> str:
    """Return the line shown when a DHT lookup of a peer ended."""
    if event.found:
        return f"found {short_id(event.peer_id)} on the DHT in {event.ms} ms; connecting"
    why = f" (a record was refused: {clean(event.reason)})" if event.reason else ""
    return f"{short_id(event.peer_id)} not found on the DHT{why}"


def before_lines(cmd: c.SlashCommand) -> list[str]:
    """Return the information lines shown before a slow command runs."""
    if isinstance(cmd, c.SendFileCmd):
        return [f"hashing {cmd.path} ..."]
    return []


def _peers(answer: ev.Peers) -> list[str]:
    if not answer.peers:
        return ["no peers connected"]
    lines = []
    for p in answer.peers:
        since = local_datetime(p.since).strftime("%H:%M:%S")
        rtt = "" if p.rtt_ms is None else f", rtt {p.rtt_ms:.1f} ms"
        how = f"relayed via {short_id(p.via)}" if p.path == "relayed" and p.via else p.address
        lines.append(f"{clean(p.nick)} {short_id(p.peer_id)} {how} since {since}{rtt}")
    return lines


def _members(answer: ev.Members) -> list[str]:
    if not answer.members:
        return [f"no other members known in #{clean(answer.room)}"]
    lines = [f"members of #{clean(answer.room)}:"]
    for p in answer.members:
        if p.online:
            how = "online, connected" if p.direct else "online, through others"
        else:
            how = "offline, last seen " + local_datetime(p.last_seen).strftime("%H:%M:%S")
        lines.append(f"  {clean(p.nick)} {short_id(p.peer_id)} ({how})")
    return lines


def _whois(cmd: c.Command, w: ev.Whois) -> list[str]:
    if isinstance(cmd, c.VerifyCmd):
        lines = [f"safety number with {clean(w.nick)}: {w.safety_number}"]
        if w.verified:
            lines.append(f"{clean(w.nick)} ({short_id(w.peer_id)}) is verified")
        else:
            lines.append(f"compare it aloud; if it matches, type /verify {cmd.who} yes")
        return lines
    if isinstance(cmd, c.BlockCmd | c.UnblockCmd):
        verb = "blocked" if isinstance(cmd, c.BlockCmd) else "unblocked"
        return [f"{verb} {clean(w.nick)} ({short_id(w.peer_id)})"]
    state = "verified" if w.verified else "not verified"
    extra = ", blocked" if w.blocked else ""
    return [
        f"{clean(w.nick)}: {w.peer_id} ({state}{extra}, {'online' if w.online else 'offline'})",
        f"fingerprint {w.fingerprint}",
    ]


def _files(answer: ev.FileList, node: Node) -> list[str]:
    if not answer.files:
        return ["no file offers yet; /send WHO PATH offers one"]
    lines = []
    for f in answer.files:
        arrow = "\u2191" if f.direction == "out" else "\u2193"
        if f.room:
            who = f"#{f.room}"
        elif f.direction == "out":  # our private offer: name its recipient
            who = "to " + clean(node.whois(f.peer_id).nick)
        else:
            who = "from " + clean(f.nick)
        done = f" {100 * f.bytes // f.size}%" if f.size and f.state != "done" else ""
        where = f" -> {clean(f.path)}" if f.path and f.direction == "in" else ""
        lines.append(
            f"{arrow} [{f.id[:8]}] {clean(f.name)!r} {human_size(f.size)} {who}: "
            f"{f.state}{done}{where}"
        )
    return lines


# --- node events: the information lines both text interfaces show ----------------------


def peer_joined_line(event: ev.PeerJoined) -> str:
    """Return the line shown when a peer connects."""
    who = f"{clean(event.nick)} ({short_id(event.peer_id)})"
    if event.path == "relayed" and event.via:
        return f"{who} joined via relay {short_id(event.via)}"
    return f"{who} joined from {event.address}"


def path_line(event: ev.PathChanged) -> str:
    """Return the line shown when a connected peer is reached another way."""
    how = f"relayed via {short_id(event.via)}" if event.via else event.path
    return f"{short_id(event.peer_id)} is now reached {how}"


def peer_left_line(event: ev.PeerLeft) -> str:
    """Return the line shown when a peer disconnects."""
    return f"{clean(event.nick)} ({short_id(event.peer_id)}) left: {clean(event.reason)}"


def nick_changed_line(event: ev.NickChanged) -> str:
    """Return the line shown when we or a peer change nick."""
    if event.own:
        return f"you are now known as {event.nick}"
    return f"{clean(event.old)} ({short_id(event.peer_id)}) is now {clean(event.nick)}"


def joined_line(event: ev.Joined) -> str:
    """Return the line shown when we join a room."""
    what = "private room" if event.private else "room"
    return f"joined {what} #{event.room}; messages you type now go there"


def left_line(event: ev.Left) -> str:
    """Return the line shown when we leave a room or close a private conversation."""
    if event.room.startswith("@"):  # `/leave` in a conversation's view: not a `#room`
        return f"closed the private conversation {event.room}"
    return f"left #{event.room}"


def gap_range(event: ev.Gap) -> str:
    """Return the missing numbers of a gap: `41` or `41-43`."""
    lo, hi = event.missing
    return f"{lo}" if lo == hi else f"{lo}-{hi}"
