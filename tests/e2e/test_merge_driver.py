"""A real git merge of two branches that each recorded sessions: nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nanecho_core.fsio import atomic_write_json
from nanecho_core.index_merge import install_merge_driver
from tests.factories import make_entry, make_session, write_fake_checkpoint

RUN = ".training-progress/nanecho-cached-ci"
REPO_ROOT = Path(__file__).resolve().parents[2]


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}  # fmt: skip
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def record(
    repo: Path, tool_bin: Path, session: str, iteration: int, loss: float, minute: int, parent: str | None
) -> str:
    entry = make_entry(
        session, iteration, loss, parent_id=parent, created_at=f"2026-11-24T00:{minute:02d}:00Z"
    )
    write_fake_checkpoint(repo / RUN, entry)
    step = repo.parent / f"step-{session}.json"
    atomic_write_json(step, make_session(session, iteration - 100, iteration, checkpoints=[entry]))
    subprocess.run([str(tool_bin / "meta-update"), "record", str(step), "--root", str(repo), "--run", RUN],
                   check=True, capture_output=True)  # fmt: skip
    git(repo, "add", f"{RUN}/cache/metadata.json", f"{RUN}/sessions.jsonl")
    git(repo, "commit", "-q", "-m", f"session {session}")
    return str(entry["id"])


@pytest.mark.slow
def test_merging_two_branches_that_each_recorded_sessions_keeps_both(tmp_path: Path, tool_bin: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".training-progress").mkdir()
    shutil.copy(REPO_ROOT / ".training-progress/.gitattributes", repo / ".training-progress/.gitattributes")
    (repo / ".gitignore").write_text(
        "*.pt\n.lock\n.metadata.verified\n/.training-progress/*/cache/checkpoints/\n"
    )
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "init")
    install_merge_driver(repo, f"{tool_bin / 'meta-update'} merge-driver %O %A %B")
    root_id = record(repo, tool_bin, "20261124T000000Z-aaaaaa", 100, 2.0, 1, None)
    git(repo, "checkout", "-q", "-b", "other")
    theirs = record(repo, tool_bin, "20261124T000500Z-bbbbbb", 200, 1.5, 5, root_id)
    git(repo, "checkout", "-q", "main")
    ours = record(repo, tool_bin, "20261124T000300Z-cccccc", 200, 1.7, 3, root_id)
    git(repo, "merge", "-q", "--no-edit", "other")
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    doc = json.loads((repo / RUN / "cache/metadata.json").read_text())
    assert [e["id"] for e in doc["checkpoints"]] == [root_id, ours, theirs]
    assert doc["best_id"] == theirs and doc["latest_id"] == theirs
    sessions = [
        json.loads(line)["session_id"] for line in (repo / RUN / "sessions.jsonl").read_text().splitlines()
    ]
    assert sorted(sessions) == [
        "20261124T000000Z-aaaaaa",
        "20261124T000300Z-cccccc",
        "20261124T000500Z-bbbbbb",
    ]
    done = subprocess.run([str(tool_bin / "meta-update"), "validate", "--root", str(repo), "--run", RUN],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_merge_driver_three_way_rules(tmp_path: Path, tool_bin: Path) -> None:
    from nanecho_core.index import recompute
    from nanecho_core.store import empty_index

    a = make_entry("s-a", 100, 2.0)
    b = make_entry("s-a", 200, 1.8, parent_id=a["id"])
    gone = make_entry("s-a", 300, 1.9, parent_id=b["id"])
    base = recompute({**empty_index("nanecho-cached-ci"), "checkpoints": [a, b, gone]})
    ours = json.loads(json.dumps(base))
    theirs = json.loads(json.dumps(base))
    ours["checkpoints"][0]["tags"] = ["keep"]  # changed only on our side: kept
    theirs["checkpoints"][0]["notes"] = ["their note"]
    theirs["checkpoints"][1]["status"] = "missing"  # changed only on their side: wins
    ours["checkpoints"][1]["metrics"]["val_loss"] = 1.7
    theirs["checkpoints"][1]["metrics"]["val_loss"] = 1.6  # both changed: %B wins
    del theirs["checkpoints"][2]  # removed on their side, untouched on ours: stays removed
    paths = {}
    for name, doc in (("O", base), ("A", ours), ("B", theirs)):
        paths[name] = tmp_path / name
        atomic_write_json(paths[name], recompute(doc))
    done = subprocess.run([str(tool_bin / "meta-update"), "merge-driver", str(paths["O"]), str(paths["A"]), str(paths["B"])],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    merged = json.loads(paths["A"].read_text())
    first, second = merged["checkpoints"]
    assert first["tags"] == ["keep"] and first["notes"] == ["their note"]
    assert second["status"] == "missing" and second["metrics"]["val_loss"] == 1.6
    assert merged["best_id"] == second["id"]


def test_merge_driver_with_a_malformed_side_fails_and_leaves_ours(tmp_path: Path, tool_bin: Path) -> None:
    ours = tmp_path / "A"
    ours.write_text('{"schema_version": 2}')
    theirs = tmp_path / "B"
    theirs.write_text("{broken")
    done = subprocess.run([str(tool_bin / "meta-update"), "merge-driver", str(tmp_path / "O"), str(ours), str(theirs)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(f"Error: {ours}:$: does not match the metadata schema")
    assert ours.read_text() == '{"schema_version": 2}'
