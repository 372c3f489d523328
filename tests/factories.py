"""Builders of valid documents for tests (torch-free): checkpoint entries and session records."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from nanecho_core.fingerprints import model_fingerprint
from nanecho_core.fsio import atomic_write_bytes, atomic_write_json
from nanecho_core.presets import PRESETS

CI_MODEL = dict(PRESETS["ci"]["model"])
EVAL_FP = hashlib.sha256(b"eval-tokens").hexdigest()
DATA_FP = hashlib.sha256(b"train-tokens").hexdigest()


def make_entry(
    session_id: str = "20261124T000000Z-aaaaaa",
    iteration: int = 100,
    val_loss: float | None = 2.0,
    *,
    train_loss: float | None = 2.1,
    parent_id: str | None = None,
    model: dict[str, Any] | None = None,
    eval_fingerprint: str = EVAL_FP,
    payload: bytes | None = None,
    created_at: str | None = None,
    status: str = "ok",
) -> dict[str, Any]:
    """A schema-valid checkpoint index entry; `payload` is the fake checkpoint content it hashes."""
    model = dict(model or CI_MODEL)
    cid = f"ckpt-{session_id}-{iteration:08d}"
    payload = payload if payload is not None else f"weights of {cid}".encode()
    return {
        "id": cid,
        "file": f"cache/checkpoints/{cid}.pt",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "iteration": iteration,
        "tokens_seen": iteration * 768,
        "created_at": created_at or f"2026-11-24T00:{iteration // 100 % 60:02d}:00Z",
        "session_id": session_id,
        "parent_id": parent_id,
        "metrics": {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_bpb": None if val_loss is None else val_loss / 0.6931471805599453,
        },
        "model": model,
        "model_fingerprint": model_fingerprint(model),
        "tokenizer": {"name": "bytes", "vocab_size": 256},
        "data_fingerprint": DATA_FP,
        "eval_fingerprint": eval_fingerprint,
        "storage": {"cache_key": None, "artifact_name": None, "present_locally": True},
        "status": status,
        "tags": [],
        "notes": [],
    }


def write_fake_checkpoint(run_dir: Path, entry: dict[str, Any], payload: bytes | None = None) -> Path:
    """Write the bytes `entry` hashes (and its sidecar) where `entry['file']` points."""
    payload = payload if payload is not None else f"weights of {entry['id']}".encode()
    target = run_dir / entry["file"]
    atomic_write_bytes(target, payload)
    atomic_write_json(target.with_suffix(".json"), entry)
    return target


def make_session(
    session_id: str = "20261124T000000Z-aaaaaa",
    start_iteration: int = 0,
    end_iteration: int = 100,
    *,
    run: str = "nanecho-cached-ci",
    resumed_from: str | None = None,
    resume_source: str = "fresh",
    start_val_loss: float | None = 5.5,
    end_val_loss: float | None = 2.0,
    checkpoints: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A schema-valid session record (step.json when `checkpoints` is given)."""
    written = [c["id"] for c in checkpoints or []]
    record: dict[str, Any] = {
        "schema_version": 1,
        "run": run,
        "session_id": session_id,
        "started_at": "2026-11-24T00:00:00Z",
        "ended_at": "2026-11-24T00:01:00Z",
        "host": "test-host",
        "trigger": "local",
        "git_sha": None,
        "preset": "ci",
        "resumed_from": resumed_from,
        "resume_source": resume_source,
        "fresh_reason": "no checkpoint in the index" if resume_source == "fresh" else None,
        "start_iteration": start_iteration,
        "end_iteration": end_iteration,
        "tokens_seen": end_iteration * 768,
        "start_val_loss": start_val_loss,
        "end_val_loss": end_val_loss,
        "best_val_loss": end_val_loss,
        "tokens_per_s": 25000.0,
        "wall_s": 60.0,
        "stop_reason": "budget_iters",
        "checkpoints_written": written,
        "world_size": 1,
        "device": "cpu",
        "torch_version": "2.13.0",
        "eval_points": [[end_iteration, end_val_loss, 2.1]] if end_val_loss else [],
    }
    if checkpoints is not None:
        record["checkpoints"] = checkpoints
    return record
