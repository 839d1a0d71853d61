"""Rendezvous on a private Mainline DHT (issue 15, docs/dht.md), in the NAT lab.

A swarm of 20 libtorrent DHT nodes runs on a public host (tests/lab/dhtlab.py); every chinwag
node here joins it with `--dht-bootstrap` and nothing else (no public bootstrap node is ever
named: tests/conftest.py empties the default list too). Crafted records are put into the
swarm with libtorrent directly, signed with the key a node keeps in its data directory.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nacl.bindings as sodium
import pytest
from dhtlab import DhtSwarm
from it_support import chat_works
from nat_support import START_S, NodeFactory, lab_of, stop
from natlab import PUBLIC, NatLab, Site, ip
from reach_support import LabRelay

from chinwag.crypto.identity import Identity
from chinwag.protocol import dhtrecord as rec
from driver import ChinwagProcess, Event

pytestmark = [pytest.mark.nat, pytest.mark.dht, pytest.mark.timeout(240)]

#: Seconds a node may take to publish a record naming its relay (reservation, then the next
#: network poll, then the minimum gap between two publishes, then the put). A put ends with
#: its traversal, 15 s more for each node on the way that does not answer (a CI run saw 30 s),
#: and the first put may start just before the reservation lands and hold the put lock: the
#: record with the relay can come two such puts after the start.
PUBLISH_S = 100.0
#: Seconds a moved contact may take to be found again (dials of its old address time out,
#: then lookups back off from 2 s).
REFOUND_S = 90.0
#: Seconds a lookup may take to say "not found" (it ends at DHT_LOOKUP_TIMEOUT_S).
LOOKUP_S = 20.0


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    """The DHT swarm's host, a relay, public hosts on both public networks, a cone NAT."""
    yield from lab_of(
        ("dht", "public"),
        ("relay", "public"),
        ("a", "public", "pub2"),
        ("b", "cone"),
        ("c", "public"),
        ("d", "public"),
    )


@pytest.fixture(scope="module")
def swarm(lab: NatLab) -> DhtSwarm:
    return DhtSwarm(lab, lab.sites["dht"], 20)


def identity_of(node: ChinwagProcess) -> Identity:
    return Identity.from_seed((node.data_dir / "identity.key").read_bytes())


async def lookup(node: ChinwagProcess, peer_id: str) -> Event:
    """Ask node to look peer_id up now; return its `lookup` event."""
    await node.send({"cmd": "lookup", "peer_id": peer_id})
    return await node.wait_for("lookup", timeout=LOOKUP_S, peer_id=peer_id)


def sealed_by(signer: Identity, owner: Identity, seq: int, exp: int) -> bytes:
    """A private record for owner's key, its map signed by signer (a forgery unless owner)."""
    record = rec.DhtRecord(rec.RECORD_VERSION, ["203.0.113.66:47475"], [], seq, exp)
    payload = msgspec.msgpack.encode(record)
    plain = payload + signer.sign(rec.RECORD_CONTEXT + payload)
    nonce = os.urandom(rec.NONCE_BYTES)
    aad = rec.SALT + rec.target(owner.public, True, rec.period_of(time.time()))
    return nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, aad, nonce, rec.record_key(owner.public)
    )


async def test_bad_records_are_ignored(
    lab: NatLab, swarm: DhtSwarm, node: NodeFactory, tmp_path: Path
) -> None:
    """Oversized, wrongly signed and replayed (older seq) records never become addresses."""
    dave = node(lab.sites["d"], "dave", "--no-upnp", "--no-discovery", *swarm.bootstrap_args())
    alice = node(lab.sites["a"], "alice3", "--no-upnp", "--no-discovery", *swarm.bootstrap_args())
    await asyncio.gather(dave.start(START_S), alice.start(START_S))
    published = await dave.wait_for("published", timeout=PUBLISH_S, from_start=True)
    seq = int(published["seq"])
    assert (await lookup(alice, dave.peer_id))["found"] is True
    # Dave stays up (a node gone from the DHT slows every traversal by libtorrent's 15 s
    # timeout) and does not republish meanwhile: no address or relay of his changes.
    owner = identity_of(dave)
    period = rec.period_of(time.time())  # today's key: the one a lookup reads first
    key = rec.signing_key(owner, True, period)
    target = rec.target(owner.public, True, period)
    genuine, _seq = swarm.get(target, rec.SALT)
    assert genuine is not None

    # Oversized: no DHT node stores it; the genuine record stays and is still found.
    assert swarm.put(key, target, os.urandom(1000), rec.SALT) <= 0
    assert swarm.get(target, rec.SALT)[0] == genuine
    assert (await lookup(alice, dave.peer_id))["found"] is True

    # Signed by someone else (who holds the blinded key: only the owner could; this is the
    # inner signature's job should it ever leak): refused.
    mallory = Identity.generate()
    forged = sealed_by(mallory, owner, seq + 10, int(published["seq"]) + 3600)
    assert swarm.put(key, target, forged, rec.SALT) > 0
    refused = await lookup(alice, dave.peer_id)
    assert (refused["found"], refused["reason"]) == (False, rec.BAD_SIGNATURE), refused

    # The owner's own, but older than the record alice accepted: a replay, refused.
    old = sealed_by(owner, owner, seq - 100, seq + 3600)
    assert swarm.put(key, target, old, rec.SALT) > 0
    refused = await lookup(alice, dave.peer_id)
    assert (refused["found"], refused["reason"]) == (False, rec.OLD_SEQ), refused


async def test_contact_added_offline_by_id_is_found_at_start(
    lab: NatLab, swarm: DhtSwarm, node: NodeFactory, tmp_path: Path
) -> None:
    """`chinwag add PEER_ID` while no chinwag runs; the next start looks it up and dials."""
    erin = node(lab.sites["d"], "erin", "--no-upnp", "--no-discovery", *swarm.bootstrap_args())
    await erin.start(START_S)
    await erin.wait_for("published", timeout=PUBLISH_S, from_start=True)
    alice = node(lab.sites["a"], "alice4", "--no-upnp", "--no-discovery",
                 *swarm.bootstrap_args())  # fmt: skip
    add = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chinwag", "add", erin.peer_id, "--data-dir", str(alice.data_dir),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(add.communicate(), START_S)
    assert add.returncode == 0 and erin.peer_id in out.decode(), out
    await alice.start(START_S)
    found = await alice.wait_for("lookup", timeout=LOOKUP_S, from_start=True, peer_id=erin.peer_id)
    assert found["found"] is True, found
    await alice.wait_for("peer_joined", timeout=START_S, from_start=True, peer_id=erin.peer_id)
    await chat_works(alice, erin, text="added while you were away")


async def test_peer_known_only_by_id_behind_a_nat_is_found_and_reached(
    lab: NatLab, swarm: DhtSwarm, node: NodeFactory, tmp_path: Path
) -> None:
    relay = await LabRelay(lab.sites["relay"], tmp_path / "relay", "--no-dht").start()
    try:
        args = ["--no-upnp", "--no-discovery", *swarm.bootstrap_args(), "--relay-peer", relay.addr]
        bob = node(lab.sites["b"], "bob", *args)
        alice = node(lab.sites["a"], "alice", *args)
        await asyncio.gather(bob.start(START_S), alice.start(START_S))
        # Bob's record names his relay once he holds a reservation there.
        await bob.wait_for("published", lambda e: bool(e["relays"]), PUBLISH_S, from_start=True)

        await alice.send({"cmd": "add", "peer_id": bob.peer_id})
        found = await alice.wait_for("lookup", timeout=LOOKUP_S, peer_id=bob.peer_id)
        assert found["found"] is True, found
        await alice.wait_for("peer_joined", timeout=START_S, peer_id=bob.peer_id)
        await chat_works(alice, bob, text="found you by your id alone")
        await chat_works(bob, alice, text="and here I am behind my NAT")
    finally:
        await relay.stop()


async def test_contact_whose_address_changed_is_found_again(
    lab: NatLab, swarm: DhtSwarm, node: NodeFactory, tmp_path: Path
) -> None:
    site = lab.sites["c"]
    carol = node(site, "carol", "--no-upnp", "--no-discovery", *swarm.bootstrap_args())
    alice = node(lab.sites["a"], "alice2", "--no-upnp", "--no-discovery", *swarm.bootstrap_args())
    await asyncio.gather(carol.start(START_S), alice.start(START_S))
    await carol.wait_for("published", timeout=PUBLISH_S, from_start=True)
    await alice.send({"cmd": "add", "peer_id": carol.peer_id})
    await alice.wait_for("peer_joined", timeout=START_S, peer_id=carol.peer_id)
    await stop(carol)
    # From here: alice's lookups may find carol's new record as soon as its first DHT nodes
    # store it, before carol hears that her put completed (`published`).
    before = len(alice.events)
    assert (carol.data_dir / "dht.state").exists(), "the routing table is saved at exit"

    # Carol comes back at a new address (a new lease from her provider).
    readdress_public(lab, site, f"{PUBLIC}.240")
    carol = node(site, "carol", "--no-upnp", "--no-discovery", *swarm.bootstrap_args())
    await carol.start(START_S)
    published = await carol.wait_for("published", timeout=PUBLISH_S, from_start=True)
    assert any(a.startswith(f"{PUBLIC}.240:") for a in published["addresses"]), published

    joined = await alice.wait_for("peer_joined", timeout=REFOUND_S, peer_id=carol.peer_id)
    assert joined["address"].startswith(f"{PUBLIC}.240:"), joined
    lookups = [e for e in alice.events[before:] if e["event"] == "lookup"]
    assert lookups, "alice found carol's new address on the DHT"
    await chat_works(alice, carol, text="you moved, I found you")


def readdress_public(lab: NatLab, site: Site, addr: str) -> None:
    """Give a public host a new address on its bridge (the old one goes)."""
    ip("addr", "del", f"{site.leg.addr}/24", "dev", site.leg.ifname, netns=site.netns)
    ip("addr", "add", f"{addr}/24", "dev", site.leg.ifname, netns=site.netns)
    ip("route", "replace", "default", "via", f"{PUBLIC}.1", netns=site.netns)
    site.leg.addr = addr
    lab.pin_arp()
