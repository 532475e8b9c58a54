"""Write YAML that people review: key order kept, comments kept, values never retyped.

ruamel.yaml's round-trip mode keeps comments, quotes and key order of a file that ecoc edits
(an approval that an import extends). Its resolver is replaced by one that reads every plain
scalar as text, the same rule ecoc's loader follows, so that `01` stays `01` and a date stays
the text it was.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from ecoc.ivi.spec import ElementSpec
from ecoc.ivi.values import retyped_by_yaml
from ecoc.yamlload import Mapping, Node, Scalar, Sequence


class _TextResolver(VersionedResolver):
    """Resolve every plain scalar to a string; mappings and sequences as usual."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode:
            return self.DEFAULT_SCALAR_TAG
        return super().resolve(kind, value, implicit)


def new_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Resolver = _TextResolver
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def text_scalar(text: str, spec: ElementSpec | None) -> str:
    """Quote a text that other YAML tools would read as a number or a boolean, and a code
    they would read as a number (`Y` and `N` codes stay plain: every IVI reader expects them)."""
    kind = spec.simple.kind if spec is not None and spec.simple is not None else "text"
    retyped = retyped_by_yaml(text)
    if (kind in ("text", "pattern") and retyped is not None) or (kind == "code" and retyped == "number"):
        quoted: str = SingleQuotedScalarString(text)
        return quoted
    return text


def to_yaml_tree(node: Node, spec: ElementSpec) -> Any:
    """Turn a CoC tree into ruamel data, keys in schema order."""
    if isinstance(node, Scalar):
        if node.is_null:
            # Written as the plain word, which ecoc reads as null; None would get a !!null tag.
            return "null"
        return text_scalar(node.text, spec)
    if isinstance(node, Sequence):
        rows = CommentedSeq()
        for row in node:
            rows.append(_group(row, spec) if isinstance(row, Mapping) else None)
        return rows
    return _group(node, spec)


def _group(node: Mapping, spec: ElementSpec) -> CommentedMap:
    order = {child.name: index for index, child in enumerate(spec.children)}
    group = CommentedMap()
    for key in sorted(node, key=lambda k: order.get(k, len(order))):
        child = spec.by_name.get(key)
        group[key] = to_yaml_tree(node[key], child) if child is not None else to_plain_yaml(node[key])
    return group


def to_plain_yaml(node: Node) -> Any:
    if isinstance(node, Scalar):
        return "null" if node.is_null else text_scalar(node.text, None)
    if isinstance(node, Mapping):
        return CommentedMap((k, to_plain_yaml(v)) for k, v in node.items())
    return CommentedSeq(to_plain_yaml(item) for item in node)


def dump(data: Any) -> str:
    stream = io.StringIO()
    new_yaml().dump(data, stream)
    return stream.getvalue()
