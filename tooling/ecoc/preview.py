"""`ecoc preview`: what a change does to each certificate, as files a reviewer opens.

For every record that `ecoc check --base` selects, the preview folder gets, below `records/`:

- `<VIN>.xml`: the unsigned IVI 2.0 XML as ecoc renders it now;
- `<VIN>.diff`: a unified diff of that XML against the render of the record at the base;
- `<VIN>.html`: the certificate as a page, with CoC item numbers and labels, the values that
  changed marked with their value at the base, and the record's findings on top;

and `index.html` lists every previewed record with its readiness change and links to the three.
A record that ecoc cannot render gets no XML and no diff. Its page lists the blocking
findings that keep it from being rendered. A record that could not be rendered at the base gets
no diff either.
Both sides render with the same IviVersionDateTime, so the diff shows changes of data only.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from ecoc.changes import Comparison
from ecoc.findings import Finding
from ecoc.formats import CheckedRecord, RecordChange, Report, ValueChange, affecting, state_of
from ecoc.ivi.items import item, label, meaning, unit
from ecoc.ivi.xmlsafe import parse_xml_bytes
from ecoc.report import count_phrase

# File names for a record without a usable VIN: its file name, reduced to safe characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Node:
    """One element of a certificate as the page shows it."""

    name: str
    label: str
    item: str | None
    # A value: its text, and its text at the base when that differs (None: unchanged or new).
    # A value removed since the base has no text and keeps its text at the base in `before`.
    value: str | None = None
    changed: bool = False
    before: str | None = None
    # A group or a table: its children; a table's children are its rows.
    children: list[Node] = field(default_factory=list)
    kind: str = "value"
    # The value's unit and the meaning of its code, where ecoc has them.
    unit: str | None = None
    meaning: str | None = None
    before_meaning: str | None = None


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
    # Whether the record file exists now, and whether it existed in the checked base.
    present: bool = True
    at_base: bool = False
    nodes: list[Node] = field(default_factory=list)
    # The values the base had that are gone now.
    removed: list[Node] = field(default_factory=list)
    # The record file at the base, when the record was moved or renamed since.
    renamed_from: str | None = None
    # Whether the XML is the same as at the base, so that there is no diff to show.
    same_xml: bool = False

    @property
    def new(self) -> bool:
        """Whether the record has no render at the base, so that every value is new."""
        return self.rendered is not None and self.base_rendered is None

    @property
    def unrendered(self) -> bool:
        """Whether the record file exists but ecoc cannot render it, because of blocking findings."""
        return self.present and self.rendered is None

    @property
    def unrendered_at_base(self) -> bool:
        """Whether the record file existed at the base but ecoc could not render it there."""
        return self.at_base and self.base_rendered is None

    @property
    def has_diff(self) -> bool:
        """Whether the diff compares the record's renders: it does not when one side cannot be rendered."""
        return not self.unrendered and not self.unrendered_at_base

    @property
    def blocking(self) -> list[Finding]:
        """The findings that block the record, which include the reason when it cannot be rendered."""
        return [finding for finding in self.findings if finding.blocking]

    @property
    def changes(self) -> list[Node]:
        """The values that differ from the base, in certificate order."""
        return changed_nodes(self.nodes)

    @property
    def changed_values(self) -> int:
        """The number of values that differ from the base: changed, new or removed."""
        return len(self.changes) + len(self.removed)


def _local(element: etree._Element) -> str:
    return str(etree.QName(element).localname)


def _children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _content(element: etree._Element) -> tuple[object, ...]:
    """Return the names and texts of everything below an element, to compare rows by content."""
    children = _children(element)
    if not children:
        return (element.text or "",)
    return tuple((_local(child), _content(child)) for child in children)


def _leaf_texts(element: etree._Element, path: str = "") -> set[tuple[str, str]]:
    """Return the (names of the path below the element, text) of each value below it."""
    children = _children(element)
    if not children:
        return {(path, element.text or "")}
    texts: set[tuple[str, str]] = set()
    for child in children:
        texts |= _leaf_texts(child, f"{path}/{_local(child)}")
    return texts


def _pair_in_order(base: list[etree._Element], now: list[etree._Element]) -> list[tuple[int, int]]:
    """Pair every element of the shorter list with one of the longer, in order, sharing the most values.

    Returns (index in base, index in now) pairs. The elements of the longer list that get no
    partner were added or removed.
    """
    if len(base) == len(now):
        return [(index, index) for index in range(len(base))]
    shorter, longer = (base, now) if len(base) < len(now) else (now, base)
    shorter_texts = [_leaf_texts(element) for element in shorter]
    longer_texts = [_leaf_texts(element) for element in longer]
    # score[i][j]: the most values that the first i elements of `shorter` can share when paired
    # in order with i of the first j elements of `longer`.
    score = [[0] * (len(longer) + 1) for _ in range(len(shorter) + 1)]
    for i in range(1, len(shorter) + 1):
        score[i][i] = score[i - 1][i - 1] + len(shorter_texts[i - 1] & longer_texts[i - 1])
        for j in range(i + 1, len(longer) + 1):
            paired = score[i - 1][j - 1] + len(shorter_texts[i - 1] & longer_texts[j - 1])
            score[i][j] = max(paired, score[i][j - 1])
    pairs: list[tuple[int, int]] = []
    i, j = len(shorter), len(longer)
    while i > 0:
        if j > i and score[i][j] == score[i][j - 1]:
            j -= 1
            continue
        pairs.append((i - 1, j - 1))
        i, j = i - 1, j - 1
    pairs.reverse()
    return pairs if shorter is base else [(b, n) for n, b in pairs]


def _align(
    base: list[etree._Element], now: list[etree._Element]
) -> tuple[list[etree._Element | None], list[etree._Element]]:
    """Align the elements of one name at the base and now by their content.

    Returns the base element of each element now (None for an added one) and the base elements
    that are gone. Rows that are equal pair first, as lines do in a diff. Between them, rows pair
    in order by the values they share, so that a row whose value changed shows as changed.
    """
    matcher = difflib.SequenceMatcher(None, [_content(e) for e in base], [_content(e) for e in now], autojunk=False)
    partners: list[etree._Element | None] = [None] * len(now)
    gone: list[etree._Element] = []
    for _tag, base_start, base_end, now_start, now_end in matcher.get_opcodes():
        base_run, now_run = base[base_start:base_end], now[now_start:now_end]
        paired: set[int] = set()
        for base_index, now_index in _pair_in_order(base_run, now_run):
            partners[now_start + now_index] = base_run[base_index]
            paired.add(base_index)
        gone += [element for index, element in enumerate(base_run) if index not in paired]
    return partners, gone


def _removed_values(element: etree._Element) -> list[Node]:
    """List every value below a base element that is gone now."""
    children = _children(element)
    if not children:
        name = _local(element)
        return [Node(name, label(name), item(name), changed=True, before=element.text or "")]
    return [node for child in children for node in _removed_values(child)]


def _compare_children(
    now: list[etree._Element], base: list[etree._Element], known_base: bool, removed: list[Node]
) -> list[Node]:
    """Build nodes for the children of an element, each marked against its partner at the base."""
    partners: list[etree._Element | None] = [None] * len(now)
    for name in dict.fromkeys(_local(child) for child in [*now, *base]):
        positions = [index for index, child in enumerate(now) if _local(child) == name]
        matched, gone = _align([child for child in base if _local(child) == name], [now[i] for i in positions])
        for position, partner in zip(positions, matched, strict=True):
            partners[position] = partner
        for element in gone:
            removed += _removed_values(element)
    return [_compare(child, partner, known_base, removed) for child, partner in zip(now, partners, strict=True)]


def _compare(now: etree._Element, base: etree._Element | None, known_base: bool, removed: list[Node]) -> Node:
    name = _local(now)
    node = Node(name, label(name), item(name))
    children = _children(now)
    if base is not None and bool(_children(base)) != bool(children):
        # A value became a group, or the other way round: nothing of the base carries over.
        removed += _removed_values(base)
        base = None
    if not children:
        node.value = now.text or ""
        old = (base.text or "") if base is not None else None
        node.changed = known_base and old != node.value
        node.before = old if node.changed else None
        node.unit = unit(name)
        node.meaning = meaning(name, node.value)
        node.before_meaning = meaning(name, node.before) if node.before is not None else None
        return node
    node.kind = "table" if name.endswith("Table") else "group"
    base_children = _children(base) if base is not None else []
    node.children = _compare_children(children, base_children, known_base, removed)
    node.changed = any(child.changed for child in node.children)
    return node


_ISSUE_FIELDS = frozenset({"IviVersionNumber", "IviReferenceId", "IviVersionDateTime"})


def changed_nodes(nodes: Sequence[Node]) -> list[Node]:
    """Return the values among `nodes` and their children that differ from the base, in certificate order."""
    found: list[Node] = []

    def visit(node: Node) -> None:
        if node.kind == "value":
            if node.changed:
                found.append(node)
            return
        for child in node.children:
            visit(child)

    for node in nodes:
        visit(node)
    return found


def shown(value: str | None, unit: str | None, meaning: str | None) -> str | None:
    """Write a value as the pages show it, with what its code stands for and its unit."""
    if value is None:
        return None
    text = value
    if meaning:
        text += f" ({meaning})"
    if unit and value:
        text += f" {unit}"
    return text


def changed_values(rendered: bytes, base_rendered: bytes) -> list[tuple[str | None, str, str | None, str | None]]:
    """Return (item, label, value before, value after) of each value that differs from the base, in certificate order.

    The values read as the pages show them, and a removed value has None after it. The version,
    id and time of an issue are left out: they come from the release and the evidence, not from
    the data. A check renders them with a placeholder time, and corrections have findings of
    their own.
    """
    nodes, removed = page_nodes(rendered, base_rendered)
    found = [
        (
            node.item,
            node.label,
            shown(node.before, node.unit, node.before_meaning),
            shown(node.value, node.unit, node.meaning),
        )
        for node in changed_nodes(nodes)
        if node.name not in _ISSUE_FIELDS
    ]
    found += [
        (node.item, node.label, shown(node.before, node.unit, node.before_meaning), None)
        for node in removed
        if node.name not in _ISSUE_FIELDS
    ]
    return found


def value_changes(renders: Iterable[tuple[bytes, bytes]]) -> list[ValueChange]:
    """Count the values that differ between each pair of (render here, render at the base), over all pairs.

    The same change in several certificates, as from an edit of their approval, is one entry
    with the number of certificates it appears in.
    """
    counts: Counter[tuple[str | None, str, str | None, str | None]] = Counter()
    for rendered, base_rendered in renders:
        counts.update(set(changed_values(rendered, base_rendered)))
    return [ValueChange(item, label, before, after, count) for (item, label, before, after), count in counts.items()]


def _certificate_parts(rendered: bytes) -> list[etree._Element]:
    """Return the Header and CocDataGroup of a render: every part but the signature."""
    root = parse_xml_bytes(rendered, "the rendered certificate").getroot()
    return [child for child in _children(root) if _local(child) != "Signature"]


def page_nodes(rendered: bytes, base_rendered: bytes | None) -> tuple[list[Node], list[Node]]:
    """Build the Header and CocDataGroup of a render as nodes marked against the base, and list removed values.

    Repeated elements, such as the rows of a table, are matched with the base by content. So a
    row removed from the middle of a table is reported as that row, not as a shift of every
    row after it.
    """
    removed: list[Node] = []
    base = _certificate_parts(base_rendered) if base_rendered is not None else []
    nodes = _compare_children(_certificate_parts(rendered), base, base_rendered is not None, removed)
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
    renamed = _renames(here, there)
    moved = set(renamed.values())
    base_grouped: dict[str, list[Finding]] = {}
    if base is not None:
        base_records = [CheckedRecord(file, vin) for file, vin in base.checked]
        base_grouped, _ = affecting(Report(base.findings, {}, base_records))
    taken: set[str] = set()
    result = []
    for file in sorted((set(here) | set(there)) - moved):
        vin = here.get(file) or there.get(file)
        findings = [*grouped.get(file, ()), *blocking_everywhere]
        change = changes.get(file)
        after = state_of(findings) if file in here else "absent"
        before = change.before if change is not None else after
        added = len(change.added) if change else 0
        resolved = len(change.resolved) if change else 0
        old = renamed.get(file)
        if old is not None:
            # A moved record is one vehicle: compare it with its old file's render and findings.
            gone = changes.get(old)
            before = gone.before if gone is not None else after
            added, resolved = _finding_changes(grouped.get(file, []), base_grouped.get(old, []))
        page = Page(
            page_name(file, vin, taken),
            file,
            vin,
            before,
            after,
            list(findings),
            added,
            resolved,
            rendered.get(file),
            base_rendered.get(old or file),
            present=file in here,
            at_base=(old or file) in there,
            renamed_from=old,
        )
        if page.rendered is not None:
            page.nodes, page.removed = page_nodes(page.rendered, page.base_rendered)
        result.append(page)
    return result


def _renames(here: Mapping[str, str | None], there: Mapping[str, str | None]) -> dict[str, str]:
    """Pair each record file that is new here with the file that held its VIN at the base and is gone now."""
    gone: dict[str, list[str]] = {}
    for file, vin in there.items():
        if vin and file not in here:
            gone.setdefault(vin, []).append(file)
    pairs = {}
    for file, vin in sorted(here.items()):
        if vin and file not in there and len(gone.get(vin, ())) == 1:
            pairs[file] = gone.pop(vin)[0]
    return pairs


def _finding_changes(now: Sequence[Finding], before: Sequence[Finding]) -> tuple[int, int]:
    """Count the findings added and resolved between two files of one record, apart from the file name."""

    def key(finding: Finding) -> tuple[object, ...]:
        return (finding.rule, finding.severity, finding.message, finding.path, finding.waiver)

    counted_now = Counter(key(f) for f in now)
    counted_before = Counter(key(f) for f in before)
    return sum((counted_now - counted_before).values()), sum((counted_before - counted_now).values())


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
        # A record that cannot be rendered on one side gets no diff, because the diff would
        # show every line as added or deleted.
        if page.has_diff:
            diff = unified_diff(page.name, base, page.rendered, page.base_rendered)
            # An empty file behind a link is of no use, so the index notes that the XML is unchanged.
            page.same_xml = not diff
            if diff:
                files[folder / f"{page.name}.diff"] = diff
        if page.present:
            files[folder / f"{page.name}.html"] = render_page(root, "coc.html.j2", page=page, base=base)
    # Newly blocked records first, as reviewers look at them first; then in file order.
    ordered = sorted(previews, key=lambda page: not (page.after == "blocked" and page.before != "blocked"))
    files[out / "index.html"] = render_page(
        root, "preview-index.html.j2", pages=ordered, base=base, base_problem=base_problem, count_phrase=count_phrase
    )
    for path, data in files.items():
        write(path, data)
    return list(files)
