"""Start-up and idle cost of one node.

- `chinwag --version` wall time over 10 runs (target <= 0.3 s);
- time from spawning `chinwag --json` to reading its ready event, first start on a fresh
  data dir (creates the identity) and later starts (target <= 0.5 s);
- a lone idle node (discovery on loopback): RSS 5 s after ready (target < 60 MB) and
  CPU over the next 5 s; the same CPU figure for a node with one connected peer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import TimedProcess, emit, median, node_args, note, run, stop

#: Seconds of idleness before RSS is read, and over which CPU is measured.
IDLE_S = 5.0


def version_command() -> list[str]:
    """The console script next to this interpreter if installed, else `python -m chinwag`."""
    script = Path(sys.executable).with_name("chinwag")
    if script.exists():
        return [str(script), "--version"]
    return [sys.executable, "-m", "chinwag", "--version"]


def version_times(runs: int) -> list[float]:
    """Wall seconds of each `chinwag --version` run."""
    cmd = version_command()
    note(f"version command: {' '.join(cmd)}")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def rss_mb(pid: int) -> float:
    """Resident set size in MB (MiB) from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_percent_over(pid: int, seconds: float) -> float:
    """Percent of one core the process used over the next `seconds` (a measurement window)."""
    before, t0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.perf_counter() - t0)


async def ready_time(data_dir: Path, port: int) -> float:
    """Seconds from spawning a node to reading its ready event; the node then quits."""
    node = TimedProcess(data_dir, *node_args(discovery_port=port), nick="s")
    start = time.perf_counter()
    try:
        ready = await node.start()
        return float(ready["_rx"]) - start
    finally:
        await stop(node)


async def measure(runs: int, workdir: Path) -> None:
    """Run every start-up and idle measurement and print figures."""
    vt = await asyncio.to_thread(version_times, runs)
    emit("version_wall_s_median", median(vt))
    emit("version_wall_s_max", max(vt))

    port = random.randint(40000, 60000)
    first = await ready_time(workdir / "r", port)
    later = [await ready_time(workdir / "r", port) for _ in range(max(1, runs // 2))]
    emit("ready_first_start_s", first)
    emit("ready_s_median", median(later))
    emit("ready_s_max", max(later))

    a = TimedProcess(workdir / "idle", *node_args(discovery_port=port), nick="idle")
    await a.start()
    try:
        assert a.proc is not None
        await asyncio.sleep(IDLE_S)  # idleness being measured, not synchronisation
        emit("idle_rss_mb", rss_mb(a.proc.pid))
        emit("idle_cpu_percent", await cpu_percent_over(a.proc.pid, IDLE_S))

        b = TimedProcess(workdir / "peer", *node_args(discovery_port=port), nick="peer")
        await b.start()
        try:
            await a.wait_for_peers([b.peer_id])
            await b.wait_for_peers([a.peer_id])
            emit("idle_connected_cpu_percent", await cpu_percent_over(a.proc.pid, IDLE_S))
            emit("idle_connected_rss_mb", rss_mb(a.proc.pid))
        finally:
            await stop(b)
    finally:
        await stop(a)


def main() -> None:
    """Parse options and run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=10, help="--version runs (10)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
        run(lambda: measure(opts.runs, Path(tmp)))


if __name__ == "__main__":
    main()
