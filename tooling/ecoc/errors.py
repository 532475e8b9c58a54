"""The exception root of ecoc.

Every failure that the user can fix (bad configuration, unreadable input, a missing schema)
is an `EcocError`. The CLI catches only this root: it prints `diagnostics()` and exits with
`exit_code`. Findings about the repository's data are not exceptions; see `ecoc.findings`.
"""

from __future__ import annotations


class EcocError(Exception):
    """A failure the user can act on."""

    exit_code = 3

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class UsageError(EcocError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


class ConfigError(EcocError):
    """`ecoc.yaml`, the schema files or the environment are wrong."""


class InputError(EcocError):
    """An input file (YAML or XML) cannot be read at all."""


class Interrupted(EcocError):
    """The user or the job runner stopped the command (Ctrl-C or SIGTERM)."""

    exit_code = 130
