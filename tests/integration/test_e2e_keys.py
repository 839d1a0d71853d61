"""Key material moved safely (issue 12 item 5), with real `chinwag` processes on loopback:
owner-only data directories, export/import of an identity with its store, and private
messages held while a verified peer's key changed.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

from it_support import NodeFactory


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
