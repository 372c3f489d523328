"""import-legacy on the real echoself fixture, and the schema_version 1 -> 2 migration."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from nanecho_core.errors import NanechoError
from nanecho_core.legacy import UNKNOWN, convert_legacy, migrate
from tests.factories import make_entry

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "metadata.json"


@pytest.fixture(scope="module")
def legacy() -> dict[str, Any]:
    return dict(json.loads(FIXTURE.read_text()))


@pytest.fixture(scope="module")
def imported(legacy: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    return convert_legacy(copy.deepcopy(legacy), "nanecho-cached-ci")


def _by_legacy_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for entry in doc["checkpoints"]:
        (source,) = [
            n.removeprefix("imported from legacy ") for n in entry["notes"] if n.startswith("imported from")
        ]
        out[source] = entry
    return out


def test_every_legacy_entry_is_accounted_for_losslessly(legacy: dict[str, Any], imported: Any) -> None:
    doc, _ = imported
    by_source = _by_legacy_id(doc)
    assert sorted(by_source) == sorted(legacy)
    for key, entry in by_source.items():
        (raw,) = [
            n.removeprefix("legacy record: ") for n in entry["notes"] if n.startswith("legacy record: ")
        ]
        assert json.loads(raw) == legacy[key]
        assert entry["iteration"] == legacy[key]["iteration"]
        assert entry["metrics"]["lr"] == legacy[key]["learning_rate"]
        assert entry["status"] == "missing" and entry["sha256"] == UNKNOWN


def test_placeholder_train_losses_become_null_with_a_note(legacy: dict[str, Any], imported: Any) -> None:
    doc, _ = imported
    by_source = _by_legacy_id(doc)
    zeros = [k for k, rec in legacy.items() if rec["train_loss"] == 0.0]
    assert len(zeros) == 10
    for key in zeros:
        assert by_source[key]["metrics"]["train_loss"] is None
        assert (
            "legacy train_loss 0.0 was a placeholder (forced save): recorded as null"
            in by_source[key]["notes"]
        )
    kept = [k for k in legacy if k not in zeros]
    assert all(by_source[k]["metrics"]["train_loss"] == legacy[k]["train_loss"] for k in kept)


def test_quality_is_recomputed_from_val_loss_not_the_growing_score(
    legacy: dict[str, Any], imported: Any
) -> None:
    doc, _ = imported
    by_id = {e["id"]: e for e in doc["checkpoints"]}
    highest_score = max(legacy.values(), key=lambda r: r["quality_score"])
    assert highest_score["iteration"] == 13000  # the legacy "best" was simply the latest iteration
    best = by_id[doc["best_id"]]
    honest = [e for e in doc["checkpoints"] if not any(t.startswith("suspect") for t in e["tags"])]
    assert best["metrics"]["val_loss"] == min(e["metrics"]["val_loss"] for e in honest)
    assert doc["best_id"] == "ckpt-20260731T145425Z-22deff1b-00000500"


def test_suspect_entries_are_flagged_with_reasons(imported: Any) -> None:
    doc, report = imported
    tags = {e["id"]: [t for t in e["tags"] if t.startswith(("suspect", "flag"))] for e in doc["checkpoints"]}
    eval_is_train = [i for i, t in tags.items() if "suspect:eval-is-train" in t]
    assert (
        len(eval_is_train) == 10
    )  # val loss ~0.0005 on a 50257-token vocabulary: eval text was training text
    assert tags["ckpt-20260731T114109Z-22deff1b-00000000"] == ["suspect:progress-reset"]
    assert tags["ckpt-20260816T061425Z-22deff1b-00000500"] == ["suspect:zero-progress-resume"]
    assert len([i for i, t in tags.items() if "flag:train-loss-not-per-token" in t]) == 4
    assert len(report) == 16


def test_lineage_is_recovered_from_resume_notes(imported: Any) -> None:
    doc, _ = imported
    by_id = {e["id"]: e for e in doc["checkpoints"]}
    child = by_id["ckpt-20260528T203714Z-22deff1b-00010000"]
    assert child["parent_id"] == "ckpt-20260528T145329Z-22deff1b-00009500"
    assert (
        by_id["ckpt-20260816T061425Z-22deff1b-00000500"]["parent_id"]
        == "ckpt-20260731T145425Z-22deff1b-00000500"
    )
    assert child["created_at"] == "2026-05-28T20:37:14.518945Z"
    assert child["bytes"] == round(252.34821033477783 * 2**20)


def test_mismatched_key_and_checkpoint_id_is_an_error(legacy: dict[str, Any]) -> None:
    broken = copy.deepcopy(legacy)
    key = next(iter(broken))
    broken[key]["checkpoint_id"] = "ckpt_other"
    with pytest.raises(
        NanechoError, match=rf"old.json:\$\.{key}\.checkpoint_id: key names checkpoint 'ckpt_other'"
    ):
        convert_legacy(broken, "r", "old.json")


def v1_document() -> dict[str, Any]:
    """schema_version 1, the previous shape (docs/metadata.md#migrations)."""
    current = make_entry(iteration=100, val_loss=2.0)
    entry = {
        k: current[k]
        for k in (
            "id",
            "file",
            "sha256",
            "bytes",
            "iteration",
            "tokens_seen",
            "created_at",
            "session_id",
            "parent_id",
            "model",
            "data_fingerprint",
            "eval_fingerprint",
            "tags",
        )
    }
    entry.update({"train_loss": 0.0, "val_loss": 2.0, "present": True, "notes": "first save"})
    return {"schema_version": 1, "run": "nanecho-cached-ci", "best_checkpoint": entry["id"],
            "latest_checkpoint": entry["id"], "checkpoints": [entry]}  # fmt: skip


def test_migrate_v1_to_current() -> None:
    doc, changed = migrate(v1_document())
    assert changed is True and doc["schema_version"] == 2
    (entry,) = doc["checkpoints"]
    expected = make_entry(iteration=100, val_loss=2.0, train_loss=None)
    expected["notes"] = ["first save"]
    expected["metrics"]["val_bpb"] = 2.0 / math.log(2)
    assert entry == expected
    assert doc["best_id"] == entry["id"] and doc["latest_id"] == entry["id"]
    again, changed_again = migrate(doc)
    assert changed_again is False and again == doc


def test_migrate_refuses_unknown_versions_and_broken_v1() -> None:
    with pytest.raises(NanechoError, match="cannot migrate schema_version 7"):
        migrate({"schema_version": 7})
    broken = v1_document()
    del broken["checkpoints"][0]["present"]
    with pytest.raises(NanechoError, match=r"metadata.json:\$\.checkpoints\[0\]: v1 entry lacks present"):
        migrate(broken)
