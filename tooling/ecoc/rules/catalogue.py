"""Readiness rules: read `rules/*.yaml`, check each rule's fields and compile its CEL.

A rule names when it applies (selectors on the certificate, then an optional CEL condition
`when`), what must hold (the CEL expression `check`), the message shown when it does not (with
`{{ expression }}` placeholders for the offending values), and the YAML path the finding points
at. A rule file with a YAML error, an unknown field or an expression that does not compile is
reported with its file and line, and every other rule still runs.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pydantic

from ecoc.files import WAIVER_FILES, digest, list_yaml
from ecoc.findings import Finding, Severity
from ecoc.identifiers import parse_approval_number
from ecoc.model.nodes import require_mapping, validate_node
from ecoc.rules.builtin import BUILTIN_RULES
from ecoc.rules.celimport import cel
from ecoc.rules.lint import STRING_LITERAL, field_node, lint
from ecoc.yamlload import Mapping, Node, Sequence, Source, load_yaml

RULE_ID = r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$"
# `{{ expression }}` in a message: a CEL expression whose value is shown.
PLACEHOLDER = re.compile(r"\{\{\s*(.+?)\s*\}\}", re.DOTALL)
# The position and text of a CEL parser error, as in "ERROR: <input>:1:4: Syntax error: ...".
CEL_ERROR = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")
# Names of CocDataGroup elements an expression reads, as in `coc.MassGroup.ActualMass`.
COC_NAME = re.compile(r"\bcoc\s*\.\s*([A-Za-z][A-Za-z0-9]*)")
# Names after a dot, or quoted as in `coc["MassGroup"]`: the element names a rule can read.
FIELD_NAME = re.compile(r"\.\s*([A-Za-z][A-Za-z0-9]*)|[\"']([A-Za-z][A-Za-z0-9]*)[\"']")
# `record` facts that differ between records of one version; the others follow the version,
# the stage or, for the two below, the CocDataGroup element they come from.
RECORD_OWN_FACTS = frozenset({"vin"})
RECORD_FACT_ELEMENTS = {"category": "VehicleCategory", "energy_sources": "EnergyConvertorTable"}
RECORD_FACT = re.compile(r"\brecord\s*\.\s*([a-z_]+)")


def _strict_bool(value: object) -> object:
    """YAML text `true` and `false` only; `yes`, `on` or `1` are not booleans here."""
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not true or false")


StrictBool = Annotated[bool, pydantic.BeforeValidator(_strict_bool)]
Expression = Annotated[str, pydantic.StringConstraints(min_length=1)]


class Applies(pydantic.BaseModel):
    """Selectors: a rule applies to a certificate only if every given selector matches."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    # Vehicle categories as shell patterns: M1, N*, O[34].
    categories: tuple[str, ...] = ()
    # StageOfCompletion: C complete, I incomplete, V completed.
    stages: tuple[Literal["C", "I", "V"], ...] = ()
    # Approval frameworks: the act in the approval number, such as 2018/858 or 168/2013.
    frameworks: tuple[str, ...] = ()
    # EnergySource codes; the rule applies if the vehicle has any of them.
    energy_sources: tuple[str, ...] = ()
    # A regular expression the approval number must match.
    approval_number: str | None = None

    @pydantic.field_validator("approval_number")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class Examples(pydantic.BaseModel):
    """A certificate (partial) the rule accepts and one it rejects, as the tests run them."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    passing: dict[str, Any] = pydantic.Field(alias="pass")
    failing: dict[str, Any] = pydantic.Field(alias="fail")


# Names a `let` entry cannot take: the variables, namespaces and literals of CEL expressions.
RESERVED_NAMES = frozenset(
    {"coc", "header", "record", "today", "math", "lists", "sets", "strings", "base64", "true", "false", "null", "in"}
)


def _let_name(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in RESERVED_NAMES:
        raise ValueError(f"{name!r} cannot name a let value: use lower-case letters, digits and _, not a CEL variable")
    return name


class RuleSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    id: Annotated[
        str,
        pydantic.StringConstraints(pattern=RULE_ID),
        pydantic.Field(
            description="an id is a subject and a name in lower case, joined by a dot, "
            "as in mass.running-order-within-maximum"
        ),
    ]
    title: Annotated[str, pydantic.StringConstraints(min_length=1)]
    severity: Literal["error", "warning", "info"]
    waivable: StrictBool = True
    applies: Applies = Applies()
    # Named CEL expressions that `when`, `check` and the placeholders can use by name.
    let: dict[Annotated[str, pydantic.AfterValidator(_let_name)], Expression] = {}
    when: Expression | None = None
    check: Expression
    message: Annotated[str, pydantic.StringConstraints(min_length=1)]
    path: Annotated[
        str,
        pydantic.StringConstraints(pattern=r"^(CocDataGroup|Header|record)(\.|$)"),
        pydantic.Field(
            description="a path starts with CocDataGroup, Header or record, as in "
            "CocDataGroup.MassGroup.MassInRunningOrder or record.vin"
        ),
    ]
    # What to do about a finding; the title stands in when there is none.
    hint: str | None = None
    # Where the requirement comes from: a regulation, an EReg document, a physical law.
    source: str | None = None
    doc: str | None = None
    examples: Examples


@dataclass(eq=False)
class Rule:
    """A rule with its compiled expressions, ready to run."""

    spec: RuleSpec
    file: str
    line: int
    condition: Any  # cel.Program or None
    assertion: Any  # cel.Program
    message_parts: list[str | Any]  # text, and cel.Program for each placeholder
    # CocDataGroup elements the expressions read; None when they read `coc` as a whole.
    coc_names: frozenset[str] | None
    # Whether the expressions read something no other record shares: the VIN, or `record` whole.
    per_record: bool
    # Every name after a dot in the expressions: the elements the evaluation context must hold.
    field_names: frozenset[str] = frozenset()
    # Whether the expressions read the header.
    reads_header: bool = False
    # The path as text and a cel.Program for each placeholder, such as the index of a failing row.
    path_parts: list[str | Any] = field(default_factory=list)
    # Lines of `when`, `check` and the `pass` and `fail` examples in the rule file.
    key_lines: dict[str, int] = field(default_factory=dict)
    # The rule's YAML path in its file, as in rules[3], and the columns of the keys of key_lines.
    yaml_path: str = ""
    key_columns: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def subject(self) -> str:
        return self.spec.id.split(".", 1)[0]

    @property
    def severity(self) -> Severity:
        return Severity(self.spec.severity)


@dataclass(eq=False)
class Catalogue:
    rules: list[Rule] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # sha256 over every rule file, for the cache: results depend on the rules.
    digest: str = ""

    def by_id(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.rules}

    @functools.cached_property
    def field_names(self) -> frozenset[str]:
        """Every element name some rule reads; changes elsewhere concern no rule."""
        return frozenset(name for rule in self.rules for name in rule.field_names)


@functools.lru_cache(maxsize=4096)
def _compile(expression: str) -> Any:
    """Compile a CEL expression, or raise ValueError with the parser's message.

    Rules repeat placeholders and let values, and a program keeps no state between runs, so
    one program serves every rule that writes the same text.
    """
    return cel.compile(expression)


class UncompiledExpression(ValueError):
    """An expression of a rule read without validation that turned out not to compile."""


class _Deferred:
    """A CEL program compiled when it first runs."""

    __slots__ = ("program", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.program: Any = None

    def execute(self, context: Any) -> Any:
        # A `when` or `check` that does not compile becomes a finding at the rule. A placeholder
        # that does not compile leaves a gap in its message or path.
        if self.program is None:
            try:
                self.program = _compile(self.source)
            except ValueError as exc:
                raise UncompiledExpression(cel_error(exc)) from None
        return self.program.execute(context)


def _message_parts(message: str, validate: bool = True) -> list[str | Any]:
    parts: list[str | Any] = []
    position = 0
    for match in PLACEHOLDER.finditer(message):
        parts.append(message[position : match.start()])
        parts.append(_compile(match.group(1)) if validate else _Deferred(match.group(1)))
        position = match.end()
    parts.append(message[position:])
    return parts


def _coc_names(expressions: list[str]) -> frozenset[str] | None:
    names: set[str] = set()
    for expression in expressions:
        uses = len(re.findall(r"\bcoc\b", expression))
        found = COC_NAME.findall(expression)
        if uses > len(found):
            return None  # `coc` is used whole, or indexed with brackets
        names.update(found)
        names.update(RECORD_FACT_ELEMENTS[fact] for fact in _facts(expression) or () if fact in RECORD_FACT_ELEMENTS)
    return frozenset(names)


def _reads_record_own(expressions: list[str]) -> bool:
    """Whether an expression reads a record fact that differs between records of a version."""
    for expression in expressions:
        facts = _facts(expression)
        if facts is not None and len(re.findall(r"\brecord\b", expression)) > len(facts):
            return True  # `record` is used whole, or indexed with brackets
        if RECORD_OWN_FACTS.intersection(facts or ()):
            return True
    return False


def _facts(expression: str) -> list[str] | None:
    """Return the record facts the expression reads, as `vin` of `record.vin`, or None when it never names `record`."""
    return RECORD_FACT.findall(expression) if "record" in expression else None


def _rule_finding(source: Source, node: Node, message: str, hint: str, path: str) -> Finding:
    return Finding("rules.invalid", Severity.ERROR, message, source.path, node.line, node.column, path, hint)


def _substitute(expression: str, values: dict[str, str]) -> str:
    """Put each `let` value, in parentheses, where the expression uses its name outside strings."""
    if not values:
        return expression
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, values)) + r")\b(?!\s*\()")
    parts = []
    position = 0
    for literal in STRING_LITERAL.finditer(expression):
        code = expression[position : literal.start()]
        parts.append(pattern.sub(lambda match: f"({values[match.group(1)]})", code))
        parts.append(literal.group(0))
        position = literal.end()
    parts.append(pattern.sub(lambda match: f"({values[match.group(1)]})", expression[position:]))
    return "".join(parts)


def expanded(spec: RuleSpec) -> dict[str, str | None]:
    """The rule's when, check, message and path with its `let` values written out."""
    values: dict[str, str] = {}
    for name, expression in spec.let.items():
        values[name] = _substitute(expression, values)

    def placeholders(text: str) -> str:
        return PLACEHOLDER.sub(lambda match: "{{ " + _substitute(match.group(1), values) + " }}", text)

    return {
        "when": _substitute(spec.when, values) if spec.when is not None else None,
        "check": _substitute(spec.check, values),
        "message": placeholders(spec.message),
        "path": placeholders(spec.path),
    }


def cel_error(exc: Exception) -> str:
    """The parser's complaint about an expression, without its internal wording and token lists."""
    text = str(exc)
    if "Recursion limit" in text:
        return "the expression nests brackets or operators deeper than the CEL parser allows"
    match = CEL_ERROR.search(text)
    if match is None:
        return text.splitlines()[0] if text else type(exc).__name__
    reason = re.sub(r" expecting \{.*", "", match.group(3)).removeprefix("Syntax error: ").strip()
    return f"{reason} at character {match.group(2)}" + ("" if match.group(1) == "1" else f" of line {match.group(1)}")


def _raw_fields(spec: RuleSpec) -> list[tuple[str, str, str]]:
    """(key, YAML path below the rule, CEL text) for each expression as the rule file writes it."""
    fields = [(f"let value {name}", f"let.{name}", value) for name, value in spec.let.items()]
    if spec.when is not None:
        fields.append(("when expression", "when", spec.when))
    fields.append(("check expression", "check", spec.check))
    for key in ("message", "path"):
        for placeholder in PLACEHOLDER.findall(getattr(spec, key)):
            fields.append((f"{key} placeholder {{{{ {placeholder.strip()} }}}}", key, placeholder))
    return fields


def _compile_problem(
    spec: RuleSpec, source: Source, node: Mapping, path: str, compiled: dict[str, Any], exc: ValueError
) -> Finding:
    """Report an expression that does not compile, at the let value, field or placeholder that breaks it."""
    texts = expanded(spec)
    key = next((k for k in ("when", "check", "message", "path") if texts[k] is not None and k not in compiled), "check")
    for what, field_key, text in _raw_fields(spec):
        try:
            _compile(text)
        except ValueError as raw:
            return _rule_finding(
                source,
                field_node(node, field_key),
                f"rule {spec.id}: the {what} does not compile: {cel_error(raw)}",
                "fix the CEL syntax, and see docs/rules.md for the variables and functions",
                f"{path}.{field_key}",
            )
    return _rule_finding(
        source,
        node.get(key, node),
        f"rule {spec.id}: the {key} does not compile once its let values are put in: {cel_error(exc)}",
        "put parentheses around let values where they join other operators",
        f"{path}.{key}",
    )


def compile_rule(
    spec: RuleSpec, source: Source, node: Mapping, path: str, validate: bool = True
) -> tuple[Rule | None, list[Finding]]:
    """Compile the expressions of one rule; a failure is a finding at the expression's line.

    Without `validate`, each expression compiles when it first runs, a let value that nothing
    uses never does, and the names are not linted.
    """
    programs: dict[str, Any] = {}
    texts = expanded(spec)
    try:
        for value in spec.let.values() if validate else ():
            _compile(value)  # a let value that nothing uses is checked too
        for key in ("when", "check", "message", "path"):
            expression = texts[key]
            if expression is None:
                continue
            if key in ("message", "path"):
                programs[key] = _message_parts(expression, validate)
            else:
                programs[key] = _compile(expression) if validate else _Deferred(expression)
    except ValueError as exc:
        return None, [_compile_problem(spec, source, node, path, programs, exc)]
    if validate:
        fields = [(key, text) for _, key, text in _raw_fields(spec)]
        problems = lint(source, node, spec.id, path, fields, list(spec.let))
        if problems:
            return None, problems
    check = texts["check"] or ""
    message = texts["message"] or ""
    rule_path = texts["path"] or ""
    expressions = [
        check,
        *([texts["when"]] if texts["when"] else []),
        *PLACEHOLDER.findall(message),
        *PLACEHOLDER.findall(rule_path),
    ]
    # The finding points at `path`, so its element counts as read too.
    fixed_path = static_path(spec.path)
    path_element = fixed_path.split(".")[1].split("[")[0] if fixed_path.count(".") else ""
    coc_names = _coc_names(expressions)
    reads_header = any("header" in expression and re.search(r"\bheader\b", expression) for expression in expressions)
    if coc_names is not None and spec.path.startswith("CocDataGroup.") and path_element:
        coc_names = coc_names | {path_element}
    places = _key_nodes(node)
    rule = Rule(
        spec,
        source.path,
        node.line,
        programs.get("when"),
        programs["check"],
        programs["message"],
        coc_names,
        _reads_record_own(expressions),
        frozenset(
            name for expression in expressions for pair in FIELD_NAME.findall(expression) for name in pair if name
        ),
        reads_header,
        programs["path"],
        {key: found.line for key, found in places.items()},
        path,
        {key: found.column for key, found in places.items()},
    )
    return rule, []


def _key_nodes(node: Mapping) -> dict[str, Node]:
    """Return the nodes of the expressions and examples of a rule, for findings about them."""
    nodes = {key: node.get(key, node) for key in ("when", "check")}
    examples = node.get("examples")
    if isinstance(examples, Mapping):
        nodes.update({key: examples.get(key, examples) for key in ("pass", "fail")})
    return nodes


def static_path(path: str) -> str:
    """The part of a rule's path before its first placeholder, as in `CocDataGroup.AxleTable`."""
    match = PLACEHOLDER.search(path)
    return path if match is None else path[: match.start()].rstrip(".[")


def _load_file(data: bytes, source: Source, catalogue: Catalogue, known: dict[str, str], validate: bool = True) -> None:
    node, findings = load_yaml(data, source)
    catalogue.findings.extend(_as_rule_findings(findings))
    root, shape = require_mapping(node, "a rule file", source.path)
    catalogue.findings.extend(_as_rule_findings(shape))
    if root is None:
        return
    rules = root.get("rules")
    extra = [key for key in root if key != "rules"]
    for key in extra:
        line, column = root.key_position(key)
        catalogue.findings.append(
            Finding(
                "rules.invalid",
                Severity.ERROR,
                f"unknown key {key} in a rule file",
                source.path,
                line,
                column,
                key,
                "a rule file holds one key, rules, with a list of rules"
                + ("; waivers belong in a file named waivers.yaml" if key == "waivers" else ""),
            )
        )
    if not isinstance(rules, Sequence):
        target = rules if rules is not None else root
        catalogue.findings.append(
            _rule_finding(
                source, target, "a rule file needs a list under rules", "write rules: with one - item per rule", "rules"
            )
        )
        return
    for index, item in enumerate(rules):
        path = f"rules[{index}]"
        spec, invalid = validate_node(RuleSpec, item, path, "see the rule fields in docs/rules.md")
        catalogue.findings.extend(_as_rule_findings(invalid))
        if spec is None or not isinstance(item, Mapping):
            continue
        id_node = item.get("id", item)
        if spec.id in BUILTIN_RULES:
            catalogue.findings.append(
                _rule_finding(
                    source,
                    id_node,
                    f"rule id {spec.id} is the id of a check built into ecoc",
                    "choose another id; a rule cannot replace or weaken a built-in check",
                    f"{path}.id",
                )
            )
            continue
        if spec.id in known:
            first = known[spec.id]
            catalogue.findings.append(
                _rule_finding(
                    source,
                    id_node,
                    f"rule {spec.id} is also defined at {first}, so neither definition runs",
                    "give every rule its own id",
                    f"{path}.id",
                )
            )
            _drop_first_definition(catalogue, spec.id, first)
            continue
        known[spec.id] = f"{source.path}:{id_node.line}"
        rule, problems = compile_rule(spec, source, item, path, validate)
        catalogue.findings.extend(problems)
        if rule is not None:
            catalogue.rules.append(rule)


def _drop_first_definition(catalogue: Catalogue, rule_id: str, place: str) -> None:
    """Report the first definition of a duplicated id as well, and take it out of the run."""
    rule = next((rule for rule in catalogue.rules if rule.id == rule_id), None)
    if rule is None:
        return  # a later duplicate: the first definition is reported and dropped already
    catalogue.rules.remove(rule)
    file, line = place.rsplit(":", 1)
    catalogue.findings.append(
        Finding(
            "rules.invalid",
            Severity.ERROR,
            f"rule {rule_id} is defined again in another place, so neither definition runs",
            file,
            int(line),
            1,
            None,
            "give every rule its own id",
        )
    )


def _as_rule_findings(findings: list[Finding]) -> list[Finding]:
    """Report problems of rule files under `rules.` ids, apart from the YAML ones."""
    converted = []
    for finding in findings:
        rule = "rules.invalid" if finding.rule.startswith("model.") else finding.rule
        converted.append(
            Finding(
                rule,
                finding.severity,
                finding.message,
                finding.file,
                finding.line,
                finding.column,
                finding.path,
                finding.hint,
                finding.records,
            )
        )
    return converted


def load_catalogue(root: Any, folder: str = "rules", validate: bool = True) -> Catalogue:
    """Read and compile every rule file below `root/folder`.

    Without `validate`, expressions compile when they first run and names are not linted, as
    `compile_rule` explains. That suits rule files that a full check has already judged.
    """
    catalogue = Catalogue()
    known: dict[str, str] = {}
    digests = []
    for path, relative in list_yaml(root, folder):
        if relative.rsplit("/", 1)[-1] in WAIVER_FILES:
            continue
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            catalogue.findings.append(
                Finding("io.read", Severity.ERROR, f"cannot read the file: {exc.strerror}", relative, 1, 1)
            )
            continue
        digests.append(f"{relative}\0{digest(data)}")
        _load_file(data, Source(relative), catalogue, known, validate)
    catalogue.digest = digest("\n".join(digests).encode())
    return catalogue


def read_rules(files: dict[str, bytes]) -> Catalogue:
    """Read and compile the rules of the given rule files (path to content), as `load_catalogue` reads a folder."""
    catalogue = Catalogue()
    known: dict[str, str] = {}
    for relative, data in sorted(files.items()):
        _load_file(data, Source(relative), catalogue, known)
    return catalogue


def applies_to_approval(rule: Rule, number: str) -> bool:
    """Return whether `rule` may apply to records of the approval `number`, judged by its approval selectors alone."""
    selectors = rule.spec.applies
    if selectors.frameworks:
        parsed = parse_approval_number(number)
        if parsed is None or parsed.act not in selectors.frameworks:
            return False
    return not (selectors.approval_number and re.search(selectors.approval_number, number) is None)
