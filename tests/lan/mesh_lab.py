"""A LAN of many hosts, one chinwag each, all in "general": the gossip mesh on real processes.

Shared by tests/lan/test_lan_mesh.py and bench/mesh40.py. `MeshLab` builds N namespace hosts
on one bridge (tests/lan/netlab.py), pins every host's ARP entries for every other host (the
kernel's neighbour table is shared by all namespaces and overflows past gc_thresh3 = 1,024
entries, FACTS.md; permanent entries are exempt from that count), starts one `chinwag --json`
per host with discovery on, and offers what a run needs: wait for the mesh to settle, send
messages from random authors, wait until nodes hold them, kill and restart hosts, measure
delivery latency. Every received event is stamped with the wall-clock time it was read
(`_rx`), so a message's latency is `_rx - ts` (one machine: one clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netlab import IP, Host, NetLab

from driver import ChinwagProcess, Event

#: Arguments of every node: any TCP port, discovery on, quiet logs (40 of them share 2 cores).
MESH_NODE_ARGS = ("--port", "0", "--log-level", "warning")


class StampedProcess(ChinwagProcess):
    """A node whose events carry `_rx`: the wall-clock time the driver read them."""

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            rx = time.time()
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "_unparsable", "line": line.decode(errors="replace")}
            ev["_rx"] = rx
            self.events.append(ev)
            self._new.set()
        self._new.set()


def pin_neighbours(hosts: Sequence[Host]) -> None:
    """Give every host a permanent ARP entry for every other host (one `ip -batch` each)."""
    macs = {}
    for h in hosts:
        out = subprocess.run(
            [IP, "-n", h.netns, "-j", "link", "show", "dev", "eth0"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        macs[h.name] = json.loads(out)[0]["address"]
    for h in hosts:
        batch = "".join(
            f"neigh replace {o.address} lladdr {macs[o.name]} dev eth0 nud permanent\n"
            for o in hosts
            if o is not h
        )
        subprocess.run(
            [IP, "-n", h.netns, "-batch", "-"],
            input=batch,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )


@dataclass
class MeshLab:
    """N hosts on one bridge, one node each; `nodes[i]` runs in `hosts[i]` (None: not running)."""

    lab: NetLab
    workdir: Path
    n: int
    extra_args: tuple[str, ...] = ()
    hosts: list[Host] = field(default_factory=list)
    nodes: list[StampedProcess] = field(default_factory=list)
    #: Every process ever started per host (a restart adds one), for exactly-once checks.
    runs: list[list[StampedProcess]] = field(default_factory=list)
    #: Text -> index of the node it was given to.
    sent_by: dict[str, int] = field(default_factory=dict)

    def build(self) -> None:
        """Create the hosts and pin their neighbours."""
        self.lab.add_segment("lan")
        self.hosts = [self.lab.add_host(f"h{i + 1}") for i in range(self.n)]
        pin_neighbours(self.hosts)
        self.runs = [[] for _ in self.hosts]

    def _process(self, i: int) -> StampedProcess:
        p = StampedProcess(
            self.workdir / f"n{i + 1}",
            *MESH_NODE_ARGS,
            *self.extra_args,
            netns=self.hosts[i].netns,
            nick=f"n{i + 1}",
        )
        self.runs[i].append(p)
        return p

    async def start(self, indices: Iterable[int] | None = None, within: float = 90.0) -> None:
        """Start nodes (all by default) at once; return when each printed `ready`."""
        idx = list(range(self.n)) if indices is None else list(indices)
        fresh = {i: self._process(i) for i in idx}
        if not self.nodes:
            self.nodes = [fresh[i] for i in range(self.n)]
        for i, p in fresh.items():
            self.nodes[i] = p
        await asyncio.gather(*(p.start(within) for p in fresh.values()))

    def alive(self) -> list[StampedProcess]:
        """The nodes whose process runs."""
        return [p for p in self.nodes if p.proc is not None and p.returncode is None]

    async def kill(self, indices: Iterable[int]) -> None:
        """SIGKILL these nodes (no goodbye: a host that dies)."""
        await asyncio.gather(*(self.nodes[i].kill() for i in indices))

    async def stop_all(self) -> None:
        """Quit every running node (kill those that do not go)."""

        async def stop(p: StampedProcess) -> None:
            try:
                await p.quit(10)
            except Exception:
                with contextlib.suppress(Exception):
                    await p.kill()

        await asyncio.gather(*(stop(p) for p in self.alive()))

    async def settle(self, lo: int, hi: int, within: float) -> list[int]:
        """Wait until every running node has between lo and hi peers; return the counts."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            counts = [len(p.connected_peers()) for p in self.alive()]
            if all(lo <= c <= hi for c in counts):
                return counts
            if loop.time() > deadline:
                raise AssertionError(f"peer counts not within {lo}..{hi} in {within}s: {counts}")
            await asyncio.sleep(0.1)

    async def send(
        self,
        count: int,
        rng: random.Random,
        rate: float,
        authors: Sequence[int] | None = None,
        label: str = "m",
    ) -> list[str]:
        """Send count messages, each from a random author (indices), at about rate per second.

        Return their texts, in sending order.
        """
        pool = list(range(self.n)) if authors is None else list(authors)
        tag = uuid.uuid4().hex[:8]
        texts = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(count):
            text = f"{label}{k:04d}-{tag}"
            author = rng.choice(pool)
            await self.nodes[author].say(text)
            self.sent_by[text] = author
            texts.append(text)
            pause = start + (k + 1) / rate - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)  # pacing the load, not synchronising
        return texts

    async def wait_held(
        self, texts: Iterable[str], within: float, indices: Iterable[int] | None = None
    ) -> None:
        """Wait until each of these hosts (default: those running) showed every text, in
        this run or an earlier one (a restarted node shows only what it lacked)."""
        want = set(texts)
        idx = (
            [i for i, p in enumerate(self.nodes) if p.proc is not None and p.returncode is None]
            if indices is None
            else list(indices)
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within

        def lacking(i: int) -> set[str]:
            return want - {ev.get("text") for p in self.runs[i] for ev in p.messages()}

        while True:
            missing = {f"n{i + 1}": len(lacking(i)) for i in idx}
            if not any(missing.values()):
                return
            if loop.time() > deadline:
                raise AssertionError(
                    f"not every node holds all {len(want)} messages: {missing}; "
                    f"{self._whereabouts(set().union(*(lacking(i) for i in idx)))}"
                )
            await asyncio.sleep(0.2)

    async def wait_stored(
        self, texts: Iterable[str], within: float, indices: Iterable[int]
    ) -> None:
        """Wait until each of these nodes holds every text in its history (the `history`
        command): a node killed between a commit and printing its event stores a message it
        never showed, so after a kill the store, not the events, says what a node holds."""
        want = set(texts)
        idx = list(indices)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            held = await asyncio.gather(*(history_texts(self.nodes[i]) for i in idx))
            missing = {f"n{i + 1}": len(want - set(h)) for i, h in zip(idx, held, strict=True)}
            if not any(missing.values()):
                return
            if loop.time() > deadline:
                raise AssertionError(f"not every node stores all {len(want)} messages: {missing}")
            await asyncio.sleep(1.0)

    async def wait_left(self, texts: Iterable[str], hosts: Iterable[int], within: float) -> None:
        """Wait until each of these texts is shown by at least one node of hosts (it left
        its author: killing the author now loses nothing that sync cannot bring back)."""
        want = set(texts)
        nodes = [self.nodes[i] for i in hosts]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            shown = {ev.get("text") for p in nodes for ev in p.messages()}
            if want <= shown:
                return
            if loop.time() > deadline:
                raise AssertionError(f"{len(want - shown)} messages never left their authors")
            await asyncio.sleep(0.1)

    def _whereabouts(self, texts: set[str]) -> str:
        """Say, for some missing texts, who wrote them and how many nodes show them."""
        out = []
        for text in sorted(texts)[:5]:
            author = [
                p.nick
                for p in self.nodes
                if any(ev.get("text") == text and ev.get("own") for ev in p.messages())
            ]
            holders = sum(
                1 for p in self.nodes if any(ev.get("text") == text for ev in p.messages())
            )
            given = self.sent_by.get(text)
            errors = []
            if given is not None:
                for run in self.runs[given]:
                    errors += [ev for ev in run.events if ev.get("event") == "error"][:3]
            tail = "" if given is None else self.runs[given][0].stderr_tail(1500)
            out.append(
                f"{text}: given to n{(given or 0) + 1}, written by {author}, "
                f"shown by {holders}, errors there: {errors}, its log: {tail}"
            )
        return "; ".join(out)

    def shown_more_than_once(self, texts: Iterable[str]) -> dict[str, list[str]]:
        """Per host, the texts shown more than once over all its runs (should be none)."""
        want = set(texts)
        out = {}
        for i, runs in enumerate(self.runs):
            seen = Counter(ev["id"] for p in runs for ev in p.messages() if ev.get("text") in want)
            extra = [i for i, c in seen.items() if c > 1]
            if extra:
                out[f"n{i + 1}"] = extra
        return out

    def latencies_ms(self, texts: Iterable[str]) -> list[float]:
        """Delivery latency of each (message, receiving node) shown live (not a sync catch-up)."""
        want = set(texts)
        out = []
        for p in self.nodes:
            for ev in p.messages():
                if ev.get("text") in want and not ev.get("own"):
                    out.append((ev["_rx"] - ev["ts"]) * 1000)
        return out

    def max_peers(self) -> int:
        """The most peers any node ever held at once (from its join and leave events)."""
        most = 0
        for runs in self.runs:
            for p in runs:
                held: set[str] = set()
                for ev in p.events:
                    if ev.get("event") == "peer_joined":
                        held.add(ev["peer_id"])
                        most = max(most, len(held))
                    elif ev.get("event") == "peer_left":
                        held.discard(ev["peer_id"])
        return most


async def history_texts(node: ChinwagProcess, limit: int = 10_000) -> list[str]:
    """The texts of node's "general" history, oldest first (the `history` command)."""
    before = {id(ev) for ev in node.events}
    await node.send({"cmd": "history", "limit": limit})
    reply: Event = await node.wait_for(
        "history", pred=lambda ev: id(ev) not in before, timeout=30, from_start=True
    )
    return [str(ev["text"]) for ev in reply["messages"]]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]
