"""The README's commands are the ones CI runs."""

from __future__ import annotations

import re

from conftest import PROJECT
from ecoc.rules.builtin import BUILTIN_RULES

README = (PROJECT / "README.md").read_text(encoding="utf-8")
CI = (PROJECT / ".ci" / "run").read_text(encoding="utf-8")


def shell_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)]


def test_readme_gives_a_main_command_and_a_test_command() -> None:
    commands = [b for b in shell_blocks(README) if b.startswith("python3 -m venv")]
    assert len(commands) == 2
    main_job, tests = commands
    assert "pip install ." in main_job and "ecoc check" in main_job and "ecoc render" in main_job
    assert "pip install '.[test]'" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    test_command = next(b for b in shell_blocks(README) if "pytest" in b)
    ci_lines = [line.strip() for line in CI.splitlines()]
    assert test_command in ci_lines


def test_readme_lists_every_builtin_rule() -> None:
    missing = sorted(rule for rule in BUILTIN_RULES if f"`{rule}`" not in README)
    assert missing == []


def test_builtin_rule_list_is_complete() -> None:
    code = "\n".join(p.read_text() for p in (PROJECT / "tooling" / "ecoc").rglob("*.py"))
    used = set(re.findall(r'"((?:yaml|model|vin|approval|record|xsd|io|rules|waiver)\.[a-z-]+)"', code))
    assert sorted(used - BUILTIN_RULES) == []
