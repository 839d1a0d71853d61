"""Key material moved safely (issue 12 item 5), with real `chinwag` processes on loopback:
owner-only data directories, export/import of an identity with its store, and private
messages held while a verified peer's key changed.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

from it_support import PROMPT_S, ChinwagProcess, NodeFactory, ask, chat_works, connected


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def run_cli(*args: str, stdin: bytes = b"", timeout: float = 60.0) -> tuple[int, str, str]:
    """Run `python -m chinwag ARGS`; return (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chinwag", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def test_a_node_started_on_a_loose_data_dir_tightens_it_and_warns(
    node: NodeFactory, tmp_path: Path
) -> None:
    """A data dir copied with loose modes (0755, key and token 0644): the node starts, makes
    them owner-only and says so on stderr; the peer id is the same."""
    data = tmp_path / "a"
    status, out, _err = await run_cli("id", "--data-dir", str(data))
    assert status == 0, out
    peer_id = out.split()[2]
    (data / "web-token").write_text("t" * 64)
    for path, loose in [(data, 0o755), (data / "identity.key", 0o644), (data / "web-token", 0o644)]:
        os.chmod(path, loose)
    a = node("a", data_dir=data, discovery=False)
    ready = await a.start()
    assert ready["peer_id"] == peer_id
    assert (mode(data), mode(data / "identity.key"), mode(data / "web-token")) == (
        0o700, 0o600, 0o600,
    )  # fmt: skip
    log = a.stderr_path.read_text()
    assert "identity.key was readable by other users (mode 644); made it 600" in log, log
    assert "web-token was readable" in log and "data directory" in log, log
    for name in os.listdir(data):
        assert mode(data / name) & 0o077 == 0, name


async def test_chinwag_id_on_a_loose_data_dir_tightens_it(tmp_path: Path) -> None:
    data = tmp_path / "a"
    assert (await run_cli("id", "--data-dir", str(data)))[0] == 0
    os.chmod(data, 0o755)
    os.chmod(data / "identity.key", 0o644)
    status, _out, err = await run_cli("id", "--data-dir", str(data))
    assert status == 0
    assert (mode(data), mode(data / "identity.key")) == (0o700, 0o600)
    assert "readable by other users" in err, err


PASSPHRASE = "correct horse battery staple"


def ratchet_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the store's ratchet tables (olm_*, megolm_*), by table."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if r[0].startswith(("olm_", "megolm_"))
        ]
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    finally:
        con.close()


async def test_export_and_import_move_a_node_with_history_contacts_and_marks(
    node: NodeFactory, tmp_path: Path, discovery_port: int
) -> None:
    """A node with history, a contact and a verified mark exports (refused while it runs);
    a new data dir imports; the imported node starts with the same peer id, history,
    contacts and marks, and its peer chats with it (room and private)."""
    a, b = node("a"), node("b")
    await a.start()
    await b.start()
    await connected(a, b)
    await chat_works(a, b, text="said before the move")
    await a.send({"cmd": "dm", "to": b.peer_id, "text": "private before the move"})
    await b.wait_for("dm", timeout=PROMPT_S, from_start=True, text="private before the move")
    code = (await ask(b, {"cmd": "invite"}, "invite"))["code"]
    await a.send({"cmd": "add", "code": code})
    await a.wait_for("contact_added", timeout=PROMPT_S, from_start=True, peer_id=b.peer_id)
    marked = await ask(a, {"cmd": "verify", "who": b.peer_id, "confirm": True}, "whois")
    assert marked["verified"] is True

    pp = tmp_path / "pp"
    pp.write_text(PASSPHRASE + "\n")
    archive = tmp_path / "a.chinwag"
    status, _out, err = await run_cli(
        "export", str(archive), "--data-dir", str(a.data_dir), "--passphrase-file", str(pp)
    )
    assert status == 1 and "in use by another chinwag" in err, err
    assert not archive.exists()
    await a.quit()

    status, out, err = await run_cli(
        "export", str(archive), "--data-dir", str(a.data_dir), "--passphrase-file", str(pp)
    )
    assert status == 0, err
    assert "do not start chinwag on this data directory again" in out
    assert mode(archive) == 0o600
    raw = archive.read_bytes()
    for needle in (b"said before the move", b"private before", b"identity", a.peer_id.encode()):
        assert needle not in raw

    moved = tmp_path / "a2"
    status, out, err = await run_cli(
        "import", str(archive), "--data-dir", str(moved), "--passphrase-file", str(pp)
    )
    assert status == 0, err
    assert mode(moved) == 0o700 and mode(moved / "identity.key") == 0o600
    # The ratchet state (tables olm_*, megolm_*, once those branches are in) moved as it was.
    assert ratchet_rows(moved / "chinwag.db") == ratchet_rows(a.data_dir / "chinwag.db")

    # Started without --nick: the nick comes from the imported settings.
    a2 = ChinwagProcess(
        moved, "--bind", "127.0.0.1", "--port", "0", "--discovery-port", str(discovery_port)
    )
    try:
        await _moved_node_works(a, a2, b)
    finally:
        await a2.quit()


async def _moved_node_works(a: ChinwagProcess, a2: ChinwagProcess, b: ChinwagProcess) -> None:
    ready = await a2.start()
    assert ready["peer_id"] == a.peer_id
    assert ready["nick"] == "a"
    history = await ask(a2, {"cmd": "history", "room": "general", "limit": 50}, "history")
    assert "said before the move" in [m["text"] for m in history["messages"]]
    contacts = await ask(a2, {"cmd": "contacts"}, "contacts")
    assert [c["peer_id"] for c in contacts["contacts"]] == [b.peer_id]
    whois = await ask(a2, {"cmd": "whois", "who": b.peer_id}, "whois")
    assert whois["verified"] is True

    await connected(a2, b)
    await chat_works(b, a2, text="said after the move")
    await b.send({"cmd": "dm", "to": a2.peer_id, "text": "private after the move"})
    got = await a2.wait_for("dm", timeout=PROMPT_S, from_start=True, text="private after the move")
    assert got["peer_id"] == b.peer_id
    await a2.send({"cmd": "dm", "to": b.peer_id, "text": "answer from the new machine"})
    got = await b.wait_for(
        "dm", timeout=PROMPT_S, from_start=True, text="answer from the new machine"
    )
    assert got["peer_id"] == a.peer_id


async def test_messages_to_a_verified_nick_with_a_new_key_wait_for_the_users_decision(
    node: NodeFactory,
) -> None:
    """bob is verified; then a new key calls itself bob. Private messages to "bob" are held
    (not sent), listed, discarded or, once the user accepts the new key, sent to it."""
    a, bob = node("a"), node("bob")
    await a.start()
    await bob.start()
    await connected(a, bob)
    assert (await ask(a, {"cmd": "verify", "who": "bob", "confirm": True}, "whois"))["verified"]
    await bob.quit()
    new = node("newbob", nick="bob")
    await new.start()
    await connected(a, new)
    await a.wait_for("warning", timeout=PROMPT_S, from_start=True, peer_id=new.peer_id)

    await a.send({"cmd": "dm", "to": "bob", "text": "to be discarded"})
    held = await a.wait_for("dm_held", timeout=PROMPT_S, text="to be discarded")
    assert (held["nick"], held["peer_id"], held["old_peer_id"]) == (
        "bob", new.peer_id, bob.peer_id,
    )  # fmt: skip
    gone = await ask(a, {"cmd": "discard_held", "who": "bob"}, "held_discarded")
    assert (gone["count"], gone["peer_id"]) == (1, new.peer_id)

    await a.send({"cmd": "dm", "to": "bob", "text": "held until accepted"})
    await a.wait_for("dm_held", timeout=PROMPT_S, text="held until accepted")
    # Addressed by the new key's id, it waits too.
    await a.send({"cmd": "dm", "to": new.peer_id, "text": "by id, held too"})
    await a.wait_for("dm_held", timeout=PROMPT_S, text="by id, held too")
    listed = await ask(a, {"cmd": "held"}, "held")
    assert [h["text"] for h in listed["held"]] == ["held until accepted", "by id, held too"]
    # Nothing went out: a room message sent after them arrives, the held ones did not.
    await chat_works(a, new, text="barrier")
    assert not [e for e in new.events if e.get("event") == "dm"]
    assert not [e for e in a.events if e.get("event") == "dm"]

    # Held messages are typed text: they survive a restart.
    await a.quit()
    a = node("a")
    await a.start()
    listed = await ask(a, {"cmd": "held"}, "held")
    assert [h["text"] for h in listed["held"]] == ["held until accepted", "by id, held too"]
    await connected(a, new)

    accepted = await ask(a, {"cmd": "accept_key", "who": "bob"}, "key_accepted")
    assert (accepted["peer_id"], accepted["old_peer_id"], accepted["sent"]) == (
        new.peer_id, bob.peer_id, 2,
    )  # fmt: skip
    for text in ("held until accepted", "by id, held too"):
        got = await new.wait_for("dm", timeout=PROMPT_S, from_start=True, text=text)
        assert got["peer_id"] == a.peer_id
    assert (await ask(a, {"cmd": "held"}, "held"))["held"] == []
    assert (await ask(a, {"cmd": "whois", "who": new.peer_id}, "whois"))["verified"] is True
    assert (await ask(a, {"cmd": "whois", "who": bob.peer_id}, "whois"))["verified"] is False
    # Resolved: "bob" is the accepted key now, messages go out at once.
    await a.send({"cmd": "dm", "to": "bob", "text": "after the decision"})
    await new.wait_for("dm", timeout=PROMPT_S, from_start=True, text="after the decision")
    assert not [e for e in a.events if e.get("event") == "dm_held" and "after" in e["text"]]


def _on_a_terminal(args: list[str], answers: list[str], timeout: float = 60.0) -> tuple[int, str]:
    """Run `python -m chinwag ARGS` on a pseudo-terminal, typing each answer after the prompt
    that asks for it (getpass flushes what was typed before); return (status, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chinwag", *args],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        pending = list(answers)
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no prompt or exit within {timeout}s: {out!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            # Answer a prompt once, while it is the last thing printed (echo is off then).
            prompts = out.count(b"passphrase: ") + out.count(b"again: ")
            if pending and prompts > len(answers) - len(pending) and out.endswith(b": "):
                os.write(master, pending.pop(0).encode() + b"\n")
        return proc.wait(timeout=timeout), out.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_export_asks_the_passphrase_twice_on_a_terminal(tmp_path: Path) -> None:
    data, out = tmp_path / "a", tmp_path / "a.chinwag"
    status, text = _on_a_terminal(["id", "--data-dir", str(data)], [])
    assert status == 0, text
    args = ["export", str(out), "--data-dir", str(data)]
    status, text = _on_a_terminal(args, [PASSPHRASE, PASSPHRASE + "x"])
    assert status == 1 and "the two passphrases differ; nothing was written" in text, text
    assert not out.exists()
    status, text = _on_a_terminal(args, [PASSPHRASE, PASSPHRASE])
    assert status == 0 and text.count("passphrase") + text.count("again") >= 2, text
    assert PASSPHRASE not in text  # not echoed
    status, text = _on_a_terminal(
        ["import", str(out), "--data-dir", str(tmp_path / "b")], [PASSPHRASE]
    )
    assert status == 0 and "imported" in text, text


async def test_an_exported_data_dir_refuses_to_run_until_forced(
    node: NodeFactory, tmp_path: Path
) -> None:
    """Review finding 7: after `chinwag export` the source copy is retired. Started again
    (real process) it refuses with status 1 and says why, before it opens the store or a
    socket; `--force` starts it (warning) and clears the mark; the import is not marked."""
    a = node("a", discovery=False)
    await a.start()
    await a.quit()
    pp = tmp_path / "pp"
    pp.write_text(PASSPHRASE + "\n")
    archive = tmp_path / "a.chinwag"
    status, _out, err = await run_cli(
        "export", str(archive), "--data-dir", str(a.data_dir), "--passphrase-file", str(pp)
    )
    assert status == 0, err
    db = a.data_dir / "chinwag.db"
    before = (db.stat().st_mtime_ns, db.stat().st_size)
    run = ["--json", "--data-dir", str(a.data_dir), "--bind", "127.0.0.1", "--port", "0"]
    run += ["--no-discovery", "--no-dht"]
    for argv in (run, ["web", *run, "--no-browser"], ["relay", *run[1:]]):
        status, out, err = await run_cli(*argv, stdin=b'{"cmd": "quit"}\n', timeout=30)
        assert status == 1, (argv, out, err)
        assert f"data directory {a.data_dir} was exported on " in err, err
        assert f"to {archive}" in err and "--force" in err, err
        assert '"ready"' not in out, out
    assert (db.stat().st_mtime_ns, db.stat().st_size) == before  # the store was not opened

    moved = tmp_path / "a2"
    status, _out, err = await run_cli(
        "import", str(archive), "--data-dir", str(moved), "--passphrase-file", str(pp)
    )
    assert status == 0, err
    assert not (moved / "exported").exists()

    forced = node("a", "--force", discovery=False, data_dir=a.data_dir)
    ready = await forced.start()
    assert ready["peer_id"] == a.peer_id
    await forced.quit()
    assert "started anyway (--force)" in forced.stderr_path.read_text()
    again = node("a", discovery=False, data_dir=a.data_dir)
    assert (await again.start())["peer_id"] == a.peer_id
    await again.quit()
