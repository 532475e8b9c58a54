"""Shared fixtures: the official IVI material, bundled example data, temporary repositories.

The official IVI 2.0 XSD and example files cannot be part of this repository. Tests that need
them read their paths from ECOC_XSD and ECOC_IVI_EXAMPLES. Without those variables such tests
skip and say what to set; with ECOC_REQUIRE_OFFICIAL=1 (as in CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from pki import Pki, make_pki

PROJECT = Path(__file__).resolve().parents[1]


def _official(variable: str, what: str) -> Path:
    value = os.environ.get(variable)
    if value and Path(value).exists():
        return Path(value)
    message = f"set {variable} to {what} to run this test"
    if os.environ.get("ECOC_REQUIRE_OFFICIAL") == "1":
        pytest.fail(f"{message} (ECOC_REQUIRE_OFFICIAL=1 forbids skipping)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def official_xsd() -> Path:
    return _official("ECOC_XSD", "the path of the official IVI-2.0.xsd")


@pytest.fixture(scope="session")
def official_examples() -> list[Path]:
    folder = _official("ECOC_IVI_EXAMPLES", "the folder of the official IVI 2.0 example XML files")
    files = sorted(folder.glob("*.xml"))
    assert files, f"{folder} holds no .xml files"
    return files


def git(folder: Path, *args: str, check: bool = True) -> str:
    """Run git in `folder`; with `check`, a failure raises with git's message."""
    completed = subprocess.run(
        [
            "git",
            "-C",
            str(folder),
            "-c",
            "user.name=ecoc tests",
            "-c",
            "user.email=tests@ecoc.invalid",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed.stdout if completed.returncode == 0 else ""


@pytest.fixture
def empty_repo(tmp_path: Path) -> Path:
    """A compliance repository with settings only, under git."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "ecoc.yaml").write_text("version: 1\n", encoding="utf-8")
    git(root, "init", "-q")
    return root


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A copy of the bundled example repository, committed in a git repository of its own."""
    root = tmp_path / "example"
    root.mkdir()
    shutil.copy(PROJECT / "ecoc.yaml", root / "ecoc.yaml")
    shutil.copytree(PROJECT / "approvals", root / "approvals")
    shutil.copytree(PROJECT / "records", root / "records")
    shutil.copytree(PROJECT / "rules", root / "rules")
    (root / "signed").mkdir()
    shutil.copy(PROJECT / "signed" / "README.md", root / "signed" / "README.md")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "example data")
    return root


@pytest.fixture(scope="module")
def seal_pki() -> Pki:
    return make_pki()


@pytest.fixture
def seal(seal_pki: Pki, tmp_path: Path) -> list[str]:
    files = seal_pki.write(tmp_path / "seal")
    return ["--key", str(files["key"]), "--cert", str(files["cert"]), "--chain", str(files["chain"])]


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return tmp_path / "origin.git"


@pytest.fixture
def repo(example_repo: Path, origin: Path, official_xsd: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example repository on branch main, pushed to a bare remote `origin`."""
    monkeypatch.setenv("ECOC_XSD", str(official_xsd))
    monkeypatch.setenv("ECOC_CACHE_DIR", str(example_repo.parent / "cache"))
    git(example_repo, "branch", "-M", "main")
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(example_repo, "remote", "add", "origin", str(origin))
    git(example_repo, "push", "-q", "origin", "main")
    return example_repo


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = os.environ.get("ECOC_CHROMIUM"), os.environ.get("ECOC_CHROMEDRIVER")
    if not (chromium and driver and Path(chromium).exists() and Path(driver).exists()):
        message = "set ECOC_CHROMIUM and ECOC_CHROMEDRIVER to Chromium and its chromedriver (Debian chromium-driver)"
        if os.environ.get("ECOC_REQUIRE_OFFICIAL") == "1":
            pytest.fail(f"{message} (ECOC_REQUIRE_OFFICIAL=1 forbids skipping)")
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """Let ecoc's CLI write `writes` files, then fail each further write as a full disk does.

    A full disk cannot be made here without privileges, so the file write stands in for it.
    """
    import errno

    from ecoc import cli

    real = cli.write_atomically
    done = []

    def write(path: Path, data: bytes | str) -> None:
        if len(done) >= writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        done.append(path)
        real(path, data)

    monkeypatch.setattr(cli, "write_atomically", write)
