"""The acceptance test from the original design, with the real tools as subprocesses and real git.

Session 1 starts fresh, is recorded, committed and pushed to a bare remote. A fresh clone of the
remote, with the weights directory carried over as the Actions cache would, runs session 2, which
must resume: it starts below session 1's start and not above session 1's end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from nanecho_core.fsio import sha256_file
from tests.conftest import BIN

RUN = ".training-progress/nanecho-cached-ci"
ITERS = "60"
pytestmark = pytest.mark.slow


def sh(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(a) for a in args]
    if cmd[0] in ("ckpt-select", "train-step", "meta-update", "progress-commit", "summarize"):
        cmd[0] = str(BIN / cmd[0])
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{cmd} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def git(*args: str | Path, cwd: Path) -> str:
    return sh("git", *args, cwd=cwd).stdout


def run_session(work: Path, scratch: Path) -> dict:
    sh("ckpt-select", "--run", RUN, "--preset", "ci", "--out", scratch / "selection.json", cwd=work)
    sh(
        "train-step", "--run", RUN, "--preset", "ci", "--resume", scratch / "selection.json",
        "--iters", ITERS, "--out", scratch / "step.json", cwd=work,
    )  # fmt: skip
    sh("meta-update", "record", scratch / "step.json", "--run", RUN, cwd=work)
    sh("summarize", "--root", ".", "--run", RUN, cwd=work)
    sh(
        "progress-commit", "--root", ".", "--run", RUN, "--message-from", scratch / "step.json",
        "--push", "--out", scratch / "commit-result.json", cwd=work,
    )  # fmt: skip
    return json.loads((scratch / "step.json").read_text())


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    sh("git", "init", "-q", "--bare", "-b", "main", bare, cwd=tmp_path)
    seed = tmp_path / "seed"
    sh("git", "init", "-q", "-b", "main", seed, cwd=tmp_path)
    (seed / "README.md").write_text("# project\n")
    git("add", "README.md", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "-m", "initial", cwd=seed)
    git("push", "-q", str(bare), "main", cwd=seed)
    return bare


def test_second_session_in_a_fresh_clone_resumes_from_the_first(tmp_path: Path, remote: Path) -> None:
    first, second = tmp_path / "clone1", tmp_path / "clone2"
    (tmp_path / "s1").mkdir()
    (tmp_path / "s2").mkdir()
    git("clone", "-q", remote, first, cwd=tmp_path)
    s1 = run_session(first, tmp_path / "s1")
    assert s1["resume_source"] == "fresh" and s1["start_iteration"] == 0

    # A new CI job: fresh clone, the weights directory restored as the Actions cache would.
    git("clone", "-q", remote, second, cwd=tmp_path)
    shutil.copytree(first / RUN / "cache" / "checkpoints", second / RUN / "cache" / "checkpoints")
    s2 = run_session(second, tmp_path / "s2")

    assert s2["resume_source"] == "cache"
    assert s2["resumed_from"] in s1["checkpoints_written"]
    assert s2["start_iteration"] == s1["end_iteration"] == int(ITERS)
    assert s2["start_val_loss"] < s1["start_val_loss"]
    assert s2["start_val_loss"] <= s1["end_val_loss"]

    # The remote's history: the initial commit plus one commit per session, carrying the figures.
    log = git("--git-dir", remote, "log", "--format=%s%n%b%nParent: %P%x00", "main", cwd=tmp_path).split(
        "\x00"
    )
    messages = [m.strip() for m in log if m.strip()]
    assert len(messages) == 3
    for session, message in zip((s2, s1), messages[:2], strict=True):
        subject = message.splitlines()[0]
        assert subject.startswith(f"nanecho(nanecho-cached-ci): session {session['session_id']} ")
        assert f"{session['start_iteration']}→{session['end_iteration']}" in subject
        assert f"{session['end_val_loss']:.3f}" in subject
        parent = message.splitlines()[-1].removeprefix("Parent: ")
        assert f"Code commit: {parent}" in message  # the code that trained, outside Actions too

    # metadata.json on the remote lists both sessions' checkpoints, with hashes that verify.
    final = tmp_path / "final"
    git("clone", "-q", remote, final, cwd=tmp_path)
    index = json.loads((final / RUN / "cache" / "metadata.json").read_text())
    ids = {c["id"] for c in index["checkpoints"]}
    assert set(s1["checkpoints_written"]) | set(s2["checkpoints_written"]) <= ids
    for entry in index["checkpoints"]:
        owner = first if entry["session_id"] == s1["session_id"] else second
        assert sha256_file(owner / RUN / entry["file"]) == entry["sha256"]
    sessions = [json.loads(line) for line in (final / RUN / "sessions.jsonl").read_text().splitlines()]
    assert [s["session_id"] for s in sessions] == [s1["session_id"], s2["session_id"]]

    # No weight file is tracked by git.
    tracked = git("ls-files", cwd=final).splitlines()
    assert not [f for f in tracked if f.endswith((".pt", ".pth", ".bin", ".safetensors"))]
    assert f"{RUN}/cache/metadata.json" in tracked and f"{RUN}/sessions.jsonl" in tracked
