"""Use the benchmark's fleet generator from tests."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import PROJECT

sys.path.insert(0, str(PROJECT / "benchmarks"))

from generate_fleet import generate


def make_fleet(out: Path, count: int) -> Path:
    generate(PROJECT, out, count, seed=7)
    return out
