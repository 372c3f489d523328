"""Git growth per session: bytes a session adds to the packed repository (budget: 2 KB).

    .venv/bin/python benchmarks/git_growth.py [--sessions 100] [--no-summary]

Builds a repository the way the pipeline does, session after session: `meta-update record` (the
session line and its checkpoint entry), `summarize` (training_summary.json and PROGRESS.md) and
`progress-commit` (one commit of exactly those files), all through the same library calls the CLIs
make. Then packs the history with `git gc` (what a server stores and a clone downloads) and with
`git gc --aggressive`, and prints the packed bytes per session against the 2,048-byte budget.
Weights never enter git, so they are not part of the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nanecho_core.index import record_session  # noqa: E402
from nanecho_core.progress_commit import CommitRequest, commit_progress  # noqa: E402
from nanecho_core.store import locked, run_paths  # noqa: E402
from tests.factories import make_entry, make_session, write_fake_checkpoint  # noqa: E402
from tests.gitfixtures import RUN, clone, git, isolated_git_env, make_remote  # noqa: E402

BUDGET = 2048


def _pack_bytes(repo: Path, *extra: str) -> int:
    git(repo, "gc", "--quiet", "--prune=now", *extra)
    counts = dict(line.split(": ", 1) for line in git(repo, "count-objects", "-v").splitlines())
    return int(counts["size-pack"]) * 1024 + int(counts["size"]) * 1024


def _bytes_by_path(repo: Path, sessions: int) -> dict[str, float]:
    """Packed bytes per session of each path's blobs, and of all trees and commits (where growth goes)."""
    listed = git(repo, "rev-list", "--objects", "--all").splitlines()
    path_of = {line.split(" ", 1)[0]: (line.split(" ", 1) + [""])[1] for line in listed}
    proc = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize:disk)"],
        cwd=repo,
        input="\n".join(path_of) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    totals: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        sha, kind, size = line.split()
        key = path_of[sha] if kind == "blob" else f"({kind}s)"
        totals[key] = totals.get(key, 0.0) + int(size) / sessions
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _session(number: int, previous: dict | None) -> dict:
    """A realistic step.json: resumes the previous session, 3 evals, one checkpoint, slowly falling loss."""
    sid = f"20261124T{number // 60:02d}{number % 60:02d}00Z-{number:06x}"
    start = 0 if previous is None else previous["end_iteration"]
    end = start + 100
    loss = round(2.5 * 0.995**number, 4)
    parent = None if previous is None else previous["checkpoints"][-1]["id"]
    entry = make_entry(sid, end, loss, parent_id=parent, train_loss=round(loss * 1.02, 4))
    session = make_session(
        sid,
        start,
        end,
        resumed_from=parent,
        resume_source="fresh" if parent is None else "cache",
        start_val_loss=None if previous is None else previous["end_val_loss"],
        end_val_loss=loss,
        checkpoints=[entry],
    )
    session["eval_points"] = [[start + 33 * k + 33, round(loss + 0.01 * (3 - k), 4), None] for k in range(3)]
    session["tokens_per_s"] = 25000.0 + number
    session["git_sha"] = f"{number:040x}"
    return session


def measure(base: Path, sessions: int, summary: bool) -> dict[str, Any]:
    environ = isolated_git_env(base)
    os.environ.update({k: environ[k] for k in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "HOME")})
    remote = make_remote(base)
    work = clone(remote, base / "work")
    paths = run_paths(work, RUN)
    regenerate = None
    if summary:
        from nanecho_core.summary import regenerate
    before = _pack_bytes(work)
    previous = None
    start = time.monotonic()
    for number in range(sessions):
        step = _session(number, previous)
        for entry in step["checkpoints"]:
            write_fake_checkpoint(paths.dir, entry)
        with locked(paths):
            record_session(paths, step)
        if regenerate is not None:
            regenerate(work, [paths])
        step_path = base / "step.json"
        step_path.write_text(json.dumps(step))
        result = commit_progress(CommitRequest(root=work, run=Path(RUN), message_from=step_path, push=True))
        if result.status != "pushed":
            raise SystemExit(f"session {number}: {result.status} {result.reason}")
        previous = step
    elapsed = time.monotonic() - start
    after = _pack_bytes(work)
    after_remote = _pack_bytes(remote)
    aggressive = _pack_bytes(work, "--aggressive")
    by_path = _bytes_by_path(work, sessions)
    return {
        "by_path": by_path,
        "sessions": sessions,
        "per_session_bytes": (after - before) / sessions,
        "per_session_bytes_remote": (after_remote - before) / sessions,
        "per_session_bytes_aggressive": (aggressive - before) / sessions,
        "metadata_bytes": paths.metadata.stat().st_size,
        "commit_s": elapsed / sessions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument(
        "--no-summary", action="store_true", help="commit without training_summary/PROGRESS.md"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nanecho-growth-") as tmp:
        figures = measure(Path(tmp), args.sessions, not args.no_summary)
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        per = figures["per_session_bytes"]
        print(
            f"git growth: {per:,.0f} B/session packed (git gc), {figures['per_session_bytes_remote']:,.0f} B on the "
            f"remote, {figures['per_session_bytes_aggressive']:,.0f} B with --aggressive, over "
            f"{figures['sessions']} sessions = {per / BUDGET:.2f}x the {BUDGET} B budget; "
            f"metadata.json {figures['metadata_bytes']:,} B; {figures['commit_s'] * 1000:.0f} ms per session"
        )
        for path, per_path in figures["by_path"].items():
            if per_path >= 1:
                print(f"  {per_path:7,.0f} B/session  {path}")
    sys.exit(0 if figures["per_session_bytes"] <= BUDGET else 1)


if __name__ == "__main__":
    main()
