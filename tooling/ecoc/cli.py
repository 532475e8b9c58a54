"""The `ecoc` command line. It parses options and calls the library, and contains no logic of its own.

Exit codes: 0 no blocking findings, 1 blocking findings, 2 usage error, 3 configuration or
internal error.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import difflib
import errno
import logging
import os
import re
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ecoc import __version__
from ecoc.cache import cache_folder
from ecoc.errors import ConfigError, EcocError, InputError, Interrupted, UsageError
from ecoc.evidence import ARCHIVE_NOTE
from ecoc.fileio import write_atomically
from ecoc.files import CONFIG_NAME, EVIDENCE_FOLDER, WAIVER_FILES, YAML_SUFFIXES, find_root, list_yaml
from ecoc.findings import Finding, Severity, merge_duplicates
from ecoc.memo import CheckInputs, Memo, fingerprint, now, replayable, save_memo, today
from ecoc.report import format_json, format_text, summarize, summary_line

# The model, the schema and the runner are imported where they are used, so that a check
# whose inputs are unchanged (see ecoc.memo) starts without loading them.
if TYPE_CHECKING:
    from cryptography import x509

    from ecoc.check import ApprovalIndex
    from ecoc.config import ReleaseSettings, Repository, SigningSettings
    from ecoc.formats import RecordChange, Report, RuleInfo
    from ecoc.ivi.xsd import IviSchema
    from ecoc.rules.catalogue import Catalogue
    from ecoc.runner import RecordResult
    from ecoc.scaffold import Written
    from ecoc.scope import BaseCopy
    from ecoc.signing import SigningKey

log = logging.getLogger("ecoc")

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_ERROR = 3


@dataclass
class Context:
    repo: Path | None
    verbose: int


def _root(ctx: click.Context) -> Path:
    options: Context = ctx.obj
    if options.repo is None:
        return find_root(Path.cwd())
    if not (options.repo / CONFIG_NAME).is_file():
        raise ConfigError(
            f"{options.repo}: no {CONFIG_NAME} in this folder", f"pass the folder that contains {CONFIG_NAME} to --repo"
        )
    return options.repo.resolve()


def _repository(ctx: click.Context) -> Repository:
    from ecoc.config import open_repository

    return open_repository(_root(ctx), explicit=True)


def _warn_no_schema() -> None:
    log.warning(
        "no IVI XSD configured, so output is checked against ecoc's built-in "
        "IVI 2.0 model only; set --xsd, ECOC_XSD or xsd.path in ecoc.yaml"
    )


def _warn_other_schema(path: Path | str) -> None:
    log.warning("%s is not the schema ecoc's model was built from; expect XSD findings wherever the two differ", path)


def _schema(repository: Repository, xsd: Path | None) -> IviSchema | None:
    from ecoc.ivi import xsd as ivi_xsd

    location = ivi_xsd.locate(xsd, repository.schema_path())
    if location is None:
        _warn_no_schema()
        return None
    schema = ivi_xsd.load(location, repository.settings.xsd.sha256, relaxed=True)
    if not schema.matches_model:
        _warn_other_schema(location.path)
    log.info("validating against %s (sha256 %s, from %s)", location.path, schema.digest, location.origin)
    return schema


def _selection(root: Path, paths: tuple[Path, ...]) -> list[Path] | None:
    for path in paths:
        if not os.path.lexists(path):
            raise UsageError(f"{path}: no such file or folder")
        try:
            path.resolve().relative_to(root)
        except ValueError:
            raise UsageError(
                f"{path}: outside the repository {root}",
                "name record or approval files, or folders below approvals/ or records/",
            ) from None
    return list(paths) or None


def _selects_files(root: Path, selection: list[Path]) -> bool:
    """Return whether any approval or record file lies at or below one of the selected paths."""
    chosen = [path.resolve().relative_to(root).as_posix() for path in selection]
    if "." in chosen:
        return True
    for folder in ("approvals", "records"):
        for _, relative in list_yaml(root, folder):
            if any(relative == c or relative.startswith(c + "/") for c in chosen):
                return True
    return False


CHECK_FORMATS = ("text", "json", "sarif", "junit", "github", "markdown")


def _check_selection(paths: tuple[Path, ...], records: int, approvals: int) -> None:
    if paths and not records and not approvals:
        raise UsageError(
            f"{', '.join(map(str, paths))}: selects no record or approval",
            "name record or approval files, or folders below approvals/ or records/",
        )


def _write(path: Path, data: bytes | str) -> None:
    try:
        write_atomically(path, data)
    except OSError as exc:
        if exc.errno in _WRITE_ERRORS:
            # The disk or device failed, as for output to stdout: not a mistake in the command.
            raise ConfigError(
                f"{path}: cannot write the file: {exc.strerror}", "free space or fix the device"
            ) from None
        raise UsageError(
            f"{path}: cannot write the file: {exc.strerror}", "choose a path in a folder you can write to"
        ) from None


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
    else:
        _reject_data_path(output, "--output")
        _write(output, text)


# Folders of a compliance repository that only its own commands write.
_DATA_FOLDERS = ("approvals", "records", "rules", "signed", ".git")


def _reject_data_path(path: Path, option: str) -> None:
    """Raise a UsageError when an output file or folder would overwrite or mix with a repository's data."""
    target = path.resolve()
    for folder in (target, *target.parents):
        if not (folder / CONFIG_NAME).is_file():
            continue
        parts = target.relative_to(folder).parts
        if not parts:
            problem = "is the repository's own folder"
        elif parts == (CONFIG_NAME,):
            problem = f"is the repository's {CONFIG_NAME}"
        elif parts[0] in _DATA_FOLDERS:
            problem = f"lies in the repository's {parts[0]}/ folder"
        else:
            return
        raise UsageError(
            f"{option} {path} {problem}, which contains data ecoc reads",
            "write outputs outside approvals/, records/, rules/, signed/ and .git, such as build/",
        )


class _ReaderGone(Exception):
    """Standard output is a pipe whose reader has closed it."""


def _stdout_reader_gone() -> bool:
    """Return whether standard output is a pipe with no reader left, which poll reports as an error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def _closed_pipe_is_an_error() -> Iterator[None]:
    """Raise `_ReaderGone` for a closed output pipe, because click exits with 1 on any EPIPE.

    Exit status 1 means blocking findings. A reader that leaves early, as in `ecoc check | head`,
    becomes `_ReaderGone`. Any other EPIPE, such as a closed socket, is raised as a fault.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        if _stdout_reader_gone():
            raise _ReaderGone from None
        raise RuntimeError(f"write failed on a closed connection: {exc}") from exc


class _Commands(click.Group):
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        # `ecoc --help` writes its text while the context is made.
        with _closed_pipe_is_an_error():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _closed_pipe_is_an_error():
            return super().invoke(ctx)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="ecoc")
@click.option(
    "--repo",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Compliance repository to work on (the folder with ecoc.yaml). "
    "Default: the first folder upwards from here that has one.",
)
@click.option("-v", "--verbose", count=True, help="Log more detail to stderr; repeat for debug output.")
@click.option("-q", "--quiet", is_flag=True, help="Log only errors.")
@click.pass_context
def cli(ctx: click.Context, repo: Path | None, verbose: int, quiet: bool) -> None:
    """Prepare, check and render Electronic Certificates of Conformity (IVI 2.0)."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    for number, name in (
        (logging.ERROR, "error"),
        (logging.WARNING, "warning"),
        (logging.INFO, "info"),
        (logging.DEBUG, "debug"),
    ):
        logging.addLevelName(number, name)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    ctx.obj = Context(repo, verbose)


_xsd_option = click.option(
    "--xsd",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Path of the official IVI-2.0.xsd (overrides ECOC_XSD and xsd.path in ecoc.yaml).",
)


_jobs_option = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes for records that need checking. Default: one per available core.",
)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "format_",
    type=click.Choice(list(CHECK_FORMATS)),
    default="text",
    show_default=True,
    help="Output format: text (file:line:col), json, sarif (SARIF 2.1.0), junit (JUnit XML), "
    "github (workflow annotations) or markdown (a pull-request comment).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the findings to this file instead of stdout.",
)
@click.option(
    "--report",
    "reports",
    multiple=True,
    metavar="FORMAT=FILE",
    help="Also write the findings in FORMAT to FILE, from the same check; repeatable, "
    "as in --report sarif=ecoc.sarif --report markdown=comment.md.",
)
@click.option(
    "--base",
    metavar="REF",
    help="Check only the records changed or affected since this commit or branch (such as origin/main), "
    "and report how their readiness changed.",
)
@click.option(
    "--no-cache", is_flag=True, help="Check every record again instead of reusing results of unchanged files."
)
@_xsd_option
@_jobs_option
@click.pass_context
def check(
    ctx: click.Context,
    paths: tuple[Path, ...],
    format_: str,
    output: Path | None,
    reports: tuple[str, ...],
    base: str | None,
    no_cache: bool,
    xsd: Path | None,
    jobs: int | None,
) -> int:
    """Report readiness findings for records (all, or those under PATHS) and their approvals.

    Exits 0 when nothing blocks, 1 when there are errors.
    """
    outputs = _Outputs(format_, output, _report_files(reports))
    outputs.check_destinations()
    try:
        return _check(ctx, paths, outputs, base, no_cache, xsd, jobs)
    except EcocError as exc:
        try:
            root: Path | None = _root(ctx)
        except EcocError:
            root = None
        outputs.write_failure(exc, root)
        raise


def _check(
    ctx: click.Context,
    paths: tuple[Path, ...],
    outputs: _Outputs,
    base: str | None,
    no_cache: bool,
    xsd: Path | None,
    jobs: int | None,
) -> int:
    root = _root(ctx)
    if base is not None:
        if paths:
            raise UsageError("--base checks what changed since the base, so it takes no PATHS", "leave out PATHS")
        return _check_base(ctx, base, outputs, xsd, jobs)
    selection = _selection(root, paths)
    if not (root / "records").exists():
        log.warning("%s has no records/ folder, so no vehicle is checked; put one record file per VIN there", root)
    if not any(relative.rsplit("/", 1)[-1] not in WAIVER_FILES for _, relative in list_yaml(root, "rules")):
        log.warning(
            "rules/ holds no readiness rules, so only the IVI 2.0 model and schema are checked; "
            "copy the rule files that ecoc init writes into rules/, or write your own"
        )
    inputs = CheckInputs(
        tuple(sorted(path.resolve().relative_to(root).as_posix() for path in selection or ())),
        str(xsd.resolve()) if xsd is not None else None,
        os.environ.get("ECOC_XSD"),
        today(),
    )
    folder = cache_folder(root, no_cache)
    memo = replayable(folder, root, inputs) if folder is not None else None
    if memo is not None:
        log.info("nothing changed since the last check; reporting its findings")
        if memo.schema_path is None:
            _warn_no_schema()
        elif not memo.schema_matches_model:
            _warn_other_schema(memo.schema_path)
        findings = [Finding.from_dict(f) for f in memo.findings]
        checked = [(str(file), vin) for file, vin in memo.checked]
        official = memo.schema_path is not None
        return _report(ctx, paths, findings, memo.records, memo.approvals, checked, outputs, official)

    from ecoc.cache import open_cache
    from ecoc.runner import RunOptions, default_jobs, run_check

    repository = _repository(ctx)
    schema = _schema(repository, xsd)
    schema_path = str(schema.location.path.resolve()) if schema is not None else None
    before = fingerprint(root, inputs, schema_path, None) if folder is not None else None
    options = RunOptions(selection, schema, jobs=jobs or default_jobs())
    result = run_check(repository, options, open_cache(folder) if folder is not None else None)
    if folder is not None and before is not None and before == fingerprint(root, inputs, schema_path, None):
        # Only a run whose inputs did not change while it ran may stand for them.
        memo = Memo(
            before,
            now(),
            schema_path,
            schema is None or schema.matches_model,
            result.records,
            result.approvals,
            [f.to_dict() for f in result.findings],
            [[file, vin] for file, vin in result.checked],
        )
        save_memo(folder, memo)
    return _report(
        ctx, paths, result.findings, result.records, result.approvals, result.checked, outputs, schema is not None
    )


@dataclass(frozen=True)
class _Outputs:
    """Where `ecoc check` writes its findings: the main format, and any --report files."""

    format_: str
    output: Path | None
    reports: tuple[tuple[str, Path], ...]

    @property
    def formats(self) -> set[str]:
        return {self.format_, *(format_ for format_, _ in self.reports)}

    def check_destinations(self) -> None:
        """Raise a UsageError for an output file that cannot be written, before the check runs."""
        if self.output is not None:
            _check_destination(self.output, "--output:")
        for format_, path in self.reports:
            _check_destination(path, f"--report {format_}={path}:")
        named = [("--output", self.output)] if self.output is not None else []
        named += [(f"--report {format_}={path}", path) for format_, path in self.reports]
        seen: dict[Path, str] = {}
        for option, path in named:
            target = path.resolve()
            if target in seen:
                raise UsageError(f"{option} names the same file as {seen[target]}", "give each report its own file")
            seen[target] = option

    def write(self, report: Report, closing: str = "") -> None:
        """Write every output; a text report saved to a file ends with `closing`, the summary on stderr."""

        def text(format_: str, to_file: bool) -> str:
            body = _formatted(report, format_)
            return body + f"{closing}\n" if format_ == "text" and to_file and closing else body

        _emit(text(self.format_, self.output is not None), self.output)
        for format_, path in self.reports:
            _write(path, text(format_, True))

    def write_failure(self, error: EcocError, root: Path | None) -> None:
        """Write to the github and markdown outputs that the check could not run.

        Otherwise a pull request keeps the annotations and comment of an earlier run. The other
        formats are not written, so that no report looks like a clean result. A file that the
        message names by its absolute path in `root` is named relative to it, and in the github
        format each such line becomes an annotation on that file.
        """
        from ecoc.formats import MARKDOWN_MARKER, _command_data, _command_property

        message = error.message.replace(f"{root}/", "") if root is not None else error.message
        annotations = []
        for line in message.splitlines():
            located = _LOCATED.match(line)
            if located is None:
                annotations.append(f"::error title=ecoc check could not run::{_command_data(line)}")
                continue
            place = f"file={_command_property(located['file'])},line={located['line']},col={located['column']}"
            annotations.append(f"::error {place},title=ecoc check could not run::{_command_data(located['text'])}")
        if error.hint:
            annotations[-1] += _command_data(f"\nhint: {error.hint}")
        texts = {
            "github": "\n".join(annotations) + "\n",
            "markdown": f"{MARKDOWN_MARKER}\n### ecoc could not check this change\n\n{message}\n"
            + (f"\n{error.hint}\n" if error.hint else ""),
        }
        for format_, path in ((self.format_, self.output), *self.reports):
            if format_ in texts:
                # The error that stopped the check is the one to report, not a failed write.
                with contextlib.suppress(EcocError):
                    _emit(texts[format_], path)


# A message line that starts with a place, as in "ecoc.yaml:3:10: invalid settings: ...".
_LOCATED = re.compile(r"(?P<file>[^\s:][^:]*):(?P<line>[0-9]+):(?P<column>[0-9]+): (?P<text>.*)")


def _check_destination(path: Path, option: str) -> None:
    """Raise a UsageError when `path` names a folder, lies below a file, or would overwrite the repository's data."""
    _reject_data_path(path, option.rstrip(":"))
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder", f"name a file, such as {path / 'report'}")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option} {path} lies below {parent}, which is a file", "choose a path in a folder")
            return


def _report_files(reports: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    files = []
    for text in reports:
        format_, _, name = text.partition("=")
        if not name:
            raise UsageError(f"--report {text}: expected FORMAT=FILE", "as in --report sarif=ecoc.sarif")
        if format_ not in CHECK_FORMATS:
            raise UsageError(f"--report {text}: unknown format {format_}", "use one of " + ", ".join(CHECK_FORMATS))
        files.append((format_, Path(name)))
    return tuple(files)


def _report(
    ctx: click.Context,
    paths: tuple[Path, ...],
    findings: list[Finding],
    records: int,
    approvals: int,
    checked: list[tuple[str, str | None]],
    outputs: _Outputs,
    official_schema: bool,
) -> int:
    _check_selection(paths, records, approvals)
    summary = summarize(findings, records, approvals)
    report = _new_report(ctx, findings, summary, checked, outputs.formats)
    report.official_schema = official_schema
    line = summary_line(summary)
    outputs.write(report, line)
    click.echo(line, err=True)
    return EXIT_FINDINGS if summary["errors"] else EXIT_CLEAN


def _new_report(
    ctx: click.Context,
    findings: list[Finding],
    summary: dict[str, object],
    checked: list[tuple[str, str | None]],
    formats: set[str],
) -> Report:
    from ecoc.formats import CheckedRecord, Report

    rules = _rule_infos(_root(ctx)) if "sarif" in formats else {}
    report = Report(findings, summary, [CheckedRecord(file, vin) for file, vin in checked], rules)
    report.link_base, report.full_report = _workflow_links()
    return report


def _formatted(report: Report, format_: str) -> str:
    from ecoc import formats

    if format_ == "json":
        return format_json(report.findings, dict(report.summary), formats.json_extra(report))
    if format_ == "text":
        return formats.format_check_text(report)
    writer = {
        "sarif": formats.format_sarif,
        "junit": formats.format_junit,
        "github": formats.format_github,
        "markdown": formats.format_markdown,
    }[format_]
    return writer(report)


def _workflow_links() -> tuple[str | None, str | None]:
    """In a GitHub workflow: the start of links to files at this commit, and where the run's artifacts are."""
    names = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_RUN_ID")
    server, repository, sha, run = (os.environ.get(name) for name in names)
    if not (server and repository):
        return None, None
    files = f"{server}/{repository}/blob/{sha}/" if sha else None
    artifacts = f"in the artifacts of {server}/{repository}/actions/runs/{run}" if run else None
    return files, artifacts


def _rule_infos(root: Path) -> dict[str, RuleInfo]:
    from ecoc.formats import RuleInfo
    from ecoc.rules.builtin import BUILTIN_DESCRIPTIONS
    from ecoc.rules.catalogue import load_catalogue

    infos = {rule_id: RuleInfo(rule_id, text) for rule_id, text in BUILTIN_DESCRIPTIONS.items()}
    for rule in load_catalogue(root).rules:
        spec = rule.spec
        infos[rule.id] = RuleInfo(rule.id, spec.title, rule.severity, spec.hint or spec.title, spec.doc, spec.source)
    return infos


def _check_base(ctx: click.Context, base: str, outputs: _Outputs, xsd: Path | None, jobs: int | None) -> int:
    from ecoc.scope import BaseCopy

    # git finds the change and copies the base on a second thread while the model and rules load.
    with BaseCopy(_root(ctx), base) as copy:
        from ecoc.changes import check_against_base
        from ecoc.runner import RunOptions, default_jobs

        repository = _repository(ctx)
        schema = _schema(repository, xsd)
        scope = copy.scope()
        comparison = check_against_base(
            repository, copy, RunOptions(None, schema, jobs=jobs or default_jobs()), values=True
        )
    from ecoc.gitinfo import changed_lines

    head = comparison.head
    summary = summarize(head.findings, head.records, head.approvals)
    report = _new_report(ctx, head.findings, summary, head.checked, outputs.formats)
    report.official_schema = schema is not None
    report.base = base
    report.changes = comparison.changes
    report.repository_change = comparison.repository
    report.base_problem = comparison.base_problem
    report.value_changes = comparison.values
    report.values_from = comparison.values_from
    if "github" in outputs.formats:
        present = [path for path, status in scope.changed.items() if status != "D"]
        report.changed_lines = changed_lines(repository.root, scope.commit, present)
    report.changed_sources = [
        (path, status)
        for path, status in sorted(scope.changed.items())
        if path.startswith(("approvals/", "rules/")) or path == CONFIG_NAME
    ]
    line = summary_line(summary) + _changes_note(comparison.changes, base)
    outputs.write(report, line)
    click.echo(line, err=True)
    return EXIT_FINDINGS if summary["errors"] else EXIT_CLEAN


def _changes_note(changes: Sequence[RecordChange], base: str) -> str:
    """Say what the change did since the base, for the summary line."""
    from ecoc.formats import change_counts

    return f"; since {base}: {change_counts(changes).phrase()}"


def _version_datetime(repository: Repository, given: str | None, preview: bool = False) -> str:
    from ecoc.files import SOURCE_FOLDERS
    from ecoc.gitinfo import head_commit_time, last_change_time, uncommitted
    from ecoc.ivi.spec import elements_by_name
    from ecoc.ivi.values import has_time_zone, parse_value

    if given is not None:
        simple = elements_by_name()["IviVersionDateTime"].simple
        assert simple is not None
        _, problem = parse_value(given, simple)
        if problem is not None:
            raise UsageError(f"--datetime {given}: {problem.message}", problem.hint)
        if not has_time_zone(given):
            raise UsageError(
                f"--datetime {given}: the time has no time zone", "add an offset such as +01:00, or Z for UTC"
            )
        return given
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            moment = dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        except (ValueError, OverflowError):
            raise ConfigError(f"SOURCE_DATE_EPOCH={epoch} is not a number of seconds") from None
        return moment.isoformat().replace("+00:00", "Z")
    # The time of the data, not of later commits of other files such as the evidence commits.
    # The release signs with this time, so render and preview show what it signs.
    committed = last_change_time(repository.root, SOURCE_FOLDERS) or head_commit_time(repository.root)
    if committed is None:
        raise ConfigError(
            f"{repository.root}: no commit to take IviVersionDateTime from",
            "commit the repository first, or pass --datetime (or set SOURCE_DATE_EPOCH)",
        )
    _warn_uncommitted(
        uncommitted(repository.root, ("approvals", "records")),
        "under approvals/ and records/",
        "the output carries the time of the last commit of the data, and the IviReferenceId of HEAD unless "
        "IviVersionNumber changed",
        # A preview of uncommitted changes is what `preview --base HEAD` is for, so -v shows the note.
        logging.INFO if preview else logging.WARNING,
    )
    return committed


def _warn_uncommitted(changed: list[str], where: str, consequence: str, level: int = logging.WARNING) -> None:
    """Warn that files differ from HEAD, naming a few of them and what follows from it."""
    if not changed:
        return
    listed = ", ".join(changed[:3]) + (" …" if len(changed) > 3 else "")
    log.log(
        level,
        "%s %s %s from HEAD (%s): %s; commit first to render what is released",
        _plural(len(changed), "file"),
        where,
        "differs" if len(changed) == 1 else "differ",
        listed,
        consequence,
    )


def _warn_uncommitted_rules(repository: Repository) -> None:
    """Warn when the rules, waivers or settings that decide which records render are not committed."""
    from ecoc.gitinfo import uncommitted

    _warn_uncommitted(
        uncommitted(repository.root, ("rules", CONFIG_NAME)),
        "of the readiness rules, waivers or settings",
        "records pass or fail on rules nobody has reviewed",
    )


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to write <VIN>.xml files to; it must be empty unless --clean is given.",
)
@click.option("--clean", is_flag=True, help="Delete the .xml files in --out before writing.")
@click.option(
    "--datetime",
    "given_datetime",
    help="IviVersionDateTime to write, as an XML date and time with a time zone. "
    "Default: SOURCE_DATE_EPOCH, else the committer date of the last commit that changed approvals/, records/, "
    "rules/ or ecoc.yaml, as the release uses.",
)
@_xsd_option
@_jobs_option
@click.pass_context
def render(
    ctx: click.Context,
    paths: tuple[Path, ...],
    out_dir: Path,
    clean: bool,
    given_datetime: str | None,
    xsd: Path | None,
    jobs: int | None,
) -> int:
    """Render unsigned IVI 2.0 XML for records (all, or those under PATHS) into --out.

    Records with blocking findings, or whose approval has them, are reported and not written.
    """
    from ecoc.runner import RunOptions, default_jobs, run_check

    repository = _repository(ctx)
    version_datetime = _version_datetime(repository, given_datetime)
    _warn_uncommitted_rules(repository)
    schema = _schema(repository, xsd)
    selection = _selection(repository.root, paths)
    if selection is not None and not _selects_files(repository.root, selection):
        _check_selection(paths, 0, 0)
    # Only now, with every option checked, may --clean delete the files of an earlier render.
    _prepare_output(out_dir, clean)
    options = RunOptions(selection, schema, version_datetime, keep_render=True, jobs=jobs or default_jobs())
    written: dict[str, Path] = {}

    def write(result: RecordResult) -> None:
        vin = result.summary.vin
        if result.rendered is None or vin is None or any(f.blocking for f in result.summary.findings):
            return
        target = out_dir / f"{vin}.xml"
        _write(target, result.rendered)
        written[vin] = target

    try:
        result = run_check(repository, options, sink=write)
    except EcocError as exc:
        # A failed write, as on a full disk, leaves no part of this render behind.
        for done in written.values():
            done.unlink(missing_ok=True)
        if not written:
            raise
        message = f"{exc.message}; removed the {_plural(len(written), 'file')} this render wrote"
        raise type(exc)(message, exc.hint) from None
    _check_selection(paths, result.records, result.approvals)
    # Duplicate VINs and errors in an approval block records too; both are known only at the end.
    for finding in result.findings:
        if finding.blocking:
            for vin in finding.records:
                stale = written.pop(vin, None)
                if stale is not None:
                    stale.unlink(missing_ok=True)
    if any(finding.blocking and finding.rule == "rules.invalid" for finding in result.findings):
        # A rule that cannot be loaded checks nothing, so no record is known to be ready.
        for target in written.values():
            target.unlink(missing_ok=True)
        written.clear()
        log.error("no record is rendered while a rule file has errors: fix the rules listed below first")
    for target in sorted(written.values()):
        click.echo(str(target))
    click.echo(format_text(result.findings), nl=False, err=True)
    click.echo(f"rendered {len(written)} of {_plural(result.records, 'record')} to {out_dir}", err=True)
    summary = summarize(result.findings, result.records, result.approvals)
    return EXIT_FINDINGS if summary["errors"] else EXIT_CLEAN


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _prepare_output(out_dir: Path, clean: bool) -> None:
    """Make sure --out contains no certificates of an earlier render that this one would not replace."""
    _reject_data_path(out_dir, "--out")
    _prepare_folder(
        out_dir,
        clean,
        ("*.xml",),
        "pass --clean to delete its .xml files first, or choose an empty folder; "
        "files of an earlier render could otherwise be taken for current certificates",
    )


def _prepare_folder(out_dir: Path, clean: bool, patterns: tuple[str, ...], hint: str) -> None:
    """Make sure `out_dir` is a folder that is empty, or whose files of `patterns` --clean deletes."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: not a folder")
    if not out_dir.exists():
        return
    if clean:
        for pattern in patterns:
            for stale in out_dir.glob(pattern):
                try:
                    stale.unlink()
                except OSError as exc:
                    raise UsageError(f"{stale}: cannot delete the file: {exc.strerror}") from None
        return
    if any(out_dir.iterdir()):
        raise UsageError(f"{out_dir}: the folder is not empty", hint)


@cli.group()
def rules() -> None:
    """Show the readiness rules of rules/ and the checks built into ecoc."""


def _catalogue(ctx: click.Context) -> Catalogue:
    from ecoc.rules.catalogue import load_catalogue

    catalogue = load_catalogue(_root(ctx))
    if catalogue.findings:
        click.echo(format_text(catalogue.findings), nl=False, err=True)
    return catalogue


@rules.command(name="list")
@click.pass_context
def rules_list(ctx: click.Context) -> int:
    """List every rule by subject, with its severity and title."""
    from ecoc.rules.docs import list_text

    catalogue = _catalogue(ctx)
    click.echo(list_text(catalogue), nl=False)
    return EXIT_FINDINGS if catalogue.findings else EXIT_CLEAN


@rules.command(name="explain")
@click.argument("rule_id")
@click.pass_context
def rules_explain(ctx: click.Context, rule_id: str) -> int:
    """Show one rule: where it applies, its expressions, its source and its examples."""
    from ecoc.rules.builtin import BUILTIN_DESCRIPTIONS, builtin_line
    from ecoc.rules.docs import explain

    catalogue = _catalogue(ctx)
    rule = catalogue.by_id().get(rule_id)
    if rule is not None:
        click.echo(explain(rule), nl=False)
        return EXIT_CLEAN
    if rule_id in BUILTIN_DESCRIPTIONS:
        click.echo(f"{builtin_line(rule_id)}\nBuilt into ecoc; the README's table of built-in checks says more.")
        return EXIT_CLEAN
    known = sorted([*catalogue.by_id(), *BUILTIN_DESCRIPTIONS])
    close = difflib.get_close_matches(rule_id, known, n=3)
    raise UsageError(
        f"no rule {rule_id}",
        ("did you mean " + " or ".join(close) + "?") if close else "ecoc rules list shows every rule",
    )


@rules.command(name="test")
@click.pass_context
def rules_test(ctx: click.Context) -> int:
    """Run every rule on its pass and fail examples; exit 1 if one gives the wrong result."""
    from ecoc.rules.examples import check_examples

    catalogue = _catalogue(ctx)
    failed = check_examples(catalogue)
    if failed:
        click.echo(format_text([finding for found in failed.values() for finding in found]), nl=False)
    total = len(catalogue.rules)
    click.echo(f"{total - len(failed)} of {total} rules give the expected result on their examples", err=True)
    if catalogue.findings:
        click.echo(
            f"{_plural(len(catalogue.findings), 'problem')} in rule files (listed above): "
            "the rules concerned did not load and were not tested",
            err=True,
        )
    return EXIT_FINDINGS if failed or catalogue.findings else EXIT_CLEAN


@rules.command(name="doc")
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the page to this file (docs/rules.md) instead of stdout.",
)
@click.pass_context
def rules_doc(ctx: click.Context, output: Path | None) -> int:
    """Write the catalogue as Markdown, the content of docs/rules.md."""
    from ecoc.rules.docs import markdown

    catalogue = _catalogue(ctx)
    if catalogue.findings:
        return EXIT_FINDINGS
    _emit(markdown(catalogue), output)
    return EXIT_CLEAN


@cli.command()
@click.option("--check", "check_only", is_flag=True, help="Fail when .github/CODEOWNERS disagrees (the default).")
@click.option("--write", is_flag=True, help="Write .github/CODEOWNERS from the owners.")
@click.pass_context
def codeowners(ctx: click.Context, check_only: bool, write: bool) -> int:
    """Keep .github/CODEOWNERS in line with the owners of ecoc.yaml, approvals and records."""
    from ecoc.owners import CODEOWNERS, difference, generate

    if check_only and write:
        raise UsageError("--check and --write exclude each other", "pass one of them")
    repository = _repository(ctx)
    generated = generate(repository)
    if generated.findings:
        click.echo(format_text(list(generated.findings)), nl=False, err=True)
        click.echo(
            f"{CODEOWNERS} cannot be generated until the problems above are fixed",
            err=True,
        )
        return EXIT_FINDINGS
    if not repository.settings.owners.release:
        log.warning(
            "owners.release in %s is empty, so the review owners also review signed/ and .github/, where the "
            "release workflow and the evidence are; name the release owners there to keep the two apart",
            CONFIG_NAME,
        )
    path = repository.root / CODEOWNERS
    if write:
        _write(path, generated.text)
        click.echo(f"wrote {CODEOWNERS}")
        return EXIT_CLEAN
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == generated.text:
        click.echo(f"{CODEOWNERS} matches the owners", err=True)
        return EXIT_CLEAN
    click.echo(difference(current, generated.text), nl=False)
    click.echo(f"{CODEOWNERS} disagrees with the owners; run ecoc codeowners --write", err=True)
    return EXIT_FINDINGS


def _copy_catalogue(folder: Path) -> int:
    """Copy the rule files shipped with ecoc into `folder`, keeping files that exist already."""
    from importlib.resources import files

    shipped = files("ecoc") / "catalogue"
    copied = 0
    for entry in sorted(shipped.iterdir(), key=lambda item: item.name):
        target = folder / entry.name
        if not entry.name.endswith(".yaml") or entry.name in WAIVER_FILES or target.exists():
            continue
        _write(target, entry.read_text(encoding="utf-8"))
        copied += 1
    return copied


SETTINGS_TEMPLATE = """\
# Settings of this compliance repository; the README of ecoc describes every key.
version: 1

xsd:
  # The official IVI-2.0.xsd, with the xmldsig-core-schema.xsd it imports next to it; --xsd and
  # ECOC_XSD take precedence. Relative paths start at this file.
  path: null
  # The schema must have this sha256 (the IVI 2.0 release of 2026-02-26).
  sha256: ec7335836a4334db33e34d309f009c544abb4030118984a41b1cba818a18160c

# Who prepares, reviews and releases the data: GitHub users (@name), teams (@org/team) or e-mail
# addresses. `ecoc codeowners --write` turns them into .github/CODEOWNERS and fails until
# review owners are set.
owners:
  data: []
  review: []
  release: []

# The seal, and where ecoc release delivers (README: Release and the evidence archive). To use
# them, remove the # signs and fill in the values. The release workflow sets the variables named
# with env: from the secrets of its release environment.
# signing:
#   key: env:ECOC_SEAL_KEY
#   cert: seal/seal.pem
#   chain: seal/issuing-ca.pem
#   trust: [seal/root-ca.pem]
# release:
#   transport: nap-soap
#   nap:
#     endpoint: https://nap.example.eu/ivi/deliver
#     client_cert: seal/nap-client.pem
#     client_key: env:ECOC_NAP_CLIENT_KEY
"""


_SCHEMA_URL_HELP = "The https folder that serves IVI-2.0.xsd and xmldsig-core-schema.xsd, for the workflows to fetch."
_INSTALL_HELP = (
    "What the workflows install with pip: ecoc pinned to a version or to a git commit (default: where this ecoc "
    "was installed from, when pip recorded a URL)."
)


def _workflow_report(result: Written, requirement: str, branch: str) -> None:
    if result.written or result.replaced:
        names = ", ".join([*result.written, *result.replaced])
        click.echo(f"wrote .github/workflows/ ({names}); they install {requirement} and run on the branch {branch}")
    if result.unchanged:
        click.echo(f"kept the workflows in .github/workflows/ that exist already: {', '.join(result.unchanged)}")


@cli.command()
@click.argument("folder", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("--no-rules", is_flag=True, help="Start with an empty rules/ instead of ecoc's rule catalogue.")
@click.option("--install", "requirement", metavar="REQUIREMENT", help=_INSTALL_HELP)
@click.option(
    "--branch",
    metavar="NAME",
    help="The main branch, which the release runs on (default: the branch of FOLDER's git repository, else main).",
)
@click.option("--schema-url", metavar="URL", help=_SCHEMA_URL_HELP)
@click.option("--no-workflows", is_flag=True, help="Write no GitHub workflows into .github/workflows/.")
def init(
    folder: Path | None,
    no_rules: bool,
    requirement: str | None,
    branch: str | None,
    schema_url: str | None,
    no_workflows: bool,
) -> int:
    """Start a compliance repository in FOLDER (default: here): ecoc.yaml, approvals/, records/, rules/.

    It also writes the GitHub workflows that check pull requests and release on merge, when
    --install names the ecoc they install or pip recorded a URL for this one.
    """
    from ecoc.gitinfo import current_branch
    from ecoc.scaffold import (
        REQUIREMENT_EXAMPLE,
        check_requirement,
        check_schema_url,
        installed_requirement,
        write_workflows,
    )
    from ecoc.schemas import SCHEMA_FOLDER, exported

    root = folder or Path.cwd()
    settings = root / CONFIG_NAME
    if settings.exists():
        raise UsageError(
            f"{settings}: exists already",
            "this folder is a compliance repository already; `ecoc workflows` adds or updates its workflows",
        )
    if no_workflows and requirement is not None:
        raise UsageError("--install and --no-workflows exclude each other", "leave out one of them")
    if requirement is not None:
        check_requirement(requirement)
    if schema_url is not None:
        schema_url = check_schema_url(schema_url)
    if branch is not None:
        _check_branch_name(branch)
    main_branch = branch or (current_branch(root) if (root / ".git").exists() else None) or "main"
    installed = None if no_workflows else requirement or installed_requirement()
    for name in ("approvals", "records", "rules", EVIDENCE_FOLDER):
        try:
            (root / name).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{root / name}: cannot create the folder: {exc.strerror}") from None
    for name in ("approvals", "records"):
        # git keeps no empty folder, and a clone without records/ would check no vehicle.
        if not any((root / name).iterdir()):
            _write(root / name / ".gitkeep", "")
    copied = 0 if no_rules else _copy_catalogue(root / "rules")
    template = SETTINGS_TEMPLATE
    if main_branch != "main":
        template += (
            f"\n# The branch that holds the released state; the release runs only there.\nmain_branch: {main_branch}\n"
        )
    _write(settings, template)
    for name, text in ((".gitattributes", GITATTRIBUTES), (".gitignore", GITIGNORE), (ARCHIVE_NOTE, ARCHIVE_README)):
        if not (root / name).exists():
            _write(root / name, text)
    for name, text in exported().items():
        _write(root / SCHEMA_FOLDER / name, text)
    click.echo(f"created {settings}")
    if copied:
        click.echo(f"copied ecoc's readiness rules into rules/ ({copied} files); edit them like any other file")
    if installed is not None:
        target = root / ".github" / "workflows"
        result = write_workflows(target, installed, main_branch, write=_write, schema_url=schema_url)
        _workflow_report(result, installed, main_branch)
    steps = [
        "set owners in ecoc.yaml (review at least), then write .github/CODEOWNERS with `ecoc codeowners --write`",
        "name the folder that serves IVI-2.0.xsd and xmldsig-core-schema.xsd (`ecoc workflows --schema-url URL "
        "--replace`), or set xsd.path in ecoc.yaml",
        "create the GitHub environment release, with required reviewers and the secrets of the release "
        "(README: Release and the evidence archive), and set release and signing in ecoc.yaml",
        "import existing certificates with `ecoc import ivi FILE...`, or write approvals and records",
    ]
    if not (root / ".git").exists() and current_branch(root) is None:
        # Reviews against a base, the release, history and audit all read git.
        steps.insert(0, f"make the folder a git repository (git init -b {main_branch}) and commit these files")
    if installed is None and not no_workflows:
        steps.insert(
            0,
            "add the GitHub workflows with `ecoc workflows --install REQUIREMENT`, naming the ecoc your runners "
            f"install, such as {REQUIREMENT_EXAMPLE}: this ecoc was installed from a local folder",
        )
    click.echo("next:")
    for number, step in enumerate(steps, start=1):
        click.echo(f"  {number}. {step}")
    return EXIT_CLEAN


def _check_branch_name(branch: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._/-]*", branch):
        raise UsageError(f"--branch {branch!r}: invalid branch name", "give a branch name such as main")


@cli.command()
@click.option("--install", "requirement", metavar="REQUIREMENT", help=_INSTALL_HELP)
@click.option("--schema-url", metavar="URL", help=_SCHEMA_URL_HELP)
@click.option("--replace", is_flag=True, help="Replace workflow files that exist, as after an upgrade of ecoc.")
@click.pass_context
def workflows(ctx: click.Context, requirement: str | None, schema_url: str | None, replace: bool) -> int:
    """Write the GitHub workflows that check pull requests and release on merge into .github/workflows/.

    They install REQUIREMENT and run on main_branch of ecoc.yaml. Files that exist are kept
    unless --replace is given.
    """
    from ecoc.scaffold import (
        REQUIREMENT_EXAMPLE,
        check_requirement,
        check_schema_url,
        installed_requirement,
        write_workflows,
    )

    repository = _repository(ctx)
    installed = check_requirement(requirement) if requirement is not None else installed_requirement()
    if schema_url is not None:
        schema_url = check_schema_url(schema_url)
    if installed is None:
        raise UsageError(
            "this ecoc was installed from a local folder, so the workflows cannot install it the same way",
            f"name the ecoc your runners install with --install, such as {REQUIREMENT_EXAMPLE}",
        )
    branch = repository.settings.main_branch
    folder = repository.root / ".github" / "workflows"
    result = write_workflows(folder, installed, branch, replace, write=_write, schema_url=schema_url)
    _workflow_report(result, installed, branch)
    if result.unchanged and not replace:
        click.echo("`ecoc workflows --replace` replaces them")
    return EXIT_CLEAN


@cli.command()
@click.option("--base", required=True, metavar="REF", help="The commit or branch to compare with, such as origin/main.")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False), help="Folder for the pages."
)
@click.option("--clean", is_flag=True, help="Delete the pages of an earlier preview in --out first.")
@click.option(
    "--datetime",
    "given_datetime",
    metavar="ISO",
    help="IviVersionDateTime of both renders (default: SOURCE_DATE_EPOCH, else the time of the last commit "
    "of the data).",
)
@_xsd_option
@_jobs_option
@click.pass_context
def preview(
    ctx: click.Context,
    base: str,
    out_dir: Path,
    clean: bool,
    given_datetime: str | None,
    xsd: Path | None,
    jobs: int | None,
) -> int:
    """Write, for each record a change touches, its XML, an XML diff against REF and a readable page.

    The folder also gets index.html, which links every previewed record.
    """
    from ecoc.scope import BaseCopy

    with BaseCopy(_root(ctx), base) as copy:
        return _write_preview(ctx, copy, out_dir, clean, given_datetime, xsd, jobs)


def _write_preview(
    ctx: click.Context,
    copy: BaseCopy,
    out_dir: Path,
    clean: bool,
    given_datetime: str | None,
    xsd: Path | None,
    jobs: int | None,
) -> int:
    from ecoc.changes import check_against_base
    from ecoc.preview import pages, write_preview
    from ecoc.runner import RunOptions, default_jobs

    repository = _repository(ctx)
    base = copy.scope().base
    version_datetime = _version_datetime(repository, given_datetime, preview=True)
    schema = _schema(repository, xsd)
    _prepare_preview(out_dir, clean)
    rendered: dict[str, bytes] = {}
    base_rendered: dict[str, bytes] = {}

    def keeper(into: dict[str, bytes]) -> Callable[[RecordResult], None]:
        def keep(result: RecordResult) -> None:
            if result.rendered is not None:
                into[result.relative] = result.rendered

        return keep

    options = RunOptions(None, schema, version_datetime, keep_render=True, jobs=jobs or default_jobs())
    comparison = check_against_base(repository, copy, options, (keeper(rendered), keeper(base_rendered)))
    previews = pages(comparison, rendered, base_rendered)
    written = write_preview(out_dir, repository.root, base, previews, _write, comparison.base_problem)
    click.echo(f"wrote {_plural(len(written), 'file')} for {_plural(len(previews), 'record')} to {out_dir}", err=True)
    return EXIT_CLEAN


# The files an earlier preview wrote, which --clean deletes.
_PREVIEW_FILES = ("index.html", "records/*.xml", "records/*.diff", "records/*.html")


def _prepare_preview(out_dir: Path, clean: bool) -> None:
    _reject_data_path(out_dir, "--out")
    _prepare_folder(
        out_dir,
        clean,
        _PREVIEW_FILES,
        "pass --clean to delete the pages of an earlier preview first, or choose an empty folder",
    )


@cli.group()
def schema() -> None:
    """JSON Schemas of approval and record files, for editors."""


@schema.command(name="export")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for approval.schema.json and record.schema.json (default: schemas/ in the repository).",
)
@click.option("--check", "check_only", is_flag=True, help="Write nothing; exit 1 when the files differ.")
@click.pass_context
def schema_export(ctx: click.Context, out_dir: Path | None, check_only: bool) -> int:
    """Write JSON Schemas that let a YAML editor complete and check approval and record files.

    The example files start with a `# yaml-language-server: $schema=...` line that points at them.
    """
    from ecoc.schemas import SCHEMA_FOLDER, exported

    folder = out_dir or _root(ctx) / SCHEMA_FOLDER
    stale = []
    for name, text in exported().items():
        path = folder / name
        try:
            current = path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current == text:
            continue
        stale.append(path)
        if not check_only:
            _write(path, text)
    if check_only:
        for path in stale:
            state = "is out of date" if path.exists() else "is missing"
            click.echo(f"{path} {state}; run ecoc schema export", err=True)
        return EXIT_FINDINGS if stale else EXIT_CLEAN
    click.echo(f"wrote {len(stale)} of 2 schema files to {folder}", err=True)
    return EXIT_CLEAN


def _signing_settings(ctx: click.Context) -> tuple[SigningSettings | None, Path]:
    """The signing settings of the repository around, if there is one, and its root.

    Outside a repository there are none; an ecoc.yaml that cannot be read is an error, so that
    a broken setting never switches a check off.
    """
    if ctx.obj.repo is None:
        try:
            find_root(Path.cwd())
        except ConfigError:
            return None, Path.cwd()
    repository = _repository(ctx)
    return repository.settings.signing, repository.root


# Keeps git from converting line ends in the evidence archive, whose bytes are signed.
GITATTRIBUTES = """\
# Signed certificates and receipts are evidence: git must store and check them out byte for byte,
# never converting line ends, or their signatures and digests would no longer match.
signed/** -text
"""

# Local output stays out of git. An outbox for local release runs must lie outside the repository
# or in an ignored folder such as build/outbox, or `git add -A` would commit delivered certificates.
GITIGNORE = """\
# Local output: previews, reports and the outbox of local release runs.
/build/
# The check cache (ECOC_CACHE_DIR moves it elsewhere).
/.ecoc-cache/
"""

# The archive's note, signed/README.md, as `ecoc init` writes it. The release writes every other file there.
ARCHIVE_README = """\
# signed/

The evidence archive. Only the release job writes here: for each issued version of each
vehicle's certificate, the signed bytes, each delivery result with the receipt as received, and
a manifest that links them to the source commit, the approval, the rules and the schema. Nothing
here is edited by hand or rewritten; `ecoc audit` verifies the whole archive offline.
"""

# The environment variable that holds the passphrase of a key file; never an option, so that it
# stays out of shell histories and process lists.
PASSPHRASE_VARIABLE = "ECOC_KEY_PASSPHRASE"


def _destination(settings: ReleaseSettings, root: Path, outbox: Path | None) -> str:
    """Say where a release sends the certificates, as "to the outbox /srv/outbox"."""
    if settings.transport == "outbox":
        folder = outbox or (root / settings.outbox if settings.outbox else None)
        return f"to the outbox {folder}" if folder is not None else "to the outbox, whose folder is not set"
    if settings.transport == "nap-soap" and settings.nap is not None:
        return f"to the NAP at {settings.nap.endpoint} (nap-soap)"
    if settings.transport == "vca-rest" and settings.vca is not None:
        return f"to the VCA at {settings.vca.base_url} (vca-rest)"
    return f"through {settings.transport or 'no transport'}"


def _seal_certificate_path(settings: SigningSettings, root: Path, cert_path: Path | None) -> Path | None:
    """Return the seal certificate that --cert names, else the one of signing.cert in ecoc.yaml."""
    return cert_path or (root / settings.cert if settings.cert else None)


def _seal_subject(settings: SigningSettings, root: Path, cert_path: Path | None) -> str | None:
    """Return the subject of the seal certificate the options or ecoc.yaml name, when it can be read."""
    from ecoc.signing import certificates_in

    path = _seal_certificate_path(settings, root, cert_path)
    if path is None:
        return None
    try:
        return certificates_in(path)[0].subject.rfc4514_string()
    except (EcocError, IndexError):
        return None  # the dry run reports the seal's problem


# A real release lists at most this many blocked records; a dry run lists all of them.
BLOCKED_LISTED = 20


def _echo_blocked(blocked: list[tuple[str, str]], limit: int) -> None:
    """List blocked records with their reasons, those that a release rule blocks first.

    A record blocked by a release rule (a correction without a reason, a rejected delivery) was
    issued before and waits for a correction, which matters more than a record not ready yet.
    """
    ordered = sorted(blocked, key=lambda item: not item[1].startswith("release."))
    for relative, reason in ordered[:limit]:
        click.echo(f"blocked {relative}: {reason}")
    if len(ordered) > limit:
        click.echo(f"… and {len(ordered) - limit} more blocked records")


def _load_seal(
    settings: SigningSettings | None,
    root: Path,
    key_source: str | None,
    cert_path: Path | None,
    chain_path: Path | None,
) -> SigningKey:
    """The signing key of the options, or of signing in ecoc.yaml for the options left out."""
    from ecoc.signing import load_signing_key

    configured: tuple[Path | None, Path | None] = (None, None)
    if settings is not None:
        # A key passed without its certificate, as when the key stays outside the repository,
        # goes with the seal certificate of ecoc.yaml, unless it is a PKCS#12 bundle.
        configured = (_seal_certificate_path(settings, root, None), root / settings.chain if settings.chain else None)
    if key_source is None:
        if settings is None or settings.key is None:
            raise UsageError("no signing key", "pass --key, or set signing.key in ecoc.yaml")
        key_source = settings.key if settings.key.startswith("env:") else str(root / settings.key)
        cert_path, chain_path = cert_path or configured[0], chain_path or configured[1]
    secret = os.environ.get(PASSPHRASE_VARIABLE)
    return load_signing_key(key_source, cert_path, chain_path, secret.encode() if secret else None, configured)


def _reject_other_signer(
    file: Path, signed: bytes, certificate: x509.Certificate, signers: dict[str, tuple[str, ...]]
) -> None:
    """Raise an InputError when signing.signers does not allow the seal for the file's manufacturer.

    `ecoc verify` and the authority would refuse such a signature, so it is never written.
    """
    from ecoc.ivi.xmlsafe import parse_xml_bytes
    from ecoc.signing import signer_names, signer_problem

    problem = signer_problem(certificate, signer_names(parse_xml_bytes(signed, str(file)).getroot()), signers)
    if problem is not None:
        raise InputError(
            f"{file}: {problem}",
            "sign with a seal that signing.signers in ecoc.yaml allows for this manufacturer, "
            "or add the seal's subject there after review",
        )


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", "out_file", type=click.Path(path_type=Path, dir_okay=False), help="Signed file, for one FILE.")
@click.option(
    "--out-dir",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the signed files, each under the name of its FILE.",
)
@click.option(
    "--key",
    "key_source",
    help="PEM private key file, a PKCS#12 file (.p12, .pfx) with key, certificate and intermediates, "
    "env:NAME for a PEM key or base64 PKCS#12 bundle in the environment variable NAME, "
    "or a PKCS#11 URI (pkcs11:token=...;object=...; PIN from ECOC_PKCS11_PIN).",
)
@click.option("--cert", "cert_path", type=click.Path(path_type=Path, dir_okay=False), help="PEM signing certificate.")
@click.option(
    "--chain",
    "chain_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM intermediate certificates, from the seal's issuer upwards.",
)
@click.option("--xades", is_flag=True, help="Add XAdES baseline B-B properties (signing time, certificate digest).")
@click.option(
    "--timestamp",
    "timestamp_url",
    metavar="URL",
    help="Add an RFC 3161 signature timestamp from the time-stamping authority at URL (XAdES B-T; implies --xades).",
)
@click.pass_context
def sign(
    ctx: click.Context,
    files: tuple[Path, ...],
    out_file: Path | None,
    out_dir: Path | None,
    key_source: str | None,
    cert_path: Path | None,
    chain_path: Path | None,
    xades: bool,
    timestamp_url: str | None,
) -> int:
    """Sign IVI 2.0 files with an enveloped XMLDSig signature (EReg profile: exc-c14n, RSA-SHA256).

    One FILE goes to --out; any number go to --out-dir. Nothing is written unless every file
    signs. Options left out come from signing in ecoc.yaml. A key file's passphrase comes from
    the environment variable ECOC_KEY_PASSPHRASE.
    """
    from ecoc.signing import TokenKey, check_seal, load_anchors
    from ecoc.signing import sign as sign_document

    if (out_file is None) == (out_dir is None):
        raise UsageError("name the output: --out FILE for one file, or --out-dir DIR", "pass one of the two")
    if out_file is not None and len(files) > 1:
        raise UsageError(f"--out names one file, and {len(files)} files are given", "use --out-dir DIR")
    targets = [out_file] if out_file is not None else [out_dir / file.name for file in files]  # type: ignore[operator]
    if len({target.resolve() for target in targets}) < len(targets):
        raise UsageError("two of the files have the same name", "sign them into different folders")
    for target in targets:
        _reject_data_path(target, "--out-dir" if out_dir is not None else "--out")
        if target.exists():
            raise UsageError(f"{target}: exists already", "a signed file is written once; choose a new name")
    settings, root = _signing_settings(ctx)
    timestamp_url = timestamp_url or (settings.timestamp_url if settings is not None else None)
    xades = xades or timestamp_url is not None or (settings is not None and settings.xades)
    signing = _load_seal(settings, root, key_source, cert_path, chain_path)
    signed: list[bytes] = []
    try:
        # As the release does: a seal whose chain does not reach the root signs files that
        # ecoc verify and the authority reject.
        check_seal(signing, load_anchors([root / path for path in settings.trust]) if settings is not None else [])
        for file in files:
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise UsageError(f"{file}: cannot read the file: {exc.strerror}") from None
            try:
                signed.append(sign_document(data, signing, xades=xades, timestamp_url=timestamp_url))
            except InputError as exc:
                raise InputError(f"{file}: {exc.message}", exc.hint) from None
            if settings is not None and settings.signers:
                _reject_other_signer(file, signed[-1], signing.certificate, settings.signers)
    finally:
        if isinstance(signing.key, TokenKey):
            signing.key.close()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    try:
        for target, data in zip(targets, signed, strict=True):
            _write(target, data)
            done.append(target)
    except EcocError as exc:
        # Nothing is written unless every file is: remove the files this run wrote.
        for written in done:
            written.unlink(missing_ok=True)
        if not done:
            raise
        message = f"{exc.message}; removed the {_plural(len(done), 'signed file')} written before it"
        raise type(exc)(message, exc.hint) from None
    subject = signing.certificate.subject.rfc4514_string()
    if len(files) == 1:
        click.echo(f"signed {files[0]} as {targets[0]} with {subject}", err=True)
    else:
        click.echo(f"signed {len(files)} files into {out_dir} with {subject}", err=True)
    return EXIT_CLEAN


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option(
    "--trust",
    "trust",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM file of trust anchors; repeatable (default: signing.trust in ecoc.yaml). No public CA is trusted.",
)
@click.option(
    "--at",
    "at_text",
    metavar="TIME",
    help="Check the certificates at this time instead of the timestamp's or now: ISO 8601 with a time zone, "
    "as in 2026-12-01T09:00:00Z.",
)
@click.option("--allow-weak", is_flag=True, help="Accept SHA-1 and other weak algorithms, to read an old archive only.")
@click.pass_context
def verify(
    ctx: click.Context, paths: tuple[Path, ...], trust: tuple[Path, ...], at_text: str | None, allow_weak: bool
) -> int:
    """Verify signed IVI 2.0 files offline; exit 0 when every file verifies, 1 otherwise.

    When signing.signers in ecoc.yaml is set, the signing certificate must also be one that may
    sign for the manufacturer or EU representative the certificate names.
    """
    from ecoc.signing import VerificationFailed, Verifier, load_anchors, signer_names, signer_problem

    settings, root = _signing_settings(ctx)
    if not trust and settings is not None:
        trust = tuple(root / path for path in settings.trust)
    if not trust:
        raise UsageError("no trust anchors", "pass --trust PEM, or set signing.trust in ecoc.yaml")
    anchors = load_anchors(list(trust))
    at = None
    if at_text is not None:
        try:
            at = dt.datetime.fromisoformat(at_text.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--at {at_text}: not a date and time", "write it as 2026-12-04T10:00:00Z") from None
        if at.tzinfo is None:
            raise UsageError(f"--at {at_text}: the time has no time zone", "add an offset such as +01:00, or Z for UTC")
    files = [path for given in paths for path in (_signed_files(given) if given.is_dir() else [given])]
    if not anchors:
        raise UsageError("the --trust files contain no certificate", "pass PEM files with the trust anchors")
    verifier = Verifier(anchors, at, allow_weak)
    failed = 0
    for path in files:
        try:
            verified = verifier.verify(path.read_bytes())
        except VerificationFailed as exc:
            failed += 1
            click.echo(f"{path}: does not verify: {exc}")
            continue
        except OSError as exc:
            failed += 1
            click.echo(f"{path}: cannot read the file: {exc.strerror}")
            continue
        if settings is not None and settings.signers:
            problem = signer_problem(verified.signer, signer_names(verified.signed_xml), settings.signers)
            if problem is not None:
                failed += 1
                click.echo(f"{path}: does not verify: {problem}")
                continue
        stamped = f", timestamped {verified.timestamp:%Y-%m-%dT%H:%M:%SZ}" if verified.timestamp else ""
        click.echo(f"{path}: verified, signed by {verified.signer.subject.rfc4514_string()}{stamped}")
    click.echo(f"{len(files) - failed} of {_plural(len(files), 'file')} verified", err=True)
    return EXIT_FINDINGS if failed or not files else EXIT_CLEAN


def _warn_own_anchors(repository: Repository) -> None:
    """Warn that anchors read from the audited repository prove little, and name the commits that changed them."""
    from ecoc import gitinfo

    root = repository.root
    files = [CONFIG_NAME, *repository.settings.signing.trust]
    log.warning(
        "the trust anchors come from signing.trust of the repository being audited, where anyone who can commit "
        "can add one; pass --trust with anchors obtained outside the repository"
    )
    first = gitinfo.first_change(root, "signed/ledger.jsonl")
    if first is None:
        return
    # Changes to the trust list in ecoc.yaml, or to the anchor files, after the first evidence was committed.
    changes = gitinfo.changes_matching(root, f"{first}~1", files, r"trust|\.pem")
    for line in changes:
        log.warning("signing.trust or an anchor file changed after the first evidence: %s", line)


def _signed_files(folder: Path) -> list[Path]:
    """The XML files below a folder, without the authorities' receipts kept in the evidence archive."""
    return [path for path in sorted(folder.rglob("*.xml")) if not path.name.startswith("receipt-")]


def _anchors(ctx: click.Context, trust: tuple[Path, ...]) -> list[x509.Certificate]:
    from ecoc.signing import load_anchors

    settings, root = _signing_settings(ctx)
    if not trust and settings is not None:
        trust = tuple(root / path for path in settings.trust)
    if not trust:
        raise UsageError("no trust anchors", "pass --trust PEM, or set signing.trust in ecoc.yaml")
    anchors = load_anchors(list(trust))
    if not anchors:
        raise UsageError("the --trust files contain no certificate", "pass PEM files with the trust anchors")
    return anchors


@cli.command()
@click.option("--vin", "vins", multiple=True, metavar="VIN", help="Audit only this vehicle's evidence; repeatable.")
@click.option("--since", "since_text", metavar="DATE", help="Audit only evidence signed on or after DATE (ISO 8601).")
@click.option(
    "--trust",
    "trust",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM file of trust anchors; repeatable (default: signing.trust in ecoc.yaml).",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["text", "json", "html"]),
    default="text",
    show_default=True,
    help="Output format: text, JSON with every entry and its checks, or an HTML page.",
)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the report to this file.")
@_jobs_option
@click.pass_context
def audit(
    ctx: click.Context,
    vins: tuple[str, ...],
    since_text: str | None,
    trust: tuple[Path, ...],
    format_: str,
    output: Path | None,
    jobs: int | None,
) -> int:
    """Verify the evidence archive offline; exit 1 on any discrepancy.

    Checks every signature and chain at its signing time, every manifest and receipt digest, the
    ledger from its first line to its last, a receipt for each delivery, and that each signed
    certificate, outside its signature, is the render of its record at the manifest's source commit.
    """
    from ecoc import audit as archive
    from ecoc import gitinfo
    from ecoc.history import VIN_SYNTAX

    for vin in vins:
        if not VIN_SYNTAX.match(vin):
            raise UsageError(
                f"--vin {vin!r} is not a VIN",
                "give the 17 characters of the vehicle identification number in capitals (no I, O or Q)",
            )
    repository = _repository(ctx)
    anchors = _anchors(ctx, trust)
    if not trust:
        _warn_own_anchors(repository)
    since = None
    if since_text is not None:
        try:
            since = dt.datetime.fromisoformat(since_text.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"--since {since_text}: not a date", "write it as 2026-12-01 or 2026-12-01T09:00:00Z"
            ) from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
    if gitinfo.is_shallow(repository.root):
        raise ConfigError(
            f"{repository.root} is a shallow clone: the source commits of the evidence may be missing",
            "fetch the full history first: git fetch --unshallow (or fetch-depth: 0 in actions/checkout)",
        )
    from ecoc.runner import default_jobs

    report = archive.audit(repository.root, anchors, vins, since, jobs=jobs or default_jobs())
    others = sorted({e.tool_version for e in report.entries if e.tool_version and e.tool_version != __version__})
    if others:
        # Another version may render other bytes, which the audit would report as source discrepancies.
        log.warning(
            "entries were signed with ecoc %s, and this is ecoc %s; where the audit reports the source as "
            "different, audit again with the version that signed (pip install ecoc==VERSION, or from the "
            "tooling/ folder at the source commit)",
            ", ".join(others),
            __version__,
        )
    main_branch = repository.settings.main_branch
    if report.branch != main_branch:
        checked_out = f"branch {report.branch}" if report.branch else "a detached HEAD"
        log.warning(
            "this audits the archive of %s, not of %s; check out %s to audit it", checked_out, main_branch, main_branch
        )
    if not (repository.root / "signed").is_dir() and not report.uncommitted:
        log.warning("there is no signed/ folder: nothing was released from this repository")
    _emit(archive.format_report(report, format_, now_text(), repository.root), output)
    return EXIT_FINDINGS if report.discrepancies else EXIT_CLEAN


@cli.command()
@click.argument("vin")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["text", "json", "markdown", "html"]),
    default="text",
    show_default=True,
    help="Output format; JSON lists every value an event changed.",
)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write to this file, not stdout.")
@click.pass_context
def history(ctx: click.Context, vin: str, format_: str, output: Path | None) -> int:
    """Print the timeline of one vehicle: every change of its data, rules and waivers, then its evidence."""
    from ecoc import history as timeline

    repository = _repository(ctx)
    events = timeline.history(repository.root, vin)
    if format_ == "html":
        from ecoc.templating import render_page

        text = render_page(repository.root, "history.html.j2", vin=vin, events=events, generated=now_text())
    else:
        writers = {"text": timeline.format_text, "json": timeline.format_json, "markdown": timeline.format_markdown}
        text = writers[format_](vin, events)
    _emit(text, output)
    return EXIT_CLEAN


STATUS_FORMATS = ("text", "markdown", "json", "html")


@cli.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="List what would be signed and delivered, and every check that would stop the release; "
    "sign, commit, push and deliver nothing.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Sign at most this many certificates in this run.")
@click.option("--shard", "shard_text", metavar="K/N", help="Release only shard K of N (by a hash of the VIN).")
@click.option(
    "--transport",
    type=click.Choice(["outbox", "nap-soap", "vca-rest"]),
    envvar="ECOC_TRANSPORT",
    help="Where certificates go (default: release.transport in ecoc.yaml; env ECOC_TRANSPORT).",
)
@click.option(
    "--outbox",
    # The release checks the folder itself, so that its message names --outbox or ECOC_OUTBOX.
    type=click.Path(path_type=Path),
    metavar="DIRECTORY",
    envvar="ECOC_OUTBOX",
    help="Folder for the outbox transport (default: release.outbox; env ECOC_OUTBOX).",
)
@click.option("--key", "key_source", help="Signing key, as for ecoc sign (default: signing.key in ecoc.yaml).")
@click.option("--cert", "cert_path", type=click.Path(path_type=Path, dir_okay=False), help="PEM signing certificate.")
@click.option(
    "--chain", "chain_path", type=click.Path(path_type=Path, dir_okay=False), help="PEM intermediate certificates."
)
@click.option(
    "--push/--no-push",
    default=None,
    help="Push each evidence commit to release.remote (default: when the repository has that remote).",
)
@_xsd_option
@_jobs_option
@click.pass_context
def release(
    ctx: click.Context,
    dry_run: bool,
    limit: int | None,
    shard_text: str | None,
    transport: str | None,
    outbox: Path | None,
    key_source: str | None,
    cert_path: Path | None,
    chain_path: Path | None,
    push: bool | None,
    xsd: Path | None,
    jobs: int | None,
) -> int:
    """Sign, deliver and archive every ready certificate that has no evidence yet (run on main).

    Each step commits its evidence to signed/ and pushes it before the next starts: signing,
    then delivery with the authority's receipts. The next run in the same clone completes a run
    that was interrupted. Only one release may run at a time (the workflow's concurrency group):
    two at once can deliver the same certificates twice. Exits 1 when a delivery was rejected
    or failed, and 130 when stopped by Ctrl-C or SIGTERM.
    A dry run exits with the code of the first problem that would stop the release.
    """
    from click.core import ParameterSource

    from ecoc.release import FAILURES_IN_A_ROW, ReleaseOptions, parse_shard, run_release
    from ecoc.runner import default_jobs
    from ecoc.transports import open_transport

    repository = _repository(ctx)
    settings = repository.settings
    schema = _schema(repository, xsd)
    if schema is None:
        raise ConfigError(
            "ecoc release needs the official IVI 2.0 schema to validate what it signs",
            "set xsd.path in ecoc.yaml, pass --xsd, or set ECOC_XSD",
        )
    release_settings = settings.release
    if transport is not None:
        release_settings = release_settings.model_copy(update={"transport": transport})
    problems: list[EcocError] = []
    if release_settings.transport is None:
        missing = UsageError(
            "no transport for the certificates", "pass --transport outbox --outbox DIR, or set release.transport"
        )
        if not dry_run:
            raise missing
        problems.append(missing)
    signing = settings.signing
    options = ReleaseOptions(
        dry_run=dry_run,
        limit=limit,
        shard=parse_shard(shard_text) if shard_text is not None else None,
        push=push,
        jobs=jobs or default_jobs(),
        xades=signing.xades,
        timestamp_url=signing.timestamp_url,
    )
    outbox_path = outbox.resolve() if outbox is not None else None
    from_environment = ctx.get_parameter_source("outbox") == ParameterSource.ENVIRONMENT
    outbox_source = "ECOC_OUTBOX" if from_environment else "--outbox"
    try:
        report = run_release(
            repository,
            options,
            schema,
            lambda: _load_seal(signing, repository.root, key_source, cert_path, chain_path),
            lambda: open_transport(release_settings, repository.root, outbox_path, outbox_source),
            release_settings.transport or "",
        )
    except KeyboardInterrupt:
        if dry_run:
            raise
        raise Interrupted(
            "the release was interrupted",
            "run ecoc release again, which finishes what this run started: it pushes the commits made here, "
            "commits the answers of deliveries that were under way, and sends the certificates not sent yet",
        ) from None
    for path in report.recovered:
        click.echo(f"recovered {path}")
    if dry_run:
        for candidate in report.planned:
            reason = f" (correction: {candidate.correction_reason})" if candidate.correction_reason else ""
            click.echo(
                f"would sign and deliver {candidate.vin} IviVersionNumber {candidate.version} "
                f"from {candidate.relative}{reason}"
            )
        for entry in report.resend:
            click.echo(f"would deliver again {entry.vin} IviVersionNumber {entry.version} ({entry.folder})")
        for entry in report.superseded:
            click.echo(
                f"would not deliver {entry.vin} IviVersionNumber {entry.version} ({entry.folder}): "
                "a later version replaces it"
            )
        for entry, reason in report.held_back:
            click.echo(f"would hold back {entry.vin} IviVersionNumber {entry.version} ({entry.folder}): {reason}")
        _echo_blocked(report.blocked_records, len(report.blocked_records))
        if report.planned or report.resend:
            where = _destination(release_settings, repository.root, outbox_path)
            seal = _seal_subject(signing, repository.root, cert_path)
            click.echo(f"would deliver {where}" + (f", sealed by {seal}" if seal else ""), err=True)
        problems += report.problems
        for problem in problems:
            click.echo(f"error: {problem.diagnostics()}", err=True)
        stopped = f"; {_plural(len(problems), 'problem')} would stop the release" if problems else ""
        deferred = f" ({report.deferred} more left by --limit)" if report.deferred else ""
        click.echo(
            f"{_plural(len(report.planned), 'certificate')} to sign{deferred}, {len(report.resend)} to deliver "
            f"again, {report.blocked} blocked{stopped}",
            err=True,
        )
        return problems[0].exit_code if problems else EXIT_CLEAN
    for outcome in report.outcomes:
        name = f"{outcome.vin} v{outcome.version} {outcome.reference_id}"
        if outcome.status == "accepted" and release_settings.transport == "outbox":
            # The message names the file written into the outbox, since the authority has not replied yet.
            click.echo(f"{name}: {outcome.message}")
        else:
            click.echo(f"{name}: {outcome.status}: {outcome.message}")
    for entry, reason in report.held_back:
        click.echo(f"held back {entry.vin} IviVersionNumber {entry.version} ({entry.folder}): {reason}")
    _echo_blocked(report.blocked_records, BLOCKED_LISTED)
    counted = {
        state: sum(1 for o in report.outcomes if o.status == state) for state in ("accepted", "rejected", "failed")
    }
    duplicates = sum(1 for o in report.outcomes if o.duplicate)
    accepted_word = "written to the outbox" if release_settings.transport == "outbox" else "accepted"
    click.echo(
        f"signed {report.signed}, sent {len(report.outcomes)}: {counted['accepted']} {accepted_word}"
        + (f" ({duplicates} of them already there)" if duplicates else "")
        + ", "
        f"{counted['rejected']} rejected, {counted['failed']} failed"
        + (" (sent again by the next run)" if counted["failed"] else "")
        + (f", {report.not_sent} not sent after {FAILURES_IN_A_ROW} failures in a row" if report.not_sent else "")
        + "; "
        f"{report.blocked} blocked"
        + (" (ecoc release --dry-run lists them all)" if report.blocked > BLOCKED_LISTED else "")
        + (f", {report.deferred} ready ones left by --limit" if report.deferred else "")
        + f"; {_plural(len(report.commits), 'commit')}"
        + (", pushed" if report.pushed and report.commits else "")
        + (", pushed the commits of an earlier run" if report.pushed and not report.commits else ""),
        err=True,
    )
    return EXIT_FINDINGS if report.failed else EXIT_CLEAN


@cli.command()
@click.option(
    "--format", "format_", type=click.Choice(STATUS_FORMATS), default="text", show_default=True, help="Output format."
)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write to this file, not stdout.")
@click.option(
    "--main",
    "main_ref",
    metavar="REF",
    help="The branch whose records count as approved (default: main_branch of ecoc.yaml, which is main).",
)
@_xsd_option
@_jobs_option
@click.pass_context
def status(
    ctx: click.Context, format_: str, output: Path | None, main_ref: str | None, xsd: Path | None, jobs: int | None
) -> int:
    """Show each record's state, what it lacks, the next action and who owns it.

    The states are blocked, ready, approved (on the main branch), signed, delivered and rejected.
    Exits 1 when a record is blocked or rejected.
    """
    from ecoc import status as board
    from ecoc.cache import open_cache
    from ecoc.check import load_approvals
    from ecoc.evidence import read_evidence
    from ecoc.formats import CheckedRecord, Report
    from ecoc.runner import RunOptions, default_jobs, run_check

    repository = _repository(ctx)
    root = repository.root
    schema = _schema(repository, xsd)
    jobs = jobs or default_jobs()
    folder = cache_folder(root, False)
    run = run_check(repository, RunOptions(None, schema, jobs=jobs), open_cache(folder) if folder is not None else None)
    evidence, problems = read_evidence(root)
    for problem in problems:
        click.echo(format_text([problem]), nl=False, err=True)
    issued = [file for file, vin in run.checked if vin in evidence]
    digests: dict[str, str] = {}

    def keep(result: RecordResult) -> None:
        if result.content_digest is not None:
            digests[result.relative] = result.content_digest

    if issued:
        selection = [root / file for file in issued]
        run_check(repository, RunOptions(selection, schema, keep_render=True, jobs=jobs), sink=keep)
    index = load_approvals(list_yaml(root, "approvals"))
    owners = {a.number_text: a.owners for a in index.approvals if a.number_text is not None and a.owners is not None}
    facts = board.Facts(
        _merged(root, main_ref or repository.settings.main_branch, main_ref is not None, run.approval_of, index),
        evidence,
        digests,
        owners,
        repository.settings.owners,
    )
    summary = summarize(run.findings, run.records, run.approvals)
    report = Report(run.findings, summary, [CheckedRecord(file, vin) for file, vin in run.checked])
    rows = board.statuses(report, run.approval_of, facts)
    if format_ in ("html", "markdown", "json"):
        from ecoc import gitinfo

        commit, branch = gitinfo.head(root), gitinfo.current_branch(root)
        where = f"of commit {commit[:12]}" if commit else "of a repository without commits"
        where += f" on branch {branch}" if branch else ""
    if format_ == "html":
        from ecoc.templating import render_page

        text = render_page(
            root,
            "status.html.j2",
            rows=rows,
            counts=board.counts(rows),
            states=board.STATES,
            generated=now_text(),
            where=where,
        )
    elif format_ == "markdown":
        text = board.format_status_markdown(rows, where)
    elif format_ == "json":
        text = board.format_status_json(rows, {"commit": commit, "branch": branch, "generated": now_text()})
    else:
        text = board.format_status_text(rows)
    _emit(text, output)
    stuck = sum(1 for row in rows if row.state in ("blocked", "rejected"))
    return EXIT_FINDINGS if stuck else EXIT_CLEAN


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _merged(
    root: Path, main: str, explicit: bool, approval_of: dict[str, str | None], index: ApprovalIndex
) -> frozenset[str] | None:
    """Record files that are on the main branch as they are here, with their approval files.

    A main branch that cannot be read is an error when --main named it. Otherwise the remote's
    branch (origin/<main>) is used, and when it is missing too, a warning says that no record
    counts as approved.
    """
    from ecoc import gitinfo

    try:
        commit = gitinfo.resolve_commit(root, main, "--main")
    except EcocError as exc:
        if explicit or exc.message.startswith("git refuses"):
            raise
        # A CI checkout often has the remote's branch only, as origin/main.
        remote = f"origin/{main}"
        try:
            commit = gitinfo.resolve_commit(root, remote, "--main")
        except EcocError:
            log.warning(
                "no record counts as approved, because the main branch %s (main_branch in %s) is neither a "
                "branch here nor %s; set main_branch to the branch that holds the reviewed data, or pass --main",
                main,
                CONFIG_NAME,
                remote,
            )
            return None
        log.info("the branch %s is missing here, so %s stands for the main branch", main, remote)
    differing = set(gitinfo.changed_files(root, commit))
    unmerged_rules = sorted(path for path in differing if path == CONFIG_NAME or path.startswith("rules/"))
    if unmerged_rules:
        # Rules, waivers and settings decide every record's readiness, so none is approved yet.
        log.warning(
            "no record counts as approved, because %s differ%s from the main branch %s",
            ", ".join(unmerged_rules[:3]) + (" and more" if len(unmerged_rules) > 3 else ""),
            "s" if len(unmerged_rules) == 1 else "",
            main,
        )
        return frozenset()
    # A file that git ignores, or whose edits a skip-worktree flag hides, is not what main has.
    differing |= set(gitinfo.hidden_files(root, ("approvals", "records"), YAML_SUFFIXES))
    merged = set()
    for file, number in approval_of.items():
        if file in differing or any(path in differing for path in index.paths_of(number)):
            continue
        merged.add(file)
    return frozenset(merged)


@cli.group(name="import")
def import_() -> None:
    """Import existing certificates into approval and record YAML."""


@import_.command(name="ivi")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Report what would be written, write nothing.")
@click.pass_context
def import_ivi(ctx: click.Context, files: tuple[Path, ...], dry_run: bool) -> int:
    """Turn IVI 2.0 XML messages into approval and record YAML.

    Nothing is written when any of the FILES cannot be imported.
    """
    from ecoc.importer import import_messages

    repository = _repository(ctx)
    for path in files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    findings: list[Finding] = []
    readable = []
    for path in files:
        try:
            path.read_bytes()
            readable.append((path, str(path)))
        except OSError as exc:
            findings.append(
                Finding("io.read", Severity.ERROR, f"cannot read the file: {exc.strerror}", str(path), 1, 1)
            )
    result = None
    if not findings:
        try:
            result = import_messages(repository, readable, dry_run=dry_run)
        except InputError as exc:
            findings.append(Finding("import.unreadable", Severity.ERROR, exc.message, None, hint=exc.hint))
        else:
            findings += result.findings
    if findings:
        click.echo(format_text(merge_duplicates(findings)), nl=False, err=True)
        click.echo("nothing was written", err=True)
        return EXIT_FINDINGS
    assert result is not None
    verb = "would create" if dry_run else "created"
    for relative in result.approvals_created:
        click.echo(f"{verb} {relative}")
    for relative in result.approvals_extended:
        click.echo(f"{'would extend' if dry_run else 'extended'} {relative}")
    for relative in result.records:
        click.echo(f"{verb} {relative}")
    return EXIT_CLEAN


# Errors of writing to stdout: a full disk, a closed pipe, a failing device.
_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EPIPE})


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _stop(signum: int, frame: object) -> None:
    """Turn SIGTERM, which job runners and containers send to stop a job, into Ctrl-C."""
    raise KeyboardInterrupt


def run() -> NoReturn:
    """Run `main` as the `ecoc` command, then end the process without tearing the interpreter down.

    Freeing every object and module at exit costs about a tenth of a second after a check,
    and nothing of it can be seen. The exit handlers still run (logging, thread and process
    pools, temporary folders), and the output is flushed first.
    """
    code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        # A profiler or coverage tool writes its results when the interpreter ends normally.
        raise SystemExit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    try:
        code = cli.main(args=argv, prog_name="ecoc", standalone_mode=False)
        # Output still in the buffer would otherwise be lost without a word at exit.
        if sys.stdout is not None:  # None when the command runs with stdout closed
            sys.stdout.flush()
    except (BrokenPipeError, _ReaderGone):
        # The reader went away (as with `ecoc rules list | head`): nothing more to say to it.
        _quiet_stdout()
        return EXIT_ERROR
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        _quiet_stdout()
        click.echo(f"error: cannot write the output: {exc.strerror}", err=True)
        return EXIT_ERROR
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        # Ctrl-C or SIGTERM: the shell's convention for a command stopped by SIGINT.
        click.echo("interrupted", err=True)
        return Interrupted.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except EcocError as exc:
        click.echo(f"error: {exc.diagnostics()}", err=True)
        return exc.exit_code
    except Exception:  # a bug: report it with its traceback and exit as an internal error
        click.echo("internal error: ecoc failed unexpectedly; please report this with the traceback below", err=True)
        click.echo(traceback.format_exc(), err=True)
        return EXIT_ERROR
    return code if isinstance(code, int) else EXIT_CLEAN
