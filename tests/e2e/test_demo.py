"""The README's demo script, run as `./dev demo` runs it (with 5 iterations a session, not 1,000)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # bash, two training sessions and two pushes (~7 s)


def test_demo_trains_two_sessions_resumes_the_second_and_pushes_both(tmp_path: Path, tool_bin: Path) -> None:
    env = {**os.environ, "PATH": f"{tool_bin}{os.pathsep}{os.environ['PATH']}"}
    env.pop("GITHUB_OUTPUT", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "demo.sh"), "demo", "5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]

    tail = proc.stdout.split("######## remote history (demo/remote.git) ########\n")[1].splitlines()
    sessions = [
        json.loads(line)
        for line in (tmp_path / "demo/work/.training-progress/nanecho-cached-ci/sessions.jsonl")
        .read_text()
        .splitlines()
    ]
    assert [(s["resume_source"], s["start_iteration"], s["end_iteration"]) for s in sessions] == [
        ("fresh", 0, 5),
        ("cache", 5, 10),
    ]
    assert sessions[1]["resumed_from"] == f"ckpt-{sessions[0]['session_id']}-00000005"
    subjects = [re.sub(r"^[0-9a-f]+ ", "", line) for line in tail[:3]]
    val = [f"{s['start_val_loss']:.3f}→{s['end_val_loss']:.3f}" for s in sessions]
    assert subjects == [
        f"nanecho(nanecho-cached-ci): session {sessions[1]['session_id']} iters 5→10, val {val[1]}",
        f"nanecho(nanecho-cached-ci): session {sessions[0]['session_id']} iters 0→5, val {val[0]}",
        "demo: initial commit",
    ]
    assert tail[4] == (
        "Files: demo/work/.training-progress/ (PROGRESS.md, nanecho-cached-ci/{sessions.jsonl,cache/metadata.json})"
    )
    assert "<!-- nanecho:progress:start -->" in (tmp_path / "demo/work/README.md").read_text()
    assert subprocess.run(
        ["git", "-C", str(tmp_path / "demo/work"), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=True,
    ).stdout == ""  # fmt: skip
