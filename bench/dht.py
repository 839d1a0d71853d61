"""DHT figures on the NAT lab (issue 15's targets, docs/dht.md "Figures").

Builds a lab with a private Mainline DHT of 50 libtorrent nodes (tests/lab/dhtlab.py), four
public publishers, one publisher behind a cone NAT and one looker, all real `chinwag`
processes joined to it with `--dht-bootstrap` (no beacons: every contact is found by id).

- publish_ms: from a node's `ready` to its first `published` (public host / behind the NAT);
- lookup_ms: the looker's `lookup` of each publisher, `rounds` times (the node's own `ms`);
- add_to_msg_ms: from `{"cmd":"add","peer_id":..}` sent to the looker until the publisher
  shows the first message the looker typed once it joined;
- idle_dht_bytes_per_s, idle_cpu_pct: a node with no peer, started first and measured last
  (over `idle` seconds): all its namespace's traffic (it has no other) and its CPU time;
  publish_bytes: its traffic from start to its first record stored (bootstrap + one put).

Usage (as root, in a fresh network namespace like every benchmark):
    unshare -n bash -c 'ip link set lo up; .venv/bin/python bench/dht.py [--rounds 5]'
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import REPO, TimedProcess, emit, median, note, percentile, run, stop

sys.path.insert(0, str(REPO / "tests" / "lab"))

from dhtlab import DhtSwarm
from natlab import NatLab, built

START_S = 20.0
PROMPT_S = 10.0
PUBLISHERS = ("p1", "p2", "p3", "p4", "nat")


def namespace_bytes(lab: NatLab, site: str) -> int:
    """Bytes received and sent on the site host's eth0 so far."""
    out = os.popen(f"ip netns exec {lab.sites[site].netns} cat /proc/net/dev").read()
    for line in out.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "eth0":
            fields = rest.split()
            return int(fields[0]) + int(fields[8])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main_async(rounds: int, idle: float) -> None:
    sites = [("dht", "public"), ("look", "public", "pub2"), ("idle", "public", "pub2")]
    sites += [("p1", "public"), ("p2", "public"), ("p3", "public", "pub2")]
    sites += [("p4", "public", "pub2"), ("nat", "cone")]
    with built(*sites) as lab, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        swarm = DhtSwarm(lab, lab.sites["dht"], 50)
        emit("swarm_nodes", 50)
        emit("swarm_start_s", round(time.perf_counter() - t0, 2))
        args = ["--port", "0", "--no-upnp", "--no-discovery", "--log-level", "warning"]
        args += swarm.bootstrap_args()

        def node(site: str) -> TimedProcess:
            return TimedProcess(Path(tmp) / site, *args, netns=lab.sites[site].netns, nick=site)

        # The idle node starts first: by the time it is measured it has run as long as
        # the rest of the bench (past its bootstrap), with no peer and no other traffic.
        quiet = node("idle")
        before = namespace_bytes(lab, "idle")
        await quiet.start(START_S)
        await quiet.wait_for("published", timeout=30, from_start=True)
        emit("publish_bytes", namespace_bytes(lab, "idle") - before)

        looker = node("look")
        pubs = [node(s) for s in PUBLISHERS]
        try:
            await asyncio.gather(*(p.start(START_S) for p in [looker, *pubs]))
            for p in pubs:
                ready = await p.wait_for("ready", from_start=True)
                published = await p.wait_for("published", timeout=30, from_start=True)
                kind = "nat" if p.nick == "nat" else "public"
                emit(f"publish_ms_{p.nick}_{kind}", round((published["_rx"] - ready["_rx"]) * 1000))
            times: list[float] = []
            for _ in range(rounds):
                for p in pubs:
                    await looker.send({"cmd": "lookup", "peer_id": p.peer_id})
                    got = await looker.wait_for("lookup", timeout=PROMPT_S, peer_id=p.peer_id)
                    assert got["found"], got
                    times.append(float(got["ms"]))
            emit("lookup_rounds", len(times))
            emit("lookup_ms_p50", median(times))
            emit("lookup_ms_p90", percentile(times, 90))
            emit("lookup_ms_max", max(times))

            adds: list[float] = []
            for i, p in enumerate(pubs[:4]):
                t_add = time.perf_counter()
                await looker.send({"cmd": "add", "peer_id": p.peer_id})
                await looker.wait_for("peer_joined", timeout=START_S, peer_id=p.peer_id)
                text = f"first message {i}"
                await looker.say(text)
                got = await p.wait_for_message(text, PROMPT_S)
                adds.append((got["_rx"] - t_add) * 1000)
            emit("add_to_msg_rounds", len(adds))
            emit("add_to_msg_ms_p50", median(adds))
            emit("add_to_msg_ms_max", max(adds))
        finally:
            await stop(looker, *pubs)

        try:
            assert quiet.proc is not None
            b0, c0, w0 = namespace_bytes(lab, "idle"), cpu_seconds(quiet.proc.pid), time.time()
            await asyncio.sleep(idle)  # measuring an idle node: nothing to wait for
            b1, c1, w1 = namespace_bytes(lab, "idle"), cpu_seconds(quiet.proc.pid), time.time()
            emit("idle_s", round(w1 - w0, 1))
            emit("idle_dht_bytes_per_s", round((b1 - b0) / (w1 - w0), 1))
            emit("idle_cpu_pct", round(100 * (c1 - c0) / (w1 - w0), 2))
        finally:
            await stop(quiet)
        note("publishing costs publish_bytes once an hour plus the idle rate")
        del swarm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=4, help="lookups of each publisher")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds of idle measurement")
    opts = parser.parse_args()
    run(lambda: main_async(opts.rounds, opts.idle))


if __name__ == "__main__":
    main()
