"""No false push success: a remote that accepts a push and then drops it (its post-receive hook puts the
branch back) must not be reported as pushed; the commit is kept in a bundle and the exit code is 2."""

from __future__ import annotations

import json
import stat

from tests.reliability.conftest import add_fake_session, write_step
from tests.reliability.harness import Workspace, git, remote_sessions


def test_push_the_remote_silently_drops_is_never_reported_as_pushed(fake_ws: Workspace, cli) -> None:
    hook = fake_ws.remote / "hooks" / "post-receive"
    hook.write_text('#!/bin/sh\nwhile read old new ref; do git update-ref "$ref" "$old"; done\n')
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    tip = git(fake_ws.remote, "rev-parse", "main", env=fake_ws.env)
    step = add_fake_session(fake_ws, "20261124T000000Z-aaaaaa", [2.0])
    step_json = write_step(fake_ws, step)
    assert cli(fake_ws.meta_args("record", str(step_json)))[0] == 0
    out = fake_ws.out / "commit.json"

    done = fake_ws.tool(fake_ws.commit_args(out, step=step_json) + ["--backoff", "0"])

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("Error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    result = json.loads(out.read_text())
    assert (result["status"], result["pushed"]) == ("failed", False)
    assert result["attempts"] >= 2
    assert result["bundle"] is not None
    assert git(fake_ws.remote, "rev-parse", "main", env=fake_ws.env) == tip
    assert step["session_id"] not in remote_sessions(fake_ws)
    # The bundle holds the commit: a later run (or a human) can still land it.
    heads = git(fake_ws.root, "bundle", "list-heads", result["bundle"], env=fake_ws.env)
    assert result["sha"] in heads
