"""Reach figures on the NAT lab (tests/lab/natlab.py): issue 14's targets, docs/reach.md "Figures".

Builds a lab (a public relay host, two public hosts, two cone homes, two symmetric homes),
runs `chinwag relay` on the relay host, and measures with real processes, on the bench's
perf_counter clock (events are stamped when read, so pipe delays mostly cancel):

- punch_*: `tries` fresh cone x cone pairs: B invites, A adds; how many end direct, and the
  upgrade time (A's `path` event "direct" minus A's `peer_joined` over the relay).
- add_to_msg_ms: a symmetric x symmetric pair (never punched): A's `add` sent to B showing
  the first message A typed once B joined (through the relay).
- rtt_relayed_ms / rtt_direct_ms: chat ping-pong (A says, B answers when it sees it) over
  the relayed pair and over two public hosts on one bridge; the relay's share is the
  difference (the lab's links have no latency of their own: netem is missing here).
- file_direct_mbs / file_lan_mbs: one file over the punched cone pair and over the two
  public hosts (same bridge), from the accept to `file_done`.

Usage (as root; a fresh network namespace is required, as for every benchmark):
    unshare -n bash -c 'ip link set lo up; .venv/bin/python bench/reach.py [--tries 20]'
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import REPO, TimedProcess, emit, median, note, percentile, run, stop

sys.path.insert(0, str(REPO / "tests" / "lab"))
sys.path.insert(1, str(REPO / "tests" / "integration"))

from natlab import NatLab
from reach_support import DIRECT, PUNCH_S, LabRelay, add, invite_code, wait_path

START_S = 20.0
#: Pairs per relay: every try asks it for a reservation from each home's one public address,
#: and a relay grants an address RELAY_MAX_RESERVATIONS_PER_IP (8) an hour.
RELAY_TRIES = 6
PROMPT_S = 10.0


class Bench:
    """The lab, the relay and a factory of timed nodes in lab sites."""

    def __init__(self, lab: NatLab, workdir: Path, relay: LabRelay) -> None:
        self.lab, self.workdir, self.relay = lab, workdir, relay
        self.n = 0

    async def fresh_relay(self) -> None:
        """Replace the relay: it grants each public address 8 reservations an hour."""
        await self.relay.stop()
        self.n += 1
        self.relay = await LabRelay(
            self.lab.sites["relay"], self.workdir / f"relay{self.n}"
        ).start()

    def node(self, site: str, nick: str, relay: bool = True) -> TimedProcess:
        self.n += 1
        args = ["--port", "0", "--no-upnp", "--log-level", "warning"]
        if relay:
            args += ["--relay-peer", self.relay.addr]
        return TimedProcess(
            self.workdir / f"{nick}{self.n}", *args, netns=self.lab.sites[site].netns, nick=nick
        )

    async def pair(
        self, x: str, y: str, relay: bool = True
    ) -> tuple[TimedProcess, TimedProcess, float]:
        """Start A at x and B at y; B invites, A adds; return them and when add was sent."""
        a, b = self.node(x, "a", relay), self.node(y, "b", relay)
        await a.start(START_S)
        await b.start(START_S)
        if relay:
            code = (await invite_code(b))["code"]
            await invite_code(a)
        else:
            code = (await _ask(b, {"cmd": "invite"}, "invite"))["code"]
        t_add = time.perf_counter()
        await add(a, code)
        await a.wait_for("peer_joined", from_start=True, timeout=START_S, peer_id=b.peer_id)
        await b.wait_for("peer_joined", from_start=True, timeout=START_S, peer_id=a.peer_id)
        return a, b, t_add


async def _ask(node: TimedProcess, cmd: dict[str, object], answer: str) -> dict[str, object]:
    from it_support import ask

    return await ask(node, cmd, answer)


async def punch_tries(bench: Bench, tries: int) -> tuple[TimedProcess, TimedProcess] | None:
    """cone x cone: direct share and upgrade times; keep the last direct pair running."""
    upgrades: list[float] = []
    direct = 0
    kept: tuple[TimedProcess, TimedProcess] | None = None
    for i in range(tries):
        if i and i % RELAY_TRIES == 0:
            await bench.fresh_relay()
        a, b, _ = await bench.pair("cone1", "cone2")
        joined = await a.wait_for("peer_joined", from_start=True, peer_id=b.peer_id)
        try:
            if joined.get("path") in DIRECT:
                direct += 1  # dialled straight (not expected behind two cones)
            else:
                await wait_path(a, b.peer_id, DIRECT, PUNCH_S)
                moved = [e for e in a.events if e.get("event") == "path"
                         and e.get("peer_id") == b.peer_id and e.get("path") in DIRECT]  # fmt: skip
                upgrades.append((moved[0]["_rx"] - joined["_rx"]) * 1000)
                direct += 1
        except TimeoutError:
            note(f"try {i}: still relayed after {PUNCH_S} s")
        if i == tries - 1 and direct and upgrades:
            kept = (a, b)
        else:
            await stop(a, b)
    emit("punch_tries", tries)
    emit("punch_direct_pct", 100.0 * direct / tries)
    if upgrades:
        emit("punch_upgrade_ms_p50", median(upgrades))
        emit("punch_upgrade_ms_p90", percentile(upgrades, 90))
        emit("punch_upgrade_ms_max", max(upgrades))
    return kept


async def add_to_first_message(bench: Bench, rounds: int) -> tuple[TimedProcess, TimedProcess]:
    """sym x sym: from `add` to B showing A's first message; keep the last pair running."""
    times: list[float] = []
    for i in range(rounds):
        a, b, t_add = await bench.pair("sym1", "sym2")
        text = f"first {i}"
        await a.say(text)
        got = await b.wait_for_message(text, PROMPT_S)
        times.append((got["_rx"] - t_add) * 1000)
        if i < rounds - 1:
            await stop(a, b)
    emit("add_to_msg_rounds", rounds)
    emit("add_to_msg_ms_p50", median(times))
    emit("add_to_msg_ms_max", max(times))
    return a, b


async def ping_pong(a: TimedProcess, b: TimedProcess, n: int, tag: str) -> float:
    """Median chat round trip A -> B -> A in ms (B's answer is sent when B shows the ping)."""
    rtts: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        await a.say(f"{tag}-ping-{i}")
        await b.wait_for_message(f"{tag}-ping-{i}", PROMPT_S)
        await b.say(f"{tag}-pong-{i}")
        got = await a.wait_for_message(f"{tag}-pong-{i}", PROMPT_S)
        rtts.append((got["_rx"] - t0) * 1000)
    return median(rtts[1:] or rtts)


async def file_speed(a: TimedProcess, b: TimedProcess, size_mb: int, workdir: Path) -> float:
    """MB/s of one file A -> B, from B's accept to B's file_done."""
    path = workdir / f"payload-{a.nick}-{b.nick}-{time.monotonic_ns()}.bin"
    path.write_bytes(os.urandom(size_mb * 1_000_000))
    before = len(b.events)
    await a.send({"cmd": "send_file", "to": b.peer_id, "path": str(path)})
    offer = await b.wait_for(
        "file_offer", lambda e: b.events.index(e) >= before, timeout=PROMPT_S, from_start=True
    )
    t0 = time.perf_counter()
    await b.send({"cmd": "accept_file", "id": offer["id"], "dir": str(workdir / "in")})
    done = await b.wait_for("file_done", timeout=120, from_start=True, id=offer["id"])
    return size_mb / (done["_rx"] - t0)


async def main_async(args: argparse.Namespace) -> None:
    lab = NatLab()
    nodes: list[TimedProcess] = []
    relay: LabRelay | None = None
    bench: Bench | None = None
    with tempfile.TemporaryDirectory(prefix="chinwag-reach-") as tmp:
        workdir = Path(tmp)
        try:
            for name, kind in (("relay", "public"), ("pub1", "public"), ("pub2", "public"),
                               ("cone1", "cone"), ("cone2", "cone"),
                               ("sym1", "symmetric"), ("sym2", "symmetric")):  # fmt: skip
                lab.add_site(name, kind)
            lab.pin_arp()
            relay = await LabRelay(lab.sites["relay"], workdir / "relay").start()
            bench = Bench(lab, workdir, relay)
            t0 = time.monotonic()
            punched = await punch_tries(bench, args.tries)
            nodes += list(punched or ())
            sa, sb = await add_to_first_message(bench, args.rounds)
            la, lb, _ = await bench.pair("pub1", "pub2", relay=False)
            nodes += [sa, sb, la, lb]
            rtt_relayed = await ping_pong(sa, sb, args.pings, "relayed")
            rtt_lan = await ping_pong(la, lb, args.pings, "lan")
            emit("rtt_relayed_ms_p50", rtt_relayed)
            emit("rtt_lan_ms_p50", rtt_lan)
            emit("relay_adds_ms_one_way", (rtt_relayed - rtt_lan) / 2)
            if punched is not None:
                emit("file_mb", args.file_mb)
                emit("file_direct_mbs", await file_speed(*punched, args.file_mb, workdir))
                emit("file_lan_mbs", await file_speed(la, lb, args.file_mb, workdir))
            note(f"reach bench took {time.monotonic() - t0:.1f} s")
        finally:
            await stop(*nodes)
            if bench is not None:
                await bench.relay.stop()
            elif relay is not None:
                await relay.stop()
            lab.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=20, help="cone x cone pairs punched")
    p.add_argument("--rounds", type=int, default=5, help="add -> first message rounds")
    p.add_argument("--pings", type=int, default=30, help="chat ping-pongs per path")
    p.add_argument("--file-mb", type=int, default=32, help="file size for the speed figures")
    args = p.parse_args()
    run(lambda: main_async(args))


if __name__ == "__main__":
    main()
