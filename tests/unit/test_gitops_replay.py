"""The in-process rebase of a progress commit: same result as git rebase with the drivers, no spawns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanecho_core import gitops, gitreplay
from nanecho_core.gitops import Git
from nanecho_core.index import record_session
from nanecho_core.store import run_paths
from tests.factories import write_fake_checkpoint
from tests.gitfixtures import RUN, SEED_IDENTITY, clone, git, isolated_git_env, make_remote, step_doc


@pytest.fixture
def clones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    for name, value in isolated_git_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    remote = make_remote(tmp_path)
    return remote, clone(remote, tmp_path / "a"), clone(remote, tmp_path / "b")


def _record_and_commit(work: Path, writer: int, number: int, *, author: str = "Writer") -> None:
    paths = run_paths(work, RUN)
    step = step_doc(writer, number)
    for entry in step["checkpoints"]:
        write_fake_checkpoint(paths.dir, entry)
    record_session(paths, step)
    gitops.ensure_progress_files(work)
    rels = [f"{RUN}/sessions.jsonl", f"{RUN}/cache/metadata.json", ".training-progress/.gitattributes"]
    rels.append(".training-progress/.gitignore")
    git(work, "add", *rels)
    git(
        work,
        "-c",
        f"user.name={author}",
        "-c",
        "user.email=w@example.com",
        "commit",
        "-q",
        "-m",
        f"s{writer}",
    )


def test_replay_merges_sessions_and_index_and_keeps_the_author(clones: tuple[Path, Path, Path]) -> None:
    remote, a, b = clones
    _record_and_commit(a, 1, 1)
    git(a, "push", "-q", "origin", "main")
    _record_and_commit(b, 2, 1, author="Second Writer")
    git(b, "fetch", "-q", "origin")
    upstream = git(b, "rev-parse", "origin/main")

    env = {"GIT_COMMITTER_NAME": "bot", "GIT_COMMITTER_EMAIL": "bot@example.com"}
    assert gitreplay.replay_onto(Git(b, env), "refs/remotes/origin/main")

    assert git(b, "rev-parse", "HEAD^") == upstream
    assert git(b, "log", "-1", "--format=%an|%cn|%s") == "Second Writer|bot|s2"
    assert git(b, "cat-file", "commit", "HEAD").endswith("\n\ns2")  # message kept byte for byte
    assert git(b, "status", "--porcelain") == ""
    sessions = [json.loads(x)["session_id"] for x in (b / RUN / "sessions.jsonl").read_text().splitlines()]
    assert sessions == [step_doc(1, 1)["session_id"], step_doc(2, 1)["session_id"]]
    index = json.loads((b / RUN / "cache/metadata.json").read_text())
    assert sorted(e["session_id"] for e in index["checkpoints"]) == sorted(sessions)
    best = min(index["checkpoints"], key=lambda e: e["metrics"]["val_loss"])
    assert index["best_id"] == best["id"]
    git(b, "push", "-q", "origin", "main")  # a fast-forward now
    assert git(remote, "rev-list", "--merges", "--count", "main") == "0"


def test_replay_declines_commits_outside_the_progress_files(clones: tuple[Path, Path, Path]) -> None:
    _, a, b = clones
    _record_and_commit(a, 1, 1)
    git(a, "push", "-q", "origin", "main")
    (b / "code.py").write_text("print('x')\n")
    git(b, "add", "code.py")
    git(b, *SEED_IDENTITY, "commit", "-q", "-m", "code")
    git(b, "fetch", "-q", "origin")
    head = git(b, "rev-parse", "HEAD")
    assert not gitreplay.replay_onto(Git(b), "refs/remotes/origin/main")
    assert git(b, "rev-parse", "HEAD") == head  # untouched: the caller falls back to git rebase


def test_replay_without_scratch_space_declines_and_leaves_the_clone_alone(
    clones: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full or missing temp directory raised OSError out of progress-commit (a traceback).
    import tempfile

    _, a, b = clones
    _record_and_commit(a, 1, 1)
    git(a, "push", "-q", "origin", "main")
    _record_and_commit(b, 2, 1)
    git(b, "fetch", "-q", "origin")
    head = git(b, "rev-parse", "HEAD")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    assert not gitreplay.replay_onto(Git(b), "refs/remotes/origin/main")
    assert git(b, "rev-parse", "HEAD") == head and git(b, "status", "--porcelain") == ""
