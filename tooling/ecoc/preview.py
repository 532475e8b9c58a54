"""`ecoc preview`: what a change does to each certificate, as files a reviewer opens.

For every record that `ecoc check --base` selects, the preview folder gets, below `records/`:

- `<VIN>.xml`: the unsigned IVI 2.0 XML as ecoc renders it now;
- `<VIN>.diff`: a unified diff of that XML against the render of the record at the base;
- `<VIN>.html`: the certificate as a page, with CoC item numbers and labels, the values that
  changed marked with their value at the base, and the record's findings on top;

and `index.html` lists every previewed record with its readiness change and links to the three.
Both sides render with the same IviVersionDateTime, so the diff shows changes of data only.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from ecoc.changes import Comparison
from ecoc.findings import Finding
from ecoc.formats import CheckedRecord, RecordChange, Report, affecting, state_of
from ecoc.ivi.items import item, label
from ecoc.ivi.xmlsafe import parse_xml_bytes

# File names for a record without a usable VIN: its file name, reduced to safe characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Node:
    """One element of a certificate as the page shows it."""

    name: str
    label: str
    item: str | None
    # A value: its text, and its text at the base when that differs (None: unchanged or new).
    value: str | None = None
    changed: bool = False
    before: str | None = None
    # A group or a table: its children; a table's children are its rows.
    children: list[Node] = field(default_factory=list)
    kind: str = "value"


@dataclass
class Page:
    """One previewed record."""

    name: str
    file: str
    vin: str | None
    before: str
    after: str
    findings: list[Finding]
    added: int
    resolved: int
    rendered: bytes | None
    base_rendered: bytes | None
    nodes: list[Node] = field(default_factory=list)
    # Values the base had that are gone now, as (path, label, value).
    removed: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def new(self) -> bool:
        """Whether the record has no render at the base, so that every value is new."""
        return self.rendered is not None and self.base_rendered is None

    @property
    def changes(self) -> list[Node]:
        """The values that differ from the base, in certificate order."""
        found: list[Node] = []

        def visit(node: Node) -> None:
            if node.kind == "value":
                if node.changed:
                    found.append(node)
                return
            for child in node.children:
                visit(child)

        for node in self.nodes:
            visit(node)
        return found

    @property
    def changed_values(self) -> int:
        """The number of values that differ from the base: changed, new or removed."""
        return len(self.changes) + len(self.removed)


def _local(element: etree._Element) -> str:
    return str(etree.QName(element).localname)


def _leaves(element: etree._Element, path: str, into: dict[str, str]) -> None:
    children = [child for child in element if isinstance(child.tag, str)]
    if not children:
        into[path] = element.text or ""
        return
    counts: dict[str, int] = {}
    for child in children:
        name = _local(child)
        counts[name] = counts.get(name, 0) + 1
        _leaves(child, f"{path}/{name}[{counts[name]}]", into)


def leaf_values(rendered: bytes | None) -> dict[str, str]:
    """Map every value of a rendered certificate by its path, as in /CocDataGroup[1]/MaximumSpeed[1]."""
    values: dict[str, str] = {}
    if rendered is not None:
        root = parse_xml_bytes(rendered, "the rendered certificate").getroot()
        for child in root:
            if isinstance(child.tag, str):
                _leaves(child, f"/{_local(child)}[1]", values)
    return values


def _nodes(element: etree._Element, path: str, base: Mapping[str, str], known_base: bool) -> Node:
    name = _local(element)
    node = Node(name, label(name), item(name))
    children = [child for child in element if isinstance(child.tag, str)]
    if not children:
        node.value = element.text or ""
        old = base.get(path)
        node.changed = known_base and old != node.value
        node.before = old if node.changed else None
        return node
    node.kind = "table" if name.endswith("Table") else "group"
    counts: dict[str, int] = {}
    for child in children:
        child_name = _local(child)
        counts[child_name] = counts.get(child_name, 0) + 1
        node.children.append(_nodes(child, f"{path}/{child_name}[{counts[child_name]}]", base, known_base))
    node.changed = any(child.changed for child in node.children)
    return node


def page_nodes(rendered: bytes, base_rendered: bytes | None) -> tuple[list[Node], list[tuple[str, str, str]]]:
    """Build the Header and CocDataGroup of a render as nodes marked against the base, and list removed values."""
    base = leaf_values(base_rendered)
    now = leaf_values(rendered)
    root = parse_xml_bytes(rendered, "the rendered certificate").getroot()
    nodes = [
        _nodes(child, f"/{_local(child)}[1]", base, base_rendered is not None)
        for child in root
        if isinstance(child.tag, str) and _local(child) != "Signature"
    ]
    removed = [
        (path, label(path.rsplit("/", 1)[-1].split("[")[0]), value) for path, value in base.items() if path not in now
    ]
    return nodes, removed


def unified_diff(name: str, base: str, rendered: bytes | None, base_rendered: bytes | None) -> str:
    before = base_rendered.decode("utf-8").splitlines(keepends=True) if base_rendered is not None else []
    after = rendered.decode("utf-8").splitlines(keepends=True) if rendered is not None else []
    lines = difflib.unified_diff(before, after, f"{name}.xml at {base}", f"{name}.xml")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def page_name(file: str, vin: str | None, taken: set[str]) -> str:
    """Choose a file name for the record's pages: its VIN, or its file name when that is not usable."""
    name = vin if vin and re.fullmatch(r"[A-Z0-9]{1,40}", vin) else _UNSAFE.sub("_", Path(file).stem)
    unique, number = name, 2
    while unique in taken:
        unique, number = f"{name}-{number}", number + 1
    taken.add(unique)
    return unique


def pages(comparison: Comparison, rendered: Mapping[str, bytes], base_rendered: Mapping[str, bytes]) -> list[Page]:
    """Build a page for every record checked here or at the base, in file order."""
    head, base = comparison.head, comparison.base
    report = Report(head.findings, {}, [CheckedRecord(file, vin) for file, vin in head.checked])
    grouped, general = affecting(report)
    blocking_everywhere = [f for f in general if f.blocking]
    changes: dict[str, RecordChange] = {change.file: change for change in comparison.changes}
    here = dict(head.checked)
    there = dict(base.checked) if base is not None else {}
    taken: set[str] = set()
    result = []
    for file in sorted(set(here) | set(there)):
        vin = here.get(file) or there.get(file)
        findings = [*grouped.get(file, ()), *blocking_everywhere]
        change = changes.get(file)
        after = state_of(findings) if file in here else "absent"
        before = change.before if change is not None else after
        page = Page(
            page_name(file, vin, taken),
            file,
            vin,
            before,
            after,
            list(findings),
            len(change.added) if change else 0,
            len(change.resolved) if change else 0,
            rendered.get(file),
            base_rendered.get(file),
        )
        if page.rendered is not None:
            page.nodes, page.removed = page_nodes(page.rendered, page.base_rendered)
        result.append(page)
    return result


def write_preview(
    out: Path,
    root: Path,
    base: str,
    previews: Sequence[Page],
    write: Callable[[Path, bytes | str], None],
    base_problem: str | None,
) -> list[Path]:
    """Write the files of every page and the index; `write(path, data)` writes one file.

    Every page is rendered before the first file is written, so a template error leaves no
    half-written preview behind.
    """
    from ecoc.templating import render_page

    files: dict[Path, bytes | str] = {}
    folder = out / "records"
    for page in previews:
        if page.rendered is not None:
            files[folder / f"{page.name}.xml"] = page.rendered
        files[folder / f"{page.name}.diff"] = unified_diff(page.name, base, page.rendered, page.base_rendered)
        if page.rendered is not None:
            files[folder / f"{page.name}.html"] = render_page(root, "coc.html.j2", page=page, base=base)
    files[out / "index.html"] = render_page(
        root, "preview-index.html.j2", pages=previews, base=base, base_problem=base_problem
    )
    for path, data in files.items():
        write(path, data)
    return list(files)
