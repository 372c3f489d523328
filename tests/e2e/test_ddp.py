"""train-step under torchrun with 2 real gloo processes: the same curve as one process, checkpoints
that resume on any world size, and one agreed stop on SIGTERM.

Tolerances: one process and two compute the same gradient (mean over the same global batch) but
sum it in a different order, so weights drift apart by float rounding only. Measured on the CPU
boxes over 40 iterations of the tiny model: eval losses equal to the last bit, weights within
2.4e-7; the asserts allow 1e-4 (VAL_TOL, WEIGHT_TOL) so other kernels or thread counts pass. Where the math is the same operation on the same
numbers, the tests assert equality: the data cursor, iteration/token counters and rank 0's RNG
(world-size independent by construction), the first eval (same weights, eval sharding combined
exactly), and two-process runs split across sessions against an uninterrupted two-process run.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.e2e.ddp_support import (
    RUN,
    child_env,
    command,
    final_state,
    make_root,
    max_weight_difference,
    select_last,
    train,
    val_losses,
)
from tests.trainer_support import assert_same_training_state

pytestmark = pytest.mark.slow
VAL_TOL = 1e-4
WEIGHT_TOL = 1e-4


def assert_same_data_position(a: dict, b: dict) -> None:
    assert (a["iteration"], a["tokens_seen"]) == (b["iteration"], b["tokens_seen"])
    assert torch.equal(a["cursor"]["generator"], b["cursor"]["generator"])
    assert a["cursor"]["batches_drawn"] == b["cursor"]["batches_drawn"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_two_processes_train_the_same_curve_as_one_and_only_rank0_writes(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    one = train(root, "one.json", 1, "--iters", "30")
    two = train(root, "two.json", 2, "--iters", "30", github_output=root / "outputs.txt")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["end_iteration"] == 30 and two["stop_reason"] == "budget_iters"
    assert one["eval_points"][0] == two["eval_points"][0]  # same init, eval combined exactly
    ones, twos = val_losses(one), val_losses(two)
    assert ones.keys() == twos.keys() == {0, 10, 20, 30}
    for it in ones:
        assert abs(ones[it] - twos[it]) < VAL_TOL, (it, ones[it], twos[it])
    a, b = final_state(root, one), final_state(root, two)
    assert_same_data_position(a, b)
    assert max_weight_difference(a, b) < WEIGHT_TOL
    # Rank 0 alone wrote: one .pt + one sidecar per checkpoint of each session, nothing else.
    files = sorted(p.name for p in (root / RUN / "cache" / "checkpoints").iterdir())
    expected = sorted(
        f"{e['id']}{ext}" for r in (one, two) for e in r["checkpoints"] for ext in (".pt", ".json")
    )
    assert files == expected
    assert len(two["checkpoints"]) == 3  # improved at 10, 20, 30
    outputs = (root / "outputs.txt").read_text().splitlines()
    assert outputs == [
        f"session_id={two['session_id']}",
        "end_iteration=30",
        f"end_val_loss={two['end_val_loss']}",
        "stop_reason=budget_iters",
        f"checkpoint_file={two['checkpoints'][-1]['file']}",
    ]  # once: rank 0's


def test_checkpoint_from_two_processes_resumes_on_one_and_back_on_the_same_curve(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    whole = train(root, "whole.json", 1, "--iters", "40")
    two_first = train(root, "a1.json", 2, "--iters", "20")
    one_then = train(
        root, "a2.json", 1, "--resume", str(select_last(root, two_first, "sa.json")), "--iters", "20"
    )
    one_first = train(root, "b1.json", 1, "--iters", "20")
    two_then = train(
        root, "b2.json", 2, "--resume", str(select_last(root, one_first, "sb.json")), "--iters", "20"
    )
    assert (one_then["start_iteration"], one_then["end_iteration"]) == (20, 40)
    assert (two_then["start_iteration"], two_then["world_size"]) == (20, 2)
    reference = final_state(root, whole)
    expected = val_losses(whole)
    for first, then in ((two_first, one_then), (one_first, two_then)):
        got = val_losses(first, then)
        assert got.keys() == expected.keys()
        assert max(abs(got[i] - expected[i]) for i in expected) < VAL_TOL
        state = final_state(root, then)
        assert_same_data_position(state, reference)
        assert max_weight_difference(state, reference) < WEIGHT_TOL
        assert state["train_accumulator"]["count"] == reference["train_accumulator"]["count"]


def test_two_process_run_split_in_sessions_is_bit_identical_to_an_uninterrupted_one(tmp_path: Path) -> None:
    # With dropout: ranks > 0 derive their masks from (seed, iteration, rank), so a resume draws
    # the same masks as the uninterrupted run (rank 0's stream is in the checkpoint).
    root = make_root(tmp_path, dropout=0.1)
    whole = train(root, "whole.json", 2, "--iters", "25")
    first = train(root, "s1.json", 2, "--iters", "13")
    second = train(root, "s2.json", 2, "--resume", str(select_last(root, first, "sel.json")), "--iters", "12")
    assert_same_training_state(final_state(root, whole), final_state(root, second))
    scheduled = [p for p in first["eval_points"] + second["eval_points"] if p[0] % 10 == 0]
    assert scheduled == [p for p in whole["eval_points"] if p[0] % 10 == 0]


def test_sigterm_to_the_launcher_stops_every_rank_after_the_same_iteration_and_rank0_saves(
    tmp_path: Path,
) -> None:
    root = make_root(tmp_path)
    proc = subprocess.Popen(
        command(root, "step.json", 2, "--iters", "100000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    for line in proc.stdout:
        lines.append(line)
        if "iter 15/" in line:
            break
        assert time.monotonic() < deadline, "training did not progress"
    else:
        raise AssertionError(f"launcher ended before iteration 15: rc={proc.wait()}\n{''.join(lines)}")
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)  # no rank hangs: the launcher and both workers end
    output = "".join(lines) + rest
    stops = dict(re.findall(r"rank (\d)/2: stopping after iteration (\d+) \(signal\)", output))
    assert stops.keys() == {"0", "1"}, output[-3000:]
    assert stops["0"] == stops["1"], stops
    stopped = int(stops["0"])
    record = json.loads((root / "step.json").read_text())
    assert record["stop_reason"] == "signal"
    assert record["world_size"] == 2
    assert record["end_iteration"] == stopped >= 15
    last = record["checkpoints"][-1]
    assert last["iteration"] == stopped  # the agreed last iteration was saved by rank 0
    state = final_state(root, record)
    assert state["iteration"] == stopped
    # And it resumes (on one process) from exactly there.
    resumed = train(
        root, "next.json", 1, "--resume", str(select_last(root, record, "sel.json")), "--iters", "3"
    )
    assert (resumed["start_iteration"], resumed["end_iteration"]) == (stopped, stopped + 3)


def test_a_global_batch_that_does_not_split_evenly_is_refused_before_training(tmp_path: Path) -> None:
    root = make_root(tmp_path, batch_size=5)
    done = subprocess.run(
        command(root, "step.json", 2, "--iters", "5"),
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    assert done.returncode != 0
    message = (
        "Error: train.batch_size 5 is not divisible by the 2 processes: the global batch is split evenly "
        "across ranks; choose a multiple of the process count"
    )
    # Each rank exits 2 with the one-line error (the launcher may stop rank 1 before it prints).
    errors = {line for line in done.stderr.splitlines() if line.startswith("Error: ")}
    assert errors == {message}
    assert "exitcode  : 2" in done.stderr  # torchrun's report of the root cause
    assert "NanechoError" not in done.stderr  # no worker traceback
    assert not (root / "step.json").exists()
    assert not (root / RUN / "cache" / "checkpoints").exists()
