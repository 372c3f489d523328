"""The training_summary.json document: one run's derived figures, shaped by schemas/summary.schema.json."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanecho_core import fastschema
from nanecho_core.store import RunPaths
from nanecho_core.summary import (
    CURVE_POINTS,
    FLAGGED_KEPT,
    RESUME_SOURCES,
    STOP_REASONS,
    SUMMARY_SCHEMA_VERSION,
    TREND_TOLERANCE,
    TREND_WINDOW,
    RunView,
    SessionRow,
    parse_timestamp,
    session_best,
    stable_sample,
)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _flag_doc(row: SessionRow) -> dict[str, Any]:
    return {
        "index": row.index,
        "session_id": row.session_id,
        "flags": list(row.flags),
        "resume_source": row.record["resume_source"],
        "start_iteration": row.record["start_iteration"],
        "prior_max_iteration": row.prior_max_iteration,
        "resumed_val_loss": row.resumed_val_loss,
        "best_known_val_loss": row.best_known_val_loss,
        "regression_allowed": bool(row.record.get("regression_allowed", False)),
    }


def _trend(rows: Sequence[SessionRow]) -> dict[str, Any]:
    values = [r.record["end_val_loss"] for r in rows[-TREND_WINDOW:] if r.record["end_val_loss"] is not None]
    doc: dict[str, Any] = {"window": TREND_WINDOW, "points": len(values)}
    if len(values) < 2:
        return doc | {"first_val_loss": None, "last_val_loss": None, "delta": None, "direction": "unknown"}
    first, last = values[0], values[-1]
    delta = last - first
    direction = "flat"
    if delta < -TREND_TOLERANCE * first:
        direction = "improving"
    elif delta > TREND_TOLERANCE * first:
        direction = "worsening"
    return doc | {"first_val_loss": first, "last_val_loss": last, "delta": delta, "direction": direction}


def _best(index: dict[str, Any], rows: Sequence[SessionRow]) -> dict[str, Any]:
    entries = {e["id"]: e for e in index["checkpoints"]}
    entry = entries.get(index["best_id"] or "")
    if entry is not None and entry["metrics"]["val_loss"] is not None:
        return {
            "source": "index",
            "checkpoint_id": entry["id"],
            "session_id": entry["session_id"],
            "iteration": entry["iteration"],
            "val_loss": entry["metrics"]["val_loss"],
        }
    scored = [(b, r) for r in rows if (b := session_best(r.record)) is not None]
    if not scored:
        return {
            "source": "none",
            "checkpoint_id": None,
            "session_id": None,
            "iteration": None,
            "val_loss": None,
        }
    value, row = min(scored, key=lambda pair: (pair[0], pair[1].index))
    return {
        "source": "sessions",
        "checkpoint_id": None,
        "session_id": row.session_id,
        "iteration": row.record["end_iteration"],
        "val_loss": value,
    }


def run_summary(
    paths: RunPaths, index: dict[str, Any], rows: Sequence[SessionRow], curve: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    """The `runs.<name>` object of training_summary.json."""
    last = rows[-1].record if rows else None
    speeds = [r.record["tokens_per_s"] for r in rows if r.record["tokens_per_s"]]
    statuses = {s: 0 for s in ("ok", "missing", "corrupt", "pruned")}
    for entry in index["checkpoints"]:
        statuses[entry["status"]] += 1
    flagged = [r for r in rows if r.flags]
    return {
        "run": paths.name,
        "dir": Path(os.path.relpath(paths.dir, paths.root)).as_posix(),
        "preset": last["preset"] if last else None,
        "presets": sorted({r.record["preset"] for r in rows}),
        "sessions": len(rows),
        "iterations_trained": sum(
            max(0, r.record["end_iteration"] - r.record["start_iteration"]) for r in rows
        ),
        "latest_iteration": last["end_iteration"] if last else 0,
        "max_iteration": max((r.record["end_iteration"] for r in rows), default=0),
        "tokens_trained": sum(r.tokens for r in rows),
        "wall_s": round(sum(r.record["wall_s"] for r in rows), 3),
        "tokens_per_s_median": _round(statistics.median(speeds) if speeds else None, 1),
        "first_started_at": rows[0].record["started_at"] if rows else None,
        "last_ended_at": max((r.record["ended_at"] for r in rows), key=parse_timestamp, default=None),
        "best": _best(index, rows),
        "latest": None
        if last is None
        else {
            "session_id": last["session_id"],
            "checkpoint_id": index["latest_id"],
            "end_iteration": last["end_iteration"],
            "end_val_loss": last["end_val_loss"],
            "ended_at": last["ended_at"],
        },
        "trend": _trend(rows),
        "resets": sum(1 for r in rows if r.is_reset),
        "regressions": sum(1 for r in rows if r.is_regression),
        "flagged": [_flag_doc(r) for r in flagged[-FLAGGED_KEPT:]],
        "resume_sources": {s: sum(1 for r in rows if r.record["resume_source"] == s) for s in RESUME_SOURCES},
        "stop_reasons": {s: sum(1 for r in rows if r.record["stop_reason"] == s) for s in STOP_REASONS},
        "checkpoints": {"indexed": len(index["checkpoints"]), **statuses},
        "curve": [[round(x), v] for x, v in stable_sample(curve, CURVE_POINTS)],
    }


def summary_document(views: Sequence[RunView]) -> dict[str, Any]:
    """A training_summary document (schema `summary`) over `views`."""
    doc = {"schema_version": SUMMARY_SCHEMA_VERSION, "runs": {v.name: v.summary for v in views}}
    return fastschema.validate(doc, "summary", "training_summary.json")
