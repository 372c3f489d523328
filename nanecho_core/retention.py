"""Which checkpoint files to keep, and folding very old pruned entries into aggregate rows.

Never deleted: the best, the latest, the K best and N latest asked for, every checkpoint tagged
`keep` together with its whole ancestor chain, and the parent of a kept checkpoint whose quality
is unknown (a forced save at a signal has no val loss: its measured parent is the fallback).
The legacy system's size-limit pruning deleted the best checkpoint first; this one cannot.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanecho_core.errors import NanechoError
from nanecho_core.index import (
    is_eligible,
    latest_key,
    lineage,
    metric_of,
    pick_best,
    pick_latest,
    progress_key,
    recompute,
    time_key,
)
from nanecho_core.store import RunPaths

log = logging.getLogger(__name__)

PIN_TAG = "keep"
PRUNABLE = ("ok", "corrupt")  # a `missing` entry may still live in another tier
MAX_HORIZON_DAYS = 100_000  # `compact --older-than`: ~270 years, and a datetime can still subtract it


@dataclass
class PrunePlan:
    delete: list[dict[str, Any]] = field(default_factory=list)
    keep: dict[str, str] = field(default_factory=dict)  # id -> why it is kept
    freed_bytes: int = 0


def plan_prune(paths: RunPaths, doc: dict[str, Any], keep_best: int, keep_last: int) -> PrunePlan:
    """Decide what `prune` deletes; changes nothing."""
    if keep_best < 0 or keep_last < 0:
        raise NanechoError("--keep-best and --keep-last must be >= 0")
    recompute(doc)
    by_id = {e["id"]: e for e in doc["checkpoints"]}
    plan = PrunePlan()

    def keep(cid: str | None, why: str) -> None:
        if cid and cid in by_id and cid not in plan.keep:
            plan.keep[cid] = why

    keep(doc["best_id"], "best")
    keep(doc["latest_id"], "latest")
    best = by_id.get(doc["best_id"] or "")
    if best is not None:  # what ckpt-select resumes: the most trained `ok` checkpoint of its lineage
        heads = [e for e in lineage(best, doc["checkpoints"]) if is_eligible(e)]
        for head in sorted(heads, key=progress_key, reverse=True):
            keep(head["id"], "head of the best's lineage")  # a `missing` head may come back from a tier
            if head["status"] == "ok":
                break
    metric, mode = doc["quality"]["metric"], doc["quality"]["mode"]
    latest = pick_latest(doc["checkpoints"])
    eval_fp = latest["eval_fingerprint"] if latest else None
    scored = [
        e
        for e in doc["checkpoints"]
        if is_eligible(e) and metric_of(e, metric) is not None and e["eval_fingerprint"] == eval_fp
    ]
    sign = 1.0 if mode == "min" else -1.0
    scored.sort(key=lambda e: sign * (metric_of(e, metric) or 0.0))
    for rank, entry in enumerate(scored[:keep_best], start=1):
        keep(entry["id"], f"best #{rank}")
    # Losses on other eval sets (an --init-from with other eval settings) are not comparable with
    # the current ones, so no ranking above can protect their best: each set keeps its own.
    for fingerprint in sorted({e["eval_fingerprint"] for e in doc["checkpoints"]} - {eval_fp}):
        other = pick_best(doc["checkpoints"], metric, mode, fingerprint)
        if other is not None:
            keep(other["id"], f"best of eval set {fingerprint[:12]}")
    recent = sorted((e for e in doc["checkpoints"] if is_eligible(e)), key=latest_key, reverse=True)
    for rank, entry in enumerate(recent[:keep_last], start=1):
        keep(entry["id"], f"latest #{rank}")
    for entry in doc["checkpoints"]:
        if PIN_TAG in entry["tags"]:
            keep(entry["id"], f"tagged {PIN_TAG}")
            parent = entry["parent_id"]
            while parent in by_id and parent not in plan.keep:
                keep(parent, f"ancestor of pinned {entry['id']}")
                parent = by_id[parent]["parent_id"]
    for cid in list(plan.keep):
        entry = by_id[cid]
        if metric_of(entry, metric) is None and entry["parent_id"]:
            keep(entry["parent_id"], f"measured parent of {cid} (no {metric})")

    for entry in doc["checkpoints"]:
        if entry["id"] in plan.keep or entry["status"] not in PRUNABLE:
            continue
        path = paths.checkpoint_file(entry["file"])
        if path.exists() and not path.is_file():
            raise NanechoError(f"cannot prune {entry['id']}: its file is not a regular file", path)
        size = path.stat().st_size if path.is_file() else 0
        sidecar = path.with_suffix(".json")
        size += sidecar.stat().st_size if sidecar.is_file() else 0
        plan.delete.append(entry)
        plan.freed_bytes += size
    return plan


def apply_prune(paths: RunPaths, doc: dict[str, Any], plan: PrunePlan, when: str) -> NanechoError | None:
    """Delete the planned files and mark their entries `pruned` (caller saves the index).

    Stops at the first file that cannot be deleted and returns that error for the caller to raise
    after saving: entries whose weights are gone are marked, the rest are untouched, so the saved
    index matches the disk either way.
    """
    problem = None
    for entry in plan.delete:
        path = paths.checkpoint_file(entry["file"])
        problem = _unlink(path, f"cannot delete checkpoint {entry['id']}")
        if problem:
            break
        entry["status"] = "pruned"
        entry["storage"]["present_locally"] = False
        entry["notes"].append(f"pruned {when} by meta-update prune")
        problem = _unlink(path.with_suffix(".json"), f"cannot delete the sidecar of {entry['id']}")
        if problem:
            break
    recompute(doc)
    return problem


def _unlink(path: Path, what: str) -> NanechoError | None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        return NanechoError(f"{what}: {exc.strerror or exc}", path)
    return None


def _links_between_kept(entries: list[dict[str, Any]]) -> set[str]:
    """Ids of pruned entries with a kept (not pruned) entry both above and below them on a lineage."""
    by_id = {e["id"]: e for e in entries}
    links: set[str] = set()
    for entry in entries:
        if entry["status"] == "pruned":
            continue
        walked: set[str] = set()
        parent = by_id.get(entry["parent_id"] or "")
        while parent is not None and parent["status"] == "pruned" and parent["id"] not in walked:
            walked.add(parent["id"])
            parent = by_id.get(parent["parent_id"] or "")
        if parent is not None:  # reached a kept ancestor: the pruned ones walked connect the two
            links.update(walked)
    return links


def compact(doc: dict[str, Any], older_than_days: float, now: dt.datetime) -> list[str]:
    """Fold pruned entries older than the horizon into per-session aggregate rows; returns folded ids.

    A pruned entry that links two entries still kept (on the lineage from the best down to its
    head, which ckpt-select walks) stays. Any other may go, parents included: a lineage is one
    chain, so keeping every parent kept everything and the index outgrew progress-commit's size cap
    after some twenty sessions. A child whose parent was folded names a folded session, which
    `validate` accepts.
    """
    if not 0 <= older_than_days <= MAX_HORIZON_DAYS:  # also false for NaN
        raise NanechoError(f"--older-than must be a number of days from 0 to {MAX_HORIZON_DAYS}")
    horizon = (now - dt.timedelta(days=older_than_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    links = _links_between_kept(doc["checkpoints"])
    folded = [
        e
        for e in doc["checkpoints"]
        if e["status"] == "pruned" and time_key(e["created_at"]) < time_key(horizon) and e["id"] not in links
    ]
    if not folded:
        return []
    rows = {row["session_id"]: row for row in doc.get("aggregates", [])}
    metric = "val_loss"
    for entry in sorted(folded, key=lambda e: time_key(e["created_at"])):
        loss = metric_of(entry, metric)
        row = rows.get(entry["session_id"])
        if row is None:
            rows[entry["session_id"]] = {
                "session_id": entry["session_id"],
                "count": 1,
                "first_iteration": entry["iteration"],
                "last_iteration": entry["iteration"],
                "best_val_loss": loss,
                "first_created_at": entry["created_at"],
                "last_created_at": entry["created_at"],
            }
            continue
        row["count"] += 1
        row["first_iteration"] = min(row["first_iteration"], entry["iteration"])
        row["last_iteration"] = max(row["last_iteration"], entry["iteration"])
        if loss is not None and (row["best_val_loss"] is None or loss < row["best_val_loss"]):
            row["best_val_loss"] = loss
        row["first_created_at"] = min(row["first_created_at"], entry["created_at"], key=time_key)
        row["last_created_at"] = max(row["last_created_at"], entry["created_at"], key=time_key)
    gone = {e["id"] for e in folded}
    doc["checkpoints"] = [e for e in doc["checkpoints"] if e["id"] not in gone]
    doc["aggregates"] = sorted(
        rows.values(), key=lambda r: (time_key(r["first_created_at"]), r["session_id"])
    )
    recompute(doc)
    return sorted(gone)
