"""Git for progress commits: a subprocess runner, identity, merge drivers, and the allowed-files gate."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nanecho_core import env
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import atomic_write_text, check_inside, read_text, resolved
from nanecho_core.redact import redact
from nanecho_core.store import PROGRESS_DIR, PROGRESS_FILE, RunPaths

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
README_START = "<!-- nanecho:progress:start -->"
README_END = "<!-- nanecho:progress:end -->"

GITATTRIBUTES_LINES = (
    "*/cache/metadata.json merge=nanecho-metadata",
    "*/sessions.jsonl merge=union",
    "*/training_summary.json merge=nanecho-derived",
    "PROGRESS.md merge=nanecho-derived",
)
# The same patterns as this project's own .training-progress/.gitignore (weights never reach git).
GITIGNORE_LINES = (
    "*.pt",
    "*.pth",
    "*.bin",
    "*.safetensors",
    "*.tmp",
    ".lock",
    "artifacts/",
    "**/cache/checkpoints/",
    "**/cache/data/",
    ".metadata.verified",
)
# Derived files keep the upstream side during a rebase; progress-commit regenerates them afterwards.
DERIVED_DRIVER = {
    "merge.nanecho-derived.name": "NanEcho derived file: regenerated after merging, never merged",
    "merge.nanecho-derived.driver": "true",
}


@dataclass(frozen=True)
class GitResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """stdout and stderr together, credentials redacted."""
        return redact((self.stdout + "\n" + self.stderr).strip())


class Git:
    """Runs git in one repository, never through a shell; every failure message is redacted."""

    def __init__(self, root: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.root = root
        environ = dict(os.environ)
        # The merge drivers are console scripts of this environment: make them findable by git.
        bin_dir = str(Path(sys.executable).parent)
        environ["PATH"] = bin_dir + os.pathsep + environ.get("PATH", "")
        environ.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C", "GIT_EDITOR": "true"})
        environ.update(extra_env or {})
        self.env = environ

    def run(self, *args: str, check: bool = True, input_text: str | None = None) -> GitResult:
        try:
            proc = subprocess.run(
                ["git", *args],
                cwd=self.root,
                env=self.env,
                input=input_text,
                capture_output=True,
                encoding="utf-8",
                errors="replace",  # git's messages may quote bytes that are not UTF-8 (a ref name)
                check=False,
            )
        except FileNotFoundError as exc:
            raise NanechoError("git is not installed or not on PATH") from exc
        result = GitResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        log.debug("git %s -> %s", redact(" ".join(args)), proc.returncode)
        if check and not result.ok:
            detail = result.output.splitlines()[-1] if result.output else f"exit {result.returncode}"
            raise NanechoError(f"git {args[0]} failed: {detail}", self.root)
        return result

    def with_env(self, extra: Mapping[str, str]) -> Git:
        """A runner for the same repository with some variables changed (e.g. GIT_INDEX_FILE)."""
        other = Git.__new__(Git)
        other.root, other.env = self.root, {**self.env, **extra}
        return other

    def blob(self, rev: str, path: str) -> bytes | None:
        """The bytes of `path` at `rev`, or None when the file does not exist there."""
        proc = subprocess.run(
            ["git", "cat-file", "blob", f"{rev}:{path}"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            check=False,
        )
        return proc.stdout if proc.returncode == 0 else None

    def out(self, *args: str) -> str:
        return self.run(*args).stdout.strip()

    def config_get(self, key: str, *, local: bool = False) -> str | None:
        scope = ("--local",) if local else ()
        result = self.run("config", *scope, "--get", key, check=False)
        return result.stdout.strip() or None if result.ok else None

    def head(self) -> str | None:
        result = self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        return result.stdout.strip() if result.ok else None

    def current_branch(self) -> str | None:
        result = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return result.stdout.strip() if result.ok else None

    def is_shallow(self) -> bool:
        return self.out("rev-parse", "--is-shallow-repository") == "true"


def open_repo(root: Path) -> Git:
    """A Git runner for the work tree at `root`; a path that is not one is a user error."""
    if not root.is_dir():
        raise NanechoError("repository root not found", root)
    git = Git(root)
    result = git.run("rev-parse", "--show-toplevel", check=False)
    if not result.ok:
        raise NanechoError("not a git work tree (run git init or pass --root)", root)
    top = Path(result.stdout.strip())
    if resolved(top) != resolved(root):
        raise NanechoError(f"--root must be the top of the work tree ({top})", root)
    return git


def identity_env(git: Git, name: str | None = None, email: str | None = None) -> dict[str, str]:
    """GIT_{AUTHOR,COMMITTER}_{NAME,EMAIL} to fill only what git lacks; a configured identity wins.

    Nothing is written to any git config: an existing user identity is never rewritten.
    """
    bot_name, bot_email = env.bot_identity()
    wanted = {"NAME": name or bot_name, "EMAIL": email or bot_email}
    configured = {"NAME": git.config_get("user.name"), "EMAIL": git.config_get("user.email")}
    filled: dict[str, str] = {}
    for role in ("AUTHOR", "COMMITTER"):
        for field in ("NAME", "EMAIL"):
            var = f"GIT_{role}_{field}"
            if not os.environ.get(var) and not configured[field]:
                filled[var] = wanted[field]
    return filled


def _completed(existing: str, lines: Sequence[str]) -> str | None:
    """`existing` with the `lines` it lacks appended, or None when it has them all."""
    present = {line.strip() for line in existing.splitlines()}
    missing = [line for line in lines if line not in present]
    if not missing:
        return None
    prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
    return prefix + "\n".join(missing) + "\n"


def ensure_progress_files(root: Path) -> list[Path]:
    """Create or complete .training-progress/.gitattributes and .gitignore; returns those changed.

    Both are read before either is written: one that cannot be read leaves both as they were.
    """
    progress = root / PROGRESS_DIR
    updates: dict[Path, str] = {}
    for name, lines in ((".gitattributes", GITATTRIBUTES_LINES), (".gitignore", GITIGNORE_LINES)):
        path = progress / name
        text = _completed(read_text(path) if os.path.lexists(path) else "", lines)
        if text is not None:
            updates[path] = text
    for path, text in updates.items():
        atomic_write_text(path, text)
    return list(updates)


def install_merge_drivers(git: Git) -> list[str]:
    """Set the metadata and derived-file merge drivers in the local git config when missing."""
    installed: list[str] = []
    if git.config_get("merge.nanecho-metadata.driver", local=True) is None:
        from nanecho_core.index_merge import install_merge_driver

        install_merge_driver(git.root)  # the metadata index owns its driver's definition
        installed.append("merge.nanecho-metadata.driver")
    for key, value in DERIVED_DRIVER.items():
        if git.config_get(key, local=True) is None:
            git.run("config", "--local", key, value)
            installed.append(key)
    return installed


def allowed_files(paths: RunPaths, readme: Path | None) -> list[Path]:
    """The only files a progress commit may contain (absolute or root-relative, as given)."""
    progress = paths.root / PROGRESS_DIR
    files = [
        paths.metadata,
        paths.sessions,
        paths.summary,
        progress / PROGRESS_FILE,
        progress / ".gitattributes",
        progress / ".gitignore",
        progress / "README.md",
    ]
    return files + ([readme] if readme is not None else [])


def _rel(root: Path, path: Path) -> str:
    return resolved(path).relative_to(resolved(root)).as_posix()


def _carried_under(git: Git, rel: str) -> set[str]:
    """Files under `rel` that git would carry: changed, staged, or untracked and not ignored.

    The rules ensure_progress_files adds to .training-progress/.gitignore count as ignore rules
    already: the check runs before that file is written (its patterns match at any depth).
    """
    excludes = [f"--exclude={pattern}" for pattern in GITIGNORE_LINES]
    status = git.run("status", "--porcelain=v1", "-z", "--untracked-files=no", "--", rel).stdout
    others = git.run("ls-files", "-z", "--others", "--exclude-standard", *excludes, "--", rel).stdout
    changed = {entry[3:] for entry in status.split("\0") if len(entry) > 3}
    return changed | {path for path in others.split("\0") if path}


def check_run_dir(git: Git, paths: RunPaths, allowed: Sequence[Path], max_bytes: int) -> None:
    """Refuse weights and oversize files: any the commit would carry, or git would pick up, under the run."""
    allowed_rel = {_rel(paths.root, p) for p in allowed}
    for rel in sorted(_carried_under(git, _rel(paths.root, paths.dir)) | allowed_rel):
        path = paths.root / rel
        if not path.is_file():
            continue
        if rel.lower().endswith(WEIGHT_SUFFIXES):
            raise NanechoError(
                "refusing to commit model weights: they belong in the Actions cache or an artifact "
                f"(git rm --cached it, and keep {', '.join(WEIGHT_SUFFIXES)} in .training-progress/.gitignore)",
                path,
            )
        size = path.stat().st_size
        if size > max_bytes:
            hint = " (meta-update compact shrinks the index)" if rel.endswith("metadata.json") else ""
            raise NanechoError(f"file is {size} bytes, over the {max_bytes}-byte cap{hint}", path)


def _outside_block(text: str) -> str:
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return text
    return text[: start + len(README_START)] + text[end:]


def readme_is_progress_only(git: Git, readme: Path) -> bool:
    """True when the README differs from HEAD only between the progress markers (or not at all)."""
    check_inside(readme, git.root, "README")
    if not readme.is_file():
        raise NanechoError("README not found", readme)
    committed = git.blob("HEAD", _rel(git.root, readme))
    if committed is None:
        raise NanechoError("README is not in the last commit; refusing to commit a new README", readme)
    current = read_text(readme)
    if README_START not in current or README_END not in current:
        raise NanechoError(f"README has no {README_START} … {README_END} block", readme)
    # surrogateescape: a committed README that is not UTF-8 compares equal to no UTF-8 text.
    if _outside_block(current) != _outside_block(committed.decode("utf-8", "surrogateescape")):
        raise NanechoError("README has changes outside the progress block; commit those yourself", readme)
    return True


def stage(git: Git, files: Sequence[Path]) -> list[str]:
    """`git add` the existing allowed files; returns the root-relative paths with staged changes."""
    rels = [_rel(git.root, f) for f in files if f.is_file()]
    if not rels:
        return []
    # -f: these exact files are ours to commit even if a broad ignore rule in the repo covers them.
    git.run("add", "-f", "--", *rels)
    against = ("HEAD",) if git.head() is not None else ()  # an unborn branch diffs against nothing
    return sorted(git.out("diff", "--cached", "--name-only", *against, "--", *rels).splitlines())


def commit(git: Git, files: Sequence[str], message: str) -> str:
    """Commit exactly `files` (other staged changes stay staged) and return the new sha."""
    git.run("commit", "--no-verify", "--quiet", "-F", "-", "--only", "--", *files, input_text=message)
    sha = git.head()
    assert sha is not None
    return sha
