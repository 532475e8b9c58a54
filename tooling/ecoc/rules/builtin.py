"""The checks built into ecoc, as opposed to the rules of rules/*.yaml, with what each reports."""

from __future__ import annotations

BUILTIN_DESCRIPTIONS = {
    "approval.authority": "the approval number's e-code is not one of an EU approval authority",
    "approval.duplicate": "two approval files define the same approval number",
    "approval.ecode-country": "DesignatedTypeApprovalCountry disagrees with the approval number's e-code",
    "approval.version-unchecked": "a version of a changed approval that no record uses, so no rule checked it",
    "approval.framework": "the approval number names an act ecoc does not know",
    "approval.number-format": "the approval number is not of the form e<authority>*<act>*<base>*<extension>",
    "io.read": "a file cannot be read",
    "model.boolean-in-text": "an unquoted text that other YAML tools read as a boolean",
    "model.code": "a value that is not a code of its IVI code list",
    "model.control-character": "a control character in a text",
    "model.date": "a date or date and time that is malformed or not in the calendar",
    "model.decimal": "a decimal in the wrong form or with too many decimal places",
    "model.empty-value": "a key without a value",
    "model.integer": "a whole number in the wrong form",
    "model.invalid": "a settings, owners or record key with a wrong value",
    "model.length": "a text longer or shorter than its IVI type allows",
    "model.misplaced": "an element this layer may not set",
    "model.null": "a null with no inherited value to remove",
    "model.number-in-text": "an unquoted text that other YAML tools read as a number",
    "model.number-like-code": "an unquoted code that loses its form as a number",
    "model.leading-zero": "an unquoted number with a leading zero, which other YAML tools read as octal",
    "model.pattern": "a value that does not match its IVI pattern",
    "model.range": "a number outside its IVI range",
    "model.required": "an element or table row the IVI 2.0 schema requires is missing",
    "model.shape": "a mapping, list or value where another shape belongs",
    "model.table-replaced": "a table with another number of rows replaced the inherited one",
    "model.unknown-key": "a key that is not an IVI element there",
    "record.approval-unknown": "the record names an approval that is not defined",
    "record.duplicate-reference-id": "two checked records render with the same IviReferenceId",
    "record.duplicate-vin": "two records have the same VIN (and manufacturer stage)",
    "record.file-name": "the record file is not named after its VIN",
    "record.issued-changed": "the data differs from the certificate issued with the same IviVersionNumber",
    "record.issued-version": "the record's IviVersionNumber is below the one it was issued with",
    "record.removed-after-signing": "the evidence archive holds a certificate of a VIN whose record file is gone",
    "record.signed-elsewhere": "the evidence archive holds the VIN as signed from another record file",
    "record.version-number": "the record's Header.IviVersionNumber is not the version the evidence archive calls "
    "for, or skips versions",
    "record.variant-unknown": "the record names a variant its approval does not have",
    "record.version-unknown": "the record names a version its variant does not have",
    "release.correction": "merging releases a correction of an issued certificate",
    "release.correction-required": "a delivered record's data changed, and the record gives no correction_reason "
    "for the corrected certificate",
    "release.rejected": "the authority rejected the record's last certificate, and no correction has been released",
    "rules.example": "a rule's pass or fail example gives the wrong result (reported by ecoc rules test)",
    "rules.failed": "a rule could not be evaluated on a record, or gave something other than true or false",
    "rules.skipped": "the readiness rules did not run on a record, because of its blocking errors",
    "rules.invalid": "a rule file with an unknown field, a wrong value or an expression that does not compile",
    "signing.certificate": "the signing certificate named in ecoc.yaml cannot be read",
    "signing.certificate-expired": "the signing certificate named in ecoc.yaml has expired",
    "signing.certificate-expiring": "the signing certificate named in ecoc.yaml expires within 30 days",
    "signing.signer-mismatch": "the signing certificate may not sign for the manufacturer an approval names",
    "vin.check-digit": "position 9 of the VIN is not the North-American check digit",
    "vin.format": "a VIN that is not 17 capital letters and digits without I, O and Q",
    "waiver.expired": "a waiver past its expiry date",
    "waiver.expiring": "a waiver that expires within 30 days",
    "waiver.invalid": "a waiver with an unknown field or a wrong value",
    "waiver.not-waivable": "a waiver for a rule that may not be waived",
    "waiver.unknown-rule": "a waiver for a rule that does not exist",
    "waiver.unused": "a waiver that accepted no finding",
    "xsd.invalid": "the rendered XML breaks the official schema",
    "yaml.alias": "a YAML alias",
    "yaml.anchor": "a YAML anchor",
    "yaml.complex-key": "a YAML key that is a mapping or a list",
    "yaml.depth": "YAML nested too deep",
    "yaml.duplicate-key": "a key given twice in one mapping",
    "yaml.empty": "an empty file or document",
    "yaml.encoding": "a file that is not UTF-8",
    "yaml.merge-key": "a YAML merge key",
    "yaml.multiple-documents": "more than one YAML document in a file",
    "yaml.syntax": "a YAML syntax error",
    "yaml.tab": "a tab in the indentation",
    "yaml.tag": "an explicit YAML tag",
}

BUILTIN_RULES = frozenset(BUILTIN_DESCRIPTIONS)

# Severity of the built-in checks that are not errors.
BUILTIN_SEVERITIES = {
    "approval.framework": "warning",
    "approval.version-unchecked": "info",
    "model.boolean-in-text": "warning",
    "model.number-in-text": "warning",
    "model.number-like-code": "warning",
    "model.leading-zero": "warning",
    "model.table-replaced": "info",
    "record.file-name": "warning",
    "record.version-number": "warning",
    "release.correction": "info",
    "rules.skipped": "info",
    "signing.certificate-expiring": "warning",
    "vin.check-digit": "warning",
    "waiver.unused": "warning",
    "waiver.expiring": "warning",
}


def builtin_line(rule_id: str) -> str:
    """Describe a built-in check in one line: severity, whether it may be waived, what it reports."""
    from ecoc.config import OPTIONAL_RULES

    waivable = "may be waived or disabled" if rule_id in OPTIONAL_RULES else "not waivable"
    severity = BUILTIN_SEVERITIES.get(rule_id, "error")
    return f"{rule_id} ({severity}, {waivable}): {BUILTIN_DESCRIPTIONS[rule_id]}"
