"""A private Mainline DHT in the NAT lab (tests/lab/natlab.py): N libtorrent nodes on one
public host, reachable from every site; chinwag nodes join it with `--dht-bootstrap`.

The swarm host is a `public` site; its nodes listen on 10.60.i.1 (one /32 each, added to
its eth0; different /24s, so libtorrent's default of one node per /24 keeps them all). The
core router routes 10.60.0.0/16 to it, so hosts on either public network and behind any
NAT reach it like any host on the internet. Nothing here leaves the lab's namespaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from natlab import NatLab, Site, ip

HERE = Path(__file__).resolve().parent
#: UDP port of every swarm node.
SWARM_PORT = 6881
#: Seconds the swarm may take to fill its routing tables (20 nodes: under 2 s here).
SWARM_START_S = 30.0


def swarm_ip(i: int) -> str:
    return f"10.60.{i + 1}.1"


class DhtSwarm:
    """`count` libtorrent DHT nodes in one process on `site`; stopped with the lab."""

    def __init__(self, lab: NatLab, site: Site, count: int = 20) -> None:
        self.lab = lab
        self.site = site
        self.ips = [swarm_ip(i) for i in range(count)]
        for addr in self.ips:
            ip("addr", "add", f"{addr}/32", "dev", site.leg.ifname, netns=site.netns)
        ip("route", "replace", "10.60.0.0/16", "via", site.addr, netns=f"{lab.tag}-core")
        self.proc: subprocess.Popen[str] = lab.spawn(  # type: ignore[assignment]
            site.netns,
            sys.executable,
            str(HERE / "dht_swarm.py"),
            ",".join(self.ips),
            str(SWARM_PORT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._line(SWARM_START_S)
        if json.loads(line).get("ready") != count:
            raise RuntimeError(f"dht swarm did not start: {line!r}")

    def _line(self, within: float) -> str:
        assert self.proc.stdout is not None
        # The swarm answers every command within its own 10 s bound: a plain readline is
        # bounded; an exit shows as an empty line.
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"dht swarm exited ({self.proc.poll()})")
        return line

    def bootstrap_args(self, n: int = 2) -> list[str]:
        """The `--dht-bootstrap` arguments naming n swarm nodes."""
        out: list[str] = []
        for addr in self.ips[:n]:
            out += ["--dht-bootstrap", f"{addr}:{SWARM_PORT}"]
        return out

    def _ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._line(15.0))
        return answer

    def put(self, private: bytes, public: bytes, value: bytes, salt: bytes) -> int:
        """Store a mutable item as its key holder; return how many nodes took it (-1: none
        answered in time)."""
        hexed = {"private": private, "public": public, "value": value, "salt": salt}
        return int(self._ask({"cmd": "put", **{k: v.hex() for k, v in hexed.items()}})["put"])

    def get(self, public: bytes, salt: bytes) -> tuple[bytes | None, int]:
        """Return (value, seq) of the mutable item under (public, salt), (None, 0) if none."""
        got = self._ask({"cmd": "get", "public": public.hex(), "salt": salt.hex()})
        return (bytes.fromhex(got["get"]) if got["get"] else None), int(got["seq"])
