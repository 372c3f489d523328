"""progress-commit as a real process against real remotes: failures, shallow CI checkouts, recovery."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.factories import write_fake_checkpoint
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
    tree_snapshot,
    write_step,
)

CANARY = "CANARYtoken0123456789"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    environ = isolated_git_env(tmp_path)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return environ


def progress_commit(work: Path, environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(BIN / "progress-commit"), "--root", str(work), "--run", RUN, "--backoff", "0.01", *args]
    return subprocess.run(cmd, cwd=work.parent, env=environ, capture_output=True, text=True, timeout=120)


def session(work: Path, writer: int, number: int) -> Path:
    step = step_doc(writer, number)
    record_direct(work, step)
    return write_step(work.parent / f"step-{writer}-{number}.json", step)


def remote_session_ids(remote: Path) -> list[str]:
    return [
        json.loads(line)["session_id"] for line in remote_file(remote, f"{RUN}/sessions.jsonl").splitlines()
    ]


def test_read_only_remote_exits_2_names_the_remote_and_leaves_a_bundle(
    tmp_path: Path, env: dict[str, str]
) -> None:
    remote = make_remote(tmp_path)
    hook = remote / "hooks/pre-receive"
    hook.write_text("#!/bin/sh\necho 'read-only mirror: pushes are not accepted' >&2\nexit 1\n")
    hook.chmod(0o755)
    work = clone(remote, tmp_path / "work")
    step = session(work, 1, 1)
    out = tmp_path / "out/commit-result.json"
    before_remote = git(remote, "rev-parse", "main")

    proc = progress_commit(work, env, "--message-from", str(step), "--push", "--out", str(out))

    doc = json.loads(out.read_text())
    bundle = tmp_path / "out" / f"nanecho-unpushed-{doc['sha'][:12]}.bundle"
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"Error: origin ({remote}): push failed after 1 attempt(s): no rights: "
        "! HEAD:refs/heads/main [remote rejected] (pre-receive hook declined); "
        f"commit {doc['sha'][:12]} kept locally and saved to {bundle} (recover: git pull {bundle} HEAD)\n"
    )
    assert (doc["status"], doc["pushed"], doc["attempts"], doc["bundle"]) == ("failed", False, 1, str(bundle))
    assert doc["reason"].startswith("no rights: ")
    assert git(remote, "rev-parse", "main") == before_remote
    assert git(work, "status", "--porcelain") == ""  # working tree unchanged: the commit holds the files
    # The bundle really holds the session: a fresh clone can pull it.
    rescue = clone(remote, tmp_path / "rescue")
    git(rescue, "bundle", "verify", str(bundle))
    git(rescue, "fetch", "--quiet", str(bundle), "HEAD")
    assert git(rescue, "rev-parse", "FETCH_HEAD") == doc["sha"]
    assert step_doc(1, 1)["session_id"] in git(rescue, "show", f"FETCH_HEAD:{RUN}/sessions.jsonl")


def test_network_failure_is_retried_then_reported_without_ever_printing_the_token(
    tmp_path: Path, env: dict[str, str]
) -> None:
    remote = make_remote(tmp_path)
    work = clone(remote, tmp_path / "work")
    url = f"https://x-access-token:{CANARY}@127.0.0.1:1/owner/repo.git"
    git(work, "remote", "set-url", "origin", url)
    session(work, 1, 1)
    out = tmp_path / "commit-result.json"
    outputs = tmp_path / "github_output"
    environ = {**env, "GITHUB_OUTPUT": str(outputs), "GIT_TRACE": "0"}

    proc = progress_commit(work, environ, "--push", "--retries", "2", "--out", str(out), "--json")

    assert proc.returncode == 2
    doc = json.loads(out.read_text())
    assert (doc["status"], doc["attempts"], doc["pushed"]) == ("failed", 3, False)
    assert doc["reason"].startswith("network: ")
    assert doc["remote"] == "origin (https://***@127.0.0.1:1/owner/repo.git)"
    assert proc.stderr.startswith(
        "Error: origin (https://***@127.0.0.1:1/owner/repo.git): push failed after 3"
    )
    written = [proc.stdout, proc.stderr, out.read_text(), outputs.read_text()]
    written += [p.read_text(errors="replace") for p in tmp_path.glob("*.bundle")]
    written.append(git(work, "log", "-1", "--format=%B"))
    for text in written:
        assert CANARY not in text
    assert outputs.read_text() == f"sha={doc['sha']}\npushed=false\nattempts=3\n"


def test_shallow_detached_checkout_lands_on_the_named_branch(tmp_path: Path, env: dict[str, str]) -> None:
    remote = make_remote(tmp_path)
    work = clone(remote, tmp_path / "work", depth=1)
    git(work, "checkout", "--quiet", "--detach")
    assert git(work, "rev-parse", "--is-shallow-repository") == "true"
    step = session(work, 1, 1)
    out = tmp_path / "commit-result.json"

    proc = progress_commit(
        work, env, "--message-from", str(step), "--push", "--branch", "main", "--out", str(out)
    )

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert (doc["status"], doc["remote_ref"]) == ("pushed", "refs/heads/main")
    assert git(remote, "rev-parse", "main") == doc["sha"]
    assert remote_session_ids(remote) == [step_doc(1, 1)["session_id"]]


@pytest.mark.slow
def test_shallow_checkout_behind_the_remote_rebases_and_keeps_every_session(
    tmp_path: Path, env: dict[str, str]
) -> None:
    remote = make_remote(tmp_path)
    work = clone(remote, tmp_path / "work", depth=1)
    git(work, "checkout", "--quiet", "--detach")
    other = clone(remote, tmp_path / "other")
    for number in (1, 2, 3):  # the remote moves three commits past the shallow checkout
        session(other, 2, number)
        assert progress_commit(other, env, "--push", "--out", str(tmp_path / "o.json")).returncode == 0
    session(work, 1, 1)
    out = tmp_path / "commit-result.json"

    proc = progress_commit(work, env, "--push", "--branch", "main", "--out", str(out))

    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["attempts"] == 2
    assert remote_session_ids(remote) == [step_doc(2, n)["session_id"] for n in (1, 2, 3)] + [
        step_doc(1, 1)["session_id"]
    ]
    assert git(remote, "rev-list", "--count", "main") == "5"  # linear: seed + 4 sessions
    assert git(remote, "rev-list", "--merges", "--count", "main") == "0"


def test_a_commit_whose_push_died_is_pushed_by_the_next_run(tmp_path: Path, env: dict[str, str]) -> None:
    remote = make_remote(tmp_path)
    work = clone(remote, tmp_path / "work")
    session(work, 1, 1)
    assert (
        progress_commit(work, env, "--out", str(tmp_path / "a.json")).returncode == 0
    )  # committed, not pushed
    sha = git(work, "rev-parse", "HEAD")
    out = tmp_path / "b.json"

    proc = progress_commit(work, env, "--push", "--out", str(out))

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert (doc["status"], doc["sha"], doc["files"]) == ("pushed", sha, [])
    assert doc["note"].startswith("pushing an earlier commit that never reached the remote")
    assert git(remote, "rev-parse", "main") == sha
    assert progress_commit(work, env, "--push", "--out", str(out)).returncode == 3


def test_stale_index_lock_and_interrupted_rebase_do_not_block_the_next_run(
    tmp_path: Path, env: dict[str, str]
) -> None:
    remote = make_remote(tmp_path)
    work = clone(remote, tmp_path / "work")
    other = clone(remote, tmp_path / "other")
    session(other, 2, 1)
    assert progress_commit(other, env, "--push", "--out", str(tmp_path / "o.json")).returncode == 0
    session(work, 1, 1)
    assert progress_commit(work, env, "--out", str(tmp_path / "w.json")).returncode == 0
    ours = git(work, "rev-parse", "HEAD")
    # What a kill -9 in the middle of `git rebase` leaves: a rebase stopped half-way, a held index lock.
    git(work, "fetch", "--quiet", "origin")
    git(work, "-c", "sequence.editor=sed -i 1ibreak", "rebase", "-i", "origin/main")
    assert (work / ".git/rebase-merge").is_dir() and git(work, "rev-parse", "HEAD") != ours
    (work / ".git/index.lock").write_text("")
    out = tmp_path / "commit-result.json"

    proc = progress_commit(work, env, "--push", "--out", str(out))

    assert proc.returncode == 0, proc.stderr
    assert "recovered an interrupted run" in proc.stderr and "aborted an interrupted rebase" in proc.stderr
    assert not (work / ".git/index.lock").exists() and not (work / ".git/rebase-merge").exists()
    assert git(work, "symbolic-ref", "--short", "HEAD") == "main"
    assert remote_session_ids(remote) == [step_doc(2, 1)["session_id"], step_doc(1, 1)["session_id"]]
    assert git(remote, "rev-parse", "main") == json.loads(out.read_text())["sha"]


def test_light_tool_does_not_import_torch_or_numpy(env: dict[str, str]) -> None:
    code = "import sys, nanecho_tools.progress_commit; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    proc = subprocess.run(
        [str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert proc.stdout == "[]\n"


def test_untouched_tree_when_the_run_directory_is_missing(tmp_path: Path, env: dict[str, str]) -> None:
    remote = make_remote(tmp_path)
    work = clone(remote, tmp_path / "work")
    before = tree_snapshot(work)
    proc = progress_commit(work, env, "--push", "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2
    assert proc.stderr == f"Error: {work / RUN}: run directory not found\n"
    assert tree_snapshot(work) == before and not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_two_unpushed_commits_go_through_git_rebase_with_the_real_merge_drivers(
    tmp_path: Path, env: dict[str, str]
) -> None:
    remote = make_remote(tmp_path)
    work, other = clone(remote, tmp_path / "work"), clone(remote, tmp_path / "other")

    def record(clone_dir: Path, writer: int, number: int) -> None:
        step = step_doc(writer, number)
        for entry in step["checkpoints"]:
            write_fake_checkpoint(clone_dir / RUN, entry)
        path = write_step(tmp_path / f"step-{writer}-{number}.json", step)
        cmd = [str(BIN / "meta-update"), "record", str(path), "--root", str(clone_dir), "--run", RUN]
        subprocess.run(cmd, env=env, check=True, capture_output=True)

    record(other, 2, 1)
    assert progress_commit(other, env, "--push", "--out", str(tmp_path / "o.json")).returncode == 0
    record(work, 1, 1)
    assert progress_commit(work, env, "--out", str(tmp_path / "w1.json")).returncode == 0  # not pushed
    record(work, 1, 2)
    out = tmp_path / "w2.json"

    proc = progress_commit(work, env, "--push", "--out", str(out))

    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["attempts"] == 2
    expected = [step_doc(2, 1)["session_id"], step_doc(1, 1)["session_id"], step_doc(1, 2)["session_id"]]
    assert remote_session_ids(remote) == expected
    index = json.loads(remote_file(remote, f"{RUN}/cache/metadata.json"))
    assert sorted(e["session_id"] for e in index["checkpoints"]) == sorted(expected)
    assert git(remote, "rev-list", "--merges", "--count", "main") == "0"
    assert git(remote, "rev-list", "--count", "main") == "4"


# A receive-pack killed a minute ago, or an instant ago (the next job's push came right after the kill).
@pytest.mark.parametrize("killed_s_ago", [60.0, 0.0])
def test_a_ref_lock_left_in_a_local_remote_by_a_killed_push_is_cleared(
    tmp_path: Path, env: dict[str, str], killed_s_ago: float
) -> None:
    remote = make_remote(tmp_path)
    work = clone(remote, tmp_path / "work")
    session(work, 1, 1)
    stale = remote / "refs/heads/main.lock"
    stale.write_text("0" * 40 + "\n")
    os.utime(stale, (time.time() - killed_s_ago, time.time() - killed_s_ago))
    out = tmp_path / "commit-result.json"

    proc = progress_commit(work, env, "--push", "--out", str(out))

    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["attempts"] == 2
    assert not stale.exists()
    assert remote_session_ids(remote) == [step_doc(1, 1)["session_id"]]


def test_a_fresh_ref_lock_in_the_remote_is_never_touched(tmp_path: Path, env: dict[str, str]) -> None:
    remote = make_remote(tmp_path)
    work = clone(remote, tmp_path / "work")
    held = remote / "refs/heads/main.lock"
    held.write_text("")
    os.utime(held, (time.time() + 3600, time.time() + 3600))  # always "just taken" by a live update
    session(work, 1, 1)
    out = tmp_path / "commit-result.json"

    proc = progress_commit(work, env, "--push", "--retries", "1", "--out", str(out))

    assert proc.returncode == 2
    assert held.exists()
    assert json.loads(out.read_text())["reason"].startswith(
        "diverged beyond repair: still rejected after 2 attempts"
    )
