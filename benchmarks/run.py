"""Measure the speed and memory of `ecoc check` on synthetic fleets and write BENCHMARKS.md.

All measurements come from one run of this script, so their ratios compare like with like:

1. baseline: PyYAML's CSafeLoader parsing every YAML file of the fleet, in-process;
2. `ecoc check` with an empty cache folder, with `-j 1` and with the default number of jobs;
3. `ecoc check` again with the cache that run wrote, nothing changed;
4. in-process, one core: rendering plus XSD validation, against lxml parsing plus validation
   of the same bytes;
5. peak RSS and wall time of `ecoc check -j 1 --no-cache` (and default jobs) on a larger fleet;
6. `ecoc check --base HEAD` after a change to one record and to one approval, with the fleet
   committed to git, against the cold `ecoc check` of step 2;
7. in-process, one core: signing rendered messages against RSA-2048 signing of their canonical
   bytes with `cryptography` alone, and verifying them against verifying with a pinned
   certificate;
8. `ecoc release` of a fleet of 1,000 vehicles to the NAP simulator of the tests, a real HTTPS
   server on 127.0.0.1, against `ecoc sign` of the same 1,000 rendered files in one command,
   with the CPU time of each and of a cold `ecoc check` of the same records;
9. `ecoc audit` of the evidence of the whole fleet, against verifying the same signed files with
   signxml and the certificate pinned, in-process.

The fleets come from benchmarks/generate_fleet.py and are written to benchmarks/work/ (the
larger one is deleted after use). XSD
validation is part of the measured runs only when ECOC_XSD names the official IVI-2.0.xsd;
without it, step 4 is skipped. Needs Linux (os.sched_getaffinity, os.wait4).

    python benchmarks/run.py [--count 10000] [--memory-count 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import datetime as dt
import gc
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lxml
import yaml
from lxml import etree

import ecoc
from ecoc.check import CHECK_DATETIME, load_approvals, resolve
from ecoc.config import open_repository
from ecoc.errors import EcocError
from ecoc.files import digest, list_yaml
from ecoc.ivi import xsd as ivi_xsd
from ecoc.ivi.render import render
from ecoc.model.effective import Effective, build_effective
from ecoc.model.record import parse_record
from ecoc.yamlload import Source

PROJECT = Path(__file__).resolve().parents[1]
WORK = PROJECT / "benchmarks" / "work"
GENERATOR = PROJECT / "benchmarks" / "generate_fleet.py"
SEED = 2026

# ecoc does not trust the stored digest of a record file modified less than 2 s before the
# cache was written, so the first check starts at least this long after the fleet is written.
SETTLE_SECONDS = 3.0

TARGET_COLD_VS_PARSE = 0.5
TARGET_WARM_SPEEDUP = 20.0
TARGET_RENDER_VS_PARSE = 0.5
TARGET_PEAK_RSS_MIB = 512.0
# The readiness rules may add at most this share to a cold `ecoc check -j 1`.
TARGET_RULES_SHARE = 0.25
# `ecoc check --base` after a change to one record: at most this share of a cold full check.
TARGET_BASE_SHARE = 0.05
TARGET_SIGN_VS_RAW = 0.6
TARGET_VERIFY_VS_PINNED = 0.5
# Messages signed and verified in step 7.
SIGNED_MESSAGES = 1000
# The whole release may take at most twice as long as signing the same certificates alone.
TARGET_RELEASE_VS_SIGN = 0.5
# Vehicles released in step 8.
RELEASED_VEHICLES = 1000
TARGET_AUDIT_VS_PINNED = 0.5

PROFILE_ROWS = 8
# ecoc functions whose cumulative time the profiles list, when they appear in the profile.
PROFILED_STEPS = (
    "run_check",
    "load_approvals",
    "list_yaml",
    "open_cache",
    "file_digest",
    "digest",
    "parse_record",
    "load_yaml",
    "type_layer",
    "check_record",
    "build_effective",
    "check_structure",
    "render",
    "xsd_findings",
    "validate_bytes",
    "save",
)

_CHECKED = re.compile(r"checked (\d+) records? \((\d+) from the cache\)")
# Logged with -v when a check reports the findings of an earlier one with the same inputs.
_REPLAYED = "nothing changed since the last check"
_SUMMARY = re.compile(r"(\d+) errors?, (\d+) warnings?, (\d+) info in (\d+) records?")


class BenchmarkError(Exception):
    """A step of the benchmark failed, so no page is written."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine ---------------------------------------------------------------------------


@dataclass
class Machine:
    cpus: int
    cpu_model: str
    system: str
    python: str
    ecoc: str
    lxml: str
    libxml2: str
    pyyaml: str
    date: str


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ecoc_revision() -> str:
    """Describe the commit of this checkout and whether tooling/ differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = (
            subprocess.run(
                ["git", "diff", "--quiet", "HEAD", "--", "tooling"], cwd=PROJECT, capture_output=True
            ).returncode
            != 0
        )
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    return f"commit {commit}" + (", with uncommitted changes in tooling/" if changed else "")


def describe_machine() -> Machine:
    libyaml = "with libyaml" if getattr(yaml, "__with_libyaml__", False) else "without libyaml"
    return Machine(
        cpus=len(os.sched_getaffinity(0)),
        cpu_model=_cpu_model(),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        ecoc=f"{ecoc.__version__} ({_ecoc_revision()})",
        lxml=lxml.__version__,
        libxml2=".".join(map(str, etree.LIBXML_VERSION)),
        pyyaml=f"{yaml.__version__} ({libyaml})",
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


# --- running commands ----------------------------------------------------------------------


@dataclass
class CommandRun:
    """One finished subprocess: wall time, exit code, peak RSS, CPU time and what it wrote to stderr."""

    wall: float
    exit_code: int
    peak_rss_kib: int
    stderr: str
    # User plus system seconds of the process and of the processes it waited for (workers, git).
    cpu: float = 0.0

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024

    def records_checked(self) -> int | None:
        found = _SUMMARY.search(self.stderr)
        return int(found.group(4)) if found else None

    def cache_hits(self) -> int | None:
        """Count the results that came from the cache; a replayed check counts as all of them."""
        if _REPLAYED in self.stderr:
            return self.records_checked()
        found = _CHECKED.search(self.stderr)
        return int(found.group(2)) if found else None

    def errors(self) -> int | None:
        found = _SUMMARY.search(self.stderr)
        return int(found.group(1)) if found else None


def ecoc_executable() -> list[str]:
    """Find the `ecoc` command of the Python environment that runs this script."""
    script = Path(sys.executable).with_name("ecoc")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ecoc"]


# Runs the command in argv and prints its wall time, exit code, peak RSS (ru_maxrss, KiB) and
# CPU seconds. Unlike Popen.wait, os.wait4 returns the resource usage of that one child. Its
# ru_maxrss is the largest RSS of the child or of any process the child waited for, and its
# times include those processes too.
_MEASURE_COMMAND = """
import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(time.perf_counter() - start, os.waitstatus_to_exitcode(status), usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
"""


def run_command(argv: list[str], cwd: Path, env: dict[str, str]) -> CommandRun:
    """Run a command through a small Python process that measures it.

    On Linux the ru_maxrss of a child also covers the peak memory of the process that started
    it: /bin/true started from a Python process of 600 MiB reports 610 MiB. This script uses
    hundreds of MiB before it measures memory, while the measuring process stays smaller than
    any ecoc run, so it does not change the result.
    """
    measure = [sys.executable, "-I", "-c", _MEASURE_COMMAND, *argv]
    # The files that the set-up wrote reach the disk first, so that the measured command does not
    # wait for their writeback when it writes files of its own.
    os.sync()
    with tempfile.TemporaryFile() as stderr:
        completed = subprocess.run(measure, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        stderr.seek(0)
        text = stderr.read().decode("utf-8", errors="replace")
    if completed.returncode != 0:
        raise BenchmarkError(f"measuring `{' '.join(argv)}` failed:\n{text.strip()}")
    wall, exit_code, peak_rss_kib, cpu = completed.stdout.split()
    return CommandRun(float(wall), int(exit_code), int(peak_rss_kib), text, float(cpu))


def ecoc_environment(cache_folder: Path | None, schema_path: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ECOC_CACHE_DIR", None)
    env.pop(ivi_xsd.ENVIRONMENT_VARIABLE, None)
    if cache_folder is not None:
        env["ECOC_CACHE_DIR"] = str(cache_folder)
    if schema_path is not None:
        env[ivi_xsd.ENVIRONMENT_VARIABLE] = str(schema_path)
    return env


def describe_check(jobs: int | None, default_jobs: int, options: str = "") -> str:
    """Format the `ecoc check` command with these jobs and options, as the page names it."""
    if jobs is None:
        return f"`ecoc check{options}` (default jobs = {default_jobs})"
    return f"`ecoc check -j {jobs}{options}`"


def check_arguments(jobs: int | None, *, cache: bool) -> list[str]:
    """Build the arguments of `ecoc check`. With -v it logs how many results came from the cache."""
    arguments = ["-v", "check"]
    if jobs is not None:
        arguments += ["-j", str(jobs)]
    if not cache:
        arguments.append("--no-cache")
    return arguments


def run_check_command(
    fleet: Path, count: int, jobs: int | None, env: dict[str, str], *, cache: bool = True
) -> CommandRun:
    run = run_command([*ecoc_executable(), *check_arguments(jobs, cache=cache)], fleet, env)
    if run.exit_code not in (0, 1):
        raise BenchmarkError(
            f"`ecoc {' '.join(check_arguments(jobs, cache=cache))}` in {fleet} "
            f"exited with {run.exit_code}:\n{run.stderr.strip()}"
        )
    if run.records_checked() != count:
        raise BenchmarkError(
            f"`ecoc check` in {fleet} reported {run.records_checked()} records, expected {count}:\n{run.stderr.strip()}"
        )
    return run


# --- fleets --------------------------------------------------------------------------------


def generate_fleet(count: int) -> Path:
    out = WORK / f"fleet-{count}"
    log(f"generating {count} records into {out.relative_to(PROJECT)}")
    command = [sys.executable, str(GENERATOR), "--count", str(count), "--out", str(out), "--seed", str(SEED)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise BenchmarkError(
            f"{GENERATOR.relative_to(PROJECT)} failed with exit code {completed.returncode} "
            f"for --count {count}:\n{completed.stderr.strip()}"
        )
    return out


def fleet_files(fleet: Path) -> tuple[list[str], list[str]]:
    """List the paths of the fleet's record files and approval files."""
    records = [path for path, _ in list_yaml(fleet, "records")]
    approvals = [path for path, _ in list_yaml(fleet, "approvals")]
    return records, approvals


# --- measurements --------------------------------------------------------------------------


@dataclass
class Series:
    """Repeated measurements of one quantity, in seconds unless stated."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, unit: str = "s", digits: int = 2) -> str:
        return f"{min(self.values):.{digits}f} to {max(self.values):.{digits}f} {unit}"


@dataclass
class CheckSeries:
    """Cold and warm `ecoc check` runs with one jobs setting."""

    label: str
    jobs: int | None
    cold: list[CommandRun] = field(default_factory=list)
    warm: list[CommandRun] = field(default_factory=list)

    @property
    def cold_times(self) -> Series:
        return Series([run.wall for run in self.cold])

    @property
    def warm_times(self) -> Series:
        return Series([run.wall for run in self.warm])


@dataclass
class RenderResult:
    render_validate: Series
    parse_validate: Series
    records: int
    skipped: int
    invalid: int


@dataclass
class MemoryRun:
    label: str
    jobs: int | None
    run: CommandRun


@dataclass
class Profile:
    """A cProfile summary: own time by area and cumulative time of ecoc's main steps."""

    title: str
    command: str
    wall: float
    total: float
    areas: list[tuple[str, float]]
    steps: list[tuple[str, float, int]]


def time_parse_baseline(paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            yaml.load(handle.read(), Loader=yaml.CSafeLoader)
    return time.perf_counter() - start


def measure_check(
    fleet: Path, count: int, jobs: int | None, label: str, repeat: int, schema_path: Path | None
) -> CheckSeries:
    """Run `ecoc check` from an empty cache folder, then once more with the cache it wrote."""
    series = CheckSeries(label, jobs)
    for attempt in range(repeat):
        cache_folder = WORK / f"cache-j{jobs or 'default'}-{attempt}"
        shutil.rmtree(cache_folder, ignore_errors=True)
        cache_folder.mkdir(parents=True)
        env = ecoc_environment(cache_folder, schema_path)
        cold = run_check_command(fleet, count, jobs, env)
        warm = run_check_command(fleet, count, jobs, env)
        log(
            f"{label}: cold {cold.wall:.2f} s, then with the cache {warm.wall:.2f} s "
            f"({warm.cache_hits()} of {count} results from the cache)"
        )
        series.cold.append(cold)
        series.warm.append(warm)
        shutil.rmtree(cache_folder)
    return series


def measure_without_rules(fleet: Path, count: int, repeat: int, schema_path: Path | None) -> Series | None:
    """Time cold `ecoc check -j 1` with the fleet's rules/ folder moved aside."""
    rules, parked = fleet / "rules", fleet / "rules.parked"
    if not rules.is_dir():
        return None
    times = Series()
    rules.rename(parked)
    try:
        for attempt in range(repeat):
            cache_folder = WORK / f"cache-norules-{attempt}"
            shutil.rmtree(cache_folder, ignore_errors=True)
            cache_folder.mkdir(parents=True)
            run = run_check_command(fleet, count, 1, ecoc_environment(cache_folder, schema_path))
            times.values.append(run.wall)
            shutil.rmtree(cache_folder)
    finally:
        parked.rename(rules)
    log(f"`ecoc check -j 1` without rules/: cold {times.median:.2f} s")
    return times


@dataclass
class BaseResult:
    """`ecoc check --base HEAD` runs after a change to one record and to one approval."""

    # Nothing changed: the fixed cost of start-up, loading the rules and asking git.
    unchanged: Series
    record: Series
    record_checked: int
    approval: Series
    approval_checked: int
    # Records of the fleet that name the changed approval.
    approval_records: int


def _git(fleet: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(fleet), "-c", "user.name=benchmark", "-c", "user.email=benchmark@ecoc.invalid", *args],
        check=True,
        capture_output=True,
    )


def _base_run(fleet: Path, schema_path: Path | None) -> CommandRun:
    arguments = ["-v", "check", "--base", "HEAD", "--no-cache"]
    run = run_command([*ecoc_executable(), *arguments], fleet, ecoc_environment(None, schema_path))
    if run.exit_code not in (0, 1):
        raise BenchmarkError(f"`ecoc {' '.join(arguments)}` in {fleet} exited with {run.exit_code}:\n{run.stderr}")
    return run


def measure_base(fleet: Path, repeat: int, schema_path: Path | None) -> BaseResult | None:
    """Commit the fleet to git, change one record and then one approval, and time `ecoc check --base`."""
    if shutil.which("git") is None:
        return None
    _git(fleet, "init", "-q")
    _git(fleet, "add", "-A")
    _git(fleet, "commit", "-q", "-m", "fleet")
    records, approvals = fleet_files(fleet)
    approval = Path(approvals[0])
    number = re.search(rb"TypeApprovalNumber: *['\"]?([^'\"\s]+)", approval.read_bytes())
    if number is None:
        raise BenchmarkError(f"{approval} has no TypeApprovalNumber")
    approval_records = sum(1 for path in records if number.group(1) in Path(path).read_bytes())
    result = BaseResult(Series(), Series(), 0, Series(), 0, approval_records)
    try:
        for _ in range(repeat):
            result.unchanged.values.append(_base_run(fleet, schema_path).wall)
        for changed in (Path(records[len(records) // 2]), approval):
            original = changed.read_bytes()
            changed.write_bytes(original + b"# changed by the benchmark\n")
            for _ in range(repeat):
                run = _base_run(fleet, schema_path)
                if changed == approval:
                    result.approval.values.append(run.wall)
                    result.approval_checked = run.records_checked() or 0
                else:
                    result.record.values.append(run.wall)
                    result.record_checked = run.records_checked() or 0
            changed.write_bytes(original)
    finally:
        shutil.rmtree(fleet / ".git")
    log(
        f"`ecoc check --base HEAD`: one record changed {result.record.median:.2f} s "
        f"({result.record_checked} checked), one approval changed {result.approval.median:.2f} s "
        f"({result.approval_checked} checked of its {approval_records} records)"
    )
    return result


@dataclass
class SigningResult:
    """Step 7: seconds for signing and verifying `messages` rendered messages, four ways."""

    messages: int
    raw_sign: Series
    ecoc_sign: Series
    pinned_verify: Series
    ecoc_verify: Series


def _test_seal() -> tuple[Any, Any, Any]:
    """A root CA and an RSA-2048 signing certificate it issued, made for the benchmark."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def certificate(name: str, key: Any, issuer_name: Any, issuer_key: Any, ca: bool) -> Any:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = dict.fromkeys(
            (
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ),
            False,
        )
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name or subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage), critical=True
            )
            .sign(issuer_key or key, hashes.SHA256())
        )

    root_key = rsa.generate_private_key(65537, 2048)
    root = certificate("Benchmark Root CA", root_key, None, None, True)
    key = rsa.generate_private_key(65537, 2048)
    leaf = certificate("Benchmark seal", key, root.subject, root_key, False)
    return root, key, leaf


def measure_signing(fleet: Path, repeat: int) -> SigningResult:
    """Sign and verify the first rendered messages of the fleet, against the library baselines."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from signxml.verifier import XMLVerifier

    from ecoc.signing import SigningKey, Verifier, sign

    effectives, _ = prepare_effective(fleet)
    messages = [render(e.header, e.coc).data for e in effectives[:SIGNED_MESSAGES] if e is not None]
    canonical = [etree.tostring(etree.fromstring(m), method="c14n", exclusive=True) for m in messages]
    root, key, leaf = _test_seal()
    seal = SigningKey(key, leaf)
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM).decode("ascii")
    result = SigningResult(len(messages), Series(), Series(), Series(), Series())
    signed: list[bytes] = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for data in canonical:
            key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        result.raw_sign.values.append(time.perf_counter() - start)
        start = time.perf_counter()
        signed = [sign(message, seal) for message in messages]
        result.ecoc_sign.values.append(time.perf_counter() - start)
        start = time.perf_counter()
        for data in signed:
            XMLVerifier().verify(data, x509_cert=leaf_pem)
        result.pinned_verify.values.append(time.perf_counter() - start)
        verifier = Verifier([root])
        start = time.perf_counter()
        for data in signed:
            verifier.verify(data)
        result.ecoc_verify.values.append(time.perf_counter() - start)
    log(
        f"signing {len(messages)} messages: raw {result.raw_sign.median:.2f} s, ecoc {result.ecoc_sign.median:.2f} s; "
        f"verifying: pinned {result.pinned_verify.median:.2f} s, ecoc {result.ecoc_verify.median:.2f} s"
    )
    return result


@dataclass
class ReleaseResult:
    """Step 8: wall seconds of `ecoc release` and of `ecoc sign` of the same vehicles, and the release's phases."""

    vehicles: int
    release: Series
    sign_only: Series
    # Median seconds of the phases `ecoc -v release` logs: check, signing, delivery and git.
    phases: dict[str, float]
    # CPU seconds (user plus system) of each command with the processes it waited for, and of
    # the NAP simulator's threads while the release ran.
    release_cpu: Series = field(default_factory=Series)
    sign_cpu: Series = field(default_factory=Series)
    simulator_cpu: Series = field(default_factory=Series)
    # CPU seconds of the git processes of the release's evidence commits and pushes, from its log.
    git_cpu: Series = field(default_factory=Series)
    # A cold `ecoc check --no-cache` of the same records: the readiness check that a release runs first.
    check: Series = field(default_factory=Series)
    check_cpu: Series = field(default_factory=Series)

    def cpu_floor(self, cpus: int, startup: float) -> float:
        """Return about the fewest wall seconds in which `cpus` CPUs can do the work that no release can skip.

        A release checks every record before it signs, signs each certificate, and commits and
        pushes the evidence with git, and the NAP simulator verifies every certificate it
        receives, all on the same machine. The check and `ecoc sign` each include one start-up
        of ecoc, and a release starts once, so one `startup` (seconds) is taken off.
        """
        signing = max(0.0, self.sign_cpu.median - startup)
        git = self.git_cpu.median if self.git_cpu.values else 0.0
        return (self.check_cpu.median + signing + git + self.simulator_cpu.median) / cpus


_PHASES = re.compile(r"release phases: check ([0-9.]+) s, signing ([0-9.]+) s, delivery ([0-9.]+) s, git ([0-9.]+) s")
# The CPU time of the git processes behind the release's commits and pushes, in the same log line.
_GIT_CPU = re.compile(r"git [0-9.]+ s \(([0-9.]+) s of CPU in git\)")


# IviVersionDateTime of the renders that `ecoc sign` then signs.
RENDER_TIME = "2026-12-01T10:00:00Z"


def measure_release(schema_path: Path | None, repeat: int) -> ReleaseResult | None:
    """Release a fleet to the tests' NAP simulator, and sign the same rendered files with `ecoc sign`."""
    if schema_path is None:
        log("release: skipped, a release needs the official schema (ECOC_XSD)")
        return None
    sys.path.insert(0, str(PROJECT / "tests"))
    from cryptography.hazmat.primitives import serialization

    from simulators import NapSimulator  # type: ignore[import-not-found]

    fleet = generate_fleet(RELEASED_VEHICLES)
    root_ca, key, leaf = _test_seal()
    result = ReleaseResult(RELEASED_VEHICLES, Series(), Series(), {})
    phases: dict[str, list[float]] = {"check": [], "signing": [], "delivery": [], "git": []}
    with tempfile.TemporaryDirectory(prefix="ecoc-release-") as folder:
        work = Path(folder)
        seal = work / "seal"
        seal.mkdir()
        (seal / "seal.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (seal / "seal.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        (seal / "root.pem").write_bytes(root_ca.public_bytes(serialization.Encoding.PEM))
        keys = ["--key", str(seal / "seal.key"), "--cert", str(seal / "seal.pem")]
        # The release checks that the seal's chain reaches a trust anchor before it signs.
        trust = "\nsigning: " + json.dumps({"trust": [str(seal / "root.pem")]}) + "\n"
        env = ecoc_environment(None, schema_path)
        rendered = work / "rendered"
        # The fleet folder has no git history of its own, so the render gets its version time given.
        render_run = run_command(
            [*ecoc_executable(), "--repo", str(fleet), "render", "--out", str(rendered), "--datetime", RENDER_TIME],
            PROJECT,
            env,
        )
        if render_run.exit_code != 0:
            raise BenchmarkError(f"`ecoc render` of the release fleet failed:\n{render_run.stderr.strip()}")
        files = sorted(str(path) for path in rendered.glob("*.xml"))
        for repetition in range(repeat):
            out = work / f"signed-{repetition}"
            # ecoc sign refuses a seal whose chain does not reach a root, so the root comes as the chain.
            chain = ["--chain", str(seal / "root.pem")]
            run = run_command([*ecoc_executable(), "sign", *files, "--out-dir", str(out), *keys, *chain], PROJECT, env)
            if run.exit_code != 0:
                raise BenchmarkError(f"`ecoc sign` of {len(files)} files failed:\n{run.stderr.strip()}")
            result.sign_only.values.append(run.wall)
            result.sign_cpu.values.append(run.cpu)
            shutil.rmtree(out)
            check = run_check_command(fleet, RELEASED_VEHICLES, None, env, cache=False)
            result.check.values.append(check.wall)
            result.check_cpu.values.append(check.cpu)
        for repetition in range(repeat):
            # A new simulator each time, which has not seen these IviReferenceIds yet.
            with NapSimulator(work / f"nap-{repetition}", trust=[root_ca]) as nap:
                settings = nap.settings(read_timeout=60.0).model_dump(mode="json", exclude_none=True)
                repo = work / f"repo-{repetition}"
                shutil.copytree(fleet, repo)
                with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
                    handle.write("\nrelease: " + json.dumps(settings) + "\n" + trust)
                origin = work / f"origin-{repetition}.git"
                _git(repo, "init", "-q", "-b", "main")
                _git(repo, "add", "-A")
                _git(repo, "commit", "-q", "-m", "fleet")
                subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True, capture_output=True)
                _git(repo, "remote", "add", "origin", str(origin))
                _git(repo, "push", "-q", "origin", "main")
                # While the release runs, this process only waits for it, so its CPU time is the simulator's.
                simulator_start = time.process_time()
                run = run_command([*ecoc_executable(), "-v", "--repo", str(repo), "release", *keys], PROJECT, env)
                result.simulator_cpu.values.append(time.process_time() - simulator_start)
                if run.exit_code != 0:
                    raise BenchmarkError(f"`ecoc release` exited with {run.exit_code}:\n{run.stderr.strip()[-2000:]}")
                if len(nap.accepted_ids) != RELEASED_VEHICLES:
                    raise BenchmarkError(f"the NAP simulator took {len(nap.accepted_ids)} certificates")
            result.release.values.append(run.wall)
            result.release_cpu.values.append(run.cpu)
            git_cpu = _GIT_CPU.search(run.stderr)
            if git_cpu is not None:
                result.git_cpu.values.append(float(git_cpu.group(1)))
            found = _PHASES.search(run.stderr)
            if found is not None:
                for name, value in zip(phases, found.groups(), strict=True):
                    phases[name].append(float(value))
            shutil.rmtree(repo)
            shutil.rmtree(origin)
    result.phases = {name: statistics.median(values) for name, values in phases.items() if values}
    shutil.rmtree(fleet)
    log(
        f"release of {RELEASED_VEHICLES}: {result.release.median:.2f} s; "
        f"ecoc sign of the same files: {result.sign_only.median:.2f} s"
    )
    return result


@dataclass
class AuditResult:
    """Step 9: seconds for `ecoc audit` of `entries` evidence entries, and for verifying their signatures alone."""

    entries: int
    audit: Series
    pinned: Series


def measure_audit(fleet: Path, schema_path: Path | None, repeat: int) -> AuditResult | None:
    """Release the fleet to an outbox (not timed), then audit its evidence against pinned verification."""
    if schema_path is None:
        log("audit: skipped, a release needs the official schema (ECOC_XSD)")
        return None
    from cryptography.hazmat.primitives import serialization
    from signxml.verifier import XMLVerifier

    root_ca, key, leaf = _test_seal()
    result = AuditResult(0, Series(), Series())
    with tempfile.TemporaryDirectory(prefix="ecoc-audit-") as folder:
        work = Path(folder)
        (work / "seal.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (work / "seal.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        (work / "root.pem").write_bytes(root_ca.public_bytes(serialization.Encoding.PEM))
        repo = work / "repo"
        shutil.copytree(fleet, repo)
        with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
            handle.write("\nsigning: " + json.dumps({"trust": [str(work / "root.pem")]}) + "\n")
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "fleet")
        env = ecoc_environment(None, schema_path)
        release = [
            *ecoc_executable(),
            "--repo",
            str(repo),
            "release",
            "--transport",
            "outbox",
            "--outbox",
            str(work / "outbox"),
            "--key",
            str(work / "seal.key"),
            "--cert",
            str(work / "seal.pem"),
        ]
        log("audit: releasing the fleet to an outbox to make its evidence")
        run = run_command(release, PROJECT, env)
        if run.exit_code != 0:
            raise BenchmarkError(f"`ecoc release` of the fleet failed:\n{run.stderr.strip()[-2000:]}")
        signed = [path.read_bytes() for path in sorted((repo / "signed").rglob("certificate.xml"))]
        result.entries = len(signed)
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM).decode("ascii")
        audit = [*ecoc_executable(), "--repo", str(repo), "audit", "--trust", str(work / "root.pem")]
        for _ in range(repeat):
            gc.collect()
            start = time.perf_counter()
            for data in signed:
                XMLVerifier().verify(data, x509_cert=leaf_pem)
            result.pinned.values.append(time.perf_counter() - start)
            run = run_command(audit, PROJECT, env)
            if run.exit_code != 0:
                raise BenchmarkError(f"`ecoc audit` found discrepancies or failed:\n{run.stderr.strip()[-2000:]}")
            result.audit.values.append(run.wall)
    log(f"audit of {result.entries}: {result.audit.median:.2f} s; pinned verification: {result.pinned.median:.2f} s")
    return result


def measure_startup(repeat: int) -> Series:
    """Time `ecoc --version`, which is interpreter start and ecoc's imports, the floor of every CLI run."""
    times = Series()
    for _ in range(repeat):
        run = run_command([*ecoc_executable(), "--version"], PROJECT, ecoc_environment(None, None))
        if run.exit_code != 0:
            raise BenchmarkError(f"`ecoc --version` exited with {run.exit_code}:\n{run.stderr.strip()}")
        times.values.append(run.wall)
    return times


def prepare_effective(fleet: Path) -> tuple[list[Effective | None], int]:
    """Build the effective trees of every record with the steps `check_record` takes before it
    renders, without rendering. Returns the trees and the number of records left out because
    they cannot be rendered. Approvals are loaded anew, so no tree contains render results yet."""
    repository = open_repository(fleet, explicit=True)
    index = load_approvals(list_yaml(repository.root, "approvals"))
    effectives: list[Effective | None] = []
    skipped = 0
    for path, relative in list_yaml(repository.root, "records"):
        data = Path(path).read_bytes()
        record = parse_record(data, Source(relative), digest(data))
        resolved, _ = resolve(record, index)
        if resolved is None:
            skipped += 1
            continue
        approval, variant, version = resolved
        effective, structure = build_effective(record, approval, variant, version, CHECK_DATETIME)
        renderable = (
            record.valid
            and approval.valid
            and variant.valid
            and version.valid
            and not any(finding.severity.blocking for finding in structure)
        )
        if not renderable:
            skipped += 1
            continue
        effectives.append(effective)
    return effectives, skipped


def render_and_validate(effectives: list[Effective | None], schema: ivi_xsd.IviSchema) -> tuple[list[bytes], int]:
    """Render and validate every effective tree. Returns the bytes and the number of invalid messages.

    Each tree is released once rendered, as in a real run, where a record's tree and the lines
    render() keeps on its nodes are freed before the next record. Keeping them all would make
    the timed pass grow the heap, which a real run does not.
    """
    rendered = []
    invalid = 0
    for position, effective in enumerate(effectives):
        assert effective is not None
        effectives[position] = None
        data = render(effective.header, effective.coc).data
        if schema.validate_bytes(data):
            invalid += 1
        rendered.append(data)
    return rendered, invalid


def time_render_and_validate(
    effectives: list[Effective | None], schema: ivi_xsd.IviSchema
) -> tuple[float, list[bytes], int]:
    gc.collect()
    start = time.perf_counter()
    rendered, invalid = render_and_validate(effectives, schema)
    return time.perf_counter() - start, rendered, invalid


def time_parse_and_validate(rendered: list[bytes], schema: ivi_xsd.IviSchema) -> tuple[float, int]:
    """Time lxml parsing plus validation of `rendered` with the schema object ecoc compiled."""
    compiled = schema.lxml_schema
    # The same parser settings ecoc uses for its own output.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    invalid = 0
    gc.collect()
    start = time.perf_counter()
    for data in rendered:
        if not compiled.validate(etree.fromstring(data, parser)):
            invalid += 1
    return time.perf_counter() - start, invalid


def measure_render(fleet: Path, schema: ivi_xsd.IviSchema, repeat: int) -> RenderResult:
    schema.compile()
    result = RenderResult(Series(), Series(), 0, 0, 0)
    for _ in range(repeat):
        effectives, result.skipped = prepare_effective(fleet)
        result.records = len(effectives)
        render_seconds, rendered, invalid = time_render_and_validate(effectives, schema)
        del effectives
        parse_seconds, parse_invalid = time_parse_and_validate(rendered, schema)
        result.invalid = max(result.invalid, invalid, parse_invalid)
        result.render_validate.values.append(render_seconds)
        result.parse_validate.values.append(parse_seconds)
        log(
            f"render + validate {render_seconds:.2f} s, parse + validate {parse_seconds:.2f} s "
            f"({len(rendered)} messages)"
        )
    return result


def measure_memory(count: int, schema_path: Path | None, default_jobs: int) -> list[MemoryRun]:
    fleet = generate_fleet(count)
    env = ecoc_environment(None, schema_path)
    runs = []
    for jobs in (1, None):
        label = describe_check(jobs, default_jobs, " --no-cache")
        run = run_check_command(fleet, count, jobs, env, cache=False)
        log(f"{label} on {count} records: {run.wall:.1f} s, peak RSS {run.peak_rss_mib:.0f} MiB")
        runs.append(MemoryRun(label, jobs, run))
    shutil.rmtree(fleet)
    return runs


# --- profiles of missed targets ------------------------------------------------------------


def _area(filename: str, function: str) -> str:
    """Group a profile entry: an ecoc module, a third-party package, the stdlib or a builtin."""
    if filename == "~":
        return function.strip("<>")
    if filename.startswith("<frozen"):
        return "imports (importlib)"
    if Path(filename).resolve() == Path(__file__).resolve():
        return "benchmarks/run.py"
    parts = Path(filename).parts
    if "ecoc" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("ecoc") :])
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    return "stdlib " + Path(filename).name


def summarize_profile(title: str, command: str, wall: float, stats: pstats.Stats) -> Profile:
    areas: dict[str, float] = {}
    steps: dict[str, tuple[float, int]] = {}
    for (filename, _, function), entry in stats.stats.items():  # type: ignore[attr-defined]
        calls, own, cumulative = entry[1], entry[2], entry[3]
        area = _area(filename, function)
        areas[area] = areas.get(area, 0.0) + own
        if function in PROFILED_STEPS and "ecoc" in Path(filename).parts:
            name = f"{_area(filename, function)}:{function}"
            steps[name] = (cumulative, calls)
    top_areas = sorted(areas.items(), key=lambda item: -item[1])[:PROFILE_ROWS]
    top_steps = sorted(((name, seconds, calls) for name, (seconds, calls) in steps.items()), key=lambda item: -item[1])
    del top_steps[PROFILE_ROWS:]
    return Profile(title, command, wall, stats.total_tt, top_areas, top_steps)  # type: ignore[attr-defined]


def profile_check_command(fleet: Path, count: int, schema_path: Path | None, *, warm: bool) -> Profile:
    """Profile `ecoc check -j 1` under cProfile, from an empty cache or with a filled one."""
    cache_folder = WORK / "cache-profile"
    shutil.rmtree(cache_folder, ignore_errors=True)
    cache_folder.mkdir(parents=True)
    env = ecoc_environment(cache_folder, schema_path)
    if warm:
        run_check_command(fleet, count, 1, env)
    output = WORK / "check.prof"
    arguments = check_arguments(1, cache=True)
    run = run_command([sys.executable, "-m", "cProfile", "-o", str(output), "-m", "ecoc", *arguments], fleet, env)
    if run.exit_code not in (0, 1) or not output.is_file():
        raise BenchmarkError(
            f"profiling `ecoc {' '.join(arguments)}` failed with exit code {run.exit_code}:\n{run.stderr.strip()}"
        )
    stats = pstats.Stats(str(output))
    output.unlink()
    shutil.rmtree(cache_folder)
    state = "with the cache of an earlier run" if warm else "from an empty cache folder"
    return summarize_profile(
        f"`ecoc check -j 1` {state}", f"python -m cProfile -m ecoc {' '.join(arguments)}", run.wall, stats
    )


def profile_render(fleet: Path, schema: ivi_xsd.IviSchema) -> Profile:
    effectives, _ = prepare_effective(fleet)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    render_and_validate(effectives, schema)
    profiler.disable()
    wall = time.perf_counter() - start
    return summarize_profile(
        "render + validate, one pass over fresh effective trees",
        "cProfile around the timed loop of step 4 (a)",
        wall,
        pstats.Stats(profiler),
    )


# --- the page ------------------------------------------------------------------------------


@dataclass
class Results:
    machine: Machine
    count: int
    repeat: int
    xsd: bool
    default_jobs: int
    approvals: int
    startup: Series
    baseline: Series
    checks: list[CheckSeries]
    render: RenderResult | None
    memory_count: int
    memory: list[MemoryRun]
    # Cold `ecoc check -j 1` with rules/ moved aside, to show what the rules cost.
    without_rules: Series | None = None
    base: BaseResult | None = None
    signing: SigningResult | None = None
    release: ReleaseResult | None = None
    audit: AuditResult | None = None
    profiles: list[Profile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def baseline_rate(self) -> float:
        return self.count / self.baseline.median


@dataclass
class Target:
    # Measurement kind: "cold", "warm", "render", "memory", "rules", "base", "base-scope", "sign", "verify"
    # or "release".
    kind: str
    name: str
    value: float
    goal: float
    # Whether larger values are better (rates, speed-ups) or smaller (memory).
    higher_is_better: bool
    unit: str
    # Jobs setting of the `ecoc check` runs the target is about, or None for the default jobs.
    jobs: int | None = None

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.higher_is_better else self.value < self.goal

    def verdict(self) -> str:
        return "pass" if self.met else "miss"

    def shortfall(self) -> str:
        if self.higher_is_better:
            missing = 1 - self.value / self.goal
            subject = {
                "cold": "the cold run",
                "warm": "the second run",
                "render": "(a)",
                "sign": "signing",
                "verify": "verification",
                "release": "the release",
                "audit": "the audit",
            }[self.kind]
            return f"{missing:.0%} below the target; {subject} would have to be {self.goal / self.value:.2f}x as fast"
        if self.unit == "%":
            return f"{self.value - self.goal:.1f} percentage points above the target"
        return f"{self.value - self.goal:.0f} {self.unit} ({self.value / self.goal - 1:.0%}) above the target"


def format_rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}"


def targets_of(results: Results) -> list[Target]:
    targets = []
    for series in results.checks:
        cold_rate = results.count / series.cold_times.median
        targets.append(
            Target(
                "cold",
                f"cold {series.label}: records/s against the parse-only rate",
                cold_rate / results.baseline_rate,
                TARGET_COLD_VS_PARSE,
                True,
                "x",
                series.jobs,
            )
        )
    for series in results.checks:
        targets.append(
            Target(
                "warm",
                f"second {series.label}: cold time / second-run time",
                series.cold_times.median / series.warm_times.median,
                TARGET_WARM_SPEEDUP,
                True,
                "x",
                series.jobs,
            )
        )
    if results.render is not None:
        render_result = results.render
        targets.append(
            Target(
                "render",
                "render + validate against parse + validate (throughput)",
                render_result.parse_validate.median / render_result.render_validate.median,
                TARGET_RENDER_VS_PARSE,
                True,
                "x",
            )
        )
    for memory in results.memory:
        if memory.jobs == 1:
            name = f"peak RSS of `ecoc check -j 1 --no-cache`, {results.memory_count:,} records"
            targets.append(Target("memory", name, memory.run.peak_rss_mib, TARGET_PEAK_RSS_MIB, False, "MiB"))
    if results.without_rules is not None:
        with_rules = results.checks[0].cold_times.median
        share = (with_rules / results.without_rules.median - 1) * 100
        targets.append(
            Target(
                "rules", "time the rules add to a cold `ecoc check -j 1`", share, TARGET_RULES_SHARE * 100, False, "%"
            )
        )
    if results.signing is not None:
        signing = results.signing
        targets.append(
            Target(
                "sign",
                "ecoc signing against RSA-2048 signing of the canonical bytes alone (throughput)",
                signing.raw_sign.median / signing.ecoc_sign.median,
                TARGET_SIGN_VS_RAW,
                True,
                "x",
            )
        )
        targets.append(
            Target(
                "verify",
                "ecoc verification against verifying with a pinned certificate (throughput)",
                signing.pinned_verify.median / signing.ecoc_verify.median,
                TARGET_VERIFY_VS_PINNED,
                True,
                "x",
            )
        )
    if results.release is not None:
        targets.append(
            Target(
                "release",
                f"`ecoc release` of {results.release.vehicles:,} vehicles to the NAP simulator, against "
                "`ecoc sign` of the same files (throughput)",
                results.release.sign_only.median / results.release.release.median,
                TARGET_RELEASE_VS_SIGN,
                True,
                "x",
            )
        )
    if results.audit is not None:
        targets.append(
            Target(
                "audit",
                f"`ecoc audit` of {results.audit.entries:,} evidence entries, against verifying their signatures "
                "with the certificate pinned (throughput)",
                results.audit.pinned.median / results.audit.audit.median,
                TARGET_AUDIT_VS_PINNED,
                True,
                "x",
            )
        )
    if results.base is not None:
        cold = results.checks[-1].cold_times.median
        targets.append(
            Target(
                "base",
                "`ecoc check --base` after a change to one record, against a cold `ecoc check` (default jobs)",
                results.base.record.median / cold * 100,
                TARGET_BASE_SHARE * 100,
                False,
                "%",
            )
        )
        targets.append(
            Target(
                "base-scope",
                "records `ecoc check --base` checks after a change to one approval, other than that approval's own",
                abs(results.base.approval_checked - results.base.approval_records),
                1,
                False,
                "records",
            )
        )
    return targets


def results_table(results: Results) -> list[str]:
    count = results.count
    baseline_rate = f"{results.baseline_rate:,.0f}"
    lines = [
        "| measurement | median | spread | records/s | compared with | ratio | peak RSS |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
        f"| parse only: PyYAML CSafeLoader, in-process | {results.baseline.median:.2f} s | "
        f"{results.baseline.spread()} | {baseline_rate} | (baseline) | | |",
        f"| `ecoc --version` (start-up only) | {results.startup.median:.2f} s | {results.startup.spread()} | | | | |",
    ]
    for series in results.checks:
        cold, warm = series.cold_times, series.warm_times
        cold_rss = max(run.peak_rss_mib for run in series.cold)
        warm_rss = max(run.peak_rss_mib for run in series.warm)
        lines.append(
            f"| cold {series.label} | {cold.median:.2f} s | {cold.spread()} | "
            f"{format_rate(count, cold.median)} | parse only | {count / cold.median / results.baseline_rate:.2f}x | "
            f"{cold_rss:.0f} MiB |"
        )
        lines.append(
            f"| second {series.label}, nothing changed | {warm.median:.2f} s | "
            f"{warm.spread()} | {format_rate(count, warm.median)} | cold, same jobs | "
            f"{cold.median / warm.median:.1f}x faster | {warm_rss:.0f} MiB |"
        )
    if results.render is not None:
        render_result = results.render
        records = render_result.records
        first, second = render_result.render_validate, render_result.parse_validate
        lines.append(
            f"| (a) render + validate, in-process | {first.median:.2f} s | {first.spread()} | "
            f"{format_rate(records, first.median)} | (b) | {second.median / first.median:.2f}x | |"
        )
        lines.append(
            f"| (b) lxml parse + validate, same bytes | {second.median:.2f} s | "
            f"{second.spread()} | {format_rate(records, second.median)} | | | |"
        )
    if results.without_rules is not None:
        without = results.without_rules
        with_rules = results.checks[0].cold_times.median
        lines.append(
            f"| cold `ecoc check -j 1` without rules/ | {without.median:.2f} s | {without.spread()} | "
            f"{format_rate(count, without.median)} | cold `ecoc check -j 1` | "
            f"rules add {(with_rules / without.median - 1):.0%} | |"
        )
    if results.base is not None:
        base = results.base
        full = results.checks[-1].cold_times.median
        lines.append(
            f"| `ecoc check --base HEAD`, nothing changed | {base.unchanged.median:.2f} s | "
            f"{base.unchanged.spread()} | | cold `ecoc check` (default jobs) | "
            f"{base.unchanged.median / full:.1%} of its time | |"
        )
        lines.append(
            f"| `ecoc check --base HEAD`, one record changed ({base.record_checked} checked) | "
            f"{base.record.median:.2f} s | {base.record.spread()} | | cold `ecoc check` (default jobs) | "
            f"{base.record.median / full:.1%} of its time | |"
        )
        lines.append(
            f"| `ecoc check --base HEAD`, one approval changed ({base.approval_checked} checked, "
            f"the approval has {base.approval_records}) | {base.approval.median:.2f} s | {base.approval.spread()} | "
            f"{format_rate(base.approval_checked, base.approval.median)} | cold `ecoc check` (default jobs) | "
            f"{base.approval.median / full:.1%} of its time | |"
        )
    if results.signing is not None:
        signing = results.signing
        count_signed = signing.messages
        rows = (
            ("(c) RSA-2048 signature of each canonical message, `cryptography` alone", signing.raw_sign, "", ""),
            (
                "(d) `ecoc.signing.sign`, EReg profile",
                signing.ecoc_sign,
                "(c)",
                f"{signing.raw_sign.median / signing.ecoc_sign.median:.2f}x",
            ),
            ("(e) signxml verify with the certificate pinned", signing.pinned_verify, "", ""),
            (
                "(f) `ecoc.signing.Verifier`, chain to the root checked once",
                signing.ecoc_verify,
                "(e)",
                f"{signing.pinned_verify.median / signing.ecoc_verify.median:.2f}x",
            ),
        )
        for label, timing, versus, ratio in rows:
            lines.append(
                f"| {label} | {timing.median:.2f} s | {timing.spread()} | {format_rate(count_signed, timing.median)} "
                f"| {versus} | {ratio} | |"
            )
    if results.release is not None:
        release = results.release
        lines.append(
            f"| (g) `ecoc sign` of {release.vehicles:,} rendered files, one command | {release.sign_only.median:.2f} s "
            f"| {release.sign_only.spread()} | {format_rate(release.vehicles, release.sign_only.median)} | | | |"
        )
        lines.append(
            f"| (h) `ecoc release` of the same {release.vehicles:,} vehicles to the NAP simulator | "
            f"{release.release.median:.2f} s | {release.release.spread()} | "
            f"{format_rate(release.vehicles, release.release.median)} | (g) | "
            f"{release.sign_only.median / release.release.median:.2f}x | |"
        )
    if results.audit is not None:
        audit = results.audit
        lines.append(
            f"| (i) signxml verify of the {audit.entries:,} signed certificates, certificate pinned | "
            f"{audit.pinned.median:.2f} s | {audit.pinned.spread()} | "
            f"{format_rate(audit.entries, audit.pinned.median)} | | | |"
        )
        lines.append(
            f"| (j) `ecoc audit` of the same {audit.entries:,} evidence entries | {audit.audit.median:.2f} s | "
            f"{audit.audit.spread()} | {format_rate(audit.entries, audit.audit.median)} | (i) | "
            f"{audit.pinned.median / audit.audit.median:.2f}x | |"
        )
    for memory in results.memory:
        run = memory.run
        lines.append(
            f"| {memory.label}, {results.memory_count:,} records, one run | "
            f"{run.wall:.1f} s | | {format_rate(results.memory_count, run.wall)} | | | "
            f"{run.peak_rss_mib:.0f} MiB |"
        )
    return lines


def profile_section(profile: Profile) -> list[str]:
    lines = [
        f"**{profile.title}** ({profile.command}; {profile.wall:.1f} s wall under the profiler, "
        f"{profile.total:.1f} s of profiled own time):",
        "",
        "| own time by area | seconds | share |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {area} | {seconds:.2f} | {seconds / profile.total:.0%} |" for area, seconds in profile.areas]
    if profile.steps:
        lines += ["", "| ecoc step, cumulative | seconds | calls |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {seconds:.2f} | {calls:,} |" for name, seconds, calls in profile.steps]
    return [*lines, ""]


def method_lines(results: Results) -> list[str]:
    xsd_state = (
        "was part of every `ecoc check` run and of step 4; the schema path came from ECOC_XSD"
        if results.xsd
        else "was not part of the measured runs, because ECOC_XSD was not set; step 4 was skipped"
    )
    memory = (
        f"`ecoc check -j 1 --no-cache` and `ecoc check --no-cache` once each on a fleet made the same "
        f"way with `--count {results.memory_count}`. Peak RSS is ru_maxrss from os.wait4, read by a "
        "small process that starts ecoc, because on Linux a child's ru_maxrss also covers the peak "
        "memory of the process that started it. With default jobs it is the largest single process (parent "
        "or one worker), not their sum."
        if results.memory_count
        else "skipped (--memory-count 0)."
    )
    render = (
        "- Render: in-process, one core. For each repetition the approvals are loaded again and "
        "every record's effective tree is built without rendering (not timed). Then one timed "
        "pass does (a) `ecoc.ivi.render.render` plus `IviSchema.validate_bytes` per record, as one "
        "`ecoc render -j 1` does: the lines of shared approval data are rendered once and reused, "
        "and each record's tree is released after it is rendered. (b) times `lxml.etree.fromstring` "
        "plus `validate` of the bytes from (a) with the same compiled schema (the published XSD "
        "with `sig:Signature` made optional, as ecoc compiles it)."
    )
    return [
        f"- XSD validation {xsd_state}.",
        "- Before the first run the ecoc package is compiled to bytecode (`compileall`), as pip does "
        "when it installs a wheel, so that no command pays for compiling ecoc's modules from source.",
        f"- Fleet: `benchmarks/generate_fleet.py --count {results.count} --seed {SEED}` "
        f"({results.count:,} records, {results.approvals} approvals, in benchmarks/work/). The files "
        "sit in the page cache for every run.",
        "- Parse only: read each record and approval file and call "
        "`yaml.load(data, Loader=yaml.CSafeLoader)`, one process; the file list is made before timing. "
        "Records/s counts records only, the time covers all files.",
        f"- Cold: `ecoc -v check -j 1` and `ecoc -v check` (default jobs = {results.default_jobs}, "
        "the available cores) as subprocesses, with ECOC_CACHE_DIR set to a new empty folder, "
        f"at least {SETTLE_SECONDS:.0f} s after the fleet was written. Wall time includes "
        "interpreter start-up and writing the cache.",
        "- Second run: the same command right after each cold run, with the cache that cold run "
        "wrote. With nothing changed, ecoc reports the findings it stored with a fingerprint of "
        "every input (`-v` logs that it did), so the run reads file sizes, times and inodes only.",
        *([render] if results.render is not None else []),
        "- Changed: the fleet is committed to a new git repository, `ecoc -v check --base HEAD "
        "--no-cache` runs once with nothing changed, then one record file (and "
        "after it one approval file) gets a comment line appended, and `ecoc -v check --base HEAD "
        "--no-cache` runs with the default jobs and no cache, as in a fresh CI job. The approval row "
        "also counts the fleet's records that name the approval's number, which is what the run "
        "should check. The git repository is removed afterwards.",
        f"- Signing: in-process, one core, on the first {SIGNED_MESSAGES} rendered messages of the fleet, with "
        "an RSA-2048 key and a certificate made for the run. (c) signs the exclusive canonical form of each "
        "message with `cryptography` alone (PKCS#1 v1.5, SHA-256); (d) signs each message with "
        "`ecoc.signing.sign`. (e) verifies each signed message with signxml, the certificate pinned; "
        "(f) verifies each with one `ecoc.signing.Verifier`: shape checks, the chain to the root once, "
        "then the pinned signature check.",
        f"- Release: a fleet of {RELEASED_VEHICLES:,} records from the same generator, rendered once "
        "with `ecoc render` (not timed). (g) signs the rendered files with one `ecoc sign FILE... --out-dir` "
        "command. (h) copies the fleet into a new git repository on branch main with a bare remote, and runs "
        "`ecoc -v release` with the default jobs: the readiness check of every record, render, "
        "XSD validation, signing, the evidence files, two commits and two pushes, and one HTTPS delivery "
        "per vehicle to the NAP simulator of the tests (tests/simulators.py, in the benchmark's process, "
        "with TLS client certificates), which checks each signature before it accepts. CPU times come "
        "from os.wait4, which counts the processes a command waited for (check workers, git), and from "
        "the benchmark's own process time while the release runs, which is the simulator's. A cold "
        "`ecoc check --no-cache` of the same records (default jobs) gives the CPU time of the readiness "
        "check alone.",
        "- Audit: the timing fleet is committed to a new git repository and released once to an outbox "
        "folder (not timed), which writes one evidence entry per record. (i) verifies each signed "
        "certificate in-process with signxml, the certificate pinned, on one core. (j) runs `ecoc audit` "
        "with the default jobs: the ledger chain and digests, every signature and chain at its signing "
        "time, every manifest, delivery result and receipt, a render of each record at its source "
        "commit compared with the certificate, and the git history of signed/ with the commit trailer "
        "of each ledger line.",
        "- Rules: cold `ecoc check -j 1` once more per repetition with the fleet's rules/ folder "
        "moved aside, so that no readiness rule runs; the share is the cold time with rules over "
        "the cold time without, minus one.",
        f"- Memory: {memory}",
        f"- Every timing except the memory runs is repeated {results.repeat} "
        f"time{'' if results.repeat == 1 else 's'}; the table gives the median and the spread "
        "(lowest to highest). Peak RSS is the largest of the repetitions.",
    ]


def target_lines(results: Results) -> list[str]:
    lines = ["| target | measured | goal | result |", "| --- | ---: | ---: | --- |"]
    for target in targets_of(results):
        sign = "≥" if target.higher_is_better else "<"
        if target.unit == "x":
            value, goal = f"{target.value:.2f}x", f"{sign} {target.goal:g}x"
        else:
            # Shares keep a decimal, so that 4.6 % against a goal of < 5 % does not read as 5 %.
            measured = f"{target.value:.1f}" if target.unit == "%" else f"{target.value:.0f}"
            value, goal = f"{measured} {target.unit}", f"{sign} {target.goal:g} {target.unit}"
        lines.append(f"| {target.name} | {value} | {goal} | {target.verdict()} |")
    return lines


def miss_facts(results: Results, target: Target) -> list[str]:
    """List measured facts that bound or explain a missed target."""
    if target.kind == "release" and results.release is not None:
        phases = results.release.phases
        if not phases:
            return []
        release = results.release
        listed = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items())
        facts = [
            f"The release spends: {listed} (medians from its log); the rest is start-up and imports "
            f"({results.startup.median:.2f} s for `ecoc --version`).",
            f"The readiness check of every record alone takes {phases.get('check', 0):.2f} s, "
            f"against {release.sign_only.median:.2f} s for the whole `ecoc sign` command.",
        ]
        if release.check_cpu.values and release.simulator_cpu.values:
            cpus = results.machine.cpus
            allowed = release.sign_only.median / target.goal
            floor = release.cpu_floor(cpus, results.startup.median)
            facts.append(
                f"CPU time (user and system, medians): `ecoc release` {release.release_cpu.median:.2f} s with its "
                f"check workers and git; the NAP simulator {release.simulator_cpu.median:.2f} s while it ran; "
                f"a cold `ecoc check --no-cache` of the same {release.vehicles:,} records "
                f"{release.check_cpu.median:.2f} s ({release.check.median:.2f} s wall); `ecoc sign` "
                f"{release.sign_cpu.median:.2f} s"
                + (
                    f"; the git processes of the release's commits and pushes {release.git_cpu.median:.2f} s."
                    if release.git_cpu.values
                    else "."
                )
            )
            verdict = (
                "so no release on this machine can meet the target, however little the rest of its delivery costs"
                if floor > allowed
                else f"which leaves {allowed - floor:.2f} s for the rest of the delivery and for waiting"
            )
            facts.append(
                f"The readiness check, the signing, git and the simulator's checks of the certificates alone "
                f"need about {floor * cpus:.2f} s of CPU time, so at least {floor:.2f} s of wall time on {cpus} "
                f"CPUs, against the {allowed:.2f} s that the target allows the whole release, {verdict}."
            )
        return facts
    if target.kind == "rules" and results.without_rules is not None:
        added = results.checks[0].cold_times.median - results.without_rules.median
        return [f"The rules add {added / results.count * 1000:.3f} ms per record."]
    series = next((series for series in results.checks if series.jobs == target.jobs), None)
    if series is None:
        return []
    startup = results.startup.median
    cold = series.cold_times.median
    if target.kind == "cold":
        per_record = cold / results.count * 1000
        per_record_parse = results.baseline.median / results.count * 1000
        facts = [f"Per record: {per_record:.2f} ms wall, against {per_record_parse:.3f} ms to parse the YAML alone."]
        if series.jobs is None:
            single = results.checks[0].cold_times.median
            facts.append(f"The default jobs ({results.default_jobs}) ran {single / cold:.2f}x as fast as `-j 1`.")
        return facts
    if target.kind == "warm":
        bound = cold / startup
        fact = (
            f"`ecoc --version` alone takes {startup:.2f} s (interpreter start and imports) and no run is faster, "
            f"so with a cold run of {cold:.2f} s the speed-up cannot exceed {bound:.1f}x"
        )
        if bound < target.goal:
            fact += f", below the {target.goal:g}x target whatever the cache does"
        return [f"{fact}. The second run took {series.warm_times.median:.2f} s."]
    return []


def base_facts(results: Results) -> list[str]:
    """Facts on what a `--base` run spends whatever the change, for a missed `--base` target."""
    if results.base is None:
        return []
    base = results.base
    return [
        f"With nothing changed, `ecoc check --base HEAD` takes {base.unchanged.median:.2f} s: start-up "
        f"({results.startup.median:.2f} s for `ecoc --version`), importing the model, and reading the rules, "
        "whose expressions compile as they first run when no rule file changed; git finds the change and "
        "copies the base on a second thread meanwhile.",
        f"Checking the changed record, here and at the base, adds {base.record.median - base.unchanged.median:.2f} s.",
    ]


def missed_lines(results: Results) -> list[str]:
    missed = [target for target in targets_of(results) if not target.met]
    if not missed:
        return ["Every target was met."]
    lines = []
    for target in missed:
        lines.append(f"- {target.name}: {target.shortfall()}.")
        facts = base_facts(results) if target.kind == "base" else miss_facts(results, target)
        lines += [f"  {fact}" for fact in facts]
    if results.profiles:
        lines += [
            "",
            "Profiles of the missed measurements (cProfile adds overhead, so read the shares, not the absolute times):",
            "",
        ]
        for profile in results.profiles:
            lines += profile_section(profile)
    return lines


def render_page(results: Results, command: str) -> str:
    machine = results.machine
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `{command}` on {machine.date}, all numbers from that one run. "
        + (
            "XSD validation against the official IVI 2.0 schema (path from ECOC_XSD) was part of the measured runs."
            if results.xsd
            else "XSD validation was **not** part of the measured runs (ECOC_XSD was not set)."
        ),
        "",
        "## Machine",
        "",
        f"- CPUs available (os.sched_getaffinity): {machine.cpus}; {machine.cpu_model}",
        f"- {machine.system}, Python {machine.python}",
        f"- ecoc {machine.ecoc}",
        f"- lxml {machine.lxml}, libxml2 {machine.libxml2}, PyYAML {machine.pyyaml}",
        "",
        f"## Results ({results.count:,} records)",
        "",
        *results_table(results),
        "",
        "## Targets",
        "",
        *target_lines(results),
        "",
        *missed_lines(results),
        "",
    ]
    if results.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in results.notes], ""]
    lines += [
        "## How it was measured",
        "",
        *method_lines(results),
        "",
        "## Not covered",
        "",
        "- `ecoc render` and `ecoc import` as commands; step 4 times the render and validation "
        "inside one process only.",
        "- A warm cache after a partial change, a cold page cache, other file systems and other "
        "fleet shapes (the generator clones the example records).",
        "- Memory of `ecoc check` with a cache, and the summed RSS of parallel workers.",
        f"- Machines with more than {machine.cpus} CPUs, where the default jobs run more workers.",
        "- A second run after record files changed less than 2 s before the cache was written: ecoc "
        "does not trust their times then and checks again, and the benchmark waits to avoid that case.",
        "",
        "## Running it",
        "",
        "```sh",
        "export ECOC_XSD=/path/to/IVI-2.0.xsd   # optional; without it XSD validation is not measured",
        "python benchmarks/run.py               # --count, --memory-count (0 skips), --repeat, --output",
        "```",
        "",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def load_schema(fleet: Path) -> tuple[ivi_xsd.IviSchema | None, Path | None]:
    """Load the relaxed schema named by ECOC_XSD and check it against the fleet's sha256 pin."""
    location = ivi_xsd.locate(None, None)
    if location is None:
        return None, None
    repository = open_repository(fleet, explicit=True)
    path = location.path.resolve()
    schema = ivi_xsd.load(ivi_xsd.SchemaLocation(path, location.origin), repository.settings.xsd.sha256, relaxed=True)
    return schema, path


def collect_notes(results: Results) -> None:
    for series in results.checks:
        for run in series.cold + series.warm:
            if run.errors():
                results.notes.append(f"{series.label} reported {run.errors()} errors; the fleet is not clean.")
                break
        short = [run.cache_hits() for run in series.warm if run.cache_hits() != results.count]
        if short:
            results.notes.append(f"second {series.label} took only {short} of {results.count} results from the cache.")
    if results.render is not None and (results.render.skipped or results.render.invalid):
        results.notes.append(
            f"step 4 left out {results.render.skipped} records that cannot be "
            f"rendered; {results.render.invalid} rendered messages were invalid."
        )


def compile_package() -> None:
    """Write the bytecode of the ecoc package, which an editable install leaves to the first import.

    Without it, a machine with PYTHONDONTWRITEBYTECODE set compiles every module from source in
    each command, which no installed copy does.
    """
    if not compileall.compile_dir(PROJECT / "tooling" / "ecoc", quiet=1):
        raise BenchmarkError("compileall could not compile the ecoc package")


def measure(options: argparse.Namespace) -> Results:
    compile_package()
    machine = describe_machine()
    default_jobs = machine.cpus
    log(f"ecoc {machine.ecoc}, {machine.cpus} CPUs, command {' '.join(ecoc_executable())}")

    fleet = generate_fleet(options.count)
    written_at = time.monotonic()
    schema, schema_path = load_schema(fleet)
    log("XSD validation: " + (f"on, {schema_path}" if schema else "off (ECOC_XSD is not set)"))
    records, approvals = fleet_files(fleet)
    if len(records) != options.count:
        raise BenchmarkError(f"{fleet} contains {len(records)} records, expected {options.count}")

    startup = measure_startup(options.repeat)
    baseline = Series([time_parse_baseline(records + approvals) for _ in range(options.repeat)])
    log(f"parse only: {baseline.median:.2f} s")
    time.sleep(max(0.0, written_at + SETTLE_SECONDS - time.monotonic()))
    checks = [
        measure_check(fleet, options.count, jobs, describe_check(jobs, default_jobs), options.repeat, schema_path)
        for jobs in (1, None)
    ]
    without_rules = measure_without_rules(fleet, options.count, options.repeat, schema_path)
    render_result = measure_render(fleet, schema, options.repeat) if schema is not None else None
    base = measure_base(fleet, options.repeat, schema_path)
    signing = measure_signing(fleet, options.repeat)
    release = measure_release(schema_path, options.repeat)
    audit = measure_audit(fleet, schema_path, options.repeat)

    results = Results(
        machine,
        options.count,
        options.repeat,
        schema is not None,
        default_jobs,
        len(approvals),
        startup,
        baseline,
        checks,
        render_result,
        options.memory_count,
        [],
        without_rules,
        base,
        signing,
        release,
        audit,
    )
    add_profiles(results, fleet, schema, schema_path)
    if options.memory_count:
        results.memory = measure_memory(options.memory_count, schema_path, default_jobs)
    collect_notes(results)
    return results


def add_profiles(results: Results, fleet: Path, schema: ivi_xsd.IviSchema | None, schema_path: Path | None) -> None:
    """Profile the measurements whose target was missed, to show where the time goes."""
    missed = {target.kind for target in targets_of(results) if not target.met}
    profiles: list[tuple[str, Callable[[], Profile]]] = []
    if "cold" in missed:
        profiles.append(("cold check", lambda: profile_check_command(fleet, results.count, schema_path, warm=False)))
    if "warm" in missed:
        profiles.append(("second check", lambda: profile_check_command(fleet, results.count, schema_path, warm=True)))
    if "render" in missed and schema is not None:
        profiles.append(("render", lambda: profile_render(fleet, schema)))
    for name, make_profile in profiles:
        log(f"profiling the {name}")
        results.profiles.append(make_profile())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count", type=int, default=10_000, help="records in the fleet for the timing steps (default 10000)"
    )
    parser.add_argument(
        "--memory-count",
        type=int,
        default=100_000,
        help="records in the fleet for the peak-memory step; 0 skips it (default 100000)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="repetitions of each timing; the page gives medians (default 3)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=PROJECT / "BENCHMARKS.md",
        help="page to write (default: BENCHMARKS.md at the repository root)",
    )
    options = parser.parse_args(argv)
    if options.count < 1 or options.repeat < 1 or options.memory_count < 0:
        parser.error("--count and --repeat must be at least 1, --memory-count at least 0")
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "wait4"):
        parser.error("this script needs Linux (os.sched_getaffinity and os.wait4)")

    try:
        results = measure(options)
    except BenchmarkError as exc:
        print(f"error: {exc}\nno page was written", file=sys.stderr)
        return 1
    except EcocError as exc:
        print(f"error: {exc.diagnostics()}\nno page was written", file=sys.stderr)
        return 1

    command = "python benchmarks/run.py " + " ".join(argv) if argv else "python benchmarks/run.py"
    page = render_page(results, command.strip())
    options.output.write_text(page, encoding="utf-8")
    print("\n".join(results_table(results)))
    print()
    print("\n".join(target_lines(results)))
    log(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
