"""Helpers for train-step tests: a tiny config, a small corpus, selections, checkpoint comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_OVERRIDES: dict[str, Any] = {
    "schema_version": 1,
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.1},
    "train": {
        "batch_size": 4,
        "eval_interval": 10,
        "eval_iters": 2,
        "log_interval": 5,
        "warmup_iters": 5,
        "lr_decay_iters": 60,
        "learning_rate": 3e-3,
        "min_lr": 3e-4,
    },
}


def write_tiny_config(directory: Path, **train: Any) -> Path:
    doc = json.loads(json.dumps(TINY_OVERRIDES))
    doc["train"].update(train)
    path = directory / "tiny.json"
    path.write_text(json.dumps(doc))
    return path


def write_corpus(directory: Path, size: int = 20_000) -> Path:
    """A small deterministic text corpus (faster than tinyshakespeare, still real text)."""
    from nanecho_core.data import bundled_corpus_bytes

    path = directory / "corpus.txt"
    path.write_bytes(bundled_corpus_bytes()[:size])
    return path


def selection_for(entry: dict[str, Any], resume_path: Path, run: str = "run", **extra: Any) -> dict[str, Any]:
    doc = {
        "schema_version": 1,
        "run": run,
        "source": "cache",
        "chosen": entry,
        "resume_path": str(resume_path),
        "reason": "best val_loss",
        "rejected": [],
        "regression": False,
        "allow_fresh": False,
        "metric": "val_loss",
        "mode": "min",
    }
    doc.update(extra)
    return doc


def write_selection(path: Path, entry: dict[str, Any], resume_path: Path, **extra: Any) -> Path:
    path.write_text(json.dumps(selection_for(entry, resume_path, **extra)))
    return path


def assert_same_training_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bit-identical weights, optimizer state, data cursor and RNGs (torch.equal every tensor)."""
    import torch

    assert a["iteration"] == b["iteration"]
    assert a["tokens_seen"] == b["tokens_seen"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for index in opt_a:
        for name in opt_a[index]:
            assert torch.equal(torch.as_tensor(opt_a[index][name]), torch.as_tensor(opt_b[index][name])), name
    assert torch.equal(a["cursor"]["generator"], b["cursor"]["generator"])
    assert a["cursor"]["batches_drawn"] == b["cursor"]["batches_drawn"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["train_accumulator"] == b["train_accumulator"]
