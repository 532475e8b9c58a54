"""The command line: exit codes, output formats, configuration errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import PROJECT, fill_disk_after
from ecoc import __version__
from ecoc.cli import _closed_pipe_is_an_error, main
from ecoc.rules.catalogue import load_catalogue
from test_check import RECORD, edit


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert __version__ in out


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("check", "render", "import"):
        assert command in out


def test_text_output_names_place_rule_and_path(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "DateManufactureVehicle: 2026-02-12", "DateManufactureVehicle: 2026-02-30")
    code, out, err = run(capsys, "--repo", str(example_repo), "check", "--no-cache")
    first = out.splitlines()[0]
    assert first.startswith(f"{RECORD}:9:27: error model.date: DateManufactureVehicle: 2026-02-30 is not a date")
    assert first.endswith("[CocDataGroup.DateManufactureVehicle]")
    assert out.splitlines()[1].strip().startswith("hint:")
    assert "1 error" in err
    assert code == 1


def test_json_output_carries_the_finding_fields(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: heavy")
    output = tmp_path / "findings.json"
    code, out, _ = run(
        capsys, "--repo", str(example_repo), "check", "--no-cache", "--format", "json", "--output", str(output)
    )
    assert out == ""
    document = json.loads(output.read_text())
    assert document["summary"]["errors"] == 1
    (finding,) = [f for f in document["findings"] if f["rule"] != "rules.skipped"]
    assert set(finding) >= {"rule", "severity", "message", "file", "line", "column", "path", "record"}
    assert finding["record"] == "XNHKH16S1TE100214"
    assert finding["path"] == "CocDataGroup.MassGroup.ActualMass"
    assert code == 1


def test_missing_path_is_a_usage_error(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "records/none.yaml")
    assert code == 2
    assert "no such file" in err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", "--frobnicate")
    assert code == 2
    assert "--frobnicate" in err


def test_folder_without_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "check")
    assert code == 3
    assert "no ecoc.yaml" in err
    assert "hint:" in err


def test_invalid_settings(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, "ecoc.yaml", "version: 1", "version: 1\nflavour: strict")
    code, _, err = run(capsys, "--repo", str(example_repo), "check")
    assert code == 3
    assert "ecoc.yaml:" in err and "unknown key flavour" in err
    assert "Traceback" not in err


def test_settings_with_yaml_error(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "ecoc.yaml").write_text("version: 1\n\txsd: {}\n")
    code, _, err = run(capsys, "--repo", str(example_repo), "check")
    assert code == 3
    assert "ecoc.yaml:2:1:" in err


def test_no_schema_is_said_in_one_line(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECOC_XSD", raising=False)
    code, _, err = run(capsys, "--repo", str(example_repo), "check")
    notes = [line for line in err.splitlines() if "XSD" in line]
    assert len(notes) == 1 and "built-in IVI 2.0 model" in notes[0]
    assert code == 0


def test_schema_with_other_digest_is_refused(
    example_repo: Path, official_xsd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "changed"
    folder.mkdir()
    shutil.copy(official_xsd.parent / "xmldsig-core-schema.xsd", folder)
    (folder / "IVI-2.0.xsd").write_bytes(official_xsd.read_bytes() + b"\n<!-- edited -->\n")
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "--xsd", str(folder / "IVI-2.0.xsd"))
    assert code == 3
    assert "does not match the pinned schema digest" in err


def test_schema_path_from_environment(
    example_repo: Path, official_xsd: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOC_XSD", str(official_xsd))
    code, _, err = run(capsys, "--repo", str(example_repo), "-v", "check", "--no-cache")
    assert "built-in IVI 2.0 model" not in err
    assert code == 0


def test_schema_path_from_settings(
    example_repo: Path, official_xsd: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECOC_XSD", raising=False)
    edit(example_repo, "ecoc.yaml", "  path: null", f"  path: {official_xsd}")
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "--no-cache")
    assert "built-in IVI 2.0 model" not in err
    assert code == 0


def test_missing_schema_file(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "--xsd", str(tmp_path / "IVI-2.0.xsd"))
    assert code == 3
    assert "does not exist" in err


def test_schema_without_signature_schema_next_to_it(
    example_repo: Path, official_xsd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(official_xsd, tmp_path / "IVI-2.0.xsd")
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "--xsd", str(tmp_path / "IVI-2.0.xsd"))
    assert code == 3
    assert "xmldsig-core-schema.xsd" in err


def test_path_outside_the_repository(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--repo", str(example_repo), "check", str(tmp_path))
    assert code == 2
    assert "outside the repository" in err


def test_path_that_selects_nothing(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "notes.txt").write_text("x")
    code, _, err = run(capsys, "--repo", str(example_repo), "check", str(example_repo / "notes.txt"))
    assert code == 2
    assert "selects no record or approval" in err


def test_output_under_a_file(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "--output", str(blocker / "out.json"))
    assert code == 2
    assert f"lies below {blocker}, which is a file" in err
    assert "Traceback" not in err


def test_cache_folder_ignores_itself(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--repo", str(example_repo), "check")[0] == 0
    assert (example_repo / ".ecoc-cache" / ".gitignore").read_text() == "*\n"


def test_quiet_hides_the_schema_note(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECOC_XSD", raising=False)
    code, _, err = run(capsys, "--repo", str(example_repo), "-q", "check")
    assert "XSD" not in err
    assert code == 0


def test_init_starts_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "init", str(tmp_path / "new"))
    assert code == 0
    assert (tmp_path / "new" / "approvals").is_dir() and (tmp_path / "new" / "records").is_dir()
    assert "created" in out
    # An outbox in build/ stays out of git, and the archive has its note.
    assert "/build/" in (tmp_path / "new" / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert (tmp_path / "new" / "signed" / "README.md").read_text(encoding="utf-8").startswith("# signed/\n")
    code, _, err = run(capsys, "--repo", str(tmp_path / "new"), "check")
    assert code == 0
    assert "0 records and 0 approvals" in err
    assert "no readiness rules" not in err
    shipped = sorted(path.name for path in (PROJECT / "rules").glob("*.yaml"))
    assert sorted(path.name for path in (tmp_path / "new" / "rules").glob("*.yaml")) == shipped
    for name in shipped:
        assert (tmp_path / "new" / "rules" / name).read_bytes() == (PROJECT / "rules" / name).read_bytes()
    code, _, err = run(capsys, "--repo", str(tmp_path / "new"), "rules", "test")
    assert code == 0
    assert f"{len(load_catalogue(PROJECT).rules)} of" in err


def test_init_without_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "init", "--no-rules", str(tmp_path / "new"))
    assert code == 0
    assert list((tmp_path / "new" / "rules").iterdir()) == []
    code, _, err = run(capsys, "--repo", str(tmp_path / "new"), "check")
    assert code == 0
    assert "rules/ holds no readiness rules" in err


def test_init_keeps_existing_settings(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (example_repo / "ecoc.yaml").read_text()
    code, _, err = run(capsys, "init", str(example_repo))
    assert code == 2
    assert "exists already" in err
    assert (example_repo / "ecoc.yaml").read_text() == before


@pytest.mark.parametrize("value", ["garbage", "2026-13-45", "20261204"])
def test_invalid_ecoc_today(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ECOC_TODAY", value)
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "--no-cache")
    assert code == 3
    assert f"ECOC_TODAY={value!r} is not a date" in err
    assert "Traceback" not in err


def test_output_to_a_pipe_is_written_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    received = bytearray()

    def read() -> None:
        with open(fifo, "rb") as stream:
            received.extend(stream.read())

    reader = threading.Thread(target=read)
    reader.start()
    code = main(["--repo", str(PROJECT), "rules", "doc", "--output", str(fifo)])
    reader.join(timeout=60)
    assert code == 0
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received.startswith(b"# Readiness rules")


def test_output_through_a_link_replaces_the_file_it_points_at(tmp_path: Path) -> None:
    target = tmp_path / "rules.md"
    target.write_text("old\n")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    assert main(["--repo", str(PROJECT), "rules", "doc", "--output", str(link)]) == 0
    assert link.is_symlink()
    assert target.read_text().startswith("# Readiness rules")


def test_report_file_cut_at_exit(example_repo: Path, tmp_path: Path) -> None:
    # The command ends its process without the interpreter's teardown, so buffered output
    # and the log must be written before it does.
    report = tmp_path / "report.json"
    with report.open("w") as out:
        completed = subprocess.run(
            [sys.executable, "-m", "ecoc", "--repo", str(example_repo), "-v", "check", "--format", "json"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert completed.returncode == 0
    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["summary"]["errors"] == 0
    assert completed.stderr.rstrip().splitlines()[-1].startswith("0 errors, ")


def test_full_disk_on_stdout_is_an_error() -> None:
    with open("/dev/full", "w") as full:
        completed = subprocess.run(
            [sys.executable, "-m", "ecoc", "--repo", str(PROJECT), "rules", "list"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert completed.returncode == 3
    assert "cannot write the output: No space left on device" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("arguments", [["--help"], ["rules", "list"], ["check", "--no-cache", "--format", "json"]])
def test_reader_gone_exited_as_findings(arguments: list[str]) -> None:
    # Exit status 1 means blocking findings; a pipe whose reader left is an error (3).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "ecoc", "--repo", str(PROJECT), *arguments],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert completed.returncode == 3
    assert "Traceback" not in completed.stderr


def test_closed_socket_is_no_reader_gone() -> None:
    # Only an unread pipe on stdout counts as a reader gone. Another closed connection is a fault.
    with pytest.raises(RuntimeError, match="write failed on a closed connection"), _closed_pipe_is_an_error():
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_settings_errors_each_name_their_line(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = example_repo / "ecoc.yaml"
    text = settings.read_text(encoding="utf-8").replace("\nversion: 1\n", "\nversion: 2\n")
    settings.write_text(text + "bogus_key: 3\n", encoding="utf-8")
    lines = text.splitlines()
    version_line = lines.index("version: 2") + 1
    code, _, err = run(capsys, "--repo", str(example_repo), "check")
    assert code == 3
    path = example_repo / "ecoc.yaml"
    assert f"{path}:{version_line}:10: invalid settings: version 2 is above the maximum 1 (version)" in err
    # An unknown key is reported at the key, on a line of its own.
    assert f"\n{path}:{len(lines) + 1}:1: unknown key bogus_key; known keys: version," in err
    assert "Input should" not in err


def test_offset_beyond_a_day_is_named_in_plain_words(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "--repo", str(example_repo), "render", "--datetime", "2026-01-01T00:00:00+25:00", "--out", str(tmp_path)
    )
    assert code == 2
    assert "(the time zone offset must be less than 24 hours)" in err
    assert "timedelta" not in err


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("HEAD^{tree}", "HEAD^{tree} names a tree or a file, not a commit"),
        ("HEAD:records", "HEAD:records names a tree or a file, not a commit"),
        ("main..HEAD", "main..HEAD is a range of commits; name the one commit to compare with, such as main"),
    ],
)
def test_base_naming_file_said_missing(
    example_repo: Path, capsys: pytest.CaptureFixture[str], base: str, expected: str
) -> None:
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "--base", base)
    assert code == 2
    assert expected in err
    assert "git fetch origin" not in err
    # The reference may exist, as HEAD:records does, so the error must not call it missing.
    assert f"--base {base}: does not name one commit" in err
    assert "no such commit" not in err


def test_base_further_back_than_the_history_names_the_problem(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "--base", "HEAD~1000")
    assert code == 2
    assert "HEAD~1000 points further back than the history of this repository goes" in err
    assert "git fetch origin" not in err


@pytest.mark.parametrize(
    ("command", "target"),
    [
        (["check", "--output"], "records/XNHKH16S1TE100214.yaml"),
        (["check", "--report"], "json=ecoc.yaml"),
        (["status", "--output"], "approvals/e4-2018-858-04127-01.yaml"),
        (["rules", "doc", "--output"], "rules/masses.yaml"),
    ],
)
def test_report_over_an_input_file_is_refused(
    example_repo: Path, capsys: pytest.CaptureFixture[str], command: list[str], target: str
) -> None:
    name = target.partition("=")[2] or target
    before = (example_repo / name).read_bytes()
    argument = f"json={example_repo / name}" if "=" in target else str(example_repo / name)
    code, _, err = run(capsys, "--repo", str(example_repo), *command, argument)
    assert code == 2
    assert "which contains data ecoc reads" in err
    assert (example_repo / name).read_bytes() == before


@pytest.mark.parametrize("folder", ["signed", "records", ".", ".git"])
def test_render_into_the_repository_data_is_refused(
    example_repo: Path, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    (example_repo / "signed").mkdir(exist_ok=True)
    kept = example_repo / "signed" / "kept.xml"
    kept.write_bytes(b"<kept/>")
    before = sorted(p.name for p in (example_repo / "records").iterdir())
    code, _, err = run(capsys, "--repo", str(example_repo), "render", "--clean", "--out", str(example_repo / folder))
    assert code == 2
    assert "which contains data ecoc reads" in err
    assert kept.read_bytes() == b"<kept/>"
    assert sorted(p.name for p in (example_repo / "records").iterdir()) == before


def test_render_on_a_full_disk_leaves_no_files(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_disk_after(monkeypatch, 2)
    out = tmp_path / "out"
    code, _, err = run(capsys, "--repo", str(example_repo), "render", "--out", str(out), "-j", "1")
    assert code == 3
    assert "No space left on device; removed the 2 files this render wrote" in err
    assert list(out.iterdir()) == []


def test_records_that_are_not_a_folder_are_an_error(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(example_repo / "records")
    (example_repo / "records").write_text("not a folder\n", encoding="utf-8")
    code, _, err = run(capsys, "--repo", str(example_repo), "check")
    assert code == 3
    assert "error: records/ is not a folder" in err


def test_missing_records_folder_is_named(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(example_repo / "records")
    code, _, err = run(capsys, "--repo", str(example_repo), "check")
    assert code == 0
    assert "has no records/ folder, so no vehicle is checked" in err


def test_record_linked_from_outside_the_repository_is_refused(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_bytes((example_repo / "records" / "XNHKH16S1TE100214.yaml").read_bytes())
    (example_repo / "records" / "XNHKH16S1TE100214.yaml").unlink()
    (example_repo / "records" / "XNHKH16S1TE100214.yaml").symlink_to(outside)
    code, _, err = run(capsys, "--repo", str(example_repo), "check")
    assert code == 3
    assert f"error: records/XNHKH16S1TE100214.yaml is a symbolic link to {outside}, outside the repository" in err


def test_saved_text_report_ends_with_the_summary(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.txt"
    code, _, err = run(capsys, "--repo", str(example_repo), "check", "--output", str(out))
    assert code == 0
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("0 errors, ")
    assert out.read_text(encoding="utf-8").endswith(summary + "\n")


def test_repository_below_the_top_of_its_git_repository_is_refused(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top = tmp_path / "mono"
    shutil.copytree(example_repo, top / "coc", ignore=shutil.ignore_patterns(".git"))
    subprocess.run(["git", "init", "-q", str(top)], check=True)
    subprocess.run(["git", "-C", str(top), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(top), "-c", "user.name=a", "-c", "user.email=a@b.invalid", "commit", "-q", "-m", "base"],
        check=True,
    )
    code, _, err = run(capsys, "--repo", str(top / "coc"), "check", "--base", "HEAD")
    assert code == 3
    assert "is the folder coc of a larger git repository; ecoc needs ecoc.yaml at the top" in err


def test_summary_counts_the_approval_of_a_checked_record(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = example_repo / "records" / "XNHKH16S1TE100214.yaml"
    code, _, err = run(capsys, "--repo", str(example_repo), "check", str(record))
    assert code == 0
    assert err.rstrip().endswith("in 1 record and 1 approval")


def test_new_settings_had_no_release_or_signing(tmp_path: Path) -> None:
    from ecoc.config import open_repository

    new = tmp_path / "new"
    assert main(["init", "--no-workflows", str(new)]) == 0
    text = (new / "ecoc.yaml").read_text(encoding="utf-8")
    start = text.index("# signing:")
    # The commented example becomes valid settings once its # signs are removed.
    example = "".join(line[2:] + "\n" for line in text[start:].splitlines())
    (new / "ecoc.yaml").write_text(text[:start] + example, encoding="utf-8")
    settings = open_repository(new).settings
    assert settings.release.transport == "nap-soap"
    assert settings.release.nap is not None
    assert settings.signing.key == "env:ECOC_SEAL_KEY"


def test_init_outside_git_did_not_mention_git(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--no-workflows", str(tmp_path / "plain")]) == 0
    assert "1. make the folder a git repository (git init -b main)" in capsys.readouterr().out
    subprocess.run(["git", "init", "-q", str(tmp_path / "tracked")], check=True)
    assert main(["init", "--no-workflows", str(tmp_path / "tracked")]) == 0
    assert "git init" not in capsys.readouterr().out


def test_closed_stdout_was_an_internal_error(example_repo: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ecoc", "--repo", str(example_repo), "check", "--format", "json"],
        stdout=None,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        close_fds=True,
        preexec_fn=lambda: os.close(1),
    )
    assert "Traceback" not in completed.stderr
    assert "internal error" not in completed.stderr
    assert completed.stderr.rstrip().splitlines()[-1].startswith("0 errors, ")
    assert completed.returncode == 0


def test_profile_was_lost_at_exit(tmp_path: Path) -> None:
    profile = tmp_path / "ecoc.prof"
    completed = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "ecoc", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0
    assert completed.stdout.startswith("ecoc, version ")
    assert profile.stat().st_size > 0
