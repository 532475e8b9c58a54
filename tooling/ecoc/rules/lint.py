"""Check the names and selectors of a rule against IVI 2.0 when the catalogue is loaded.

CEL treats a missing element as missing data, so a misspelt element name would make a rule
that never applies and never fails. The names after a dot in the expressions, the steps of the
path and the selector values are therefore compared with the IVI 2.0 element names, the record
facts and the code lists, and each unknown one is a `rules.invalid` finding.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import re
from collections.abc import Iterable

from ecoc.findings import Finding, Severity
from ecoc.ivi.spec import elements_by_name
from ecoc.yamlload import Mapping, Node, Source

# The facts of `record`, as the evaluation context builds them.
RECORD_FACTS = (
    "vin",
    "approval",
    "variant",
    "version",
    "category",
    "stage",
    "stage_number",
    "framework",
    "authority",
    "energy_sources",
)
# Acts of the approval frameworks that issue certificates of conformity.
FRAMEWORKS = ("2018/858", "2007/46", "168/2013", "167/2013", "2002/24", "2003/37", "70/156")
# Function namespaces of the CEL extension libraries, as in `math.greatest`.
NAMESPACES = frozenset({"math", "lists", "sets", "strings", "base64"})

# CEL string literals, which can hold dots that are not member access.
STRING_LITERAL = re.compile(r"""(?:[rR][bB]?|[bB][rR]?)?(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
# `owner.name`, with `name(` for a method call.
_MEMBER = re.compile(r"(?:\b([A-Za-z_][A-Za-z0-9_]*)\s*)?\.\s*([A-Za-z_][A-Za-z0-9_]*)(\s*\()?")
# Identifiers written as strings, such as the keys of a map the expression builds itself.
_QUOTED_NAME = re.compile(r"""['"]([A-Za-z_][A-Za-z0-9_]*)['"]\s*:""")
# `owner["Name"]`: a member read through an index with a literal name.
_INDEXED = re.compile(r"""(?<=[\w)\]])\[\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]\s*\]""")
_PLACEHOLDER = re.compile(r"\{\{\s*(.+?)\s*\}\}", re.DOTALL)
_PATH_STEP = re.compile(r"([^.\[\]{}]+)|\[[^\]]*\]")


@functools.lru_cache(maxsize=4096)
def _code(expression: str) -> str:
    """Return the expression with each string literal emptied, so that text in quotes names nothing.

    Rules repeat the same placeholders and expressions, so each text is scanned once.
    """
    if '"' not in expression and "'" not in expression:
        return expression
    return STRING_LITERAL.sub('""', expression)


@functools.lru_cache(maxsize=4096)
def _members(expression: str) -> tuple[tuple[str, str, str], ...]:
    """Return (owner, name, call) for each `owner.name` of the expression, and ("", name, "") for `owner["name"]`."""
    indexed = [("", name, "") for name in _INDEXED.findall(expression)]
    return (*_MEMBER.findall(_code(expression)), *indexed)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.7)
    return f"did you mean {close[0]}?" if close else ""


def unknown_names(expression: str, keys: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Return each name the expression reads that is no element or fact, with a suggestion.

    Names the expression (or the rule, in `keys`) uses as keys of the maps it builds count as
    known. A name read through an index, as in `coc["MassGroup"]`, is checked like one after a dot.
    """
    elements = elements_by_name()
    own_keys = set(_QUOTED_NAME.findall(expression)) | set(keys)
    problems: list[tuple[str, str]] = []
    for owner, name, call in _members(expression):
        if call or owner in NAMESPACES or name in own_keys:
            continue
        if owner == "record":
            if name not in RECORD_FACTS:
                problems.append(
                    (f"record.{name}", _suggest(name, RECORD_FACTS) or "record has " + ", ".join(RECORD_FACTS))
                )
        elif name not in elements:
            problems.append((name, _suggest(name, elements)))
    return list(dict.fromkeys(problems))


def unknown_path_steps(path: str) -> list[tuple[str, str]]:
    """Return each step of a rule's path (outside placeholders) that names no element or fact."""
    fixed = _PLACEHOLDER.sub("", path)
    steps = [step for step in _PATH_STEP.findall(fixed) if step]
    if not steps or steps[0] == "record":
        facts = steps[1:2]
        return [(f"record.{fact}", _suggest(fact, RECORD_FACTS)) for fact in facts if fact not in RECORD_FACTS]
    elements = elements_by_name()
    return [(step, _suggest(step, elements)) for step in steps[1:] if step not in elements]


def _codes(name: str) -> tuple[str, ...]:
    spec = elements_by_name()[name]
    return spec.simple.enumeration if spec.simple is not None else ()


def selector_problems(applies: Mapping | None) -> list[tuple[str, Node | None, str, str]]:
    """Return (key, node, message, hint) for selector values that can never match."""
    if not isinstance(applies, Mapping):
        return []
    problems: list[tuple[str, Node | None, str, str]] = []
    sources = _codes("EnergySource")
    for key in ("categories", "energy_sources", "frameworks"):
        values = applies.get(key)
        for item in values if isinstance(values, list) else ():
            text = getattr(item, "text", None)
            if not isinstance(text, str):
                continue
            if key == "categories" and _matches_a_category(text):
                continue
            if (key == "energy_sources" and text in sources) or (key == "frameworks" and text in FRAMEWORKS):
                continue
            if key == "categories":
                hint = "use VehicleCategory codes or shell patterns of them, such as M1, N* or O[34]"
            elif key == "energy_sources":
                hint = _suggest(text, sources) or "use EnergySource codes: " + ", ".join(sources)
            else:
                hint = "use one of " + ", ".join(FRAMEWORKS)
            problems.append((key, item, f"{key} value {text} matches no {_WHAT[key]}", hint))
    return problems


@functools.lru_cache(maxsize=256)
def _matches_a_category(pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(code, pattern) for code in _codes("VehicleCategory"))


_WHAT = {"categories": "vehicle category", "energy_sources": "EnergySource code", "frameworks": "approval framework"}


# Names an expression may start with besides its let values and the variables its macros bind.
ROOT_NAMES = frozenset(
    {"coc", "header", "record", "today", "true", "false", "null", "in", "dyn", "has", "cel"}
    | {"bool", "int", "uint", "double", "string", "bytes", "list", "map", "type", "null_type"}
    | NAMESPACES
)
# The variable a macro binds, as the x of `rows.all(x, ...)` or `rows.map(x, ...)`.
_BOUND = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter|bind|transformList|transformMap)\s*\("
    r"\s*([A-Za-z_]\w*)\s*,(?:\s*([A-Za-z_]\w*)\s*,)?"
)
_ROOT = re.compile(r"(?<![\w.])([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")


def unknown_roots(expression: str, known: Iterable[str]) -> list[str]:
    """Names the expression reads as variables that nothing defines."""
    code = _code(expression)
    bound = {name for pair in _BOUND.findall(code) for name in pair if name}
    allowed = ROOT_NAMES | bound | set(known)
    return list(dict.fromkeys(name for name in _ROOT.findall(code) if name not in allowed))


def field_node(node: Mapping, key: str) -> Node:
    """Return the node of a rule at a dotted key such as `let.group`, or the deepest one found."""
    target: Node = node
    for step in key.split("."):
        following = target.get(step) if isinstance(target, Mapping) else None
        if following is None:
            break
        target = following
    return target


def lint(
    source: Source, node: Mapping, rule_id: str, path: str, fields: list[tuple[str, str]], lets: list[str]
) -> list[Finding]:
    """Return a finding for each unknown name or impossible selector value of one rule.

    `fields` holds (key, CEL text) of the let values, `when`, `check` and each placeholder of
    `message` and `path`, as the rule file writes them; `lets` the let names in their order.
    """
    findings: list[Finding] = []

    reported: set[tuple[str, str]] = set()

    def report(key: str, message: str, hint: str) -> None:
        if (key, message) in reported:
            return
        reported.add((key, message))
        target = field_node(node, key)
        findings.append(
            Finding(
                "rules.invalid", Severity.ERROR, message, source.path, target.line, target.column, f"{path}.{key}", hint
            )
        )

    where = {"when": "the when expression", "check": "the check", "message": "the message", "path": "the path"}
    path_text = node.get("path")
    for name, hint in unknown_path_steps(getattr(path_text, "text", "") or ""):
        report(
            "path",
            f"rule {rule_id}: the path names {name}, which is no IVI 2.0 element or record fact",
            hint
            or "a path names IVI 2.0 elements from CocDataGroup or Header, or one of the facts record."
            + ", record.".join(RECORD_FACTS),
        )
    keys = {name for _, text in fields for name in _QUOTED_NAME.findall(text)}
    for key, text in fields:
        what = where.get(key, f"the let value {key.removeprefix('let.')}")
        for name, hint in unknown_names(text, keys):
            report(
                key,
                f"rule {rule_id}: {what} names {name}, which is no IVI 2.0 element or record fact",
                hint or "spell element names as the IVI 2.0 XSD does, and see docs/rules.md for the variables",
            )
        own = key.removeprefix("let.")
        earlier = lets[: lets.index(own)] if key.startswith("let.") and own in lets else lets
        for name in unknown_roots(text, earlier):
            if name in lets:
                message = f"rule {rule_id}: {what} uses the let value {name}, which is defined after it"
                hint = f"define {name} before {own}; a let value can use only the ones above it"
                if name == own:
                    message = f"rule {rule_id}: the let value {own} uses itself"
                    hint = "a let value cannot refer to itself; write the expression out"
            else:
                message = f"rule {rule_id}: {what} uses {name}, which is no variable"
                close = difflib.get_close_matches(name, [*ROOT_NAMES, *lets], n=1, cutoff=0.6)
                suggestion = f"did you mean {close[0]}?" if close else ""
                hint = (
                    "expressions read coc, header, record, today, the rule's let values and the "
                    "variables their macros bind, as x in rows.all(x, ...)"
                )
                if suggestion:
                    hint = f"{suggestion} ({hint})"
            report(key, message, hint)
    applies = node.get("applies")
    for key, item, message, hint in selector_problems(applies if isinstance(applies, Mapping) else None):
        target = item if item is not None else node
        findings.append(
            Finding(
                "rules.invalid",
                Severity.ERROR,
                f"rule {rule_id}: {message}",
                source.path,
                target.line,
                target.column,
                f"{path}.applies.{key}",
                hint,
            )
        )
    return findings
