"""Read YAML files into position-keeping nodes, with every scalar kept as its text.

The loader works on libyaml's event stream, so no YAML resolver ever types a value. `02142`,
`NO`, `1.10`, `1e3` and `2024-01-18` all stay exactly the text that was written, and the model
decides what they mean for the field they belong to. Everything YAML allows but a reviewed
data repository should not contain becomes a finding at its position instead of a silently
different value: duplicate keys, anchors, aliases, merge keys, explicit tags, tab indentation,
a second document, an empty file and bytes that are not UTF-8.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from ecoc.findings import Finding, Severity

try:
    from yaml import CSafeLoader as _EventLoader
except ImportError:  # pragma: no cover - PyYAML wheels ship libyaml on every supported platform
    from yaml import SafeLoader as _EventLoader  # type: ignore[assignment]

# Deeper nesting than any IVI structure needs (the deepest IVI path has 8 levels).
MAX_DEPTH = 48

_TAB_INDENT = re.compile(rb"^[ ]*\t", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Source:
    """A file as findings name it: its path relative to the repository root."""

    path: str


class Scalar:
    """A scalar value: its text exactly as written, where it was written, and its typed value."""

    __slots__ = ("column", "line", "plain", "source", "text", "value", "xml")

    def __init__(self, text: str, line: int, column: int, plain: bool, source: Source) -> None:
        self.text = text
        self.line = line
        self.column = column
        # Plain (unquoted) scalars are the ones other YAML tools would retype.
        self.plain = plain
        self.source = source
        # Set by the model once the element's type is known.
        self.value: object = None
        # The value as escaped XML text, kept by the renderer: approval values render for
        # every record of the approval.
        self.xml: str | None = None

    @property
    def is_null(self) -> bool:
        """Whether the scalar is YAML's null: `~`, `null` or nothing at all, unquoted."""
        return self.plain and self.text in ("", "~", "null", "Null", "NULL")

    def __repr__(self) -> str:
        return f"Scalar({self.text!r} at {self.source.path}:{self.line}:{self.column})"


class Mapping(dict[str, "Node"]):
    """A YAML mapping with string keys, remembering where it and each key start.

    Once typed, a mapping is never changed, because merging builds new mappings. So the
    renderer and the structure check keep their results for it in `rendered` and `complete`,
    and a version's data, which all records of the version share, is done once.
    """

    __slots__ = ("column", "complete", "key_positions", "line", "rendered", "source")

    def __init__(self, line: int, column: int, source: Source) -> None:
        super().__init__()
        self.line = line
        self.column = column
        self.source = source
        self.key_positions: dict[str, tuple[int, int]] = {}
        self.rendered: str | None = None
        self.complete = False

    def key_position(self, key: str) -> tuple[int, int]:
        return self.key_positions.get(key, (self.line, self.column))


class Sequence(list["Node"]):
    """A YAML sequence, remembering where it starts; `rendered` as for `Mapping`."""

    __slots__ = ("column", "line", "rendered", "source")

    def __init__(self, line: int, column: int, source: Source) -> None:
        super().__init__()
        self.line = line
        self.column = column
        self.source = source
        self.rendered: str | None = None


Node = Scalar | Mapping | Sequence


class _Reader:
    def __init__(self, data: bytes, source: Source) -> None:
        self.source = source
        self.findings: list[Finding] = []
        self.loader = _EventLoader(data)
        # libyaml's events carry no useful static types; they are read attribute by attribute.
        self.next_event: Callable[[], Any] = self.loader.get_event

    def finding(
        self, rule: str, message: str, line: int, column: int, hint: str, severity: Severity = Severity.ERROR
    ) -> None:
        self.findings.append(Finding(rule, severity, message, self.source.path, line, column, hint=hint))

    def read_node(self, event: Any, depth: int) -> Node | None:
        kind = type(event)
        mark = event.start_mark
        line, column = mark.line + 1, mark.column + 1
        if kind is AliasEvent:
            self.finding(
                "yaml.alias",
                f"alias *{event.anchor} is not allowed",
                line,
                column,
                "write the value out in full instead of referring to an anchor",
            )
            return None
        if event.anchor is not None:
            self.finding(
                "yaml.anchor",
                f"anchor &{event.anchor} is not allowed",
                line,
                column,
                "write the values out in full; ecoc does not expand anchors and aliases",
            )
        if event.tag is not None:
            self.finding(
                "yaml.tag",
                f"explicit tag {event.tag} is not allowed",
                line,
                column,
                "remove the tag; the model gives every value its type",
            )
        if kind is ScalarEvent:
            # libyaml reports plain scalars with the style '' and the pure parser with None.
            return Scalar(event.value, line, column, not event.style, self.source)
        if depth > MAX_DEPTH:
            raise _TooDeep(line, column)
        if kind is MappingStartEvent:
            return self.read_mapping(line, column, depth)
        if kind is SequenceStartEvent:
            return self.read_sequence(line, column, depth)
        raise AssertionError(f"unexpected YAML event {event!r}")

    def read_mapping(self, line: int, column: int, depth: int) -> Mapping:
        mapping = Mapping(line, column, self.source)
        positions = mapping.key_positions
        next_event = self.next_event
        source = self.source
        while True:
            event = next_event()
            if type(event) is MappingEndEvent:
                return mapping
            # Keys are nearly always plain scalars without anchor or tag: read those directly.
            if type(event) is ScalarEvent and event.anchor is None and event.tag is None:
                mark: Any = event.start_mark
                key: Node | None = Scalar(event.value, mark.line + 1, mark.column + 1, not event.style, source)
            else:
                key = self.read_node(event, depth + 1)
            event = next_event()
            value: Node | None
            if type(event) is ScalarEvent and event.anchor is None and event.tag is None:
                mark = event.start_mark
                value = Scalar(event.value, mark.line + 1, mark.column + 1, not event.style, source)
            else:
                value = self.read_node(event, depth + 1)
            if not isinstance(key, Scalar):
                if key is not None:
                    self.finding(
                        "yaml.complex-key",
                        "a mapping key must be a plain value",
                        key.line,
                        key.column,
                        "use a text key",
                    )
                continue
            text = key.text
            if text == "<<" and key.plain:
                self.finding(
                    "yaml.merge-key",
                    "merge key << is not allowed",
                    key.line,
                    key.column,
                    "write the merged keys out in full",
                )
                continue
            if text in positions:
                first_line = positions[text][0]
                self.finding(
                    "yaml.duplicate-key",
                    f"duplicate key {text!r}; it is first defined at line {first_line}",
                    key.line,
                    key.column,
                    "remove one of the two entries; YAML would otherwise keep only one",
                )
                continue
            positions[text] = (key.line, key.column)
            if value is None:
                continue
            if type(value) is not Scalar:
                # A finding about a group or a table points at the line of its key.
                value.line, value.column = key.line, key.column
            mapping[text] = value

    def read_sequence(self, line: int, column: int, depth: int) -> Sequence:
        sequence = Sequence(line, column, self.source)
        next_event = self.next_event
        while True:
            event = next_event()
            if type(event) is SequenceEndEvent:
                return sequence
            item = self.read_node(event, depth + 1)
            if item is not None:
                sequence.append(item)

    def read_stream(self) -> Node | None:
        self.next_event()  # StreamStartEvent
        event = self.next_event()
        if type(event) is StreamEndEvent:
            self.finding("yaml.empty", "the file is empty", 1, 1, "write the file's content, or delete the file")
            return None
        assert type(event) is DocumentStartEvent
        root = self.read_node(self.next_event(), 0)
        assert type(self.next_event()) is DocumentEndEvent
        event = self.next_event()
        if type(event) is DocumentStartEvent:
            mark: Any = event.start_mark
            self.finding(
                "yaml.multiple-documents",
                "the file holds more than one YAML document",
                mark.line + 1,
                mark.column + 1,
                "keep one document per file; split the rest into files of their own",
            )
        return root


class _TooDeep(Exception):
    def __init__(self, line: int, column: int) -> None:
        self.line = line
        self.column = column


def _offset_position(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, column


def _check_encoding(data: bytes, source: Source) -> Finding | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Finding(
            "yaml.encoding",
            Severity.ERROR,
            "the file is UTF-16, not UTF-8",
            source.path,
            1,
            1,
            hint="save the file as UTF-8",
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _offset_position(data, exc.start)
        return Finding(
            "yaml.encoding",
            Severity.ERROR,
            f"invalid UTF-8 byte 0x{data[exc.start]:02x}",
            source.path,
            line,
            column,
            hint="save the file as UTF-8 (it looks like another encoding, such as Latin-1)",
        )
    return None


_QUOTED_VALUE = re.compile(r"""^\s*(?:-\s+)?(?:[^'"#\s][^:#]*:\s+|-\s+)?(['"])(.*)$""")


def _unclosed_quote(data: bytes, before_line: int) -> int | None:
    """Return the last line before `before_line` whose quoted value is not closed on that line."""
    lines = data.decode("utf-8", "replace").splitlines()[: max(before_line - 1, 0)]
    found = None
    for number, text in enumerate(lines, start=1):
        match = _QUOTED_VALUE.match(text)
        if match is None:
            continue
        quote, rest = match.group(1), match.group(2).rstrip()
        closed = rest.replace(quote * 2, "") if quote == "'" else rest.replace('\\"', "")
        if quote not in closed:
            found = number
    return found


# The lines git writes around the two sides of a conflict it could not merge.
CONFLICT_MARKER = re.compile(rb"^(<{7}|={7}|>{7})(?: |\r?$)", re.MULTILINE)


def _syntax_finding(exc: yaml.YAMLError, data: bytes, source: Source) -> Finding:
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = _offset_position(data, exc.position)
        character = exc.character if isinstance(exc.character, str) else chr(exc.character)
        return Finding(
            "yaml.syntax",
            Severity.ERROR,
            f"control character U+{ord(character):04X} is not allowed in YAML",
            source.path,
            line,
            column,
            hint="remove the character; IVI texts hold printable characters only",
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line + 1 != line:
        # An unclosed quote or bracket is noticed far below: name the line where it opened, and
        # point there when the parser only noticed it at the end of the file.
        context += f" that starts at line {context_mark.line + 1}, column {context_mark.column + 1}"
        if "end of stream" in str(problem):
            line, column = context_mark.line + 1, context_mark.column + 1
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    hint = "fix the YAML syntax at this position; quote values that contain ': ' or start with a special character"
    opened = _unclosed_quote(data, line)
    if opened is not None:
        hint = f"line {opened} opens a quoted value that is not closed on that line; close the quote there"
    conflict = CONFLICT_MARKER.search(data)
    if conflict is not None:
        # git left the markers of a merge it could not finish; the YAML error is only their effect.
        line = data.count(b"\n", 0, conflict.start()) + 1
        message = f"unresolved merge conflict: git's conflict marker {conflict.group(1).decode()} at line {line}"
        hint = "resolve the conflict: keep the right lines, delete the markers, then git add the file"
        column = 1
    return Finding(
        "yaml.syntax",
        Severity.ERROR,
        message,
        source.path,
        line,
        column,
        hint=hint,
    )


def load_yaml(data: bytes, source: Source) -> tuple[Node | None, list[Finding]]:
    """Parse one YAML file. Returns the root node (None when unusable) and the findings."""
    encoding = _check_encoding(data, source)
    if encoding is not None:
        return None, [encoding]
    tabs = [
        Finding(
            "yaml.tab",
            Severity.ERROR,
            "tab character in the indentation",
            source.path,
            *_offset_position(data, match.end() - 1),
            hint="indent with spaces; YAML does not allow tabs for indentation",
        )
        for match in _TAB_INDENT.finditer(data)
    ]
    if tabs:
        return None, tabs
    reader = _Reader(data, source)
    try:
        root = reader.read_stream()
    except yaml.YAMLError as exc:
        return None, [*reader.findings, _syntax_finding(exc, data, source)]
    except _TooDeep as exc:
        reader.finding(
            "yaml.depth",
            f"the YAML nesting is deeper than {MAX_DEPTH} levels",
            exc.line,
            exc.column,
            "flatten the structure; no IVI element is nested this deep",
        )
        return None, reader.findings
    finally:
        reader.loader.dispose()
    return root, reader.findings
