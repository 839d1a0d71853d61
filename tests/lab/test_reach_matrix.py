"""The NAT matrix: every pair of {public, cone, symmetric, double} meets through an invite.

For each pair a public relay R runs; both nodes hold a reservation there (`--relay-peer`).
The more NATed side invites, the other `add`s the code; they chat both ways and send a small
file. A pair either ends direct (punched, or dialled straight) or stays relayed through R;
which one is the physics of the NATs (FACTS.md, tests/lab/test_natlab.py): a symmetric NAT
in front of a cone, double or symmetric one cannot be punched; in front of a public host
it can. A capture on the public
bridge (where R lives) shows no chat text and no file content in clear.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from capture import BridgeCapture, tcp_payloads
from it_support import chat_works, connected
from nat_support import START_S, NodeFactory, lab_of
from natlab import NatLab
from reach_support import (
    DIRECT,
    PUNCH_S,
    LabRelay,
    add,
    invite_code,
    peers_entry,
    send_file,
    wait_path,
)

pytestmark = [pytest.mark.nat, pytest.mark.timeout(120)]

KINDS = ("public", "cone", "symmetric", "double")
#: Unordered pairs; the second (more NATed) side invites, the first adds.
PAIRS = list(itertools.combinations_with_replacement(KINDS, 2))
#: Where the matrix is written for docs/reach.md (bench/reach.py prints it too).
RESULTS = os.environ.get("CHINWAG_NAT_MATRIX")


def expected(x: str, y: str) -> str:
    """How the pair must end: "direct", "relayed", or "either".

    A symmetric NAT facing another NAT cannot be punched. Facing a public host it can:
    the public side accepts any SYN, and takes the one that arrives from the peer's IP
    during its punch (from a port nobody could predict) as the punched connection.
    """
    if "symmetric" not in (x, y) or "public" in (x, y):
        return "direct"
    return "relayed"


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    """A relay host and two sites of every kind."""
    sites = [("relay", "public")] + [(f"{k}{i}", k) for k in KINDS for i in (1, 2)]
    yield from lab_of(*sites)


@pytest.fixture(scope="module")
def matrix() -> Iterator[dict[str, dict[str, object]]]:
    """The matrix rows gathered by the tests, written out at the end if asked to."""
    rows: dict[str, dict[str, object]] = {}
    yield rows
    if RESULTS:
        Path(RESULTS).write_text(json.dumps(rows, indent=1, sort_keys=True))


@pytest.mark.parametrize(("x", "y"), PAIRS, ids=[f"{x}-{y}" for x, y in PAIRS])
async def test_pair_meets_chats_and_sends_a_file(
    lab: NatLab,
    node: NodeFactory,
    tmp_path: Path,
    x: str,
    y: str,
    matrix: dict[str, dict[str, object]],
) -> None:
    site_a, site_b = lab.sites[f"{x}1"], lab.sites[f"{y}2"]
    cap = BridgeCapture(lab.switch_ns, "pub", tmp_path / "pub.cap")
    await cap.start()
    relay = await LabRelay(lab.sites["relay"], tmp_path / "relay").start()
    try:
        # B (the more NATed side) invites; A adds.
        a = node(site_a, "alice", "--no-upnp", "--relay-peer", relay.addr)
        b = node(site_b, "bob", "--no-upnp", "--relay-peer", relay.addr)
        await a.start(START_S)
        await b.start(START_S)
        code = (await invite_code(b))["code"]
        await invite_code(a)  # A holds its reservation too (the relay may call it back)
        added = await add(a, code)
        assert added["peer_id"] == b.peer_id
        await connected(a, b, within=START_S)

        want = expected(x, y)
        if want == "direct":
            await wait_path(a, b.peer_id, DIRECT, PUNCH_S)
            await wait_path(b, a.peer_id, DIRECT, PUNCH_S)
        secrets = [f"wombat-{x}-{y}-there", f"quokka-{y}-{x}-back"]
        await chat_works(a, b, text=secrets[0])
        await chat_works(b, a, text=secrets[1])

        entry_a, entry_b = await peers_entry(a, b.peer_id), await peers_entry(b, a.peer_id)
        marker = f"platypus-file-{x}-{y}".encode()
        payload = tmp_path / "small.bin"
        payload.write_bytes(marker * 200)
        done = await send_file(a, b, payload, tmp_path / "in")
    finally:
        await relay.stop()
        await cap.stop()

    row = {
        "a": x,
        "b": y,
        "path_a": entry_a["path"],
        "path_b": entry_b["path"],
        "via": entry_a["via"],
        "file": "received" if done["event"] == "file_done" else "refused (byte-limited relay)",
    }
    matrix[f"{x}-{y}"] = row
    got = "direct" if entry_a["path"] in DIRECT else "relayed"
    assert want == got, row
    if got == "direct":
        assert entry_b["path"] in DIRECT, row
        assert done["event"] == "file_done", done
        assert (tmp_path / "in" / "small.bin").read_bytes() == payload.read_bytes()
    else:
        assert entry_a["path"] == entry_b["path"] == "relayed", row
        assert entry_a["via"] == entry_b["via"] == relay.peer_id, row
        # Files are refused over a byte-limited relay, with a clear message.
        assert done["event"] == "warning" and "byte-limited relay" in done["message"], done

    seen = b"".join(seg.payload for seg in tcp_payloads(cap.frames()))
    assert seen, "the capture saw the pair's traffic"
    for secret in [*secrets, marker.decode()]:
        assert secret.encode() not in seen, f"{secret!r} crossed the public bridge in clear"
