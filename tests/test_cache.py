"""The check cache: results are reused only while every input is unchanged."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from benchmarks_support import make_fleet
from ecoc import cache as cache_module
from ecoc.cache import CACHE_FILE, open_cache
from ecoc.config import open_repository
from ecoc.runner import RunOptions, run_check
from test_check import APPROVAL, RECORD, edit


@pytest.fixture(autouse=True)
def no_clock_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust file times right away; the tests change files long after the clock's uncertainty."""
    monkeypatch.setattr(cache_module, "RACY_NANOSECONDS", 0)


def age_files(repo: Path) -> None:
    """Move modification times into the past, as for files checked out some time ago."""
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
    # The digest of each record's certificate comes back from the cache too.
    assert second.certificates == first.certificates
    assert len(set(first.certificates.values())) == 12


def test_changed_record_is_checked_again(example_repo: Path) -> None:
    age_files(example_repo)
    run(example_repo)
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: heavy")
    again = run(example_repo)
    assert again.cache_hits == 11
    assert [f.rule for f in again.findings] == ["model.integer", "rules.skipped"]


def test_changed_approval_invalidates_its_records(example_repo: Path) -> None:
    age_files(example_repo)
    run(example_repo)
    edit(example_repo, APPROVAL, "          MaximumSpeed: 178", "          MaximumSpeed: 1780")
    again = run(example_repo)
    assert again.cache_hits == 8  # the 4 records of the changed approval are checked again
    assert {f.rule for f in again.findings} == {"model.range", "rules.skipped"}


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
    assert [f.rule for f in single.findings] == ["model.date", "rules.skipped"]


def cli_check(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from ecoc.cli import main

    code = main(["--repo", str(repo), "-v", "check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


REPLAYED = "nothing changed since the last check"


def test_unchanged_repository_replays_the_last_check(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: heavy")
    age_files(example_repo)
    first = cli_check(example_repo, capsys)
    second = cli_check(example_repo, capsys)
    assert REPLAYED not in first[2]
    assert REPLAYED in second[2]
    assert second[0] == first[0] == 1
    assert second[1] == first[1]


def test_changed_record_is_not_replayed(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    age_files(example_repo)
    cli_check(example_repo, capsys)
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: heavy")
    code, out, err = cli_check(example_repo, capsys)
    assert REPLAYED not in err
    assert "model.integer" in out
    assert code == 1


@pytest.mark.parametrize("change", ["settings", "selection", "environment", "touched file"])
def test_changed_inputs_are_not_replayed(
    change: str,
    example_repo: Path,
    official_xsd: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ECOC_XSD", raising=False)
    age_files(example_repo)
    cli_check(example_repo, capsys)
    args: list[str] = []
    if change == "settings":
        edit(example_repo, "ecoc.yaml", "version: 1", "version: 1\ndisable: [record.file-name]")
    elif change == "selection":
        args = [str(example_repo / RECORD)]
    elif change == "environment":
        monkeypatch.setenv("ECOC_XSD", str(official_xsd))
    else:
        os.utime(example_repo / RECORD)
    code, _, err = cli_check(example_repo, capsys, *args)
    assert REPLAYED not in err
    assert code == 0


def test_recent_files_are_not_replayed(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ten minutes instead of two seconds, so that the files copied just before count as recent
    # however long the first check takes on a slow machine.
    monkeypatch.setattr(cache_module, "RACY_NANOSECONDS", 600_000_000_000)
    cli_check(example_repo, capsys)  # the files were copied moments ago
    _, _, err = cli_check(example_repo, capsys)
    assert REPLAYED not in err


def test_replay_repeats_the_schema_warning(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECOC_XSD", raising=False)
    age_files(example_repo)
    cli_check(example_repo, capsys)
    _, _, err = cli_check(example_repo, capsys)
    assert REPLAYED in err
    assert "no IVI XSD configured" in err


def test_renamed_record_is_checked_under_its_new_name(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    age_files(example_repo)
    cli_check(example_repo, capsys)
    (example_repo / RECORD).rename(example_repo / "records" / "kempen-1.yaml")
    _, out, _ = cli_check(example_repo, capsys)
    assert "records/kempen-1.yaml:2:6: warning record.file-name" in out
    assert RECORD not in out


def test_swapped_records_are_checked_again(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    age_files(example_repo)
    cli_check(example_repo, capsys)
    other = example_repo / "records" / "XNHKH16S8TE103871.yaml"
    first, second = (example_repo / RECORD).read_bytes(), other.read_bytes()
    (example_repo / RECORD).write_bytes(second)
    other.write_bytes(first)
    _, out, _ = cli_check(example_repo, capsys)
    assert out.count("record.file-name") == 2


def test_edit_with_restored_time_is_noticed(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    age_files(example_repo)
    cli_check(example_repo, capsys)
    path = example_repo / RECORD
    before = path.stat()
    path.write_bytes(path.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1e34"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    code, out, err = cli_check(example_repo, capsys)
    assert REPLAYED not in err
    assert "model.integer" in out
    assert code == 1
