"""Concurrency: local `meta-update` writers started at the same instant lose nothing (the run's flock
serialises them). The push race of progress-commit is tests/e2e/test_race.py (8 writers x 5 sessions)."""

from __future__ import annotations

import json
import subprocess

from tests.reliability.conftest import add_fake_session, write_step
from tests.reliability.harness import Workspace, session_ids_in


def _all_at_once(ws: Workspace, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every command before waiting for any (real processes, racing for the same files)."""
    procs = [ws.popen(args) for args in commands]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def test_concurrent_records_lose_no_session_and_no_checkpoint(fake_ws: Workspace, cli) -> None:
    steps = [
        add_fake_session(fake_ws, f"20261124T0001{n:02d}Z-{n:06x}", [2.0 - n / 100], 100 * n)
        for n in range(6)
    ]
    paths = [write_step(fake_ws, step, f"step-{n}.json") for n, step in enumerate(steps)]

    results = _all_at_once(fake_ws, [fake_ws.meta_args("record", str(p)) for p in paths])

    assert [r.returncode for r in results] == [0] * 6, [r.stderr for r in results]
    index = json.loads(fake_ws.metadata.read_text())
    assert sorted(e["id"] for e in index["checkpoints"]) == sorted(s["checkpoints"][0]["id"] for s in steps)
    assert session_ids_in(fake_ws.sessions.read_text()) == {s["session_id"] for s in steps}
    assert len(fake_ws.sessions.read_text().splitlines()) == 6
    assert index["best_id"] == steps[-1]["checkpoints"][0]["id"]
    assert cli(fake_ws.meta_args("validate"))[0] == 0


def test_concurrent_tag_note_and_record_writers_keep_every_update(fake_ws: Workspace, cli) -> None:
    first = add_fake_session(fake_ws, "20261124T000000Z-aaaaaa", [2.0])
    assert cli(fake_ws.meta_args("record", str(write_step(fake_ws, first, "first.json"))))[0] == 0
    target = first["checkpoints"][0]["id"]
    later = add_fake_session(fake_ws, "20261124T000500Z-bbbbbb", [1.9], start=100)
    commands = [fake_ws.meta_args("tag", target, f"tag-{n}") for n in range(4)]
    commands += [fake_ws.meta_args("note", target, f"note {n}") for n in range(3)]
    commands.append(fake_ws.meta_args("record", str(write_step(fake_ws, later, "later.json"))))

    results = _all_at_once(fake_ws, commands)

    assert [r.returncode for r in results] == [0] * len(commands), [r.stderr for r in results]
    index = json.loads(fake_ws.metadata.read_text())
    entry = next(e for e in index["checkpoints"] if e["id"] == target)
    assert sorted(entry["tags"]) == [f"tag-{n}" for n in range(4)]
    assert sorted(entry["notes"]) == [f"note {n}" for n in range(3)]
    assert later["checkpoints"][0]["id"] in {e["id"] for e in index["checkpoints"]}
    assert cli(fake_ws.meta_args("validate"))[0] == 0
