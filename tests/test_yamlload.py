from __future__ import annotations

import pytest

from ecoc.yamlload import Mapping, Scalar, Sequence, Source, load_yaml

SOURCE = Source("records/X.yaml")


def load(text: bytes):
    root, findings = load_yaml(text, SOURCE)
    return root, [(f.rule, f.line, f.column) for f in findings]


@pytest.mark.parametrize("text", ["02142", "NO", "1.10", "1e3", "2024-01-18", "0x1A", "yes", "12_345", "1:20"])
def test_plain_scalars_keep_their_text(text: str) -> None:
    root, findings = load(f"value: {text}\n".encode())
    assert findings == []
    assert isinstance(root, Mapping)
    assert root["value"].text == text


def test_scalars_keep_line_and_column() -> None:
    root, _ = load(b"a: 1\nb:\n  c:\n    - d: x\n")
    assert isinstance(root, Mapping)
    scalar = root["b"]["c"][0]["d"]
    assert (scalar.line, scalar.column) == (4, 10)
    assert root["b"].key_position("c") == (3, 3)


def test_quoted_and_plain_scalars_are_told_apart() -> None:
    root, _ = load(b"a: '1'\nb: 1\n")
    assert not root["a"].plain
    assert root["b"].plain


def test_duplicate_key() -> None:
    root, findings = load(b"a: 1\nb: 2\na: 3\n")
    assert findings == [("yaml.duplicate-key", 3, 1)]
    assert root["a"].text == "1"


def test_anchor_and_alias() -> None:
    _, findings = load(b"a: &first 1\nb: *first\n")
    assert findings == [("yaml.anchor", 1, 4), ("yaml.alias", 2, 4)]


def test_merge_key() -> None:
    _, findings = load(b"base: {k: 1}\nother:\n  <<: {k: 2}\n")
    assert ("yaml.merge-key", 3, 3) in findings


def test_explicit_tag() -> None:
    _, findings = load(b"a: !!int 5\nb: !custom x\nc: !!map {}\n")
    assert findings == [("yaml.tag", 1, 4), ("yaml.tag", 2, 4), ("yaml.tag", 3, 4)]


def test_tab_indentation() -> None:
    root, findings = load(b"a:\n  b: 1\n\tc: 2\n")
    assert root is None
    assert findings == [("yaml.tab", 3, 1)]


def test_tab_inside_value_is_not_indentation() -> None:
    _, findings = load(b'a: "x\\ty"\n')
    assert findings == []


def test_invalid_utf8() -> None:
    root, findings = load(b"a: ok\nb: caf\xe9\n")
    assert root is None
    assert findings == [("yaml.encoding", 2, 7)]


def test_utf16_file() -> None:
    _, findings = load("a: 1\n".encode("utf-16"))
    assert findings == [("yaml.encoding", 1, 1)]


@pytest.mark.parametrize("text", [b"", b"\n\n", b"# only a comment\n"])
def test_empty_file(text: bytes) -> None:
    root, findings = load(text)
    assert root is None
    assert findings == [("yaml.empty", 1, 1)]


def test_several_documents() -> None:
    root, findings = load(b"a: 1\n---\nb: 2\n")
    assert findings == [("yaml.multiple-documents", 2, 1)]
    assert list(root) == ["a"]


def test_raw_control_character() -> None:
    root, findings = load(b"a: x\x07y\n")
    assert root is None
    assert findings == [("yaml.syntax", 1, 5)]


def test_utf8_bom_is_accepted() -> None:
    root, findings = load(b"\xef\xbb\xbfa: 1\nb: 2\n")
    assert findings == []
    assert root["b"].line == 2


def test_crlf_line_ends_are_accepted() -> None:
    root, findings = load(b"a: 1\r\nb:\r\n  c: x\r\n")
    assert findings == []
    assert root["b"]["c"].text == "x"
    assert root["b"]["c"].line == 3


def test_syntax_error_has_position() -> None:
    root, findings = load(b"a:\n  b: 1\n c: 2\n")
    assert root is None
    assert findings[0][0] == "yaml.syntax"
    assert findings[0][1] == 3


def test_merge_conflict_markers_are_named_as_such() -> None:
    text = b"vin: X\nMassGroup:\n<<<<<<< HEAD\n  ActualMass: 1490\n=======\n  ActualMass: 1480\n>>>>>>> feat\n"
    _, findings = load_yaml(text, SOURCE)
    [finding] = findings
    assert (finding.rule, finding.line, finding.column) == ("yaml.syntax", 3, 1)
    assert finding.message == "unresolved merge conflict: git's conflict marker <<<<<<< at line 3"
    assert finding.hint is not None and finding.hint.startswith("resolve the conflict")


def test_deep_nesting() -> None:
    root, findings = load(b"a: " + b"[" * 100 + b"]" * 100 + b"\n")
    assert root is None
    assert findings[0][0] == "yaml.depth"


@pytest.mark.parametrize("text,null", [("~", True), ("null", True), ("", True), ("'null'", False), ("nothing", False)])
def test_null_is_only_an_unquoted_null(text: str, null: bool) -> None:
    root, _ = load(f"a: {text}\n".encode())
    assert root["a"].is_null is null


def test_sequences_and_mappings_have_positions() -> None:
    root, _ = load(b"rows:\n  - a: 1\n  - a: 2\n")
    rows = root["rows"]
    assert isinstance(rows, Sequence)
    assert isinstance(rows[1], Mapping)
    assert (rows[1].line, rows[1].column) == (3, 5)
    assert isinstance(rows[1]["a"], Scalar)
