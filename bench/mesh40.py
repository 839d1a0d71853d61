"""The gossip mesh on 40 namespace hosts: delivery latency across the mesh and sustained rate.

Builds the lab of tests/lan/test_lan_mesh.py (tests/lan/mesh_lab.py: 40 hosts on one bridge,
one `chinwag --json` each, discovery on, all in "general"), waits for the mesh to settle, then

1. latency: sends --n messages from random authors at a paced --rate; for every (message,
   receiving node) pair, latency = when the driver read the receiver's event minus the
   message's signed time (one machine: one clock); prints p50/p99/max over all pairs;
2. sustained: sends --burst messages from random authors as fast as the nodes' stdin take
   them and prints burst / (time until all 40 nodes show all of them).

Needs root; builds its own namespaces (run inside `unshare -n`, like every bench).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import REPO, emit, note, run

sys.path.insert(0, str(REPO / "tests" / "lan"))

from mesh_lab import MeshLab, percentile
from netlab import NetLab

from chinwag import limits


async def measure(opts: argparse.Namespace, workdir: Path) -> None:
    """Build the lab, settle, measure latency and the sustained rate, print figures."""
    rng = random.Random(opts.seed)
    with NetLab() as lab:
        mesh = MeshLab(lab, workdir, opts.hosts)
        t0 = time.perf_counter()
        mesh.build()
        await mesh.start(within=120)
        note(f"lab built and {opts.hosts} nodes ready in {time.perf_counter() - t0:.1f}s")
        try:
            t1 = time.perf_counter()
            counts = await mesh.settle(limits.MESH_D_LO, limits.MESH_D_HI + 4, 60)
            emit("mesh40_settle_s", time.perf_counter() - t1)
            emit("mesh40_peers_min", min(counts))
            emit("mesh40_peers_max", max(counts))

            texts = await mesh.send(opts.n, rng, opts.rate, label="l")
            await mesh.wait_held(texts, 60)
            lat = mesh.latencies_ms(texts)
            emit("mesh40_latency_rate_msgs_per_s", opts.rate)
            emit("mesh40_latency_pairs", len(lat))
            emit("mesh40_latency_p50_ms", percentile(lat, 0.5))
            emit("mesh40_latency_p99_ms", percentile(lat, 0.99))
            emit("mesh40_latency_max_ms", max(lat))

            t2 = time.perf_counter()
            burst = await mesh.send(opts.burst, rng, 1e9, label="s")
            written = time.perf_counter() - t2
            await mesh.wait_held(burst, 120)
            elapsed = time.perf_counter() - t2
            emit("mesh40_burst_n", opts.burst)
            emit("mesh40_burst_stdin_write_s", written)
            emit("mesh40_burst_all_held_s", elapsed)
            emit("mesh40_sustained_msgs_per_s", opts.burst / elapsed)
            emit("mesh40_max_peers_seen", mesh.max_peers())
            dup = mesh.shown_more_than_once(texts + burst)
            emit("mesh40_shown_twice", sum(len(v) for v in dup.values()))
        finally:
            await mesh.stop_all()


def main() -> None:
    """Parse options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", type=int, default=40)
    ap.add_argument("-n", type=int, default=300, help="paced messages for latency")
    ap.add_argument("--rate", type=float, default=20.0, help="paced messages per second")
    ap.add_argument("--burst", type=int, default=1000, help="messages for the sustained rate")
    ap.add_argument("--seed", type=int, default=40)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-mesh40-") as tmp:
        run(lambda: measure(opts, Path(tmp)))


if __name__ == "__main__":
    main()
