"""`ecoc history VIN`: the timeline of one vehicle, from git and the evidence archive.

One `git log -z` pass lists every commit that changed the vehicle's record files, the approval
files they name, the rule and waiver files, or the vehicle's evidence. For each change of a record
or approval, the values before and after are compared key by key. The evidence events (signed,
delivered, rejected, corrections) come from the ledger.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecoc import gitinfo
from ecoc.errors import ConfigError, UsageError
from ecoc.evidence import LEDGER
from ecoc.files import CONFIG_NAME, EVIDENCE_FOLDER

# A squash merge ends its subject with (#123), and a merge commit's subject is "Merge pull request #123 ...".
log = logging.getLogger(__name__)

_PULL_REQUEST = re.compile(r"\(#([0-9]+)\)\s*$|^Merge pull request #([0-9]+)")
VIN_SYNTAX = re.compile(r"[A-HJ-NPR-Z0-9]{17}\Z")


@dataclass(frozen=True, slots=True)
class Change:
    """One value that a commit changed: its YAML path, and the value before and after (None when absent)."""

    file: str
    path: str
    before: str | None
    after: str | None


@dataclass
class Event:
    """One entry of a vehicle's timeline."""

    kind: str  # record, approval, rules, waivers, settings, signed, delivered, rejected, delivery-failed, correction
    date: str
    summary: str
    commit: str | None = None
    author: str | None = None
    pull_request: int | None = None
    files: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    # For a commit that a merge brought to the main line: the merge, who made it, and when.
    # `date` is then the merge's date, when the change took effect, and `authored` the author's.
    merge_commit: str | None = None
    merged_by: str | None = None
    authored: str | None = None
    # What the event's values are new for when the file existed before, as "version X of variant Y"
    # for a version added to an approval file.
    added_part: str | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    author: str
    date: str
    message: str
    files: tuple[tuple[str, str], ...]
    committer: str = ""
    committed: str = ""

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]

    @property
    def pull_request(self) -> int | None:
        return pull_request_of(self.subject)


def pull_request_of(subject: str) -> int | None:
    """Return the pull-request number a squash or merge subject carries, or None."""
    match = _PULL_REQUEST.search(subject)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


@dataclass(frozen=True, slots=True)
class Arrival:
    """The arrival of a commit on the main line: the merge that brought it, or the commit itself."""

    commit: str
    by: str
    date: str
    pull_request: int | None


def arrivals(root: Path) -> dict[str, Arrival]:
    """Map each commit HEAD reaches to the commit of its first-parent line that brought it in.

    The first-parent line of HEAD is walked from the oldest commit on. At each merge, the commits
    its other parents reach, and no earlier commit of the line reaches, came in with that merge.
    A commit of the line itself arrived as it was committed.
    """
    graph = gitinfo.commit_graph(root)
    parents = {sha: commit_parents for sha, commit_parents, *_ in graph}
    subjects = {sha: subject for sha, _, subject, *_ in graph}
    committers = {sha: (committer, committed) for sha, _, _, committer, committed in graph}
    line = []
    current = graph[0][0] if graph else None
    while current is not None:
        line.append(current)
        first = parents.get(current, ())
        current = first[0] if first else None
    reached: set[str] = set()
    found: dict[str, Arrival] = {}
    for sha in reversed(line):
        number = pull_request_of(subjects[sha])
        arrival = Arrival(sha, *committers[sha], number)
        found[sha] = arrival
        waiting = [parent for parent in parents[sha][1:] if parent not in reached]
        while waiting:
            commit = waiting.pop()
            if commit in reached:
                continue
            reached.add(commit)
            found[commit] = arrival
            waiting.extend(parent for parent in parents.get(commit, ()) if parent not in reached)
        reached.add(sha)
    return found


def parse_log(output: bytes) -> Iterator[Commit]:
    """Read `git log -z --name-status` in the format of `gitinfo.log_names`."""
    for chunk in output.split(b"\x1e")[1:]:
        parts = chunk.split(b"\x1f")
        if len(parts) < 8:
            continue
        fields = [part.decode("utf-8", "replace") for part in parts[:7]]
        sha, parents, author, date, committer, committed, message = fields
        names = b"\x1f".join(parts[7:]).strip(b"\0\n").split(b"\0")
        files = tuple(
            (names[i].decode("ascii", "replace"), names[i + 1].decode("utf-8", "surrogateescape"))
            for i in range(0, len(names) - 1, 2)
            if names[i]
        )
        yield Commit(sha, tuple(parents.split()), author, date, message.strip(), files, committer, committed)


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Flatten parsed YAML into YAML paths and the text of their values."""
    out: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.update(flatten(value, f"{prefix}[{index}]"))
    elif node is not None:
        out[prefix] = str(node)
    return out


def _plain(data: bytes | None) -> Any:
    """Parse YAML into plain values, every scalar as its text (as ecoc reads it); None when unreadable."""
    if data is None:
        return None
    from ecoc.yamlload import Mapping, Scalar, Sequence, Source, load_yaml

    node, _ = load_yaml(data, Source("history"))

    def plain(item: Any) -> Any:
        if isinstance(item, Mapping):
            return {key: plain(value) for key, value in item.items()}
        if isinstance(item, Sequence):
            return [plain(value) for value in item]
        if isinstance(item, Scalar):
            return item.text
        return None

    return plain(node)


def value_changes(contents: dict[tuple[str, str], bytes], commit: Commit, path: str, keep: Any = None) -> list[Change]:
    """Compare a file at a commit with its first parent, value by value."""
    after = contents.get((commit.sha, path))
    before = contents.get((commit.parents[0], path)) if commit.parents else None
    old, new = flatten(_plain(before)), flatten(_plain(after))
    changes = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key) and (keep is None or keep(key)):
            changes.append(Change(path, key, old.get(key), new.get(key)))
    return changes


def _record_files(root: Path, vin: str) -> set[str]:
    """Return the record files that hold the VIN now, or that its evidence was signed from."""
    files = set(gitinfo.grep_files(root, None, [f"vin: {vin}"], "records"))
    for manifest in (root / EVIDENCE_FOLDER / vin).rglob("manifest.json"):
        try:
            files.add(str(json.loads(manifest.read_bytes())["record"]))
        except (ValueError, KeyError, OSError):
            continue
    return files


def history(root: Path, vin: str) -> list[Event]:
    """Build the timeline of one vehicle, oldest first."""
    if not VIN_SYNTAX.match(vin):
        raise UsageError(
            f"{vin!r} is not a VIN",
            "give the 17 characters of the vehicle identification number in capitals (no I, O or Q)",
        )
    if gitinfo.head(root) is None:
        raise ConfigError(f"{root}: no commit yet, so there is no history to show", "commit the repository first")
    if gitinfo.is_shallow(root):
        raise ConfigError(
            f"{root} is a shallow clone, so its history is incomplete",
            "fetch the full history first: git fetch --unshallow (or fetch-depth: 0 in actions/checkout)",
        )
    records = _record_files(root, vin)
    if not records:
        raise UsageError(
            f"VIN {vin} not found: no record contains it, and signed/ has no evidence for it", "check the VIN"
        )
    approvals: dict[str, tuple[str | None, str | None]] = {}
    from ecoc.check import load_approvals
    from ecoc.files import list_yaml

    index = load_approvals(list_yaml(root, "approvals"))
    for record in records:
        data = _plain((root / record).read_bytes()) if (root / record).is_file() else None
        if isinstance(data, dict):
            for path in index.paths_of(data.get("approval")):
                approvals[path] = (data.get("variant"), data.get("version"))
    paths = sorted(records) + sorted(approvals) + ["rules", CONFIG_NAME, f"{EVIDENCE_FOLDER}/{vin}"]
    commits = list(parse_log(gitinfo.log_names(root, paths)))
    arrived = arrivals(root)
    # Every version of every file the timeline compares or searches, read in one git call.
    wanted = []
    for commit in commits:
        for _, name in commit.files:
            if name in records or name in approvals or name.startswith("rules/") or name == CONFIG_NAME:
                wanted.append((commit.sha, name))
                if commit.parents and not name.startswith("rules/"):
                    wanted.append((commit.parents[0], name))
    contents = gitinfo.read_many(root, wanted)
    events: list[Event] = []
    for commit in commits:
        touched = [name for _, name in commit.files]
        arrival = arrived.get(commit.sha)
        merge = arrival if arrival is not None and arrival.commit != commit.sha else None
        pull_request = commit.pull_request or (arrival.pull_request if arrival is not None else None)
        # A change takes effect when it reaches the main line: for a merged commit, at its merge.
        when = _utc(merge.date if merge is not None else commit.committed or commit.date)
        base: dict[str, Any] = {
            "commit": commit.sha,
            "author": commit.author,
            "pull_request": pull_request,
            "merge_commit": merge.commit if merge is not None else None,
            "merged_by": merge.by if merge is not None else None,
            "authored": _utc(commit.date),
        }
        for name in touched:
            if name in records:
                changes = value_changes(contents, commit, name)
                events.append(Event("record", when, commit.subject, files=[name], changes=changes, **base))
            elif name in approvals:
                variant, version = approvals[name]
                changes = value_changes(contents, commit, name, keep=_within(variant, version))
                existed = not any(status.startswith("A") for status, path in commit.files if path == name)
                part = f"version {version} of variant {variant}" if existed and _all_new(changes) else None
                if changes:
                    events.append(
                        Event("approval", when, commit.subject, files=[name], changes=changes, added_part=part, **base)
                    )
        if any(name == CONFIG_NAME and status.startswith("M") for status, name in commit.files):
            # Settings that decide readiness, and who may sign and which roots are trusted.
            changes = value_changes(contents, commit, CONFIG_NAME, keep=_settings_that_matter)
            if changes:
                events.append(Event("settings", when, commit.subject, files=[CONFIG_NAME], changes=changes, **base))
        rules = [name for name in touched if name.startswith("rules/")]
        waivers = [name for name in rules if name.rsplit("/", 1)[-1].startswith("waivers")]
        covering = sorted(
            {
                waiver
                for name in waivers
                for side in (commit.sha, *commit.parents[:1])
                for waiver in _waivers_for(vin, contents.get((side, name)))
            }
        )
        if covering:
            summary = f"{commit.subject} (waivers for this vehicle: {', '.join(covering)})"
            events.append(Event("waivers", when, summary, files=waivers, **base))
        if [name for name in rules if name not in waivers]:
            files = [name for name in rules if name not in waivers]
            events.append(Event("rules", when, commit.subject, files=files, **base))
    events.sort(key=lambda event: event.date)
    # The commit that added an evidence file is the one that published the event listing it.
    added_by = {name: commit for commit in commits for status, name in commit.files if status.startswith("A")}
    events += _evidence_events(root, vin, added_by)
    events.sort(key=lambda event: event.date)
    return events


def _utc(text: str | None) -> str:
    """Return an ISO 8601 time in UTC with a Z, so that times of any zone sort and read alike."""
    try:
        moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return str(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _shown(value: str | None) -> str:
    return "(none)" if value is None else value


def _within(variant: str | None, version: str | None) -> Any:
    """Keep the paths of an approval that concern one variant and version."""

    def keep(path: str) -> bool:
        steps = path.split(".")
        if steps[0] != "variants" or len(steps) < 2:
            return True
        if steps[1] != variant:
            return False
        return len(steps) < 4 or steps[2] != "versions" or steps[3] == version

    return keep


def _waivers_for(vin: str, data: bytes | None) -> list[str]:
    """Name the waivers of a waiver file that cover `vin`, by VIN or by pattern, as "id (rule)"."""
    document = _plain(data)
    entries = document.get("waivers") if isinstance(document, dict) else None
    found = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        patterns = entry.get("records") or []
        if any(isinstance(p, str) and fnmatch.fnmatchcase(vin, p) for p in patterns):
            found.append(f"{entry.get('id')} ({entry.get('rule')})")
    return found


def _settings_that_matter(path: str) -> bool:
    """Return whether a key of ecoc.yaml decides readiness or the seal: disabled rules, the schema, signing."""
    return path.startswith(("signing", "disable", "xsd", "rules"))


def _manifest(path: Path) -> dict[str, Any]:
    """Read a manifest for the timeline, or nothing when it is missing or damaged (ecoc audit reports why)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _evidence_events(root: Path, vin: str, added_by: dict[str, Commit]) -> list[Event]:
    events = []
    has_evidence = (root / EVIDENCE_FOLDER / vin).is_dir()
    try:
        lines = (root / LEDGER).read_bytes().splitlines()
    except FileNotFoundError:
        if has_evidence:
            log.warning("%s is missing, so the evidence of %s is left out; run ecoc audit", LEDGER, vin)
        return []
    unreadable = 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if not isinstance(event, dict) or event.get("vin") != vin:
            continue
        version = event.get("version")
        files = sorted(event.get("files") or {})
        published = next((added_by[name] for name in files if name in added_by), None)
        origin = {"commit": published.sha, "author": published.author} if published else {}
        # The release writes its trailers into every evidence commit; a commit without them did not
        # come from a release, and ecoc audit reports it.
        foreign = published is not None and "Written by ecoc" not in published.message
        warning = "; not written by an ecoc release (run ecoc audit)" if foreign else ""
        at = _utc(event.get("at"))
        if event.get("event") == "signed":
            kind = "signed" if version == 1 else "correction"
            summary = f"IviVersionNumber {version} signed as IviReferenceId {event.get('reference_id')}"
            manifest = root / str(event.get("folder")) / "manifest.json"
            details = _manifest(manifest)
            signer = (details.get("signer") or {}).get("subject")
            source = str(details.get("source_commit") or "")[:12]
            if signer or source:
                summary += f" by {signer or 'an unknown seal'} from commit {source or 'unknown'}"
            if kind == "correction":
                summary += f"; correction: {details.get('correction_reason')}"
            events.append(Event(kind, at, summary + warning, files=files, **origin))  # type: ignore[arg-type]
        elif event.get("event") == "delivery":
            status = event.get("status")
            kind = {"accepted": "delivered", "rejected": "rejected"}.get(str(status), "delivery-failed")
            message = ""
            outbox = False
            for name in files:
                if name.rsplit("/", 1)[-1].startswith("delivery-") and (root / name).is_file():
                    result = json.loads((root / name).read_bytes())
                    message = result.get("message", "")
                    outbox = result.get("transport") == "outbox"
                    # A killed run's result is logged by the next run; the result keeps the real time.
                    at = _utc(result.get("at") or at)
            if outbox and status == "accepted":
                # The outbox took the file, and only the system that uploads it receives the authority's reply.
                message = f"written to the outbox, not yet known to the authority: {message}"
            summary = f"IviVersionNumber {version}: {message}{warning}"
            events.append(Event(kind, at, summary, files=files, **origin))  # type: ignore[arg-type]
    if unreadable:
        log.warning("%d line(s) of %s are not JSON, so their events are left out; run ecoc audit", unreadable, LEDGER)
    elif has_evidence and not events:
        log.warning(
            "%s lists no event of %s, though %s/%s contains evidence; run ecoc audit", LEDGER, vin, EVIDENCE_FOLDER, vin
        )
    return events


# A file added with more values than this is shown as one line in text and Markdown.
LISTED_NEW_VALUES = 10


def _all_new(changes: list[Change]) -> bool:
    return bool(changes) and all(change.before is None for change in changes)


def _added_file(event: Event) -> bool:
    """Return whether the event adds a file or a part of one with many values, which text and Markdown summarize."""
    return len(event.changes) > LISTED_NEW_VALUES and _all_new(event.changes)


def _added_note(event: Event) -> str:
    """Describe an added file or approval version, as in "approvals/a.yaml: added with 40 values"."""
    files = ", ".join(event.files)
    what = f"{event.added_part} added" if event.added_part else "added"
    return f"{files}: {what} with {len(event.changes)} values"


def format_text(vin: str, events: list[Event]) -> str:
    lines = [f"history of {vin}: {len(events)} event(s)"]
    for event in events:
        who = f" by {event.author}" if event.author else ""
        commit = f" {event.commit[:12]}" if event.commit else ""
        lines.append(f"{event.date}  {event.kind:<16}{commit}{who}{_arrival_note(event)}: {event.summary}")
        if _added_file(event):
            lines.append(f"    {_added_note(event)} (--format json lists each)")
            continue
        for change in event.changes:
            lines.append(f"    {change.file}: {change.path}: {_shown(change.before)} -> {_shown(change.after)}")
    return "\n".join(lines) + "\n"


def _arrival_note(event: Event) -> str:
    """Name the pull request and the merge that brought a commit to the main line, with who merged it."""
    parts = [f"pull request #{event.pull_request}"] if event.pull_request else []
    if event.merge_commit:
        parts.append(f"merged by {event.merged_by} in {event.merge_commit[:12]}")
    return f" ({', '.join(parts)})" if parts else ""


def format_json(vin: str, events: list[Event]) -> str:
    return json.dumps({"vin": vin, "events": [asdict(event) for event in events]}, indent=2, ensure_ascii=False) + "\n"


def format_markdown(vin: str, events: list[Event]) -> str:
    from ecoc.formats import markdown_cell

    lines = [
        f"## History of {vin}",
        "",
        "| date | event | commit | author | pull request | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for event in events:
        what = markdown_cell(event.summary)
        if _added_file(event):
            what += "<br>" + markdown_cell(_added_note(event))
        elif event.changes:
            what += "<br>" + "<br>".join(
                markdown_cell(f"{c.path}: {_shown(c.before)} → {_shown(c.after)}") for c in event.changes
            )
        merged = f"<br>merged by {markdown_cell(event.merged_by or '')}" if event.merge_commit else ""
        lines.append(
            f"| {event.date} | {event.kind} | {(event.commit or '')[:12]} | {markdown_cell(event.author or '')} | "
            f"{'#' + str(event.pull_request) if event.pull_request else ''}{merged} | {what} |"
        )
    return "\n".join(lines) + "\n"
