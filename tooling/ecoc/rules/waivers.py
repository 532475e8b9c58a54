"""Waivers: documented, approved and time-limited exceptions to readiness rules.

```yaml
# rules/waivers.yaml
waivers:
  - id: W-2026-004
    rule: dimension.width-limit
    records: [XNHDR2A8XTE305120, "XNHDR2*"]    # VINs, or shell patterns over VINs
    reason: refrigerated body, 2600 mm allowed by Regulation (EU) 1230/2012 Annex I
    approved_by: "@halvard-motors/compliance-review"
    expires: 2027-06-30
```

A waived finding is still reported, marked with its waiver and counted apart, but it blocks
nothing. An expired waiver is an error naming it and waives nothing; a waiver that accepts no
finding is a warning; a waiver for a rule that may not be waived, or for an unknown rule, is
an error.
"""

from __future__ import annotations

import datetime
import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Annotated

import pydantic

from ecoc.config import OPTIONAL_RULES
from ecoc.files import WAIVER_FILES, list_yaml, read_file
from ecoc.findings import Finding, Severity
from ecoc.model.approval import Owner
from ecoc.model.nodes import require_mapping, validate_node
from ecoc.rules.catalogue import Catalogue
from ecoc.yamlload import Mapping, Sequence, Source, load_yaml

# Built-in rules that only inform may be waived; the others guard the schema, identities and
# references.
WAIVABLE_BUILTIN = OPTIONAL_RULES

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


def _date_text(value: object) -> object:
    if isinstance(value, str):
        if not _DATE.match(value):
            raise ValueError(f"{value!r} is not a date written YYYY-MM-DD")
        try:
            datetime.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a day of the calendar") from None
    return value


_VIN_PATTERN = re.compile(r"[A-Z0-9*?\[\]!-]+\Z")
# A reason shorter than this cannot say why a finding is accepted.
MIN_REASON = 10


# One position of a VIN pattern: a character class, or one character (a * stands for any number).
_PATTERN_PART = re.compile(r"\[!?[A-Z0-9-]+\]|[A-Z0-9?*]")


def _vin_pattern(value: str) -> str:
    if not _VIN_PATTERN.match(value):
        raise ValueError(
            f"{value!r} is not a VIN or VIN pattern: write capital letters and digits, with * and ? as wildcards"
        )
    parts = _PATTERN_PART.findall(value)
    if "".join(parts) != value:
        raise ValueError(f"{value!r} has a [ without its ] (or an empty [ ]), so it matches no VIN")
    positions = sum(1 for part in parts if part != "*")
    if positions > 17 or ("*" not in parts and positions != 17):
        raise ValueError(
            f"{value!r} stands for {positions} characters, but a VIN has 17: "
            "correct the VIN, or end a prefix with * as in XNHKH16*"
        )
    return value


def _some_records(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("the waiver names no records: list VINs or VIN patterns")
    return value


def _reason(value: str) -> str:
    if len(value.strip()) < MIN_REASON:
        raise ValueError(f"the reason {value!r} is too short: say in at least {MIN_REASON} characters why")
    return value


class WaiverSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    rule: Annotated[str, pydantic.StringConstraints(min_length=1)]
    records: Annotated[
        tuple[Annotated[str, pydantic.AfterValidator(_vin_pattern)], ...], pydantic.AfterValidator(_some_records)
    ]
    reason: Annotated[str, pydantic.AfterValidator(_reason)]
    approved_by: Owner
    expires: Annotated[str, pydantic.BeforeValidator(_date_text)]


WAIVER_KEYS = (
    "a waiver has the keys id, rule, records (VIN patterns such as XNHKH16*), reason, approved_by "
    "and expires (YYYY-MM-DD); see Waivers in the README"
)


@dataclass(eq=False)
class Waiver:
    spec: WaiverSpec
    file: str
    line: int
    column: int
    used: bool = False
    # Where the waiver names its rule, for findings about the rule.
    rule_line: int | None = None
    rule_column: int | None = None
    # The waiver's YAML path, as in waivers[2], and the (line, column) of each of its keys.
    path: str | None = None
    keys: dict[str, tuple[int, int]] = field(default_factory=dict)

    def at(self, key: str) -> tuple[int, int, str | None]:
        """Return the line, column and YAML path of one of the waiver's keys, or of the waiver."""
        line, column = self.keys.get(key, (self.line, self.column))
        return line, column, f"{self.path}.{key}" if self.path is not None else None

    def covers(self, vin: str) -> bool:
        return any(fnmatch.fnmatchcase(vin, pattern) for pattern in self.spec.records)


@dataclass(eq=False)
class WaiverSet:
    by_rule: dict[str, list[Waiver]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    # Ids of the waivers read so far, in every waiver file: each must be unique.
    ids: set[str] = field(default_factory=set)
    # Where each id was first given, as file:line.
    places: dict[str, str] = field(default_factory=dict)

    def apply(self, finding: Finding) -> list[Finding]:
        """Split a finding into the part a valid waiver accepts and the part it does not."""
        waivers = self.by_rule.get(finding.rule)
        if not waivers or not finding.records or finding.waiver is not None:
            return [finding]
        waived: dict[str, list[str]] = {}
        open_records: list[str] = []
        for vin in finding.records:
            waiver = next((w for w in waivers if w.covers(vin)), None)
            if waiver is None:
                open_records.append(vin)
            else:
                waiver.used = True
                waived.setdefault(waiver.spec.id, []).append(vin)
        parts = [replace(finding, records=tuple(vins), waiver=waiver_id) for waiver_id, vins in waived.items()]
        if open_records:
            parts.append(replace(finding, records=tuple(open_records)))
        return parts

    def unused(self, judged: Callable[[Waiver], bool] | None = None) -> list[Finding]:
        """Return a warning for each valid waiver that accepted no finding in this run.

        `judged` limits the warnings to the waivers it accepts, when the run saw only some records.
        """
        return [
            Finding(
                "waiver.unused",
                Severity.WARNING,
                f"waiver {w.spec.id} for rule {w.spec.rule} accepted no finding",
                w.file,
                w.line,
                w.column,
                w.path,
                "remove the waiver, or check that its rule and records are right",
            )
            for waivers in self.by_rule.values()
            for w in waivers
            if not w.used and (judged is None or judged(w))
        ]


def _problem(rule: str, message: str, waiver: Waiver, hint: str, key: str) -> Finding:
    return Finding(rule, Severity.ERROR, message, waiver.file, *waiver.at(key), hint)


def _closest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    return f"did you mean {close[0]}?" if close else ""


# A waiver this close to its expiry date gets a warning, as a seal does.
EXPIRY_WARNING_DAYS = 30


def _admit(waiver: Waiver, catalogue: Catalogue, builtin: frozenset[str], today: str) -> list[Finding]:
    """Return every reason a waiver cannot waive anything, or a warning that it expires soon.

    The reasons do not depend on each other, so that one round of edits fixes them all.
    """
    spec = waiver.spec
    rules = catalogue.by_id()
    problems = []
    if spec.rule not in rules and spec.rule not in builtin:
        problems.append(
            _problem(
                "waiver.unknown-rule",
                f"waiver {spec.id} names the unknown rule {spec.rule}",
                waiver,
                _closest(spec.rule, [*rules, *builtin]) or "use a rule id from ecoc rules list",
                "rule",
            )
        )
    elif not (rules[spec.rule].spec.waivable if spec.rule in rules else spec.rule in WAIVABLE_BUILTIN):
        problems.append(
            _problem(
                "waiver.not-waivable",
                f"waiver {spec.id}: rule {spec.rule} may not be waived",
                waiver,
                "fix the data instead; this rule guards something an authority never accepts"
                if not spec.rule.startswith(("waiver.", "rules.", "yaml.", "io."))
                else "fix the file the finding names; findings about waivers, rules and files cannot be waived",
                "rule",
            )
        )
    if spec.expires < today:
        problems.append(
            _problem(
                "waiver.expired",
                f"waiver {spec.id} for rule {spec.rule} expired on {spec.expires}",
                waiver,
                "fix the findings it covered, or renew the waiver with a new approval",
                "expires",
            )
        )
    elif not problems:
        left = (datetime.date.fromisoformat(spec.expires) - datetime.date.fromisoformat(today)).days
        if left <= EXPIRY_WARNING_DAYS:
            if left == 0:
                when = "today"
            elif left == 1:
                when = "in 1 day"
            else:
                when = f"in {left} days"
            problems.append(
                replace(
                    _problem(
                        "waiver.expiring",
                        f"waiver {spec.id} for rule {spec.rule} expires on {spec.expires}, {when}; after that "
                        "the findings it accepts block their records again, and so does the expired waiver",
                        waiver,
                        "fix the findings it accepts before then, or renew the waiver with a new approval",
                        "expires",
                    ),
                    severity=Severity.WARNING,
                )
            )
    return problems


def load_waivers(root: object, catalogue: Catalogue, builtin: frozenset[str], today: str) -> WaiverSet:
    """Read rules/waivers.yaml (if any) and check every waiver in it."""
    waivers = WaiverSet()
    for path, relative in list_yaml(root, "rules"):  # type: ignore[arg-type]
        if relative.rsplit("/", 1)[-1] not in WAIVER_FILES:
            continue
        data, problem = read_file(path, relative)
        if data is None:
            assert problem is not None
            waivers.findings.append(problem)
            continue
        _load_file(data, Source(relative), waivers, catalogue, builtin, today)
    return waivers


def _load_file(
    data: bytes, source: Source, waivers: WaiverSet, catalogue: Catalogue, builtin: frozenset[str], today: str
) -> None:
    node, findings = load_yaml(data, source)
    root, shape = require_mapping(node, "a waiver file", source.path)
    waivers.findings.extend(findings + shape)
    if root is None:
        return
    items = root.get("waivers")
    if not isinstance(items, Sequence):
        waivers.findings.append(
            Finding(
                "waiver.invalid",
                Severity.ERROR,
                "a waiver file needs a list under waivers",
                source.path,
                root.line,
                root.column,
                "waivers",
                "write waivers: with one - item per waiver",
            )
        )
        return
    seen = waivers.ids
    for index, item in enumerate(items):
        spec, invalid = validate_node(WaiverSpec, item, f"waivers[{index}]", WAIVER_KEYS)
        waivers.findings.extend(replace(f, rule="waiver.invalid") for f in invalid)
        if spec is None or not isinstance(item, Mapping):
            continue
        rule_node = item.get("rule", item)
        waiver = Waiver(
            spec,
            source.path,
            item.line,
            item.column,
            rule_line=rule_node.line,
            rule_column=rule_node.column,
            path=f"waivers[{index}]",
            keys={key: item.key_position(key) for key in item.key_positions},
        )
        duplicate = spec.id in seen
        if duplicate:
            first = waivers.places.get(spec.id)
            where = f", first at {first}" if first else ""
            waivers.findings.append(
                _problem(
                    "waiver.invalid",
                    f"waiver id {spec.id} is used twice{where}",
                    waiver,
                    "give every waiver its own id",
                    "id",
                )
            )
        else:
            seen.add(spec.id)
            id_line, _, _ = waiver.at("id")
            waivers.places[spec.id] = f"{source.path}:{id_line}"
        # The other problems of a waiver are reported too, so that one round fixes them all.
        problems = _admit(waiver, catalogue, builtin, today)
        waivers.findings.extend(problems)
        if duplicate or any(problem.blocking for problem in problems):
            continue
        waivers.by_rule.setdefault(spec.rule, []).append(waiver)
