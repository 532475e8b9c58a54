"""What ecoc needs from git: commit times, changed files and lines, files as they were at a commit.

Git runs as a subprocess with a fixed argument list. User text (a base name, paths, search
strings) only ever follows --end-of-options, --, -f FILE or stdin, so it never becomes an option.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ecoc.errors import ConfigError, UsageError


def head_commit_time(root: Path) -> str | None:
    """Return the committer date of HEAD in strict ISO 8601, or None outside a repository with commits."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%cI", "HEAD", "--"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except FileNotFoundError:
        raise ConfigError("git is not installed", "install git, or pass --datetime") from None
    if completed.returncode != 0:
        if "dubious ownership" in completed.stderr:
            raise ConfigError(
                f"git refuses to read {root}: the folder belongs to another user",
                f"run: git config --global --add safe.directory {root}",
            )
        return None
    return completed.stdout.strip() or None


def uncommitted(root: Path, folders: tuple[str, ...], ignored: bool = False) -> list[str]:
    """Files below `folders` that differ from HEAD (changed, added, deleted or untracked).

    With `ignored`, files that .gitignore or .git/info/exclude hide are listed too.
    """
    return [path for _, path in uncommitted_status(root, folders, ignored)]


def uncommitted_status(root: Path, folders: tuple[str, ...], ignored: bool = False) -> list[tuple[str, str]]:
    """Return `uncommitted`'s files with git's two-letter status (` M`, `D `, `??`, `!!` and so on)."""
    shown = ["--ignored=matching"] if ignored else []
    completed = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain=v1", "-z", "--untracked-files=all", *shown, "--", *folders],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if completed.returncode != 0:
        return []
    entries = iter(completed.stdout.decode("utf-8", "replace").split("\0"))
    result = []
    for entry in entries:
        if len(entry) <= 3:
            continue
        status = entry[:2]
        result.append((status, entry[3:]))
        if "R" in status or "C" in status:
            # With -z, the source path of a rename or copy follows as an entry without a status.
            source = next(entries, "")
            if source:
                result.append((status, source))
    return result


def hidden_files(root: Path, folders: tuple[str, ...], suffixes: tuple[str, ...]) -> list[str]:
    """Return files below `folders` whose changes git status does not show, so that no review saw them.

    They are files that .gitignore or .git/info/exclude hide (only those ending in `suffixes`),
    and tracked files marked skip-worktree or assume-unchanged, whose edits git leaves out.
    """
    hidden = [
        path
        for status, path in uncommitted_status(root, folders, ignored=True)
        if status == "!!" and path.endswith(suffixes)
    ]
    completed = _git(root, "ls-files", "-v", "-z", "--", *folders)
    for entry in completed.stdout.decode("utf-8", "replace").split("\0"):
        # ls-files -v marks skip-worktree with S, and assume-unchanged with a lower-case letter.
        if len(entry) > 2 and (entry[0] == "S" or entry[0].islower()):
            hidden.append(entry[2:])
    return sorted(set(hidden))


# Repository folders known to sit at the top of their git repository.
_AT_TOP: set[str] = set()


def _require_top(root: Path) -> None:
    """Raise ConfigError when `root` lies below the top of its git repository.

    git names files from the top of the repository, and ecoc from the folder of ecoc.yaml. Below
    the top the two never match, so a change would look like no change at all.
    """
    key = str(root)
    if key in _AT_TOP:
        return
    completed = subprocess.run(
        ["git", "-C", key, "rev-parse", "--show-prefix"], capture_output=True, check=False, timeout=60
    )
    prefix = completed.stdout.decode("utf-8", "replace").strip() if completed.returncode == 0 else ""
    if prefix:
        raise ConfigError(
            f"{root} is the folder {prefix.rstrip('/')} of a larger git repository; ecoc needs ecoc.yaml at the "
            "top of its git repository",
            "make the compliance repository a git repository of its own, or move ecoc.yaml, approvals/, "
            "records/, rules/ and signed/ to the top of this one",
        )
    _AT_TOP.add(key)


def _git(root: Path, *args: str, stdin: bytes | None = None, timeout: int = 600) -> subprocess.CompletedProcess[bytes]:
    """Run git in `root` with a fixed argument list; user text only ever follows --end-of-options or --."""
    try:
        _require_top(root)
        return subprocess.run(
            ["git", "-C", str(root), "-c", "core.quotepath=off", *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise ConfigError(
            "git is not installed", "install git; --base compares with a commit of the repository"
        ) from None


def _refusal(root: Path, completed: subprocess.CompletedProcess[bytes]) -> None:
    stderr = completed.stderr.decode("utf-8", "replace")
    if "dubious ownership" in stderr:
        raise ConfigError(
            f"git refuses to read {root}: the folder belongs to another user",
            f"run: git config --global --add safe.directory {root}",
        )
    if "not a git repository" in stderr:
        raise ConfigError(
            f"{root} is not a git repository",
            "this command reads the repository's git history; run it in a clone of the repository",
        )


_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# The tree without files, which every git repository knows: the base before the first commit.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def _sha(commit: str) -> str:
    """A commit id as resolve_commit returns it; anything else never reaches git."""
    if not _SHA.fullmatch(commit):
        raise ValueError(f"not a commit id: {commit!r}")
    return commit


def resolve_commit(root: Path, ref: str, option: str = "--base") -> str:
    """Return the commit `ref` names, or raise a usage error that says how to fetch it."""
    if not ref or ref.startswith("-") or any(ord(c) < 32 for c in ref):
        raise UsageError(
            f"{option} {ref!r} is not a commit or branch name", f"name a branch or commit, as in {option} origin/main"
        )
    completed = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    _refusal(root, completed)
    if completed.returncode != 0 and ref == "HEAD" and not _git(root, "rev-list", "-n", "1", "--all").stdout.strip():
        # Before the first commit, the base is a repository without files.
        return EMPTY_TREE
    if completed.returncode != 0:
        shallow = _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == b"true"
        # A range, a tree or a file may exist, but it is not one commit.
        other = None if shallow else _not_a_commit(ref)
        if shallow:
            hint = (
                "this clone is shallow; fetch the full history (git fetch --unshallow, or fetch-depth: 0 in "
                "actions/checkout) and the base branch"
            )
        else:
            hint = other or _fetch_hint(ref)
        problem = "does not name one commit" if other else "no such commit in this repository"
        raise UsageError(f"{option} {ref}: {problem}", hint)
    return completed.stdout.decode().strip()


def _not_a_commit(ref: str) -> str | None:
    """Return how to name one commit when `ref` names a range, a tree or a file; None otherwise."""
    if ".." in ref:
        first = ref.split("..")[0] or "HEAD"
        return f"{ref} is a range of commits; name the one commit to compare with, such as {first}"
    if ref.endswith("^{tree}") or ":" in ref:
        return f"{ref} names a tree or a file, not a commit; name a branch or commit, such as main"
    return None


def _fetch_hint(ref: str) -> str:
    """Say how to name a base that is missing from a full clone."""
    if re.search(r"[~^@]", ref):
        # An expression such as main~1000 counts back from a commit that exists.
        return f"{ref} points further back than the history of this repository goes; name a commit that git log lists"
    return f"fetch it first (for example git fetch origin {ref.split('/')[-1]}), or name a commit"


def changed_files(root: Path, commit: str) -> dict[str, str]:
    """Files that differ between `commit` and the working tree, with git's status letter.

    The letters are A (added), D (deleted), M (modified) and T (type changed); untracked files
    count as added.
    """
    diff = _git(root, "diff", "--name-status", "-z", "--no-renames", commit, "--")
    _refusal(root, diff)
    fields = _names(diff.stdout)
    changed = {fields[i + 1]: fields[i][:1] for i in range(0, len(fields) - 1, 2)}
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z")
    for name in _names(untracked.stdout):
        changed.setdefault(name, "A")
    return dict(sorted(changed.items()))


def _names(output: bytes) -> list[str]:
    return [name.decode("utf-8", "surrogateescape") for name in output.split(b"\0") if name]


_HUNK = re.compile(rb"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", re.MULTILINE)


def changed_lines(root: Path, commit: str, paths: list[str]) -> dict[str, frozenset[int]]:
    """Return the lines of each file (as it is now) that differ from `commit`, or all lines of a new file."""
    lines: dict[str, frozenset[int]] = {}
    if not paths:
        return lines
    completed = _git(
        root, "diff", "-U0", "--no-renames", "--no-color", commit, "--", *[f":(literal){p}" for p in paths]
    )
    current: str | None = None
    collected: set[int] = set()
    for line in completed.stdout.splitlines():
        if line.startswith(b"+++ "):
            if current is not None:
                lines[current] = frozenset(collected)
            name = line[4:].decode("utf-8", "surrogateescape")
            current = name[2:] if name.startswith("b/") else None
            collected = set()
        elif current is not None:
            match = _HUNK.match(line)
            if match:
                start, count = int(match.group(1)), int(match.group(2) or 1)
                collected.update(range(start, start + count))
    if current is not None:
        lines[current] = frozenset(collected)
    for path in paths:
        if path not in lines and (root / path).is_file():
            try:
                count = (root / path).read_bytes().count(b"\n") + 1
            except OSError:
                continue
            lines[path] = frozenset(range(1, count + 1))
    return lines


def read_working(root: Path, path: str) -> bytes | None:
    try:
        return (root / path).read_bytes()
    except OSError:
        return None


def read_at(root: Path, commit: str, paths: list[str]) -> dict[str, bytes]:
    """Return the contents of `paths` at `commit`, leaving out paths that do not exist there."""
    wanted = [p for p in paths if "\n" not in p]
    blobs = _blobs(root, [f"{commit}:{path}" for path in wanted])
    return {path: data for path, data in zip(wanted, blobs, strict=True) if data is not None}


def _blobs(root: Path, names: list[str]) -> list[bytes | None]:
    """Read the blobs `commit:path` names, in one `git cat-file --batch` call; None where one is absent."""
    if not names:
        return []
    request = "".join(f"{name}\n" for name in names).encode("utf-8", "surrogateescape")
    output = _git(root, "cat-file", "--batch", stdin=request).stdout
    found: list[bytes | None] = []
    position = 0
    for _ in names:
        end = output.index(b"\n", position)
        header = output[position:end].split()
        position = end + 1
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            found.append(output[position : position + size])
            position += size + 1
        else:
            found.append(None)
    return found


def grep_files(root: Path, commit: str | None, needles: list[str], folder: str, *, extended: bool = False) -> list[str]:
    """Files below `folder` (in the working tree, or at `commit`) that contain one of `needles`.

    The needles are fixed strings, or POSIX extended regular expressions when `extended` is set.
    """
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as patterns:
        patterns.write("".join(f"{needle}\n" for needle in needles if "\n" not in needle))
        patterns.flush()
        where = [_sha(commit)] if commit is not None else ["--untracked"]
        kind = "-E" if extended else "-F"
        completed = _git(root, "grep", "-l", "-z", kind, "--no-color", "-f", patterns.name, *where, "--", folder)
    names = _names(completed.stdout)
    if commit is not None:
        names = [name.split(":", 1)[1] if name.startswith(commit + ":") else name for name in names]
    return names


def export(root: Path, commit: str, folders: list[str], files: list[str], destination: Path) -> None:
    """Write `folders` and `files` as they are at `commit` into `destination`; absent ones are skipped."""
    listed = _git(
        root, "ls-tree", "-z", "--name-only", "--end-of-options", commit, "--", *[f":(literal){f}" for f in folders]
    )
    present = _names(listed.stdout)
    if present:
        # `git archive` takes no --; each path starts with its :(literal) magic, never with a dash.
        completed = _git(root, "archive", "--format=tar", _sha(commit), *[f":(literal){p}" for p in present])
        if completed.returncode != 0:
            raise ConfigError(
                f"cannot read {commit[:12]} from git: {completed.stderr.decode('utf-8', 'replace').strip()}",
                "check that the repository is complete (git fsck)",
            )
        with tarfile.open(fileobj=io.BytesIO(completed.stdout)) as archive:
            archive.extractall(destination, filter="data")
    inside = destination.resolve()
    for start in range(0, len(files), 2000):
        for path, data in read_at(root, commit, files[start : start + 2000]).items():
            target = (destination / path).resolve()
            if not target.is_relative_to(inside):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def git_text(root: Path, failure: str, *args: str) -> str:
    """Run git with a fixed argument list and return its output, or raise ConfigError that starts with `failure`."""
    completed = _git(root, *args)
    if completed.returncode != 0:
        raise _failed(failure, completed, "check the repository (git status)")
    return completed.stdout.decode("utf-8", "surrogateescape")


def changed_between(root: Path, base: str, tip: str, paths: tuple[str, ...]) -> list[str]:
    """List the files below `paths` that differ between the commits `base` and `tip`."""
    output = git_text(
        root, "cannot compare two commits", "diff", "--name-only", "-z", "--no-renames", base, tip, "--", *paths
    )
    return [name for name in output.split("\0") if name]


def _output(completed: subprocess.CompletedProcess[bytes]) -> str:
    return completed.stdout.decode("utf-8", "replace").strip()


def _failed(what: str, completed: subprocess.CompletedProcess[bytes], hint: str) -> ConfigError:
    text = completed.stderr.decode("utf-8", "replace")
    if "index.lock" in text:
        return ConfigError(
            f"{what}: git's index is locked (.git/index.lock), because another git process runs or one was killed",
            "when no git process runs in this repository, delete .git/index.lock and run the command again",
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # git gives its reason on the first fatal: or error: line, and later lines only add advice.
    reasons = [line.split(":", 1)[1].strip() for line in lines if line.startswith(("fatal:", "error:"))]
    detail = "git failed"
    if reasons:
        detail = reasons[0]
    elif lines:
        detail = lines[-1]
    # A server states its own reason (branch protection, permissions) on remote: lines.
    remote = [line.split(":", 1)[1].strip() for line in lines if line.startswith("remote:")]
    remote = [line for line in remote if line]
    if remote:
        detail += "; the remote says: " + " ".join(remote)[:500]
    return ConfigError(f"{what}: {detail}", hint)


def index_lock(root: Path) -> Path | None:
    """Return git's index lock file when it exists: another git process runs, or one was killed."""
    completed = _git(root, "rev-parse", "--git-path", "index.lock")
    path = _output(completed)
    if completed.returncode != 0 or not path:
        return None
    lock = Path(path) if Path(path).is_absolute() else root / path
    return lock if lock.exists() else None


def ignored(root: Path, path: str) -> bool | None:
    """Return whether git ignores `path` (relative to `root`, and it need not exist); None outside a git repository."""
    completed = _git(root, "check-ignore", "-q", "--", path)
    if completed.returncode not in (0, 1):
        return None
    return completed.returncode == 0


def head(root: Path) -> str | None:
    """The commit HEAD names, or None before the first commit."""
    completed = _git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    _refusal(root, completed)
    return _output(completed) or None


def current_branch(root: Path) -> str | None:
    """The checked-out branch, or None on a detached HEAD."""
    completed = _git(root, "symbolic-ref", "--quiet", "--short", "HEAD")
    return _output(completed) or None if completed.returncode == 0 else None


def has_remote(root: Path, remote: str) -> bool:
    return remote in _output(_git(root, "remote")).split()


def commit_files(root: Path, folder: str, message: str) -> str:
    """Commit every new or changed file below `folder`, and nothing else, with `message`."""
    added = _git(root, "add", "-A", "--", f":(literal){folder}")
    if added.returncode != 0:
        raise _failed("cannot add the evidence to git", added, "check the repository (git status)")
    author = [] if _output(_git(root, "config", "user.email")) else ["-c", "user.name=ecoc release"]
    email = [] if author == [] else ["-c", "user.email=ecoc-release@localhost"]
    # The release's commits start no background garbage collection, which would compete with the
    # signing and delivery that follow. A CI clone is discarded after the job anyway.
    committed = _git(
        root,
        *author,
        *email,
        "-c",
        "gc.auto=0",
        "-c",
        "maintenance.auto=false",
        "commit",
        "--no-verify",
        "--quiet",
        "-F",
        "-",
        "--",
        f":(literal){folder}",
        stdin=message.encode("utf-8"),
    )
    if committed.returncode != 0:
        raise _failed("cannot commit the evidence", committed, "check the repository (git status)")
    found = head(root)
    assert found is not None
    return found


def signs_commits(root: Path) -> bool:
    """Return whether git is set to sign every commit (commit.gpgsign)."""
    return _output(_git(root, "config", "--type=bool", "commit.gpgsign")) == "true"


# The ref that `commit_paths` builds its commit on before HEAD moves to it.
_STAGING_REF = "refs/ecoc/release-commit"


def _identity(root: Path, role: str) -> bytes:
    """Return git's author or committer line ("Name <email> seconds zone"), with ecoc's name when git has none."""
    fallback: tuple[str, ...] = ()
    if not _output(_git(root, "config", "user.email")):
        fallback = ("-c", "user.name=ecoc release", "-c", "user.email=ecoc-release@localhost")
    completed = _git(root, *fallback, "var", f"GIT_{role}_IDENT")
    if completed.returncode != 0:
        raise _failed("cannot tell who commits the evidence", completed, "set user.name and user.email in git")
    return completed.stdout.strip()


def _data(content: bytes) -> bytes:
    return b"data %d\n%s\n" % (len(content), content)


def commit_paths(root: Path, paths: list[str], message: str) -> str:
    """Commit the working-tree content of `paths` on top of HEAD, and update the index for them.

    A release commits thousands of files at a time, so git fast-import writes the new objects as
    one pack, where `git add` and `git commit` would write one loose object file per file. HEAD
    moves only if no other process moved it meanwhile. Returns the new commit.
    """
    parent = head(root)
    if parent is None:
        raise ConfigError(f"{root}: no commit to add the evidence to", "commit the sources first")
    stream = [
        f"commit {_STAGING_REF}\n".encode(),
        b"author " + _identity(root, "AUTHOR") + b"\n",
        b"committer " + _identity(root, "COMMITTER") + b"\n",
        _data(message.encode("utf-8")),
        f"from {parent}\n".encode(),
    ]
    entries = []
    for path in sorted(set(paths)):
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", path):
            raise ConfigError(f"{path}: not a name the evidence archive uses", "report this as a bug in ecoc")
        content = (root / path).read_bytes()
        stream += [f"M 100644 inline {path}\n".encode(), _data(content)]
        blob = hashlib.sha1(b"blob %d\0%s" % (len(content), content), usedforsecurity=False).hexdigest()
        entries.append(f"100644 {blob}\t{path}\0")
    stream.append(b"done\n")
    imported = _git(root, "fast-import", "--quiet", "--done", "--force", stdin=b"".join(stream))
    if imported.returncode != 0:
        raise _failed("cannot commit the evidence", imported, "check the repository (git fsck)")
    commit = _output(_git(root, "rev-parse", "--verify", "--quiet", f"{_STAGING_REF}^{{commit}}"))
    subject = message.split("\n", 1)[0]
    moved = _git(root, "update-ref", "-m", f"commit: {subject}", "HEAD", commit, parent)
    _git(root, "update-ref", "-d", _STAGING_REF)
    if moved.returncode != 0:
        raise _failed("cannot move the branch to the evidence commit", moved, "run the release again")
    indexed = _git(root, "update-index", "-z", "--index-info", stdin="".join(entries).encode())
    if indexed.returncode != 0:
        raise _failed("cannot record the evidence in git's index", indexed, "check the repository (git status)")
    # The new entries carry no file times yet; refreshing them spares the next status a full hash.
    _git(root, "update-index", "-q", "--refresh")
    return commit


def ahead_of(root: Path, remote: str, branch: str) -> int:
    """How many commits HEAD has that the remote branch, as last fetched, lacks; -1 when it is unknown."""
    completed = _git(root, "rev-list", "--count", f"refs/remotes/{remote}/{branch}..HEAD", "--")
    return int(_output(completed)) if completed.returncode == 0 else -1


def fetch(root: Path, remote: str, branch: str) -> None:
    completed = _git(
        root, "fetch", "--quiet", "--end-of-options", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}"
    )
    if completed.returncode != 0:
        text = completed.stderr.decode("utf-8", "replace")
        if "couldn't find remote ref" in text:
            raise ConfigError(
                f"cannot fetch {branch} from {remote}: the remote has no branch {branch}",
                f"push {branch} to {remote} first (git push {remote} {branch}), or set main_branch in ecoc.yaml",
            )
        raise _failed(f"cannot fetch {branch} from {remote}", completed, "check the remote's URL and credentials")


def push(root: Path, remote: str, branch: str) -> bool:
    """Push HEAD to the remote branch; False when the remote moved on (the push lost a race)."""
    completed = _git(root, "push", "--porcelain", "--end-of-options", remote, f"HEAD:refs/heads/{branch}")
    if completed.returncode == 0:
        return True
    text = (completed.stdout + completed.stderr).decode("utf-8", "replace")
    if "[rejected]" in text or "non-fast-forward" in text or "fetch first" in text or "stale info" in text:
        return False
    raise _failed(f"cannot push to {remote}", completed, "check the remote's URL, credentials and branch protection")


def reset_to(root: Path, commit: str) -> None:
    completed = _git(root, "reset", "--hard", "--quiet", _sha(commit))
    if completed.returncode != 0:
        raise _failed("cannot move to the new head of the branch", completed, "check the repository (git status)")


def restore(root: Path, paths: list[str]) -> None:
    """Put tracked files back as HEAD has them."""
    if paths:
        _git(root, "checkout", "HEAD", "--", *[f":(literal){p}" for p in paths])


def remote_head(root: Path, remote: str, branch: str) -> str | None:
    completed = _git(root, "rev-parse", "--verify", "--quiet", f"refs/remotes/{remote}/{branch}^{{commit}}")
    return _output(completed) or None


def tracked(root: Path, paths: list[str]) -> set[str]:
    """Which of `paths` the HEAD commit has (staged files do not count)."""
    if not paths:
        return set()
    completed = _git(root, "ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *[f":(literal){p}" for p in paths])
    return set(_names(completed.stdout))


def unstage(root: Path, folder: str) -> None:
    """Make the index agree with HEAD below `folder`, leaving the files as they are."""
    _git(root, "reset", "-q", "HEAD", "--", f":(literal){folder}")


def first_change(root: Path, path: str) -> str | None:
    """Return the first commit on HEAD that changed `path`, or None."""
    completed = _git(root, "log", "--reverse", "--format=%H", "HEAD", "--", f":(literal){path}")
    lines = _output(completed).split()
    return lines[0] if lines else None


def changes_matching(root: Path, since: str, paths: list[str], pattern: str) -> list[str]:
    """Describe the commits after `since` whose diff of `paths` adds or removes a line matching `pattern`.

    Each is "<short sha> <date> by <author>: <subject>". A `since` before the first commit lists all.
    """
    exists = _git(root, "rev-parse", "--verify", "--quiet", f"{since}^{{commit}}").returncode == 0
    span = [f"{since}..HEAD"] if exists else ["HEAD"]
    completed = _git(
        root,
        "log",
        "--format=%h %cI by %an <%ae>: %s",
        "-G",
        pattern,
        *span,
        "--",
        *[f":(literal){path}" for path in paths],
    )
    return [line for line in _output(completed).splitlines() if line]


def last_change_time(root: Path, paths: tuple[str, ...]) -> str | None:
    """The committer date of the last commit that changed one of `paths`, in strict ISO 8601."""
    completed = _git(root, "log", "-1", "--format=%cI", "HEAD", "--", *[f":(literal){p}" for p in paths])
    return _output(completed) or None


def own_commits(root: Path, upstream: str) -> list[tuple[str, dict[str, bytes], list[dict[str, object]]]]:
    """The commits HEAD has that `upstream` lacks, oldest first, as evidence steps to replay.

    Each step is the commit message, the files it added or changed below signed/ (without the
    ledger) with their contents, and the ledger events it appended (without their chain fields).
    A commit that changes anything outside signed/ cannot be replayed.
    """
    import json

    base = _output(_git(root, "merge-base", "HEAD", _sha(upstream)))
    listed = _git(root, "rev-list", "--reverse", f"{_sha(base)}..HEAD", "--")
    steps = []
    for commit in _output(listed).split():
        message = _git(root, "log", "-1", "--format=%B", commit, "--").stdout.decode("utf-8")
        names = _names(_git(root, "diff-tree", "--no-commit-id", "--name-only", "-r", "-z", commit).stdout)
        outside = [name for name in names if not name.startswith("signed/")]
        if outside:
            raise ConfigError(
                f"commit {commit[:12]} is not pushed and changes {outside[0]}, outside signed/",
                "push or remove that commit by hand; the release replays only its own evidence commits",
            )
        files = read_at(root, commit, [name for name in names if name != "signed/ledger.jsonl"])
        ledger = read_at(root, commit, ["signed/ledger.jsonl"]).get("signed/ledger.jsonl", b"")
        before = read_at(root, f"{commit}^", ["signed/ledger.jsonl"]).get("signed/ledger.jsonl", b"")
        added = ledger[len(before) :] if ledger.startswith(before) else ledger
        events = []
        for line in added.split(b"\n"):
            if line:
                event = json.loads(line)
                event.pop("seq", None)
                event.pop("prev", None)
                events.append(event)
        steps.append((message, files, events))
    return steps


def commit_exists(root: Path, commit: str) -> bool:
    """Whether the repository has this commit (a manifest names it; history may have been rewritten)."""
    if not _SHA.fullmatch(commit):
        return False
    return _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def is_shallow(root: Path) -> bool:
    completed = _git(root, "rev-parse", "--is-shallow-repository")
    _refusal(root, completed)
    return _output(completed) == "true"


def log_names(root: Path, paths: list[str], merges: bool = False) -> bytes:
    """Read one `git log -z --name-status` pass over the commits that changed `paths`, oldest first.

    With `merges`, every merge is listed with what it changed against each of its parents, and no
    side of a merge is left out of the walk, so a merge that drops a file one parent had shows.
    """
    completed = _git(
        root,
        "log",
        "-z",
        "--reverse",
        "--no-renames",
        *(["--full-history", "--diff-merges=separate"] if merges else []),
        "--name-status",
        "--format=%x1e%H%x1f%P%x1f%an <%ae>%x1f%aI%x1f%cn <%ce>%x1f%cI%x1f%B%x1f",
        "HEAD",
        "--",
        *[f":(literal){path}" for path in paths],
    )
    _refusal(root, completed)
    if completed.returncode != 0:
        raise _failed("cannot read the history", completed, "check the repository (git log)")
    return completed.stdout


def commit_graph(root: Path) -> list[tuple[str, tuple[str, ...], str, str, str]]:
    """Return every commit HEAD reaches as (commit, parents, subject, committer, commit date), newest first."""
    completed = _git(root, "log", "--format=%H%x1f%P%x1f%s%x1f%cn <%ce>%x1f%cI%x1e", "HEAD", "--")
    if completed.returncode != 0:
        raise _failed("cannot read the history", completed, "check the repository (git log)")
    graph = []
    for chunk in completed.stdout.decode("utf-8", "replace").split("\x1e"):
        parts = chunk.strip("\n").split("\x1f")
        if len(parts) == 5:
            graph.append((parts[0], tuple(parts[1].split()), parts[2], parts[3], parts[4]))
    return graph


def read_many(root: Path, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """Return the contents of (commit, path) pairs in one `git cat-file --batch` call; absent ones are left out."""
    pairs = [(commit, path) for commit, path in wanted if "\n" not in path]
    blobs = _blobs(root, [f"{_sha(commit)}:{path}" for commit, path in pairs])
    return {pair: data for pair, data in zip(pairs, blobs, strict=True) if data is not None}
