"""Signing to the EReg XMLDSig profile and offline verification, with a test PKI made per run."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from lxml import etree

from conftest import fill_disk_after
from ecoc.cli import main
from pki import DAY, NOW, Pki, issue, make_pki

DS = "{http://www.w3.org/2000/09/xmldsig#}"
VIN = "XNHKH16S1TE100214"
PASSPHRASE = "correct horse battery staple 7"
TEMPLATE = """<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
<ds:SignedInfo>
<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
<ds:SignatureMethod Algorithm="{method}"/>
<ds:Reference URI="">
<ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/></ds:Transforms>
<ds:DigestMethod Algorithm="{digest}"/>
<ds:DigestValue/>
</ds:Reference>
</ds:SignedInfo>
<ds:SignatureValue/>
<ds:KeyInfo><ds:X509Data/></ds:KeyInfo>
</ds:Signature>"""


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture
def unsigned(example_repo: Path, tmp_path: Path) -> Path:
    out = tmp_path / "render"
    assert main(["--repo", str(example_repo), "render", "--out", str(out), "--datetime", "2026-12-01T09:00:00Z"]) == 0
    return out / f"{VIN}.xml"


def require_openssl() -> None:
    if shutil.which("openssl") is None:
        message = "install openssl (Debian package openssl) to run the timestamp tests, whose TSA it is"
        if os.environ.get("ECOC_REQUIRE_OFFICIAL") == "1":
            pytest.fail(f"{message} (ECOC_REQUIRE_OFFICIAL=1 forbids skipping)")
        pytest.skip(message)


def xmlsec1() -> str:
    found = os.environ.get("ECOC_XMLSEC1") or shutil.which("xmlsec1")
    if not found:
        message = "install xmlsec1 (Debian package xmlsec1) or set ECOC_XMLSEC1 to run the interoperability tests"
        if os.environ.get("ECOC_REQUIRE_OFFICIAL") == "1":
            pytest.fail(f"{message} (ECOC_REQUIRE_OFFICIAL=1 forbids skipping)")
        pytest.skip(message)
    return found


def sign(pki: Pki, unsigned: Path, tmp_path: Path, *extra: str, chain: bool = True) -> tuple[int, Path]:
    files = pki.write(tmp_path / "pki")
    out = tmp_path / "signed.xml"
    args = ["sign", str(unsigned), "--out", str(out), "--key", str(files["key"]), "--cert", str(files["cert"])]
    if chain:
        args += ["--chain", str(files["chain"])]
    return main([*args, *extra]), out


def verify(pki: Pki, tmp_path: Path, path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    root = tmp_path / "anchors.pem"
    root.write_bytes(pki.root.pem())
    code = main(["verify", str(path), "--trust", str(root), *extra])
    return code, capsys.readouterr().out


def test_signature_follows_the_ereg_profile(pki: Pki, unsigned: Path, tmp_path: Path) -> None:
    code, out = sign(pki, unsigned, tmp_path)
    assert code == 0
    root = etree.fromstring(out.read_bytes())
    signature = root[-1]
    assert signature.tag == f"{DS}Signature"
    info = signature.find(f"{DS}SignedInfo")
    assert info is not None
    algorithms = {
        element.tag.removeprefix(DS): element.get("Algorithm") for element in info.iter() if element.get("Algorithm")
    }
    assert algorithms["CanonicalizationMethod"] == "http://www.w3.org/2001/10/xml-exc-c14n#"
    assert algorithms["SignatureMethod"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    assert algorithms["DigestMethod"] == "http://www.w3.org/2001/04/xmlenc#sha256"
    [reference] = info.findall(f"{DS}Reference")
    assert reference.get("URI") == ""
    transforms = [t.get("Algorithm") for t in reference.iter(f"{DS}Transform")]
    assert transforms[0] == "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
    certificates = [c.text for c in signature.iter(f"{DS}X509Certificate")]
    der = [pki.signer.certificate, pki.intermediate.certificate]
    expected = [c.public_bytes(serialization.Encoding.DER) for c in der]
    import base64

    assert [base64.b64decode("".join((text or "").split())) for text in certificates] == expected


def test_signed_file_is_valid_against_the_official_schema(
    pki: Pki, unsigned: Path, tmp_path: Path, official_xsd: Path
) -> None:
    _, out = sign(pki, unsigned, tmp_path)
    schema = etree.XMLSchema(etree.parse(str(official_xsd)))
    assert schema.validate(etree.parse(str(out))), schema.error_log.last_error
    assert not schema.validate(etree.parse(str(unsigned)))


def test_signed_file_verifies(pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = sign(pki, unsigned, tmp_path)
    code, text = verify(pki, tmp_path, out, capsys)
    assert code == 0
    assert f"{out}: verified, signed by CN=Halvard Motors B.V. eCoC seal" in text


def test_xmlsec1_verifies_ecoc_signature(pki: Pki, unsigned: Path, tmp_path: Path) -> None:
    tool = xmlsec1()
    _, out = sign(pki, unsigned, tmp_path)
    files = pki.write(tmp_path / "pki")
    completed = subprocess.run(
        [tool, "--verify", "--trusted-pem", str(files["root"]), "--untrusted-pem", str(files["chain"]), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr


def xmlsec1_sign(pki: Pki, unsigned: Path, tmp_path: Path, method: str, digest: str) -> Path:
    tool = xmlsec1()
    files = pki.write(tmp_path / "pki")
    text = unsigned.read_text(encoding="utf-8")
    template = tmp_path / "template.xml"
    closing = "</InitialVehicleInformation>"
    template.write_text(
        text.replace(closing, TEMPLATE.format(method=method, digest=digest) + closing), encoding="utf-8"
    )
    out = tmp_path / "by-xmlsec1.xml"
    keys = f"{files['key']},{files['cert']},{files['chain']}"
    completed = subprocess.run(
        [tool, "--sign", "--privkey-pem", keys, "--output", str(out), str(template)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return out


def test_ecoc_verifies_xmlsec1_signature(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = xmlsec1_sign(
        pki,
        unsigned,
        tmp_path,
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2001/04/xmlenc#sha256",
    )
    code, text = verify(pki, tmp_path, out, capsys)
    assert code == 0, text


def test_sha1_signature_is_refused_unless_allowed(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = xmlsec1_sign(
        pki, unsigned, tmp_path, "http://www.w3.org/2000/09/xmldsig#rsa-sha1", "http://www.w3.org/2000/09/xmldsig#sha1"
    )
    code, text = verify(pki, tmp_path, out, capsys)
    assert code == 1
    assert "http://www.w3.org/2000/09/xmldsig#rsa-sha1" in text
    assert "pass --allow-weak only to read an old archive" in text
    code, text = verify(pki, tmp_path, out, capsys, "--allow-weak")
    assert code == 0, text


def test_changed_value_breaks_the_signature(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = sign(pki, unsigned, tmp_path)
    out.write_bytes(out.read_bytes().replace(b"<MaximumSpeed>178<", b"<MaximumSpeed>188<"))
    code, text = verify(pki, tmp_path, out, capsys)
    assert code == 1
    assert "the signature does not match the document" in text


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "expired on"),
        ("not-yet-valid", "is not valid before"),
        ("no-digital-signature", "its key usage lacks digitalSignature"),
        ("missing-intermediate", "the intermediate certificate is missing"),
        ("untrusted", "the seal comes from a CA that is not trusted"),
    ],
)
def test_certificate_problems_have_plain_messages(
    unsigned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    expected: str,
) -> None:
    pki = make_pki(digital_signature=case != "no-digital-signature")
    if case in ("no-digital-signature", "missing-intermediate"):
        # ecoc refuses to sign with such a seal; the file stands for one another tool signed.
        monkeypatch.setattr("ecoc.signing._check_seal", lambda signing, at: None)
        monkeypatch.setattr("ecoc.signing.check_seal", lambda signing, anchors=(), at=None: None)
    _, out = sign(pki, unsigned, tmp_path, chain=case != "missing-intermediate")
    monkeypatch.undo()
    extra: tuple[str, ...] = ()
    if case == "expired":
        extra = ("--at", (NOW + 400 * DAY).isoformat())
    elif case == "not-yet-valid":
        extra = ("--at", (NOW - 10 * DAY).isoformat())
    trusted = pki if case != "untrusted" else make_pki()
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(trusted.root.pem() if case != "untrusted" else issue("Another Root CA", ca=True).pem())
    code = main(["verify", str(out), "--trust", str(anchor), *extra])
    text = capsys.readouterr().out
    assert code == 1
    assert expected in text


def test_signature_of_a_since_expired_seal_verifies_at_its_signing_time(
    unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = issue("Halvard Test Root CA", ca=True, not_before=NOW - 900 * DAY, not_after=NOW + 3650 * DAY)
    intermediate = issue("Halvard Test Issuing CA", root, ca=True, not_before=NOW - 800 * DAY)
    pki = Pki(
        root,
        intermediate,
        issue("Halvard Motors B.V. eCoC seal", intermediate, not_after=NOW - DAY, not_before=NOW - 400 * DAY),
    )
    # The file stands for one signed while the seal was valid: ecoc refuses an expired seal today.
    monkeypatch.setattr("ecoc.signing._check_seal", lambda signing, at: None)
    code, out = sign(pki, unsigned, tmp_path)
    assert code == 0
    monkeypatch.undo()
    code, text = verify(pki, tmp_path, out, capsys, "--at", (NOW - 100 * DAY).isoformat())
    assert "verified, signed by" in text
    assert code == 0
    code, text = verify(pki, tmp_path, out, capsys)
    assert "changed after signing" not in text
    assert "expired on" in text
    assert code == 1


def test_untrusted_root_in_keyinfo_is_named_as_the_end_of_the_chain(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = pki.write(tmp_path / "pki")
    files["chain"].write_bytes(pki.intermediate.pem() + pki.root.pem())
    out = tmp_path / "signed.xml"
    keys = ["--key", str(files["key"]), "--cert", str(files["cert"]), "--chain", str(files["chain"])]
    assert main(["sign", str(unsigned), "--out", str(out), *keys]) == 0
    anchor = tmp_path / "other.pem"
    anchor.write_bytes(issue("Another Root CA", ca=True).pem())
    assert main(["verify", str(out), "--trust", str(anchor)]) == 1
    text = capsys.readouterr().out
    assert "the certificate chain ends at CN=Halvard Test Root CA" in text
    assert "longer than 10" not in text


def test_sign_refuses_a_seal_without_its_intermediate(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = sign(pki, unsigned, tmp_path, chain=False)
    assert code == 3
    assert "the seal's chain lacks CN=Halvard Test Issuing CA" in capsys.readouterr().err
    assert not out.exists()


def test_wrapped_document_is_refused(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = sign(pki, unsigned, tmp_path)
    signed = etree.fromstring(out.read_bytes())
    wrapper = etree.Element("{http://eu.ereg.initialvehicleinformation.v2}InitialVehicleInformation")
    wrapper.append(signed)
    out.write_bytes(etree.tostring(wrapper, xml_declaration=True, encoding="UTF-8"))
    code, text = verify(pki, tmp_path, out, capsys)
    assert code == 1
    assert "the Signature is not a child of the root element" in text


def test_elliptic_key_signs_with_ecdsa(unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = make_pki(elliptic=True)
    _, out = sign(pki, unsigned, tmp_path)
    method = etree.fromstring(out.read_bytes()).find(f".//{DS}SignatureMethod")
    assert method is not None
    assert method.get("Algorithm") == "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    code, _ = verify(pki, tmp_path, out, capsys)
    assert code == 0


def test_pkcs12_key_with_passphrase_stays_secret(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "seal.p12"
    bundle.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"seal",
            pki.signer.key,
            pki.signer.certificate,
            [pki.intermediate.certificate],
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    out = tmp_path / "signed.xml"
    monkeypatch.setenv("ECOC_KEY_PASSPHRASE", "wrong " + PASSPHRASE)
    assert main(["sign", str(unsigned), "--out", str(out), "--key", str(bundle)]) == 3
    monkeypatch.setenv("ECOC_KEY_PASSPHRASE", PASSPHRASE)
    assert main(["sign", str(unsigned), "--out", str(out), "--key", str(bundle)]) == 0
    code, _ = verify(pki, tmp_path, out, capsys)
    assert code == 0
    captured = capsys.readouterr()
    key_text = pki.signer.key_pem().decode()
    for text in (captured.out, captured.err, out.read_text(encoding="utf-8")):
        assert PASSPHRASE not in text
        assert key_text.splitlines()[1] not in text


def test_signing_twice_is_refused(pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = sign(pki, unsigned, tmp_path)
    files = pki.write(tmp_path / "pki")
    again = tmp_path / "again.xml"
    keys = ["--key", str(files["key"]), "--cert", str(files["cert"]), "--chain", str(files["chain"])]
    assert main(["sign", str(out), "--out", str(again), *keys]) == 3
    assert "the document is signed already" in capsys.readouterr().err
    assert (
        main(["sign", str(unsigned), "--out", str(out), "--key", str(files["key"]), "--cert", str(files["cert"])]) == 2
    )
    assert "exists already" in capsys.readouterr().err


def test_verify_needs_a_trust_anchor_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x.xml"
    target.write_text("<a/>")
    assert main(["verify", str(target)]) == 2
    assert "--trust" in capsys.readouterr().err


def test_verify_time_needs_a_time_zone(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(pki.root.pem())
    target = tmp_path / "x.xml"
    target.write_text("<a/>")
    assert main(["verify", str(target), "--trust", str(anchor), "--at", dt.datetime(2026, 1, 1).isoformat()]) == 2
    assert "has no time zone" in capsys.readouterr().err


def test_git_keeps_signed_bytes_as_they_are(tmp_path: Path) -> None:
    from conftest import PROJECT, git

    repo = tmp_path / "repo"
    assert main(["init", str(repo)]) == 0
    assert (repo / ".gitattributes").read_text() == (PROJECT / ".gitattributes").read_text()
    git(repo, "init", "-q")
    git(repo, "config", "core.autocrlf", "true")
    assert (repo / "signed").is_dir()
    (repo / "signed" / "a.xml").write_bytes(b"<a>\r\n<b/>\n</a>\r\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "evidence")
    (repo / "signed" / "a.xml").unlink()
    git(repo, "checkout", "--", "signed/a.xml")
    assert (repo / "signed" / "a.xml").read_bytes() == b"<a>\r\n<b/>\n</a>\r\n"
    stored = subprocess.run(["git", "-C", str(repo), "show", "HEAD:signed/a.xml"], capture_output=True, check=True)
    assert stored.stdout == b"<a>\r\n<b/>\n</a>\r\n"


@pytest.mark.parametrize("form", ["pem", "pkcs12"])
def test_key_from_the_environment(
    pki: Pki,
    unsigned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    import base64

    files = pki.write(tmp_path / "pki")
    out = tmp_path / "signed.xml"
    if form == "pem":
        monkeypatch.setenv("SEAL_KEY", pki.signer.key_pem().decode())
        args = ["--key", "env:SEAL_KEY", "--cert", str(files["cert"]), "--chain", str(files["chain"])]
    else:
        bundle = pkcs12.serialize_key_and_certificates(
            b"seal",
            pki.signer.key,
            pki.signer.certificate,
            [pki.intermediate.certificate],
            serialization.NoEncryption(),
        )
        monkeypatch.setenv("SEAL_KEY", base64.b64encode(bundle).decode())
        args = ["--key", "env:SEAL_KEY"]
    assert main(["sign", str(unsigned), "--out", str(out), *args]) == 0
    code, _ = verify(pki, tmp_path, out, capsys)
    assert code == 0


def test_missing_environment_key_is_named(unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign", str(unsigned), "--out", str(tmp_path / "s.xml"), "--key", "env:NO_SUCH_KEY_VAR"]) == 3
    assert "the environment variable NO_SUCH_KEY_VAR is missing or empty" in capsys.readouterr().err


def test_bulk_verification_checks_each_chain_once(
    pki: Pki, example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecoc import signing

    render = tmp_path / "render"
    assert (
        main(["--repo", str(example_repo), "render", "--out", str(render), "--datetime", "2026-12-01T09:00:00Z"]) == 0
    )
    files = pki.write(tmp_path / "pki")
    archive = tmp_path / "archive"
    for unsigned in sorted(render.glob("*.xml")):
        args = ["--key", str(files["key"]), "--cert", str(files["cert"]), "--chain", str(files["chain"])]
        assert main(["sign", str(unsigned), "--out", str(archive / unsigned.name), *args]) == 0
    calls = []
    original = signing.check_chain

    def counting(*args: object) -> object:
        calls.append(args)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(signing, "check_chain", counting)
    capsys.readouterr()
    code, text = verify(pki, tmp_path, archive, capsys)
    assert code == 0
    assert text.count(": verified, signed by") == 12
    assert len(calls) == 1


def configure(repo: Path, pki: Pki, signers: str) -> None:
    keys = repo / "keys"
    files = pki.write(keys)
    files["root"].rename(keys / "root.pem")
    with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write(
            "\nsigning:\n"
            "  key: env:SEAL_KEY\n"
            "  cert: keys/signer.pem\n"
            "  chain: keys/chain.pem\n"
            "  trust: [keys/root.pem]\n"
            f"  signers: {signers}\n"
        )


def test_settings_sign_and_check_the_signer(
    pki: Pki,
    example_repo: Path,
    unsigned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(example_repo, pki, '{"HALVARD MOTORS B.V.": ["CN=Halvard Motors B.V. eCoC seal,*"]}')
    monkeypatch.setenv("SEAL_KEY", pki.signer.key_pem().decode())
    out = tmp_path / "signed.xml"
    assert main(["--repo", str(example_repo), "sign", str(unsigned), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["--repo", str(example_repo), "verify", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{out}: ")
    assert "verified, signed by CN=Halvard Motors B.V. eCoC seal" in text


def test_verify_refuses_a_signer_that_signers_does_not_allow(
    pki: Pki,
    example_repo: Path,
    unsigned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(example_repo, pki, '{"HALVARD MOTORS B.V.": ["CN=Halvard Motors B.V. eCoC seal,*"]}')
    monkeypatch.setenv("SEAL_KEY", pki.signer.key_pem().decode())
    out = tmp_path / "signed.xml"
    assert main(["--repo", str(example_repo), "sign", str(unsigned), "--out", str(out)]) == 0
    settings = (example_repo / "ecoc.yaml").read_text(encoding="utf-8")
    (example_repo / "ecoc.yaml").write_text(settings.replace("B.V. eCoC seal,*", "GmbH eCoC seal,*"), encoding="utf-8")
    capsys.readouterr()
    assert main(["--repo", str(example_repo), "verify", str(out)]) == 1
    assert "may not sign for HALVARD MOTORS B.V.; signing.signers allows" in capsys.readouterr().out


def signing_findings(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]]]:
    code = main(["--repo", str(repo), "check", "--no-cache", "--format", "json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    return code, [f for f in findings if f["rule"].startswith("signing.")]


@pytest.mark.parametrize(
    ("days", "rule", "severity"),
    [(10, "signing.certificate-expiring", "warning"), (-5, "signing.certificate-expired", "error")],
)
def test_check_warns_before_the_seal_expires(
    example_repo: Path, capsys: pytest.CaptureFixture[str], days: int, rule: str, severity: str
) -> None:
    root = issue("Halvard Test Root CA", ca=True)
    seal = issue("Halvard Motors B.V. eCoC seal", root, not_before=NOW - 400 * DAY, not_after=NOW + days * DAY)
    configure(example_repo, Pki(root, root, seal), '{"HALVARD MOTORS B.V.": ["CN=Halvard Motors B.V. eCoC seal,*"]}')
    _, findings = signing_findings(example_repo, capsys)
    assert [(f["rule"], f["severity"], f["file"], f["path"]) for f in findings] == [
        (rule, severity, "ecoc.yaml", "signing.cert")
    ]


def test_sign_refuses_a_seal_that_signers_does_not_allow(
    pki: Pki,
    example_repo: Path,
    unsigned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(example_repo, pki, '{"HALVARD MOTORS B.V.": ["CN=Halvard Motors GmbH eCoC seal,*"]}')
    monkeypatch.setenv("SEAL_KEY", pki.signer.key_pem().decode())
    out = tmp_path / "signed.xml"
    assert main(["--repo", str(example_repo), "sign", str(unsigned), "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert f"{unsigned}: the certificate " in err
    assert "may not sign for HALVARD MOTORS B.V.; signing.signers allows CN=Halvard Motors GmbH eCoC seal,*" in err
    assert not out.exists()


def test_check_finds_a_seal_of_another_manufacturer(
    pki: Pki, example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(example_repo, pki, '{"HALVARD MOTORS B.V.": ["CN=Someone else,*"]}')
    code, findings = signing_findings(example_repo, capsys)
    assert code == 1
    assert [f["rule"] for f in findings] == ["signing.signer-mismatch"] * 3
    assert all(f["file"].startswith("approvals/") and f["line"] == 35 for f in findings)
    # The hint gives the subject exactly as signing.signers matches it.
    subject = pki.signer.certificate.subject.rfc4514_string()
    assert f"add '{subject}' under its name in signing.signers" in findings[0]["hint"]


PIN = "246813"


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[str]:
    """A SoftHSM2 token holding the seal's private key, one per module: SoftHSM2 reads its settings once."""
    module = os.environ.get("ECOC_SOFTHSM2_MODULE") or "/usr/lib/softhsm/libsofthsm2.so"
    tool = shutil.which("softhsm2-util")
    if tool is None or not Path(module).exists():
        message = "install SoftHSM2 (Debian package softhsm2) or set ECOC_SOFTHSM2_MODULE to run the PKCS#11 tests"
        if os.environ.get("ECOC_REQUIRE_OFFICIAL") == "1":
            pytest.fail(f"{message} (ECOC_REQUIRE_OFFICIAL=1 forbids skipping)")
        pytest.skip(message)
    import pkcs11
    from pkcs11 import Attribute
    from pkcs11.util.rsa import decode_rsa_private_key

    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    (folder / "softhsm2.conf").write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(folder / "softhsm2.conf"))
        subprocess.run(
            [tool, "--init-token", "--free", "--label", "ecoc-seal", "--pin", PIN, "--so-pin", "13572468"],
            check=True,
            capture_output=True,
        )
        der = pki.signer.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        with pkcs11.lib(module).get_token(token_label="ecoc-seal").open(user_pin=PIN, rw=True) as session:
            attributes = decode_rsa_private_key(der)
            attributes.update(
                {Attribute.LABEL: "seal", Attribute.TOKEN: True, Attribute.SIGN: True, Attribute.SENSITIVE: True}
            )
            session.create_object(attributes)
        yield f"pkcs11:token=ecoc-seal;object=seal?module-path={module}"


def test_key_on_a_pkcs11_token(
    pki: Pki,
    token: str,
    unsigned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = pki.write(tmp_path / "pki")
    out = tmp_path / "signed.xml"
    args = ["sign", str(unsigned), "--out", str(out), "--key", token, "--cert", str(files["cert"])]
    monkeypatch.setenv("ECOC_PKCS11_PIN", "999999")
    assert main([*args, "--chain", str(files["chain"])]) == 3
    assert "the PKCS#11 key cannot be opened" in capsys.readouterr().err
    monkeypatch.setenv("ECOC_PKCS11_PIN", PIN)
    assert main([*args, "--chain", str(files["chain"])]) == 0
    captured = capsys.readouterr()
    assert PIN not in captured.out + captured.err
    code, _ = verify(pki, tmp_path, out, capsys)
    assert code == 0


def test_token_key_must_belong_to_the_certificate(
    token: str, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_pki().write(tmp_path / "other")
    monkeypatch.setenv("ECOC_PKCS11_PIN", PIN)
    args = ["sign", str(unsigned), "--out", str(tmp_path / "s.xml"), "--key", token, "--cert", str(other["cert"])]
    assert main(args) == 3
    assert "the key on the PKCS#11 token does not belong to the certificate" in capsys.readouterr().err


def test_xades_baseline_b_signature(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], official_xsd: Path
) -> None:
    _, out = sign(pki, unsigned, tmp_path, "--xades")
    root = etree.fromstring(out.read_bytes())
    xades = "{http://uri.etsi.org/01903/v1.3.2#}"
    assert root.find(f".//{xades}SigningTime") is not None
    [properties_reference] = [r for r in root.iter(f"{DS}Reference") if r.get("URI") != ""]
    assert properties_reference.get("Type") == "http://uri.etsi.org/01903#SignedProperties"
    code, text = verify(pki, tmp_path, out, capsys)
    assert code == 0, text
    schema = etree.XMLSchema(etree.parse(str(official_xsd)))
    assert schema.validate(root), schema.error_log.last_error
    files = pki.write(tmp_path / "pki")
    completed = subprocess.run(
        [
            xmlsec1(),
            "--verify",
            "--trusted-pem",
            str(files["root"]),
            "--untrusted-pem",
            str(files["chain"]),
            "--id-attr:Id",
            "http://uri.etsi.org/01903/v1.3.2#:SignedProperties",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr


def test_xades_properties_of_another_certificate_are_refused(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = sign(pki, unsigned, tmp_path, "--xades")
    root = etree.fromstring(out.read_bytes())
    digest = root.find(".//{http://uri.etsi.org/01903/v1.3.2#}CertDigest/" + f"{DS}DigestValue")
    assert digest is not None
    digest.text = "AAAA" + (digest.text or "")[4:]
    out.write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    code, text = verify(pki, tmp_path, out, capsys)
    assert code == 1
    assert "the XAdES properties name another signing certificate" in text


def test_signature_timestamp_from_a_tsa(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tsa import running_tsa

    require_openssl()
    with running_tsa() as (url, tsa_root):
        code, out = sign(pki, unsigned, tmp_path, "--timestamp", url)
    assert code == 0
    root = etree.fromstring(out.read_bytes())
    assert root.find(".//{http://uri.etsi.org/01903/v1.3.2#}EncapsulatedTimeStamp") is not None
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(pki.root.pem() + tsa_root.pem())
    assert main(["verify", str(out), "--trust", str(anchors)]) == 0
    assert ", timestamped 20" in capsys.readouterr().out
    code, text = verify(pki, tmp_path, out, capsys)
    assert code == 1
    assert "the signature timestamp does not verify" in text


def test_timestamp_no_longer_matches_a_changed_signature(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tsa import running_tsa

    require_openssl()
    changed = tmp_path / "changed.xml"
    changed.write_bytes(unsigned.read_bytes().replace(b"<MaximumSpeed>178<", b"<MaximumSpeed>177<"))
    with running_tsa() as (url, tsa_root):
        _, out = sign(pki, unsigned, tmp_path, "--timestamp", url)
        _, other = sign(pki, changed, tmp_path / "second", "--timestamp", url)
    stamped = etree.fromstring(out.read_bytes())
    foreign = etree.fromstring(other.read_bytes())
    tag = ".//{http://uri.etsi.org/01903/v1.3.2#}EncapsulatedTimeStamp"
    stamped.find(tag).text = foreign.find(tag).text  # type: ignore[union-attr]
    out.write_bytes(etree.tostring(stamped, xml_declaration=True, encoding="UTF-8"))
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(pki.root.pem() + tsa_root.pem())
    assert main(["verify", str(out), "--trust", str(anchors)]) == 1
    assert "the signature timestamp does not verify" in capsys.readouterr().out


def test_unreachable_tsa_is_named(pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = sign(pki, unsigned, tmp_path, "--timestamp", "http://127.0.0.1:9/")
    assert code == 3
    assert "the time-stamping authority at http://127.0.0.1:9/ did not answer" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["notaurl", "file:///etc/hostname", "ftp://127.0.0.1/tsa"])
def test_timestamp_url_that_is_not_http_is_refused(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out = sign(pki, unsigned, tmp_path, "--timestamp", url)
    err = capsys.readouterr().err
    assert code == 3
    assert "is not an http or https URL" in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "is valid from"),
        ("no-digital-signature", "its key usage lacks digitalSignature"),
        ("chain-out-of-order", "in the chain did not issue"),
    ],
)
def test_unusable_seal_is_refused_before_signing(
    unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, expected: str
) -> None:
    if case == "expired":
        root = issue("Halvard Test Root CA", ca=True)
        seal = issue("Halvard Motors B.V. eCoC seal", root, not_before=NOW - 400 * DAY, not_after=NOW - DAY)
        pki = Pki(root, root, seal)
    else:
        pki = make_pki(digital_signature=case != "no-digital-signature")
    files = pki.write(tmp_path / "pki")
    if case == "chain-out-of-order":
        files["chain"].write_bytes(pki.root.pem() + pki.intermediate.pem())
    out = tmp_path / "signed.xml"
    keys = ["--key", str(files["key"]), "--cert", str(files["cert"]), "--chain", str(files["chain"])]
    code = main(["sign", str(unsigned), "--out", str(out), *keys])
    assert code == 3
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_document_that_is_not_ivi_is_refused(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.xml"
    other.write_bytes(b"<a/>")
    code, out = sign(pki, other, tmp_path)
    assert code == 3
    assert "the document is not an IVI 2.0 message" in capsys.readouterr().err
    assert not out.exists()


def test_pkcs12_bundle_with_a_separate_certificate_is_refused(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "seal.p12"
    bundle.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"seal", pki.signer.key, pki.signer.certificate, None, serialization.NoEncryption()
        )
    )
    files = pki.write(tmp_path / "pki")
    args = ["sign", str(unsigned), "--out", str(tmp_path / "s.xml"), "--key", str(bundle), "--cert", str(files["cert"])]
    assert main(args) == 3
    assert "a PKCS#12 bundle brings its own certificate" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sign", "verify"])
def test_invalid_signing_settings_do_not_switch_signing_off(
    pki: Pki,
    example_repo: Path,
    unsigned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    with (example_repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("\nsigning:\n  trust: keys/root.pem\n  signerz: {}\n")
    _, signed = sign(pki, unsigned, tmp_path)
    capsys.readouterr()
    monkeypatch.chdir(example_repo)
    if command == "sign":
        files = pki.write(tmp_path / "again")
        args = ["sign", str(unsigned), "--out", str(tmp_path / "s.xml"), "--key", str(files["key"])]
    else:
        args = ["verify", str(signed)]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "ecoc.yaml" in err
    assert "signerz" in err


def test_pkcs11_key_without_a_pin_names_the_pin_variable(
    pki: Pki,
    token: str,
    unsigned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = pki.write(tmp_path / "pki")
    monkeypatch.delenv("ECOC_PKCS11_PIN", raising=False)
    args = ["sign", str(unsigned), "--out", str(tmp_path / "s.xml"), "--key", token, "--cert", str(files["cert"])]
    assert main(args) == 3
    assert "set the token's PIN in ECOC_PKCS11_PIN" in capsys.readouterr().err


def test_pkcs11_module_that_cannot_load_is_named(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = pki.write(tmp_path / "pki")
    token = f"pkcs11:token=ecoc-seal;object=seal?module-path={tmp_path / 'missing.so'}"
    args = ["sign", str(unsigned), "--out", str(tmp_path / "s.xml"), "--key", token, "--cert", str(files["cert"])]
    assert main(args) == 3
    assert "cannot be loaded" in capsys.readouterr().err


def test_many_files_sign_into_a_folder_or_not_at_all(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = pki.write(tmp_path / "pki")
    keys = ["--key", str(files["key"]), "--cert", str(files["cert"]), "--chain", str(files["chain"])]
    rendered = sorted(unsigned.parent.glob("*.xml"))
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<a/>")
    out = tmp_path / "signed"
    assert main(["sign", *map(str, rendered), str(broken), "--out-dir", str(out), *keys]) == 3
    assert f"{broken}: the document is not an IVI 2.0 message" in capsys.readouterr().err
    assert not out.exists()
    assert main(["sign", *map(str, rendered), "--out-dir", str(out), *keys]) == 0
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in rendered]
    code, _ = verify(pki, tmp_path, out, capsys)
    assert code == 0
    assert main(["sign", *map(str, rendered[:2]), "--out", str(tmp_path / "one.xml"), *keys]) == 2
    assert "--out names one file" in capsys.readouterr().err


def test_verified_chain_is_reused_only_within_its_validity(pki: Pki) -> None:
    from ecoc.signing import VerificationFailed, Verifier

    verifier = Verifier([pki.root.certificate])
    certificates = [pki.signer.certificate, pki.intermediate.certificate]
    assert verifier.chain(certificates, NOW)[0] == pki.intermediate.certificate
    assert verifier.chain(certificates, NOW + 30 * DAY)[0] == pki.intermediate.certificate
    with pytest.raises(VerificationFailed, match="expired"):
        verifier.chain(certificates, NOW + 400 * DAY)
    with pytest.raises(VerificationFailed, match="is not valid before"):
        verifier.chain(certificates, NOW - 10 * DAY)


def test_written_signature_matches_its_xml_serialisation(pki: Pki, unsigned: Path, tmp_path: Path) -> None:
    _, out = sign(pki, unsigned, tmp_path)
    signed = out.read_bytes()
    start = signed.index(b"<ds:Signature ")
    end = signed.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    signature = etree.fromstring(signed).find(f"{DS}Signature")
    assert signature is not None
    # The bytes ecoc writes are exactly lxml's serialisation of the element they parse into.
    assert etree.tostring(etree.fromstring(signed[start:end])) == signed[start:end]
    assert signed[:start] + signed[end:] == unsigned.read_bytes()
    info = signature.find(f"{DS}SignedInfo")
    assert info is not None
    from ecoc.signing import RSA_SHA256, _plain_signed_info

    digest = info.findtext(f"{DS}Reference/{DS}DigestValue")
    assert digest is not None
    canonical = etree.tostring(info, method="c14n", exclusive=True, with_comments=False)
    assert canonical == _plain_signed_info(RSA_SHA256, digest, canonical=True).encode()


def test_passphrase_for_a_plain_key_is_named(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOC_KEY_PASSPHRASE", "not needed")
    code, _ = sign(pki, unsigned, tmp_path)
    err = capsys.readouterr().err
    assert code == 3
    assert "the key is not encrypted, but ECOC_KEY_PASSPHRASE is set" in err
    assert "unset ECOC_KEY_PASSPHRASE" in err


def test_unreachable_timestamp_authority_names_the_setting(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    # A port on 127.0.0.1 that nothing listens on.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _ = sign(pki, unsigned, tmp_path, "--timestamp", f"http://127.0.0.1:{port}/")
    err = capsys.readouterr().err
    assert code == 3
    assert f"the time-stamping authority at http://127.0.0.1:{port}/ did not answer: " in err
    assert "urlopen error" not in err
    assert "hint: check the URL (--timestamp or signing.timestamp_url)" in err


def test_sign_on_a_full_disk_leaves_no_files(
    pki: Pki, unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = pki.write(tmp_path / "pki")
    keys = ["--key", str(files["key"]), "--cert", str(files["cert"]), "--chain", str(files["chain"])]
    rendered = sorted(unsigned.parent.glob("*.xml"))[:3]
    fill_disk_after(monkeypatch, 2)
    out = tmp_path / "signed"
    assert main(["sign", *map(str, rendered), "--out-dir", str(out), *keys]) == 3
    assert "removed the 2 signed files written before it" in capsys.readouterr().err
    assert list(out.iterdir()) == []
