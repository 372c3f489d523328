"""Recover a clone from an interrupted progress-commit (kill -9 mid-git): locks, half-done rebases.

progress-commit serialises itself per clone with an flock in the git dir; inside it, a git lock file
that no live process holds open was left by a killed git and is removed, and a rebase left in progress
is aborted (which restores the commit it was replaying). This assumes no one runs git by hand in the
same clone at the same instant, which holds for CI checkouts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nanecho_core.errors import NanechoError
from nanecho_core.fsio import exclusive_lock, resolved
from nanecho_core.gitops import Git

log = logging.getLogger(__name__)

LOCK_NAME = "nanecho-progress-commit.lock"
# Where /proc is unavailable, a git lock file this old is treated as abandoned.
STALE_AFTER_S = 60.0
REMOTE_LOCK_MIN_AGE_S = 2.0


def git_dir(git: Git) -> Path:
    return Path(git.out("rev-parse", "--absolute-git-dir"))


@contextmanager
def clone_lock(git: Git) -> Iterator[None]:
    """One progress-commit at a time per clone (the lock dies with its process)."""
    with exclusive_lock(git_dir(git) / LOCK_NAME):
        yield


def _open_files() -> set[str] | None:
    """Every path some live process holds open, or None where /proc cannot tell."""
    proc = Path("/proc")
    if not (proc / "self/fd").is_dir():
        return None
    held: set[str] = set()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                try:
                    held.add(os.readlink(fd))
                except OSError:
                    continue
        except OSError:
            continue
    return held


def _process_cwds() -> set[Path] | None:
    proc = Path("/proc")
    if not (proc / "self/cwd").exists():
        return None
    cwds: set[Path] = set()
    for pid_dir in proc.iterdir():
        if pid_dir.name.isdigit():
            try:
                cwds.add(Path(os.readlink(pid_dir / "cwd")))
            except OSError:
                continue
    return cwds


def _lock_files(directory: Path) -> list[Path]:
    found = [p for p in directory.glob("*.lock") if p.name != LOCK_NAME]
    refs = directory / "refs"
    if refs.is_dir():
        found += list(refs.rglob("*.lock"))
    return found


def remove_stale_locks(directory: Path, *, busy: bool = False, min_age_s: float = 0.0) -> list[Path]:
    """Delete git lock files nobody holds; `busy` True means some git may be at work there: keep all."""
    locks = _lock_files(directory)  # listed before looking at processes: a newer lock is never touched
    if busy or not locks:
        return []
    held = _open_files()
    removed = []
    for lock in locks:
        try:
            age = _age(lock)
            if held is not None and str(lock) in held:
                continue
            if age < (STALE_AFTER_S if held is None else min_age_s):
                continue
            lock.unlink()
        except FileNotFoundError:
            continue
        log.warning("removed a stale git lock left by an interrupted run: %s", lock)
        removed.append(lock)
    return removed


def recover_clone(git: Git) -> list[str]:
    """Undo what a killed progress-commit left behind in this clone; returns what was done."""
    done = [f"removed {p}" for p in remove_stale_locks(git_dir(git))]
    directory = git_dir(git)
    if (directory / "rebase-merge").is_dir() or (directory / "rebase-apply").is_dir():
        aborted = git.run("rebase", "--abort", check=False)
        if not aborted.ok:
            raise NanechoError(
                "an interrupted rebase could not be aborted; run git rebase --abort (or --quit) by hand",
                git.root,
            )
        done.append("aborted an interrupted rebase")
    if (directory / "MERGE_HEAD").exists():
        git.run("merge", "--abort", check=False)
        done.append("aborted an interrupted merge")
    for line in done:
        log.warning("recovery: %s", line)
    return done


def local_remote_dir(git: Git, remote: str) -> Path | None:
    """The directory of a remote that lives on this machine (a path or file:// URL), else None."""
    url = git.run("remote", "get-url", remote, check=False).stdout.strip()
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url or (":" in url.split("/", 1)[0]):
        return None
    path = Path(url) if os.path.isabs(url) else git.root / url
    return path if path.is_dir() else None


def recover_local_remote(git: Git, remote: str) -> list[Path]:
    """Remove ref locks a killed push left in a same-machine bare remote, when no git works in it.

    A receive-pack works with its cwd in the remote; with none alive and the lock older than
    REMOTE_LOCK_MIN_AGE_S (a live ref update takes milliseconds), the lock is abandoned.
    """
    directory = local_remote_dir(git, remote)
    if directory is None:
        return []
    real = resolved(directory)
    locks = _lock_files(real)
    if not locks or _busy(real):
        return []
    # A push killed a moment ago left a lock younger than the minimum age: wait it out (at most
    # REMOTE_LOCK_MIN_AGE_S), else the retry this recovery is for fails on the same lock.
    wait = max((REMOTE_LOCK_MIN_AGE_S - _age(lock) for lock in locks), default=0.0)
    if 0.0 < wait <= REMOTE_LOCK_MIN_AGE_S:
        time.sleep(wait)
    return remove_stale_locks(real, busy=_busy(real), min_age_s=REMOTE_LOCK_MIN_AGE_S)


def _busy(directory: Path) -> bool:
    """Whether some process works in `directory` (a receive-pack has its cwd in the remote)."""
    cwds = _process_cwds()
    return cwds is None or any(c == directory or directory in c.parents for c in cwds)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")
