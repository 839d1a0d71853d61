"""NAT lab tests: put tests/lab (natlab, nat_support) and tests/ on the import path.

NAT tests need root and nftables. Without them they skip with the reason; under `CI=true`
a skipped `nat` test is a failure instead (ci_support.CI_REQUIRED_MARKERS).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
