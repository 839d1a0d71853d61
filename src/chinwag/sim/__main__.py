"""`python -m chinwag.sim`: run one simulation; the last line of stdout is its figures as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from chinwag.sim.model import LATENCY_MODELS, Params, run


def _share(text: str) -> float:
    """A share between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _loss(text: str) -> float:
    """A loss probability: at least 0, below 1 (a link that loses everything never delivers)."""
    value = _share(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError("must be below 1 (a link that loses everything)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.0 <= value <= 86_400.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"must be above 0 messages per second, got {text}")
    return value


def _latency(text: str) -> tuple[int, int]:
    """'LO-HI' milliseconds (uniform), or 'MS' (fixed)."""
    try:
        parts = [int(x) for x in text.split("-")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"latency must be LO-HI or MS in milliseconds, got {text!r}"
        ) from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 1 <= parts[0] <= parts[1] <= 60_000:
        raise argparse.ArgumentTypeError(f"latency must be 1 <= LO <= HI <= 60000 ms, got {text!r}")
    return parts[0], parts[1]


def parser() -> argparse.ArgumentParser:
    """The command line (every flag has a default: a small run)."""
    d = Params()
    ap = argparse.ArgumentParser(
        prog="python -m chinwag.sim",
        description="Run the real replica and mesh code of N nodes on a simulated clock and "
        "network; print the figures as one JSON object on the last line.",
    )
    ap.add_argument("--nodes", type=_positive_int, default=d.nodes, help="nodes in the room")
    ap.add_argument("--messages", type=_count, default=d.messages, help="messages to send")
    ap.add_argument(
        "--authors", type=_positive_int, default=d.authors, help="distinct authors (random nodes)"
    )
    ap.add_argument("--rate", type=_rate, default=d.rate, help="messages per second, room-wide")
    ap.add_argument("--size", type=_count, default=d.size, help="bytes of text per message")
    ap.add_argument(
        "--latency",
        type=_latency,
        default=d.latency_ms,
        help="one-way link latency in ms: LO-HI or MS (default 10-150)",
    )
    ap.add_argument(
        "--latency-model",
        choices=LATENCY_MODELS,
        default=d.latency_model,
        help="geo: nodes on a plane, latency LO + (HI - LO) x distance / max distance, +-5%% "
        "jitter (triangle inequality holds, as on the Internet); link: uniform in LO-HI, "
        f"drawn per link independently (default {d.latency_model})",
    )
    ap.add_argument("--loss", type=_loss, default=d.loss, help="loss per transmission, 0 to <1")
    ap.add_argument(
        "--churn", type=_share, default=d.churn, help="share of nodes that leave and come back"
    )
    ap.add_argument(
        "--churn-down", type=_seconds, default=d.churn_down_s, help="seconds a churned node is away"
    )
    ap.add_argument(
        "--non-forwarding", type=_share, default=d.non_forwarding, help="share of freeloaders"
    )
    ap.add_argument(
        "--partition",
        type=_seconds,
        default=d.partition_s,
        help="split the nodes in two halves for this many seconds, then heal (0: never)",
    )
    ap.add_argument(
        "--candidates", type=_positive_int, default=d.candidates, help="peers each node hears"
    )
    ap.add_argument("--warmup", type=_seconds, default=d.warmup_s, help="seconds before traffic")
    ap.add_argument("--drain", type=_seconds, default=d.drain_s, help="seconds allowed after it")
    ap.add_argument(
        "--no-idontwant",
        action="store_true",
        help="no IDONTWANT on a new copy (the simulator forwards at once, so a forwarded "
        "copy says nearly the same; halves the events; history.py sends it)",
    )
    ap.add_argument(
        "--max-hops",
        type=_count,
        default=d.max_hops,
        help="links after which a copy is only announced, not pushed (0: no limit; "
        f"default {d.max_hops}, limits.MESH_MAX_HOPS)",
    )
    ap.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same run)")
    ap.add_argument("--plot", metavar="DIR", help="write PNG plots here (needs chinwag[sim])")
    return ap


def params_from(args: argparse.Namespace) -> Params:
    return Params(
        nodes=args.nodes,
        messages=args.messages,
        authors=args.authors,
        loss=args.loss,
        churn=args.churn,
        churn_down_s=args.churn_down,
        non_forwarding=args.non_forwarding,
        seed=args.seed,
        rate=args.rate,
        size=args.size,
        latency_ms=args.latency,
        latency_model=args.latency_model,
        partition_s=args.partition,
        candidates=args.candidates,
        warmup_s=args.warmup,
        drain_s=args.drain,
        idontwant=not args.no_idontwant,
        max_hops=args.max_hops,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, run, print the figures (last line: JSON)."""
    ap = parser()
    args = ap.parse_args(argv)
    if args.nodes < 2:
        ap.error("--nodes must be at least 2")
    params = params_from(args)
    if args.plot:
        from chinwag.sim.plot import check, run_and_plot  # matplotlib: an optional extra

        try:
            check()
        except ImportError as exc:
            ap.error(f"--plot needs matplotlib (pip install 'chinwag[sim]'): {exc}")
        figures = run_and_plot(params, args.plot)
    else:
        figures = run(params)
    print(json.dumps(figures, sort_keys=True))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip freeing every node's objects one by one at exit (10 s at 10,000 nodes): the
    # figures are printed and flushed, and the simulator holds no file or socket.
    os._exit(code)
