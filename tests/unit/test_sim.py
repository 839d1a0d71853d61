"""The simulator (`python -m chinwag.sim`): deterministic, complete, real code, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from chinwag.protocol.mesh import Mesh
from chinwag.protocol.replica import Replica
from chinwag.sim import Params, Sim
from chinwag.sim.__main__ import main
from chinwag.sim.model import GEO_JITTER

SMALL = ["--nodes", "200", "--messages", "50", "--seed", "7"]


def cli(*args: str) -> dict[str, Any]:
    """Run the simulator as a process; return the JSON of its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-m", "chinwag.sim", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    last = proc.stdout.strip().splitlines()[-1]
    figures: dict[str, Any] = json.loads(last)
    return figures


def without_clock(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k != "wall_s"}


def test_small_run_is_deterministic_complete_and_its_last_line_is_json() -> None:
    """Two processes (own hash seeds) with one --seed print the same figures; all delivered."""
    first = cli(*SMALL)
    second = cli(*SMALL)
    assert without_clock(first) == without_clock(second)
    for key in (
        "delivery_ratio",
        "delivered_within_5s",
        "latency_p50_ms",
        "latency_p99_ms",
        "hops_p50",
        "hops_p99",
        "duplicates_per_node_per_message",
        "bytes_per_node",
        "connections_per_node_max",
        "wall_s",
        "params",
    ):
        assert key in first, key
    assert first["params"]["nodes"] == 200 and first["params"]["seed"] == 7
    assert first["messages_sent"] == 50
    assert first["delivery_ratio"] == 1.0
    assert first["delivered_pairs"] == 199 * 50
    assert 0 < first["latency_p50_ms"] <= first["latency_p99_ms"]
    assert 1 <= first["hops_p50"] <= first["hops_p99"]


def test_another_seed_gives_another_run() -> None:
    a = Sim(Params(nodes=100, messages=20, seed=1)).run()
    b = Sim(Params(nodes=100, messages=20, seed=2)).run()
    assert a["delivery_ratio"] == b["delivery_ratio"] == 1.0
    assert without_clock(a) != without_clock(b)


def test_the_simulator_runs_the_real_replica_and_mesh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every node is a real Replica and Mesh, and every delivery goes through their methods."""
    calls = {"committed": 0, "received": 0, "admit": 0}

    def counting(cls: type, name: str) -> None:
        real = getattr(cls, name)

        def wrapper(self: object, *args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    counting(Replica, "committed")
    counting(Replica, "admit")
    counting(Mesh, "received")
    sim = Sim(Params(nodes=60, messages=15, seed=3))
    figures = sim.run()
    assert all(type(n.replica) is Replica and type(n.mesh) is Mesh for n in sim.nodes)
    assert figures["delivery_ratio"] == 1.0
    # Each stored message was admitted and committed by the replica (own ones: committed only).
    assert calls["admit"] == figures["delivered_pairs"]
    assert calls["committed"] == figures["delivered_pairs"] + figures["messages_sent"]
    # The mesh heard of every chat that arrived: firsts and duplicates.
    assert calls["received"] == sim.receptions == figures["delivered_pairs"] + sim.duplicates


def test_a_mesh_that_forwards_nothing_leaves_delivery_to_sync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Routing is the mesh's decision: with no forward targets only the replica's sync delivers."""
    params = Params(nodes=40, messages=10, seed=4)
    normal = Sim(params).run()
    monkeypatch.setattr(Mesh, "received", lambda self, *a, **k: ([], []))
    starved = Sim(params).run()
    assert normal["delivery_ratio"] == starved["delivery_ratio"] == 1.0  # the backstop works
    assert starved["latency_p99_ms"] > normal["latency_p99_ms"]


def test_the_hop_limit_shortens_first_copies_and_gossip_brings_the_rest() -> None:
    """The copies' relay counts reach the real mesh: pushed no further than max_hops links,
    the rest of the room is reached by IHAVE/IWANT (slower, fewer duplicates)."""
    free = Sim(Params(nodes=300, messages=20, seed=6, max_hops=0)).run()
    limited = Sim(Params(nodes=300, messages=20, seed=6, max_hops=3)).run()
    assert free["delivery_ratio"] == limited["delivery_ratio"] == 1.0
    assert free["hops_p99"] > limited["hops_p99"]
    assert free["duplicates_per_node_per_message"] > limited["duplicates_per_node_per_message"]
    assert free["latency_p99_ms"] < limited["latency_p99_ms"]


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--loss", "1.5"], "--loss"),
        (["--loss", "1"], "--loss"),
        (["--churn", "-0.1"], "--churn"),
        (["--non-forwarding", "2"], "--non-forwarding"),
        (["--nodes", "0"], "--nodes"),
        (["--nodes", "1"], "--nodes"),
        (["--nodes", "many"], "--nodes"),
        (["--rate", "0"], "--rate"),
        (["--latency", "150-10"], "--latency"),
        (["--latency", "fast"], "--latency"),
        (["--partition", "-5"], "--partition"),
        (["--latency-model", "moon"], "--latency-model"),
        (["--max-hops", "-1"], "--max-hops"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_flags_give_a_clear_argparse_error(
    flags: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(flags)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and complaint in err


def test_loss_churn_partition_and_freeloaders_still_deliver_everything() -> None:
    """The world's faults (retransmitted loss, churn, a healed partition) end with all held."""
    params = Params(
        nodes=120,
        messages=30,
        loss=0.05,
        churn=0.1,
        churn_down_s=3.0,
        non_forwarding=0.2,
        partition_s=4.0,
        seed=11,
    )
    sim = Sim(params)
    figures = sim.run()
    assert figures["delivery_ratio"] == 1.0
    assert sim.closes > 0  # churn and the partition did cut connections
    assert all(node.up for node in sim.nodes)  # every churned node came back
    assert sum(1 for node in sim.nodes if not node.forwards) == 24


def test_a_freeloader_relays_nothing_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-forwarding node's adapter drops the mesh's forward targets (own messages go out)."""
    relayed_by: list[int] = []
    real = Sim._forward

    def spy(self: Sim, node: Any, k: int, peers: Any) -> None:
        if self.msg_author[k] != node.idx:
            relayed_by.append(node.idx)
        real(self, node, k, peers)

    monkeypatch.setattr(Sim, "_forward", spy)
    sim = Sim(Params(nodes=100, messages=20, non_forwarding=0.3, seed=5))
    figures = sim.run()
    freeloaders = {node.idx for node in sim.nodes if not node.forwards}
    assert len(freeloaders) == 30
    assert relayed_by and not freeloaders & set(relayed_by)
    assert figures["delivery_ratio"] == 1.0


def test_geo_latency_is_deterministic_bounded_and_keeps_the_triangle_inequality() -> None:
    """Geo: same seed, same positions and latencies; all in [lo, hi]; a→c ≤ a→b→c up to jitter."""
    params = Params(nodes=60, messages=0, seed=9, latency_ms=(10, 150), latency_model="geo")
    first, second = Sim(params), Sim(params)
    positions = [(n.x, n.y) for n in first.nodes]
    assert positions == [(n.x, n.y) for n in second.nodes]
    assert len(set(positions)) == 60 and all(0 <= x < 1 and 0 <= y < 1 for x, y in positions)
    nodes = first.nodes
    lat = {
        (a, b): first.link_latency(nodes[a], nodes[b])
        for a in range(60)
        for b in range(60)
        if a != b
    }
    assert lat == {(a, b): second.link_latency(second.nodes[a], second.nodes[b]) for a, b in lat}
    assert all(10 <= v <= 150 for v in lat.values())
    assert max(lat.values()) - min(lat.values()) > 100  # spread by distance, not constant
    # Each latency is within ±5% (plus rounding) of its distance-derived value, so a detour
    # through b is never shorter than the direct link by more than the jitter allows.
    slack = (1 + GEO_JITTER) / (1 - GEO_JITTER)
    for a in range(60):
        for b in range(60):
            for c in range(60):
                if len({a, b, c}) == 3:
                    assert lat[a, c] <= slack * (lat[a, b] + lat[b, c]) + 1, (a, b, c)


def test_link_latency_breaks_the_triangle_inequality_geo_does_not() -> None:
    """The per-link model draws each link alone: direct links longer than two-hop detours."""

    def violations(model: str) -> int:
        sim = Sim(Params(nodes=40, messages=0, seed=9, latency_model=model))
        nodes = sim.nodes
        lat = {(a, b): sim.link_latency(nodes[a], nodes[b]) for a in range(40) for b in range(40)}
        return sum(
            1
            for a in range(40)
            for b in range(40)
            for c in range(40)
            if len({a, b, c}) == 3 and lat[a, c] > 1.2 * (lat[a, b] + lat[b, c])
        )

    assert violations("geo") == 0
    assert violations("link") > 1000


def test_the_latency_model_flag_reaches_the_run() -> None:
    """--latency-model picks the model (in the JSON params); an unknown one is refused."""
    geo = cli(*SMALL, "--latency-model", "geo")
    link = cli(*SMALL, "--latency-model", "link")
    assert geo["params"]["latency_model"] == "geo" and link["params"]["latency_model"] == "link"
    assert geo["delivery_ratio"] == link["delivery_ratio"] == 1.0
    assert without_clock(geo) != without_clock(link)
    with pytest.raises(ValueError, match="latency model"):
        Sim(Params(nodes=2, messages=0, latency_model="moon"))
