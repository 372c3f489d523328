"""Kill -9 at random instants: the run stays valid, the best completed save stays selectable, git stays
sound, and no recorded or pushed session is lost (the campaign is in killfuzz.py; the benchmark runs 200+)."""

from __future__ import annotations

import json

import pytest

from tests.reliability.conftest import add_fake_session, write_step
from tests.reliability.harness import Workspace, fsck, make_workspace, remote_sessions
from tests.reliability.killfuzz import KillCampaign, inprocess_runner, run_step


def _report(outcomes) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(f"run {o.index} {o.target}/{o.mode}: {o.problems}" for o in outcomes if not o.valid)


def test_meta_update_and_progress_commit_killed_mid_write_lose_nothing(fake_ws: Workspace) -> None:
    campaign = KillCampaign(
        fake_ws,
        seed=20261124,
        fake=True,
        targets=("meta-update", "progress-commit"),
        modes=("phase",),
        helper=inprocess_runner(),
    )
    outcomes = campaign.run(2, inprocess_runner(), until_killed=True)

    assert [(o.target, o.mode) for o in outcomes][:2] == [
        ("meta-update", "phase"),
        ("progress-commit", "phase"),
    ]
    assert sum(o.killed for o in outcomes) == 2, [(o.index, o.target, o.killed) for o in outcomes]
    assert all(o.valid for o in outcomes), _report(outcomes)
    assert not any(o.lost_sessions for o in outcomes)
    assert campaign.recovery_problems == []
    assert campaign.recorded <= remote_sessions(fake_ws)


@pytest.mark.slow
def test_train_step_meta_update_and_progress_commit_killed_at_random_instants_lose_nothing(
    scratch,  # type: ignore[no-untyped-def]
) -> None:
    ws = make_workspace(scratch / "ws")
    campaign = KillCampaign(ws, seed=7, iters=10, helper=inprocess_runner())
    outcomes = campaign.run(12, inprocess_runner())

    assert sum(o.killed for o in outcomes) >= 9
    assert all(o.valid for o in outcomes), _report(outcomes)
    assert not any(o.lost_sessions for o in outcomes)
    assert campaign.recovery_problems == []
    assert campaign.recorded and campaign.recorded <= remote_sessions(ws)


def test_session_killed_before_record_is_adopted_by_the_next_record_without_a_lineage_hole(
    fake_ws: Workspace, cli
) -> None:
    first = add_fake_session(fake_ws, "20261124T000000Z-aaaaaa", [2.0])
    assert cli(fake_ws.meta_args("record", str(write_step(fake_ws, first, "first.json"))))[0] == 0
    # The second session trained and saved, then its job died before `meta-update record`.
    orphan = add_fake_session(fake_ws, "20261124T000100Z-bbbbbb", [1.9], start=100)["checkpoints"][0]
    orphan_parent = first["checkpoints"][0]["id"]
    sidecar = fake_ws.run_dir / orphan["file"].replace(".pt", ".json")
    sidecar.write_text(json.dumps({**orphan, "parent_id": orphan_parent}))
    orphan["parent_id"] = orphan_parent
    sel = fake_ws.out / "selection.json"
    assert cli(fake_ws.select_args(sel))[0] == 0
    assert json.loads(sel.read_text())["chosen"]["id"] == orphan["id"]  # resumed from the sidecar
    third = add_fake_session(fake_ws, "20261124T000200Z-cccccc", [1.8], start=200)
    third["checkpoints"][0]["parent_id"] = orphan["id"]
    third["resumed_from"], third["resume_source"] = orphan["id"], "cache"

    code, _out, err = cli(fake_ws.meta_args("record", str(write_step(fake_ws, third, "third.json"))))
    assert code == 0, err

    index = json.loads(fake_ws.metadata.read_text())
    assert [e["id"] for e in index["checkpoints"]] == [
        first["checkpoints"][0]["id"],
        orphan["id"],
        third["checkpoints"][0]["id"],
    ]
    assert cli(fake_ws.meta_args("validate"))[0] == 0


def test_git_lock_left_by_a_killed_commit_does_not_block_the_next_one(fake_ws: Workspace, cli) -> None:
    step = add_fake_session(fake_ws, "20261124T000000Z-aaaaaa", [2.0])
    step_json = write_step(fake_ws, step)
    assert cli(fake_ws.meta_args("record", str(step_json)))[0] == 0
    git_dir = fake_ws.root / ".git"
    killed = run_step(
        fake_ws,
        fake_ws.commit_args(fake_ws.out / "c1.json", step=step_json),
        marker=lambda: (git_dir / "index.lock").exists(),
        spread=0.0,
    )
    if not killed.killed:  # the commit outran the poller: plant the lock a kill would have left
        (git_dir / "index.lock").write_bytes(b"")
    done = fake_ws.tool(fake_ws.commit_args(fake_ws.out / "c2.json", step=step_json))
    assert done.returncode in (0, 3), done.stderr
    if done.returncode == 0:
        assert json.loads((fake_ws.out / "c2.json").read_text())["pushed"] is True
    assert step["session_id"] in remote_sessions(fake_ws)
    assert fsck(fake_ws.root, fake_ws.env) is None and fsck(fake_ws.remote, fake_ws.env) is None
