"""`ecoc import ivi`: turn IVI 2.0 messages into approval and record YAML.

Values that identify the approval (number, dates, type, manufacturer, makes, signer) go to the
approval file, and the technical data of the version to the version. Values that differ per
vehicle (VIN, dates, colour, actual mass, fitted tyres, individual WLTP values, country of
registration) go to the record. A vehicle of a version that already exists only gets a record:
whatever it has that differs from the version's data is written into the record, so the
effective CoC of every imported record equals the message it came from. The import checks
that before it writes anything, and writes nothing when any message in the batch is unusable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from ecoc import yamlwrite
from ecoc.config import Repository
from ecoc.errors import EcocError, InputError
from ecoc.fileio import write_atomically
from ecoc.files import digest, list_yaml
from ecoc.findings import Finding, Severity
from ecoc.identifiers import approval_file_name
from ecoc.ivi import header as ivi_header
from ecoc.ivi import spec as ivi_spec
from ecoc.ivi.reader import Message, read_message
from ecoc.ivi.render import content_digest
from ecoc.ivi.xmlsafe import XmlRejected
from ecoc.model.approval import Approval, parse_approval
from ecoc.model.coc import difference, merge, same_value
from ecoc.model.effective import DEFAULT_VERSION_NUMBER, build_effective
from ecoc.model.layers import DERIVED
from ecoc.model.record import ISSUED_DIGEST, ISSUED_KEYS, parse_record
from ecoc.schemas import modeline
from ecoc.yamlload import Mapping, Node, Scalar, Sequence, Source

# Elements shared by every vehicle of an approval.
APPROVAL_LEVEL = (
    "TypeApprovalType",
    "ProvisionalTypeApprovalIndicator",
    "StageOfCompletion",
    "Type",
    "VehicleCategory",
    "TypeApprovalNumber",
    "TypeApprovalIssueDate",
    "SigningAuthorityTable",
    "MakeTable",
    "ManufacturerTable",
    "EURepresentativeGroup",
)

# Paths of values that differ from vehicle to vehicle; "*" stands for every row of a table.
VEHICLE_LEVEL: tuple[tuple[str, ...], ...] = (
    ("ProductionYearSmallSeries",),
    ("ProductionSequentialNumberSmallSeries",),
    ("DateManufactureVehicle",),
    ("SigningAuthorityTable", "*", "SignatureDate"),
    ("MassGroup", "ActualMass"),
    ("ColourTable",),
    ("WltpEmissionTestParametersGroup",),
    ("AxleTable", "*", "TyreAxleTable"),
    ("EnergyConvertorTable", "*", "EnergySourceTable", "*", "TestWltpCo2Group"),
    ("EnergyConvertorTable", "*", "EnergySourceTable", "*", "TestWltpFuelConsumptionGroup"),
    ("EnergyConvertorTable", "*", "EnergySourceTable", "*", "TestWltpEnergyConsumptionGroup"),
    ("EnergyConvertorTable", "*", "EnergySourceTable", "*", "TestWltpElectricRangeGroup"),
)


def without(node: Node, path: tuple[str, ...]) -> Node:
    """Copy of `node` without the values at `path`; the input is not changed."""
    if not path:
        return node
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(node, Sequence):
        rows = Sequence(node.line, node.column, node.source)
        rows.extend(without(row, rest) for row in node)
        return rows
    if isinstance(node, Mapping) and head in node:
        copy = Mapping(node.line, node.column, node.source)
        copy.key_positions = node.key_positions
        copy.update(node)
        if rest:
            copy[head] = without(node[head], rest)
        else:
            del copy[head]
        return copy
    return node


def split_approval_and_version(coc: Mapping) -> tuple[Mapping, Mapping]:
    """Split a message's CoC into the approval's part and the version's part (no vehicle values)."""
    shared: Node = coc
    for path in VEHICLE_LEVEL:
        shared = without(shared, path)
    assert isinstance(shared, Mapping)
    approval = Mapping(coc.line, coc.column, coc.source)
    version = Mapping(coc.line, coc.column, coc.source)
    for key, value in shared.items():
        if key in DERIVED:
            continue
        (approval if key in APPROVAL_LEVEL else version)[key] = value
    return approval, version


@dataclass(eq=False)
class _ApprovalFile:
    path: Path
    relative: str
    text: str
    created: bool
    approval: Approval | None = None

    def parsed(self) -> Approval:
        if self.approval is None:
            data = self.text.encode("utf-8")
            self.approval = parse_approval(data, Source(self.relative), digest(data))
        return self.approval


@dataclass
class ImportResult:
    records: list[str] = field(default_factory=list)
    approvals_created: list[str] = field(default_factory=list)
    approvals_extended: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


class Importer:
    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.approval_files: dict[str, _ApprovalFile] = {}
        self.records: dict[str, tuple[Path, str]] = {}
        # IviReferenceIds of the messages of this import, with the message that has each.
        self.references: dict[str, str] = {}
        # The existing record files with their bytes, read when an IviReferenceId is first looked up.
        self._existing: list[tuple[str, bytes]] | None = None
        self.result = ImportResult()
        self._index_existing()

    def _index_existing(self) -> None:
        for path, relative in list_yaml(self.repository.root, "approvals"):
            try:
                text = Path(path).read_bytes().decode("utf-8-sig")
            except (OSError, UnicodeDecodeError):
                continue  # not an approval ecoc can extend; `ecoc check` reports why
            entry = _ApprovalFile(Path(path), relative, text, created=False)
            number = entry.parsed().number_text
            if number is not None:
                self.approval_files.setdefault(number, entry)

    def _record_with(self, reference: str) -> str | None:
        """Return the existing record file that keeps `reference` as its issued IviReferenceId, or None."""
        if self._existing is None:
            # The record files are read once per import, not once per message.
            self._existing = []
            for path, relative in list_yaml(self.repository.root, "records"):
                try:
                    self._existing.append((relative, Path(path).read_bytes()))
                except OSError:
                    continue  # ecoc check reports a record it cannot read
        needle = reference.encode()
        return next((relative for relative, data in self._existing if needle in data), None)

    def fail(self, source: Source, message: str, hint: str, line: int = 1) -> None:
        self.result.findings.append(
            Finding("import.conflict", Severity.ERROR, message, source.path, line, 1, hint=hint)
        )

    def _read(self, path: Path, label: str) -> Message | None:
        """Read one message; return None when it has problems, which become findings."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{label}: cannot read the file: {exc.strerror}") from None
        try:
            message = read_message(data, Source(label))
        except XmlRejected as exc:
            self.result.findings.append(
                Finding("import.rejected", Severity.ERROR, exc.reason, label, exc.line, exc.column, hint=exc.hint)
            )
            return None
        if message.findings:
            self.result.findings += message.findings
            return None
        return message

    def add(self, path: Path, label: str) -> None:
        """Plan the import of one message, named `label` in findings; problems become findings."""
        message = self._read(path, label)
        if message is None:
            return

        vin = message.text("VehicleIdentificationNumber")
        number = message.text("TypeApprovalNumber")
        assert vin is not None and number is not None
        record_path = self.repository.records_dir / f"{vin}.yaml"
        if vin in self.records:
            self.fail(
                message.source,
                f"VIN {vin} appears twice in this import",
                "import each vehicle's message once",
            )
            return
        if record_path.exists():
            self.fail(
                message.source,
                f"a record for VIN {vin} already exists ({self.repository.relative(record_path)})",
                "delete or rename that record first if this message should replace it",
            )
            return
        reference = message.header.get("IviReferenceId")
        if isinstance(reference, Scalar) and reference.text:
            # An IviReferenceId names one certificate version; two vehicles cannot share it.
            holder = self.references.get(reference.text) or self._record_with(reference.text)
            if holder is not None:
                self.fail(
                    message.source,
                    f"IviReferenceId {reference.text} is also the id of {holder}",
                    "each certificate version has an IviReferenceId of its own; import only the messages "
                    "the authority received, each once",
                    reference.line,
                )
                return
            self.references[reference.text] = message.source.path

        entry = self.approval_files.get(number)
        if entry is None:
            approval_path = self.repository.approvals_dir / approval_file_name(number)
            if approval_path.exists():
                self.fail(
                    message.source,
                    f"{self.repository.relative(approval_path)} exists but cannot be read as approval {number}",
                    "run ecoc check, fix that file, and import again",
                )
                return
            entry = self._new_approval(message, number, approval_path)
        elif not self._extend_approval(entry, message):
            return
        self._add_record(entry, message, vin, number, record_path)

    def _header_parts(self, message: Message, number: str) -> tuple[Mapping | None, Mapping]:
        """The approval's header (only a country that differs from the e-code) and the record's."""
        approval_header = Mapping(1, 1, message.source)
        record_header = Mapping(1, 1, message.source)
        for key, value in message.header.items():
            if key == "DesignatedTypeApprovalCountry":
                if value.value != ivi_header.approval_country(number):  # type: ignore[union-attr]
                    approval_header[key] = value
            elif key == "IntendedCountryRegistration" or (
                key == "IviVersionNumber" and isinstance(value, Scalar) and value.value != DEFAULT_VERSION_NUMBER
            ):
                record_header[key] = value
        return (approval_header or None), record_header

    def _new_approval(self, message: Message, number: str, path: Path) -> _ApprovalFile:
        approval_coc, version_coc = split_approval_and_version(message.coc)
        approval_header, _ = self._header_parts(message, number)
        document = CommentedMap()
        if approval_header:
            document["Header"] = yamlwrite.to_yaml_tree(approval_header, ivi_spec.header())
        document["CocDataGroup"] = yamlwrite.to_yaml_tree(approval_coc, ivi_spec.coc_data_group())
        version_entry = CommentedMap()
        if version_coc:
            version_entry["CocDataGroup"] = yamlwrite.to_yaml_tree(version_coc, ivi_spec.coc_data_group())
        variant_entry = CommentedMap(versions=CommentedMap({message.text("Version"): version_entry}))
        document["variants"] = CommentedMap({message.text("Variant"): variant_entry})
        text = modeline("approval", path, self.repository.root) + yamlwrite.dump(document)
        entry = _ApprovalFile(path, self.repository.relative(path), text, created=True)
        self.approval_files[number] = entry
        self.result.approvals_created.append(entry.relative)
        return entry

    def _conflicts(self, entry: _ApprovalFile, message: Message) -> bool:
        """Report whether the message contradicts the approval file it belongs to."""
        approval = entry.parsed()
        if approval.coc is None or any(f.severity.blocking for f in approval.findings):
            self.fail(
                message.source,
                f"approval {approval.number_text} in {entry.relative} has errors",
                "run ecoc check, fix the approval file, and import again",
            )
            return True
        for key in ("TypeApprovalIssueDate", "TypeApprovalType", "Type"):
            existing = approval.coc.get(key)
            imported = message.coc.get(key)
            if isinstance(existing, Scalar) and isinstance(imported, Scalar) and existing.value != imported.value:
                self.fail(
                    message.source,
                    f"{key} is {imported.text}, "
                    f"but approval {approval.number_text} in {entry.relative} has {existing.text}",
                    "correct the message or the approval file, because both describe the same approval",
                    imported.line,
                )
                return True
        return False

    def _extend_approval(self, entry: _ApprovalFile, message: Message) -> bool:
        """Add the message's version to its approval file unless it is there; False on a conflict."""
        if self._conflicts(entry, message):
            return False
        approval = entry.parsed()
        variant_name = message.text("Variant")
        version_name = message.text("Version")
        assert variant_name is not None and version_name is not None
        variant = approval.variants.get(variant_name)
        if variant is not None and version_name in variant.versions:
            return True

        # The new version holds whatever differs from the approval (and the variant, if known).
        approval_coc, version_coc = split_approval_and_version(message.coc)
        target = merge(approval_coc, version_coc)
        base = merge(approval.coc, variant.coc) if variant is not None else approval.coc
        layer = difference(base, target, message.source) if target is not None else None

        # Edit the file's current text, which earlier messages of this batch may have extended.
        document = yamlwrite.new_yaml().load(entry.text)
        variants = document.setdefault("variants", CommentedMap())
        variant_entry = variants.get(variant_name)
        if variant_entry is None:
            variant_entry = variants[variant_name] = CommentedMap()
        versions = variant_entry.setdefault("versions", CommentedMap())
        version_entry = versions[version_name] = CommentedMap()
        if isinstance(layer, Mapping) and layer:
            version_entry["CocDataGroup"] = yamlwrite.to_yaml_tree(layer, ivi_spec.coc_data_group())
        entry.text = yamlwrite.dump(document)
        entry.approval = None
        if not entry.created and entry.relative not in self.result.approvals_extended:
            self.result.approvals_extended.append(entry.relative)
        return True

    def _add_record(self, entry: _ApprovalFile, message: Message, vin: str, number: str, record_path: Path) -> None:
        approval = entry.parsed()
        variant = approval.variants[message.text("Variant")]  # type: ignore[index]
        version = variant.versions[message.text("Version")]  # type: ignore[index]
        base_header, base_coc, _ = approval.base(variant, version)
        target = Mapping(message.coc.line, message.coc.column, message.source)
        target.update((k, v) for k, v in message.coc.items() if k not in DERIVED)
        coc_layer = difference(base_coc, target, message.source)
        _, record_header = self._header_parts(message, number)
        header_base = Mapping(1, 1, message.source)
        if isinstance(base_header, Mapping):
            header_base.update((k, v) for k, v in base_header.items() if k != "DesignatedTypeApprovalCountry")
        header_layer = difference(header_base, record_header, message.source)

        document = CommentedMap()
        document["vin"] = vin
        document["approval"] = number
        document["variant"] = yamlwrite.text_scalar(variant.name, None)
        document["version"] = yamlwrite.text_scalar(version.name, None)
        issued = CommentedMap()
        for key in ISSUED_KEYS:
            value = message.header.get(key)
            if isinstance(value, Scalar):
                issued[key] = yamlwrite.text_scalar(value.text, ivi_spec.elements_by_name()[key])
        if len(issued) == len(ISSUED_KEYS):
            issued[ISSUED_DIGEST] = content_digest(message.header, message.coc)
            document["issued"] = issued
        if isinstance(header_layer, Mapping) and header_layer:
            document["Header"] = yamlwrite.to_yaml_tree(header_layer, ivi_spec.header())
        if isinstance(coc_layer, Mapping) and coc_layer:
            document["CocDataGroup"] = yamlwrite.to_yaml_tree(coc_layer, ivi_spec.coc_data_group())
        text = modeline("record", record_path, self.repository.root) + yamlwrite.dump(document)
        self._verify(entry, message, text, record_path)
        self.records[vin] = (record_path, text)
        self.result.records.append(self.repository.relative(record_path))

    def _verify(self, entry: _ApprovalFile, message: Message, text: str, record_path: Path) -> None:
        """Check that the planned files give back exactly the message's content."""
        data = text.encode("utf-8")
        record = parse_record(data, Source(self.repository.relative(record_path)), digest(data))
        approval = entry.parsed()
        problems = [f for f in record.findings + approval.findings if f.severity.blocking]
        if problems:
            raise EcocError(
                f"internal error: the YAML written for {message.source.path} does not read back: "
                f"{problems[0].file}:{problems[0].line}: {problems[0].message}"
            )
        variant = approval.variants[record.variant.text]  # type: ignore[union-attr]
        version = variant.versions[record.version.text]  # type: ignore[union-attr]
        effective, _ = build_effective(record, approval, variant, version, "2000-01-01T00:00:00Z")
        expected = Mapping(1, 1, message.source)
        expected.update(message.coc)
        if not same_value(effective.coc, expected):
            raise EcocError(
                f"internal error: the YAML written for {message.source.path} does not "
                "give back the message's CocDataGroup"
            )

    def write(self) -> None:
        for entry in self.approval_files.values():
            if entry.created or entry.relative in self.result.approvals_extended:
                write_atomically(entry.path, entry.text)
        for path, text in self.records.values():
            write_atomically(path, text)


def import_messages(repository: Repository, files: list[tuple[Path, str]], dry_run: bool = False) -> ImportResult:
    """Import IVI messages; nothing is written if any of them has a problem."""
    importer = Importer(repository)
    for path, label in files:
        importer.add(path, label)
    if not importer.result.findings and not dry_run:
        importer.write()
    return importer.result
