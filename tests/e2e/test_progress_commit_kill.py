"""kill -9 of progress-commit (with its git children) at random instants never loses a session."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.gitfixtures import (
    BIN,
    RUN,
    clone,
    git,
    isolated_git_env,
    make_remote,
    record_direct,
    remote_file,
    step_doc,
)


def _commit(work: Path, environ: dict[str, str], out: Path) -> subprocess.Popen[str]:
    cmd = [str(BIN / "progress-commit"), "--root", str(work), "--run", RUN, "--push", "--out", str(out)]
    cmd += ["--backoff", "0.01", "--retries", "10"]
    return subprocess.Popen(
        cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _wait_for_git_activity(work: Path, proc: subprocess.Popen[str], timeout_s: float = 20.0) -> None:
    """Return once the run touches git (an index lock appears or the branch moves), or it exits."""
    head = work / ".git/refs/heads/main"
    before = head.read_text() if head.exists() else ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if (work / ".git/index.lock").exists() or (head.exists() and head.read_text() != before):
            return
        time.sleep(0.0005)


@pytest.mark.slow
def test_killed_commits_are_completed_by_the_next_run_and_no_session_is_lost(tmp_path: Path) -> None:
    environ = isolated_git_env(tmp_path)
    os.environ.update({k: environ[k] for k in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "HOME")})
    remote = make_remote(tmp_path)
    work, other = clone(remote, tmp_path / "work"), clone(remote, tmp_path / "other")
    rng = random.Random(20261124)
    recorded: list[str] = []
    for number in range(1, 9):
        # Another writer moves the remote, so the killed run is often mid fetch/replay/rebase/push.
        record_direct(other, step_doc(2, number))
        subprocess.run(
            [
                str(BIN / "progress-commit"),
                "--root",
                str(other),
                "--run",
                RUN,
                "--push",
                "--out",
                str(tmp_path / "o"),
            ],
            env=environ,
            check=True,
            capture_output=True,
        )
        step = step_doc(1, number)
        record_direct(work, step)
        recorded.append(step["session_id"])
        victim = _commit(work, environ, tmp_path / "killed.json")
        _wait_for_git_activity(work, victim)  # past Python start-up: staging, committing or pushing
        time.sleep(rng.uniform(0.0, 0.4))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.communicate()
        survivor = _commit(work, environ, tmp_path / "next.json")
        _, stderr = survivor.communicate(timeout=120)
        assert survivor.returncode in (0, 3), stderr  # 3: the killed run had already landed everything
        assert subprocess.run(["git", "fsck", "--no-progress"], cwd=work, capture_output=True).returncode == 0
        landed = [
            json.loads(line)["session_id"]
            for line in remote_file(remote, f"{RUN}/sessions.jsonl").splitlines()
        ]
        assert set(recorded) <= set(landed), (number, stderr)
        assert len(landed) == len(set(landed))
    assert git(remote, "rev-list", "--merges", "--count", "main") == "0"
    assert subprocess.run(["git", "fsck", "--strict"], cwd=remote, capture_output=True).returncode == 0
