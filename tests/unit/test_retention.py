"""Retention: what prune keeps and why, and compact's aggregate rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from nanecho_core import index
from nanecho_core.errors import NanechoError
from nanecho_core.index_check import _lineage_problems
from nanecho_core.retention import apply_prune, compact, plan_prune
from nanecho_core.store import empty_index
from tests.factories import make_entry
from tests.unit.test_selection import chain, seed_run


def test_size_pruning_never_deletes_the_best_first(tmp_path: Path) -> None:
    # The legacy pruner deleted the best checkpoint first; with nothing asked to be kept,
    # the best and the latest still survive.
    entries = chain(1.9, 1.2, 1.8, 1.7, 1.6)
    paths = seed_run(tmp_path, entries)
    doc = index.recompute({**empty_index(paths.name), "checkpoints": [dict(e) for e in entries]})
    plan = plan_prune(paths, doc, keep_best=0, keep_last=0)
    assert plan.keep == {entries[1]["id"]: "best", entries[4]["id"]: "latest"}
    assert [e["id"] for e in plan.delete] == [entries[i]["id"] for i in (0, 2, 3)]


def test_keep_best_and_keep_last_counts(tmp_path: Path) -> None:
    entries = chain(1.9, 1.2, 1.8, 1.3, 1.6)
    paths = seed_run(tmp_path, entries)
    doc = index.recompute({**empty_index(paths.name), "checkpoints": [dict(e) for e in entries]})
    plan = plan_prune(paths, doc, keep_best=2, keep_last=2)
    assert plan.keep == {
        entries[1]["id"]: "best",
        entries[4]["id"]: "latest",
        entries[3]["id"]: "best #2",  # also latest #2: kept once, for the first reason
    }
    assert [e["id"] for e in plan.delete] == [entries[0]["id"], entries[2]["id"]]


def test_pinned_checkpoint_keeps_its_whole_ancestry(tmp_path: Path) -> None:
    entries = chain(1.9, 1.8, 1.7, 1.2, 1.6)
    entries[2]["tags"] = ["keep"]
    paths = seed_run(tmp_path, entries)
    doc = index.recompute({**empty_index(paths.name), "checkpoints": [dict(e) for e in entries]})
    plan = plan_prune(paths, doc, keep_best=0, keep_last=0)
    assert plan.keep[entries[2]["id"]] == "tagged keep"
    assert plan.keep[entries[1]["id"]] == f"ancestor of pinned {entries[2]['id']}"
    assert plan.keep[entries[0]["id"]] == f"ancestor of pinned {entries[2]['id']}"
    assert plan.delete == []


def test_unmeasured_latest_keeps_its_measured_parent(tmp_path: Path) -> None:
    # A forced save at SIGTERM has no val loss; its parent is the measured fallback.
    entries = chain(1.2, 1.5, None)
    paths = seed_run(tmp_path, entries)
    doc = index.recompute({**empty_index(paths.name), "checkpoints": [dict(e) for e in entries]})
    plan = plan_prune(paths, doc, keep_best=0, keep_last=0)
    assert plan.keep[entries[1]["id"]] == f"measured parent of {entries[2]['id']} (no val_loss)"
    assert plan.delete == []


def test_apply_prune_deletes_files_and_sidecars_and_marks_pruned(tmp_path: Path) -> None:
    entries = chain(1.9, 1.2, 1.5)
    paths = seed_run(tmp_path, entries)
    doc = index.recompute({**empty_index(paths.name), "checkpoints": [dict(e) for e in entries]})
    plan = plan_prune(paths, doc, keep_best=0, keep_last=0)
    apply_prune(paths, doc, plan, "2026-11-24T01:00:00Z")
    gone = paths.dir / entries[0]["file"]
    assert not gone.exists() and not gone.with_suffix(".json").exists()
    assert doc["checkpoints"][0]["status"] == "pruned"
    assert doc["checkpoints"][0]["notes"] == ["pruned 2026-11-24T01:00:00Z by meta-update prune"]


def test_negative_counts_are_user_errors(tmp_path: Path) -> None:
    paths = seed_run(tmp_path, chain(1.0))
    with pytest.raises(NanechoError, match="must be >= 0"):
        plan_prune(paths, empty_index(paths.name), keep_best=-1, keep_last=0)


def test_compact_folds_old_pruned_entries_into_session_rows() -> None:
    doc = empty_index("r")
    old = [
        make_entry("s-old", i * 100, 3.0 - i / 10, status="pruned", created_at=f"2026-01-0{i}T00:00:00Z")
        for i in (1, 2, 3)
    ]
    # Above the oldest kept entry: nothing walks to it any more, so it folds though it is a parent.
    above = make_entry("s-old", 400, 2.5, status="pruned", created_at="2026-01-04T00:00:00Z")
    child = make_entry("s-new", 500, 2.0, parent_id=above["id"], created_at="2026-11-20T00:00:00Z")
    recent_pruned = make_entry("s-new", 450, 2.2, status="pruned", created_at="2026-11-19T00:00:00Z")
    doc["checkpoints"] = [*old, above, recent_pruned, child]
    index.recompute(doc)
    folded = compact(doc, 90, dt.datetime(2026, 11, 24, tzinfo=dt.UTC))
    assert folded == sorted(e["id"] for e in [*old, above])
    assert [e["id"] for e in doc["checkpoints"]] == [recent_pruned["id"], child["id"]]
    assert doc["aggregates"] == [
        {
            "session_id": "s-old",
            "count": 4,
            "first_iteration": 100,
            "last_iteration": 400,
            "best_val_loss": 2.5,
            "first_created_at": "2026-01-01T00:00:00Z",
            "last_created_at": "2026-01-04T00:00:00Z",
        }
    ]
    assert compact(doc, 90, dt.datetime(2026, 11, 24, tzinfo=dt.UTC)) == []


def test_compact_keeps_the_pruned_links_between_the_best_and_its_head_and_folds_the_rest() -> None:
    """One lineage, as the workflow leaves it: prune keeps the best and the newest, all else pruned.

    Keeping every parent kept the whole chain, so the index outgrew progress-commit's 256 KiB cap
    after some twenty ci sessions. Only the links ckpt-select walks (best down to head) must stay.
    """
    losses = [3.0, 2.5, 2.0, 1.5, 1.6, 1.7, 1.8]  # the best at the fourth, then a plateau
    entries = chain(*losses)
    for n, entry in enumerate(entries):
        entry["created_at"] = f"2026-10-0{n + 1}T00:00:00Z"
        entry["status"] = "ok" if n in (3, 6) else "pruned"
    doc = index.recompute({**empty_index("r"), "checkpoints": [dict(e) for e in entries]})
    folded = compact(doc, 0, dt.datetime(2026, 11, 24, tzinfo=dt.UTC))
    assert folded == sorted(e["id"] for e in entries[:3])
    assert [e["id"] for e in doc["checkpoints"]] == [e["id"] for e in entries[3:]]
    assert doc["best_id"] == entries[3]["id"] and doc["latest_id"] == entries[6]["id"]
    assert doc["checkpoints"][0]["parent_id"] == entries[2]["id"]  # named, folded: validate accepts it
    assert _lineage_problems(doc, {e["id"]: e for e in doc["checkpoints"]}) == []


def test_prune_keeps_the_best_of_every_eval_set_and_the_head_of_the_best_lineage(tmp_path: Path) -> None:
    old_a, old_b = chain(1.3, 1.2, session="20261124T000000Z-aaaaaa")  # eval set E1, best 1.2
    for e in (old_a, old_b):
        e["eval_fingerprint"] = "1" * 64
    new = chain(1.9, 1.1, 1.15, 1.16, session="20261124T010000Z-bbbbbb")  # E2: best 1.1, head 1.16
    restart = chain(1.8, session="20261124T020000Z-cccccc")  # a later, worse lineage on E2
    for i, e in enumerate(new + restart):
        e["created_at"] = f"2026-11-24T01:0{i}:00Z"
    entries = [old_a, old_b, *new, *restart]
    paths = seed_run(tmp_path, entries)
    doc = index.recompute({**empty_index(paths.name), "checkpoints": [dict(e) for e in entries]})
    plan = plan_prune(paths, doc, keep_best=0, keep_last=0)
    assert plan.keep == {
        new[1]["id"]: "best",
        restart[0]["id"]: "latest",
        new[3]["id"]: "head of the best's lineage",  # what ckpt-select resumes
        old_b["id"]: f"best of eval set {'1' * 12}",
    }
    assert [e["id"] for e in plan.delete] == [old_a["id"], new[0]["id"], new[2]["id"]]


def test_a_missing_head_does_not_leave_the_resumable_head_unprotected(tmp_path: Path) -> None:
    # d's weights are gone from this tier (status missing): ckpt-select resumes c, so c stays.
    a, b, c, d = chain(1.9, 1.2, 1.5, 1.6)
    d["status"] = "missing"
    paths = seed_run(tmp_path, [a, b, c, d])
    doc = index.recompute({**empty_index(paths.name), "checkpoints": [dict(e) for e in [a, b, c, d]]})
    plan = plan_prune(paths, doc, keep_best=0, keep_last=0)
    assert plan.keep == {b["id"]: "best", d["id"]: "latest", c["id"]: "head of the best's lineage"}
    assert [e["id"] for e in plan.delete] == [a["id"]]
