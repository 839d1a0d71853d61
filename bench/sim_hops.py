"""Where the simulator's long first copies come from: hops by distance, author and time.

    python bench/sim_hops.py --nodes 2000 --messages 300

Runs `chinwag.sim` (geo latency, no IDONTWANT, as in docs/mesh.md section 13) and
records, for every first copy, its hop count, the distance between author and reader on
the geo plane, the author and the message's place in the run. Prints the share of first
copies over 8 hops (p99 <= 8 needs it under 1%) per distance band, how concentrated it
is on authors and readers, and how it moves over the run (docs/mesh.md, "Why the tail").
"""

from __future__ import annotations

import argparse
import collections
import math
from typing import Any

from chinwag.sim.model import Params, Sim

LIMIT = 8  # the p99 bound on hops


class HopRecorder(Sim):
    """The simulator, recording (hops, distance, reader, author, message) per first copy."""

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self.firsts: list[tuple[int, float, int, int, int]] = []

    def _on_chat(self, ev: tuple[Any, ...]) -> None:
        _, src, d, conn, k, hops, _hist = ev
        node = self.nodes[d]
        c = node.conns.get(src)
        fresh = c is not None and c[0] == conn and not node.store[k]
        super()._on_chat(ev)
        if fresh and node.store[k]:
            a = self.nodes[self.msg_author[k]]
            dist = math.hypot(a.x - node.x, a.y - node.y)
            self.firsts.append((hops, dist, d, self.msg_author[k], k))


def _share(rows: list[tuple[int, float, int, int, int]]) -> str:
    over = sum(1 for r in rows if r[0] > LIMIT)
    mean = sum(r[0] for r in rows) / len(rows)
    return f"{len(rows):>8} copies, mean hops {mean:.2f}, over {LIMIT}: {over / len(rows):.2%}"


def main() -> None:
    ap = argparse.ArgumentParser(description="hops of first copies, by distance, author, time")
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sim = HopRecorder(
        Params(nodes=args.nodes, messages=args.messages, seed=args.seed, idontwant=False)
    )
    sim.run()
    rows = sim.firsts
    print("all:", _share(rows))
    bands: dict[int, list[tuple[int, float, int, int, int]]] = collections.defaultdict(list)
    for r in rows:
        bands[min(int(r[1] * 5), 6)].append(r)
    for b in sorted(bands):
        print(f"author-reader distance {b / 5:.1f}-{(b + 1) / 5:.1f}:", _share(bands[b]))
    over = [r for r in rows if r[0] > LIMIT]
    if over:
        by_author = collections.Counter(r[3] for r in over)
        by_reader = collections.Counter(r[2] for r in over)
        top_a = sum(c for _, c in by_author.most_common(max(1, sim.p.authors // 10)))
        top_r = sum(c for _, c in by_reader.most_common(max(1, args.nodes // 100)))
        print(
            f"copies over {LIMIT}: the worst tenth of authors hold {top_a / len(over):.0%}, "
            f"the worst 1% of readers {top_r / len(over):.0%}"
        )
    n = args.messages
    for part in range(5):
        lo, hi = part * n // 5, (part + 1) * n // 5
        print(f"messages {lo}-{hi - 1}:", _share([r for r in rows if lo <= r[4] < hi]))


if __name__ == "__main__":
    main()
