"""Slow: real train-step checkpoints of the tiny model — a wrong-shape checkpoint with an honest hash is
refused at load and the next best is chosen once it is marked; a checkpoint write past the file-size
limit leaves the previous checkpoints and index intact."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanecho_core.fsio import atomic_write_json, sha256_file
from tests.reliability.harness import Workspace, make_workspace, scratch_dir, tree_digest
from tests.reliability.test_disk_full import file_size_limit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained() -> Iterator[Workspace]:
    """One real session of the tiny model (checkpoints at iterations 5 and 10), recorded."""
    base = scratch_dir("nanecho-trained-")
    ws = make_workspace(base / "ws")
    step = ws.out / "step.json"
    for args in (ws.train_args(step, iters=10), ws.meta_args("record", str(step))):
        done = ws.tool(args)
        assert done.returncode == 0, done.stderr
    yield ws
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ws(trained: Workspace, scratch: Path) -> Workspace:
    shutil.copytree(trained.base, scratch / "copy", symlinks=True)
    return Workspace(base=scratch / "copy", env=dict(trained.env))


def _one_error_after_logs(stderr: str) -> str | None:
    """train-step logs progress on stderr; a refusal must still end in exactly one `Error: …` line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    if "Traceback" in stderr or len(errors) != 1 or lines[-1] != errors[0]:
        return f"expected one final Error line and no traceback: {stderr[-600:]!r}"
    return None


def _entries(ws: Workspace) -> list[dict]:
    return sorted(json.loads(ws.metadata.read_text())["checkpoints"], key=lambda e: e["iteration"])


def test_wrong_shape_checkpoint_with_an_honest_hash_is_refused_at_load(ws: Workspace, cli) -> None:
    import torch

    from nanecho_core.checkpoint import load_checkpoint, save_checkpoint

    older, best = _entries(ws)[-2:]
    pt = ws.run_dir / best["file"]
    state = load_checkpoint(pt, best["sha256"])
    name = next(k for k, v in state["model"].items() if v.dim() == 2)
    state["model"][name] = torch.zeros(3, 3)
    save_checkpoint(state, pt)
    index = json.loads(ws.metadata.read_text())
    for entry in index["checkpoints"]:
        if entry["id"] == best["id"]:
            entry.update(sha256=sha256_file(pt), bytes=pt.stat().st_size)
            atomic_write_json(pt.with_suffix(".json"), entry)
    ws.metadata.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    for stamp in ws.run_dir.rglob(".metadata.verified"):
        stamp.unlink()
    sel, step = ws.out / "selection.json", ws.out / "step-2.json"
    assert cli(ws.select_args(sel))[0] == 0
    assert json.loads(sel.read_text())["chosen"]["id"] == best["id"]  # the hash cannot tell
    before = tree_digest(ws.run_dir)

    done = ws.tool(ws.train_args(step, resume=sel, iters=2))

    assert done.returncode == 2, done.stderr
    assert _one_error_after_logs(done.stderr) is None
    assert str(pt) in done.stderr and name in done.stderr
    assert not step.exists()
    assert tree_digest(ws.run_dir) == before
    code, _out, err = cli(ws.meta_args("set", best["id"], "status", "corrupt"))
    assert code == 0, err
    code, _out, err = cli(ws.select_args(sel, allow_fresh=True))
    assert code == 0, err
    assert json.loads(sel.read_text())["chosen"]["id"] == older["id"]
    assert ws.tool(ws.train_args(step, resume=sel, iters=2)).returncode == 0


def test_checkpoint_write_past_the_size_limit_keeps_previous_checkpoints_and_index(
    ws: Workspace, cli
) -> None:
    sel, step = ws.out / "selection.json", ws.out / "step-2.json"
    assert cli(ws.select_args(sel))[0] == 0
    sizes = [(ws.run_dir / e["file"]).stat().st_size for e in _entries(ws)]
    before = tree_digest(ws.run_dir)

    done = ws.tool(ws.train_args(step, resume=sel, iters=5), preexec_fn=file_size_limit(min(sizes) // 2))

    assert done.returncode == 2, done.stdout + done.stderr
    assert _one_error_after_logs(done.stderr) is None
    assert "File too large" in done.stderr.splitlines()[-1]
    assert tree_digest(ws.run_dir) == before  # no partial .pt, no sidecar, no temp file
    assert not step.exists()
    assert cli(ws.meta_args("validate"))[0] == 0
    retry = ws.tool(ws.train_args(step, resume=sel, iters=5))
    assert retry.returncode == 0, retry.stderr
    assert json.loads(step.read_text())["start_iteration"] == 10
