"""`ecoc release` killed at each step boundary, then run again: nothing is lost or sent twice.

The release runs as its own process. A git hook plays the crash: it kills the process
with SIGKILL at the chosen moment (when a commit is about to be recorded, right after one is,
or while the remote receives a push), as a power cut or a cancelled runner would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import git
from ecoc.cli import main
from pki import Pki
from test_release import RECORDS, ledger, log_of

# Kills the release whose process id the test wrote to $PID_FILE, then fails the hook.
KILLER = """#!/bin/sh
{condition} || exit 0
i=0
while [ ! -s "{pid_file}" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -9 "$(cat "{pid_file}")"
exit 1
"""


def hook(folder: Path, name: str, condition: str, pid_file: Path) -> Path:
    path = folder / "hooks" / name
    path.write_text(KILLER.format(condition=condition, pid_file=pid_file), encoding="utf-8")
    path.chmod(0o755)
    return path


def run_release(repo: Path, seal: list[str], outbox: Path, pid_file: Path) -> int:
    command = [
        sys.executable,
        "-m",
        "ecoc",
        "--repo",
        str(repo),
        "release",
        "--transport",
        "outbox",
        "--outbox",
        str(outbox),
        *seal,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    pid_file.write_text(str(process.pid), encoding="utf-8")
    _, err = process.communicate(timeout=300)
    pid_file.write_text("", encoding="utf-8")
    # The git command that the release started finishes after the release was killed.
    for _ in range(100):
        if not (repo / ".git" / "index.lock").exists():
            break
        time.sleep(0.1)
    if process.returncode not in (0, -9):
        print(err.decode("utf-8", "replace"))
    return process.returncode


def evidence_state(repo: Path) -> dict[str, list[str]]:
    """The delivery statuses of each evidence folder, as committed."""
    states: dict[str, list[str]] = {}
    for manifest in sorted((repo / "signed").rglob("manifest.json")):
        folder = manifest.parent
        states[str(folder.relative_to(repo))] = [
            json.loads(path.read_bytes())["status"] for path in sorted(folder.glob("delivery-*.json"))
        ]
    return states


def assert_complete(repo: Path, origin: Path, outbox: Path, seal_pki: Pki) -> None:
    states = evidence_state(repo)
    assert len(states) == RECORDS
    # Exactly one delivery per certificate, accepted.
    assert all(statuses == ["accepted"] for statuses in states.values()), states
    assert len(list(outbox.glob("*.xml"))) == RECORDS
    events = ledger(repo)
    assert sorted(e["event"] for e in events).count("signed") == RECORDS
    assert sum(1 for e in events if e["event"] == "delivery") == RECORDS
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "HEAD") == git(origin, "rev-parse", "main")
    # The archive a killed and finished release leaves passes the audit, recovery commits included.
    trust = repo.parent / "audit-root.pem"
    trust.write_bytes(seal_pki.root.pem())
    assert main(["--repo", str(repo), "audit", "--trust", str(trust)]) == 0


@pytest.mark.parametrize(
    ("where", "name", "condition"),
    [
        # The signing commit is about to be recorded: certificates are written but not committed.
        (
            "repo",
            "reference-transaction",
            '[ "$1" = prepared ] && grep -q " refs/heads/main$" && ! git cat-file -e HEAD:signed/ledger.jsonl',
        ),
        # The signing commit is recorded but not pushed.
        (
            "repo",
            "reference-transaction",
            '[ "$1" = committed ] && grep -q " refs/heads/main$" && git log -1 --format=%s | grep -q "^Sign "',
        ),
        # The push of the signing commit is reaching the remote.
        ("origin", "pre-receive", "true"),
        # Every certificate is delivered, and the commit of the results is about to be recorded.
        (
            "repo",
            "reference-transaction",
            '[ "$1" = prepared ] && grep -q " refs/heads/main$" && git cat-file -e HEAD:signed/ledger.jsonl',
        ),
    ],
    ids=["after-signing", "after-the-signing-commit", "during-the-push", "after-delivery"],
)
def test_killed_release_completes_on_rerun(
    repo: Path,
    origin: Path,
    seal: list[str],
    seal_pki: Pki,
    tmp_path: Path,
    where: str,
    name: str,
    condition: str,
) -> None:
    outbox = tmp_path / "outbox"
    pid_file = tmp_path / "release.pid"
    folder = (repo / ".git") if where == "repo" else origin
    killer = hook(folder, name, condition, pid_file)
    code = run_release(repo, seal, outbox, pid_file)
    assert code == -9, "the hook did not stop the release"
    killer.unlink()
    delivered_before = len(list(outbox.glob("*.xml"))) if outbox.exists() else 0
    after_delivery = condition.endswith("&& git cat-file -e HEAD:signed/ledger.jsonl")
    if not after_delivery:
        # Before the signing commit reaches the remote, nothing may be delivered.
        assert delivered_before == 0
    assert run_release(repo, seal, outbox, pid_file) == 0
    assert_complete(repo, origin, outbox, seal_pki)
    subjects = log_of(repo)
    assert sum(1 for s in subjects if s.startswith("Sign ")) == 1


def test_crash_keeps_written_receipts(repo: Path, origin: Path, seal: list[str], seal_pki: Pki, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    pid_file = tmp_path / "release.pid"
    killer = hook(
        repo / ".git",
        "reference-transaction",
        '[ "$1" = prepared ] && grep -q " refs/heads/main$" && git cat-file -e HEAD:signed/ledger.jsonl',
        pid_file,
    )
    assert run_release(repo, seal, outbox, pid_file) == -9
    killer.unlink()
    written = sorted(p.name for p in outbox.glob("*.xml"))
    assert len(written) == RECORDS
    assert run_release(repo, seal, outbox, pid_file) == 0
    assert log_of(repo)[0] == f"Record the delivery results of {RECORDS} certificate(s) from an interrupted release"
    assert sorted(p.name for p in outbox.glob("*.xml")) == written
    assert_complete(repo, origin, outbox, seal_pki)


@pytest.mark.parametrize("stop", ["INT", "TERM"], ids=["ctrl-c", "sigterm"])
def test_stopped_release_says_how_to_finish(
    repo: Path, origin: Path, seal: list[str], seal_pki: Pki, tmp_path: Path, stop: str
) -> None:
    outbox = tmp_path / "outbox"
    pid_file = tmp_path / "release.pid"
    # Ctrl-C, or SIGTERM as job runners and containers send, while the signing commit is recorded.
    interrupter = repo / ".git" / "hooks" / "reference-transaction"
    interrupter.write_text(
        KILLER.format(
            condition='[ "$1" = prepared ] && grep -q " refs/heads/main$" '
            "&& ! git cat-file -e HEAD:signed/ledger.jsonl",
            pid_file=pid_file,
        ).replace("kill -9", f"kill -{stop}"),
        encoding="utf-8",
    )
    interrupter.chmod(0o755)
    command = [sys.executable, "-m", "ecoc", "--repo", str(repo), "release", "--transport", "outbox"]
    process = subprocess.Popen(
        [*command, "--outbox", str(outbox), *seal], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    pid_file.write_text(str(process.pid), encoding="utf-8")
    _, err = process.communicate(timeout=300)
    pid_file.write_text("", encoding="utf-8")
    interrupter.unlink()
    text = err.decode("utf-8", "replace")
    assert process.returncode == 130
    assert (
        "error: the release was interrupted\nhint: run ecoc release again, which finishes what this run started" in text
    )
    assert "aborted" not in text
    assert "Traceback" not in text
    assert run_release(repo, seal, outbox, pid_file) == 0
    assert_complete(repo, origin, outbox, seal_pki)
