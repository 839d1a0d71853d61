"""The JSON-lines API: peers and nick commands, and bad input that must not hurt the node."""

from __future__ import annotations

import asyncio
import json

from it_support import PROMPT_S, ChinwagProcess, Event, NodeFactory, chat_works, connected, count


def line(cmd: object) -> bytes:
    """One JSON command line."""
    return json.dumps(cmd).encode() + b"\n"


#: Input lines that must each yield exactly one error event and change nothing.
BAD_LINES: dict[str, bytes] = {
    "not json": b"this is not json\n",
    "truncated json": b'{"cmd": "send", "text": "unterminated\n',
    "json array": b"[1, 2, 3]\n",
    "json string": b'"just a string"\n',
    "empty object": b"{}\n",
    "unknown command": line({"cmd": "frobnicate"}),
    "command not a string": line({"cmd": 42}),
    "send without text": line({"cmd": "send"}),
    "send text not a string": line({"cmd": "send", "text": 5}),
    "send text null": line({"cmd": "send", "text": None}),
    "send text 4097 bytes": line({"cmd": "send", "text": "x" * 4097}),
    "send text 4098 bytes in 2049 chars": line({"cmd": "send", "text": "\u00e9" * 2049}),
    "send room not a string": line({"cmd": "send", "text": "hi", "room": 7}),
    "nick without nick": line({"cmd": "nick"}),
    "invalid utf-8": b'\xff\xfe{"cmd": "peers"}\x00\n',
    "line over 64 KiB": line({"cmd": "send", "text": "y" * 70_000}),
}


async def wait_new(node: ChinwagProcess, mark: int, name: str) -> Event:
    """Wait for an event of this name printed at or after index mark."""
    before = {id(ev) for ev in node.events[:mark]}
    return await node.wait_for(
        name, pred=lambda ev: id(ev) not in before, timeout=PROMPT_S, from_start=True
    )


async def expect_one_error(node: ChinwagProcess, data: bytes, case: str) -> Event:
    """Write data; expect exactly one error event and no message, then a working API."""
    mark = len(node.events)
    await node.send_raw(data)
    await node.send({"cmd": "peers"})
    err = await wait_new(node, mark, "error")
    await wait_new(node, mark, "peers")
    window = node.events[mark:]
    assert isinstance(err.get("message"), str) and err["message"], (case, err)
    errors = [ev for ev in window if ev.get("event") == "error"]
    assert len(errors) == 1, (case, errors)
    assert not [ev for ev in window if ev.get("event") == "message"], (case, window)
    return err


async def test_bad_api_input_gives_error_and_node_keeps_running(node: NodeFactory) -> None:
    """Every kind of bad command line yields one error event; the node then still chats."""
    a = node("alice", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)

    for case, data in BAD_LINES.items():
        await expect_one_error(a, data, case)
        assert a.returncode is None, (case, a.stderr_tail())

    # The limits are inclusive: exactly 4096 bytes of UTF-8 is a valid message.
    await chat_works(a, b, text="x" * 4096)
    await chat_works(a, b, text="\u00e9" * 2048)
    await chat_works(a, b, text="still alive")
    assert count(b, "message") == 3, b.messages()
    assert count(a, "error") == len(BAD_LINES)


async def test_peers_command_lists_connected_peers(node: NodeFactory) -> None:
    """{"cmd":"peers"} answers with every connected peer's id, nick and address."""
    a, b, c = node("alice"), node("bob"), node("carol")
    await asyncio.gather(a.start(), b.start(), c.start())
    await a.wait_for_peers([b.peer_id, c.peer_id])
    await a.send({"cmd": "peers"})
    ev = await a.wait_for("peers", timeout=PROMPT_S)
    listed = {p["peer_id"]: p for p in ev["peers"]}
    assert set(listed) == {b.peer_id, c.peer_id}, ev
    assert len(ev["peers"]) == 2, ev
    assert listed[b.peer_id]["nick"] == "bob" and listed[c.peer_id]["nick"] == "carol", ev
    for p in ev["peers"]:
        assert isinstance(p["address"], str) and "127.0.0.1" in p["address"], p

    lone = node("dave", discovery=False)
    await lone.start()
    await lone.send({"cmd": "peers"})
    assert (await lone.wait_for("peers", timeout=PROMPT_S))["peers"] == []


async def test_nick_change_and_invalid_nicks(node: NodeFactory) -> None:
    """A new nick is carried by later messages; an invalid nick is refused with an error."""
    a = node("alice", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)

    before = await chat_works(a, b, text="as alice")
    assert before["nick"] == "alice"
    await a.send({"cmd": "nick", "nick": "newname"})
    # The directly connected peer hears of it at once (a `nick` frame), not only from
    # later messages.
    told = await b.wait_for("nick", timeout=PROMPT_S, peer_id=a.peer_id)
    assert (told["nick"], told["old"]) == ("newname", "alice"), told
    own = await chat_works(a, b, text="as newname")
    assert own["nick"] == "newname", own
    assert (await b.wait_for_message("as newname"))["nick"] == "newname"

    for bad in ["", "x" * 33, "has space", "semi;colon", "new\nline", 42, None]:
        await expect_one_error(a, line({"cmd": "nick", "nick": bad}), f"nick {bad!r}")
    await a.send({"cmd": "nick", "nick": "A_b.c-9" + "z" * 25})  # 32 chars: the longest valid
    own = await chat_works(a, b, text="longest nick")
    assert own["nick"] == "A_b.c-9" + "z" * 25, own
    assert not [ev for ev in b.events if ev.get("event") == "error"]
