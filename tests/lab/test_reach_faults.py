"""Reach under faults in the NAT lab: a relay dies, a peer moves, a relay turns hostile.

- A punched (direct) pair keeps chatting when its relay is killed.
- A relayed pair (symmetric NATs) whose relay is killed comes back through a second relay
  the inviter holds a reservation at.
- A peer whose LAN address changes (a new DHCP lease: restarted with another address, or
  while it runs) finds its contact again.
- A hostile relay hop that alters or drops frames inside a circuit: the ends notice (the
  end-to-end Noise session fails), show nothing forged and come back through another
  relay; one that delays frames only slows the chat down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from it_support import chat_works, connected
from nat_support import PROMPT_S, START_S, NodeFactory, lab_of
from natlab import NatLab, Site
from reach_support import DIRECT, PUNCH_S, LabRelay, add, invite_code, path_of, wait_path

pytestmark = [pytest.mark.nat, pytest.mark.timeout(120)]

#: Seconds for a pair to find each other again after a relay or an address went away
#: (keepalive declares the old connection dead within 10 s; then redial and circuit).
RECOVER_S = 40.0


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    """Two relay hosts, a hostile hop, two cone homes and two symmetric ones."""
    yield from lab_of(
        ("relay", "public"), ("relay2", "public"), ("evil", "public"),
        ("cone1", "cone"), ("cone2", "cone"), ("sym1", "symmetric"), ("sym2", "symmetric"),
    )  # fmt: skip


def other_messages(node_events: list[dict[str, object]]) -> list[dict[str, object]]:
    """Messages a node showed from anyone but itself."""
    return [e for e in node_events if e.get("event") == "message" and not e.get("own")]


async def test_punched_pair_keeps_chatting_when_the_relay_dies(
    lab: NatLab, node: NodeFactory, tmp_path: Path
) -> None:
    relay = await LabRelay(lab.sites["relay"], tmp_path / "relay").start()
    try:
        a = node(lab.sites["cone1"], "alice", "--no-upnp", "--relay-peer", relay.addr)
        b = node(lab.sites["cone2"], "bob", "--no-upnp", "--relay-peer", relay.addr)
        await asyncio.gather(a.start(START_S), b.start(START_S))
        code = (await invite_code(b))["code"]
        await add(a, code)
        await connected(a, b, within=START_S)
        await wait_path(a, b.peer_id, DIRECT, PUNCH_S)
        await wait_path(b, a.peer_id, DIRECT, PUNCH_S)
        await chat_works(a, b, text="before the relay dies")
        await relay.kill()
        await a.wait_for("peer_left", from_start=True, timeout=RECOVER_S, peer_id=relay.peer_id)
        await chat_works(a, b, text="after the relay died")
        await chat_works(b, a, text="still direct")
        assert not [e for e in a.events if e.get("event") == "peer_left" and
                    e.get("peer_id") == b.peer_id]  # fmt: skip
        assert path_of(a, b.peer_id)[0] in DIRECT
    finally:
        await relay.stop()


async def test_relayed_pair_comes_back_through_a_second_relay(
    lab: NatLab, node: NodeFactory, tmp_path: Path
) -> None:
    r1 = await LabRelay(lab.sites["relay"], tmp_path / "r1").start()
    r2 = await LabRelay(lab.sites["relay2"], tmp_path / "r2").start()
    try:
        args = ("--no-upnp", "--relay-peer", r1.addr, "--relay-peer", r2.addr)
        a = node(lab.sites["sym1"], "alice", *args)
        b = node(lab.sites["sym2"], "bob", *args)
        await asyncio.gather(a.start(START_S), b.start(START_S))
        code = (await invite_code(b, relays=2))["code"]
        await invite_code(a, relays=2)
        await add(a, code)
        await connected(a, b, within=START_S)
        await chat_works(a, b, text="through the first relay")
        path, via = path_of(a, b.peer_id)
        assert path == "relayed" and via in (r1.peer_id, r2.peer_id), (path, via)
        used, spare = (r1, r2) if via == r1.peer_id else (r2, r1)
        await used.kill()
        await wait_path(a, b.peer_id, ("relayed",), RECOVER_S)
        await a.wait_for(
            pred=lambda e: e.get("peer_id") == b.peer_id and e.get("via") == spare.peer_id,
            timeout=RECOVER_S,
            from_start=True,
        )
        await chat_works(a, b, text="through the second relay")
        await chat_works(b, a, text="and back through it")
    finally:
        await r1.stop()
        await r2.stop()


async def test_peer_with_a_new_lan_address_finds_its_contact_again(
    lab: NatLab, node: NodeFactory, tmp_path: Path
) -> None:
    relay = await LabRelay(lab.sites["relay"], tmp_path / "relay").start()
    moved: Site = lab.sites["cone2"]
    old = moved.addr
    try:
        a = node(lab.sites["cone1"], "alice", "--no-upnp", "--relay-peer", relay.addr)
        b = node(moved, "bob", "--no-upnp", "--relay-peer", relay.addr)
        await asyncio.gather(a.start(START_S), b.start(START_S))
        code = (await invite_code(a))["code"]
        await add(b, code)  # B keeps A as a contact
        await connected(a, b, within=START_S)
        await chat_works(b, a, text="from the old address")
        # A new DHCP lease: B's machine goes away without a goodbye and comes back with
        # another LAN address (same data directory, so the same contacts).
        await b.kill()
        lab.readdress(moved, "192.168.1.77")
        b2 = node(moved, "bob", "--no-upnp", "--relay-peer", relay.addr)
        b2.data_dir = b.data_dir
        await b2.start(START_S)
        await connected(a, b2, within=RECOVER_S)
        await chat_works(b2, a, text="from the new address")
        await chat_works(a, b2, text="and back")
    finally:
        lab.readdress(moved, old)
        await relay.stop()


async def test_peer_whose_lan_address_changes_while_running_finds_its_contact_again(
    lab: NatLab, node: NodeFactory, tmp_path: Path
) -> None:
    relay = await LabRelay(lab.sites["relay"], tmp_path / "relay").start()
    moved: Site = lab.sites["cone2"]
    old = moved.addr
    try:
        a = node(lab.sites["cone1"], "alice", "--no-upnp", "--relay-peer", relay.addr)
        b = node(moved, "bob", "--no-upnp", "--relay-peer", relay.addr)
        await asyncio.gather(a.start(START_S), b.start(START_S))
        code = (await invite_code(a))["code"]
        await add(b, code)  # B keeps A as a contact
        await connected(a, b, within=START_S)
        await chat_works(b, a, text="before the new lease")
        # A new DHCP lease while chinwag runs: every connection from the old address is
        # dead (keepalive notices); the node notices its new address and dials its
        # contacts again.
        lab.readdress(moved, "192.168.1.78")
        await a.wait_for("peer_left", from_start=True, timeout=RECOVER_S, peer_id=b.peer_id)
        await a.wait_for_peers([b.peer_id], RECOVER_S)
        await chat_works(b, a, text="after the new lease")
        await chat_works(a, b, text="and back")
    finally:
        lab.readdress(moved, old)
        await relay.stop()


class HostileHop:
    """A TCP hop on a public host in front of the relay (its first `spare` connections are
    left alone: a reservation, say).

    Chinwag frames are a 2-byte length and a body. From the `after`-th frame relay->client
    on (inside the end-to-end session), each frame is altered (`alter`), the first one
    dropped (`drop`), or every frame delayed by `delay` seconds.
    """

    def __init__(
        self,
        lab: NatLab,
        site: Site,
        upstream: str,
        mode: str,
        after: int = 4,
        delay: float = 0,
        spare: int = 0,
    ) -> None:
        self.lab, self.site, self.mode, self.after, self.delay = lab, site, mode, after, delay
        #: Connections passed through untouched before the hop turns hostile.
        self.spare = spare
        self.connections = 0
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.touched = 0
        self.frames = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        sock = self.lab.socket_in(self.site.netns)
        sock.bind((self.site.addr, 0))
        sock.listen(8)
        sock.setblocking(False)
        self.server = await asyncio.start_server(self._client, sock=sock)
        return f"{self.site.addr}:{sock.getsockname()[1]}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up = self.lab.socket_in(self.site.netns)
        up.setblocking(False)
        await asyncio.get_running_loop().sock_connect(up, self.upstream)
        up_reader, up_writer = await asyncio.open_connection(sock=up)
        self.connections += 1
        hostile = self.connections > self.spare
        t1 = asyncio.create_task(self._copy(reader, up_writer, hostile=False))
        t2 = asyncio.create_task(self._copy(up_reader, writer, hostile=hostile))
        self._tasks |= {t1, t2}
        await asyncio.gather(t1, t2, return_exceptions=True)

    async def _copy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hostile: bool
    ) -> None:
        frames = 0
        try:
            while True:
                head = await reader.readexactly(2)
                body = bytearray(await reader.readexactly(int.from_bytes(head, "big")))
                frames += 1
                self.frames += 1
                if self.delay:
                    await asyncio.sleep(self.delay)  # the hop's delay itself, not a wait
                if hostile and frames >= self.after and body:
                    if self.mode == "alter":
                        body[len(body) // 2] ^= 0x01
                        self.touched += 1
                    elif self.mode == "drop" and self.touched == 0:
                        self.touched += 1
                        continue
                writer.write(head + bytes(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()


@pytest.mark.parametrize("mode", ["alter", "drop"])
async def test_hostile_relay_is_noticed_and_forges_nothing(
    lab: NatLab, node: NodeFactory, tmp_path: Path, mode: str
) -> None:
    relay = await LabRelay(lab.sites["relay"], tmp_path / "relay").start()
    hop = HostileHop(lab, lab.sites["evil"], relay.addr, mode, after=6)
    try:
        via = await hop.start()
        # A knows the relay only as the hop's address: every byte between A and B crosses it.
        a = node(lab.sites["sym1"], "alice", "--no-upnp")
        b = node(lab.sites["sym2"], "bob", "--no-upnp", "--relay-peer", relay.addr)
        await asyncio.gather(a.start(START_S), b.start(START_S))
        await invite_code(b)
        # A reaches B through the hostile hop (the relay's address as A was told it).
        await a.send({"cmd": "connect", "peer_id": b.peer_id, "via": relay.peer_id, "addr": via})
        # Joined events, not `connected`: the altered frame may come right behind the
        # handshake (the frames sent on connecting count too), ending the pair at once.
        await a.wait_for("peer_joined", from_start=True, timeout=START_S, peer_id=b.peer_id)
        await b.wait_for("peer_joined", from_start=True, timeout=START_S, peer_id=a.peer_id)
        for i in range(5):
            await b.say(f"honest {i}")
        left = await a.wait_for("peer_left", from_start=True, timeout=PROMPT_S, peer_id=b.peer_id)
        assert "authentication" in left["reason"] or "closed" in left["reason"], left
        assert hop.touched >= 1
        # Nothing altered was shown: every message A shows is one B wrote, in B's order.
        shown = [e["text"] for e in other_messages(a.events)]
        assert shown == [f"honest {i}" for i in range(len(shown))], shown
    finally:
        await hop.stop()
        await relay.stop()


async def test_ends_reroute_around_a_hostile_relay(
    lab: NatLab, node: NodeFactory, tmp_path: Path
) -> None:
    """B's invite names two relays, one behind a hop that alters circuits. A first reaches B
    through the hop (the other relay is out of reach for a moment); the altered frames break
    the session, and A comes back through the honest relay. Nothing altered is shown."""
    r1 = await LabRelay(lab.sites["relay"], tmp_path / "r1").start()
    r2 = await LabRelay(lab.sites["relay2"], tmp_path / "r2").start()
    hop = HostileHop(lab, lab.sites["evil"], r1.addr, "alter", after=6, spare=1)
    a_router = lab.sites["sym1"].router
    assert a_router is not None
    try:
        via_hop = await hop.start()
        # B reaches relay 1 only through the hop, so its invite names the hop's address.
        b = node(lab.sites["sym2"], "bob", "--no-upnp", "--relay-peer", via_hop,
                 "--relay-peer", r2.addr)  # fmt: skip
        a = node(lab.sites["sym1"], "alice", "--no-upnp")
        await asyncio.gather(a.start(START_S), b.start(START_S))
        invite = await invite_code(b, relays=2)
        assert {r["address"] for r in invite["relays"]} == {via_hop, r2.addr}, invite
        blocked = lab.block(a_router, lab.sites["relay2"].addr)
        try:
            await add(a, invite["code"])
            # Joined events, not `connected`: the altered frame may come right behind the
            # handshake, so that a side's join and leave are read together.
            joined = await a.wait_for(
                "peer_joined", from_start=True, timeout=START_S, peer_id=b.peer_id
            )
            assert (joined["path"], joined["via"]) == ("relayed", r1.peer_id), joined
            await b.wait_for("peer_joined", from_start=True, timeout=START_S, peer_id=a.peer_id)
        finally:
            lab.unblock(a_router, blocked)
        for i in range(3):
            await b.say(f"honest {i}")
        await a.wait_for("peer_left", from_start=True, timeout=PROMPT_S, peer_id=b.peer_id)
        assert hop.touched >= 1
        await a.wait_for(
            pred=lambda e: e.get("event") in ("peer_joined", "path")
            and e.get("peer_id") == b.peer_id and e.get("via") == r2.peer_id,
            timeout=RECOVER_S,
            from_start=True,
        )  # fmt: skip
        await chat_works(b, a, text="through the honest relay")
        shown = [e["text"] for e in other_messages(a.events)]
        honest = [f"honest {i}" for i in range(3)] + ["through the honest relay"]
        assert all(t in honest for t in shown), shown
    finally:
        await hop.stop()
        await asyncio.gather(r1.stop(), r2.stop())


async def test_delaying_relay_only_slows_the_chat(
    lab: NatLab, node: NodeFactory, tmp_path: Path
) -> None:
    relay = await LabRelay(lab.sites["relay"], tmp_path / "relay").start()
    hop = HostileHop(lab, lab.sites["evil"], relay.addr, "delay", delay=0.05)
    try:
        via = await hop.start()
        # A knows the relay only as the hop's address: every byte between A and B crosses it.
        a = node(lab.sites["sym1"], "alice", "--no-upnp")
        b = node(lab.sites["sym2"], "bob", "--no-upnp", "--relay-peer", relay.addr)
        await asyncio.gather(a.start(START_S), b.start(START_S))
        await invite_code(b)
        await a.send({"cmd": "connect", "peer_id": b.peer_id, "via": relay.peer_id, "addr": via})
        await connected(a, b, within=START_S)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(5):
            await b.say(f"slow {i}")
        await a.wait_for_message("slow 4", PROMPT_S)
        assert loop.time() - t0 >= 0.05, (hop.frames, loop.time() - t0)
        shown = [e["text"] for e in other_messages(a.events)]
        assert shown == [f"slow {i}" for i in range(5)], shown
        assert not [e for e in a.events if e.get("event") == "peer_left"
                    and e.get("peer_id") == b.peer_id]  # fmt: skip
    finally:
        await hop.stop()
        await relay.stop()
