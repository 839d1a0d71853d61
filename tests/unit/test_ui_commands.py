"""ui/commands.py: slash lines parse into the API's command structs, one executor runs them,
and the help texts and the web page's completion list name exactly the commands there are."""

from __future__ import annotations

import asyncio
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from chinwag import events as ev
from chinwag.errors import ChinwagError
from chinwag.node import Node, NodeConfig
from chinwag.ui import commands as c
from chinwag.ui import format as fmt
from chinwag.ui.line import LineUI

ROOT = Path(__file__).resolve().parents[2]

# --- parse_slash ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("/help", c.HelpCmd()),
        ("/peers", c.PeersCmd()),
        ("/PEERS", c.PeersCmd()),  # names are case-insensitive
        ("/nick  bob ", c.NickCmd(nick="bob")),
        ("/id", c.IdCmd()),
        ("/quit", c.Quit()),
        ("/history", c.HistoryCmd(room="dev", limit=20)),
        ("/history 5", c.HistoryCmd(room="dev", limit=5)),
        ("/search two words", c.SearchCmd(text="two words")),
        ("/info abcd1234", c.InfoCmd(id="abcd1234")),
        ("/join kitchen", c.JoinCmd(room="kitchen")),
        ("/join vault --passphrase s3cret", c.JoinCmd(room="vault", passphrase="s3cret")),
        ("/join vault --passphrase", c.JoinCmd(room="vault", passphrase="")),  # ask for it
        ("/join v  --passphrase  two  words ", c.JoinCmd(room="v", passphrase="two  words")),
        ("/leave", c.LeaveCmd(room="dev")),
        ("/leave kitchen", c.LeaveCmd(room="kitchen")),
        ("/rooms", c.RoomsCmd()),
        ("/switch #Kitchen", c.SwitchCmd(room="#Kitchen")),
        ("/msg bob hi  there", c.DmCmd(to="bob", text="hi  there")),
        ("/whois bob", c.WhoisCmd(who="bob")),
        ("/members", c.MembersCmd(room="dev")),
        ("/members ops", c.MembersCmd(room="ops")),
        ("/verify bob", c.VerifyCmd(who="bob")),
        ("/verify bob YES", c.VerifyCmd(who="bob", confirm=True)),
        ("/block bob", c.BlockCmd(who="bob")),
        ("/unblock bob", c.UnblockCmd(who="bob")),
        ("/send #dev /tmp/a b.txt", c.SendFileCmd(to="#dev", path="/tmp/a b.txt")),
        ("/accept abcd", c.AcceptFileCmd(id="abcd")),
        ("/accept abcd /tmp/in", c.AcceptFileCmd(id="abcd", dir="/tmp/in")),
        ("/reject abcd", c.RejectFileCmd(id="abcd")),
        ("/files", c.FilesCmd()),
        ("/cancel abcd", c.CancelFileCmd(id="abcd")),
        ("/cancel abcd --keep", c.CancelFileCmd(id="abcd", keep=True)),
    ],
)
def test_slash_lines_parse_into_command_structs(line: str, command: object) -> None:
    assert c.parse_slash(line, "dev") == command


@pytest.mark.parametrize(
    ("line", "usage"),
    [
        ("/nick", "/nick NAME"),
        ("/history x", "/history [N]"),
        ("/info", "/info MSGID"),
        ("/join", "/join ROOM [--passphrase [PASS]]"),
        ("/join a b", "/join ROOM [--passphrase [PASS]]"),
        # QA: a glued flag was read as the passphrase ("xyz"), joining a private room by typo.
        ("/join a --passphrasexyz", "/join ROOM [--passphrase [PASS]]"),
        ("/msg bob", "/msg NICK|PEERID TEXT"),
        ("/msg bob   ", "/msg NICK|PEERID TEXT"),
        ("/whois", "/whois NICK|PEERID"),
        ("/verify", "/verify NICK|PEERID [yes]"),
        ("/block", "/block NICK|PEERID"),
        ("/unblock", "/unblock NICK|PEERID"),
        ("/send bob", "/send NICK|PEERID|#ROOM PATH"),
        ("/accept", "/accept ID [DIR]"),
        ("/reject", "/reject ID"),
        ("/cancel", "/cancel ID [--keep]"),
        ("/cancel abcd --drop", "/cancel ID [--keep]"),
    ],
)
def test_a_malformed_slash_command_gives_its_usage(line: str, usage: str) -> None:
    with pytest.raises(ChinwagError, match=re.escape(f"usage: {usage}")):
        c.parse_slash(line, "general")


def test_unknown_and_terminal_only_commands() -> None:
    with pytest.raises(ChinwagError, match=r"unknown command /dance; try /help"):
        c.parse_slash("/dance", "general")
    with pytest.raises(ChinwagError, match="unknown command /bell"):
        c.parse_slash("/bell", "general")  # line mode and the web page have no bell
    assert c.parse_slash("/bell", "general", tui=True) == c.BellCmd(on=None)
    assert c.parse_slash("/bell off", "general", tui=True) == c.BellCmd(on=False)
    assert c.parse_slash("/keys", "general", tui=True) == c.KeysCmd()
    with pytest.raises(ChinwagError, match=re.escape("usage: /bell [on|off]")):
        c.parse_slash("/bell loud", "general", tui=True)
    with pytest.raises(ChinwagError, match="x" * 20 + ";"):
        c.parse_slash("/" + "x" * 1000, "general")  # the name is cut in the message


def _parsed(parse: c._Parser) -> object:
    """Return what a slash parser makes of the first sample argument it accepts."""
    for arg in ("x y", "x", "1", ""):
        try:
            return parse(arg, "general")
        except ChinwagError:
            continue
    raise AssertionError("no sample argument parses")


def test_slash_commands_of_the_api_use_its_structs() -> None:
    api = set(typing.get_args(c.Command))
    local = set(typing.get_args(c.LocalCommand))
    made = {name: type(_parsed(parse)) for name, parse in (c.SLASH | c.TUI_SLASH).items()}
    assert set(made.values()) <= api | local
    # Every JSON command but `send` (a line without a slash) has its slash command.
    assert api - set(made.values()) == {c.Send}


# --- help texts and the web page's list ------------------------------------------------


def _named(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w/])/([a-z_]+)", text))


def test_help_names_every_slash_command_and_no_other() -> None:
    assert _named(c.HELP) == set(c.SLASH)
    assert _named(c.TUI_HELP) - {"switch"} == set(c.TUI_SLASH)


def test_the_web_pages_completion_list_is_the_slash_commands_less_quit() -> None:
    app = (ROOT / "src/chinwag/ui/web/static/app.js").read_text()
    found = re.search(r"const COMMANDS = \[(.*?)\];", app, re.S)
    assert found is not None
    listed = re.findall(r'"([a-z_]+)"', found.group(1))
    assert listed == [n for n in c.slash_names() if n != "quit"]


# --- execute ---------------------------------------------------------------------------


class FakeNode:
    """Records the Node methods called; answers each with a marker struct."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            if name in ("join", "send_file", "wait_drained", "connect_via", "lookup"):
                return self._done(name)
            if name in ("post", "dm"):
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(ev.Error(message=name))
                return fut
            return ev.Error(message=name)

        return call

    async def _done(self, name: str) -> ev.Error:
        return ev.Error(message=name)


EXECUTED: list[tuple[c.Command, str, tuple[Any, ...], bool]] = [
    (c.Send(text="hi", room="dev"), "post", ("hi", "dev"), False),
    (c.DmCmd(to="bob", text="hi"), "dm", ("bob", "hi"), False),
    (c.PeersCmd(), "peers", (), True),
    (c.MembersCmd(room="dev"), "members", ("dev",), True),
    (c.NickCmd(nick="bob"), "set_nick", ("bob",), False),
    (c.HistoryCmd(room="dev", limit=5, before="ab"), "history", ("dev", 5, "ab"), True),
    (c.SearchCmd(text="x", limit=3), "search", ("x", 3), True),
    (c.InfoCmd(id="ab"), "info", ("ab",), True),
    (c.JoinCmd(room="dev", passphrase="pw"), "join", ("dev", "pw"), False),
    (c.LeaveCmd(room="dev"), "leave", ("dev",), False),
    (c.RoomsCmd(), "rooms", (), True),
    (c.WhoisCmd(who="bob"), "whois", ("bob",), True),
    (c.VerifyCmd(who="bob", confirm=True), "verify", ("bob", True), True),
    (c.BlockCmd(who="bob"), "block", ("bob", True), True),
    (c.UnblockCmd(who="bob"), "block", ("bob", False), True),
    (c.SendFileCmd(to="bob", path="/p"), "send_file", ("bob", "/p"), False),
    (c.AcceptFileCmd(id="ab", dir="/d"), "accept_file", ("ab", "/d"), False),
    (c.RejectFileCmd(id="ab"), "reject_file", ("ab",), False),
    (c.CancelFileCmd(id="ab", keep=True), "cancel_file", ("ab", True), False),
    (c.FilesCmd(), "files", (), True),
    (c.InviteCmd(), "invite", (), True),
    (c.AddCmd(code="chinwag:x"), "add_contact", ("chinwag:x",), False),
    (c.AddCmd(peer_id="p" * 52), "add_peer", ("p" * 52,), False),
    (c.AddCmd(code="p" * 52), "add_peer", ("p" * 52,), False),
    (c.LookupCmd(peer_id="p" * 52), "lookup", ("p" * 52,), False),
    (c.ContactsCmd(), "contacts", (), True),
    (c.ForgetCmd(peer="bob"), "forget_contact", ("bob",), True),
    (c.ConnectCmd(peer_id="bob", via="r", addr="h:1"), "connect_via", ("bob", "r", "h:1"), False),
    (c.HeldCmd(), "held", (), True),
    (c.AcceptKeyCmd(who="bob"), "accept_key", ("bob",), True),
    (c.DiscardHeldCmd(who="bob"), "discard_held", ("bob",), True),
]


def test_every_api_command_but_quit_has_its_execution_case() -> None:
    covered = {type(cmd) for cmd, *_ in EXECUTED}
    assert set(typing.get_args(c.Command)) - covered == {c.Quit}


@pytest.mark.parametrize(("cmd", "method", "args", "answered"), EXECUTED)
async def test_execute_calls_the_node_and_answers_what_the_api_documents(
    cmd: c.Command, method: str, args: tuple[Any, ...], answered: bool
) -> None:
    node = FakeNode()
    answer = await c.execute(typing.cast(Node, node), cmd, c.Session(typing.cast(Node, node)))
    assert node.calls[0] == (method, args)
    assert cmd.answered is answered
    if answered:
        assert answer == ev.Error(message=method)


async def test_the_default_session_waits_for_room_messages_to_drain() -> None:
    node = FakeNode()
    session = c.Session(typing.cast(Node, node))
    await c.execute(typing.cast(Node, node), c.Send(text="hi"), session)
    await c.execute(typing.cast(Node, node), c.DmCmd(to="bob", text="hi"), session)
    assert [name for name, _ in node.calls] == ["post", "wait_drained", "dm"]


async def test_an_empty_passphrase_is_asked_for_and_a_cancel_joins_nothing() -> None:
    node = FakeNode()

    class Asking(c.Session):
        async def ask_secret(self, room: str) -> str | None:
            return None if room == "no" else "typed"

    session = Asking(typing.cast(Node, node))
    await c.execute(typing.cast(Node, node), c.JoinCmd(room="vault", passphrase=""), session)
    assert (
        await c.execute(typing.cast(Node, node), c.JoinCmd(room="no", passphrase=""), session)
        is None
    )
    assert node.calls == [("join", ("vault", "typed"))]
    # The JSON API's own sessions ask nothing: the node refuses an empty passphrase itself.
    await c.execute(
        typing.cast(Node, node),
        c.JoinCmd(room="v", passphrase=""),
        c.Session(typing.cast(Node, node)),
    )
    assert node.calls[-1] == ("join", ("v", ""))


async def test_quit_is_the_interfaces_own() -> None:
    node = typing.cast(Node, FakeNode())
    with pytest.raises(ChinwagError):
        await c.execute(node, c.Quit(), c.Session(node))


# --- line mode over a real node -----------------------------------------------------


async def test_line_mode_runs_slash_commands_through_the_command_layer(tmp_path: Path) -> None:
    node = Node(
        NodeConfig(
            data_dir=tmp_path,
            nick="me",
            port=0,
            port_fallback=False,
            bind="127.0.0.1",
            discovery=False,
            downloads=tmp_path / "downloads",
        )
    )
    out: list[str] = []
    errors: list[str] = []
    node.subscribe(lambda e: errors.append(e.message) if isinstance(e, ev.Error) else None)
    line = LineUI(node, sink=out.append)
    await node.start()
    try:

        async def run(text: str) -> list[str]:
            del out[:]
            assert await line.handle(text)
            return list(out)

        pid = node.identity.peer_id
        assert (await run("/id"))[0] == f"* peer id {pid}"
        assert await run("/peers") == ["* no peers connected"]
        assert await run("/members") == ["* no other members known in #general"]
        assert await run("/files") == ["* no file offers yet; /send WHO PATH offers one"]
        assert await run("/join kitchen") == []  # joined: no history there yet
        assert await run("/switch kitchen") == ["* now typing in #kitchen"]
        assert await run("in the kitchen") == []
        [shown] = await run("/history")
        assert "me" in shown and "in the kitchen" in shown and "(not delivered yet)" in shown
        assert await run("/search nothing-like-it") == ["* nothing contains 'nothing-like-it'"]
        rooms = await run("/rooms")
        assert rooms == ["*   #general  1 online", "* * #kitchen  1 online"]
        assert (await run("/help"))[0].startswith("commands:")
        assert await run("/bell") == [] and errors[-1] == "unknown command /bell; try /help"
        assert await run("/switch nowhere") == []
        assert errors[-1] == "you are not in #nowhere; /join it first"
        assert await run("/join vault --passphrase") == []  # no prompt here: say how
        assert errors[-1] == "give the passphrase on the line: /join ROOM --passphrase PASS"
        assert not await line.handle("/quit")
    finally:
        await node.stop("quit")


async def test_piped_line_mode_forgets_a_failed_transfers_progress(tmp_path: Path) -> None:
    # Review: a failed transfer left its last-progress-line time behind for good.
    node = Node(NodeConfig(data_dir=tmp_path, discovery=False))
    ui = LineUI(node, sink=lambda _line: None)  # with a sink: not interactive (piped)
    for i in range(3):
        fid = f"{i:032x}"
        ui.on_event(ev.FileProgress(id=fid, bytes=1, total=10))
        ui.on_event(ev.FileFailed(id=fid, reason="cancelled"))
    assert ui._progress_printed == {} and ui._transfers == {}


@pytest.mark.parametrize("answer", [KeyboardInterrupt, EOFError, ""])
async def test_ctrl_c_at_the_passphrase_prompt_cancels_the_join_not_the_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: type[BaseException] | str
) -> None:
    # QA: Ctrl-C at line mode's passphrase prompt ended chinwag (exit 130) instead of the join.
    from prompt_toolkit import PromptSession

    async def prompt(_self: object, *_args: object, **_kwargs: object) -> str:
        if isinstance(answer, str):
            return answer
        raise answer()

    monkeypatch.setattr(PromptSession, "prompt_async", prompt)
    node = Node(NodeConfig(data_dir=tmp_path, nick="me", port=0, bind="127.0.0.1", discovery=False))
    out: list[str] = []
    errors: list[str] = []
    node.subscribe(lambda e: errors.append(e.message) if isinstance(e, ev.Error) else None)
    line = LineUI(node, sink=out.append)
    line.interactive = True  # as at a terminal: the passphrase is asked at the prompt
    await node.start()
    try:
        assert await line.handle("/join vault --passphrase")
        assert out == ["* join cancelled"] and errors == []
        assert not any(r.name == "vault" for r in node.rooms().rooms)
    finally:
        await node.stop("quit")


def test_closing_a_private_conversation_is_not_shown_as_leaving_a_hash_room() -> None:
    # QA: `/leave` in the TUI's view of a private conversation said "left #@t4frwmew".
    from chinwag.ui import format as fmt

    assert fmt.left_line(ev.Left(room="kitchen")) == "left #kitchen"
    assert fmt.left_line(ev.Left(room="@t4frwmew")) == ("closed the private conversation @t4frwmew")


async def test_leaving_the_room_typed_in_moves_line_mode_to_a_joined_room(tmp_path: Path) -> None:
    # QA: after `/leave` of general, line mode kept typing into the room it had left
    # (prompt `#general`, /rooms marked it current, every line an error).
    node = Node(NodeConfig(data_dir=tmp_path, nick="me", port=0, bind="127.0.0.1", discovery=False))
    out: list[str] = []
    line = LineUI(node, sink=out.append)
    node.subscribe(line.on_event)  # a sink alone does not follow events (the TUI's case)
    await node.start()
    try:
        assert await line.handle("/join kitchen") and line.room == "kitchen"
        assert await line.handle("/switch general")
        del out[:]
        assert await line.handle("/leave")
        assert line.room == "kitchen"
        assert out == ["* left #general", "* now typing in #kitchen"]
        del out[:]
        assert await line.handle("/leave")  # the last room: nowhere else to go
        assert line.room == "general" and out == ["* left #kitchen"]
    finally:
        await node.stop("quit")


def test_members_lines_say_how_each_member_is_reached() -> None:
    answer = ev.Members(
        room="general",
        members=[
            ev.Member(peer_id="a" * 52, nick="ann", online=True, direct=True, last_seen=1.0),
            ev.Member(peer_id="b" * 52, nick="bo", online=True, direct=False, last_seen=1.0),
            ev.Member(peer_id="c" * 52, nick="cy", online=False, direct=False, last_seen=0.0),
        ],
    )
    lines = fmt.answer_lines(c.MembersCmd(), answer, typing.cast(Node, None), "general")
    assert lines[:3] == [
        "members of #general:",
        "  ann aaaaaaaa (online, connected)",
        "  bo bbbbbbbb (online, through others)",
    ]
    assert lines[3].startswith("  cy cccccccc (offline, last seen ")
