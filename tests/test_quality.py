"""The code passes the project's linters: ruff (lint and format) and mypy in strict mode."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import PROJECT


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=PROJECT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    "args",
    [
        ("ruff", "check", "tooling", "tests", "benchmarks"),
        ("ruff", "format", "--check", "tooling", "tests", "benchmarks"),
        ("mypy", "tooling/ecoc", "benchmarks"),
    ],
)
def test_linter_passes(args: tuple[str, ...]) -> None:
    completed = run_tool(*args)
    assert completed.returncode == 0, completed.stdout + completed.stderr
