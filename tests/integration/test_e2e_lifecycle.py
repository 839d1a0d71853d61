"""Process lifecycle: kill and rejoin, clean quit, data-dir lock, and the plain CLI commands."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from pathlib import Path

from it_support import PROMPT_S, NodeFactory, chat_works, connected, count, start_fails

import chinwag
from chinwag.crypto.identity import fingerprint

#: Seconds within which a SIGKILLed peer must be reported gone (keepalive bound is 10 s).
DEAD_PEER_S = 15.0
#: Seconds within which a clean leaver must be reported gone (goodbye, not keepalive).
GOODBYE_S = 5.0
#: The peer_left reason of a peer that said goodbye on quitting (docs/api.md).
QUIT_REASON = "peer said goodbye (quit)"


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m chinwag ARGS` to completion without stdin."""
    return subprocess.run(
        [sys.executable, "-m", "chinwag", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_sigkill_peer_left_then_rejoin_same_id(node: NodeFactory, tmp_path: Path) -> None:
    """A SIGKILLed node is reported gone; restarted on its data dir it rejoins as the same peer."""
    a, b, c = node("alice"), node("bob"), node("carol")
    await asyncio.gather(a.start(), b.start(), c.start())
    await asyncio.gather(a.wait_for_peers([b.peer_id, c.peer_id]), b.wait_for_peers([c.peer_id]))
    await c.wait_for_peers([a.peer_id, b.peer_id])
    old_id = c.peer_id

    await c.kill()
    assert c.returncode == -9
    for n in (a, b):
        ev = await n.wait_for("peer_left", timeout=DEAD_PEER_S, from_start=True, peer_id=old_id)
        assert ev["nick"] == "carol", ev
    assert a.connected_peers() == {b.peer_id}
    await chat_works(a, b, text="carol is gone")

    c2 = node("carol", data_dir=tmp_path / "carol")
    await c2.start()
    assert c2.peer_id == old_id, "restart on the same data dir must keep the peer id"
    await asyncio.gather(
        c2.wait_for_peers([a.peer_id, b.peer_id]),
        a.wait_for_peers([old_id]),
        b.wait_for_peers([old_id]),
    )
    assert count(a, "peer_joined", peer_id=old_id) == 2
    await chat_works(c2, a, b, text="carol is back")
    await chat_works(a, b, c2, text="welcome back")


async def test_frozen_peer_detected_by_keepalive_then_recovers(node: NodeFactory) -> None:
    """A SIGSTOPped peer (sockets open, silent) is declared gone by keepalive, then rejoins."""
    a, b = node("alice"), node("bob")
    await asyncio.gather(a.start(), b.start())
    await connected(a, b)
    assert b.proc is not None
    b.proc.send_signal(signal.SIGSTOP)
    try:
        await a.wait_for("peer_left", timeout=DEAD_PEER_S, peer_id=b.peer_id)
    finally:
        with contextlib.suppress(ProcessLookupError):
            b.proc.send_signal(signal.SIGCONT)
    await a.wait_for("peer_joined", timeout=DEAD_PEER_S, peer_id=b.peer_id)
    await connected(a, b, within=DEAD_PEER_S)
    await chat_works(b, a, text="back from the freeze")
    await chat_works(a, b, text="welcome back, bob")


async def test_quit_command_exits_zero_and_says_goodbye(node: NodeFactory) -> None:
    """{"cmd":"quit"} exits with status 0 and the peer reports peer_left promptly."""
    a, b = node("alice"), node("bob")
    await asyncio.gather(a.start(), b.start())
    await connected(a, b)
    assert await b.quit(timeout=GOODBYE_S) == 0, b.stderr_tail()
    ev = await a.wait_for("peer_left", timeout=GOODBYE_S, peer_id=b.peer_id)
    assert ev["nick"] == "bob", ev
    # A goodbye, not a dropped connection (which would also end it at once).
    assert ev["reason"] == QUIT_REASON, ev
    assert not [e for e in b.events if e.get("event") == "error"], b.events


async def test_end_of_stdin_quits_cleanly(node: NodeFactory) -> None:
    """Closing the node's stdin makes it quit with status 0; the peer sees it leave."""
    a, b = node("alice"), node("bob")
    await asyncio.gather(a.start(), b.start())
    await connected(a, b)
    assert b.proc is not None and b.proc.stdin is not None
    b.proc.stdin.close()
    assert await b.wait_exit(timeout=GOODBYE_S) == 0, b.stderr_tail()
    ev = await a.wait_for("peer_left", timeout=GOODBYE_S, peer_id=b.peer_id)
    assert ev["reason"] == QUIT_REASON, ev


async def test_quit_while_alone_exits_zero(node: NodeFactory) -> None:
    """A node with no peers also quits at once with status 0."""
    a = node("alice", discovery=False)
    await a.start()
    assert await a.quit(timeout=GOODBYE_S) == 0, a.stderr_tail()


async def test_second_process_on_same_data_dir_fails_at_once(
    node: NodeFactory, tmp_path: Path
) -> None:
    """A second node on a data dir in use exits nonzero at once, saying why; the first runs on."""
    a = node("alice", discovery=False)
    await a.start()
    message = (await start_fails(tmp_path / "alice")).lower()
    assert any(w in message for w in ("lock", "data dir", "data-dir", "in use")), message
    await a.send({"cmd": "peers"})
    await a.wait_for("peers", timeout=PROMPT_S)


async def test_lock_released_after_clean_quit(node: NodeFactory, tmp_path: Path) -> None:
    """After a clean quit the same data dir starts again at once, with the same peer id."""
    a = node("alice", discovery=False)
    first = await a.start()
    assert await a.quit() == 0
    a2 = node("alice", discovery=False, data_dir=tmp_path / "alice")
    assert (await a2.start())["peer_id"] == first["peer_id"]


async def test_id_command_matches_ready(node: NodeFactory, tmp_path: Path) -> None:
    """`chinwag id --data-dir D` prints the node's peer id and a fingerprint, stably."""
    a = node("alice", discovery=False)
    ready = await a.start()
    assert await a.quit() == 0
    data_dir = str(tmp_path / "alice")
    first = await asyncio.to_thread(run_cli, "id", "--data-dir", data_dir)
    assert first.returncode == 0, first
    assert ready["peer_id"] in first.stdout, (ready, first.stdout)
    lines = [ln for ln in first.stdout.splitlines() if ln.strip()]
    assert "fingerprint" in first.stdout.lower() and len(lines) >= 2, first.stdout
    assert fingerprint(ready["peer_id"]) in first.stdout, first.stdout
    second = await asyncio.to_thread(run_cli, "id", "--data-dir", data_dir)
    assert second.returncode == 0 and second.stdout == first.stdout


def test_version() -> None:
    """`chinwag --version` prints the package version and exits 0."""
    res = run_cli("--version")
    assert res.returncode == 0, res
    assert chinwag.__version__ in res.stdout, res


def test_help() -> None:
    """`chinwag --help` documents the main options and exits 0."""
    res = run_cli("--help")
    assert res.returncode == 0, res
    for option in ("--data-dir", "--nick", "--port", "--peer", "--no-discovery", "--json"):
        assert option in res.stdout, (option, res.stdout)


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    """An unknown option fails with a usage message and never starts a node."""
    res = run_cli(
        *["--json", "--data-dir", str(tmp_path / "d"), "--no-discovery", "--bind", "127.0.0.1"],
        "--no-such-option",
    )
    assert res.returncode == 2, res
    assert "usage" in res.stderr.lower(), res
    assert '"ready"' not in res.stdout, res
