"""netrain-cached.yml replayed end to end: real git remote, real training, emulated cache and artifacts.

The workflow file itself runs (replay/), so these are tests of the YAML: its conditions, its
step order, its keys and paths. A module fixture replays two push runs once; every scenario starts
from a copy of that state (remote, cache, artifacts, run history).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
import tarfile
from pathlib import Path
from typing import Any

import pytest

from replay import Replay, RunResult, seed_remote

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow_replay")]

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github/workflows/netrain-cached.yml"
RUN = "nanecho-cached-ci"
RUN_DIR = f".training-progress/{RUN}"
ITERS = 10  # per session; the tiny model evaluates and saves every 10 iterations
# Repository variables the workflow honours: a tiny model and few iterations a session keep it fast.
VARIABLES = {"NANECHO_CONFIG": "tests/e2e/replay_tiny_config.json", "NANECHO_ITERS": str(ITERS)}


def git(remote: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=remote, check=True, capture_output=True, text=True
    ).stdout.strip()


def remote_sessions(remote: Path, run_dir: str = RUN_DIR) -> list[dict[str, Any]]:
    text = git(remote, "show", f"main:{run_dir}/sessions.jsonl")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def nanecho_commits(remote: Path) -> list[str]:
    return [
        line for line in git(remote, "log", "--format=%s", "main").splitlines() if line.startswith("nanecho(")
    ]


def assert_success(result: RunResult) -> None:
    failed = [
        f"{s.job}/{s.id}:\n{s.log[-3000:]}" for s in result.steps if s.outcome in ("failure", "cancelled")
    ]
    assert result.conclusion == "success", "\n".join(failed)


def assert_no_token_in_logs(replay: Replay, result: RunResult) -> None:
    for step in result.steps:
        assert replay.token not in step.log, f"{step.job}/{step.id} printed the job token"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[RunResult]]:
    base = tmp_path_factory.mktemp("replay-base")
    seed_remote(REPO, base / "state" / "remote.git")
    replay = Replay(WORKFLOW, base / "state" / "remote.git", base / "state", variables=VARIABLES)
    results = [replay.run("push"), replay.run("push")]
    for result in results:
        assert_success(result)
    shutil.rmtree(base / "state" / "runners")
    return base / "state", results


def replay_from(two_runs: tuple[Path, list[RunResult]], tmp_path: Path, **kwargs: Any) -> Replay:
    shutil.copytree(two_runs[0], tmp_path / "state", symlinks=True)
    variables = {**VARIABLES, **kwargs.pop("variables", {})}
    return Replay(
        WORKFLOW, tmp_path / "state" / "remote.git", tmp_path / "state", variables=variables, **kwargs
    )


def test_three_consecutive_runs_each_start_lower_and_commit_their_figures(two_runs, tmp_path):
    replay = replay_from(two_runs, tmp_path)
    project_site = Path(sysconfig.get_paths()["purelib"])
    editable = sorted(project_site.glob("__editable__*nanecho*"))
    before = [p.read_bytes() for p in editable]
    third = replay.run("push")
    assert_success(third)
    # The workflow's install step ran inside the replay's throwaway venv, not in the project's.
    assert editable and [p.read_bytes() for p in editable] == before
    assert "Not uninstalling nanecho" in third.step("train", "step3").log
    results = [*two_runs[1], third]

    sessions = remote_sessions(replay.remote)
    assert len(sessions) == 3
    assert [s["resume_source"] for s in sessions] == ["fresh", "cache", "cache"]
    starts = [s["start_val_loss"] for s in sessions]
    assert starts[0] > starts[1] > starts[2], starts
    assert [s["start_iteration"] for s in sessions] == [0, ITERS, 2 * ITERS]
    assert sessions[1]["resumed_from"] == f"ckpt-{sessions[0]['session_id']}-{ITERS:08d}"

    commits = nanecho_commits(replay.remote)
    assert len(commits) == 3
    for commit, session in zip(reversed(commits), sessions, strict=True):
        assert session["session_id"] in commit
        assert f"iters {session['start_iteration']}→{session['end_iteration']}" in commit
        assert f"val {session['start_val_loss']:.3f}→{session['end_val_loss']:.3f}" in commit
    for result, session in zip(results, sessions, strict=True):
        assert result.jobs == {"train": "success", "commit": "success"}
        assert f"`{session['session_id']}`" in result.summaries["train"]
        assert_no_token_in_logs(replay, result)


def test_cache_evicted_resumes_from_the_artifact_tier(two_runs, tmp_path):
    replay = replay_from(two_runs, tmp_path)
    assert replay.cache.evict() == 2
    result = replay.run("push")
    assert_success(result)
    assert result.step("train", "cache").outputs.get("cache-matched-key") is None
    assert result.step("train", "artifact").outcome == "success"
    previous = remote_sessions(replay.remote)[1]
    session = remote_sessions(replay.remote)[-1]
    assert session["resume_source"] == "artifact"
    assert session["resumed_from"] == f"ckpt-{previous['session_id']}-{2 * ITERS:08d}"
    assert session["start_iteration"] == 2 * ITERS
    # The session refilled the cache, so the next run is back on the fast tier.
    assert [e["key"] for e in replay.cache.entries()] == [f"nanecho/{RUN}/{result.run_id}-1"]


def checkpoints_in(replay: Replay, run_id: int) -> list[str]:
    """The checkpoint files in the cache entry `run_id` saved."""
    (entry,) = [e for e in replay.cache.entries() if e["key"] == f"nanecho/{RUN}/{run_id}-1"]
    with tarfile.open(Path(entry["dir"]) / "data.tar") as tar:
        return sorted(Path(name).name for name in tar.getnames() if name.endswith(".pt"))


def test_a_session_resumed_from_the_artifact_that_ends_worse_keeps_the_best_for_later_runs(
    two_runs, tmp_path
):
    # ckpt-select read the artifact in place: the cache saved after a worse session lacked the best
    # checkpoint, the next best artifact held only the worse one, and every later run was refused.
    replay = replay_from(
        two_runs, tmp_path, variables={"NANECHO_CONFIG": "tests/e2e/replay_diverge_config.json"}
    )
    replay.cache.evict()
    worse = replay.run("push")
    assert_success(worse)
    resumed = remote_sessions(replay.remote)[-1]
    assert resumed["resume_source"] == "artifact"
    assert resumed["end_val_loss"] > resumed["start_val_loss"]  # a learning rate of 0.5: it got worse
    best = f"{resumed['resumed_from']}.pt"
    assert best in checkpoints_in(replay, worse.run_id)

    replay.variables["NANECHO_CONFIG"] = VARIABLES["NANECHO_CONFIG"]
    following = replay.run("push")
    assert_success(following)
    session = remote_sessions(replay.remote)[-1]
    assert (session["resume_source"], session["start_iteration"]) == ("cache", 3 * ITERS)


def test_cache_and_artifacts_gone_fails_loudly_unless_allow_fresh(two_runs, tmp_path):
    replay = replay_from(two_runs, tmp_path)
    replay.cache.evict()
    assert replay.artifacts.delete() > 0
    head = git(replay.remote, "rev-parse", "main")

    refused = replay.run("push")
    assert refused.conclusion == "failure"
    assert refused.jobs == {"train": "failure", "commit": "skipped"}
    select = refused.step("train", "select")
    assert select.outcome == "failure"
    assert "Error:" in select.log and "--allow-fresh" in select.log
    assert refused.step("train", "train").outcome == "skipped"
    assert "refused to start from scratch" in refused.summaries["train"]
    assert git(replay.remote, "rev-parse", "main") == head

    fresh = replay.run("workflow_dispatch", inputs={"preset": "ci", "allow_fresh": True})
    assert_success(fresh)
    session = remote_sessions(replay.remote)[-1]
    assert session["resume_source"] == "fresh"
    assert session["regression_allowed"] is True
    assert session["start_iteration"] == 0
    assert "**reset**" in fresh.summaries["train"]
    # The restarted lineage is what the tiers hold now: the next scheduled push resumes it.
    # record tagged the lost checkpoints abandoned: the index's best is the restarted one, present here.
    assert not fresh.step("train", "stage").annotations
    assert replay.artifacts.names(fresh.run_id) == [f"nanecho-{RUN}-best", "nanecho-progress"]
    following = replay.run("push")
    assert_success(following)
    assert remote_sessions(replay.remote)[-1]["resume_source"] == "cache"


def test_overlapping_scheduled_and_push_runs_both_land_in_the_remote_history(two_runs, tmp_path):
    # NANECHO_RUN points both triggers at one run directory; on GitHub the concurrency group would
    # queue them, here they interleave: the scheduled run pushes last, onto a moved branch.
    shared = {"NANECHO_RUN": RUN}
    replay = replay_from(two_runs, tmp_path, variables=shared)
    scheduled = replay.start("schedule")
    scheduled.advance("train", "train")
    pushed = replay.run("push")
    assert_success(pushed)
    late = scheduled.finish()
    assert_success(late)
    assert late.step("commit", "commit").outputs["pushed"] == "true"

    sessions = remote_sessions(replay.remote)
    ids = [s["session_id"] for s in sessions]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert {s["preset"] for s in sessions[2:]} == {"ci", "scheduled"}
    assert {s["trigger"] for s in sessions[2:]} == {"push", "schedule"}
    assert len(nanecho_commits(replay.remote)) == 4
    metadata = json.loads(git(replay.remote, "show", f"main:{RUN_DIR}/cache/metadata.json"))
    recorded = {c["session_id"] for c in metadata["checkpoints"]}
    assert set(ids[2:]) <= recorded


def test_pull_request_run_trains_and_summarizes_but_pushes_nothing(two_runs, tmp_path):
    replay = replay_from(two_runs, tmp_path)
    main = git(replay.remote, "rev-parse", "main")
    git(replay.remote, "update-ref", "refs/heads/feature", main)
    branches = git(replay.remote, "for-each-ref", "refs/heads")

    result = replay.run("pull_request", pr_head="feature")
    assert_success(result)
    assert result.jobs == {"train": "success", "commit": "skipped"}
    assert result.step("train", "train").outputs["end_iteration"] == str(3 * ITERS)
    assert "### Latest session" in result.summaries["train"]
    assert git(replay.remote, "for-each-ref", "refs/heads") == branches
    # No weights from a pull request for trusted runs to resume from; its cache stays in its own scope.
    assert replay.artifacts.names(result.run_id) == []
    # Nor a cache entry: on its next push it would shadow the base branch's newer ones (scopes are
    # searched own-first), and the pull request would be refused once main had moved on.
    assert [e for e in replay.cache.entries() if e["key"].endswith(f"/{result.run_id}-1")] == []
    assert_no_token_in_logs(replay, result)


@pytest.mark.parametrize(
    "grace",
    [
        pytest.param(
            (7.5, 2.5), id="github-sigint-first"
        ),  # the runner: SIGINT, 7.5 s, SIGTERM, 2.5 s, SIGKILL
        pytest.param(
            (0.0, 0.0), id="sigkill-at-once"
        ),  # a runner that dies: no chance to save on the way out
    ],
)
def test_run_killed_mid_training_keeps_its_checkpoints_in_the_cache_and_the_next_run_resumes(
    two_runs, tmp_path, grace
):
    replay = replay_from(two_runs, tmp_path, grace=grace, variables={"NANECHO_ITERS": "100000"})
    killed = replay.run("push", timeouts={"train": 45.0})
    replay.variables["NANECHO_ITERS"] = VARIABLES["NANECHO_ITERS"]
    assert killed.conclusion == "cancelled"
    assert killed.jobs == {"train": "cancelled", "commit": "skipped"}
    train = killed.step("train", "train")
    assert train.outcome == "cancelled" and train.timed_out
    assert "saved cache/checkpoints/" in train.log
    save = next(s for s in killed.steps if s.name == "Save checkpoints (cache tier)")
    assert save.outcome == "success"

    entry = replay.cache.entries()[0]
    assert entry["key"] == f"nanecho/{RUN}/{killed.run_id}-1"
    with tarfile.open(Path(entry["dir"]) / "data.tar") as tar:
        names = [Path(n).name for n in tar.getnames() if n.endswith(".json")]
    known = {s["session_id"] for s in remote_sessions(replay.remote)}
    killed_ckpts = sorted(n[:-5] for n in names if n[5:-14] not in known)
    assert killed_ckpts, names
    last_saved = max(killed_ckpts, key=lambda name: int(name[-8:]))
    assert int(last_saved[-8:]) > 2 * ITERS
    if grace[0] > 0:
        # train-step caught SIGINT, finished its iteration and saved: that save is in the cache.
        assert train.outputs["stop_reason"] == "signal"
        assert Path(train.outputs["checkpoint_file"]).stem == last_saved

    after = replay.run("push")
    assert_success(after)
    session = remote_sessions(replay.remote)[-1]
    assert session["resume_source"] == "cache"
    assert session["resumed_from"] in killed_ckpts
    assert session["start_iteration"] > 2 * ITERS
