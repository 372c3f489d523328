"""train-step as a real process: SIGTERM/SIGINT stop cleanly and resume on the same trajectory;
a second signal aborts at once leaving the previous checkpoint valid; the wall-time budget holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nanecho_core.checkpoint import load_checkpoint, read_sidecar
from nanecho_core.cpu_engine import onednn_available
from tests.trainer_support import assert_same_training_state, write_corpus, write_selection, write_tiny_config

pytestmark = pytest.mark.slow
RUN = ".training-progress/nanecho-e2e"
ENGINE = "onednn" if onednn_available() else "mm"
TRAIN_STEP = str(Path(sys.executable).parent / "train-step")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_tiny_config(tmp_path)
    write_corpus(tmp_path)
    return tmp_path


def argv(root: Path, out: str, *args: str) -> list[str]:
    return [
        TRAIN_STEP, "--root", str(root), "--run", RUN, "--config", str(root / "tiny.json"),
        "--corpus", str(root / "corpus.txt"), "--device", "cpu", "--out", str(root / out), *args,
    ]  # fmt: skip


def run_to_end(root: Path, out: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(argv(root, out, *args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads((root / out).read_text())


def start_and_wait_for(root: Path, out: str, needle: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv(root, out, *args), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if needle in line:
            return proc
        assert time.monotonic() < deadline, "training did not progress"
    raise AssertionError(f"process ended before {needle!r}: rc={proc.wait()}")


def final_state(root: Path, record: dict[str, Any]) -> dict[str, Any]:
    entry = record["checkpoints"][-1]
    return load_checkpoint(root / RUN / entry["file"], entry["sha256"])


@pytest.mark.parametrize(
    ("signum", "dropout"),
    [
        pytest.param(signal.SIGTERM, 0.1, id="SIGTERM"),
        pytest.param(signal.SIGINT, 0.1, id="SIGINT"),
        pytest.param(signal.SIGTERM, 0.0, id="SIGTERM-hand-written-step"),  # no dropout: cpu_engine.py
    ],
)
def test_resume_after_signal_continues_same_trajectory(root: Path, signum: int, dropout: float) -> None:
    config = json.loads((root / "tiny.json").read_text())
    config["model"]["dropout"] = dropout
    (root / "tiny.json").write_text(json.dumps(config))
    proc = start_and_wait_for(root, "a.json", "iter 15/", "--iters", "100000")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    first = json.loads((root / "a.json").read_text())
    assert first["stop_reason"] == "signal"
    stopped = first["end_iteration"]
    assert 15 <= stopped < 100000
    last = first["checkpoints"][-1]
    assert last["iteration"] == stopped  # the interrupted iteration was finished and saved
    write_selection(root / "sel.json", last, Path(RUN) / last["file"], run="nanecho-e2e")
    target = stopped + 13  # ends mid eval-interval
    second = run_to_end(root, "b.json", "--resume", str(root / "sel.json"), "--until-iter", str(target))
    assert (second["start_iteration"], second["end_iteration"]) == (stopped, target)
    one = run_to_end(root, "one.json", "--iters", str(target))
    assert_same_training_state(final_state(root, one), final_state(root, second))
    assert final_state(root, second)["engine"] == ("autograd" if dropout else ENGINE)
    scheduled = [p for p in first["eval_points"] + second["eval_points"] if p[0] % 10 == 0]
    assert scheduled == [p for p in one["eval_points"] if p[0] % 10 == 0]


def test_second_signal_aborts_at_once_and_previous_checkpoint_stays_valid(root: Path) -> None:
    # Iterations of about a second, so the second signal lands while the first is being honoured.
    heavy = {
        "schema_version": 1,
        "model": {"n_layer": 4, "n_head": 4, "n_embd": 192, "block_size": 64, "dropout": 0.0},
        "train": {"batch_size": 32, "eval_interval": 2, "eval_iters": 1, "log_interval": 1},
    }
    (root / "tiny.json").write_text(json.dumps(heavy))
    proc = start_and_wait_for(root, "a.json", "saved ", "--iters", "100000")
    assert proc.stderr is not None
    proc.send_signal(signal.SIGTERM)
    for line in proc.stderr:
        if "SIGTERM received" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Aborted" in err and "Traceback" not in err
    assert not (root / "a.json").exists()
    ckpt_dir = root / RUN / "cache" / "checkpoints"
    assert not [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]
    sidecars = sorted(ckpt_dir.glob("*.json"))
    assert sidecars
    for sidecar in sidecars:
        entry = read_sidecar(sidecar.with_suffix(".pt"))
        assert entry is not None
        load_checkpoint(root / RUN / entry["file"], entry["sha256"])


def test_wall_time_budget_stops_in_time_and_saves(root: Path) -> None:
    budget_s = 30.0  # start-up (imports, data, model) counts against it, as in CI
    started = time.monotonic()
    record = run_to_end(root, "a.json", "--iters", "1000000", "--max-minutes", str(budget_s / 60))
    elapsed = time.monotonic() - started
    assert record["stop_reason"] == "budget_time"
    assert record["end_iteration"] >= 1
    assert record["checkpoints"][-1]["iteration"] == record["end_iteration"]
    assert record["wall_s"] <= budget_s + 3.0  # at most about one iteration + one save over
    assert elapsed < budget_s + 10.0  # interpreter start and exit around the timed part
    assert os.path.exists(root / RUN / record["checkpoints"][-1]["file"])
