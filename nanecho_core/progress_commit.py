"""progress-commit's logic: gate, stage, commit and (optionally) push a run's small progress files."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanecho_core import env, fastschema, gitops, gitpush, gitrecover
from nanecho_core.commit_message import DEFAULT_SKIP_CI_MARKER, build_message
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import is_utf8
from nanecho_core.redact import redact
from nanecho_core.store import (
    PROGRESS_FILE,
    SUMMARY_FILE,
    RunPaths,
    load_metadata,
    read_document,
    read_sessions,
    run_paths,
)

log = logging.getLogger(__name__)

COMMIT_RESULT_VERSION = 1  # schemas/commit_result.schema.json's schema_version const (a test pins it)


@dataclass(frozen=True)
class CommitRequest:
    root: Path
    run: Path
    message_from: Path | None = None
    push: bool = False
    remote: str = "origin"
    branch: str | None = None
    retries: int = 5
    readme: Path | None = None
    max_bytes: int = gitops.DEFAULT_MAX_BYTES
    skip_ci_marker: str = DEFAULT_SKIP_CI_MARKER
    git_name: str | None = None
    git_email: str | None = None
    backoff_s: float = 1.0
    bundle_dir: Path = Path(".")


@dataclass
class CommitResult:
    status: str
    sha: str | None = None
    attempts: int = 0
    remote: str | None = None
    branch: str | None = None
    remote_ref: str | None = None
    pushed: bool = False
    bundle: str | None = None
    reason: str | None = None
    subject: str | None = None
    files: list[str] = field(default_factory=list)
    note: str | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema_version": COMMIT_RESULT_VERSION,
            "status": self.status,
            "sha": self.sha,
            "attempts": self.attempts,
            "remote": self.remote,
            "branch": self.branch,
            "remote_ref": self.remote_ref,
            "pushed": self.pushed,
            "bundle": self.bundle,
            "reason": None if self.reason is None else redact(self.reason),
            "subject": self.subject,
            "files": self.files,
            "note": self.note,
        }
        return fastschema.validate(doc, "commit_result")

    def error(self) -> NanechoError | None:
        """The one-line user error for a failed push (exit 2), naming the remote and the bundle."""
        if self.status != "failed":
            return None
        saved = f"; commit {self.sha[:12] if self.sha else '?'} kept locally"
        if self.bundle:
            saved += f" and saved to {self.bundle} (recover: git pull {self.bundle} HEAD)"
        return NanechoError(
            f"push failed after {self.attempts} attempt(s): {self.reason}{saved}", self.remote
        )


def check_writable(path: Path, option: str, *, directory: bool = False) -> None:
    """Refuse an output (a file, or a directory to create) that could not be written after the commit."""
    if not directory and path.is_dir():
        raise NanechoError(f"{option} is a directory, expected a file", path)
    start = path if directory else path.parent
    existing = next((p for p in (start, *start.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise NanechoError(f"{option} cannot be written: {existing} is not a directory", path)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise NanechoError(f"{option} cannot be written: {existing} is not writable", path)


def _check_options(req: CommitRequest) -> None:
    """Refuse bad numbers and an unwritable --bundle-dir before anything is read or written."""
    if req.retries < 0:
        raise NanechoError("--retries must be 0 or more")
    if not math.isfinite(req.backoff_s) or req.backoff_s < 0:
        raise NanechoError("--backoff must be a finite number of seconds, 0 or more")
    if req.max_bytes < 1:
        raise NanechoError("--max-bytes must be 1 or more")
    if req.push:
        check_writable(req.bundle_dir, "--bundle-dir", directory=True)


def _push_branch(req: CommitRequest, git: gitops.Git) -> str | None:
    """The branch to push, checked before anything is committed; None when nothing is to be pushed."""
    if not req.push or env.event_name() == "pull_request":
        return None
    branch = req.branch or git.current_branch() or env.ref_branch()
    if not branch:
        raise NanechoError(
            "detached HEAD and no --branch: pass --branch to name the branch to push", git.root
        )
    # refs/heads/-f is a valid ref, but a branch named like an option is never what was meant; a
    # name that is not UTF-8 (GITHUB_REF from a hostile environment) cannot be reported or recorded.
    valid = is_utf8(branch) and not branch.startswith("-")
    if not valid or not git.run("check-ref-format", f"refs/heads/{branch}", check=False).ok:
        raise NanechoError(f"{branch!r} is not a valid branch name (git check-ref-format)", git.root)
    return branch


def _check_identity(git: gitops.Git) -> None:
    """The author and committer `git commit` would record, before anything is staged: a bad
    GIT_AUTHOR_DATE or an empty name failed the commit after the index and config were written."""
    for role in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        found = git.run("var", role, check=False)
        if not found.ok:
            raise NanechoError(f"git cannot make a commit here: {gitpush.last_line(found)}", git.root)


def _remote_display(git: gitops.Git, remote: str) -> str:
    url = git.run("remote", "get-url", remote, check=False)
    if not url.ok:
        raise NanechoError(f"no git remote named {remote!r} (git remote -v lists them)", git.root)
    return redact(f"{remote} ({url.stdout.strip()})")


def regenerate_derived(git: gitops.Git, paths: RunPaths, allowed: list[Path]) -> list[str]:
    """Rebuild training_summary.json / PROGRESS.md from the merged sessions and amend them in.

    Only where the repository already tracks one of them (a repo that never ran summarize gets none).
    """
    derived = [p for p in allowed if p.name in (SUMMARY_FILE, PROGRESS_FILE)]
    tracked = git.out("ls-files", "--", *(p.relative_to(paths.root).as_posix() for p in derived))
    if not tracked:
        return []
    try:
        from nanecho_core.summary import regenerate
    except ImportError:  # pragma: no cover - summary.py ships with the package
        log.warning("nanecho_core.summary is unavailable: derived files keep the upstream version")
        return []
    try:
        regenerate(paths.root, [paths])
    except NanechoError as exc:  # never lose the push over a summary: upstream's copy stays
        log.warning("could not regenerate derived files after the rebase: %s", exc)
        return []
    changed = gitops.stage(git, derived)
    if changed:
        git.run("commit", "--amend", "--no-edit", "--no-verify", "--quiet")
    return changed


def _message_session(req: CommitRequest, paths: RunPaths) -> dict[str, Any] | None:
    if req.message_from is not None:
        session = dict(read_document(req.message_from, "session"))
        if session["run"] != paths.name:
            raise NanechoError(
                f"session is for run {session['run']!r}, not {paths.name!r}", req.message_from, "$.run"
            )
        return session
    sessions = read_sessions(paths)
    return sessions[-1] if sessions else None


def commit_progress(req: CommitRequest) -> CommitResult:
    """Commit the run's allowed files; push when asked (never on a pull request). See docs/progress-commit.md."""
    _check_options(req)
    paths = run_paths(req.root, req.run)
    if not paths.dir.is_dir():
        raise NanechoError("run directory not found", paths.dir)
    git = gitops.open_repo(paths.root)
    remote = _remote_display(git, req.remote) if req.push else None
    session = _message_session(req, paths)
    metadata = load_metadata(paths) if paths.metadata.exists() else None
    readme = req.readme if req.readme is None or req.readme.is_absolute() else paths.root / req.readme
    with gitrecover.clone_lock(git):
        recovered = gitrecover.recover_clone(git)
        if readme is not None:
            gitops.readme_is_progress_only(git, readme)
        result = _commit_and_push(req, git, paths, session, metadata, readme, remote)
    if recovered:
        result.note = f"{result.note} (recovered an interrupted run: {'; '.join(recovered)})"
    return result


def _commit_and_push(
    req: CommitRequest,
    git: gitops.Git,
    paths: RunPaths,
    session: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    readme: Path | None,
    remote: str | None,
) -> CommitResult:
    allowed = gitops.allowed_files(paths, readme)
    gitops.check_run_dir(git, paths, allowed, req.max_bytes)
    branch = _push_branch(req, git)
    git.env.update(gitops.identity_env(git, req.git_name, req.git_email))
    _check_identity(git)
    # Every check has passed: from here on the clone is written to.
    gitops.ensure_progress_files(paths.root)
    gitops.install_merge_drivers(git)

    if session is not None and not session.get("git_sha"):
        # Outside Actions (no GITHUB_SHA) the code that trained is the commit checked out now.
        session = {**session, "git_sha": git.head()}
    message = build_message(paths.name, session, metadata, skip_ci_marker=req.skip_ci_marker)
    staged = gitops.stage(git, allowed)
    result = CommitResult(status="nothing", subject=message.subject, files=staged, remote=remote)
    if staged:
        result.sha = gitops.commit(git, staged, message.text)
        result.status = "committed"
    else:
        sha = result.sha = git.head()
        # An earlier run may have committed and then died before its push landed: push that now.
        if branch is None or sha is None or gitpush.remote_contains(git, req.remote, branch, sha):
            result.note = "nothing to commit: the run's progress files match the last commit"
            return result
        result.subject = git.out("log", "-1", "--format=%s")
        result.note = "pushing an earlier commit that never reached the remote"
    if branch is None:
        result.note = (
            "pull_request event: committed locally, not pushing (pull requests never push)"
            if req.push
            else "committed locally (no --push)"
        )
        return result
    return _push(req, git, paths, allowed, branch, result)


def _push(
    req: CommitRequest,
    git: gitops.Git,
    paths: RunPaths,
    allowed: list[Path],
    branch: str,
    result: CommitResult,
) -> CommitResult:
    """Push with retries and verify the commit landed; when it did not, leave a bundle of it."""
    result.branch = branch
    result.remote_ref = f"refs/heads/{branch}"
    outcome = gitpush.push_with_retries(
        git,
        req.remote,
        branch,
        retries=req.retries,
        backoff_s=req.backoff_s,
        after_rebase=lambda: regenerate_derived(git, paths, allowed),
    )
    result.sha, result.attempts, result.pushed = outcome.sha, outcome.attempts, outcome.pushed
    if outcome.pushed:
        result.status = "pushed"
        verified = f"pushed to {req.remote}/{branch}, verified on the remote"
        result.note = verified if result.note is None else f"{result.note}; {verified}"
        return result
    result.status = "failed"
    result.reason = outcome.reason
    target = req.bundle_dir / f"nanecho-unpushed-{outcome.sha[:12]}.bundle"
    bundle = gitpush.write_bundle(git, target, req.remote, branch)
    result.bundle = None if bundle is None else str(bundle)
    return result
