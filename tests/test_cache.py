"""The check cache: results are reused only while every input is unchanged."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from benchmarks_support import make_fleet
from ecoc.cache import CACHE_FILE, open_cache
from ecoc.config import open_repository
from ecoc.runner import RunOptions, run_check
from test_check import APPROVAL, RECORD, edit


def age_files(repo: Path) -> None:
    """Move file times into the past, so that the cache trusts them (it ignores fresh ones)."""
    past = time.time() - 60
    for path in repo.rglob("*.yaml"):
        os.utime(path, (past, past))


def run(repo: Path, **options: object) -> object:
    repository = open_repository(repo)
    cache = open_cache(repo / ".ecoc-cache")
    return run_check(repository, RunOptions(**options), cache)  # type: ignore[arg-type]


def test_second_run_reuses_every_result(example_repo: Path) -> None:
    age_files(example_repo)
    first = run(example_repo)
    second = run(example_repo)
    assert first.cache_hits == 0
    assert second.cache_hits == 12
    assert second.findings == first.findings


def test_changed_record_is_checked_again(example_repo: Path) -> None:
    age_files(example_repo)
    run(example_repo)
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: heavy")
    again = run(example_repo)
    assert again.cache_hits == 11
    assert [f.rule for f in again.findings] == ["model.integer"]


def test_changed_approval_invalidates_its_records(example_repo: Path) -> None:
    age_files(example_repo)
    run(example_repo)
    edit(example_repo, APPROVAL, "          MaximumSpeed: 178", "          MaximumSpeed: 1780")
    again = run(example_repo)
    assert again.cache_hits == 8  # the 4 records of the changed approval are checked again
    assert {f.rule for f in again.findings} == {"model.range"}


def test_same_content_in_a_fresh_file_is_still_recognised(example_repo: Path) -> None:
    run(example_repo)  # the files are fresh, so their times are not trusted
    again = run(example_repo)
    assert again.cache_hits == 12


def test_damaged_cache_is_ignored(example_repo: Path) -> None:
    run(example_repo)
    (example_repo / ".ecoc-cache" / CACHE_FILE).write_text("{not json")
    again = run(example_repo)
    assert again.cache_hits == 0
    assert again.findings == []
    json.loads((example_repo / ".ecoc-cache" / CACHE_FILE).read_text())


def test_cache_is_not_used_with_no_cache(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ecoc.cli import main

    assert main(["--repo", str(example_repo), "check", "--no-cache"]) == 0
    assert not (example_repo / ".ecoc-cache").exists()


def test_workers_find_what_one_process_finds(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet", 260)
    broken = sorted((fleet / "records").rglob("*.yaml"))[7]
    broken.write_text(
        broken.read_text().replace("DateManufactureVehicle: 2026-", "DateManufactureVehicle: 2026-13-", 1)
    )
    repository = open_repository(fleet)
    single = run_check(repository, RunOptions(jobs=1))
    parallel = run_check(repository, RunOptions(jobs=2))
    assert single.records == parallel.records == 260
    assert single.findings == parallel.findings
    assert [f.rule for f in single.findings] == ["model.date"]
