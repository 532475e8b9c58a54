"""Generate a synthetic fleet: a compliance repository with many records for the benchmarks.

The fleet reuses the approvals of a source repository (by default this project's example
data) and clones its records round-robin, giving every clone its own VIN (with a valid
check digit), actual mass, colour and country of registration. Dates stay as the source
record has them, so the readiness rules on dates hold for every clone and the result checks
clean whenever the source does.

    python benchmarks/generate_fleet.py --count 10000 --out benchmarks/work/fleet-10000
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ecoc.files import list_yaml
from ecoc.identifiers import vin_check_digit
from ecoc.model.record import parse_record
from ecoc.yamlload import Mapping, Scalar, Sequence, Source

PROJECT = Path(__file__).resolve().parents[1]
VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
COUNTRIES = ("NL", "B", "D", "F", "L", "A")


@dataclass
class Template:
    """A record file with the lines of the values that vary per vehicle."""

    lines: list[str]
    vin_line: int
    mass_line: int | None
    colour_line: int | None
    country_line: int | None
    mass: int


def _line_of(node: object) -> int | None:
    return node.line - 1 if isinstance(node, Scalar) else None


def read_template(path: Path) -> Template:
    data = path.read_bytes()
    record = parse_record(data, Source(path.name), "")
    if record.vin is None or any(f.severity.blocking for f in record.findings):
        raise SystemExit(f"{path}: not a clean record, cannot serve as a template")
    coc = record.coc or Mapping(1, 1, record.source)
    header = record.header or Mapping(1, 1, record.source)
    mass_group = coc.get("MassGroup")
    mass = mass_group.get("ActualMass") if isinstance(mass_group, Mapping) else None
    colours = coc.get("ColourTable")
    first = colours[0] if isinstance(colours, Sequence) and colours else None
    colour = first.get("Colour") if isinstance(first, Mapping) else None
    return Template(
        lines=data.decode("utf-8").splitlines(keepends=True),
        vin_line=record.vin.line - 1,
        mass_line=_line_of(mass),
        colour_line=_line_of(colour),
        country_line=_line_of(header.get("IntendedCountryRegistration")),
        mass=int(mass.text) if isinstance(mass, Scalar) else 0,
    )


def _replace_value(line: str, value: str) -> str:
    return re.sub(r"(:\s*)(\S.*?)(\s*)$", lambda m: f"{m.group(1)}{value}{m.group(3)}", line, count=1)


def make_vin(rng: random.Random, serial: int) -> str:
    """A VIN with a fictional world manufacturer identifier and a correct check digit."""
    descriptor = "".join(rng.choice(VIN_ALPHABET) for _ in range(5))
    body = f"XHV{descriptor}0T{rng.choice('ABCDE')}{serial:06d}"
    digit = vin_check_digit(body)
    assert digit is not None
    return body[:8] + digit + body[9:]


def render_clone(template: Template, rng: random.Random, vin: str) -> str:
    lines = list(template.lines)
    lines[template.vin_line] = _replace_value(lines[template.vin_line], vin)
    if template.mass_line is not None:
        lines[template.mass_line] = _replace_value(lines[template.mass_line], str(template.mass + rng.randint(0, 25)))
    if template.colour_line is not None:
        lines[template.colour_line] = _replace_value(lines[template.colour_line], str(rng.randint(1, 10)))
    if template.country_line is not None:
        lines[template.country_line] = _replace_value(lines[template.country_line], rng.choice(COUNTRIES))
    return "".join(lines)


def generate(source: Path, out: Path, count: int, seed: int) -> None:
    templates = [read_template(Path(path)) for path, _ in list_yaml(source, "records")]
    if not templates:
        raise SystemExit(f"{source}/records holds no records to clone")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings = (source / "ecoc.yaml").read_text(encoding="utf-8")
    (out / "ecoc.yaml").write_text(settings, encoding="utf-8")
    shutil.copytree(source / "approvals", out / "approvals")
    if (source / "rules").is_dir():
        shutil.copytree(source / "rules", out / "rules")
    rng = random.Random(seed)
    records = out / "records"
    for serial in range(count):
        template = templates[serial % len(templates)]
        vin = make_vin(rng, serial)
        # A few hundred records per folder, as a manufacturer would file them by batch.
        folder = records / f"batch-{serial // 500:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{vin}.yaml").write_text(render_clone(template, rng, vin), encoding="utf-8")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="number of records (default 10000)")
    parser.add_argument("--out", type=Path, required=True, help="folder to create (replaced if it exists)")
    parser.add_argument(
        "--source",
        type=Path,
        default=PROJECT,
        help="repository whose approvals and records are cloned (default: this project)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    options = parser.parse_args(argv)
    generate(options.source, options.out, options.count, options.seed)
    print(f"wrote {options.count} records to {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
