"""Running train-step as one process or under torchrun (real gloo processes) in the DDP tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from nanecho_core.checkpoint import load_checkpoint
from tests.trainer_support import write_corpus, write_selection

RUN = ".training-progress/nanecho-ddp"
TRAIN_STEP = str(Path(sys.executable).parent / "train-step")
# dropout 0: a dropout mask is drawn per process, so only without dropout is one process's
# math the same as two processes'. Batch 8 splits into 2 x 4 rows.
DDP_CONFIG: dict[str, Any] = {
    "schema_version": 1,
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.0},
    "train": {
        "batch_size": 8,
        "eval_interval": 10,
        "eval_iters": 4,
        "log_interval": 5,
        "warmup_iters": 5,
        "lr_decay_iters": 60,
        "learning_rate": 3e-3,
        "min_lr": 3e-4,
    },
}


def make_root(directory: Path, **train: Any) -> Path:
    doc = json.loads(json.dumps(DDP_CONFIG))
    doc["train"].update(train)
    if "dropout" in train:
        doc["model"]["dropout"] = doc["train"].pop("dropout")
    (directory / "ddp.json").write_text(json.dumps(doc))
    write_corpus(directory)
    return directory


def train_step_args(root: Path, out: str, *args: str) -> list[str]:
    return [
        "--root", str(root), "--run", RUN, "--config", str(root / "ddp.json"),
        "--corpus", str(root / "corpus.txt"), "--device", "cpu", "--out", str(root / out), *args,
    ]  # fmt: skip


def command(root: Path, out: str, nproc: int, *args: str) -> list[str]:
    """train-step itself for one process; torchrun (standalone: a free local port) for several."""
    if nproc == 1:
        return [TRAIN_STEP, *train_step_args(root, out, *args)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    # "--" keeps torchrun's parser off train-step's options (it would take --run for --run-path).
    return [*launcher, "--", TRAIN_STEP, *train_step_args(root, out, *args)]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GITHUB_OUTPUT"):
        env.pop(name, None)
    return env


def train(root: Path, out: str, nproc: int, *args: str, github_output: Path | None = None) -> dict[str, Any]:
    env = child_env()
    if github_output is not None:
        env["GITHUB_OUTPUT"] = str(github_output)
    done = subprocess.run(
        command(root, out, nproc, *args), capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads((root / out).read_text()))


def final_state(root: Path, record: dict[str, Any]) -> dict[str, Any]:
    entry = record["checkpoints"][-1]
    return load_checkpoint(root / RUN / entry["file"], entry["sha256"])


def select_last(root: Path, record: dict[str, Any], name: str) -> Path:
    last = record["checkpoints"][-1]
    return write_selection(root / name, last, Path(RUN) / last["file"], run="nanecho-ddp")


def max_weight_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert a["model"].keys() == b["model"].keys()
    return max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])


def val_losses(*records: dict[str, Any]) -> dict[int, float]:
    return {int(p[0]): float(p[1]) for record in records for p in record["eval_points"]}
