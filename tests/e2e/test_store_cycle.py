"""Three sessions through the console scripts, as the workflow runs them: select, record, prune, validate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nanecho_core.fsio import atomic_write_json
from tests.factories import make_entry, make_session, write_fake_checkpoint

RUN = ".training-progress/nanecho-cached-ci"


def tool(tool_bin: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool_bin / args[0]), *args[1:]], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_sessions_resume_from_the_best_and_a_lost_cache_is_refused(tmp_path: Path, tool_bin: Path) -> None:
    base = ["--root", str(tmp_path), "--run", RUN]
    parent = None
    losses = {1: 2.0, 2: 1.4, 3: 1.6}
    ids = []
    for n in (1, 2, 3):
        selected = tool(tool_bin, "ckpt-select", *base, "--out", str(tmp_path / "selection.json"))
        assert selected.returncode == 0, selected.stderr
        selection = json.loads((tmp_path / "selection.json").read_text())
        assert (selection["chosen"] or {}).get("id") == parent
        session = f"20261124T0{n}0000Z-00000{n}"
        entry = make_entry(
            session, n * 300, losses[n], parent_id=parent, created_at=f"2026-11-24T0{n}:05:00Z"
        )
        write_fake_checkpoint(tmp_path / RUN, entry)
        step = tmp_path / "step.json"
        atomic_write_json(step, make_session(session, (n - 1) * 300, n * 300, checkpoints=[entry]))
        recorded = tool(tool_bin, "meta-update", "record", str(step), *base)
        assert recorded.returncode == 0, recorded.stderr
        ids.append(entry["id"])
        parent = json.loads((tmp_path / RUN / "cache/metadata.json").read_text())["best_id"]
    assert parent == ids[1]  # session 3 was worse: the best stays session 2's checkpoint
    pruned = tool(tool_bin, "meta-update", "prune", "--keep-best", "1", "--keep-last", "1", *base)
    assert pruned.stdout.splitlines()[0] == f"deleted cache/checkpoints/{ids[0]}.pt"
    assert tool(tool_bin, "meta-update", "validate", *base).returncode == 0
    # A cache miss: the weights are gone. Resuming fresh would lose 900 iterations of progress.
    for cid in ids[1:]:
        (tmp_path / RUN / f"cache/checkpoints/{cid}.pt").unlink()
    refused = tool(tool_bin, "ckpt-select", *base, "--out", str(tmp_path / "after.json"))
    assert refused.returncode == 2 and refused.stderr.startswith(
        f"Error: refusing to resume: the index knows {ids[1]}"
    )
    assert not (tmp_path / "after.json").exists()
    allowed = tool(tool_bin, "ckpt-select", *base, "--out", str(tmp_path / "after.json"), "--allow-fresh")
    assert allowed.returncode == 0
    assert json.loads((tmp_path / "after.json").read_text())["regression"] is True
