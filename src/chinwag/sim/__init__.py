"""`python -m chinwag.sim`: the real replica and mesh on a simulated clock and network.

Each simulated node runs the real sans-IO `Replica` (protocol/replica.py) and the
real `Mesh` (protocol/mesh.py), constructed as history.py constructs them; the
simulator is only their adapter (a dict-like store, a clock, links with latency,
loss, churn and partitions). It holds no copy of any delivery or mesh rule.
See docs/mesh.md, "Simulator".
"""

from chinwag.sim.model import Params, Sim, run

__all__ = ["Params", "Sim", "run"]
