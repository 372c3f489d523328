"""The emulated actions: cache keys and scopes, artifact layout and lookup, as the workflow sees them."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from replay import Replay, ReplayError
from replay.actions import CacheStore
from replay.artifacts import collect_upload

IDENT = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=src, check=True)
    (src / "a.txt").write_text("a\n")
    subprocess.run(["git", "add", "."], cwd=src, check=True)
    subprocess.run(["git", *IDENT, "commit", "-q", "-m", "init"], cwd=src, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(tmp_path / "remote.git")], check=True)
    subprocess.run(
        ["git", "update-ref", "refs/heads/feature", "main"], cwd=tmp_path / "remote.git", check=True
    )
    return tmp_path / "remote.git"


def replay_of(tmp_path: Path, remote: Path, yaml_text: str, **kwargs) -> Replay:
    (tmp_path / "wf.yml").write_text(textwrap.dedent(yaml_text))
    return Replay(tmp_path / "wf.yml", remote, tmp_path / "state", **kwargs)


def test_cache_restore_prefers_exact_key_then_newest_prefix_within_the_same_paths(tmp_path):
    store = CacheStore(tmp_path / "cache")
    work = tmp_path / "w"
    (work / "d").mkdir(parents=True)
    (work / "d" / "f").write_text("x")
    scope = ["refs/heads/main"]
    assert store.save("k/1", "v1", "refs/heads/main", [work / "d"], work)
    assert store.save("k/2", "v1", "refs/heads/main", [work / "d"], work)
    assert not store.save("k/2", "v1", "refs/heads/main", [work / "d"], work)  # immutable
    assert store.find("k/9", ["k/"], "v1", scope)["key"] == "k/2"
    assert store.find("k/1", ["k/"], "v1", scope)["key"] == "k/1"
    assert store.find("k/9", ["k/"], "other-paths", scope) is None
    assert store.find("x", ["y/"], "v1", scope) is None
    assert store.evict("k/2") == 1
    assert store.find("k/9", ["k/"], "v1", scope)["key"] == "k/1"


CACHE_WORKFLOW = """
    on: [push, pull_request]
    jobs:
      a:
        runs-on: x
        steps:
          - uses: actions/checkout@v5
          - id: restore
            uses: actions/cache/restore@v5
            with: {path: out, key: "c/${{ github.run_id }}", restore-keys: "c/"}
          - id: show
            run: |
              echo "hit=${{ steps.restore.outputs.cache-hit }} matched=${{ steps.restore.outputs.cache-matched-key }}"
              cat out/n 2>/dev/null || echo none
              mkdir -p out && echo "${{ github.run_id }}" > out/n
          - uses: actions/cache/save@v5
            with: {path: out, key: "c/${{ github.run_id }}"}
          - id: again
            uses: actions/cache/save@v5
            with: {path: out, key: "c/${{ github.run_id }}"}
"""


def test_cache_round_trip_is_scoped_by_branch_and_pull_requests_see_the_default_branch(tmp_path, remote):
    replay = replay_of(tmp_path, remote, CACHE_WORKFLOW)
    first = replay.run("push")
    assert first.step("a", "show").log == "hit= matched=\nnone\n"
    assert "Unable to reserve cache" in first.step("a", "again").log
    assert first.step("a", "again").outcome == "success"
    pr = replay.run("pull_request", pr_head="feature")
    assert pr.step("a", "show").log == f"hit=false matched=c/{first.run_id}\n{first.run_id}\n"
    later = replay.run("push")
    # The pull request's entry is newer, but lives in refs/pull/1/merge: main never sees it.
    assert later.step("a", "show").log == f"hit=false matched=c/{first.run_id}\n{first.run_id}\n"
    assert [e["scope"] for e in replay.cache.entries()] == [
        "refs/heads/main",
        "refs/pull/1/merge",
        "refs/heads/main",
    ]


def test_upload_layout_is_the_least_common_ancestor_and_hidden_files_are_left_out(tmp_path):
    work = tmp_path / "w"
    for name in (
        "best/a.pt",
        "best/a.json",
        "best/.hidden",
        "run/sessions.jsonl",
        "run/.git/x",
        "run/c/m.json",
    ):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(name)
    assert sorted(collect_upload(work, "best", False)) == ["a.json", "a.pt"]
    assert sorted(collect_upload(work, "best\n!best/a.json", True)) == [".hidden", "a.pt"]
    assert sorted(collect_upload(work, "best/*.pt\nrun/c/m.json", False)) == ["best/a.pt", "run/c/m.json"]
    assert sorted(collect_upload(work, "run", False)) == ["c/m.json", "sessions.jsonl"]
    assert collect_upload(work, "missing", False) == {}


ARTIFACT_WORKFLOW = """
    on:
      workflow_dispatch:
        inputs:
          fail: {type: boolean, default: false}
    jobs:
      a:
        runs-on: x
        steps:
          - id: previous
            uses: dawidd6/action-download-artifact@v21
            with:
              name: best
              path: prev
              workflow: wf.yml
              workflow_conclusion: success
              search_artifacts: true
              if_no_artifact_found: warn
              allow_forks: false
          - id: show
            run: |
              echo "found=${{ steps.previous.outputs.found_artifact }} $(cat prev/n 2>/dev/null || echo none)"
              mkdir -p out && echo "${{ github.run_id }}" > out/n
          - uses: actions/upload-artifact@v6
            with: {name: best, path: out, retention-days: 3}
          - id: twice
            uses: actions/upload-artifact@v6
            with: {name: best, path: out}
            continue-on-error: true
          - uses: actions/upload-artifact@v6
            with: {name: handoff, path: out}
          - run: exit ${{ inputs.fail && 1 || 0 }}
      b:
        needs: a
        runs-on: x
        steps:
          - uses: actions/download-artifact@v7
            with: {name: handoff, path: got}
          - {id: show, run: cat got/n}
"""


def test_artifacts_are_immutable_per_run_and_found_again_in_the_newest_successful_run(tmp_path, remote):
    replay = replay_of(tmp_path, remote, ARTIFACT_WORKFLOW)
    first = replay.run("workflow_dispatch")
    assert first.step("a", "show").log == "found=false none\n"
    assert "no artifact best" in first.step("a", "previous").log
    assert first.step("a", "twice").outcome == "failure"
    assert "already exists" in first.step("a", "twice").log
    assert first.step("b", "show").log == f"{first.run_id}\n"

    failed = replay.run("workflow_dispatch", inputs={"fail": True})
    assert failed.conclusion == "failure"
    assert failed.step("a", "show").log == f"found=true {first.run_id}\n"
    # The failed run uploaded too, but the search only trusts successful runs.
    assert replay.run("workflow_dispatch").step("a", "show").log == f"found=true {first.run_id}\n"
    replay.artifacts.delete(run_id=first.run_id)
    newest = replay.run("workflow_dispatch")
    assert newest.step("a", "show").log == f"found=true {newest.run_id - 1}\n"


def test_dawidd6_inputs_outside_the_emulation_fail_loudly(tmp_path, remote):
    replay = replay_of(
        tmp_path,
        remote,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - uses: dawidd6/action-download-artifact@v21
                with: {name: best, run_number: 3}
    """,
    )
    with pytest.raises(ReplayError, match="run_number"):
        replay.run("push")


def test_an_action_input_the_emulation_does_not_know_fails_loudly(tmp_path, remote):
    replay = replay_of(
        tmp_path,
        remote,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps: [{uses: actions/checkout@v5, with: {ref: other}}]
    """,
    )
    with pytest.raises(ReplayError, match=r"inputs \['ref'\] are not emulated"):
        replay.run("push")
