"""The test harness never starts a node with the DHT on unless a test asks for it by an
exact flag (outside pytest the default bootstrap is the public DHT: benchmarks too)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from driver import ChinwagProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))

from web_support import WebNode


@pytest.mark.parametrize(
    ("args", "dht_off"),
    [
        ((), True),
        (("--no-dht-private",), True),  # not `--no-dht`: a prefix match took it for one
        (("--dht-private",), True),
        (("--dht-portx", "0"), True),
        (("--no-dht",), False),  # given already: not twice
        (("--dht-port", "0"), False),
        (("--dht-port=0",), False),
        (("--dht-bootstrap", "10.0.0.1:6881", "--no-dht-private"), False),
    ],
)
def test_no_dht_unless_a_dht_flag_is_given(
    tmp_path: Path, args: tuple[str, ...], dht_off: bool
) -> None:
    for argv in (
        ChinwagProcess(tmp_path / "n", *args).command(),
        WebNode(tmp_path / "w", "web", *args).command(),
    ):
        added = argv.count("--no-dht") - args.count("--no-dht")
        assert added == (1 if dht_off else 0), argv
