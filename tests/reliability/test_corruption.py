"""Corruption: damaged checkpoints are rejected by hash (or by the weights-only loader) and the next best
is chosen; a checkpoint carrying a pickled callable is refused without running it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from nanecho_core.fsio import atomic_write_json, sha256_file
from tests.reliability.conftest import add_fake_session, write_step
from tests.reliability.harness import Workspace, one_error_line

SESSION = "20261124T000000Z-aaaaaa"


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bit-flipped":
        path.write_bytes(data[:5] + bytes([data[5] ^ 0x10]) + data[6:])
    elif how == "zero-length":
        path.write_bytes(b"")
    elif how == "replaced-same-size":
        path.write_bytes(os.urandom(len(data)))


def _index(ws: Workspace, cli, step: dict) -> None:
    code, _out, err = cli(
        ws.meta_args("record", str(write_step(ws, step, f"record-{step['session_id']}.json")))
    )
    assert code == 0, err


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("truncated", r"size \d+ != recorded \d+ bytes \(truncated or replaced\)"),
        ("bit-flipped", r"sha256 mismatch: file [0-9a-f]{12} != recorded [0-9a-f]{12} \(corrupt\)"),
        ("zero-length", r"size 0 != recorded \d+ bytes \(truncated or replaced\)"),
        ("replaced-same-size", r"sha256 mismatch: file [0-9a-f]{12} != recorded [0-9a-f]{12} \(corrupt\)"),
    ],
)
def test_damaged_best_checkpoint_is_rejected_by_hash_and_the_next_best_is_chosen(
    fake_ws: Workspace, cli, how: str, reason: str
) -> None:
    step = add_fake_session(fake_ws, SESSION, [2.0, 1.96])
    _index(fake_ws, cli, step)
    older, best = step["checkpoints"]
    _damage(fake_ws.run_dir / best["file"], how)

    sel = fake_ws.out / "selection.json"
    code, out, err = cli(fake_ws.select_args(sel))

    assert (code, err) == (0, "")
    doc = json.loads(sel.read_text())
    assert doc["chosen"]["id"] == older["id"]
    assert doc["resume_path"] == str(fake_ws.run_dir / older["file"])
    assert doc["regression"] is False
    rejected = {r["id"]: r for r in doc["rejected"]}
    assert rejected[best["id"]]["tier"] == "cache"
    assert re.fullmatch(reason, rejected[best["id"]]["reason"]), rejected[best["id"]]["reason"]
    assert out.startswith(f"cache: {older['id']}")


def test_damaged_best_far_better_than_the_rest_stops_the_session_unless_fresh_is_allowed(
    fake_ws: Workspace, cli
) -> None:
    step = add_fake_session(fake_ws, SESSION, [3.0, 1.5])
    _index(fake_ws, cli, step)
    older, best = step["checkpoints"]
    _damage(fake_ws.run_dir / best["file"], "bit-flipped")
    sel = fake_ws.out / "selection.json"

    code, _out, err = cli(fake_ws.select_args(sel))
    assert code == 2
    assert one_error_line(err) is None
    assert f"the index knows {best['id']}" in err
    assert not sel.exists()

    code, _out, err = cli(fake_ws.select_args(sel, allow_fresh=True))
    assert code == 0, err
    doc = json.loads(sel.read_text())
    assert (doc["chosen"]["id"], doc["regression"], doc["allow_fresh"]) == (older["id"], True, True)


def test_every_damaged_checkpoint_leaves_a_fresh_start_only_with_allow_fresh(fake_ws: Workspace, cli) -> None:
    step = add_fake_session(fake_ws, SESSION, [2.0, 1.9])
    _index(fake_ws, cli, step)
    for entry in step["checkpoints"]:
        _damage(fake_ws.run_dir / entry["file"], "truncated")
    sel = fake_ws.out / "selection.json"
    code, _out, err = cli(fake_ws.select_args(sel))
    assert code == 2 and one_error_line(err) is None and not sel.exists()
    code, _out, err = cli(fake_ws.select_args(sel, allow_fresh=True))
    doc = json.loads(sel.read_text())
    assert (code, doc["source"], doc["chosen"], doc["regression"]) == (0, "fresh", None, True)


def test_validate_reports_the_damaged_file_and_mark_missing_does_not_hide_it(fake_ws: Workspace, cli) -> None:
    step = add_fake_session(fake_ws, SESSION, [2.0, 1.96])
    _index(fake_ws, cli, step)
    best = step["checkpoints"][1]
    _damage(fake_ws.run_dir / best["file"], "bit-flipped")
    code, _out, err = cli(fake_ws.meta_args("validate"))
    assert code == 2
    assert f"sha256 of {best['file']} does not match the index (corrupt)" in err


def test_sidecar_of_a_damaged_unindexed_checkpoint_is_not_a_candidate(fake_ws: Workspace, cli) -> None:
    indexed = add_fake_session(fake_ws, SESSION, [2.0])
    _index(fake_ws, cli, indexed)
    orphan = add_fake_session(fake_ws, "20261124T000100Z-bbbbbb", [1.95], start=100)["checkpoints"][0]
    _damage(fake_ws.run_dir / orphan["file"], "bit-flipped")
    sel = fake_ws.out / "selection.json"
    code, _out, err = cli(fake_ws.select_args(sel))
    assert code == 0, err
    doc = json.loads(sel.read_text())
    assert doc["chosen"]["id"] == indexed["checkpoints"][0]["id"]
    assert "sha256 mismatch" in {r["id"]: r["reason"] for r in doc["rejected"]}[orphan["id"]]


# ---------------------------------------------------------------------------------------------------
# Checkpoints torch must parse: the weights-only loader is the second line of defence.


class _Payload:
    """Unpickling this runs os.mkdir(marker): the side effect proves whether the payload executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (self.marker,))


def _plant(ws: Workspace, cli, state: dict, session: str = "20261124T000200Z-eeeeee") -> dict:
    """Save `state` with torch as the best checkpoint of a new session, hashed honestly in sidecar and
    index (so only the loader can catch it). Returns the entry."""
    import torch

    step = add_fake_session(ws, session, [1.0], start=1000)
    entry = step["checkpoints"][0]
    target = ws.run_dir / entry["file"]
    torch.save(state, target)
    entry.update(sha256=sha256_file(target), bytes=target.stat().st_size)
    atomic_write_json(target.with_suffix(".json"), entry)
    _index(ws, cli, step)
    return entry


def test_checkpoint_with_a_pickled_callable_is_refused_without_running_it(fake_ws: Workspace, cli) -> None:
    import torch

    marker = fake_ws.base / "payload-ran"
    # Control: the payload is live (an unsafe load would run it), so the refusal below means something.
    control = fake_ws.base / "control.pt"
    torch.save({"format": "nanecho-checkpoint/1", "x": _Payload(marker)}, control)
    torch.load(control, weights_only=False)
    assert marker.is_dir()
    marker.rmdir()

    evil = _plant(fake_ws, cli, {"format": "nanecho-checkpoint/1", "model": _Payload(marker)})
    sel = fake_ws.out / "selection.json"
    code, _out, err = cli(fake_ws.select_args(sel))
    assert code == 0, err
    assert json.loads(sel.read_text())["chosen"]["id"] == evil["id"]  # hash-valid: only loading can tell

    step_out = fake_ws.out / "step.json"
    before = sorted(p.name for p in (fake_ws.run_dir / "cache" / "checkpoints").iterdir())
    for how in (["--resume", str(sel)], ["--init-from", str(fake_ws.run_dir / evil["file"])]):
        args = fake_ws.train_args(step_out, iters=1)[1:] + how
        code, _out, err = cli(["train-step", *args])
        assert code == 2, err
        assert one_error_line(err) is None, err
        assert "checkpoint refused by the weights-only loader" in err
        assert not marker.exists(), "the pickled callable ran"
        assert not step_out.exists()
    assert sorted(p.name for p in (fake_ws.run_dir / "cache" / "checkpoints").iterdir()) == before


def test_checkpoint_that_is_not_a_nanecho_dict_is_refused(fake_ws: Workspace, cli) -> None:
    import torch

    entry = _plant(fake_ws, cli, {"weights": torch.zeros(3)})
    step_out = fake_ws.out / "step.json"
    args = fake_ws.train_args(step_out, iters=1)[1:] + ["--init-from", str(fake_ws.run_dir / entry["file"])]
    code, _out, err = cli(["train-step", *args])
    assert code == 2 and one_error_line(err) is None, err
    assert (
        "not a NanEcho checkpoint (expected format 'nanecho-checkpoint/2' or 'nanecho-checkpoint/1')" in err
    )
    assert not step_out.exists()


def test_no_code_path_loads_a_checkpoint_without_weights_only() -> None:
    root = Path(__file__).resolve().parents[2]
    calls = []
    for path in [*(root / "nanecho_core").glob("*.py"), *(root / "tools").glob("*.py")]:
        for match in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", path.read_text()):
            calls.append((path.name, match.group(0)))
    assert calls, "expected at least one torch.load call"
    assert all("weights_only=True" in call for _, call in calls), calls
