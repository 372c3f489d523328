"""Push a progress commit and prove it landed: fetch, rebase, regenerate, retry with backoff, bundle."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nanecho_core import gitrecover, gitreplay
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import resolved
from nanecho_core.gitops import Git, GitResult

log = logging.getLogger(__name__)

# Another writer moved the branch (or held its lock) between our fetch and our push: integrate, retry.
RACE = "race"
NO_RIGHTS = "no rights"
NO_REPO = "no such repository"
NETWORK = "network"
DIVERGED = "diverged beyond repair"
OTHER = "error"

_RACE_MARKERS = (
    "fetch first",
    "non-fast-forward",
    "stale info",
    "cannot lock ref",
    "failed to update ref",
    "incorrect old value",
    "failed to lock",
)
_DENIED_MARKERS = (
    "permission denied",
    "permission to ",
    "403",
    "access denied",
    "not allowed",
    "protected branch",
    "hook declined",
    "read-only",
    "read only",
    "insufficient permission",
    "authentication failed",
    "could not read username",
    "write access",
    "[remote rejected]",
)
# Checked before the network markers: git follows these with "Could not read from remote repository".
_NO_REPO_MARKERS = (
    "does not appear to be a git repository",
    "repository not found",
    "returned error: 404",
)
_NETWORK_MARKERS = (
    "could not resolve host",
    "couldn't connect",
    "failed to connect",
    "connection refused",
    "connection reset",
    "connection timed out",
    "operation timed out",
    "unable to access",
    "could not read from remote",
    "early eof",
    "the remote end hung up",
    "502",
    "503",
    "504",
)
_KINDS = (
    (RACE, _RACE_MARKERS),
    (NO_RIGHTS, _DENIED_MARKERS),
    (NO_REPO, _NO_REPO_MARKERS),
    (NETWORK, _NETWORK_MARKERS),
)
# What git appends to every failure to reach a remote: never the line that says why.
_BOILERPLATE = (
    "To ",
    "Done",
    "hint:",
    "error: failed to push some refs",
    "fatal: Could not read from remote repository",
    "Please make sure you have the correct access rights",
    "and the repository exists",
)


def classify(result: GitResult) -> str:
    """Which kind of failure a git push/fetch output describes (race first: its markers are specific)."""
    text = result.output.lower()
    for kind, markers in _KINDS:
        if any(marker in text for marker in markers):
            return kind
    return OTHER


def last_line(result: GitResult) -> str:
    """The line that says why: a rejected ref if any, else the last line that is not boilerplate."""
    lines = [" ".join(line.split()) for line in result.output.splitlines() if line.strip()]
    rejected = [line for line in lines if "rejected]" in line]
    if rejected:
        return rejected[0]
    meaningful = [line for line in lines if not line.startswith(_BOILERPLATE)]
    return (meaningful or lines or [f"exit {result.returncode}"])[-1]


@dataclass
class PushOutcome:
    pushed: bool
    sha: str
    attempts: int
    reason: str | None = None
    history: list[str] = field(default_factory=list)


def tracking_ref(remote: str, branch: str) -> str:
    return f"refs/remotes/{remote}/{branch}"


def fetch_branch(git: Git, remote: str, branch: str) -> GitResult:
    return git.run(
        "fetch",
        "--no-tags",
        "--quiet",
        remote,
        f"+refs/heads/{branch}:{tracking_ref(remote, branch)}",
        check=False,
    )


def remote_contains(git: Git, remote: str, branch: str, sha: str) -> bool:
    """Ask the remote itself whether its branch now contains `sha` (never trust push's exit code alone)."""
    listed = git.run("ls-remote", "--heads", remote, f"refs/heads/{branch}", check=False)
    if not listed.ok:
        return False
    remote_shas = [line.split("\t", 1)[0] for line in listed.stdout.splitlines() if line.strip()]
    if sha in remote_shas:
        return True
    if not remote_shas or not fetch_branch(git, remote, branch).ok:
        return False
    return git.run("merge-base", "--is-ancestor", sha, tracking_ref(remote, branch), check=False).ok


def _has_merge_base(git: Git, ref: str) -> bool:
    return git.run("merge-base", "HEAD", ref, check=False).ok


def integrate(git: Git, remote: str, branch: str) -> tuple[str, str] | None:
    """Fetch the remote branch and rebase our commit(s) onto it; (kind, detail) when that failed."""
    fetched = fetch_branch(git, remote, branch)
    if not fetched.ok:
        return classify(fetched), last_line(fetched)
    upstream = tracking_ref(remote, branch)
    if not _has_merge_base(git, upstream) and git.is_shallow():
        # A shallow CI checkout may lack the fork point: deepen until it appears, then unshallow.
        for args in (("--deepen=50",), ("--unshallow",)):
            git.run("fetch", "--no-tags", "--quiet", *args, remote, f"refs/heads/{branch}", check=False)
            if _has_merge_base(git, upstream):
                break
    if not _has_merge_base(git, upstream):
        return DIVERGED, f"local history shares no commit with {remote}/{branch} (rewritten upstream?)"
    if gitreplay.replay_onto(git, upstream):
        return None
    rebased = git.run("rebase", "--autostash", upstream, check=False)
    if rebased.ok:
        return None
    conflicts = git.run("diff", "--name-only", "--diff-filter=U", check=False).stdout.split()
    git.run("rebase", "--abort", check=False)
    detail = (
        f"rebase conflict in {', '.join(conflicts)}" if conflicts else f"rebase failed: {last_line(rebased)}"
    )
    return DIVERGED, detail


def backoff_delay(attempt: int, base_s: float, cap_s: float = 30.0) -> float:
    """Exponential backoff with jitter: uniform in [base/2, base·2^(attempt-1)], capped at 32·base and cap_s.

    The 32·base cap keeps a writer that lost many races from sleeping far longer than the race lasts.
    """
    high = min(cap_s, 32 * base_s, base_s * (2 ** max(0, attempt - 1)))
    return random.uniform(min(base_s / 2, high), high) if high > 0 else 0.0


def push_with_retries(
    git: Git,
    remote: str,
    branch: str,
    *,
    retries: int,
    backoff_s: float,
    after_rebase: Callable[[], object],
) -> PushOutcome:
    """Push HEAD to `remote`/`branch`; on a race integrate and retry, at most `retries` more times."""
    history: list[str] = []
    reason: str | None = None
    attempts = 0
    while attempts <= retries:
        attempts += 1
        sha = git.out("rev-parse", "HEAD")
        pushed = git.run("push", "--porcelain", remote, f"HEAD:refs/heads/{branch}", check=False)
        if pushed.ok and remote_contains(git, remote, branch, sha):
            history.append(f"attempt {attempts}: pushed {sha[:12]}")
            return PushOutcome(True, sha, attempts, None, history)
        kind = classify(pushed) if not pushed.ok else RACE
        detail = (
            last_line(pushed) if not pushed.ok else "push reported success but the remote lacks the commit"
        )
        history.append(f"attempt {attempts}: {kind}: {detail}")
        log.info("push attempt %d failed (%s): %s", attempts, kind, detail)
        reason = f"{kind}: {detail}"
        if kind not in (RACE, NETWORK) or attempts > retries:
            break
        time.sleep(backoff_delay(attempts, backoff_s))
        if not pushed.ok and "lock" in pushed.output.lower():
            gitrecover.recover_local_remote(git, remote)  # a push killed mid-update can leave one behind
        if kind == RACE:
            try:
                failure = integrate(git, remote, branch)
            except NanechoError as exc:  # a git step failed outright: keep the commit, report, retry
                failure = (DIVERGED, exc.message)
            if failure is not None:
                kind, detail = failure
                history.append(f"attempt {attempts}: integrate: {kind}: {detail}")
                reason = f"{kind}: {detail}"
                if kind in (NO_RIGHTS, NO_REPO, OTHER):
                    break
                continue
            after_rebase()
    if reason is not None and reason.startswith(RACE):
        reason = f"{DIVERGED}: still rejected after {attempts} attempts ({reason})"
    return PushOutcome(False, git.out("rev-parse", "HEAD"), attempts, reason, history)


def write_bundle(git: Git, target: Path, remote: str, branch: str) -> Path | None:
    """A `git bundle` of the commits the remote lacks (as far as we know), for recovery by hand."""
    upstream = tracking_ref(remote, branch)
    candidates: list[tuple[str, ...]] = []
    if git.run("rev-parse", "--verify", "--quiet", upstream, check=False).ok:
        candidates.append((f"{upstream}..HEAD",))
    if git.run("rev-parse", "--verify", "--quiet", "HEAD~1", check=False).ok:
        candidates.append(("HEAD~1..HEAD",))
    candidates.append(("HEAD",))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        where = resolved(target)
    except OSError as exc:  # the push's outcome must still be reported: no bundle, then
        log.warning("cannot write a bundle in %s: %s", target.parent, exc.strerror or exc)
        return None
    except NanechoError as exc:
        log.warning("cannot write a bundle: %s", exc)
        return None
    for revs in candidates:
        # Recover with `git fetch <bundle> HEAD` (or `git pull <bundle> HEAD`) in any clone.
        created = git.run("bundle", "create", "--quiet", str(where), *revs, check=False)
        if created.ok:
            return target
    return None
