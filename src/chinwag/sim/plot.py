"""PNG plots of a simulation (`--plot DIR`): the latency CDF, and delivery against loss.

matplotlib is the optional extra `chinwag[sim]`; nothing else in chinwag imports it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from chinwag.sim.model import Params, Sim

#: Loss shares of the small sweep behind the delivery-against-loss plot.
SWEEP_LOSSES = (0.0, 0.05, 0.1, 0.2, 0.3)
#: Size of each sweep run (small: the sweep must not cost more than the run itself).
SWEEP_NODES = 500
SWEEP_MESSAGES = 50


def check() -> None:
    """Raise ImportError if matplotlib is missing."""
    import matplotlib  # noqa: F401


def run_and_plot(params: Params, out_dir: str) -> dict[str, Any]:
    """Run params, write latency_cdf.png and delivery_vs_loss.png into out_dir; return figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = Sim(params)
    figures = sim.run()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    hist = sim.latency_hist
    total = sum(hist)
    xs, ys, seen = [], [], 0
    for ms, count in enumerate(hist):
        if count:
            seen += count
            xs.append(ms)
            ys.append(seen / total)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, ys, drawstyle="steps-post")
    ax.set_xlabel("delivery latency (ms)")
    ax.set_ylabel("share of (node, message) pairs delivered")
    ax.set_title(
        f"latency CDF: {params.nodes} nodes, {figures['messages_sent']} messages, "
        f"loss {params.loss}, churn {params.churn}"
    )
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=100)
    plt.close(fig)

    nodes = min(params.nodes, SWEEP_NODES)
    sweep = dataclasses.replace(
        params,
        nodes=nodes,
        messages=min(params.messages, SWEEP_MESSAGES),
        authors=min(params.authors, nodes),
    )
    ratios, within, p99 = [], [], []
    for loss in SWEEP_LOSSES:
        result = Sim(dataclasses.replace(sweep, loss=loss)).run()
        ratios.append(result["delivery_ratio"])
        within.append(result["delivered_within_5s"])
        p99.append(result["latency_p99_ms"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(SWEEP_LOSSES, ratios, marker="o", label="delivered by the end (after sync)")
    ax.plot(SWEEP_LOSSES, within, marker="s", label="delivered within 5 s")
    ax.set_xlabel("loss per transmission")
    ax.set_ylabel("delivery ratio")
    ax.set_ylim(min([*ratios, *within, 0.9]) - 0.01, 1.005)
    ax.set_title(f"delivery against loss: {sweep.nodes} nodes, {sweep.messages} messages")
    # Loss is repaired by TCP retransmission (docs/mesh.md): it shows as latency.
    ax2 = ax.twinx()
    ax2.plot(SWEEP_LOSSES, p99, marker="^", color="tab:red", label="latency p99 (ms)")
    ax2.set_ylabel("latency p99 (ms)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower left")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "delivery_vs_loss.png", dpi=100)
    plt.close(fig)
    figures["plots"] = [str(out / "latency_cdf.png"), str(out / "delivery_vs_loss.png")]
    return figures
