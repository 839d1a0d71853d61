"""contacts.py: what peers report of our address is persisted and named by invites, also by
`chinwag invite` without a node; a changed public address redials offline contacts."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chinwag import events as ev
from chinwag.contacts import ContactBook, offline_invite, store_contact
from chinwag.crypto.identity import Identity
from chinwag.datadir import DataDir
from chinwag.errors import UsageError
from chinwag.net.connection import PeerConnection
from chinwag.net.manager import ConnectionManager
from chinwag.protocol import messages as m
from chinwag.protocol.invite import make_invite, read_invite
from chinwag.store.db import Store

ME = Identity.from_seed(b"m" * 32)
FRIEND = Identity.from_seed(b"f" * 32)
PORT = 47475


@dataclass
class FakeManager:
    peers: dict[str, object] = field(default_factory=dict)
    dialled: list[tuple[str, list[str]]] = field(default_factory=list)

    def dial_contact(self, peer_id: str, addrs: list[str], relays: list[Any]) -> None:
        self.dialled.append((peer_id, addrs))

    def forget_contact(self, peer_id: str) -> None:
        self.dialled = [d for d in self.dialled if d[0] != peer_id]


@dataclass
class FakeSession:
    peer_id: str
    initiator: bool
    peer_nick: str = "x"
    peer_port: int = 0

    @property
    def dialled(self) -> bool:
        return self.initiator


@dataclass
class FakeTransport:
    sockname: tuple[str, int]

    def get_extra_info(self, name: str) -> object:
        return self.sockname if name == "sockname" else None


@dataclass(eq=False)
class FakeConn:
    session: FakeSession
    address: tuple[str, int]
    transport: FakeTransport

    @property
    def peer_id(self) -> str:
        return self.session.peer_id


def book(tmp_path: Path, manager: FakeManager) -> tuple[ContactBook, Store]:
    store = Store(tmp_path / "chinwag.db")
    contacts = ContactBook(
        store,
        typing.cast(ConnectionManager, manager),
        DataDir(tmp_path),
        lambda _e: None,
        "0.0.0.0",
    )
    return contacts, store


def report(
    contacts: ContactBook, reporter: str, from_ip: str, seen: str, conn: FakeConn | None = None
) -> FakeConn:
    conn = conn or FakeConn(
        FakeSession(reporter, initiator=False), (from_ip, 50000), FakeTransport(("10.0.0.2", PORT))
    )
    contacts.observed(typing.cast(PeerConnection, conn), m.Observed(addr=seen))
    return conn


async def test_confirmed_public_addresses_are_saved_and_named_by_every_invite(
    tmp_path: Path,
) -> None:
    manager = FakeManager()
    contacts, store = book(tmp_path, manager)
    try:
        contacts.load(PORT)
        contacts.add(make_invite(FRIEND, "fred", ["192.0.2.44:1"], [], 2**40), ME.peer_id)
        assert manager.dialled == [(FRIEND.peer_id, ["192.0.2.44:1"])]
        report(contacts, "p1", "198.51.100.1", "203.0.113.7:47475")
        assert len(manager.dialled) == 1  # one report proves nothing
        report(contacts, "p2", "192.0.2.1", "203.0.113.7:47475")
        # Our public address is new: the offline contact is dialled again at once.
        assert len(manager.dialled) == 2
        invite = contacts.invite(ME, "me", None, [])
        assert invite.addresses[0] == "203.0.113.7:47475"
    finally:
        contacts.close()
        store.close()
    saved = json.loads((tmp_path / "settings.json").read_text())["reach"]
    assert saved["port"] == PORT and saved["public"] == ["203.0.113.7:47475"]
    # `chinwag invite` with no node running names them too, signed and readable.
    offline = offline_invite(tmp_path, ME, "me", None, None)
    assert isinstance(offline, ev.Invite) and "203.0.113.7:47475" in offline.addresses
    assert read_invite(offline.code, 0).addrs == offline.addresses
    # And so does the next run, before any peer confirms them again.
    again, store = book(tmp_path, FakeManager())
    try:
        again.load(PORT)
        assert "203.0.113.7:47475" in again.invite(ME, "me", None, []).addresses
    finally:
        again.close()
        store.close()


async def test_the_upnp_mapping_and_relays_of_the_hooks_reach_chinwag_invite(
    tmp_path: Path,
) -> None:
    relay = Identity.from_seed(b"r" * 32).peer_id
    hooks: list[tuple[str | None, list[tuple[str, str]]]] = [(None, [])]
    store = Store(tmp_path / "chinwag.db")
    contacts = ContactBook(
        store,
        typing.cast(ConnectionManager, FakeManager()),
        DataDir(tmp_path),
        lambda _e: None,
        "0.0.0.0",
        lambda: hooks[0],
    )
    try:
        contacts.load(PORT)
        assert offline_invite(tmp_path, ME, "me", None, None).relays == []
        # The mapping and a reservation appear (natlab's and relay's work): saved by the
        # next poll of the network watch, or by the next invite.
        hooks[0] = ("198.51.100.50:40000", [(relay, "198.51.100.9:47475")])
        invite = contacts.invite(ME, "me", *hooks[0])
        assert invite.addresses[0] == "198.51.100.50:40000"
    finally:
        contacts.close()
        store.close()
    offline = offline_invite(tmp_path, ME, "me", None, None)
    assert offline.addresses[0] == "198.51.100.50:40000"
    assert offline.relays == [ev.RelayAddr(peer_id=relay, address="198.51.100.9:47475")]


async def test_a_connection_reports_once_and_redials_are_paced(tmp_path: Path) -> None:
    """A peer flipping its report cannot move our address nor make us redial at will."""
    manager = FakeManager()
    contacts, store = book(tmp_path, manager)
    try:
        contacts.load(PORT)
        contacts.add(make_invite(FRIEND, "fred", ["192.0.2.44:1"], [], 2**40), ME.peer_id)
        report(contacts, "p1", "198.51.100.1", "203.0.113.7:47475")
        conn = report(contacts, "p2", "192.0.2.1", "203.0.113.7:47475")
        assert contacts.public_addrs() == ["203.0.113.7:47475"]
        dials = len(manager.dialled)
        report(contacts, "p2", "192.0.2.1", "203.0.113.99:1", conn)  # same connection
        assert contacts.public_addrs() == ["203.0.113.7:47475"]
        # Over new connections the address may change, but contacts are not redialled
        # again within PUBLIC_CHANGE_REDIAL_MIN_S.
        report(contacts, "p1", "198.51.100.1", "203.0.113.8:47475")
        report(contacts, "p2", "192.0.2.1", "203.0.113.8:47475")
        assert contacts.public_addrs() == ["203.0.113.8:47475"]
        assert len(manager.dialled) == dials
    finally:
        contacts.close()
        store.close()


async def test_a_newer_code_replaces_the_addresses_dialled(tmp_path: Path) -> None:
    manager = FakeManager()
    contacts, store = book(tmp_path, manager)
    try:
        contacts.load(PORT)
        contacts.add(make_invite(FRIEND, "fred", ["192.0.2.44:1"], [], 2**40), ME.peer_id)
        contacts.add(make_invite(FRIEND, "fred", ["192.0.2.45:1"], [], 2**40), ME.peer_id)
        assert manager.dialled == [(FRIEND.peer_id, ["192.0.2.45:1"])]
        assert [c.peer_id for c in contacts.listing({}).contacts] == [FRIEND.peer_id]
    finally:
        contacts.close()
        store.close()


async def test_an_id_that_is_not_a_key_is_refused_by_add_and_chinwag_add(tmp_path: Path) -> None:
    """ "a"*52 is canonical base32 but no Ed25519 point: a usage error, not a contact whose
    lookups and DMs would raise later (issue 15 review)."""
    manager = FakeManager()
    contacts, store = book(tmp_path, manager)
    try:
        contacts.load(PORT)
        with pytest.raises(UsageError, match="not a valid Ed25519 key"):
            contacts.add_id("a" * 52, ME.peer_id)
        assert contacts.listing({}).contacts == []
        event, new = contacts.add_id(FRIEND.peer_id, ME.peer_id)
        assert new and event.peer_id == FRIEND.peer_id
    finally:
        contacts.close()
        store.close()
    with pytest.raises(UsageError, match="not a valid Ed25519 key"):
        store_contact(tmp_path / "other", "a" * 52)
