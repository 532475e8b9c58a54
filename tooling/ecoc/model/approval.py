"""Approval files: the type-approval reference and the CoC data of its variants and versions.

```yaml
CocDataGroup:            # shared by every vehicle of the approval
  TypeApprovalNumber: e4*2018/858*00412*01
  ...
variants:
  HT1H:                  # the key is the Variant
    CocDataGroup: {...}
    versions:
      HT1H-16SE:         # the key is the Version
        CocDataGroup: {...}
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated

import pydantic

from ecoc.findings import Finding, Severity
from ecoc.ivi import spec as ivi_spec
from ecoc.ivi.values import check_text
from ecoc.model.coc import Replacement, join_path, merge
from ecoc.model.layers import Layer, check_keys, type_layer
from ecoc.model.nodes import require_mapping, validate_node
from ecoc.yamlload import Mapping, Node, Scalar, Sequence, Source, load_yaml

_OWNER = re.compile(r"(@[A-Za-z0-9][A-Za-z0-9-]*(/[A-Za-z0-9._-]+)?|[^@\s]+@[^@\s]+\.[^@\s]+)\Z")


def _owner(value: str) -> str:
    if not _OWNER.match(value):
        raise ValueError(f"{value!r} is not a GitHub user (@name), team (@org/team) or e-mail address")
    return value


Owner = Annotated[str, pydantic.AfterValidator(_owner)]


class Owners(pydantic.BaseModel):
    """Who owns the data, reviews it and releases it: GitHub users or teams, or e-mail addresses."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    data: tuple[Owner, ...] = ()
    review: tuple[Owner, ...] = ()
    release: tuple[Owner, ...] = ()


@dataclass(eq=False)
class Version:
    name: str
    line: int
    column: int
    coc: Mapping | None = None
    header: Mapping | None = None
    valid: bool = True


@dataclass(eq=False)
class Variant:
    name: str
    line: int
    column: int
    coc: Mapping | None = None
    header: Mapping | None = None
    versions: dict[str, Version] = field(default_factory=dict)
    valid: bool = True


@dataclass(eq=False)
class Approval:
    source: Source
    digest: str
    number: Scalar | None = None
    coc: Mapping | None = None
    header: Mapping | None = None
    variants: dict[str, Variant] = field(default_factory=dict)
    owners: Owners | None = None
    findings: list[Finding] = field(default_factory=list)
    # Whether the approval's own Header and CocDataGroup hold only valid values.
    valid: bool = True
    _bases: dict[tuple[str, str], tuple[Node | None, Node | None, list[Replacement]]] = field(default_factory=dict)

    @property
    def number_text(self) -> str | None:
        return self.number.value if self.number is not None and isinstance(self.number.value, str) else None

    def base(self, variant: Variant, version: Version) -> tuple[Node | None, Node | None, list[Replacement]]:
        """The merged header and CoC trees of one version, shared by all its records, and the
        tables that the variant or the version replaced instead of updating."""
        key = (variant.name, version.name)
        cached = self._bases.get(key)
        if cached is None:
            replaced: list[Replacement] = []
            header = merge(merge(self.header, variant.header, replaced), version.header, replaced)
            coc = merge(merge(self.coc, variant.coc, replaced), version.coc, replaced)
            cached = self._bases[key] = (header, coc, replaced)
        return cached


_APPROVAL_KEYS = ["Header", "CocDataGroup", "variants", "owners"]
_VARIANT_KEYS = ["Header", "CocDataGroup", "versions"]
_VERSION_KEYS = ["Header", "CocDataGroup"]


def _named_children(
    container: Mapping, key: str, path: str, what: str, findings: list[Finding]
) -> list[tuple[str, Mapping, int, int]]:
    node = container.get(key)
    if node is None:
        return []
    if not isinstance(node, Mapping):
        findings.append(
            Finding(
                "model.shape",
                Severity.ERROR,
                f"{key} must be a mapping from each {what} to its data",
                node.source.path,
                node.line,
                node.column,
                join_path(path, key),
                f"write each {what} as a key under {key}",
            )
        )
        return []
    children = []
    for name, child in node.items():
        line, column = node.key_position(name)
        child_path = join_path(join_path(path, key), name)
        if isinstance(child, Scalar) and child.is_null:
            child = Mapping(line, column, node.source)
        if not isinstance(child, Mapping):
            findings.append(
                Finding(
                    "model.shape",
                    Severity.ERROR,
                    f"{what} {name} must be a mapping of keys",
                    child.source.path,
                    child.line,
                    child.column,
                    child_path,
                    f"write the {what}'s CocDataGroup under its key",
                )
            )
            continue
        children.append((name, child, line, column))
    return children


def _check_name(
    name: str, element: str, source: Source, line: int, column: int, path: str, findings: list[Finding]
) -> None:
    """Check a variant or version key, which becomes the value of the IVI element `element`."""
    simple = ivi_spec.elements_by_name()[element].simple
    assert simple is not None
    problem = check_text(name, simple)
    if problem is not None:
        findings.append(
            Finding(
                problem.rule,
                Severity.ERROR,
                f"{element} {name!r}: {problem.message}",
                source.path,
                line,
                column,
                path,
                problem.hint,
            )
        )


def parse_approval(data: bytes, source: Source, digest: str) -> Approval:
    """Read one approval file. Problems are collected in `Approval.findings`."""
    approval = Approval(source, digest)
    findings = approval.findings
    node, load_findings = load_yaml(data, source)
    findings.extend(load_findings)
    root, shape_findings = require_mapping(node, "an approval file", source.path)
    findings.extend(shape_findings)
    if root is None:
        return approval
    check_keys(root, _APPROVAL_KEYS, "an approval file", "", findings)
    approval.header, approval.coc, approval.valid = type_layer(root, Layer.APPROVAL, "", findings)
    if approval.coc is None:
        findings.append(
            Finding(
                "model.required",
                Severity.ERROR,
                "the approval has no CocDataGroup",
                source.path,
                root.line,
                root.column,
                "CocDataGroup",
                "add CocDataGroup with at least TypeApprovalNumber, TypeApprovalIssueDate and Type",
            )
        )
    else:
        number = approval.coc.get("TypeApprovalNumber")
        if isinstance(number, Scalar):
            approval.number = number
        else:
            findings.append(
                Finding(
                    "model.required",
                    Severity.ERROR,
                    "the approval has no TypeApprovalNumber",
                    source.path,
                    approval.coc.line,
                    approval.coc.column,
                    "CocDataGroup",
                    "add the approval number, for example TypeApprovalNumber: e4*2018/858*00412*01",
                )
            )
    if "owners" in root:
        approval.owners, owner_findings = validate_node(Owners, root["owners"], "owners")
        findings.extend(owner_findings)
        review = root["owners"].get("review") if isinstance(root["owners"], Mapping) else None
        if isinstance(review, Sequence) and not review:
            findings.append(
                Finding(
                    "model.invalid",
                    Severity.ERROR,
                    "owners.review is empty, so no one would have to review this approval's changes",
                    source.path,
                    review.line,
                    review.column,
                    "owners.review",
                    "name at least one reviewer, or leave out owners.review to use the review owners of ecoc.yaml",
                )
            )

    for name, variant_node, line, column in _named_children(root, "variants", "", "variant", findings):
        path = join_path("variants", name)
        check_keys(variant_node, _VARIANT_KEYS, f"variant {name}", path, findings)
        header, coc, valid = type_layer(variant_node, Layer.VARIANT, path, findings)
        _check_name(name, "Variant", source, line, column, path, findings)
        variant = Variant(name, line, column, coc, header, valid=valid)
        approval.variants[name] = variant
        for version_name, version_node, v_line, v_column in _named_children(
            variant_node, "versions", path, "version", findings
        ):
            version_path = join_path(join_path(path, "versions"), version_name)
            check_keys(version_node, _VERSION_KEYS, f"version {version_name}", version_path, findings)
            v_header, v_coc, v_valid = type_layer(version_node, Layer.VERSION, version_path, findings)
            _check_name(version_name, "Version", source, v_line, v_column, version_path, findings)
            variant.versions[version_name] = Version(version_name, v_line, v_column, v_coc, v_header, v_valid)
    if not approval.variants:
        findings.append(
            Finding(
                "model.required",
                Severity.ERROR,
                "the approval has no variants",
                source.path,
                root.line,
                root.column,
                "variants",
                "add variants, each with its versions",
            )
        )
    return approval
